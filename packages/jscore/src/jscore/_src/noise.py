"""Gaussian noise models for the data of y = A x + n: diagonal in pixels or in Fourier space."""

from __future__ import annotations

import abc
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._checks import check_positive, check_power_map, concrete
from ._fourier import apply_fourier_multiplier, hermitian_weights


class AbstractNoise(abc.ABC):
    """Zero-mean Gaussian noise `n ~ N(0, Sigma)` on the data grid.

    Every method takes and returns one data map (no batch axis); vmap for more. An annealed
    covariance `Sigma + extra_variance * I` is available to every method through `extra_variance`.
    Subclasses also provide `shape`, the shape of one data map.
    """

    shape: tuple[int, ...]

    @abc.abstractmethod
    def apply_precision(self, r: Array, extra_variance: Array | float = 0.0) -> Array:
        """`(Sigma + extra_variance I)^-1 r`."""

    @abc.abstractmethod
    def apply_sqrt_precision(self, z: Array) -> Array:
        """`Sigma^-1/2 z` (the symmetric square root); zero where the variance is infinite."""

    @abc.abstractmethod
    def sample(self, key: Array, dtype=None) -> Array:
        """A draw of `n ~ N(0, Sigma)` (infinite where the variance is infinite)."""

    @abc.abstractmethod
    def total_precision(self) -> Array:
        """`trace(Sigma^-1)`, used to scale preconditioners."""

    def log_likelihood(self, r: Array, extra_variance: Array | float = 0.0) -> Array:
        """`-1/2 r^T (Sigma + extra_variance I)^-1 r`: the Gaussian log density of a residual, up to
        the normalisation, which does not depend on the residual."""
        return -0.5 * jnp.vdot(r, self.apply_precision(r, extra_variance))


@dataclasses.dataclass(frozen=True)
class DiagonalNoise(AbstractNoise):
    """Independent noise in every data pixel, `Sigma = diag(variance)`.

    Masked or missing pixels get a huge variance (`1e10` times the others is plenty) or `inf`:
    their precision is then exactly zero and they carry no information. With `inf`, the data there
    may hold anything, NaN included (the survey convention): every jscore entry point taking data
    (`annealed_log_likelihood`, the samplers, the Wiener filters, `direct_inversion`) sets them to
    zero, and `apply_precision` returns exactly zero there whatever the residual.

    **Arguments:**

    - `variance`: per-pixel noise variance, with the shape of one data map; positive (`inf` allowed).
    """

    variance: Array

    def __post_init__(self):
        check_positive("DiagonalNoise.variance", self.variance, allow_inf=True)
        value = concrete(self.variance)
        if value is not None and value.ndim == 0:
            raise ValueError(
                "DiagonalNoise.variance must be a map with the data's shape, got a scalar"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(jnp.shape(self.variance))

    def apply_precision(self, r, extra_variance=0.0):
        var = jnp.asarray(self.variance, dtype=r.dtype)
        no_information = jnp.isinf(var)
        r = jnp.where(no_information, 0.0, r)  # NaN residuals of masked pixels carry no weight
        return r / (var + jnp.asarray(extra_variance, dtype=r.dtype))

    def apply_sqrt_precision(self, z):
        return z / jnp.sqrt(jnp.asarray(self.variance, dtype=z.dtype))

    def sample(self, key, dtype=None):
        dtype = dtype or jnp.result_type(float)
        z = jax.random.normal(key, self.shape, dtype)
        return z * jnp.sqrt(jnp.asarray(self.variance, dtype=dtype))

    def total_precision(self):
        return jnp.sum(1.0 / jnp.asarray(self.variance))


@dataclasses.dataclass(frozen=True)
class FourierNoise(AbstractNoise):
    """Stationary noise on a periodic grid, diagonal in Fourier space, `Sigma = F^H diag(power) F`.

    `F` is the unitary real FFT over every axis of the map (`norm="ortho"`), so `power` is
    `E|n_hat_k|^2`; white noise of pixel variance `v` has `power = v` everywhere.

    **Arguments:**

    - `power`: noise power on the half-complex grid, shape `shape[:-1] + (shape[-1] // 2 + 1,)`,
      positive, finite and symmetric (`power(-k) = power(k)`).
    - `shape`: shape of one data map (static).
    """

    power: Array
    shape: tuple[int, ...] = dataclasses.field(metadata={"static": True})

    def __post_init__(self):
        check_power_map("FourierNoise", self.power, self.shape)

    def apply_precision(self, r, extra_variance=0.0):
        power = jnp.asarray(self.power, dtype=r.dtype)
        return apply_fourier_multiplier(
            r, 1.0 / (power + jnp.asarray(extra_variance, dtype=r.dtype))
        )

    def apply_sqrt_precision(self, z):
        return apply_fourier_multiplier(z, 1.0 / jnp.sqrt(jnp.asarray(self.power, dtype=z.dtype)))

    def sample(self, key, dtype=None):
        dtype = dtype or jnp.result_type(float)
        z = jax.random.normal(key, self.shape, dtype)
        return apply_fourier_multiplier(z, jnp.sqrt(jnp.asarray(self.power, dtype=dtype)))

    def total_precision(self):
        weights = jnp.asarray(hermitian_weights(self.shape))
        return jnp.sum(weights / jnp.asarray(self.power))


def prepare_data(noise: AbstractNoise, y: Array) -> Array:
    """`y` with the entries that carry no information (infinite variance of a `DiagonalNoise`) set to
    zero, so that NaN there (the survey convention for masked pixels) cannot poison a residual.

    A concrete `y` that is non-finite where the variance is finite raises `ValueError` (a traced one
    gives NaN results)."""
    no_information = None
    if isinstance(noise, DiagonalNoise):
        no_information = jnp.isinf(jnp.asarray(noise.variance))
    value = concrete(y)
    variance = concrete(noise.variance) if isinstance(noise, DiagonalNoise) else None
    if value is not None and (no_information is None or variance is not None):
        bad = ~np.isfinite(value)
        if variance is not None:
            bad &= ~np.isinf(variance)
        if np.any(bad):
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"y is not finite ({value[where]!r} at index {where}, {int(bad.sum())} entries) where "
                "the noise variance is finite; give pixels without data an infinite variance "
                "(jscore.DiagonalNoise) so that they carry no information"
            )
    if no_information is None:
        return y
    return jnp.where(no_information, jnp.zeros((), jnp.result_type(y)), y)


jax.tree_util.register_dataclass(DiagonalNoise)
jax.tree_util.register_dataclass(FourierNoise)
