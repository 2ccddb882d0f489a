"""Classical baselines: the Wiener filter (exact in Fourier space, iterative otherwise), Wiener
posterior samples, and the direct (least-squares) inversion."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ._checks import check_int, check_positive, check_scalar, concrete
from ._fourier import apply_fourier_multiplier, rfft_shape
from .noise import AbstractNoise, prepare_data
from .prior import GaussianFieldPrior
from .sampler import _check_problem

Operator = Callable[[Array], Array]


class CGInfo(NamedTuple):
    """Convergence report of `conjugate_gradient`.

    - `num_iterations`: iterations done.
    - `residual_norm`: `|b - M x|` at the end, relative to `|b|`.
    """

    num_iterations: Array
    residual_norm: Array


def conjugate_gradient(
    matvec: Operator,
    b: Array,
    x0: Array | None = None,
    *,
    preconditioner: Operator | None = None,
    tol: float = 1e-6,
    maxiter: int = 1000,
) -> tuple[Array, CGInfo]:
    """Solve `M x = b` for a symmetric positive (semi-)definite `M` by preconditioned conjugate
    gradients, stopping when `|b - M x| <= tol |b|` or after `maxiter` iterations.

    **Arguments:**

    - `matvec`: `x -> M x` on arrays shaped like `b`.
    - `b`: the right-hand side.
    - `x0`: initial guess (default zeros; from zero on a consistent singular system, CG returns the
      minimum-norm solution).
    - `preconditioner`: `r -> P r` with `P` symmetric positive definite, approximately `M^-1`.
    - `tol`, `maxiter`: stopping rule (`maxiter` static).

    **Returns:**

    `(x, CGInfo)`.
    """
    maxiter = check_int("maxiter", maxiter, minimum=1)
    check_scalar("tol", tol, low=0.0, low_open=False)
    precond = preconditioner if preconditioner is not None else (lambda r: r)
    x = jnp.zeros_like(b) if x0 is None else x0
    r = b - matvec(x)
    z = precond(r)
    p = z
    rz = jnp.vdot(r, z)
    b_norm = jnp.linalg.norm(b)
    threshold = jnp.asarray(tol, b.dtype) * b_norm

    def cond(carry):
        _, r, _, _, _, i = carry
        return (i < maxiter) & (jnp.linalg.norm(r) > threshold)

    def body(carry):
        x, r, _, p, rz, i = carry
        mp = matvec(p)
        alpha = rz / jnp.vdot(p, mp)
        x = x + alpha * p
        r = r - alpha * mp
        z = precond(r)
        rz_new = jnp.vdot(r, z)
        p = z + (rz_new / rz) * p
        return x, r, z, p, rz_new, i + 1

    x, r, _, _, _, n = jax.lax.while_loop(cond, body, (x, r, z, p, rz, jnp.asarray(0)))
    rel = jnp.linalg.norm(r) / jnp.where(b_norm > 0, b_norm, 1.0)
    return x, CGInfo(n, rel)


def fourier_wiener_filter(y: Array, prior_power: Array, noise_power: Array) -> tuple[Array, Array]:
    """The exact Wiener filter for `y = x + n` on a periodic grid with `x ~ N(0, C)`, `n ~ N(0, N)`,
    both diagonal in Fourier space: the posterior is Gaussian and diagonal in Fourier space, with mean
    `P / (P + N) y_hat` and variance `P N / (P + N)` per mode.

    Power maps use the unitary FFT convention of jscore (`E|x_hat_k|^2 = P_k`) on the half-complex
    grid; white noise of pixel variance `v` is `noise_power = v`.

    **Arguments:**

    - `y`: the data map.
    - `prior_power`, `noise_power`: power maps on the half-complex grid of `y` (or scalars), positive.

    **Returns:**

    `(mean, posterior_power)`: the posterior mean map and the posterior variance per Fourier mode
    (half-complex grid).
    """
    y = jnp.asarray(y)
    shape = tuple(y.shape)
    for name, power in (("prior_power", prior_power), ("noise_power", noise_power)):
        value = concrete(power)
        if value is not None:
            check_positive(name, value)
            if value.shape not in ((), rfft_shape(shape)):
                raise ValueError(
                    f"{name} must be a scalar or have shape {rfft_shape(shape)}, got {value.shape}"
                )
    grid = rfft_shape(shape)
    p = jnp.broadcast_to(jnp.asarray(prior_power, y.dtype), grid)
    n = jnp.broadcast_to(jnp.asarray(noise_power, y.dtype), grid)
    mean = apply_fourier_multiplier(y, p / (p + n))
    return mean, p * n / (p + n)


def _wiener_system(forward_op, adjoint_op, noise, prior):
    """The posterior precision `H = C^-1 + A^T Sigma^-1 A` and a Fourier-diagonal preconditioner."""

    def matvec(x):
        return prior.apply_precision(x) + adjoint_op(noise.apply_precision(forward_op(x)))

    # Preconditioner (C^-1 + lambda I)^-1 with lambda the mean diagonal of A^T Sigma^-1 A, assuming
    # rows of A of unit norm (identity, masks): only the speed of convergence depends on it.
    n_field = 1
    for n in prior.shape:
        n_field *= n

    def preconditioner(r):
        lam = noise.total_precision().astype(r.dtype) / n_field
        power = jnp.asarray(prior.power, r.dtype)
        return apply_fourier_multiplier(r, power / (1.0 + lam * power))

    return matvec, preconditioner


def _check_wiener_problem(forward_op, adjoint_op, noise, prior, y):
    """Eager checks shared by the Wiener entry points; returns the field's shape/dtype struct."""
    if not isinstance(prior, GaussianFieldPrior):
        raise TypeError(f"prior must be a jscore.GaussianFieldPrior, got {type(prior).__name__}")
    x_struct = _check_problem(None, forward_op, adjoint_op, noise, y)
    if tuple(prior.shape) != tuple(x_struct.shape):
        raise ValueError(
            f"prior is defined on fields of shape {prior.shape} but A acts on shape {x_struct.shape}"
        )
    return x_struct


def wiener_filter_cg(
    y: Array,
    forward_op: Operator,
    adjoint_op: Operator,
    noise: AbstractNoise,
    prior: GaussianFieldPrior,
    *,
    tol: float = 1e-6,
    maxiter: int = 1000,
    x0: Array | None = None,
) -> tuple[Array, CGInfo]:
    """The Wiener filter (posterior mean for a Gaussian prior) for any linear operator and noise
    model: solves `(C^-1 + A^T Sigma^-1 A) x = A^T Sigma^-1 y` by preconditioned conjugate gradients.

    Handles masks (infinite or huge noise variance, or `jscore.MaskOperator`; with infinite variance
    the data there may be NaN, the survey convention) and non-stationary or Fourier-diagonal noise. The preconditioner is `(C^-1 + lambda I)^-1`, Fourier-diagonal, with
    `lambda = trace(Sigma^-1) / n_pixels`.

    **Arguments:**

    - `y`: the data.
    - `forward_op`, `adjoint_op`: `x -> A x`, `y -> A^T y` for one field.
    - `noise`: the noise model of `y`.
    - `prior`: the Gaussian prior `jscore.GaussianFieldPrior`.
    - `tol`, `maxiter`, `x0`: as in `jscore.conjugate_gradient`.

    **Returns:**

    `(mean, CGInfo)`.
    """
    x_struct = _check_wiener_problem(forward_op, adjoint_op, noise, prior, y)
    y = prepare_data(noise, jnp.asarray(y, x_struct.dtype))
    matvec, preconditioner = _wiener_system(forward_op, adjoint_op, noise, prior)
    b = adjoint_op(noise.apply_precision(y))
    return conjugate_gradient(
        matvec, b, x0, preconditioner=preconditioner, tol=tol, maxiter=maxiter
    )


def wiener_filter_sample(
    key: Array,
    y: Array,
    forward_op: Operator,
    adjoint_op: Operator,
    noise: AbstractNoise,
    prior: GaussianFieldPrior,
    *,
    tol: float = 1e-6,
    maxiter: int = 1000,
) -> Array:
    """One exact draw from the Gaussian posterior of `wiener_filter_cg` (a constrained realisation,
    by perturbation): `x = x' + H^-1 [A^T Sigma^-1 (y - A x') - A^T Sigma^-1/2 z]` with
    `x' ~ N(0, C)`, `z ~ N(0, I)`, `H = C^-1 + A^T Sigma^-1 A`, whose covariance is `H^-1`.

    **Arguments:**

    - `key`: a `jax.random` key.
    - the rest as in `wiener_filter_cg`.

    **Returns:**

    One posterior sample (vmap over keys for more).
    """
    x_struct = _check_wiener_problem(forward_op, adjoint_op, noise, prior, y)
    dtype = x_struct.dtype
    y = prepare_data(noise, jnp.asarray(y, dtype))
    k1, k2 = jax.random.split(key)
    x_prior = prior.sample(k1, dtype=dtype)
    z = jax.random.normal(k2, y.shape, dtype)
    rhs = adjoint_op(noise.apply_precision(y - forward_op(x_prior))) - adjoint_op(
        noise.apply_sqrt_precision(z)
    )
    matvec, preconditioner = _wiener_system(forward_op, adjoint_op, noise, prior)
    delta, _ = conjugate_gradient(
        matvec, rhs, preconditioner=preconditioner, tol=tol, maxiter=maxiter
    )
    return x_prior + delta


def direct_inversion(
    y: Array,
    forward_op: Operator,
    adjoint_op: Operator,
    noise: AbstractNoise | None = None,
    *,
    damping: float = 0.0,
    tol: float = 1e-6,
    maxiter: int = 1000,
) -> tuple[Array, CGInfo]:
    """The prior-free baseline: the (noise-weighted, optionally damped) least-squares inversion
    `x = (A^T W A + damping I)^+ A^T W y`, `W = Sigma^-1` (or `I` without `noise`), by conjugate
    gradients from zero, i.e. the minimum-norm solution when `A^T W A` is singular (masked pixels come
    out zero). For `A = I` it returns `y`; for `A` with `A A^T = I` (e.g. periodic Kaiser-Squires) and
    white noise it equals `A^T y`.

    **Arguments:**

    - `y`: the data.
    - `forward_op`, `adjoint_op`: `x -> A x`, `y -> A^T y` for one field.
    - `noise`: optional noise model giving the weights.
    - `damping`: Tikhonov term (>= 0).
    - `tol`, `maxiter`: as in `jscore.conjugate_gradient`.

    **Returns:**

    `(x, CGInfo)`.
    """
    if noise is not None and not isinstance(noise, AbstractNoise):
        raise TypeError(f"noise must be a jscore noise model or None, got {type(noise).__name__}")
    y = jnp.asarray(y)
    check_scalar("damping", damping, low=0.0, low_open=False)
    x_struct = jax.eval_shape(adjoint_op, jax.ShapeDtypeStruct(y.shape, y.dtype))
    y_struct = jax.eval_shape(forward_op, x_struct)
    if y_struct.shape != y.shape:
        raise ValueError(
            f"forward_op maps fields of shape {x_struct.shape} to shape {y_struct.shape}, but y has shape {y.shape}"
        )
    if noise is not None and tuple(noise.shape) != tuple(y.shape):
        raise ValueError(
            f"noise is defined on data of shape {tuple(noise.shape)} but y has shape {tuple(y.shape)}"
        )
    if noise is not None:
        y = prepare_data(noise, y)
    weight = (lambda r: r) if noise is None else noise.apply_precision

    def matvec(x):
        return adjoint_op(weight(forward_op(x))) + damping * x

    return conjugate_gradient(matvec, adjoint_op(weight(y)), tol=tol, maxiter=maxiter)
