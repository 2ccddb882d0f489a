"""A Fourier-diagonal mass matrix for the annealed HMC: one scale per Fourier mode, from the prior
power spectrum and the likelihood's mean precision."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._checks import check_field_shape, check_power_map, check_scalar, concrete
from ._fourier import apply_fourier_multiplier, rfft_shape


@dataclasses.dataclass(frozen=True)
class FourierPreconditioner:
    """The mass matrix `M = F^H diag(1 / D_k(sigma)) F` of the annealed HMC, diagonal in Fourier space,
    with `D_k(sigma)` the posterior variance of Fourier mode `k` of a stationary approximation of the
    annealed posterior at noise level `sigma`:

    `D_k(sigma) = 1 / (1 / (power_k + sigma^2) + precision / (1 + sigma^2 precision))`.

    `power` is the prior's power map (per-mode variance, unitary FFT: `GaussianFieldPrior.power`, or
    the spectrum of the training maps of a learned prior) and `precision` the likelihood's mean
    precision per field pixel, `trace(A^T Sigma^-1 A) / x.size`: for `IdentityOperator` and
    `MaskOperator` that is `noise.total_precision() / y.size` (masked pixels counting zero); `0` gives
    a mass from the prior alone. It may also be a map on the half-complex grid, the likelihood's
    precision per Fourier mode, for operators that do not see every mode: for `ShearOperator`,
    `noise.total_precision() / y.size * (D_1^2 + D_2^2)` with `jscore.shear_multipliers` (zero on the
    mean, which shear does not constrain). The leapfrog step size of `HMCConfig` is then in units
    of these scales (0.25 in the README's measurements, instead of a fraction of the smallest
    posterior standard deviation), so every Fourier mode moves at about the same rate: with the
    identity mass the large-scale modes of red spectra (and the modes under masks, whose variance is
    the prior's) barely move in a run and keep the spread the chains started with.

    With a preconditioner, `annealed_posterior_sample` also starts the chains from
    `init_position + D(sigma_init)^(1/2) z` instead of `init_position + sigma_init z`: the spread of
    every Fourier mode is that of the approximate annealed posterior at `sigma_init`.

    **Arguments:**

    - `power`: power map on the half-complex grid, shape `shape[:-1] + (shape[-1] // 2 + 1,)`;
      positive, finite and symmetric.
    - `shape`: shape of one field (static).
    - `precision`: the likelihood's mean precision per pixel, `>= 0`: a scalar, or a map on the
      half-complex grid (per Fourier mode).
    """

    power: Array
    shape: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    precision: Array | float = 0.0

    def __post_init__(self):
        check_power_map("FourierPreconditioner", self.power, self.shape)
        value = concrete(self.precision)
        if value is None or value.ndim == 0:
            check_scalar("FourierPreconditioner.precision", self.precision, low=0.0, low_open=False)
        elif value.shape != rfft_shape(self.shape):
            raise ValueError(
                "FourierPreconditioner.precision must be a scalar or a map on the half-complex grid "
                f"{rfft_shape(self.shape)}, got shape {value.shape}"
            )
        elif not np.all(value >= 0) or not np.all(np.isfinite(value)):
            raise ValueError("FourierPreconditioner.precision must be finite and >= 0")

    def variance(self, sigma: Array | float, dtype=None) -> Array:
        """`D_k(sigma)` on the half-complex grid: the inverse mass per Fourier mode."""
        dtype = dtype or jnp.result_type(float)
        sigma2 = jnp.asarray(sigma, dtype) ** 2
        tau = jnp.asarray(self.precision, dtype)
        return 1.0 / (1.0 / (jnp.asarray(self.power, dtype) + sigma2) + tau / (1.0 + sigma2 * tau))

    def apply_inverse_mass(self, p: Array, sigma: Array | float) -> Array:
        """`M^-1 p = F^H diag(D(sigma)) F p` for one field."""
        check_field_shape("p", p, self.shape, "FourierPreconditioner")
        return apply_fourier_multiplier(p, self.variance(sigma, p.dtype))

    def apply_sqrt_mass(self, z: Array, sigma: Array | float) -> Array:
        """`M^(1/2) z`: a momentum `p ~ N(0, M)` from white `z`."""
        check_field_shape("z", z, self.shape, "FourierPreconditioner")
        return apply_fourier_multiplier(z, 1.0 / jnp.sqrt(self.variance(sigma, z.dtype)))

    def apply_sqrt_inverse_mass(self, z: Array, sigma: Array | float) -> Array:
        """`M^(-1/2) z`: a draw of `N(0, M^-1)`, the approximate annealed posterior spread."""
        check_field_shape("z", z, self.shape, "FourierPreconditioner")
        return apply_fourier_multiplier(z, jnp.sqrt(self.variance(sigma, z.dtype)))


jax.tree_util.register_dataclass(FourierPreconditioner)
