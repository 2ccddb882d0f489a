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

The force and the observer are Python functions that may close over traced values (the
cosmology, parameters of a learned `potential_filter`, of a lightcone): `jax.closure_convert`
hoists them into explicit arguments of the `jax.custom_vjp` function, whose backward pass returns
their cotangents.

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
`gradient="checkpoint"`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.extend.core import ClosedJaxpr, Literal

from jpm_core._src.state import ParticleState

__all__ = ["integrate_adjoint", "integrate_scan"]


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


def _vdot(a: Array, b: Array) -> Array:
    return jnp.sum(a * b)


def integrate_scan(
    force: Callable[[Array, Array], Array],
    observer: Callable | None,
    x0: Array,
    p0: Array,
    factors: dict[str, Array],
    slots: np.ndarray,
    n_snap: int,
    observer_init: Any,
    *,
    a_grid: np.ndarray,
    checkpoint: bool,
    progress: Callable[[Array], None] | None,
) -> tuple[Array, Array, Any]:
    """The forward integration differentiated by JAX (per-step `jax.checkpoint` or plainly).

    **Returns:** `(buf_x, buf_p, observer_carry)`, the buffers `(n_snap + 1, *x0.shape)` holding
    the snapshot written at the end of the step of slot `slots[i]` (row `n_snap`: discarded).
    """
    dtype = x0.dtype

    def step(x, p, f, a1, kick_first, drift, kick_second):
        p = p + kick_first * f
        x = x + drift * p
        f = force(x, a1)
        p = p + kick_second * f
        return x, p, f

    if checkpoint:
        step = jax.checkpoint(step)

    def body(carry, xs):
        x, p, f, buf_x, buf_p, obs = carry
        x, p, f = step(x, p, f, xs["a1"], xs["k1"], xs["drift"], xs["k2"])
        if observer is not None:
            obs = observer(ParticleState(x, p, xs["a1"]), xs["a0"], xs["a1"], obs)
        buf_x = jax.lax.dynamic_update_index_in_dim(buf_x, x, xs["slot"], 0)
        buf_p = jax.lax.dynamic_update_index_in_dim(buf_p, p, xs["slot"], 0)
        if progress is not None:
            progress(xs["index"])
        return (x, p, f, buf_x, buf_p, obs), None

    n_steps = a_grid.size - 1
    xs = {
        "a0": jnp.asarray(a_grid[:-1], dtype),
        "a1": jnp.asarray(a_grid[1:], dtype),
        "k1": factors["kick_first"],
        "drift": factors["drift"],
        "k2": factors["kick_second"],
        "slot": jnp.asarray(slots),
        "index": jnp.arange(n_steps),
    }
    f0 = force(x0, jnp.asarray(a_grid[0], dtype))
    buf = jnp.zeros((n_snap + 1, *x0.shape), dtype)
    carry = (x0, p0, f0, buf, buf, observer_init)
    (_, _, _, buf_x, buf_p, obs), _ = jax.lax.scan(body, carry, xs)
    return buf_x, buf_p, obs


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
    # argument layout: (x, p, a_start, a_end, *carry_floats, *others)
    flat_positions = list(range(4, 4 + n_float))
    if n_float and _depends_on(jaxpr, flat_positions):
        raise ValueError(
            "the observer's derivative depends on the values of the floating-point leaves of its "
            "carry, which the reverse-time adjoint cannot reconstruct (it is exact for updates "
            "affine in the carry, e.g. `carry + g(state)` or `carry.at[i].add(g(state))`); use "
            "nbody(..., gradient='checkpoint') for this observer"
        )


def integrate_adjoint(
    force: Callable[[Array, Array], Array],
    observer: Callable | None,
    x0: Array,
    p0: Array,
    factors: dict[str, Array],
    slots: np.ndarray,
    n_snap: int,
    observer_init: Any,
    *,
    a_grid: np.ndarray,
    progress: Callable[[Array], None] | None,
    progress_backward: Callable[[Array], None] | None,
) -> tuple[Array, Array, Any]:
    """The forward integration with the reverse-time adjoint as its VJP (see the module).

    Same arguments and returns as `integrate_scan` (without `checkpoint`).
    """
    dtype = x0.dtype
    n_steps = a_grid.size - 1
    a_all = np.asarray(a_grid, dtype)
    observer_init = jax.tree.map(jnp.asarray, observer_init)

    force_c, force_consts = jax.closure_convert(force, x0, jnp.asarray(a_all[0]))
    if observer is not None:

        def observer_flat(x, p, a0, a1, carry):
            return observer(ParticleState(x, p, a1), a0, a1, carry)

        scalar = jnp.asarray(a_all[0])
        observer_c, observer_consts = jax.closure_convert(
            observer_flat, x0, p0, scalar, scalar, observer_init
        )
    else:
        observer_c, observer_consts = None, []

    def forward(x0, p0, k1, drift, k2, f_consts, obs_init, o_consts, record):
        def body(carry, xs):
            x, p, f, buf_x, buf_p, obs = carry
            p = p + xs["k1"] * f
            x = x + xs["drift"] * p
            f = force_c(x, xs["a1"], *f_consts)
            p = p + xs["k2"] * f
            history = _split(obs)[1] if record else None
            if observer_c is not None:
                obs = observer_c(x, p, xs["a0"], xs["a1"], obs, *o_consts)
            buf_x = jax.lax.dynamic_update_index_in_dim(buf_x, x, xs["slot"], 0)
            buf_p = jax.lax.dynamic_update_index_in_dim(buf_p, p, xs["slot"], 0)
            if progress is not None:
                progress(xs["index"])
            return (x, p, f, buf_x, buf_p, obs), history

        xs = {
            "a0": jnp.asarray(a_all[:-1]),
            "a1": jnp.asarray(a_all[1:]),
            "k1": k1,
            "drift": drift,
            "k2": k2,
            "slot": jnp.asarray(slots),
            "index": jnp.arange(n_steps),
        }
        f0 = force_c(x0, jnp.asarray(a_all[0]), *f_consts)
        buf = jnp.zeros((n_snap + 1, *x0.shape), dtype)
        carry = (x0, p0, f0, buf, buf, obs_init)
        (x, p, _, buf_x, buf_p, obs), history = jax.lax.scan(body, carry, xs)
        return (buf_x, buf_p, obs), (x, p, history)

    @jax.custom_vjp
    def run(x0, p0, k1, drift, k2, f_consts, obs_init, o_consts):
        out, _ = forward(x0, p0, k1, drift, k2, f_consts, obs_init, o_consts, False)
        return out

    def run_fwd(x0, p0, k1, drift, k2, f_consts, obs_init, o_consts):
        out, (x, p, history) = forward(x0, p0, k1, drift, k2, f_consts, obs_init, o_consts, True)
        residuals = (x, p, k1, drift, k2, f_consts, out[2], history, o_consts)
        return out, residuals

    def run_bwd(residuals, cotangents):
        x_n, p_n, k1, drift, k2, f_consts, obs_final, history, o_consts = residuals
        ct_x, ct_p, ct_obs = cotangents
        obs_floats, _, obs_merge = _split(obs_final)
        ct_obs_floats = _split(ct_obs)[0]
        zero = jnp.zeros((1,), dtype)

        def observer_vjp(x, p, a0, a1, floats, others, obs_bar):
            """Cotangents of (x, p, carry floats, consts) of the observer at (x, p, carry)."""

            def flat(x, p, floats, consts):
                carry = obs_merge(floats, others)
                return _split(observer_c(x, p, a0, a1, carry, *consts))[0]

            _, vjp = jax.vjp(flat, x, p, list(floats), list(o_consts))
            return vjp(list(obs_bar))

        if observer_c is not None:
            # the linearisation at the final carry's floating leaves must be exact (see module)
            def probe(x, p, a0, a1, *args):
                floats, others = args[: len(obs_floats)], args[len(obs_floats) :]
                return observer_vjp(x, p, a0, a1, floats, list(others), ct_obs_floats)

            a0, a1 = jnp.asarray(a_all[0]), jnp.asarray(a_all[1])
            first_others = [h[0] for h in history]
            _check_observer_linearisation(
                probe, (x_n, p_n, a0, a1, *obs_floats, *first_others), len(obs_floats)
            )

        xs = {
            # step i's factors (none after the last boundary)
            "k1": jnp.concatenate([k1, zero]),
            "drift": jnp.concatenate([drift, zero]),
            "k2": jnp.concatenate([k2, zero]),
            "a": jnp.asarray(a_all),
            # the step before boundary i (none before boundary 0)
            "k2_prev": jnp.concatenate([zero, k2]),
            "a_prev": jnp.asarray(np.concatenate([a_all[:1], a_all[:-1]])),
            "slot_prev": jnp.asarray(np.concatenate([[n_snap], slots]).astype(np.int32)),
            "others_prev": [jnp.concatenate([h[:1], h]) for h in history],
            "index": jnp.arange(n_steps + 1),
        }

        def body(carry, xs):
            (x, p, f), (x_bar, p_bar), obs_bar, f_bar_consts, o_bar_consts = carry
            # reverse step i: (x_{i+1}, p_{i+1}, f_{i+1}) -> (x_i, p_half)
            p_half = p - xs["k2"] * f
            x = x - xs["drift"] * p_half
            k2_bar = _vdot(p_bar, f)
            drift_bar = _vdot(x_bar, p_half)
            p_half_bar = p_bar + xs["drift"] * x_bar
            # the force at boundary i and its VJP
            f, force_vjp = jax.vjp(lambda x, *c: force_c(x, xs["a"], *c), x, *f_consts)
            p = p_half - xs["k1"] * f
            k1_bar = _vdot(p_half_bar, f)
            # cotangents entering at boundary i: the snapshot and the observer of step i - 1
            x_bar = x_bar + jax.lax.dynamic_index_in_dim(ct_x, xs["slot_prev"], 0, False)
            p_bar = p_half_bar + jax.lax.dynamic_index_in_dim(ct_p, xs["slot_prev"], 0, False)
            if observer_c is not None:

                def observe(operands):
                    x_bar, p_bar, obs_bar, o_bar_consts = operands
                    dx, dp, obs_bar, do = observer_vjp(
                        x, p, xs["a_prev"], xs["a"], obs_floats, xs["others_prev"], obs_bar
                    )
                    o_bar_consts = [a + b for a, b in zip(o_bar_consts, do, strict=True)]
                    return x_bar + dx, p_bar + dp, obs_bar, o_bar_consts

                x_bar, p_bar, obs_bar, o_bar_consts = jax.lax.cond(
                    xs["index"] > 0,
                    observe,
                    lambda operands: operands,
                    (x_bar, p_bar, obs_bar, o_bar_consts),
                )
            f_bar = xs["k1"] * p_half_bar + xs["k2_prev"] * p_bar
            dx, *dc = force_vjp(f_bar)
            x_bar = x_bar + dx
            f_bar_consts = [a + b for a, b in zip(f_bar_consts, dc, strict=True)]
            if progress_backward is not None:
                progress_backward(xs["index"])
            carry = (x, p, f), (x_bar, p_bar), obs_bar, f_bar_consts, o_bar_consts
            return carry, (k1_bar, drift_bar, k2_bar)

        init = (
            (x_n, p_n, jnp.zeros_like(x_n)),
            (jnp.zeros_like(x_n), jnp.zeros_like(p_n)),
            ct_obs_floats,
            [jnp.zeros_like(c) for c in f_consts],
            [jnp.zeros_like(c) for c in o_consts],
        )
        carry, (k1_bar, drift_bar, k2_bar) = jax.lax.scan(body, init, xs, reverse=True)
        _, (x0_bar, p0_bar), obs_bar, f_bar_consts, o_bar_consts = carry
        obs_init_bar = obs_merge(obs_bar, [None] * len(_split(obs_final)[1]))
        return (
            x0_bar,
            p0_bar,
            k1_bar[:n_steps],
            drift_bar[:n_steps],
            k2_bar[:n_steps],
            f_bar_consts,
            obs_init_bar,
            o_bar_consts,
        )

    run.defvjp(run_fwd, run_bwd)
    return run(
        x0,
        p0,
        factors["kick_first"],
        factors["drift"],
        factors["kick_second"],
        list(force_consts),
        observer_init,
        list(observer_consts),
    )
