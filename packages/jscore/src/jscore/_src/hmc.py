"""Annealed HMC kernel whose Metropolis correction needs only the prior's score.

The target at noise level `sigma` is `pi_sigma(x) ∝ p_sigma(x) L_sigma(x)`: a prior known only through
its score `s(x, sigma) = grad log p_sigma(x)`, and a likelihood whose log density is known exactly.
The Metropolis-Hastings ratio needs `log p_sigma(x1) - log p_sigma(x0)`, which is the line integral of
the score along any path from `x0` to `x1` (the score is a gradient field); here, along the straight
segment, by Simpson's rule (exact for Gaussian and quartic log densities). The likelihood term is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._checks import check_int

ScoreFn = Callable[[Array, Array], Array]
LogLikelihoodFn = Callable[[Array, Array], tuple[Array, Array]]


class Preconditioner(Protocol):
    """A mass matrix `M(sigma)` of the annealed HMC (see `jscore.FourierPreconditioner`)."""

    def apply_inverse_mass(self, p: Array, sigma: Array) -> Array: ...

    def apply_sqrt_mass(self, z: Array, sigma: Array) -> Array: ...


class AnnealedHMCState(NamedTuple):
    """State of one chain.

    - `position`: the current field.
    - `sigma`: the current noise level of the annealed target.
    """

    position: Array
    sigma: Array


class AnnealedHMCInfo(NamedTuple):
    """What one step did.

    - `is_accepted`: whether the proposal was accepted (then `sigma` was lowered).
    - `acceptance_probability`: `min(1, exp(log_accept_ratio))`.
    - `log_accept_ratio`: the Metropolis-Hastings log ratio (prior term by line integral).
    - `step_size`: the leapfrog step size used.
    """

    is_accepted: Array
    acceptance_probability: Array
    log_accept_ratio: Array
    step_size: Array


def _quadrature(num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 1]: trapezoid for 2 points, composite Simpson for an odd number."""
    if num_points == 2:
        return np.array([0.0, 1.0]), np.array([0.5, 0.5])
    if num_points < 3 or num_points % 2 == 0:
        raise ValueError(
            f"num_points must be 2 (trapezoid) or an odd number >= 3 (Simpson), got {num_points!r}"
        )
    nodes = np.linspace(0.0, 1.0, num_points)
    weights = np.ones(num_points)
    weights[1:-1:2] = 4.0
    weights[2:-1:2] = 2.0
    return nodes, weights / (3.0 * (num_points - 1))


def score_line_integral(
    score_fn: ScoreFn,
    x0: Array,
    x1: Array,
    sigma: Array | float,
    *,
    num_points: int = 3,
    score0: Array | None = None,
    score1: Array | None = None,
) -> Array:
    """`log p_sigma(x1) - log p_sigma(x0)` from the score alone, as the line integral
    `int_0^1 s(x0 + t (x1 - x0), sigma) . (x1 - x0) dt` along the straight segment.

    **Arguments:**

    - `score_fn`: `s(x, sigma)`, the score of the (sigma-convolved) density, for one field.
    - `x0`, `x1`: the end points (one field each).
    - `sigma`: the noise level.
    - `num_points`: quadrature nodes including both ends: 2 for the trapezoid rule (exact when the
      score is affine, i.e. for Gaussians), an odd number >= 3 for composite Simpson (3 is exact up
      to quartic log densities).
    - `score0`, `score1`: the scores at the end points if already known (saves two evaluations).

    **Returns:**

    The estimated log-density difference, a scalar.
    """
    num_points = check_int("num_points", num_points, minimum=2)
    nodes, weights = _quadrature(num_points)
    sigma = jnp.asarray(sigma, dtype=x0.dtype)
    d = x1 - x0
    s0 = score_fn(x0, sigma) if score0 is None else score0
    s1 = score_fn(x1, sigma) if score1 is None else score1
    total = weights[0] * jnp.vdot(s0, d) + weights[-1] * jnp.vdot(s1, d)
    if num_points > 2:
        inner = jnp.asarray(nodes[1:-1], dtype=x0.dtype)

        def projected(t):
            return jnp.vdot(score_fn(x0 + t * d, sigma), d)

        values = jax.vmap(projected)(inner)
        total = total + jnp.sum(jnp.asarray(weights[1:-1], dtype=x0.dtype) * values)
    return total


def annealed_hmc_init(position: Array, sigma: Array | float) -> AnnealedHMCState:
    """The state of a chain at `position` and noise level `sigma`."""
    position = jnp.asarray(position)
    return AnnealedHMCState(position, jnp.asarray(sigma, dtype=position.dtype))


def annealed_hmc_step(
    key: Array,
    state: AnnealedHMCState,
    score_fn: ScoreFn,
    log_likelihood_fn: LogLikelihoodFn,
    *,
    step_size: Array | float,
    num_integration_steps: int = 3,
    num_quadrature_points: int = 3,
    sigma_decay: Array | float = 0.98,
    sigma_min: Array | float = 0.0,
    preconditioner: Preconditioner | None = None,
) -> tuple[AnnealedHMCState, AnnealedHMCInfo]:
    """One HMC transition targeting `pi_sigma(x) ∝ p_sigma(x) L_sigma(x)` at the chain's `sigma`,
    then `sigma <- max(sigma_decay * sigma, sigma_min)` if the proposal was accepted.

    Identity mass matrix (or the chain's `preconditioner` at its `sigma`), leapfrog integration,
    full momentum refresh. Pure: vmap it over chains and scan it over steps.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `state`: the chain's `AnnealedHMCState`.
    - `score_fn`: the prior score `s(x, sigma)` for one field.
    - `log_likelihood_fn`: `(x, sigma) -> (log L_sigma(x), grad_x log L_sigma(x))`, exact (e.g.
      `jscore.annealed_log_likelihood`); constants in `x` may be dropped.
    - `step_size`: leapfrog step size (may depend on `sigma`; the caller computes it).
    - `num_integration_steps`: leapfrog steps per proposal (static).
    - `num_quadrature_points`: nodes of the line integral (see `score_line_integral`; static).
    - `sigma_decay`: factor applied to `sigma` after an accepted move (1 for plain HMC at fixed sigma).
    - `sigma_min`: floor of `sigma`.
    - `preconditioner`: `None` (identity mass) or a mass matrix with the methods
      `apply_inverse_mass(p, sigma)` and `apply_sqrt_mass(z, sigma)` (e.g.
      `jscore.FourierPreconditioner`), evaluated at the chain's `sigma` before the move.

    **Returns:**

    The new `AnnealedHMCState` and an `AnnealedHMCInfo`.
    """
    num_integration_steps = check_int("num_integration_steps", num_integration_steps, minimum=1)
    x0, sigma = state.position, state.sigma
    dtype = x0.dtype
    eps = jnp.asarray(step_size, dtype=dtype)
    key_momentum, key_accept = jax.random.split(key)

    def gradients(x):
        prior_score = score_fn(x, sigma)
        log_like, like_grad = log_likelihood_fn(x, sigma)
        return prior_score, log_like, prior_score + like_grad

    if preconditioner is None:

        def velocity(p):
            return p

        p0 = jax.random.normal(key_momentum, x0.shape, dtype)
    else:

        def velocity(p):
            return preconditioner.apply_inverse_mass(p, sigma)

        z = jax.random.normal(key_momentum, x0.shape, dtype)
        p0 = preconditioner.apply_sqrt_mass(z, sigma)

    s0, log_l0, g0 = gradients(x0)

    def leapfrog(i, carry):
        x, p, _, _, _ = carry
        x = x + eps * velocity(p)
        s, log_l, g = gradients(x)
        scale = jnp.where(i < num_integration_steps - 1, eps, 0.5 * eps)
        return x, p + scale * g, s, log_l, g

    carry = (x0, p0 + 0.5 * eps * g0, s0, log_l0, g0)
    x1, p1, s1, log_l1, _ = jax.lax.fori_loop(0, num_integration_steps, leapfrog, carry)

    delta_log_prior = score_line_integral(
        score_fn, x0, x1, sigma, num_points=num_quadrature_points, score0=s0, score1=s1
    )
    if preconditioner is None:
        kinetic = 0.5 * (jnp.vdot(p1, p1) - jnp.vdot(p0, p0))
    else:
        kinetic = 0.5 * (jnp.vdot(p1, velocity(p1)) - jnp.vdot(z, z))
    log_ratio = delta_log_prior + (log_l1 - log_l0) - kinetic
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    log_u = jnp.log(jax.random.uniform(key_accept, (), dtype))
    accepted = log_u < log_ratio
    position = jnp.where(accepted, x1, x0)
    new_sigma = jnp.where(
        accepted,
        jnp.maximum(sigma * jnp.asarray(sigma_decay, dtype), jnp.asarray(sigma_min, dtype)),
        sigma,
    )
    info = AnnealedHMCInfo(accepted, jnp.exp(jnp.minimum(log_ratio, 0.0)), log_ratio, eps)
    return AnnealedHMCState(position, new_sigma), info
