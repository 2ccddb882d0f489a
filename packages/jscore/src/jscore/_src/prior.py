"""The analytic Gaussian random field prior on a periodic grid and its sigma-convolved score."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import Array

from ._checks import check_field_shape, check_power_map
from ._fourier import apply_fourier_multiplier, hermitian_weights


@dataclasses.dataclass(frozen=True)
class GaussianFieldPrior:
    """A stationary Gaussian random field on a periodic grid, `x ~ N(0, C)`, `C = F^H diag(power) F`.

    `F` is the unitary real FFT over every axis (`norm="ortho"`), so `power_k = E|x_hat_k|^2` per
    Fourier mode (a field of pixel variance `v` with a flat spectrum has `power = v`). Its
    convolution with `N(0, sigma^2 I)` is again Gaussian, `p_sigma = N(0, C + sigma^2 I)`, whose score
    `grad log p_sigma(x) = -(C + sigma^2 I)^-1 x` is exact: this is the score model that needs no training
    and against which the annealed sampler is checked.

    **Arguments:**

    - `power`: power map on the half-complex grid, shape `shape[:-1] + (shape[-1] // 2 + 1,)`;
      positive, finite and symmetric (`power(-k) = power(k)`); build it e.g. from
      `jscore.fourier_wavenumber(shape, spacing)`.
    - `shape`: shape of one field (static).
    """

    power: Array
    shape: tuple[int, ...] = dataclasses.field(metadata={"static": True})

    def __post_init__(self):
        check_power_map("GaussianFieldPrior", self.power, self.shape)

    def _power(self, dtype) -> Array:
        return jnp.asarray(self.power, dtype=dtype)

    def _check(self, x) -> None:
        check_field_shape("x", x, self.shape, "GaussianFieldPrior")

    def score(self, x: Array, sigma: Array | float) -> Array:
        """`grad_x log p_sigma(x) = -(C + sigma^2 I)^-1 x` for one field `x` of shape `shape`."""
        self._check(x)
        sigma = jnp.asarray(sigma, dtype=x.dtype)
        return -apply_fourier_multiplier(x, 1.0 / (self._power(x.dtype) + sigma**2))

    def log_prob(self, x: Array, sigma: Array | float = 0.0) -> Array:
        """Normalised `log p_sigma(x) = log N(x; 0, C + sigma^2 I)` for one field `x`."""
        self._check(x)
        sigma = jnp.asarray(sigma, dtype=x.dtype)
        var = self._power(x.dtype) + sigma**2
        quad = jnp.vdot(x, apply_fourier_multiplier(x, 1.0 / var))
        weights = jnp.asarray(hermitian_weights(self.shape), dtype=x.dtype)
        logdet = jnp.sum(weights * jnp.log(2.0 * jnp.pi * var))
        return -0.5 * (quad + logdet)

    def sample(self, key: Array, sigma: Array | float = 0.0, dtype=None) -> Array:
        """One draw of `x ~ N(0, C + sigma^2 I)`."""
        dtype = dtype or jnp.result_type(float)
        z = jax.random.normal(key, self.shape, dtype)
        sigma = jnp.asarray(sigma, dtype=dtype)
        return apply_fourier_multiplier(z, jnp.sqrt(self._power(dtype) + sigma**2))

    def apply_covariance(self, x: Array) -> Array:
        """`C x`."""
        self._check(x)
        return apply_fourier_multiplier(x, self._power(x.dtype))

    def apply_precision(self, x: Array) -> Array:
        """`C^-1 x`."""
        self._check(x)
        return apply_fourier_multiplier(x, 1.0 / self._power(x.dtype))


jax.tree_util.register_dataclass(GaussianFieldPrior)
