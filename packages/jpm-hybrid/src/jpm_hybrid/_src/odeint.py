"""The hybrid simulation under a diffrax solver: jpm-core's equations of motion
(`jpm_core.nbody_vector_field`) with the learned correction, integrated by an adaptive Runge-Kutta
method (Dopri5 by default, as in Lanzieri, Lanusse & Starck 2022) and differentiated by a diffrax
adjoint.

diffrax is an optional dependency (the `diffrax` extra of jpm-hybrid): it is imported when
`hybrid_odeint` is called, not when `jpm_hybrid` is imported.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jpm_core

from ._checks import check_int, is_concrete
from .filters import SplineFilter, check_force_reversal, potential_filter
from .pgd import PGDCorrection

_EXTRA_HINT = 'pip install "./packages/jpm-hybrid[diffrax]"'

# scale factors at which a concrete filter is checked for 1 + f < 0 before an adaptive run (the
# solver evaluates the force at scale factors it chooses; the network is smooth in a)
_REVERSAL_CHECK_POINTS = 33


def _import_diffrax():
    try:
        import diffrax
    except ImportError as error:
        raise ImportError(
            "jpm_hybrid.hybrid_odeint needs diffrax, the 'diffrax' extra of jpm-hybrid: "
            f"{_EXTRA_HINT} (or pip install diffrax)"
        ) from error
    return diffrax


def _check_tolerance(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return value


def _snapshots(a_snapshots: Any, a0: float) -> np.ndarray:
    snaps = np.atleast_1d(np.asarray(a_snapshots, float))
    if (
        snaps.ndim != 1
        or snaps.size == 0
        or not np.all(np.isfinite(snaps))
        or np.any(np.diff(snaps) <= 0)
        or snaps[0] < a0 * (1 - 1e-6)
        or snaps[-1] <= a0
    ):
        raise ValueError(
            "a_snapshots must be finite, strictly increasing, from the initial a = "
            f"{a0!r} on and end after it, got {snaps.tolist()}"
        )
    return snaps


def hybrid_odeint(
    cosmo: jpm_core.Cosmology,
    state: jpm_core.ParticleState,
    domain: jpm_core.Domain,
    a_snapshots: float | Sequence[float],
    model: SplineFilter | PGDCorrection | None = None,
    *,
    solver: Any = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    adjoint: Any = None,
    stepsize_controller: Any = None,
    forces: jpm_core.ForceConfig | None = None,
    a_init: float | None = None,
    dt0: float | None = None,
    max_steps: int = 4096,
    check_reversal: bool = True,
) -> jpm_core.NBodyResult:
    """The hybrid run with a diffrax solver: `jpm_core.nbody_vector_field` (the equations of
    motion of `jpm_core.nbody`, `dx/da = p / (a^3 E)`, `dp/da = (3 Omega_m / 2) F(x) / (a^2 E)`)
    with the correction, solved by `diffrax.diffeqsolve` from the initial scale factor to the last
    snapshot.

    The filter's parameters (and the cosmology) travel as diffrax `args`, so every diffrax adjoint
    differentiates with respect to them. `model` is treated as in `jpm_hybrid.hybrid_nbody`: a
    `SplineFilter` multiplies the potential by `1 + f(|k|, a)` at every force evaluation, a
    `PGDCorrection` displaces the snapshots of the plain run, `None` is the plain PM run. As the
    step sizes shrink, the result converges to the same ODE solution as `jpm_core.nbody` /
    `hybrid_nbody` with many steps.

    Needs diffrax (the `diffrax` extra: `pip install "./packages/jpm-hybrid[diffrax]"`).

    **Arguments:**

    - `cosmo`: the `jpm_core.Cosmology` (may be traced; differentiable under either adjoint).
    - `state`: the initial `jpm_core.ParticleState` in mesh units of `domain` (e.g. from
      `jpm_core.lpt`), sharded over `domain.device_grid` for a distributed run.
    - `domain`: the `jpm_core.Domain` of the force mesh (one device or a device grid).
    - `a_snapshots`: scale factor(s) of the snapshots, strictly increasing, from the initial scale
      factor on (a snapshot there returns the initial state).
    - `model`: a `SplineFilter`, a `PGDCorrection` or `None` (not modified).
    - `solver`: a diffrax solver (default `diffrax.Dopri5()`, the paper's).
    - `rtol`, `atol`: tolerances of the default `diffrax.PIDController` (positions and momenta in
      mesh units).
    - `adjoint`: a diffrax adjoint. Default `diffrax.RecursiveCheckpointAdjoint()`: reverse-mode
      autodiff through the solver with binomial checkpointing. With fixed steps it is the exact
      gradient of the computed solution (it matches float64 finite differences); with adaptive
      steps the controller's step sizes are held fixed, so it differs from a finite difference of
      the forward run (whose steps jump with the parameters) but converges to the ODE's gradient:
      measured on 8^3 in float64, within 3.3e-4 (tolerances 1e-5) and 2.0e-5 (1e-7) of a
      converged fixed-step gradient, relative to its largest entry. The paper's
      `diffrax.BacksolveAdjoint(stepsize_controller=...)` uses constant memory but solves the
      adjoint ODE backwards in time through a chaotic backward reconstruction: 1.2e-3 and 8.1e-5
      on the same check; pass it for long, large runs.
    - `stepsize_controller`: a diffrax step-size controller (default
      `diffrax.PIDController(rtol=rtol, atol=atol)`; `diffrax.ConstantStepSize()` with `dt0` for
      fixed steps).
    - `forces`: the `jpm_core.ForceConfig` (default jpm-core's).
    - `a_init`: the initial scale factor, needed when `state.a` is traced.
    - `dt0`: the initial step in `a` (default: chosen by the controller; required by
      `ConstantStepSize`).
    - `max_steps`: the most steps diffrax may take (accepted and rejected).
    - `check_reversal`: with a `SplineFilter` whose parameters are concrete, evaluate `1 + f` on
      the mesh's `|k|` at 33 scale factors spread over the run (and at the snapshots) first and
      raise a `ValueError` if it is negative (or not finite) anywhere; under `jit` call
      `jpm_hybrid.check_force_reversal` beforehand.

    **Returns:** a `jpm_core.NBodyResult` as `jpm_hybrid.hybrid_nbody` returns it: `snapshots` a
    stacked `ParticleState` (positions and momenta of shape `(n_snapshots, ..., 3)` in mesh units,
    not wrapped; `a` of shape `(n_snapshots,)`), `observer_carry=None`. If the solver fails (e.g.
    `max_steps` reached, or a NaN parameter that makes every step rejected), the snapshots are NaN
    under `jit`, and eagerly a `RuntimeError` is raised.

    **Raises:** `ImportError` without diffrax; `ValueError`/`TypeError` for bad arguments (before
    any compute); `RuntimeError` eagerly if the solve fails.
    """
    diffrax = _import_diffrax()
    if not isinstance(domain, jpm_core.Domain):
        raise TypeError(f"domain must be a jpm_core.Domain, got {type(domain).__name__}")
    if not isinstance(state, jpm_core.ParticleState):
        raise TypeError(f"state must be a jpm_core.ParticleState, got {type(state).__name__}")
    if model is not None and not isinstance(model, (SplineFilter, PGDCorrection)):
        raise TypeError(
            "model must be a jpm_hybrid.SplineFilter, a jpm_hybrid.PGDCorrection or None, got "
            f"{type(model).__name__}"
        )
    rtol = _check_tolerance("rtol", rtol)
    atol = _check_tolerance("atol", atol)
    max_steps = check_int("max_steps", max_steps, minimum=1)
    forces = jpm_core.ForceConfig() if forces is None else forces
    if not isinstance(forces, jpm_core.ForceConfig):
        raise TypeError(f"forces must be a jpm_core.ForceConfig, got {type(forces).__name__}")
    solver = diffrax.Dopri5() if solver is None else solver
    if not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(f"solver must be a diffrax solver, got {type(solver).__name__}")
    adjoint = diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint
    if not isinstance(adjoint, diffrax.AbstractAdjoint):
        raise TypeError(f"adjoint must be a diffrax adjoint, got {type(adjoint).__name__}")
    if stepsize_controller is None:
        stepsize_controller = diffrax.PIDController(rtol=rtol, atol=atol)
    if not isinstance(stepsize_controller, diffrax.AbstractStepSizeController):
        raise TypeError(
            "stepsize_controller must be a diffrax step-size controller, got "
            f"{type(stepsize_controller).__name__}"
        )
    if isinstance(stepsize_controller, diffrax.ConstantStepSize) and dt0 is None:
        raise ValueError("a diffrax.ConstantStepSize controller needs dt0 (the step in a)")
    if dt0 is not None:
        dt0 = _check_tolerance("dt0", dt0)
    start = a_init if a_init is not None else state.a
    if not is_concrete(start):
        raise ValueError("state.a is traced: pass a_init (a Python float)")
    a0 = float(np.asarray(start))
    if not (0 < a0 <= 1.5):
        raise ValueError(f"the initial scale factor must be in (0, 1.5], got {a0!r}")
    if is_concrete(state.a) and not np.isclose(float(np.asarray(state.a)), a0, rtol=1e-6):
        raise ValueError(f"a_init={a0!r} differs from state.a={float(np.asarray(state.a))!r}")
    snaps = _snapshots(a_snapshots, a0)
    x0 = jnp.asarray(state.positions)
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        raise TypeError(f"state.positions must be floating, got {x0.dtype}")
    dtype = x0.dtype
    p0 = jnp.asarray(state.momenta).astype(dtype)
    if p0.shape != x0.shape or x0.shape[-1:] != (3,):
        raise ValueError(
            f"state.positions and state.momenta must both have shape (..., 3), got "
            f"{x0.shape} and {p0.shape}"
        )

    if isinstance(model, SplineFilter):
        fn, filter_params = potential_filter(model, domain, cosmo=cosmo)
        if check_reversal and is_concrete(filter_params):
            grid = np.union1d(np.linspace(a0, snaps[-1], _REVERSAL_CHECK_POINTS), snaps)
            check_force_reversal(model, domain, grid, cosmo=cosmo)
    else:
        fn, filter_params = None, None

    def vector_field(a, y, args):
        cosmology, params = args
        field = jpm_core.nbody_vector_field(cosmology, domain, forces=forces, potential_filter=fn)
        return field(a, y, params)

    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0=a0,
        t1=float(snaps[-1]),
        dt0=dt0,
        y0=(x0, p0),
        args=(cosmo, filter_params),
        saveat=diffrax.SaveAt(ts=jnp.asarray(snaps, dtype)),
        stepsize_controller=stepsize_controller,
        adjoint=adjoint,
        max_steps=max_steps,
        throw=False,
    )
    ok = solution.result == diffrax.RESULTS.successful
    if is_concrete(ok) and not bool(ok):
        stats = {k: int(v) for k, v in solution.stats.items() if is_concrete(v) and np.ndim(v) == 0}
        raise RuntimeError(
            f"jpm_hybrid.hybrid_odeint: diffrax stopped before a = {float(snaps[-1])!r} "
            f"({_result_message(diffrax, solution.result)}; stats {stats}); raise max_steps, "
            "loosen rtol/atol, or check the parameters for NaN"
        )
    # A failed solve (or a non-finite parameter) gives NaN snapshots, and NaN derivatives with
    # respect to every parameter: `where` alone would hand a zero cotangent to the solver, whose
    # reverse pass leaves some entries (e.g. the spline values' biases) exactly 0.
    inputs = [leaf for leaf in jax.tree.leaves((cosmo, filter_params)) if _is_float(leaf)]
    valid = ok
    for leaf in inputs:
        valid = valid & jnp.all(jnp.isfinite(leaf))
    xs, ps = (jpm_core.poison(y, valid, inputs) for y in solution.ys)
    snapshots = jpm_core.ParticleState(positions=xs, momenta=ps, a=jnp.asarray(snaps, dtype))
    if isinstance(model, PGDCorrection):
        snapshots = model.correct(snapshots, domain)
    return jpm_core.NBodyResult(snapshots=snapshots, observer_carry=None)


def _is_float(leaf: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


def _result_message(diffrax, result) -> str:
    for name in ("max_steps_reached", "singular", "breakdown", "dt_min_reached"):
        item = getattr(diffrax.RESULTS, name, None)
        if item is not None and bool(jax.device_get(result == item)):
            return name.replace("_", " ")
    return "the solver failed"
