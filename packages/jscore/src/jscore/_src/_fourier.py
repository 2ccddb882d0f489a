"""Unitary real FFTs over every axis of a field, and the geometry of the half-complex grid.

Convention used throughout jscore: the transform is unitary (``norm="ortho"``), so a field with
covariance ``C = F^H diag(P) F`` has ``E|x_hat_k|^2 = P_k`` on every mode, and white noise of pixel
variance ``v`` has the flat power map ``P = v``. Power maps live on the half-complex grid of
`numpy.fft.rfftn` (shape ``shape[:-1] + (shape[-1] // 2 + 1,)``).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import Array


def rfft_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of the half-complex grid of a real field of the given shape."""
    return (*tuple(shape[:-1]), shape[-1] // 2 + 1)


def rfftn(x: Array) -> Array:
    """Unitary real FFT over every axis of `x`."""
    return jnp.fft.rfftn(x, norm="ortho")


def irfftn(x_hat: Array, shape: tuple[int, ...]) -> Array:
    """Inverse of `rfftn` for a real field of the given shape."""
    return jnp.fft.irfftn(x_hat, s=shape, norm="ortho")


def apply_fourier_multiplier(x: Array, multiplier: Array) -> Array:
    """`x -> F^-1 diag(multiplier) F x` for a real, symmetric multiplier on the half-complex grid."""
    return irfftn(rfftn(x) * multiplier.astype(x.dtype), x.shape)


def hermitian_weights(shape: tuple[int, ...]) -> np.ndarray:
    """How many modes of the full FFT grid each entry of the half-complex grid stands for (1 or 2)."""
    n_last = shape[-1]
    weights = np.full(rfft_shape(shape), 2.0)
    weights[..., 0] = 1.0
    if n_last % 2 == 0:
        weights[..., -1] = 1.0
    return weights


def is_hermitian_symmetric(half: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Whether a half-complex map is symmetric, `m(-k) = m(k)`, on its self-conjugate columns."""
    half = np.asarray(half)
    columns = [0] + ([shape[-1] // 2] if shape[-1] % 2 == 0 else [])
    for j in columns:
        col = half[..., j]
        mirrored = col
        for axis in range(col.ndim):
            mirrored = np.roll(np.flip(mirrored, axis=axis), 1, axis=axis)
        if not np.allclose(col, mirrored, rtol=1e-6, atol=0.0):
            return False
    return True


def fourier_wavenumber(shape: tuple[int, ...], spacing: float = 1.0) -> Array:
    """Modulus of the angular wavevector `|k|` on the half-complex grid.

    **Arguments:**

    - `shape`: shape of the real field (any number of axes).
    - `spacing`: pixel size, the same along every axis (in whatever unit the field uses, e.g.
      radians for a flat-sky map or Mpc/h for a box); `k` is in radians per that unit.

    **Returns:**

    An array of shape `rfft_shape(shape)` with `|k| = 2 pi |f|`, `f` the `numpy.fft` frequencies.
    """
    shape = tuple(int(n) for n in shape)
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape!r}")
    if not spacing > 0:
        raise ValueError(f"spacing must be positive, got {spacing!r}")
    freqs = [np.fft.fftfreq(n, d=spacing) for n in shape[:-1]]
    freqs.append(np.fft.rfftfreq(shape[-1], d=spacing))
    grids = np.meshgrid(*freqs, indexing="ij")
    k = 2.0 * np.pi * np.sqrt(sum(g**2 for g in grids))
    return jnp.asarray(k)
