"""Log-normal convergence maps on the flat sky, tomographic and correlated across bins.

Hand-written (no JAX library does it; GLASS is NumPy on the sphere, sbi_lens hard-codes one survey and
jax-cosmo): the method is sbi_lens's and GLASS's, on jlens' periodic flat-sky grid.

1. `C_ij(ell)` from [`angular_cl`][jlens.angular_cl] on `n_ell` log-spaced multipoles from the
   fundamental to the grid's corner, interpolated (linearly in log ell) on |ell| of every mode: the
   grid spectrum `P_ij(k)` (zero at the zero mode).
2. Grid correlation functions `xi_ij = irfft2(P_ij) / pixel^2` (the exact correlation of a periodic
   field with that spectrum), the Gaussian field's `xi_G,ij = log(1 + xi_ij / (lambda_i lambda_j))`,
   and its spectrum `P_G,ij = rfft2(xi_G,ij) pixel^2` (zero mode set to 0).
3. Per mode, the symmetric matrix square root `S = V sqrt(max(w, 0)) V^T` of `P_G(k)` (eigh;
   eigenvalues below round-off count as 0, with a finite derivative);
   `g = irfft2(S rfft2(z)) / pixel` for white noise `z` (unit variance per pixel), so `g` has spectrum
   `P_G` and the per-mode correlations across bins.
4. `kappa_i = lambda_i (exp(g_i - var_i / 2) - 1)`, `var_i = sum_k P_G,ii / field^2` (the theory
   variance; `variance="empirical"` uses each map's variance, as sbi_lens does).

On the periodic grid this is exact in expectation: `kappa` has correlation
`lambda_i lambda_j (exp(xi_G,ij - c_ij) - 1)` where `c_ij` is the mean of `xi_G,ij` removed with the
zero mode, so its spectrum is `exp(-c_ij) P_ij`; `|c|` is ~1e-3 for lensing maps (a per-mille
bias, measured in the tests). Clipped negative eigenvalues (where a requested spectrum is not
log-normal realisable) are the only other departure.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jlens._src._checks import check_choice, is_concrete
from jlens._src._jpm_core_api import Cosmology, check_cosmology
from jlens._src.geometry import FlatSky, check_geometry
from jlens._src.limber import NLA, angular_cl
from jlens._src.redshift import RedshiftDistribution, as_bins

__all__ = [
    "LognormalConfig",
    "gaussian_spectra",
    "grid_cl",
    "lognormal_field",
    "lognormal_maps",
    "lognormal_maps_from_noise",
]


@dataclasses.dataclass(frozen=True)
class LognormalConfig:
    """Options of the log-normal simulator (frozen, hashable, static under `jit`).

    **Arguments:**

    - `n_ell`: number of log-spaced multipoles at which `angular_cl` is evaluated before
      interpolation on the grid (int >= 8, default 256).
    - `n_z`: redshift nodes of the Limber quadrature (`angular_cl(n_z=)`, int >= 16, default 256).
      The spectra dominate the cost of a model gradient: `n_ell=64, n_z=64` is about 4x cheaper
      than the default and changes the spectra by at most 0.5% (for HMC, where they are recomputed
      at every leapfrog step).
    - `power`: `"halofit"` (default) or `"linear"` matter power.
    - `variance`: `"theory"` (default: `var_i` from the Gaussian spectrum, so E[kappa] = 0) or
      `"empirical"` (each map's own variance, as sbi_lens).
    - `spectrum`: `"real"` (default: the Gaussian spectrum is the real part of the transform of
      `xi_G`) or `"abs"` (its modulus, as sbi_lens; the same for a positive spectrum).
    """

    n_ell: int = 256
    power: str = "halofit"
    variance: str = "theory"
    spectrum: str = "real"
    n_z: int = 256

    def __post_init__(self) -> None:
        if isinstance(self.n_ell, bool) or not isinstance(self.n_ell, int) or self.n_ell < 8:
            raise ValueError(f"LognormalConfig.n_ell must be an int >= 8, got {self.n_ell!r}")
        if isinstance(self.n_z, bool) or not isinstance(self.n_z, int) or self.n_z < 16:
            raise ValueError(f"LognormalConfig.n_z must be an int >= 16, got {self.n_z!r}")
        check_choice("LognormalConfig.power", self.power, ("halofit", "linear"))
        check_choice("LognormalConfig.variance", self.variance, ("theory", "empirical"))
        check_choice("LognormalConfig.spectrum", self.spectrum, ("real", "abs"))


Shifts = Any  # array (n_bins,) or callable cosmo -> (n_bins,)


def _resolve_shifts(name: str, shifts: Shifts, cosmo: Cosmology, n_bins: int) -> jax.Array:
    """The per-bin shifts as an array; eager `ValueError` if not > 0, NaN where traced and <= 0."""
    value = shifts(cosmo) if callable(shifts) else shifts
    value = jnp.asarray(value)
    value = value.astype(jnp.result_type(value, float))
    if value.ndim == 0:
        value = jnp.broadcast_to(value, (n_bins,))
    if value.shape != (n_bins,):
        raise ValueError(
            f"{name} must have one shift per bin, shape ({n_bins},), got {value.shape}"
        )
    if is_concrete(value):
        array = np.asarray(value, np.float64)
        if not np.all(np.isfinite(array) & (array > 0)):
            raise ValueError(f"{name} must be finite and > 0 (lambda per bin), got {array}")
    # one invalid shift poisons every map and every gradient (NaN cotangents flow to all entries)
    return value + jnp.where(jnp.all(value > 0), 0.0, jnp.nan)


def _grid_cl_from_table(
    ell_nodes: jax.Array, cl: jax.Array, geometry: FlatSky, dtype: jnp.dtype
) -> jax.Array:
    """Interpolate cl (n, n, n_ell) at the grid's |ell| (linear in log ell); 0 at the zero mode."""
    ell = geometry.ell_grid(dtype)
    safe = jnp.where(ell > 0, ell, geometry.ell_fundamental)
    log_ell = jnp.log(safe).reshape(-1)
    log_nodes = jnp.log(ell_nodes)
    n = cl.shape[0]
    flat = cl.reshape(n * n, -1)
    values = jax.vmap(lambda c: jnp.interp(log_ell, log_nodes, c))(flat)
    values = values.reshape((n, n, *ell.shape))
    return jnp.where((ell > 0)[None, None], values, 0.0)


def _ell_nodes(geometry: FlatSky, n_ell: int) -> np.ndarray:
    return np.geomspace(0.9 * geometry.ell_fundamental, 1.01 * geometry.ell_max, n_ell)


def grid_cl(
    cosmo: Cosmology,
    bins: RedshiftDistribution | Sequence[RedshiftDistribution],
    geometry: FlatSky,
    *,
    ia: NLA | None = None,
    config: LognormalConfig = LognormalConfig(),
) -> jax.Array:
    """The convergence spectra `C_ij` on the half-plane Fourier grid of `geometry`.

    **Returns:**

    Shape `(n_bins, n_bins, npix, npix // 2 + 1)`, 0 at the zero mode.
    """
    check_geometry("geometry", geometry)
    bins = as_bins(bins)
    nodes = _ell_nodes(geometry, config.n_ell)
    cl = angular_cl(cosmo, bins, nodes, power=config.power, ia=ia, n_z=config.n_z)
    return _grid_cl_from_table(jnp.asarray(nodes, cl.dtype), cl, geometry, cl.dtype)


def _gaussian_from_grid_cl(
    pk: jax.Array, shifts: jax.Array, geometry: FlatSky, spectrum: str
) -> jax.Array:
    """P_G,ij on the half-plane from P_ij on the half-plane (both in C_ell units)."""
    n = geometry.npix
    area = geometry.pixel_rad**2
    xi = jnp.fft.irfft2(pk, s=(n, n)) / area  # correlation on the grid
    xi_g = jnp.log1p(xi / (shifts[:, None, None, None] * shifts[None, :, None, None]))
    pg = jnp.fft.rfft2(xi_g) * area
    pg = jnp.abs(pg) if spectrum == "abs" else pg.real
    return pg.at[..., 0, 0].set(0.0)


def _matrix_sqrt(pg: jax.Array) -> jax.Array:
    """Per-mode symmetric square root of (n, n, ny, nx) -> (ny, nx, n, n), 0 at the zero mode."""
    n = pg.shape[0]
    mats = jnp.moveaxis(pg, (0, 1), (-2, -1))
    if n == 1:
        return jnp.sqrt(jnp.clip(mats, 0.0))
    # The zero mode is the zero matrix (degenerate eigenvalues: NaN gradients of eigh): replace it.
    filler = jnp.diag(jnp.arange(1.0, n + 1.0, dtype=pg.dtype))
    zero = jnp.zeros(mats.shape[:2], bool).at[0, 0].set(True)
    mats = jnp.where(zero[..., None, None], filler[None, None], mats)
    w, v = jnp.linalg.eigh(mats)
    # Eigenvalues at or below round-off (`n eps max(w)`: a rank-deficient mode, e.g. two bins
    # perfectly correlated, or a negative one clipped) are zero. The double `where` keeps the
    # derivative of sqrt finite there (0): a plain `sqrt(clip(w, 0))` gives inf * 0 = NaN
    # gradients although the maps are differentiable along every realisable direction.
    cutoff = n * jnp.finfo(w.dtype).eps * jnp.max(jnp.abs(w), axis=-1, keepdims=True)
    keep = w > cutoff
    sqrt_w = jnp.where(keep, jnp.sqrt(jnp.where(keep, w, 1.0)), 0.0)
    root = jnp.einsum("...ik,...k,...jk->...ij", v, sqrt_w, v)
    return jnp.where(zero[..., None, None], 0.0, root)


def gaussian_spectra(
    cosmo: Cosmology,
    bins: RedshiftDistribution | Sequence[RedshiftDistribution],
    geometry: FlatSky,
    shifts: Shifts,
    *,
    ia: NLA | None = None,
    config: LognormalConfig = LognormalConfig(),
) -> jax.Array:
    """The spectra `P_G,ij` of the Gaussian fields behind the log-normal maps, on the grid.

    **Returns:**

    Shape `(n_bins, n_bins, npix, npix // 2 + 1)` in C_ell units (steradians), zero mode 0.
    """
    check_cosmology(cosmo)
    check_geometry("geometry", geometry)
    bins = as_bins(bins)
    lam = _resolve_shifts("shifts", shifts, cosmo, len(bins))
    pk = grid_cl(cosmo, bins, geometry, ia=ia, config=config)
    return _gaussian_from_grid_cl(pk, lam.astype(pk.dtype), geometry, config.spectrum)


@functools.partial(jax.jit, static_argnames=("geometry", "config"))
def _maps(noise, pk, lam, geometry, config):
    n = geometry.npix
    pg = _gaussian_from_grid_cl(pk, lam, geometry, config.spectrum)
    root = _matrix_sqrt(pg)  # (ny, nx, nb, nb)
    z_hat = jnp.fft.rfft2(noise)  # (nb, ny, nx)
    g_hat = jnp.einsum("yxij,jyx->iyx", root.astype(z_hat.real.dtype), z_hat)
    g = jnp.fft.irfft2(g_hat, s=(n, n)) / geometry.pixel_rad
    if config.variance == "theory":
        weights = jnp.asarray(geometry.rfft_weights(), pg.dtype)
        diag = jnp.einsum("iiyx->iyx", pg)
        var = jnp.sum(diag * weights[None], axis=(-2, -1)) / geometry.field_rad**2
    else:
        var = jnp.var(g, axis=(-2, -1))
    return lam[:, None, None] * jnp.expm1(g - 0.5 * var[:, None, None])


def lognormal_field(
    noise: Any,
    cl_grid: Any,
    geometry: FlatSky,
    shifts: Any,
    *,
    config: LognormalConfig = LognormalConfig(),
) -> jax.Array:
    """Log-normal maps from white noise and given grid spectra (no cosmology: any C_ij).

    The map-making step of [`lognormal_maps`][jlens.lognormal_maps], for spectra from elsewhere
    (another Boltzmann code, a measurement, a toy power law).

    **Arguments:**

    - `noise`: unit white noise, shape `(n_bins, npix, npix)`.
    - `cl_grid`: `C_ij` on the half-plane grid, shape `(n_bins, n_bins, npix, npix // 2 + 1)`
      (as [`grid_cl`][jlens.grid_cl] returns; the zero mode is ignored).
    - `geometry`: the [`FlatSky`][jlens.FlatSky].
    - `shifts`: lambda per bin, shape `(n_bins,)` (> 0).
    - `config`: a [`LognormalConfig`][jlens.LognormalConfig] (`n_ell`, `power` unused).

    **Returns:**

    kappa, shape `(n_bins, npix, npix)`.
    """
    check_geometry("geometry", geometry)
    n_bins = np.shape(noise)[0] if np.ndim(noise) == 3 else -1
    half = (geometry.npix, geometry.npix // 2 + 1)
    if np.shape(noise) != (n_bins, *geometry.shape) or np.shape(cl_grid) != (n_bins, n_bins, *half):
        raise ValueError(
            f"noise must have shape (n_bins, {geometry.npix}, {geometry.npix}) and cl_grid "
            f"(n_bins, n_bins, {half[0]}, {half[1]}), got {np.shape(noise)} and {np.shape(cl_grid)}"
        )
    lam = _resolve_shifts("shifts", shifts, None, n_bins)
    cl_grid = jnp.asarray(cl_grid)
    dtype = jnp.result_type(cl_grid, noise, lam, float)
    pk = cl_grid.astype(dtype).at[..., 0, 0].set(0.0)
    return _maps(jnp.asarray(noise, dtype), pk, lam.astype(dtype), geometry, config)


def lognormal_maps_from_noise(
    noise: Any,
    cosmo: Cosmology,
    bins: RedshiftDistribution | Sequence[RedshiftDistribution],
    geometry: FlatSky,
    shifts: Shifts,
    *,
    ia: NLA | None = None,
    config: LognormalConfig = LognormalConfig(),
) -> jax.Array:
    """Log-normal convergence maps from given white noise (the non-centred latent field).

    The deterministic part of [`lognormal_maps`][jlens.lognormal_maps]: differentiable with respect
    to `noise`, the cosmology, the bins' parameters and the shifts (for full-field inference).

    **Arguments:**

    - `noise`: unit white noise, shape `(n_bins, npix, npix)`.
    - the others: as [`lognormal_maps`][jlens.lognormal_maps].

    **Returns:**

    kappa, shape `(n_bins, npix, npix)`.
    """
    check_cosmology(cosmo)
    check_geometry("geometry", geometry)
    if not isinstance(config, LognormalConfig):
        raise TypeError(f"config must be a jlens.LognormalConfig, got {type(config).__name__}")
    bins = as_bins(bins)
    geometry.check_map("noise", noise)
    if np.shape(noise) != (len(bins), *geometry.shape):
        raise ValueError(
            f"noise must have shape {(len(bins), *geometry.shape)}, got {np.shape(noise)}"
        )
    lam = _resolve_shifts("shifts", shifts, cosmo, len(bins))
    pk = grid_cl(cosmo, bins, geometry, ia=ia, config=config)
    noise = jnp.asarray(noise, pk.dtype)
    return _maps(noise, pk, lam.astype(pk.dtype), geometry, config)


def lognormal_maps(
    key: jax.Array,
    cosmo: Cosmology,
    bins: RedshiftDistribution | Sequence[RedshiftDistribution],
    geometry: FlatSky,
    shifts: Shifts,
    *,
    ia: NLA | None = None,
    config: LognormalConfig = LognormalConfig(),
) -> jax.Array:
    """Simulate correlated tomographic log-normal convergence maps (flat sky, periodic).

    `kappa_i = lambda_i (exp(g_i - var_i / 2) - 1)` with Gaussian fields `g` whose spectra follow
    from the Limber `C_ij` of [`angular_cl`][jlens.angular_cl] by the log-normal relation
    `xi_G = log(1 + xi / (lambda_i lambda_j))` on the grid (module docstring). The maps' mean
    spectra equal `C_ij` on the grid's modes (up to a per-mille factor, see the module) and their
    minimum is above `-lambda_i`. jit-able, vmap-able over keys and differentiable with respect to
    the cosmology.

    **Arguments:**

    - `key`: a JAX PRNG key.
    - `cosmo`: the `jpm_core.Cosmology`.
    - `bins`: one [`RedshiftDistribution`][jlens.RedshiftDistribution] or a sequence (tomography).
    - `geometry`: the [`FlatSky`][jlens.FlatSky] map.
    - `shifts`: the shift lambda_i > 0 per bin, shape `(n_bins,)` (or a scalar for all), or a
      callable `cosmo -> shifts` such as a [`ShiftTable`][jlens.ShiftTable].
    - `ia`: optional [`NLA`][jlens.NLA] intrinsic alignments in the spectra.
    - `config`: a [`LognormalConfig`][jlens.LognormalConfig].

    **Returns:**

    kappa, shape `(n_bins, npix, npix)` (axis 1 is y, axis 2 is x).

    **Raises:**

    `ValueError` for a non-positive shift (NaN maps when the shifts are traced), shifts of the
    wrong length; `TypeError` for a wrong geometry or configuration.
    """
    bins = as_bins(bins)
    check_geometry("geometry", geometry)
    dtype = jnp.result_type(*jax.tree.leaves(cosmo), float)
    noise = jax.random.normal(key, (len(bins), *geometry.shape), dtype)
    return lognormal_maps_from_noise(noise, cosmo, bins, geometry, shifts, ia=ia, config=config)


ShiftFunction = Callable[[Cosmology], jax.Array]
