"""Flat-sky lensing operators: shear from convergence, Kaiser-Squires, masks, shape noise.

Conventions (as jscore): maps `(ny, nx)` with y along axis 0 and x along axis 1; shear in the layout
`(2, ny, nx)` (component axis first). `gamma_hat = (D_1, D_2) kappa_hat` with
`D_1 = (l_x^2 - l_y^2) / l^2`, `D_2 = 2 l_x l_y / l^2` (Kaiser & Squires 1993), 0 at the zero mode.
On an even grid `D_2` is set to 0 on the Nyquist row and column (except their common corner), where
it is odd under `l -> -l` and cannot act on a real field; with that choice `D_1^2 + D_2^2 > 0` for
every `l != 0` and the periodic Kaiser-Squires inversion below is exact up to the zero mode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jlens._src._checks import check_finite_positive, is_concrete
from jlens._src.geometry import FlatSky, check_geometry

__all__ = [
    "ConvergenceOperator",
    "ShearOperator",
    "add_noise",
    "kaiser_squires",
    "kappa_to_shear",
    "shape_noise_std",
    "shear_multipliers",
]


def shear_multipliers(shape: tuple[int, int], dtype: Any = None) -> tuple[jax.Array, jax.Array]:
    """`(D_1, D_2)` on the half-plane grid `(ny, nx // 2 + 1)` of `rfft2` (module conventions)."""
    ny, nx = shape
    dtype = dtype or jnp.result_type(float)
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.rfftfreq(nx)[None, :]
    k2 = fx**2 + fy**2
    safe = np.where(k2 > 0, k2, 1.0)
    d1 = np.where(k2 > 0, (fx**2 - fy**2) / safe, 0.0)
    d2 = np.where(k2 > 0, 2.0 * fx * fy / safe, 0.0)
    ny_row = (np.arange(ny) == ny // 2)[:, None] if ny % 2 == 0 else np.zeros((ny, 1), bool)
    nx_col = (np.arange(nx // 2 + 1) == nx // 2)[None, :] if nx % 2 == 0 else np.zeros((1, 1), bool)
    nyquist = (ny_row | nx_col) & ~(ny_row & nx_col)
    d2 = np.where(nyquist, 0.0, d2)
    return jnp.asarray(d1, dtype), jnp.asarray(d2, dtype)


def _check_kappa(name: str, kappa: Any) -> tuple[int, int]:
    shape = tuple(np.shape(kappa))
    if len(shape) < 2:
        raise ValueError(f"{name} must be maps of shape (..., ny, nx), got shape {shape}")
    return shape[-2:]


def _check_gamma(name: str, gamma: Any) -> tuple[int, int]:
    shape = tuple(np.shape(gamma))
    if len(shape) < 3 or shape[-3] != 2:
        hint = (
            " (the FITS layout (ny, nx, 2)? use jnp.moveaxis(gamma, -1, -3))"
            if shape[-1:] == (2,)
            else ""
        )
        raise ValueError(f"{name} must have shape (..., 2, ny, nx), got shape {shape}{hint}")
    return shape[-2:]


def _check_padding(padding: Any) -> int:
    if isinstance(padding, bool) or not isinstance(padding, int | np.integer) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    return int(padding)


def _pad(x: jax.Array, p: int) -> jax.Array:
    if p == 0:
        return x
    return jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)])


def _crop(x: jax.Array, p: int) -> jax.Array:
    if p == 0:
        return x
    return x[..., p:-p, p:-p]


def _shear(kappa: jax.Array) -> jax.Array:
    ny, nx = kappa.shape[-2:]
    d1, d2 = (_lift(d, kappa.ndim) for d in shear_multipliers((ny, nx), kappa.dtype))
    k_hat = jnp.fft.rfft2(kappa)
    g1 = jnp.fft.irfft2(d1 * k_hat, s=(ny, nx))
    g2 = jnp.fft.irfft2(d2 * k_hat, s=(ny, nx))
    return jnp.stack([g1, g2], axis=-3)


def _shear_adjoint(gamma: jax.Array, normalise: bool) -> jax.Array:
    ny, nx = gamma.shape[-2:]
    d1, d2 = (_lift(d, gamma.ndim - 1) for d in shear_multipliers((ny, nx), gamma.dtype))
    k_hat = d1 * jnp.fft.rfft2(gamma[..., 0, :, :]) + d2 * jnp.fft.rfft2(gamma[..., 1, :, :])
    if normalise:
        norm = d1**2 + d2**2
        k_hat = jnp.where(norm > 0, k_hat / jnp.where(norm > 0, norm, 1.0), 0.0)
    return jnp.fft.irfft2(k_hat, s=(ny, nx))


def kappa_to_shear(kappa: Any, *, padding: int = 0) -> jax.Array:
    """Shear `(gamma_1, gamma_2)` of convergence maps (flat sky, Fourier).

    **Arguments:**

    - `kappa`: maps, shape `(..., ny, nx)`.
    - `padding`: pixels of zeros added on every side before the transform and cropped after (0:
      periodic maps; > 0 for a map that is not periodic, to limit wrap-around).

    **Returns:**

    gamma, shape `(..., 2, ny, nx)`.
    """
    _check_kappa("kappa", kappa)
    p = _check_padding(padding)
    kappa = jnp.asarray(kappa)
    kappa = kappa.astype(jnp.result_type(kappa, float))
    return _crop(_shear(_pad(kappa, p)), p)


def kaiser_squires(gamma: Any, *, padding: int = 0) -> jax.Array:
    """Kaiser-Squires convergence (E mode) from shear maps.

    `kappa_hat = (D_1 gamma_1_hat + D_2 gamma_2_hat) / (D_1^2 + D_2^2)`, zero mean. On periodic
    maps (`padding=0`) it inverts [`kappa_to_shear`][jlens.kappa_to_shear] exactly up to the zero
    mode. With `padding > 0` the shear is zero-padded by that many pixels on every side first (the
    usual treatment of a non-periodic field); set masked shear to 0 before calling.

    **Arguments:**

    - `gamma`: shear, shape `(..., 2, ny, nx)`.
    - `padding`: zero padding in pixels (int >= 0).

    **Returns:**

    kappa_E, shape `(..., ny, nx)`.
    """
    _check_gamma("gamma", gamma)
    p = _check_padding(padding)
    gamma = jnp.asarray(gamma)
    gamma = gamma.astype(jnp.result_type(gamma, float))
    return _crop(_shear_adjoint(_pad(gamma, p), normalise=True), p)


def shape_noise_std(sigma_e: Any, n_gal: Any, geometry: FlatSky) -> jax.Array:
    """Per-pixel noise standard deviation `sigma_e / sqrt(n_gal * pixel_area_arcmin2)`.

    **Arguments:**

    - `sigma_e`: intrinsic ellipticity dispersion per component (> 0).
    - `n_gal`: source density per arcmin^2 (> 0); an array gives one value per bin.
    - `geometry`: the [`FlatSky`][jlens.FlatSky] map.

    **Returns:**

    The standard deviation (shape of the broadcast `sigma_e`, `n_gal`).
    """
    check_geometry("geometry", geometry)
    check_finite_positive("sigma_e", sigma_e)
    check_finite_positive("n_gal", n_gal)
    sigma_e = jnp.asarray(sigma_e, jnp.result_type(sigma_e, float))
    n_gal = jnp.asarray(n_gal, jnp.result_type(n_gal, float))
    std = sigma_e / jnp.sqrt(n_gal * geometry.pixel_area_arcmin2)
    return jnp.where((sigma_e > 0) & (n_gal > 0), std, jnp.nan)


def add_noise(key: jax.Array, maps: Any, std: Any) -> jax.Array:
    """`maps + std * N(0, 1)`, with `std` broadcast against `maps` (e.g. `(n_bins, 1, 1)`)."""
    maps = jnp.asarray(maps)
    maps = maps.astype(jnp.result_type(maps, float))
    check_finite_positive("std", std, allow_zero=True)
    std = jnp.asarray(std, maps.dtype)
    std = std.reshape((1,) * (maps.ndim - std.ndim) + std.shape)
    return maps + std * jax.random.normal(key, maps.shape, maps.dtype)


def _lift(mask: Any, ndim: int) -> jax.Array:
    """`mask` with leading unit axes up to `ndim` (explicit broadcasting)."""
    mask = jnp.asarray(mask)
    return mask.reshape((1,) * (ndim - mask.ndim) + mask.shape)


def _array_like(value: Any) -> bool:
    """Whether `value` is data (not a placeholder JAX puts in a PyTree while unflattening)."""
    return isinstance(value, int | float | list | tuple | np.ndarray | jax.Array)


def _check_mask(name: str, mask: Any, shape: tuple[int, int]) -> Any:
    if mask is None or not _array_like(mask):
        return mask
    if tuple(np.shape(mask)) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {np.shape(mask)}")
    if is_concrete(mask):
        values = np.asarray(mask, np.float64)
        if not np.all(np.isfinite(values) & (values >= 0) & (values <= 1)):
            raise ValueError(f"{name} must have values in [0, 1]")
    return jnp.asarray(mask)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ShearOperator:
    """`A kappa = mask * gamma(kappa)`: convergence `(ny, nx)` to observed shear `(2, ny, nx)`.

    A forward/adjoint pair in the form jscore's samplers take (`op.forward`, `op.adjoint`), with the
    per-pixel `noise_std` of each shear component. `adjoint` is the exact transpose of `forward`
    (dot-product test in the tests); with `padding > 0` the convergence is zero-padded, sheared and
    cropped (`A = C S P`, `A^T = P^T S^T C^T`, i.e. crop-pad swapped). Without mask and padding,
    `A^T A` is the identity except on the mean and the Nyquist lines; the Kaiser-Squires estimate
    is [`kaiser_squires`][jlens.kaiser_squires].

    **Arguments:**

    - `geometry`: the [`FlatSky`][jlens.FlatSky] map (static).
    - `mask`: weights in [0, 1] of shape `(npix, npix)` (1 observed, 0 masked), or None.
    - `noise_std`: shape-noise std per pixel and component (scalar or `(npix, npix)`), or None; see
      [`shape_noise_std`][jlens.shape_noise_std].
    - `padding`: zero padding in pixels (static int >= 0).
    """

    geometry: FlatSky = dataclasses.field(metadata={"static": True})
    mask: Any = None
    noise_std: Any = None
    padding: int = dataclasses.field(default=0, metadata={"static": True})

    def __post_init__(self) -> None:
        check_geometry("ShearOperator.geometry", self.geometry)
        object.__setattr__(
            self, "mask", _check_mask("ShearOperator.mask", self.mask, self.geometry.shape)
        )
        object.__setattr__(self, "padding", _check_padding(self.padding))
        if self.noise_std is not None and _array_like(self.noise_std):
            check_finite_positive("ShearOperator.noise_std", self.noise_std)

    def forward(self, kappa: Any) -> jax.Array:
        """`A kappa`: shape `(..., npix, npix)` to `(..., 2, npix, npix)`."""
        self.geometry.check_map("kappa", kappa)
        gamma = kappa_to_shear(kappa, padding=self.padding)
        return gamma if self.mask is None else gamma * _lift(self.mask, gamma.ndim)

    def adjoint(self, gamma: Any) -> jax.Array:
        """`A^T gamma`: shape `(..., 2, npix, npix)` to `(..., npix, npix)`."""
        _check_gamma("gamma", gamma)
        self.geometry.check_map("gamma", gamma)
        gamma = jnp.asarray(gamma)
        gamma = gamma.astype(jnp.result_type(gamma, float))
        if self.mask is not None:
            gamma = gamma * _lift(self.mask, gamma.ndim)
        p = self.padding
        return _crop(_shear_adjoint(_pad(gamma, p), normalise=False), p)

    def simulate(self, key: jax.Array, kappa: Any) -> jax.Array:
        """Noisy observed shear `A kappa + noise_std * N(0, 1)` (masked pixels stay 0)."""
        if self.noise_std is None:
            raise ValueError("ShearOperator.simulate needs noise_std")
        gamma = add_noise(key, self.forward(kappa), self.noise_std)
        return gamma if self.mask is None else gamma * _lift(self.mask > 0, gamma.ndim)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ConvergenceOperator:
    """`A kappa = mask * kappa`: an observed (noisy, masked) convergence map; `A^T = A`.

    **Arguments:**

    - `geometry`: the [`FlatSky`][jlens.FlatSky] map (static).
    - `mask`: weights in [0, 1] of shape `(npix, npix)`, or None.
    - `noise_std`: noise std per pixel (scalar, `(n_bins, 1, 1)` or a map), or None.
    """

    geometry: FlatSky = dataclasses.field(metadata={"static": True})
    mask: Any = None
    noise_std: Any = None

    def __post_init__(self) -> None:
        check_geometry("ConvergenceOperator.geometry", self.geometry)
        object.__setattr__(
            self, "mask", _check_mask("ConvergenceOperator.mask", self.mask, self.geometry.shape)
        )
        if self.noise_std is not None and _array_like(self.noise_std):
            check_finite_positive("ConvergenceOperator.noise_std", self.noise_std)

    def forward(self, kappa: Any) -> jax.Array:
        """`mask * kappa`, shape `(..., npix, npix)`."""
        self.geometry.check_map("kappa", kappa)
        kappa = jnp.asarray(kappa)
        kappa = kappa.astype(jnp.result_type(kappa, float))
        return kappa if self.mask is None else kappa * _lift(self.mask, kappa.ndim)

    def adjoint(self, y: Any) -> jax.Array:
        """`mask * y` (the operator is diagonal)."""
        return self.forward(y)

    def simulate(self, key: jax.Array, kappa: Any) -> jax.Array:
        """Noisy observed convergence `A kappa + noise_std * N(0, 1)`."""
        if self.noise_std is None:
            raise ValueError("ConvergenceOperator.simulate needs noise_std")
        return add_noise(key, self.forward(kappa), self.noise_std)
