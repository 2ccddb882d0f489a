"""The isotropic Gaussian on SO(3), IGSO(3)(mean, eps): the heat kernel of SO(3) at time `eps`.

Parametrisation. The density with respect to the *normalised* Haar measure, as a function of the angle
`omega` of `R @ mean.T`, is

    f_eps(omega) = sum_l (2l + 1) exp(-l (l + 1) eps) sin((l + 1/2) omega) / sin(omega / 2),

i.e. `eps` is the heat-kernel time of `d p / d eps = Laplacian p`, with the Laplacian of the metric in
which the rotation angle is the geodesic distance. For small `eps` this is the wrapped image of a
Gaussian tangent vector with per-component variance `sigma^2 = 2 eps`; `sigma` is the noise scale of the
samplers. Convolution closure: IGSO3(eps0) * IGSO3(eps1) = IGSO3(eps0 + eps1), i.e. sigmas add in
quadrature. The angle marginal is `f_eps(omega) (1 - cos omega) / pi` on `[0, pi]` (the Haar factor).

Evaluation. For `eps >= EPS_SWITCH` the series above is summed to `L_SERIES` (truncation error
< 1e-20). For `eps < EPS_SWITCH` we use its exact Poisson resummation (heat kernel by the method of
images, x = omega / 2):

    f_eps = sqrt(pi) exp(eps / 4) eps^(-3/2) / sin(x) * sum_k (-1)^k (x - pi k) exp(-(x - pi k)^2 / eps),

summed over k = -K_IMAGES..K_IMAGES (truncation error < exp(-((K + 1/2)^2 - 1/4) pi^2 / eps) < 1e-50
at the switch), whose k = 0 term is the leading small-eps asymptotic (Nikolayev-Savyolova form). Both are exact, so
they agree at the switch to rounding (tested).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_positive, check_rotation, check_vector, poison
from .so3 import _matrix_to_quaternion, _quaternion_log, _safe_norm, exp

EPS_SWITCH = 1.0
K_IMAGES = 3
L_SERIES = 12
_SMALL_Z = 0.1  # Taylor series below this argument (their truncation error is < 1e-15 there)


def _broadcast(omega, eps):
    omega, eps = jnp.asarray(omega), jnp.asarray(eps)
    dtype = jnp.result_type(omega, eps, float)
    shape = jnp.broadcast_shapes(omega.shape, eps.shape)
    return jnp.broadcast_to(omega.astype(dtype), shape), jnp.broadcast_to(eps.astype(dtype), shape)


def _series(omega, eps):
    """`(log f, (d log f / d omega) / omega)` from the truncated character series (large eps)."""
    shape = omega.shape
    l = jnp.arange(L_SERIES + 1, dtype=omega.dtype).reshape((1,) * len(shape) + (-1,))
    a = (2 * l + 1) * jnp.exp(-l * (l + 1) * eps[..., None])
    # sin((2l+1) x) / sin(x) = 1 + 2 sum_{j=1}^{l} cos(2 j x): a cosine series in omega.
    c = jnp.flip(jnp.cumsum(jnp.flip(a, axis=-1), axis=-1), axis=-1)
    c = c * jnp.where(l == 0, 1.0, 2.0)
    f = jnp.sum(c * jnp.cos(l * omega[..., None]), axis=-1)
    df_over_omega = -jnp.sum(l * l * c * jnp.sinc(l * omega[..., None] / jnp.pi), axis=-1)
    return jnp.log(f), df_over_omega / f


def _images(omega, eps):
    """`(log f, (d log f / d omega) / omega)` from the image sum (small eps)."""
    x = 0.5 * omega
    small_x = x < _SMALL_Z
    x2 = x * x
    x_safe = jnp.where(small_x, 1.0, x)
    # Q = (1 - x cot x) / x^2, the derivative of log(x / sin x) divided by x.
    q_taylor = 1 / 3 + x2 * (1 / 45 + x2 * (2 / 945 + x2 * (1 / 4725 + x2 * (2 / 93555))))
    q_exact = (1.0 - x_safe / jnp.tan(x_safe)) / (x_safe * x_safe)
    q = jnp.where(small_x, q_taylor, q_exact)

    rho = jnp.zeros_like(x)
    drho_over_x = jnp.zeros_like(x)
    for k in range(1, K_IMAGES + 1):
        sign = (-1.0) ** k
        b = 2 * jnp.pi * k / eps
        z = b * x
        g = jnp.exp(-((jnp.pi * k) ** 2) / eps)
        # exp(-(x -+ pi k)^2 / eps) / exp(-x^2 / eps), both <= 1 for x in [0, pi / 2]
        e_minus = jnp.exp(-((jnp.pi * k) ** 2) / eps + z)
        e_plus = jnp.exp(-((jnp.pi * k) ** 2) / eps - z)
        small_z = z < _SMALL_Z
        z2 = z * z
        z_safe = jnp.where(small_z, 1.0, z)
        # G sinh(z) / z and G (sinh z - z cosh z) / z^3, accurate for all z >= 0.
        sz_exact = -0.5 * e_minus * jnp.expm1(-2.0 * z_safe) / z_safe
        sz_taylor = g * (1.0 + z2 * (1 / 6 + z2 * (1 / 120 + z2 * (1 / 5040))))
        sz = jnp.where(small_z, sz_taylor, sz_exact)
        w_exact = (sz_exact - 0.5 * (e_minus + e_plus)) / (z_safe * z_safe)
        w_taylor = -g * (1 / 3 + z2 * (1 / 30 + z2 * (1 / 840 + z2 * (1 / 45360))))
        w = jnp.where(small_z, w_taylor, w_exact)
        rho = rho + sign * ((e_minus + e_plus) - 2 * jnp.pi * k * b * sz)
        drho_over_x = drho_over_x + sign * (2 * b * (b * sz) + 2 * jnp.pi * k * (b * (b * (b * w))))

    log_f = (
        0.5 * math.log(math.pi)
        + 0.25 * eps
        - 1.5 * jnp.log(eps)
        - x2 / eps
        - jnp.log(jnp.sinc(x / jnp.pi))
        + jnp.log1p(rho)
    )
    score_coefficient = 0.25 * (-2.0 / eps + q + drho_over_x / (1.0 + rho))
    return log_f, score_coefficient


@jax.jit
def _log_f_and_coefficient(omega, eps):
    """Both branches evaluated at safe arguments (no NaN leaks into gradients), then selected."""
    omega, eps = _broadcast(omega, eps)
    use_series = eps >= EPS_SWITCH
    series = _series(omega, jnp.where(use_series, eps, EPS_SWITCH))
    images = _images(omega, jnp.where(use_series, EPS_SWITCH, eps))
    return tuple(jnp.where(use_series, s, i) for s, i in zip(series, images, strict=True))


def igso3_log_density(omega, eps):
    """Log density of IGSO(3) w.r.t. the normalised Haar measure, at rotation angle `omega`.

    **Arguments:**

    - `omega`: rotation angles from the mean, in `[0, pi]`, any shape.
    - `eps`: heat-kernel time (`sigma^2 / 2`), > 0, broadcastable against `omega`.

    **Returns:**

    `log f_eps(omega)`, of the broadcast shape.
    """
    check_positive("eps", eps)
    return _log_f_and_coefficient(omega, eps)[0]


def igso3_angle_log_prob(omega, eps):
    """Log density of the rotation angle of an IGSO(3) sample on `[0, pi]` (Lebesgue measure).

    That is `log(f_eps(omega) (1 - cos omega) / pi)`; `-inf` at `omega = 0`.

    **Arguments:**

    - `omega`: angles in `[0, pi]`, any shape.
    - `eps`: heat-kernel time, > 0, broadcastable against `omega`.

    **Returns:**

    The log angle density, of the broadcast shape.
    """
    check_positive("eps", eps)
    omega, eps = _broadcast(omega, eps)
    haar = jnp.log(2.0 * jnp.sin(0.5 * omega) ** 2 / jnp.pi)
    return _log_f_and_coefficient(omega, eps)[0] + haar


def igso3_tangent_score(v, eps):
    """Score of IGSO(3)(mean, eps) at `R = exp(hat(v)) @ mean`, as a world-frame tangent vector.

    It equals `(d log f / d omega)(|v|) v / |v|` and is smooth at `v = 0`, where it is
    `-v / (2 eps) + O(|v|^3)`. This is the denoising score matching target for the noise `v`.

    **Arguments:**

    - `v`: rotation vectors with `|v| <= pi`, shape `(..., 3)`.
    - `eps`: heat-kernel time, > 0, broadcastable against `v[..., 0]`.

    **Returns:**

    Tangent vectors of shape `(..., 3)`.
    """
    check_vector("v", v, 3)
    check_positive("eps", eps)
    v = jnp.asarray(v)
    coefficient = _log_f_and_coefficient(_safe_norm(v), eps)[1]
    return coefficient[..., None] * v


def igso3_sample_angle(key, eps, shape=(), num_grid: int = 2048):
    """Rotation angles of IGSO(3) samples, by inverse-CDF interpolation on a grid.

    The grid covers `[0, min(pi, 12 sigma)]` (`sigma = sqrt(2 eps)`) with `num_grid` points; the CDF is
    the cumulative trapezoid rule of the angle density, normalised by its last value. Pure and jittable
    (`eps` may be traced; `shape` and `num_grid` are static).

    **Arguments:**

    - `key`: a `jax.random` key.
    - `eps`: scalar heat-kernel time, > 0.
    - `shape`: batch shape of the sample.
    - `num_grid`: number of grid points.

    **Returns:**

    Angles in `[0, pi]` of shape `shape`.
    """
    check_positive("eps", eps)
    eps = jnp.asarray(eps, dtype=jnp.result_type(eps, float))
    if eps.shape != ():
        raise ValueError(f"`eps` must be a scalar to sample, got shape {eps.shape}.")
    return _sample_angle(key, eps, tuple(shape), num_grid)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _sample_angle(key, eps, shape, num_grid):
    omega_max = jnp.minimum(jnp.pi, 12.0 * jnp.sqrt(2.0 * eps))
    grid = omega_max * jnp.linspace(0.0, 1.0, num_grid, dtype=eps.dtype)
    log_f = _log_f_and_coefficient(grid, eps)[0]
    density = jnp.exp(log_f - jnp.max(log_f)) * jnp.sin(0.5 * grid) ** 2
    cdf = jnp.concatenate(
        [jnp.zeros((1,), eps.dtype), jnp.cumsum(0.5 * (density[1:] + density[:-1]))]
    )
    cdf = cdf / cdf[-1]
    u = jax.random.uniform(key, shape, dtype=eps.dtype)
    return jnp.interp(u, cdf, grid)


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, init=False, eq=False)
class IGSO3:
    """The isotropic Gaussian on SO(3), IGSO(3)(mean, eps), as a PyTree.

    Samples are `exp(hat(v)) @ mean` with `v = omega * axis`, a uniform axis and the angle law of
    `igso3_angle_log_prob`. Scores are world-frame tangent vectors (see the package README).

    **Arguments:**

    - `eps`: scalar heat-kernel time, > 0 (`eps = sigma^2 / 2`; see `IGSO3.from_sigma`).
    - `mean`: the mean rotation, shape `(3, 3)`; the identity if `None`.
    """

    eps: jax.Array
    mean: jax.Array

    def __init__(self, eps, mean=None):
        check_positive("eps", eps)
        eps = jnp.asarray(eps)
        if not jnp.issubdtype(eps.dtype, jnp.floating):
            eps = eps.astype(jnp.result_type(float))
        if eps.shape != ():
            raise ValueError(f"`eps` must be a scalar (vmap over distributions), got {eps.shape}.")
        if mean is None:
            mean = jnp.eye(3, dtype=eps.dtype)
        else:
            if np.shape(mean) != (3, 3):
                raise ValueError(f"`mean` must have shape (3, 3), got {np.shape(mean)}.")
            mean, _ = check_rotation("mean", mean)  # eager check; traced: see `_valid_mean`
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "mean", mean)

    @classmethod
    def from_sigma(cls, sigma, mean=None) -> IGSO3:
        """IGSO(3) with tangent noise scale `sigma`, i.e. `eps = sigma^2 / 2`."""
        check_positive("sigma", sigma)
        return cls(0.5 * jnp.asarray(sigma) ** 2, mean)

    @property
    def sigma(self) -> jax.Array:
        """The noise scale `sqrt(2 eps)`."""
        return jnp.sqrt(2.0 * self.eps)

    def tree_flatten(self):
        return (self.eps, self.mean), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux
        obj = object.__new__(cls)
        object.__setattr__(obj, "eps", children[0])
        object.__setattr__(obj, "mean", children[1])
        return obj

    def _valid_mean(self):
        """Validity of a traced mean (`None` when concrete: then it was checked, or is checked now)."""
        return check_rotation("mean", self.mean)[1]

    def _tangent(self, R):
        """`(log(R @ mean.T), validity masks)`; `R` is checked eagerly (or poisoned when traced)."""
        R, valid = check_rotation("R", R)
        M = jnp.einsum("...ij,kj->...ik", R, self.mean.astype(R.dtype))
        v = _quaternion_log(_matrix_to_quaternion(M))
        return v, (valid, self._valid_mean())

    def sample(self, key, shape=(), num_grid: int = 2048):
        """Draw rotations.

        **Arguments:**

        - `key`: a `jax.random` key.
        - `shape`: batch shape of the sample.
        - `num_grid`: grid size of the inverse-CDF angle sampler.

        **Returns:**

        Rotation matrices of shape `(*shape, 3, 3)`.
        """
        shape = tuple(shape)
        key_angle, key_axis = jax.random.split(key)
        omega = igso3_sample_angle(key_angle, self.eps, shape, num_grid)
        axis = jax.random.normal(key_axis, (*shape, 3), dtype=omega.dtype)
        axis = axis / jnp.linalg.norm(axis, axis=-1, keepdims=True)
        R = jnp.einsum("...ij,jk->...ik", exp(axis * omega[..., None]), self.mean)
        return poison(R, self._valid_mean())

    def log_prob(self, R):
        """Log density w.r.t. the normalised Haar measure.

        **Arguments:**

        - `R`: rotation matrices, shape `(..., 3, 3)`.

        **Returns:**

        Array of shape `(...)`.

        **Raises:**

        `ValueError` if `R` (or the mean) is concrete and not a batch of rotations (non-finite,
        not orthogonal, or determinant -1; see `jso3.log`). Under a trace the result is NaN for
        every such matrix instead.
        """
        v, valid = self._tangent(R)
        return poison(_log_f_and_coefficient(_safe_norm(v), self.eps)[0], *valid)

    def score(self, R):
        """Gradient of `log_prob` as a world-frame tangent vector: `d/dt log_prob(exp(t hat(u)) R)`
        at `t = 0` equals `score(R) . u`.

        **Arguments:**

        - `R`: rotation matrices, shape `(..., 3, 3)`.

        **Returns:**

        Array of shape `(..., 3)`.

        **Raises:**

        `ValueError` for non-rotations, as `log_prob` (NaN under a trace).
        """
        v, valid = self._tangent(R)
        coefficient = _log_f_and_coefficient(_safe_norm(v), self.eps)[1]
        return poison(coefficient[..., None] * v, *valid)
