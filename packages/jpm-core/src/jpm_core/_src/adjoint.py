"""Reverse-time adjoint of the FastPM kick-drift-kick integration (memory flat in the steps).

The kick-drift-kick step is time-reversible: from the state `(x1, p1)` at the end of a step and
the force `f1 = F(x1, a1)`, the start of the step is

    p_h = p1 - k2 f1,      x0 = x1 - d p_h,      f0 = F(x0, a0),      p0 = p_h - k1 f0,

so the backward pass needs only the final state: it runs the steps backwards, reconstructing the
state at every step boundary, and propagates the cotangents of the state through one step at a
time (as pmwd does, Li et al. 2022). One `lax.scan` runs forwards, one backwards: the compiled
program and its memory do not depend on the number of steps.

The scan of the backward pass runs over step boundaries `i = n, ..., 0`. At boundary `i` it
reverses step `i` (a no-op for `i = n`), evaluates the force at the reconstructed `x_i` together
with its VJP, adds the cotangents that enter at the boundary (a snapshot written there, the
observer called at the end of step `i - 1`), and applies the force VJP to the force's total
cotangent `k1_i p_h_bar + k2_{i-1} p_i_bar` (the force at a boundary serves the second kick of
the step before it and the first kick of the step after it). One force evaluation and one force
VJP per boundary: the same work as per-step checkpointing, without storing the state per step.

The step is written once, as named step functions with their adjoints (pmwd's model): `kick` /
`kick_adj`, `drift` / `drift_adj`, composed into `kdk_step` (the forward step of every gradient
method) and `reverse_boundary` (one boundary of the backward pass); the factors of every step are
a typed `StepFactors` record.

The force is `force(x, a, params)`, `params` the explicit PyTree of the potential filter's
parameters (an argument of the `jax.custom_vjp` function, whose backward pass returns its
cotangent). The force and the observer may also close over traced values (the cosmology, the
parameters of a lightcone): `jax.closure_convert` hoists them into explicit arguments too.

**Observer.** Its carry cannot be run backwards. The forward pass evaluates the observer exactly;
the backward pass takes its VJP at the reconstructed state with the carry made of

- the carry's integer and boolean leaves (counters, indices: no cotangent) as they were at that
  step, recorded during the forward pass (one copy per step: keep them small), and
- the floating leaves of the *final* carry.

This is exact when the observer's VJP does not depend on the values of the floating leaves of its
input carry: updates affine in the carry with a Jacobian independent of its values, such as
`carry + g(state)`, `w * carry + g(state)`, or `carry.at[i].add(g(state))` /
`carry.at[i].set(g(state))` with `i` computed from `a_start`/`a_end` or from integer leaves of
the carry (painting lightcone planes). `_check_observer_linearisation` verifies this on the
observer's VJP program when the gradient is traced and raises otherwise (e.g.
`jnp.maximum(carry, g(state))` or `carry * g(state)`); such observers need
`gradient=Checkpointed()`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.extend.core import ClosedJaxpr, Literal

from jpm_core._src.progress import StepProgress

__all__ = [
    "Schedule",
    "StepFactors",
    "Trajectory",
    "drift",
    "drift_adj",
    "integrate_adjoint",
    "integrate_scan",
    "kdk_step",
    "kick",
    "kick_adj",
]

Force = Callable[[Array, Array, Any], Array]
"""`(positions, a, params) -> force`, `params` the potential filter's parameters."""

FlatObserver = Callable[[Array, Array, Array, Array, Array, Any], Any]
"""`(positions_start, positions, momenta, a_start, a_end, carry) -> carry`, at the end of each
step (`positions_start`: before the step's drift)."""

Monitor = Callable[[Array, Array], Array]
"""`(positions, boundary) -> int32 statistics` at every step boundary (into `Trajectory.monitor`).

`boundary` is the scalar index of the boundary: 0 for the initial positions, `i` at the end of
step `i` (1-based)."""


class StepFactors(NamedTuple):
    """The kick and drift factors of every step, arrays of shape `(n_steps,)`.

    Step `i` from `a0` to `a1`: `p <- p + kick_first[i] F(x, a0)`, `x <- x + drift[i] p`,
    `p <- p + kick_second[i] F(x, a1)` (their values: `_src/nbody.py`).
    """

    kick_first: Array
    drift: Array
    kick_second: Array


class Schedule(NamedTuple):
    """The static time grid and where the snapshots are written.

    - `a_grid`: the step boundaries `(n_steps + 1,)`, float64 NumPy.
    - `slots`: `(n_steps,)` int32, the snapshot slot written at the end of each step (`n_snap`:
      none).
    - `n_snap`: the number of snapshots.
    """

    a_grid: np.ndarray
    slots: np.ndarray
    n_snap: int

    @property
    def n_steps(self) -> int:
        return self.a_grid.size - 1


class Trajectory(NamedTuple):
    """What the integrators return.

    - `buf_x`, `buf_p`: `(n_snap + 1, *x0.shape)`, the snapshots by slot (row `n_snap`: discarded).
    - `observer_carry`: the observer's final carry.
    - `monitor`: the monitor's statistics at every boundary `(n_steps + 1, ...)` (row 0: the
      initial positions), or `None` without a monitor.
    """

    buf_x: Array
    buf_p: Array
    observer_carry: Any
    monitor: Any


# ------------------------------------------------------------------------ the step and its adjoint
def _vdot(a: Array, b: Array) -> Array:
    return jnp.sum(a * b)


def kick(p: Array, f: Array, k: Array) -> Array:
    """The kick `p <- p + k f`."""
    return p + k * f


def kick_adj(p: Array, f: Array, p_bar: Array, k: Array) -> tuple[Array, Array, Array]:
    """Reverse the kick `p = p_before + k f`.

    **Returns:** `(p_before, f_bar, k_bar)`: the momenta before the kick, the cotangents of the
    force and of the factor (that of `p_before` is `p_bar` itself).
    """
    return p - k * f, k * p_bar, _vdot(p_bar, f)


def drift(x: Array, p: Array, d: Array) -> Array:
    """The drift `x <- x + d p`."""
    return x + d * p


def drift_adj(x: Array, p: Array, x_bar: Array, d: Array) -> tuple[Array, Array, Array]:
    """Reverse the drift `x = x_before + d p`.

    **Returns:** `(x_before, p_bar, d_bar)`: the positions before the drift, the cotangents of
    the momenta and of the factor (that of `x_before` is `x_bar` itself).
    """
    return x - d * p, d * x_bar, _vdot(x_bar, p)


def kdk_step(
    force: Force, x: Array, p: Array, f: Array, a1: Array, k1: Array, d: Array, k2: Array, params
) -> tuple[Array, Array, Array]:
    """One kick-drift-kick step; `f` is the force at the start, the new force is returned."""
    p = kick(p, f, k1)
    x = drift(x, p, d)
    f = force(x, a1, params)
    p = kick(p, f, k2)
    return x, p, f


# ------------------------------------------------------------------------------ the forward scan
def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _split(tree: Any) -> tuple[list[Array], list[Array], Callable[[list, list], Any]]:
    """Floating and other leaves of a PyTree, and how to merge them back."""
    leaves, treedef = jax.tree.flatten(tree)
    is_float = [_is_float(leaf) for leaf in leaves]
    floats = [leaf for leaf, f in zip(leaves, is_float, strict=True) if f]
    others = [leaf for leaf, f in zip(leaves, is_float, strict=True) if not f]

    def merge(floats: Sequence, others: Sequence) -> Any:
        fi, oi = iter(floats), iter(others)
        return treedef.unflatten([next(fi) if f else next(oi) for f in is_float])

    return floats, others, merge


class _StepInputs(NamedTuple):
    """The per-step inputs of the forward scan."""

    a0: Array
    a1: Array
    factors: StepFactors
    slot: Array
    index: Array


def _forward(
    step: Callable,
    force: Force,
    observer: FlatObserver | None,
    x0: Array,
    p0: Array,
    params: Any,
    factors: StepFactors,
    schedule: Schedule,
    observer_init: Any,
    *,
    monitor: Monitor | None,
    progress: StepProgress | None,
    record_history: bool,
) -> tuple[Trajectory, Array, Array, Any]:
    """The forward integration: `(trajectory, x_final, p_final, history)`.

    `history` holds the observer carry's non-floating leaves before every step (for the adjoint)
    when `record_history`, else `None`.
    """
    dtype = x0.dtype
    a_grid = np.asarray(schedule.a_grid, dtype)

    def body(carry, xs: _StepInputs):
        x, p, f, buf_x, buf_p, obs = carry
        k = xs.factors
        x_start = x
        x, p, f = step(x, p, f, xs.a1, k.kick_first, k.drift, k.kick_second, params)
        history = _split(obs)[1] if record_history else None
        if observer is not None:
            obs = observer(x_start, x, p, xs.a0, xs.a1, obs)
        buf_x = jax.lax.dynamic_update_index_in_dim(buf_x, x, xs.slot, 0)
        buf_p = jax.lax.dynamic_update_index_in_dim(buf_p, p, xs.slot, 0)
        stats = None if monitor is None else monitor(x, xs.index + 1)
        if progress is not None:
            progress.forward(xs.index)
        return (x, p, f, buf_x, buf_p, obs), (history, stats)

    xs = _StepInputs(
        a0=jnp.asarray(a_grid[:-1]),
        a1=jnp.asarray(a_grid[1:]),
        factors=factors,
        slot=jnp.asarray(schedule.slots),
        index=jnp.arange(schedule.n_steps),
    )
    f0 = force(x0, jnp.asarray(a_grid[0]), params)
    buf = jnp.zeros((schedule.n_snap + 1, *x0.shape), dtype)
    carry = (x0, p0, f0, buf, buf, observer_init)
    (x, p, _, buf_x, buf_p, obs), (history, stats) = jax.lax.scan(body, carry, xs)
    if monitor is not None:
        stats = jax.tree.map(
            lambda s0, s: jnp.concatenate([s0[None], s]),
            monitor(x0, jnp.zeros((), jnp.int32)),
            stats,
        )
    return Trajectory(buf_x, buf_p, obs, stats), x, p, history


def integrate_scan(
    force: Force,
    observer: FlatObserver | None,
    x0: Array,
    p0: Array,
    params: Any,
    factors: StepFactors,
    schedule: Schedule,
    observer_init: Any,
    *,
    checkpoint: bool,
    monitor: Monitor | None = None,
    progress: StepProgress | None = None,
) -> Trajectory:
    """The forward integration differentiated by JAX (per-step `jax.checkpoint` or plainly).

    Forward mode (`jvp`, `jacfwd`) and reverse mode both work.
    """
    step = functools.partial(kdk_step, force)
    if checkpoint:
        step = jax.checkpoint(step)
    trajectory, _, _, _ = _forward(
        step,
        force,
        observer,
        x0,
        p0,
        params,
        factors,
        schedule,
        observer_init,
        monitor=monitor,
        progress=progress,
        record_history=False,
    )
    return trajectory


# ------------------------------------------------------------------- the observer under the adjoint
def _depends_on(jaxpr: ClosedJaxpr, inputs: Sequence[int]) -> bool:
    """Whether any output of `jaxpr` may depend on the inputs of the given positions.

    A forward reachability pass over the equations; an equation with nested programs (`pjit`,
    `cond`, `scan`, custom derivatives) is treated as a whole (every output depends on every
    input), so the answer errs on the side of "depends".
    """
    inner = jaxpr.jaxpr
    tainted = {inner.invars[i] for i in inputs}
    for eqn in inner.eqns:
        if any(not isinstance(v, Literal) and v in tainted for v in eqn.invars):
            tainted.update(eqn.outvars)
    return any(not isinstance(v, Literal) and v in tainted for v in inner.outvars)


def _check_observer_linearisation(vjp_of_observer: Callable, args: tuple, n_float: int) -> None:
    """Raise if the observer's VJP reads the floating leaves of its input carry (see module)."""
    jaxpr = jax.make_jaxpr(vjp_of_observer)(*args)
    # argument layout: (x, p, f, drift, kick_second, a_start, a_end, *carry_floats, *others)
    flat_positions = list(range(7, 7 + n_float))
    if n_float and _depends_on(jaxpr, flat_positions):
        raise ValueError(
            "the observer's derivative depends on the values of the floating-point leaves of its "
            "carry, which the reverse-time adjoint cannot reconstruct (it is exact for updates "
            "affine in the carry, e.g. `carry + g(state)` or `carry.at[i].add(g(state))`); use "
            "nbody(..., gradient=jpm_core.Checkpointed()) for this observer"
        )


def _observer_vjp(
    observer_c, o_consts, merge, x, p, f, drift, kick_second, a0, a1, floats, others, obs_bar
):
    """Cotangents of `(x, p, f, drift, kick_second, carry floats, consts)` of the observer of
    the step that ends at `(x, p)` with force `f` and factors `drift`, `kick_second`.

    The positions at the start of the step, which the observer also sees, are reconstructed as
    in the reverse step: `x_start = x - drift (p - kick_second f)`.
    """

    def flat(x, p, f, drift, kick_second, floats, consts):
        x_start = x - drift * (p - kick_second * f)
        carry = merge(floats, others)
        return _split(observer_c(x_start, x, p, a0, a1, carry, *consts))[0]

    _, vjp = jax.vjp(flat, x, p, f, drift, kick_second, list(floats), list(o_consts))
    return vjp(list(obs_bar))


# ---------------------------------------------------------------------------- the reverse scan
@dataclasses.dataclass(frozen=True)
class _Adjoint:
    """The static parts of one adjoint integration (closure-converted force and observer)."""

    force: Callable  # (x, a, params, *consts) -> f
    observer: Callable | None  # (x_start, x, p, a0, a1, carry, *consts) -> carry
    monitor: Monitor | None
    progress: StepProgress | None
    schedule: Schedule


class _Boundary(NamedTuple):
    """The inputs of the reverse scan at boundary `i` (factors 0 where there is no step)."""

    factors: StepFactors  # of step i (none after the last boundary)
    a: Array  # a_i
    kick_second_prev: Array  # of step i - 1 (none before boundary 0)
    drift_prev: Array  # of step i - 1 (none before boundary 0)
    a_prev: Array
    slot_prev: Array
    others_prev: list  # the observer carry's non-floating leaves before step i - 1
    index: Array


class _Cotangents(NamedTuple):
    """The cotangents accumulated by the reverse scan."""

    x: Array
    p: Array
    observer: list  # of the carry's floating leaves
    params: Any
    force_consts: list
    observer_consts: list


def reverse_boundary(
    prog: _Adjoint,
    params: Any,
    f_consts: list,
    o_consts: list,
    obs_floats: list,
    obs_merge: Callable,
    ct_x: Array,
    ct_p: Array,
    carry: tuple[tuple[Array, Array, Array], _Cotangents],
    xs: _Boundary,
) -> tuple[tuple[tuple[Array, Array, Array], _Cotangents], tuple[StepFactors, tuple[Array, Array]]]:
    """One boundary `i` of the backward pass (see the module).

    From the state `(x_{i+1}, p_{i+1}, f_{i+1})` and the cotangents of `(x_{i+1}, p_{i+1})`:
    reverse step `i` (`kick_adj`, `drift_adj`, the force and its VJP at `x_i`, `kick_adj`), add the
    cotangents that enter at boundary `i`, and apply the force VJP to its total cotangent.

    **Returns:** the carry at boundary `i`, the cotangents of step `i`'s factors, and those of
    step `i - 1`'s `(drift, kick_second)` from its observer (which sees the step's start positions).
    """
    (x, p, f), bar = carry
    k = xs.factors
    # reverse step i's second kick (its force cotangent was applied at boundary i + 1) and drift
    p_half, _, kick_second_bar = kick_adj(p, f, bar.p, k.kick_second)
    x, p_half_bar_drift, drift_bar = drift_adj(x, p_half, bar.x, k.drift)
    p_half_bar = bar.p + p_half_bar_drift
    # the force at boundary i, its VJP, and step i's first kick
    f, force_vjp = jax.vjp(
        lambda x, params, *c: prog.force(x, xs.a, params, *c), x, params, *f_consts
    )
    p, f_bar, kick_first_bar = kick_adj(p_half, f, p_half_bar, k.kick_first)
    # cotangents entering at boundary i: the snapshot and the observer of step i - 1
    x_bar = bar.x + jax.lax.dynamic_index_in_dim(ct_x, xs.slot_prev, 0, False)
    p_bar = p_half_bar + jax.lax.dynamic_index_in_dim(ct_p, xs.slot_prev, 0, False)
    obs_bar, o_bar = bar.observer, bar.observer_consts
    zero = jnp.zeros_like(xs.drift_prev)
    prev_bar = (zero, zero)  # cotangents of step i - 1's (drift, kick_second) from its observer
    if prog.observer is not None:

        def observe(operands):
            x_bar, p_bar, f_bar, _prev_bar, obs_bar, o_bar = operands
            dx, dp, df, dd, dk, obs_bar, do = _observer_vjp(
                prog.observer,
                o_consts,
                obs_merge,
                x,
                p,
                f,
                xs.drift_prev,
                xs.kick_second_prev,
                xs.a_prev,
                xs.a,
                obs_floats,
                xs.others_prev,
                obs_bar,
            )
            o_bar = [a + b for a, b in zip(o_bar, do, strict=True)]
            return x_bar + dx, p_bar + dp, f_bar + df, (dd, dk), obs_bar, o_bar

        x_bar, p_bar, f_bar, prev_bar, obs_bar, o_bar = jax.lax.cond(
            xs.index > 0,
            observe,
            lambda operands: operands,
            (x_bar, p_bar, f_bar, prev_bar, obs_bar, o_bar),
        )
    # the force at boundary i also served step i - 1's second kick
    f_bar = f_bar + xs.kick_second_prev * p_bar
    dx, dparams, *dc = force_vjp(f_bar)
    new_bar = _Cotangents(
        x=x_bar + dx,
        p=p_bar,
        observer=obs_bar,
        params=jax.tree.map(jnp.add, bar.params, dparams),
        force_consts=[a + b for a, b in zip(bar.force_consts, dc, strict=True)],
        observer_consts=o_bar,
    )
    if prog.progress is not None:
        prog.progress.backward(xs.index)
    return ((x, p, f), new_bar), (StepFactors(kick_first_bar, drift_bar, kick_second_bar), prev_bar)


def _backward(prog: _Adjoint, residuals, cotangents):
    """The custom VJP's backward pass: the reverse scan over boundaries `n, ..., 0`."""
    x_n, p_n, params, factors, f_consts, obs_final, history, o_consts = residuals
    ct_traj = cotangents
    ct_x, ct_p, ct_obs = ct_traj.buf_x, ct_traj.buf_p, ct_traj.observer_carry
    schedule = prog.schedule
    n_steps, dtype = schedule.n_steps, x_n.dtype
    a_all = np.asarray(schedule.a_grid, dtype)
    obs_floats, _, obs_merge = _split(obs_final)
    ct_obs_floats = _split(ct_obs)[0]
    zero = jnp.zeros((1,), dtype)

    if prog.observer is not None:
        # the linearisation at the final carry's floating leaves must be exact (see module)
        def probe(x, p, f, drift, kick_second, a0, a1, *args):
            floats, others = args[: len(obs_floats)], args[len(obs_floats) :]
            return _observer_vjp(
                prog.observer,
                o_consts,
                obs_merge,
                x,
                p,
                f,
                drift,
                kick_second,
                a0,
                a1,
                floats,
                list(others),
                ct_obs_floats,
            )

        a0, a1 = jnp.asarray(a_all[0]), jnp.asarray(a_all[1])
        first_others = [h[0] for h in history]
        _check_observer_linearisation(
            probe,
            (
                x_n,
                p_n,
                jnp.zeros_like(x_n),
                factors.drift[0],
                factors.kick_second[0],
                a0,
                a1,
                *obs_floats,
                *first_others,
            ),
            len(obs_floats),
        )

    xs = _Boundary(
        factors=StepFactors(*(jnp.concatenate([k, zero]) for k in factors)),
        a=jnp.asarray(a_all),
        kick_second_prev=jnp.concatenate([zero, factors.kick_second]),
        drift_prev=jnp.concatenate([zero, factors.drift]),
        a_prev=jnp.asarray(np.concatenate([a_all[:1], a_all[:-1]])),
        slot_prev=jnp.asarray(np.concatenate([[schedule.n_snap], schedule.slots]).astype(np.int32)),
        others_prev=[jnp.concatenate([h[:1], h]) for h in history],
        index=jnp.arange(n_steps + 1),
    )
    init = (
        (x_n, p_n, jnp.zeros_like(x_n)),
        _Cotangents(
            x=jnp.zeros_like(x_n),
            p=jnp.zeros_like(p_n),
            observer=ct_obs_floats,
            params=jax.tree.map(jnp.zeros_like, params),
            force_consts=[jnp.zeros_like(c) for c in f_consts],
            observer_consts=[jnp.zeros_like(c) for c in o_consts],
        ),
    )
    body = functools.partial(
        reverse_boundary, prog, params, f_consts, o_consts, obs_floats, obs_merge, ct_x, ct_p
    )
    (_, bar), (factor_bars, (drift_prev_bar, kick_second_prev_bar)) = jax.lax.scan(
        body, init, xs, reverse=True
    )
    obs_init_bar = obs_merge(bar.observer, [None] * len(_split(obs_final)[1]))
    # boundary i + 1 holds the observer's cotangents of step i's drift and second kick
    factors_bar = StepFactors(
        kick_first=factor_bars.kick_first[:n_steps],
        drift=factor_bars.drift[:n_steps] + drift_prev_bar[1:],
        kick_second=factor_bars.kick_second[:n_steps] + kick_second_prev_bar[1:],
    )
    return (
        bar.x,
        bar.p,
        bar.params,
        factors_bar,
        bar.force_consts,
        obs_init_bar,
        bar.observer_consts,
    )


def integrate_adjoint(
    force: Force,
    observer: FlatObserver | None,
    x0: Array,
    p0: Array,
    params: Any,
    factors: StepFactors,
    schedule: Schedule,
    observer_init: Any,
    *,
    monitor: Monitor | None = None,
    progress: StepProgress | None = None,
) -> Trajectory:
    """The forward integration with the reverse-time adjoint as its VJP (see the module).

    Same arguments and returns as `integrate_scan` (without `checkpoint`). Reverse mode only:
    forward mode raises JAX's `TypeError` (`nbody` turns it into a clear message).
    """
    dtype = x0.dtype
    a0 = jnp.asarray(np.asarray(schedule.a_grid[0], dtype))
    observer_init = jax.tree.map(jnp.asarray, observer_init)
    force_c, force_consts = jax.closure_convert(force, x0, a0, params)
    if observer is not None:
        observer_c, observer_consts = jax.closure_convert(
            observer, x0, x0, p0, a0, a0, observer_init
        )
    else:
        observer_c, observer_consts = None, []
    prog = _Adjoint(force_c, observer_c, monitor, progress, schedule)

    def run_forward(x0, p0, params, factors, f_consts, obs_init, o_consts, record):
        return _forward(
            functools.partial(kdk_step, lambda x, a, q: force_c(x, a, q, *f_consts)),
            lambda x, a, q: force_c(x, a, q, *f_consts),
            None if observer_c is None else (lambda *args: observer_c(*args, *o_consts)),
            x0,
            p0,
            params,
            factors,
            schedule,
            obs_init,
            monitor=monitor,
            progress=progress,
            record_history=record,
        )

    @jax.custom_vjp
    def run(x0, p0, params, factors, f_consts, obs_init, o_consts):
        trajectory, _, _, _ = run_forward(
            x0, p0, params, factors, f_consts, obs_init, o_consts, False
        )
        return trajectory

    def run_fwd(x0, p0, params, factors, f_consts, obs_init, o_consts):
        trajectory, x, p, history = run_forward(
            x0, p0, params, factors, f_consts, obs_init, o_consts, True
        )
        residuals = (x, p, params, factors, f_consts, trajectory.observer_carry, history, o_consts)
        return trajectory, residuals

    run.defvjp(run_fwd, functools.partial(_backward, prog))
    return run(x0, p0, params, factors, list(force_consts), observer_init, list(observer_consts))
