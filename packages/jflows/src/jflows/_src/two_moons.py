r"""The two-moons benchmark (Greenberg et al. 2019; the sbibm setup), with joint scores.

Model: `theta ~ U(-1, 1)^2`, latents `alpha ~ U(-pi/2, pi/2)`, `r ~ N(0.1, 0.01^2)`, and

    x = (r cos alpha + 0.25, r sin alpha) + c(theta),
    c(theta) = (-|theta_1 + theta_2| / sqrt 2, (theta_2 - theta_1) / sqrt 2).

**Likelihood and score.** For fixed `theta` the latents are polar coordinates of `x` around the
centre `m(theta) = (0.25, 0) + c(theta)`: `r = |x - m|`, `alpha = atan2(x_2 - m_2, x_1 - m_1)`, and
the map `(alpha, r) -> x` has Jacobian determinant `r`. Hence the likelihood is explicit,

    p(x | theta) = N(r; 0.1, 0.01^2) / (pi r)     if x_1 > m_1(theta)   (i.e. |alpha| < pi/2),

and the latents are a deterministic function of `(theta, x)`: the joint `p(theta, alpha, r | x)`
collapses onto `p(theta | x)`. The "joint score" in the sense of Zeghal et al. 2022 (gradient
of `log p(x, z | theta) + log p(theta)` with the latents `z` that carry the simulator's randomness)
is then the exact posterior score,

    ∇_theta log p(theta | x) = ∇_theta [log N(r(theta); 0.1, 0.01^2) - log r(theta)]

inside the prior box (the uniform prior adds nothing), which [`two_moons_simulate`][jflows.two_moons_simulate]
returns, computed by autodiff of the log-likelihood (it is undefined on the line
`theta_1 + theta_2 = 0`, a null set; `jnp.abs` has derivative 0 there).

**Reference posterior.** Inverting the simulator: draw `(alpha, r)` from their priors, then
`theta_1 + theta_2 = s sqrt 2 (r cos alpha + 0.25 - x_1)` with a random sign `s = ±1` (the two branches of
`|.|`; no solution if the bracket is negative) and `theta_2 - theta_1 = sqrt 2 (x_2 - r sin alpha)`.
The map `(alpha, r, s) -> theta` is one-to-one with Jacobian `r`, so the proposal density of
`theta` is `p(x | theta) / 2`; keeping the draws inside the prior box (rejection) gives exact
samples of `p(theta | x_o)`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = [
    "TWO_MOONS_X_OBS",
    "two_moons_log_likelihood",
    "two_moons_reference_posterior",
    "two_moons_simulate",
]

#: The observation used by the benchmark: `x_o = (0, 0)` (Greenberg et al. 2019), whose
#: posterior is a pair of crescents.
TWO_MOONS_X_OBS = (0.0, 0.0)

_R_MEAN, _R_STD = 0.1, 0.01
_SQRT2 = 2.0**0.5


def _centre(theta):
    t1, t2 = theta[..., 0], theta[..., 1]
    return jnp.stack([0.25 - jnp.abs(t1 + t2) / _SQRT2, (t2 - t1) / _SQRT2], axis=-1)


def _log_lik_one(theta, x):
    delta = x - _centre(theta)
    r = jnp.sqrt(jnp.sum(delta**2))
    log_n = -0.5 * ((r - _R_MEAN) / _R_STD) ** 2 - jnp.log(_R_STD * jnp.sqrt(2 * jnp.pi))
    return jnp.where(delta[0] > 0, log_n - jnp.log(jnp.pi * r), -jnp.inf)


def two_moons_log_likelihood(theta, x) -> jax.Array:
    """Explicit log-likelihood `log p(x | theta)` of the two-moons simulator (see module docs).

    **Arguments:**

    - `theta`: `(2,)` or `(n, 2)`.
    - `x`: `(2,)` or `(n, 2)` (broadcast against `theta`'s batch).

    **Returns:**

    `()` or `(n,)`; `-inf` where `x` lies on the wrong side of the moon (`|alpha| > pi/2`).
    """
    theta, x = jnp.asarray(theta), jnp.asarray(x)
    if theta.shape[-1:] != (2,) or x.shape[-1:] != (2,) or theta.ndim > 2 or x.ndim > 2:
        raise ValueError(
            f"theta and x must have shape (2,) or (n, 2), got {theta.shape}, {x.shape}"
        )
    if theta.ndim == 1 and x.ndim == 1:
        return _log_lik_one(theta, x)
    return jax.vmap(
        _log_lik_one, in_axes=(0 if theta.ndim == 2 else None, 0 if x.ndim == 2 else None)
    )(theta, x)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _simulate(key, n, dtype):
    k_theta, k_alpha, k_r = jax.random.split(key, 3)
    theta = jax.random.uniform(k_theta, (n, 2), dtype, -1.0, 1.0)
    alpha = jax.random.uniform(k_alpha, (n,), dtype, -jnp.pi / 2, jnp.pi / 2)
    r = _R_MEAN + _R_STD * jax.random.normal(k_r, (n,), dtype)
    p = jnp.stack([r * jnp.cos(alpha) + 0.25, r * jnp.sin(alpha)], axis=-1)
    x = p + _centre(theta) - jnp.array([0.25, 0.0], dtype)[None, :]
    score = jax.vmap(jax.grad(_log_lik_one))(theta, x)
    return theta, x, score


def two_moons_simulate(key, n: int, dtype=None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draw `n` triples `(theta, x, score)` from the two-moons model.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `n`: number of simulations.
    - `dtype`: float dtype (default: JAX's default float).

    **Returns:**

    `theta` `(n, 2)` from the prior, `x` `(n, 2)`, and the joint score `(n, 2)`
    `∇_theta log p(theta, alpha, r | x) = ∇_theta log p(x | theta)` (see the module docs: the latents
    are fixed by `(theta, x)`, so this equals the posterior score inside the prior box).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    return _simulate(key, n, dtype)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _invert(key, x_obs, n, dtype):
    k_alpha, k_r, k_sign = jax.random.split(key, 3)
    alpha = jax.random.uniform(k_alpha, (n,), dtype, -jnp.pi / 2, jnp.pi / 2)
    r = _R_MEAN + _R_STD * jax.random.normal(k_r, (n,), dtype)
    sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, (n,)), 1.0, -1.0).astype(dtype)
    abs_s = _SQRT2 * (r * jnp.cos(alpha) + 0.25 - x_obs[0])
    s = sign * abs_s
    d = _SQRT2 * (x_obs[1] - r * jnp.sin(alpha))
    theta = jnp.stack([(s - d) / 2, (s + d) / 2], axis=-1)
    ok = (abs_s >= 0) & jnp.all(jnp.abs(theta) <= 1, axis=-1)
    return theta, ok


def two_moons_reference_posterior(key, n: int, x_obs=TWO_MOONS_X_OBS, dtype=None) -> jax.Array:
    """Exact samples of the two-moons posterior `p(theta | x_obs)` by inverting the simulator.

    See the module docs: `(alpha, r)` from their priors and a random branch of `|theta_1 + theta_2|`
    give `theta` with density proportional to `p(x_obs | theta)`; draws outside the prior box
    `[-1, 1]^2` are rejected (batches are drawn until `n` are accepted).

    **Arguments:**

    - `key`: a `jax.random` key.
    - `n`: number of samples.
    - `x_obs`: the observation, shape `(2,)`.
    - `dtype`: float dtype (default: JAX's default float).

    **Returns:**

    `(n, 2)` posterior samples.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    x_obs = jnp.asarray(x_obs, dtype)
    if x_obs.shape != (2,):
        raise ValueError(f"x_obs must have shape (2,), got {x_obs.shape}")
    out, have, batch = [], 0, max(2 * n, 1024)
    for _ in range(1000):
        key, sub = jax.random.split(key)
        theta, ok = _invert(sub, x_obs, batch, dtype)
        kept = theta[ok]
        out.append(kept)
        have += kept.shape[0]
        if have >= n:
            return jnp.concatenate(out)[:n]
    raise ValueError(f"x_obs={x_obs} has (almost) no posterior mass inside the prior box")
