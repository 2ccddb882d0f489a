"""Statistics of flat-sky maps: binned power spectra, peak counts, starlet peaks, one-point PDF.

All are jit- and vmap-able (binning edges and scales are static NumPy values). Power spectra use the
conventions of [`FlatSky`][jlens.FlatSky]: `P(ell) = Re(m_i_hat conj(m_j_hat)) pixel^2 / npix^2`,
averaged over the modes with `edge_lo <= |ell| < edge_hi`.

Mask: maps are multiplied by the mask and the spectra divided by `f_sky = mean(mask^2)` (the simple
pseudo-C_ell correction: unbiased for white spectra, biased by mode coupling for steep ones, and
correlating neighbouring bins; no deconvolution of the mask's mode-coupling matrix is done).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jlens._src.geometry import FlatSky, check_geometry

__all__ = [
    "binned_theory_cl",
    "find_peaks",
    "map_power_spectrum",
    "mode_counts",
    "one_point_pdf",
    "peak_counts",
    "starlet_peak_counts",
    "starlet_transform",
]


def _check_edges(name: str, edges: Any) -> np.ndarray:
    if isinstance(edges, jax.core.Tracer):
        raise TypeError(f"{name} must be concrete (static)")
    edges = np.asarray(edges, np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)):
        raise ValueError(f"{name} must be a 1-d array of >= 2 finite edges, got {edges}")
    if not np.all(np.diff(edges) > 0):
        raise ValueError(f"{name} must be increasing, got {edges}")
    return edges


def _bin_index(geometry: FlatSky, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin index of every half-plane mode (-1 outside) and the number of full-plane modes per bin."""
    ell = geometry.ell_grid_numpy()
    index = np.searchsorted(edges, ell, side="right") - 1
    index = np.where((ell > 0) & (index >= 0) & (index < edges.size - 1), index, -1)
    weights = geometry.rfft_weights()
    counts = np.array([weights[index == b].sum() for b in range(edges.size - 1)])
    return index, counts


def mode_counts(geometry: FlatSky, ell_edges: Any) -> np.ndarray:
    """Number of Fourier modes of the map in each multipole bin (full plane)."""
    check_geometry("geometry", geometry)
    return _bin_index(geometry, _check_edges("ell_edges", ell_edges))[1]


def _binning_matrix(geometry: FlatSky, edges: np.ndarray, name: str) -> tuple[np.ndarray, ...]:
    geometry.check_ell_range(name, edges[-1])
    index, counts = _bin_index(geometry, edges)
    if np.any(counts == 0):
        empty = edges[:-1][counts == 0]
        raise ValueError(
            f"{name} has bins without any mode of the map (lower edges {empty}); the fundamental "
            f"multipole is {geometry.ell_fundamental:.6g}: widen the bins"
        )
    weights = geometry.rfft_weights()
    matrix = np.zeros((edges.size - 1, index.size))
    flat = index.reshape(-1)
    inside = flat >= 0
    matrix[flat[inside], np.nonzero(inside)[0]] = weights.reshape(-1)[inside]
    matrix /= counts[:, None]
    ell = geometry.ell_grid_numpy().reshape(-1)
    return matrix, matrix @ ell


def map_power_spectrum(
    maps: Any,
    geometry: FlatSky,
    ell_edges: Any,
    *,
    mask: Any = None,
    other: Any = None,
) -> tuple[np.ndarray, jax.Array]:
    """Binned auto and cross angular power spectra of flat-sky maps.

    **Arguments:**

    - `maps`: one map `(npix, npix)` or a stack `(n, npix, npix)` (e.g. tomographic bins).
    - `geometry`: the [`FlatSky`][jlens.FlatSky] of the maps.
    - `ell_edges`: increasing multipole edges (static), every bin holding at least one mode and the
      last edge at most the Nyquist multipole (else `ValueError`: the range would alias).
    - `mask`: weights `(npix, npix)` in [0, 1], or None; the f_sky correction of the module.
    - `other`: a second map or stack for cross spectra between two sets; None for `maps` with
      itself.

    **Returns:**

    `(ell_eff, cl)`: the mean |ell| of the modes of each bin `(n_ell,)` and the spectra, shape
    `(n_ell,)` for single maps or `(n, m, n_ell)` for stacks (all pairs).
    """
    check_geometry("geometry", geometry)
    geometry.check_map("maps", maps)
    edges = _check_edges("ell_edges", ell_edges)
    matrix, ell_eff = _binning_matrix(geometry, edges, "ell_edges")
    single = np.ndim(maps) == 2 and (other is None or np.ndim(other) == 2)
    a = jnp.asarray(maps)
    a = a.astype(jnp.result_type(a, float))
    b = a if other is None else jnp.asarray(other, a.dtype)
    if other is not None:
        geometry.check_map("other", other)
    a = a.reshape((-1, *geometry.shape))
    b = b.reshape((-1, *geometry.shape))
    fsky = 1.0
    if mask is not None:
        if np.shape(mask) != geometry.shape:
            raise ValueError(f"mask must have shape {geometry.shape}, got {np.shape(mask)}")
        mask = jnp.asarray(mask, a.dtype)
        a, b = a * mask[None], b * mask[None]
        fsky = jnp.mean(mask**2)
    cl = _binned_cross(a, b, jnp.asarray(matrix, a.dtype), geometry) / fsky
    return ell_eff, (cl[0, 0] if single else cl)


@functools.partial(jax.jit, static_argnames="geometry")
def _binned_cross(a, b, matrix, geometry):
    ah = jnp.fft.rfft2(a)
    bh = jnp.fft.rfft2(b)
    power = (
        jnp.real(ah[:, None] * jnp.conj(bh[None, :])) * (geometry.pixel_rad / geometry.npix) ** 2
    )
    flat = power.reshape((*power.shape[:2], -1))
    return jnp.einsum("ijm,bm->ijb", flat, matrix)


def binned_theory_cl(geometry: FlatSky, ell_edges: Any, ell: Any, cl: Any) -> jax.Array:
    """Theory spectra averaged over the map's modes in each bin, as `map_power_spectrum` bins.

    **Arguments:**

    - `geometry`, `ell_edges`: as [`map_power_spectrum`][jlens.map_power_spectrum].
    - `ell`: increasing multipoles of the theory `(n_ell,)` covering the bins.
    - `cl`: theory, shape `(..., n_ell)`; interpolated linearly in log ell.

    **Returns:**

    Shape `(..., n_bins)`.
    """
    check_geometry("geometry", geometry)
    edges = _check_edges("ell_edges", ell_edges)
    matrix, _ = _binning_matrix(geometry, edges, "ell_edges")
    cl = jnp.asarray(cl)
    cl = cl.astype(jnp.result_type(cl, float))
    grid = geometry.ell_grid_numpy().reshape(-1)
    log_grid = jnp.asarray(np.log(np.where(grid > 0, grid, 1.0)), cl.dtype)
    log_ell = jnp.log(jnp.asarray(ell, cl.dtype))
    flat = cl.reshape(-1, cl.shape[-1])
    values = jax.vmap(lambda c: jnp.interp(log_grid, log_ell, c))(flat)
    return (values @ jnp.asarray(matrix.T, cl.dtype)).reshape((*cl.shape[:-1], edges.size - 1))


# --- peaks ------------------------------------------------------------------------------------


def find_peaks(image: Any, *, periodic: bool = True) -> jax.Array:
    """Boolean map of local maxima: pixels strictly above their 8 neighbours.

    With `periodic=False` the outermost row and column of pixels are never peaks.
    """
    image = jnp.asarray(image)
    if image.ndim < 2:
        raise ValueError(f"image must have shape (..., ny, nx), got {image.shape}")
    peak = jnp.ones(image.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            peak = peak & (image > jnp.roll(image, (dy, dx), axis=(-2, -1)))
    if not periodic:
        border = np.zeros(image.shape[-2:], bool)
        border[1:-1, 1:-1] = True
        peak = peak & jnp.broadcast_to(border, peak.shape)
    return peak


def _histogram(values: jax.Array, weights: jax.Array, edges: np.ndarray) -> jax.Array:
    edges = jnp.asarray(edges, values.dtype).reshape((1,) * values.ndim + (-1,))
    inside = (values[..., None] >= edges[..., :-1]) & (values[..., None] < edges[..., 1:])
    return jnp.sum(jnp.where(inside, weights[..., None], 0.0), axis=(-3, -2))


def peak_counts(image: Any, edges: Any, *, mask: Any = None, periodic: bool = True) -> jax.Array:
    """Histogram of the heights of local maxima (8-neighbour peaks) of a map.

    **Arguments:**

    - `image`: map(s), shape `(..., ny, nx)`.
    - `edges`: increasing bin edges of the peak height (static), in the map's units (divide the map
      by its noise std first for signal-to-noise bins).
    - `mask`: 0/1 `(ny, nx)`: peaks are counted only where mask > 0; None for all.
    - `periodic`: whether the map wraps around (else border pixels are never peaks).

    **Returns:**

    Counts per bin, shape `(..., n_bins)` (floats).
    """
    edges = _check_edges("edges", edges)
    image = jnp.asarray(image)
    image = image.astype(jnp.result_type(image, float))
    weights = find_peaks(image, periodic=periodic).astype(image.dtype)
    if mask is not None:
        weights = weights * jnp.broadcast_to(jnp.asarray(mask) > 0, weights.shape)
    return _histogram(image, weights, edges)


_B3 = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def starlet_transform(image: Any, n_scales: int) -> jax.Array:
    """Isotropic undecimated wavelet (starlet) transform with the B3-spline (Starck et al. 2007).

    `c_0 = image`, `c_{j+1} = h_j * c_j` (separable `[1, 4, 6, 4, 1] / 16` with `2^j - 1` holes,
    periodic boundaries), `w_j = c_j - c_{j+1}`. The planes sum back to the image exactly.

    **Arguments:**

    - `image`: map(s), shape `(..., ny, nx)`.
    - `n_scales`: number of wavelet planes (static int >= 1).

    **Returns:**

    Shape `(..., n_scales + 1, ny, nx)`: `w_0 ... w_{n_scales - 1}` then the coarse plane.
    """
    if isinstance(n_scales, bool) or not isinstance(n_scales, int) or n_scales < 1:
        raise ValueError(f"n_scales must be an int >= 1, got {n_scales!r}")
    image = jnp.asarray(image)
    if image.ndim < 2:
        raise ValueError(f"image must have shape (..., ny, nx), got {image.shape}")
    image = image.astype(jnp.result_type(image, float))
    c = image
    planes = []
    for j in range(n_scales):
        step = 2**j
        smooth = c
        for axis in (-2, -1):
            smooth = sum(_B3[i] * jnp.roll(smooth, (i - 2) * step, axis=axis) for i in range(5))
        planes.append(c - smooth)
        c = smooth
    planes.append(c)
    return jnp.stack(planes, axis=-3)


def starlet_peak_counts(
    image: Any, n_scales: int, edges: Any, *, mask: Any = None, normalise: bool = False
) -> jax.Array:
    """Peak counts of each starlet wavelet plane (the coarse plane is left out).

    **Arguments:**

    - `image`: map(s), shape `(..., ny, nx)`.
    - `n_scales`: number of wavelet planes (static).
    - `edges`: peak-height edges, shared `(n_edges,)` or per scale `(n_scales, n_edges)` (static).
    - `mask`: 0/1 `(ny, nx)` or None.
    - `normalise`: divide each plane by its own standard deviation first (signal-to-noise edges).

    **Returns:**

    Shape `(..., n_scales, n_edges - 1)`.
    """
    edges = np.asarray(edges, np.float64)
    per_scale = edges if edges.ndim == 2 else np.broadcast_to(edges, (n_scales, edges.size))
    if per_scale.shape[0] != n_scales:
        raise ValueError(
            f"edges must have shape (n_edges,) or ({n_scales}, n_edges), got {edges.shape}"
        )
    planes = starlet_transform(image, n_scales)[..., :-1, :, :]
    if normalise:
        planes = planes / jnp.std(planes, axis=(-2, -1), keepdims=True)
    counts = [peak_counts(planes[..., j, :, :], per_scale[j], mask=mask) for j in range(n_scales)]
    return jnp.stack(counts, axis=-2)


def one_point_pdf(image: Any, edges: Any, *, mask: Any = None, density: bool = True) -> jax.Array:
    """Histogram of pixel values (one-point PDF).

    **Arguments:**

    - `image`: map(s), shape `(..., ny, nx)`.
    - `edges`: increasing bin edges (static).
    - `mask`: 0/1 `(ny, nx)`: only pixels with mask > 0 count; None for all.
    - `density`: normalise to a probability density over all counted pixels (values outside the
      edges count in the normalisation), else raw counts.

    **Returns:**

    Shape `(..., n_bins)`.
    """
    edges = _check_edges("edges", edges)
    image = jnp.asarray(image)
    image = image.astype(jnp.result_type(image, float))
    weights = jnp.ones(image.shape, image.dtype)
    if mask is not None:
        weights = weights * jnp.broadcast_to(jnp.asarray(mask) > 0, weights.shape)
    counts = _histogram(image, weights, edges)
    if not density:
        return counts
    total = jnp.sum(weights, axis=(-2, -1))[..., None]
    widths = jnp.asarray(np.diff(edges), image.dtype).reshape((1,) * (counts.ndim - 1) + (-1,))
    return counts / (total * widths)
