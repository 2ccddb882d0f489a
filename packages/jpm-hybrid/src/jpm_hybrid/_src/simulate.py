"""The hybrid simulation (jpm-core's integrator with the learned correction plugged in) and the
offline training truth (a finer jpm-core run from the same initial particles)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

import jpm_core

from ._checks import check_int, is_concrete
from .filters import SplineFilter, check_force_reversal, potential_filter
from .pgd import PGDCorrection

#: the force discretisation of the truth runs: a mesh finer than the particle grid needs the
#: finite-difference kernels (jpm-core's README, "A force mesh finer than the particle grid")
TRUTH_FORCES = jpm_core.ForceConfig(kernel="finite_difference", laplace="finite_difference")

Correction = SplineFilter | PGDCorrection | None


def step_grid(
    a_init: float, a_snapshots: float | Sequence[float], steps: int | Sequence[float]
) -> np.ndarray:
    """Step boundaries from `a_init` through every snapshot: `steps` (an int) distributed over the
    snapshot intervals in proportion to their length (at least one each), uniform in `a` within
    each, so that every snapshot is a step boundary (as `jpm_core.nbody` requires). A sequence is
    returned as it is (float64).

    **Returns:** a float64 NumPy array of the boundaries, `a_init` first, the last snapshot last.
    """
    if not (isinstance(steps, (int, np.integer)) and not isinstance(steps, bool)):
        return np.asarray(steps, float)
    steps = check_int("steps", steps, minimum=1)
    a0 = float(np.asarray(a_init))
    snaps = np.atleast_1d(np.asarray(a_snapshots, float))
    snaps = snaps[snaps > a0 * (1 + 1e-6)]
    if snaps.size == 0:
        return np.linspace(a0, a0, 1)
    edges = np.concatenate([[a0], snaps])
    lengths = np.diff(edges)
    counts = np.maximum(1, np.round(steps * lengths / lengths.sum()).astype(int))
    pieces = [np.linspace(edges[0], edges[1], counts[0] + 1)]
    for i in range(1, lengths.size):
        pieces.append(np.linspace(edges[i], edges[i + 1], counts[i] + 1)[1:])
    return np.concatenate(pieces)


def hybrid_nbody(
    cosmo: jpm_core.Cosmology,
    state: jpm_core.ParticleState,
    domain: jpm_core.Domain,
    a_snapshots: float | Sequence[float],
    model: Correction = None,
    *,
    steps: int | Sequence[float],
    a_init: float | None = None,
    forces: jpm_core.ForceConfig | None = None,
    gradient: Any = None,
    check_reversal: bool = True,
    **nbody_kwargs: Any,
) -> jpm_core.NBodyResult:
    """`jpm_core.nbody` with a learned correction: a thin wrapper.

    - `model` a `SplineFilter`: the PM potential is multiplied by `1 + f(|k|, a)` at every force
      evaluation (`jpm_core.nbody`'s `potential_filter` hook, the parameters as `filter_params`,
      so every gradient method differentiates with respect to them).
    - `model` a `PGDCorrection`: a plain PM run whose snapshots are displaced by PGD.
    - `model=None`: the plain PM run.

    **Arguments:** those of `jpm_core.nbody` (`steps`: an int is spread over the snapshot
    intervals by `jpm_hybrid.step_grid`, so every snapshot is a step boundary; `a_init`, `forces` default
    `jpm_core.ForceConfig()`, `gradient` default `jpm_core.Adjoint()`, and any other keyword,
    e.g. `progress`, `observer`), plus:

    - `model`: the correction (not modified).
    - `check_reversal`: with a `SplineFilter` whose parameters are concrete, evaluate `1 + f` on the
      mesh's `|k|` at every step boundary first and raise a `ValueError` if it is negative anywhere
      (the force would reverse); under `jit` (traced parameters) no check is possible: call
      `jpm_hybrid.check_force_reversal` beforehand.

    **Returns:** a `jpm_core.NBodyResult`.
    """
    forces = jpm_core.ForceConfig() if forces is None else forces
    gradient = jpm_core.Adjoint() if gradient is None else gradient
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        start = a_init if a_init is not None else state.a
        if not is_concrete(start):
            raise ValueError("state.a is traced: pass a_init (or an explicit sequence of steps)")
        steps = step_grid(float(np.asarray(start)), a_snapshots, steps).tolist()
    kwargs = dict(steps=steps, a_init=a_init, forces=forces, gradient=gradient, **nbody_kwargs)
    if model is None or isinstance(model, PGDCorrection):
        result = jpm_core.nbody(cosmo, state, domain, a_snapshots, **kwargs)
        if model is None:
            return result
        return result._replace(snapshots=model.correct(result.snapshots, domain))
    if not isinstance(model, SplineFilter):
        raise TypeError(
            "model must be a jpm_hybrid.SplineFilter, a jpm_hybrid.PGDCorrection or None, got "
            f"{type(model).__name__}"
        )
    fn, params = potential_filter(model, domain, cosmo=cosmo)
    if check_reversal and is_concrete(params):
        start = a_init if a_init is not None else state.a
        if is_concrete(start):
            grid = step_grid(float(np.asarray(start)), a_snapshots, steps)
            check_force_reversal(model, domain, grid, cosmo=cosmo)
    return jpm_core.nbody(
        cosmo, state, domain, a_snapshots, potential_filter=fn, filter_params=params, **kwargs
    )


class TruthData(NamedTuple):
    """A training target: the initial particles and the snapshots a correction should reproduce.

    - `cosmo`: the `jpm_core.Cosmology`.
    - `domain`: the coarse `jpm_core.Domain` (the mesh the hybrid run uses; one particle per cell).
    - `initial`: the initial `jpm_core.ParticleState` (e.g. 2LPT), in mesh units of `domain`.
    - `snapshots`: the target snapshots, a stacked `jpm_core.ParticleState` (`a` of shape `(n,)`,
      after `initial.a`), in mesh units of `domain` (not wrapped).

    Build it with `jpm_hybrid.make_truth` or `jpm_hybrid.load_truth`, or by hand from another
    simulation.
    """

    cosmo: jpm_core.Cosmology
    domain: jpm_core.Domain
    initial: jpm_core.ParticleState
    snapshots: jpm_core.ParticleState


def _scaled_domain(domain: jpm_core.Domain, boost: int) -> jpm_core.Domain:
    return jpm_core.Domain(tuple(int(n) * boost for n in domain.mesh_shape), domain.box_size)


def make_truth(
    cosmo: jpm_core.Cosmology,
    initial: jpm_core.ParticleState,
    domain: jpm_core.Domain,
    a_snapshots: float | Sequence[float],
    *,
    boost: int = 4,
    steps: int = 100,
    forces: jpm_core.ForceConfig = TRUTH_FORCES,
    path: str | os.PathLike | None = None,
    metadata: dict[str, Any] | None = None,
    progress: bool = False,
) -> TruthData:
    """The offline stand-in for an N-body truth: the same initial particles integrated by jpm-core
    on a force mesh `boost` times finer per side, with many more steps.

    This is not an N-body simulation: it is a PM run whose force resolution is `boost` times finer
    (the particle count is the same), which resolves the small-scale clustering that a PM run on the
    particle mesh misses. The particles are integrated with `jpm_core.rescale_state` on
    `Domain(boost * mesh_shape, box)` with the finite-difference kernels (the right ones for a force
    mesh finer than the particle grid), and brought back to the mesh units of `domain`.

    **Arguments:**

    - `cosmo`: the `jpm_core.Cosmology` (concrete).
    - `initial`: the initial `ParticleState` in mesh units of `domain`, one particle per cell, with
      a concrete `a` (e.g. `jpm_core.lpt(cosmo, delta, domain, 0.1)`).
    - `domain`: the coarse `jpm_core.Domain` (one device).
    - `a_snapshots`: the scale factors of the targets, after `initial.a`.
    - `boost`: force-mesh refinement per side (2-4; 4 in the issue's reference).
    - `steps`: steps of the truth run, spread over the snapshot intervals by
      `jpm_hybrid.step_grid` (uniform in `a` within each, every snapshot a boundary).
    - `forces`: the truth's `jpm_core.ForceConfig` (default finite-difference gradient and
      Laplacian, jpm-core's default mass assignment).
    - `path`: if given, the run (initial state included as its first snapshot) is written there
      with `jpm_core.save_snapshots` (npz, or HDF5 for `.h5`), readable by `jpm_hybrid.load_truth`.
    - `metadata`: extra JSON-able entries for the file.
    - `progress`: jpm-core's progress bar for the run.

    **Returns:** a `TruthData` in mesh units of `domain`.
    """
    boost = check_int("boost", boost, minimum=1)
    steps = check_int("steps", steps, minimum=1)
    if not isinstance(domain, jpm_core.Domain):
        raise TypeError(f"domain must be a jpm_core.Domain, got {type(domain).__name__}")
    if domain.is_distributed:
        raise ValueError("make_truth runs on one device; pass a Domain without device_grid")
    if not is_concrete(initial.a):
        raise ValueError("initial.a must be concrete (make_truth is eager)")
    a0 = float(np.asarray(initial.a))
    snaps = np.atleast_1d(np.asarray(a_snapshots, float))
    if snaps.ndim != 1 or snaps.size == 0 or np.any(np.diff(snaps) <= 0) or snaps[0] <= a0:
        raise ValueError(
            f"a_snapshots must be strictly increasing and after initial.a = {a0}, got "
            f"{snaps.tolist()}"
        )
    fine = _scaled_domain(domain, boost)
    state = jpm_core.rescale_state(initial, domain, fine)
    run = jpm_core.nbody(
        cosmo,
        state,
        fine,
        [a0, *snaps.tolist()],
        steps=step_grid(a0, snaps, steps).tolist(),
        forces=forces,
        progress=progress,
    ).snapshots
    if path is not None:
        extra = dict(metadata or {})
        extra["jpm_hybrid"] = {
            "what": "truth",
            "coarse_mesh_shape": list(domain.mesh_shape),
            "boost": boost,
            "steps": steps,
            "forces": [forces.kernel, forces.laplace, forces.scheme],
        }
        jpm_core.save_snapshots(path, run, domain=fine, cosmo=cosmo, metadata=extra)
    return _truth_from_run(cosmo, domain, fine, run)


def _truth_from_run(cosmo, domain, fine, run) -> TruthData:
    coarse = jpm_core.rescale_state(
        jpm_core.ParticleState(jnp.asarray(run.positions), jnp.asarray(run.momenta), run.a),
        fine,
        domain,
    )
    a = jnp.asarray(run.a)
    initial = jpm_core.ParticleState(coarse.positions[0], coarse.momenta[0], float(a[0]))
    snapshots = jpm_core.ParticleState(coarse.positions[1:], coarse.momenta[1:], a[1:])
    return TruthData(cosmo=cosmo, domain=domain, initial=initial, snapshots=snapshots)


def load_truth(path: str | os.PathLike) -> TruthData:
    """Read a truth written by `make_truth(..., path=...)` (the snapshot file of a finer run) into
    a `TruthData` on the coarse domain it was made for.

    **Raises:** `ValueError` for a snapshot file that `make_truth` did not write.
    """
    loaded = jpm_core.load_snapshots(path)
    info = loaded.metadata.get("jpm_hybrid")
    if not isinstance(info, dict) or info.get("what") != "truth":
        raise ValueError(
            f"{os.fspath(path)!r}: field 'jpm_hybrid' of the metadata is missing: not a "
            "truth written by jpm_hybrid.make_truth"
        )
    domain = jpm_core.Domain(tuple(info["coarse_mesh_shape"]), loaded.domain.box_size)
    return _truth_from_run(loaded.cosmo, domain, loaded.domain, loaded.snapshots)
