"""FastPM-style kick-drift-kick particle-mesh integration in the scale factor.

Equations of motion (positions `x` and momenta `p` in mesh units, time variable `a`, time measured
in 1/H0):

    dx/da = p / (a^3 E(a)),        dp/da = F(x, a) / (a^2 E(a)),
    F = (3 Omega_m / 2) * pm_forces(x)      (points towards overdensities).

One step from `a0` to `a1` (midpoint `ah = (a0 + a1) / 2`), one force evaluation per step (the
force at the end of a step is reused by the next one):

    p <- p + K(a0, ah; a0) F(x, a0)
    x <- x + Dr(a0, a1; ah) p
    p <- p + K(ah, a1; a1) F(x, a1)

With `G_p(a) = a^3 E dD1/da = a^2 E f1 D1` and `G_f(a) = a^2 E dG_p/da = (3/2) Omega_m D1` (the
linear growth equation), Feng et al. (2016, FastPM) choose

    Dr(a0, a1; ah) = (D1(a1) - D1(a0)) / G_p(ah),     K(a0, a1; ac) = (G_p(a1) - G_p(a0)) / G_f(ac),

so that the Zel'dovich trajectory `x = q + D1 psi`, `p = G_p psi` (whose force is
`F = G_f psi`) is reproduced exactly whatever the step size; for small steps they tend to the
leapfrog factors `da / (a^3 E)` and `da / (a^2 E)`.
"""

from __future__ import annotations

import dataclasses
import numbers
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from jpm_core._src._checks import check_domain, check_scale_factor, is_concrete
from jpm_core._src.adjoint import (
    Schedule,
    StepFactors,
    Trajectory,
    integrate_adjoint,
    integrate_scan,
)
from jpm_core._src.config import (
    DEFAULT_FORCES,
    Adjoint,
    Checkpointed,
    Direct,
    ForceConfig,
    check_forces,
    check_gradient,
)
from jpm_core._src.cosmology.background import efunc
from jpm_core._src.cosmology.growth import growth_factor, growth_rate
from jpm_core._src.cosmology.parameters import Cosmology
from jpm_core._src.domain import Domain
from jpm_core._src.forces import PotentialFilter, pm_forces
from jpm_core._src.halo import stray_statistics
from jpm_core._src.progress import StepProgress
from jpm_core._src.state import ParticleState

__all__ = ["NBodyResult", "Observer", "nbody", "nbody_vector_field"]

Observer = Callable[[ParticleState, Array, Array, Any], Any]
"""`(state, a_start, a_end, carry) -> carry`, called once per step (see `nbody`)."""

_SNAPSHOT_RTOL = 1e-6
_MIN_FACTOR_BATCH = 64
_LATTICE_SPACING_RTOL = 0.5  # a lattice spacing off by more than this factor is a unit mix-up


class NBodyResult(NamedTuple):
    """What `nbody` returns (a PyTree).

    - `snapshots`: a `ParticleState` whose leaves have a leading axis of length `n_snapshots`:
      `positions` and `momenta` `(n_snapshots, *particle_shape, 3)`, `a` `(n_snapshots,)`.
    - `observer_carry`: the final carry of the observer (`observer_init` if there is no observer).
    """

    snapshots: ParticleState
    observer_carry: Any


# ------------------------------------------------------------------------------- eager checks
def _as_increasing(name: str, values: object) -> np.ndarray:
    if isinstance(values, jax.core.Tracer):
        raise TypeError(f"{name} must be concrete (static configuration), got a tracer")
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D sequence of scale factors, got {values!r}"
        )
    check_scale_factor(name, array)
    if np.any(np.diff(array) <= 0):
        raise ValueError(f"{name} must be strictly increasing, got {values!r}")
    return array


def _concrete_scalar(value: object) -> float | None:
    if isinstance(value, jax.core.Tracer):
        return None
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 0:
        raise ValueError(f"state.a must be a scalar, got shape {array.shape}")
    return float(array)


def _check_state(state: object, domain: Domain) -> ParticleState:
    if not isinstance(state, ParticleState):
        raise TypeError(f"state must be a jpm_core.ParticleState, got {type(state).__name__}")
    x, p = state.positions, state.momenta
    if x.ndim < 2 or x.shape[-1] != 3:
        raise ValueError(
            f"state.positions must have shape (..., 3) in mesh units, got {tuple(x.shape)}"
        )
    if p.shape != x.shape:
        raise ValueError(
            f"state.momenta must have the shape of state.positions {tuple(x.shape)}, "
            f"got {tuple(p.shape)}"
        )
    if x.ndim == 4 and any(m % n for m, n in zip(domain.mesh_shape, x.shape[:3], strict=True)):
        raise ValueError(
            f"state.positions of shape {tuple(x.shape)} is a Lagrangian grid whose shape does not "
            f"divide domain.mesh_shape={domain.mesh_shape} (the force mesh must be the particle "
            "grid refined by an integer factor per axis; reshape to (n_particles, 3) to run "
            "arbitrary particles)"
        )
    if jnp.ndim(state.a) != 0:
        raise ValueError(f"state.a must be a scalar, got shape {jnp.shape(state.a)}")
    return state


def _check_lattice_laplace(state: ParticleState, domain: Domain, forces: ForceConfig) -> None:
    """`laplace="lattice"` is TSC's symbol for one particle per cell: refuse a finer force mesh."""
    x = state.positions
    if forces.laplace == "lattice" and x.ndim == 4 and x.shape[:3] != domain.mesh_shape:
        raise ValueError(
            f"forces.laplace='lattice' (the default) is the lattice-consistent Laplacian for one "
            f"particle per cell, but the {tuple(x.shape[:3])} particle lattice runs on a finer "
            f"{domain.mesh_shape} force mesh. Pass forces=ForceConfig(kernel='finite_difference', "
            "laplace='finite_difference') (FastPM's choice with a finer force mesh)"
        )


def _warn_spectral_on_coarse_lattice(state: ParticleState, domain: Domain, kernel: str) -> None:
    x = state.positions
    if kernel == "spectral" and x.ndim == 4 and x.shape[:3] != domain.mesh_shape:
        warnings.warn(
            f"a {tuple(x.shape[:3])} particle lattice on a finer {domain.mesh_shape} force mesh "
            "with the spectral gradient kernel: the lattice's harmonics near the mesh Nyquist "
            "frequency alias into large-scale forces (a fundamental-mode plane wave grows 15% too "
            "little with a factor 2). Pass forces=ForceConfig(kernel='finite_difference', "
            "laplace='finite_difference') (FastPM's choice with a finer force mesh).",
            UserWarning,
            stacklevel=3,
        )


def _check_lattice_units(state: ParticleState, domain: Domain) -> None:
    """Eager check that a Lagrangian lattice is expressed in the cells of `domain`.

    A `(a, b, c, 3)` lattice on a `(nx, ny, nz)` mesh must have its particles spaced by `nx / a`
    cells along x (and so on): positions in the cells of another domain (e.g. an `8^3` LPT state
    run on a `16^3` mesh without `rescale_state`) fill only part of the box and give a finite,
    wrong answer. The spacing is the least-squares slope of the mean position of each lattice
    plane against its index (displacements barely change it); it must lie within a factor
    `1 + _LATTICE_SPACING_RTOL` of the expected one.
    """
    x = state.positions
    if x.ndim != 4 or not is_concrete(x):
        return
    with jax.ensure_compile_time_eval():  # a concrete state stays concrete inside jit
        x = jnp.asarray(x)
    for axis in range(3):
        n_lattice = x.shape[axis]
        if n_lattice < 2:
            continue
        other = tuple(i for i in range(3) if i != axis)
        with jax.ensure_compile_time_eval():  # a concrete state stays concrete inside jit
            planes = np.asarray(jnp.mean(x[..., axis], axis=other), dtype=np.float64)
        if not np.all(np.isfinite(planes)):
            raise ValueError(f"state.positions has non-finite values along axis {axis}")
        index = np.arange(n_lattice, dtype=np.float64) - 0.5 * (n_lattice - 1)
        spacing = float(np.sum(index * (planes - planes.mean())) / np.sum(index * index))
        expected = domain.mesh_shape[axis] / n_lattice
        ratio = spacing / expected
        if not (1 / (1 + _LATTICE_SPACING_RTOL) <= ratio <= 1 + _LATTICE_SPACING_RTOL):
            raise ValueError(
                f"state.positions is a {tuple(x.shape[:3])} lattice whose particles are spaced "
                f"by {spacing:.3g} cells along axis {axis}, but on domain.mesh_shape="
                f"{domain.mesh_shape} they must be spaced by {expected:.3g} cells: the state is "
                "in the cells of another Domain. Positions and momenta are in mesh units: "
                "express the state in the cells of the force mesh with "
                "jpm_core.rescale_state(state, particle_domain, domain)"
            )


def _time_grid(
    steps: int | Sequence[float], a_init: float | None, state_a: float | None, a_final: float
) -> np.ndarray:
    """The step boundaries `(n_steps + 1,)` as float64 NumPy, checked."""
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool):
        if steps < 1:
            raise ValueError(f"steps (the number of steps) must be >= 1, got {steps!r}")
        if a_init is None:
            a_init = state_a
        if a_init is None:
            raise ValueError(
                "state.a is traced: pass a_init (a Python float) or an explicit list of steps"
            )
        check_scale_factor("a_init", a_init)
        if a_final <= a_init:
            raise ValueError(
                f"the last snapshot a={a_final!r} must be after the initial a={a_init!r}"
            )
        grid = np.linspace(a_init, a_final, int(steps) + 1)
    elif isinstance(steps, numbers.Number):  # bool and float included
        raise TypeError(f"steps must be an int or a sequence of scale factors, got {steps!r}")
    else:
        grid = _as_increasing("steps", steps)
        if grid.size < 2:
            raise ValueError(
                f"an explicit list of steps needs at least 2 boundaries, got {steps!r}"
            )
        if a_init is not None and not np.isclose(grid[0], a_init, rtol=_SNAPSHOT_RTOL, atol=0):
            raise ValueError(f"steps[0]={grid[0]!r} differs from a_init={a_init!r}")
    if state_a is not None and not np.isclose(grid[0], state_a, rtol=1e-6, atol=0):
        raise ValueError(f"the first step starts at a={grid[0]!r} but state.a={state_a!r}")
    return grid


def _snapshot_slots(grid: np.ndarray, snapshots: np.ndarray) -> tuple[np.ndarray, bool]:
    """For each step, the snapshot slot written at its end (n_snapshots: none); initial flag."""
    n_snap = snapshots.size
    slots = np.full(grid.size - 1, n_snap, dtype=np.int32)
    at_start = False
    for j, a in enumerate(snapshots):
        matches = np.flatnonzero(np.isclose(grid, a, rtol=_SNAPSHOT_RTOL, atol=0))
        if matches.size != 1:
            raise ValueError(
                f"snapshot a={a!r} is not a step boundary; snapshots must coincide with step "
                f"boundaries (the grid is {grid.tolist()}); change steps or the snapshots"
            )
        if matches[0] == 0:
            at_start = True
            if j != 0:  # unreachable for increasing snapshots; kept for clarity
                raise ValueError("only the first snapshot may be at the initial scale factor")
        else:
            slots[matches[0] - 1] = j
    return slots, at_start


# ------------------------------------------------------------------------------- the physics
def _step_factors(cosmo: Cosmology, grid: np.ndarray, dtype: jnp.dtype) -> StepFactors:
    """Kick and drift factors of every step (arrays of shape `(n_steps,)`)."""
    n = grid.size - 1
    a0, a1 = grid[:-1], grid[1:]
    ah = 0.5 * (a0 + a1)
    # One evaluation of each growth function on all the scale factors (each builds its table),
    # padded to a power of two so that eager calls with other step counts reuse the compilation.
    a_all = np.concatenate([a0, a1, ah])
    size = max(_MIN_FACTOR_BATCH, 1 << int(np.ceil(np.log2(a_all.size))))
    a = jnp.asarray(np.pad(a_all, (0, size - a_all.size), constant_values=1.0), dtype)
    d1 = growth_factor(cosmo, a).astype(dtype)
    g_p = a * a * efunc(cosmo, a).astype(dtype) * growth_rate(cosmo, a).astype(dtype) * d1
    g_f = 1.5 * jnp.asarray(cosmo.Omega_m, dtype) * d1
    d_0, d_1 = d1[:n], d1[n : 2 * n]
    gp_0, gp_1, gp_h = g_p[:n], g_p[n : 2 * n], g_p[2 * n : 3 * n]
    return StepFactors(
        kick_first=(gp_h - gp_0) / g_f[:n],
        drift=(d_1 - d_0) / gp_h,
        kick_second=(gp_1 - gp_h) / g_f[n : 2 * n],
    )


def _force_domain(domain: Domain) -> Domain:
    """The domain the forces of `nbody` are painted on: strays are reported by `nbody` itself.

    Distributed painting poisons its mesh with NaN either way; `nbody` prints its own warning
    (naming the step, counting only finite strays) instead of one per paint and read.
    """
    if domain.is_distributed and domain.on_stray != "nan":
        return dataclasses.replace(domain, on_stray="nan")
    return domain


def _force_function(
    cosmo: Cosmology,
    domain: Domain,
    forces: ForceConfig,
    potential_filter: PotentialFilter | None,
) -> Callable[[Array, Array, Any], Array]:
    """`(positions, a, filter_params) -> F`, the acceleration `(3 Omega_m / 2) pm_forces`."""
    force_domain = _force_domain(domain)

    def force(positions: Array, a: Array, params: Any) -> Array:
        pm = pm_forces(
            positions,
            force_domain,
            forces=forces,
            potential_filter=potential_filter,
            filter_params=params,
            a=None if potential_filter is None else a,
        )
        return (1.5 * jnp.asarray(cosmo.Omega_m, pm.dtype)) * pm.astype(positions.dtype)

    return force


def _stray_message(boundary: int, n_steps: int, count: int, needed: int, domain: Domain) -> str:
    where = "the initial state" if boundary == 0 else f"step {boundary} of {n_steps}"
    return (
        f"jpm_core.nbody: at {where}, {count} particle(s) moved more than halo={domain.halo} "
        f"cell(s) outside the mesh slab of the device that holds them (device_grid="
        f"{domain.device_grid!r}, mesh_shape={domain.mesh_shape!r}); they need halo >= {needed}. "
        "Pass Domain(..., halo=...) (at most the local slab width) or take more time steps"
    )


def _stray_monitor(domain: Domain, forces: ForceConfig, n_steps: int):
    """The monitor of a distributed run: finite strays and the halo needed, at every boundary."""

    def monitor(positions: Array, boundary: Array) -> Array:
        stats = stray_statistics(positions, domain, forces.order)
        if domain.on_stray == "warn":

            def report(i, stats):
                count, needed = int(stats[0]), int(stats[1])
                if count:
                    message = _stray_message(int(i), n_steps, count, needed, domain)
                    print(f"WARNING: {message}; the result is NaN", file=sys.stderr)

            jax.debug.callback(report, boundary, stats)
        return stats

    return monitor


def _raise_on_strays(stats: Any, n_steps: int, domain: Domain) -> None:
    """Eagerly (concrete statistics): a `RuntimeError` naming the first step with strays."""
    if stats is None or not is_concrete(stats):
        return
    stats = np.asarray(stats)
    bad = np.flatnonzero(stats[:, 0] > 0)
    if bad.size:
        i = int(bad[0])
        raise RuntimeError(
            _stray_message(i, n_steps, int(stats[i, 0]), int(stats[i, 1]), domain)
            + "; the run would be NaN from this step on"
        )


def _integrate(gradient, *args, **kwargs) -> Trajectory:
    if isinstance(gradient, Adjoint):
        try:
            return integrate_adjoint(*args, **kwargs)
        except TypeError as error:
            if "forward-mode" not in str(error) and "jvp" not in str(error):
                raise
            raise TypeError(
                "nbody(..., gradient=Adjoint()) (the default) has no forward mode: jax.jvp and "
                "jax.jacfwd (of anything but a reverse-mode gradient) need "
                "gradient=jpm_core.Direct() (or jpm_core.Checkpointed()); reverse mode "
                "(jax.grad, jax.vjp, jax.jacrev) and jax.hessian (forward over reverse) work"
            ) from error
    return integrate_scan(*args, checkpoint=isinstance(gradient, Checkpointed), **kwargs)


def nbody(
    cosmo: Cosmology,
    state: ParticleState,
    domain: Domain,
    a_snapshots: float | Sequence[float],
    *,
    steps: int | Sequence[float],
    a_init: float | None = None,
    forces: ForceConfig = DEFAULT_FORCES,
    gradient: Adjoint | Checkpointed | Direct = Adjoint(),  # noqa: B008 (frozen, immutable)
    potential_filter: PotentialFilter | None = None,
    filter_params: Any = None,
    observer: Observer | None = None,
    observer_init: Any = None,
    observer_start_positions: bool = False,
    progress: bool = False,
) -> NBodyResult:
    """Integrate particles with the FastPM kick-drift-kick scheme and return snapshots.

    The steps run inside one `jax.lax.scan`, so compile time does not depend on the number of
    steps; one PM force evaluation per step (plus one at the start). The scheme is exact for
    linear (Zel'dovich) growth whatever the step size (see the module docstring): 5-10 steps from
    a = 0.1 suffice on large scales.

    **Time grid.** `steps` is the number of steps uniform in `a` from the initial scale factor to
    the last snapshot, or an explicit increasing sequence of step boundaries (its first element
    is the initial scale factor). Every snapshot must coincide with a step boundary (to relative
    1e-6), otherwise `ValueError`; a snapshot at the initial scale factor returns the input state.
    The grid is static configuration: a new grid recompiles.

    **Gradients** follow `gradient`, one of three objects:

    - `Adjoint()` (default): the reverse-time adjoint of pmwd (Li et al. 2022). The step is
      time-reversible, so the backward pass runs the steps backwards from the final state,
      reconstructing `(positions, momenta, force)` at every step boundary, and applies the VJP
      of one step at a time: memory and compile time do not depend on the number of steps, and
      the cost is one force evaluation and one force VJP per step. Cotangents flow to the
      initial state, the cosmology (through the kick/drift factors and `Omega_m`),
      `filter_params`, and every traced value `potential_filter` and `observer` close over
      (hoisted with `jax.closure_convert`). The reconstruction differs from the forward
      trajectory by round-off (float32, 64^3, 10-40 steps: 7e-6 of the RMS displacement), which
      only enters the gradient. No forward mode: `jax.jvp`/`jax.jacfwd` raise a `TypeError`
      pointing to `Direct()`; `jax.hessian` (forward over reverse) differentiates the backward
      pass and works (it equals `Direct()`'s Hessian to round-off). The observer is exactly differentiated when its update
      is affine in the floating leaves of its carry with a Jacobian that does not depend on
      their values (`carry + g(state)`, `carry.at[i].add(g(state))`, `carry.at[i].set(...)`,
      `i` from `a_start`/`a_end` or an integer leaf of the carry: lightcone planes); the
      carry's integer leaves are recorded at every step (keep them small). Other observers
      raise `ValueError` when the gradient is traced: use `Checkpointed()`.
    - `Checkpointed()`: each step is wrapped in `jax.checkpoint`: the backward pass stores the
      carried `(positions, momenta, force)` per step (`9 * n_particles` floats per step) and
      recomputes the step's intermediates (painting, FFTs). Forward and reverse mode.
    - `Direct()`: plain autodiff through the `lax.scan`: every step's intermediates are stored.
      Forward mode (`jax.jvp`, `jax.jacfwd`, `jax.hessian`: Fisher matrices of a few
      parameters) and reverse mode.

    Snapshots are written into a buffer carried through the scan by a linear update, which adds
    nothing per step to the backward pass.

    **What an observer sees.** `observer(state, a_start, a_end, carry)` is called once per step,
    in order, after the step's second kick: `state` is the `ParticleState` at the *end* of the
    step (`state.a == a_end`; positions after the drift, momenta after both kicks, in mesh units
    of `domain`, not wrapped), `[a_start, a_end]` the step's interval (scalar arrays of the
    positions' dtype; consecutive intervals tile `[a_init, a_final]`), and `carry` the value it
    returned at the previous step (`observer_init` at the first). It is not called at the initial
    state. Under every gradient method the forward pass calls it on the exact forward
    trajectory; under `Adjoint()` the backward pass evaluates its VJP at the reconstructed state
    (equal to round-off). It must be a pure function of its arguments (it runs inside `scan`);
    `carry` is any PyTree of fixed structure, shapes and dtypes. Under `Direct()`/`Checkpointed()`
    its intermediates are kept per step: wrap it in `jax.checkpoint` if they are large.

    **Where particles were during the step.** With `observer_start_positions=True` the observer
    is called as `observer(state, a_start, a_end, carry, positions_start)`, `positions_start` the
    positions at `a_start` (before the step's drift, same shape and units as `state.positions`).
    In a kick-drift-kick step a particle moves on the straight line from `positions_start` to
    `state.positions`, linearly in the drift factor, so a lightcone can place each particle where
    the cone crossed it (interpolation, exact along the step's path). Every gradient method
    differentiates it; under `Adjoint()` the backward pass reconstructs `positions_start` from
    the end of the step (`x - drift (p - kick_second F(x))`, the reverse step's own formula) and
    passes its cotangent on to the positions, momenta, the force at `a_end` and the step's
    factors, at no extra force evaluation.

    **Distributed runs.** An observer receives the sharded state (the positions' first two axes
    sharded over the device grid like the mesh) and runs inside the same `jit`: written in plain
    `jax.numpy` (scatter-adds onto a map, reductions), XLA partitions it and its result equals the
    one-device run's (jlens's `BornLightcone(method="particles")` is tested so on 8 fake CPU
    devices); an observer that calls `paint`/`read` on the run's mesh must be built for the
    distributed domain. On a device grid a particle further than `domain.halo` cells from its
    device's slab cannot be painted. Eagerly (concrete inputs), `nbody` raises a `RuntimeError`
    after the scan, naming the first step where it happened, how many particles strayed and the
    halo they need; inside `jit` the result is NaN from that step on and, with
    `domain.on_stray == "warn"`, a warning with the same content is printed from the host (the
    count is that of finite positions: it is not inflated by the NaN that follows).

    **Arguments:**

    - `cosmo`: the `Cosmology` (traced; differentiable).
    - `state`: the initial `ParticleState` (e.g. from `jpm_core.lpt`), positions and momenta of
      shape `(..., 3)` in mesh units of `domain`; a 4-D `(nx, ny, nz, 3)` Lagrangian lattice
      must match `domain.mesh_shape` or divide it (a force mesh finer than the particle grid by
      an integer factor per axis, after `jpm_core.rescale_state`; with the spectral kernel that
      warns, as the lattice harmonics alias into large-scale forces: use the finite-difference
      kernels). A concrete lattice whose spacing is not `mesh_shape / lattice_shape` cells (a
      state in the cells of another domain) raises `ValueError` pointing to `rescale_state`.
    - `domain`: the `Domain` of the force mesh (static).
    - `a_snapshots`: scale factor(s) of the snapshots, strictly increasing, in (0, 1.5] (static).
    - `steps`: number of steps (int >= 1, uniform in a) or the sequence of step boundaries.
    - `a_init`: the initial scale factor, needed when `state.a` is traced (e.g. `state` is an
      argument of a jitted function) and `steps` is an int; checked against `state.a` when both
      are concrete.
    - `forces`: the `ForceConfig` of `jpm_core.pm_forces` (kernel, Laplacian, scheme).
    - `gradient`: `Adjoint()` (default), `Checkpointed()` or `Direct()` (see above).
    - `potential_filter`: optional `(k, a, params) -> multiplier` applied to the Fourier-space
      potential at every force evaluation (see `jpm_core.PotentialFilter`): `k` the `|k|` array
      in h/Mpc of shape `domain.fourier_shape`, `a` the scalar scale factor of the force,
      `params` the `filter_params`; a scalar or an array of that shape. A multiplier of 0
      switches gravity off; a NaN one makes the result NaN.
    - `filter_params`: the PyTree passed to `potential_filter` (e.g. a learned filter's
      weights); every gradient method differentiates with respect to it.
    - `observer`: optional `(state, a_start, a_end, carry) -> carry` (see above).
    - `observer_init`: the initial carry of `observer`.
    - `observer_start_positions`: also pass the positions at the start of each step to
      `observer` (its fifth argument; see above). Off by default.
    - `progress`: show a `rich` progress bar on stderr (step `i/n`, elapsed time, ETA) as the
      steps run, fed by `jax.debug.callback` from inside the scan (works under `jit`; under
      `vmap` one bar per call), and a second one, `nbody adjoint`, as the adjoint's backward pass
      reverses them; off by default.

    **Returns:** an `NBodyResult` `(snapshots, observer_carry)`.

    **Raises:** `ValueError`/`TypeError` eagerly: snapshots not strictly increasing, a scale factor
    outside (0, 1.5], `steps < 1`, a snapshot that is not a step boundary, a state whose shapes
    or units do not match each other or the domain, `state.a` differing from the start of the
    grid, a `gradient` that is not one of the three objects, a `forces` that is not a
    `ForceConfig`; `TypeError` for forward-mode differentiation under `Adjoint()`;
    `RuntimeError` for an eager distributed run whose particles outgrow the halo.
    """
    gradient = check_gradient("gradient", gradient)
    forces = check_forces("forces", forces)
    check_domain("domain", domain)
    if not isinstance(observer_start_positions, bool):
        raise TypeError(
            f"observer_start_positions must be a bool, got {observer_start_positions!r}"
        )
    if potential_filter is not None and not callable(potential_filter):
        raise TypeError(
            "potential_filter must be a callable (k, a, params) -> multiplier, got "
            f"{type(potential_filter).__name__}"
        )
    state = _check_state(state, domain)
    _check_lattice_units(state, domain)
    _check_lattice_laplace(state, domain, forces)
    _warn_spectral_on_coarse_lattice(state, domain, forces.kernel)
    snapshots = _as_increasing("a_snapshots", a_snapshots)
    if a_init is not None:
        check_scale_factor("a_init", a_init)
        a_init = float(a_init)
    grid = _time_grid(steps, a_init, _concrete_scalar(state.a), float(snapshots[-1]))
    if snapshots[0] < grid[0] * (1 - _SNAPSHOT_RTOL):
        raise ValueError(f"snapshots {snapshots.tolist()} start before the initial a={grid[0]!r}")
    slots, at_start = _snapshot_slots(grid, snapshots)
    n_steps, n_snap = grid.size - 1, snapshots.size

    x0 = jnp.asarray(state.positions)
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        raise TypeError(f"state.positions must be floating, got {x0.dtype}")
    dtype = x0.dtype
    p0 = jnp.asarray(state.momenta).astype(dtype)
    if is_concrete(cosmo):
        # a fixed cosmology: the factors are constants of the program, computed now with the
        # growth functions' own cached compilations instead of being inlined into it
        with jax.ensure_compile_time_eval():
            factors = _step_factors(cosmo, grid, dtype)
    else:
        factors = _step_factors(cosmo, grid, dtype)
    force = _force_function(cosmo, domain, forces, potential_filter)
    flat_observer = None
    if observer is not None:
        if observer_start_positions:

            def flat_observer(x_start, x, p, a0, a1, carry):
                return observer(ParticleState(x, p, a1), a0, a1, carry, x_start)

        else:

            def flat_observer(x_start, x, p, a0, a1, carry):
                return observer(ParticleState(x, p, a1), a0, a1, carry)

    monitor = _stray_monitor(domain, forces, n_steps) if domain.is_distributed else None
    trajectory = _integrate(
        gradient,
        force,
        flat_observer,
        x0,
        p0,
        filter_params,
        factors,
        Schedule(a_grid=grid, slots=slots, n_snap=n_snap),
        observer_init,
        monitor=monitor,
        progress=StepProgress(n_steps) if progress else None,
    )
    _raise_on_strays(trajectory.monitor, n_steps, domain)
    buf_x, buf_p = trajectory.buf_x, trajectory.buf_p
    if at_start:
        buf_x = buf_x.at[0].set(x0)
        buf_p = buf_p.at[0].set(p0)
    snaps = ParticleState(
        positions=buf_x[:n_snap], momenta=buf_p[:n_snap], a=jnp.asarray(snapshots, dtype)
    )
    return NBodyResult(snapshots=snaps, observer_carry=trajectory.observer_carry)


def nbody_vector_field(
    cosmo: Cosmology,
    domain: Domain,
    *,
    forces: ForceConfig = DEFAULT_FORCES,
    potential_filter: PotentialFilter | None = None,
) -> Callable[[ArrayLike, tuple[Array, Array], Any], tuple[Array, Array]]:
    """The equations of motion as a vector field `(a, (x, p), args) -> (dx/da, dp/da)`.

    Its signature is that of a `diffrax.ODETerm` vector field, so
    `diffrax.ODETerm(nbody_vector_field(cosmo, domain))` integrates the same equations as
    `nbody` with any diffrax solver and adjoint (diffrax is not a dependency of `jpm_core`):
    `dx/da = p / (a^3 E)`, `dp/da = (3 Omega_m / 2) pm_forces(x) / (a^2 E)`.

    **Arguments:**

    - `cosmo`: the `Cosmology` (closed over; differentiable).
    - `domain`: the `Domain` of the force mesh.
    - `forces`, `potential_filter`: as in `nbody`.

    **Returns:** a function `(a, (positions, momenta), args) -> (dx/da, dp/da)`, `a` a scalar,
    positions and momenta `(..., 3)` in mesh units; `args` is the `filter_params` of
    `potential_filter` (pass them as `diffrax.diffeqsolve(..., args=filter_params)`, so that
    diffrax's adjoints, e.g. `BacksolveAdjoint`, differentiate with respect to them; ignored
    without a filter).
    """
    check_domain("domain", domain)
    forces = check_forces("forces", forces)
    force = _force_function(cosmo, domain, forces, potential_filter)

    def vector_field(a, y, args):
        x, p = y
        a = jnp.asarray(a, x.dtype)
        e = efunc(cosmo, a).astype(x.dtype)
        return p / (a**3 * e), force(x, a, args) / (a**2 * e)

    return vector_field
