"""Flat-sky map geometry: square maps of `npix x npix` square pixels, periodic, radians internally.

Fourier conventions (used by every map-level function of jlens): a map `m[y, x]` (axis 0 is y, axis 1
is x, as jscore) has the discrete transform `m_hat = rfft2(m)`; the multipole of mode `(i, j)` is
`ell = 2 pi (fy_i, fx_j) / pixel_size` with `fftfreq`/`rfftfreq` frequencies, so the fundamental is
`2 pi / field` and the Nyquist multipole is `pi / pixel_size`. The power of a map is
`P(ell) = |m_hat|^2 pixel_size^2 / npix^2` (= `C_ell` in expectation for a field with spectrum C).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FlatSky"]

ARCMIN = math.pi / (180.0 * 60.0)
DEGREE = math.pi / 180.0


@dataclasses.dataclass(frozen=True)
class FlatSky:
    """A square, periodic flat-sky map of `npix x npix` square pixels (static under `jit`).

    Give exactly one of `pixel_arcmin` (side of a pixel in arcmin) or `field_deg` (side of the map
    in degrees). It is a PyTree without leaves, so it can be passed to jitted functions.

    **Arguments:**

    - `npix`: pixels on a side (int >= 2; even sizes make the Nyquist mode real).
    - `field_deg`: side of the map in degrees (> 0), or None.
    - `pixel_arcmin`: side of a pixel in arcmin (> 0), or None.

    **Raises:**

    `ValueError` for a non-positive size or when both or neither of the sizes are given.
    """

    npix: int
    field_deg: float | None = None
    pixel_arcmin: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.npix, bool) or not isinstance(self.npix, int | np.integer):
            raise TypeError(f"FlatSky.npix must be an int, got {self.npix!r}")
        if self.npix < 2:
            raise ValueError(f"FlatSky.npix must be >= 2, got {self.npix!r}")
        object.__setattr__(self, "npix", int(self.npix))
        if (self.field_deg is None) == (self.pixel_arcmin is None):
            raise ValueError(
                "FlatSky needs exactly one of field_deg or pixel_arcmin, got "
                f"field_deg={self.field_deg!r}, pixel_arcmin={self.pixel_arcmin!r}"
            )
        name, value = (
            ("field_deg", self.field_deg)
            if self.field_deg is not None
            else ("pixel_arcmin", self.pixel_arcmin)
        )
        if isinstance(value, jax.core.Tracer | bool):
            raise TypeError(f"FlatSky.{name} must be a Python number (static), got {value!r}")
        number = float(value)
        if not (math.isfinite(number) and number > 0):
            raise ValueError(f"FlatSky.{name} must be finite and > 0, got {value!r}")
        if self.field_deg is not None:
            object.__setattr__(self, "field_deg", number)
            object.__setattr__(self, "pixel_arcmin", None)
        else:
            object.__setattr__(self, "pixel_arcmin", number)

    # --- sizes -------------------------------------------------------------------------------
    @property
    def field_rad(self) -> float:
        """Side of the map in radians."""
        if self.field_deg is not None:
            return self.field_deg * DEGREE
        return self.npix * self.pixel_arcmin * ARCMIN

    @property
    def pixel_rad(self) -> float:
        """Side of a pixel in radians."""
        return self.field_rad / self.npix

    @property
    def pixel_area_arcmin2(self) -> float:
        """Area of a pixel in arcmin^2."""
        return (self.pixel_rad / ARCMIN) ** 2

    @property
    def shape(self) -> tuple[int, int]:
        """`(npix, npix)`."""
        return (self.npix, self.npix)

    @property
    def ell_fundamental(self) -> float:
        """The smallest non-zero multipole of the grid, 2 pi / field."""
        return 2.0 * math.pi / self.field_rad

    @property
    def ell_nyquist(self) -> float:
        """The Nyquist multipole pi / pixel_size: larger multipoles alias onto the grid."""
        return math.pi / self.pixel_rad

    @property
    def ell_max(self) -> float:
        """The largest |ell| on the grid (the corner, sqrt(2) times the Nyquist multipole)."""
        return math.sqrt(2.0) * self.ell_nyquist

    # --- grids -------------------------------------------------------------------------------
    def ell_vectors(self, dtype: Any = None) -> tuple[jax.Array, jax.Array]:
        """`(ell_y, ell_x)` broadcastable to the half-plane grid `(npix, npix // 2 + 1)` of rfft2."""
        dtype = dtype or jnp.result_type(float)
        d = self.pixel_rad / (2.0 * math.pi)
        ly = jnp.asarray(np.fft.fftfreq(self.npix, d), dtype)[:, None]
        lx = jnp.asarray(np.fft.rfftfreq(self.npix, d), dtype)[None, :]
        return ly, lx

    def ell_grid_numpy(self) -> np.ndarray:
        """|ell| on the half-plane grid as a float64 NumPy array."""
        d = self.pixel_rad / (2.0 * math.pi)
        ly = np.fft.fftfreq(self.npix, d)[:, None]
        lx = np.fft.rfftfreq(self.npix, d)[None, :]
        return np.sqrt(ly**2 + lx**2)

    def ell_grid(self, dtype: Any = None) -> jax.Array:
        """|ell| on the half-plane grid `(npix, npix // 2 + 1)` of `rfft2` (0 at the zero mode)."""
        ly, lx = self.ell_vectors(dtype)
        return jnp.sqrt(ly**2 + lx**2)

    def rfft_weights(self) -> np.ndarray:
        """Multiplicity of each half-plane mode in the full plane (2, or 1 on the real columns)."""
        weights = np.full((self.npix, self.npix // 2 + 1), 2.0)
        weights[:, 0] = 1.0
        if self.npix % 2 == 0:
            weights[:, -1] = 1.0
        return weights

    # --- checks ------------------------------------------------------------------------------
    def check_map(self, name: str, maps: Any, *, batch: bool = True) -> None:
        """`ValueError` unless `maps` has shape `(..., npix, npix)` (or exactly that if not `batch`)."""
        shape = tuple(np.shape(maps))
        if len(shape) < 2 or shape[-1] != shape[-2]:
            raise ValueError(f"{name} must be square maps of shape (..., n, n), got shape {shape}")
        if shape[-2:] != self.shape or (not batch and len(shape) != 2):
            raise ValueError(
                f"{name} must have shape {'(..., ) + ' if batch else ''}{self.shape} for {self!r}, "
                f"got shape {shape}"
            )

    def check_ell_range(self, name: str, ell: Any) -> None:
        """`ValueError` if a requested multipole exceeds the Nyquist multipole (it would alias)."""
        ell_top = float(np.max(np.asarray(ell, np.float64)))
        if ell_top > self.ell_nyquist * (1.0 + 1e-6):  # float32 edges at the Nyquist pass
            raise ValueError(
                f"{name} reaches ell = {ell_top:.6g}, beyond the Nyquist multipole "
                f"pi / pixel = {self.ell_nyquist:.6g} of {self!r}: it aliases; use smaller pixels "
                "or a smaller ell range"
            )

    def check_same(self, name: str, other: FlatSky) -> None:
        """`ValueError` unless `other` has the same number and size of pixels."""
        if not isinstance(other, FlatSky):
            raise TypeError(f"{name} must be a jlens.FlatSky, got {type(other).__name__}")
        if other.npix != self.npix or not math.isclose(
            other.pixel_rad, self.pixel_rad, rel_tol=1e-9
        ):
            raise ValueError(
                f"{name} = {other!r} does not match {self!r}: mismatched pixel sizes or counts "
                f"({other.pixel_rad / ARCMIN:.6g} vs {self.pixel_rad / ARCMIN:.6g} arcmin)"
            )


jax.tree_util.register_dataclass(
    FlatSky, data_fields=[], meta_fields=["npix", "field_deg", "pixel_arcmin"]
)


def check_geometry(name: str, value: Any) -> FlatSky:
    """`TypeError` unless `value` is a `FlatSky`."""
    if not isinstance(value, FlatSky):
        raise TypeError(f"{name} must be a jlens.FlatSky, got {type(value).__name__}")
    return value
