"""Fourier-space kernels: gradient, Laplacian, inverse Laplacian, Gaussian long-range filter.

Every kernel is an array in the layout of `jpm_core.fft` (it broadcasts against `fft(field, domain)`)
and is expressed in physical units: wavenumbers in h/Mpc, so a gradient kernel has units h/Mpc and
the inverse Laplacian (Mpc/h)^2. Two discretisations are offered:

- `"spectral"`: the exact continuum symbols, `i k` and `-k^2`;
- `"finite_difference"`: the symbols of finite-difference stencils, with `w = k * cell_size`:
  gradient `i (8 sin w - sin 2w) / (6 cell)` (the 4-point, 4th-order central difference) and
  Laplacian `-sum_i (2 sin(w_i / 2) / cell_i)^2` (the 3-point, 2nd-order stencil per axis).

For even mesh sizes the spectral gradient is set to 0 on the Nyquist plane of its own axis (the
derivative of a real field there is not real); the finite-difference gradient vanishes there anyway.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from jpm_core._src._checks import check_kernel_kind, float_dtype
from jpm_core._src.config import KernelKind
from jpm_core._src.domain import Domain
from jpm_core._src.fft import wavevectors

__all__ = [
    "gaussian_filter_kernel",
    "gradient_kernel",
    "inverse_laplace_kernel",
    "laplace_kernel",
]


def _nyquist_mask(n: int, k: Array) -> Array:
    """1 except at the Nyquist frequency of an even axis of length `n`.

    `k` holds the frequencies of that axis along its single non-singleton dimension (whatever the
    layout), in `fftfreq` or `rfftfreq` order: the Nyquist frequency sits at index `n // 2`.
    """
    if n % 2:
        return jnp.ones_like(k)
    idx = np.arange(k.size).reshape(k.shape)
    return jnp.asarray(np.where(idx == n // 2, 0.0, 1.0), dtype=k.dtype)


def gradient_kernel(domain: Domain, axis: int, kind: KernelKind = "spectral") -> Array:
    """Fourier symbol of the derivative along one axis.

    **Arguments:**

    - `domain`: the `Domain`.
    - `axis`: 0, 1 or 2 for x, y, z.
    - `kind`: `"spectral"` (`i k`) or `"finite_difference"` (`i (8 sin w - sin 2w) / (6 cell)`,
      `w = k * cell`).

    **Returns:** complex array in h/Mpc, broadcastable to `domain.fourier_shape` (size 1 except
    along the Fourier-layout dimension that holds `axis`). Multiply `fft(f)` by it and `ifft` to get `df/dx_axis` in 1/(Mpc/h)
    times the units of `f`.
    """
    check_kernel_kind("kind", kind)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    return _gradient_kernel(domain, axis, kind)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _gradient_kernel(domain: Domain, axis: int, kind: str) -> Array:
    k = wavevectors(domain)[axis]
    if kind == "spectral":
        eff = k * _nyquist_mask(domain.mesh_shape[axis], k)
    else:
        cell = domain.cell_size[axis]
        w = k * cell
        eff = (8.0 * jnp.sin(w) - jnp.sin(2.0 * w)) / (6.0 * cell)
    return 1j * eff


def laplace_kernel(domain: Domain, kind: KernelKind = "spectral") -> Array:
    """Fourier symbol of the Laplacian.

    **Arguments:**

    - `domain`: the `Domain`.
    - `kind`: `"spectral"` (`-k^2`) or `"finite_difference"` (`-sum_i (2 sin(k_i cell_i / 2) /
      cell_i)^2`).

    **Returns:** real array of shape `domain.fourier_shape` in (h/Mpc)^2 (non-positive, 0 at k=0).
    """
    check_kernel_kind("kind", kind)
    return _laplace_kernel(domain, kind)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _laplace_kernel(domain: Domain, kind: str) -> Array:
    ks = wavevectors(domain)
    if kind == "spectral":
        terms = [k**2 for k in ks]
    else:
        terms = [
            (2.0 * jnp.sin(0.5 * k * c) / c) ** 2 for k, c in zip(ks, domain.cell_size, strict=True)
        ]
    return -(terms[0] + terms[1] + terms[2])


def inverse_laplace_kernel(domain: Domain, kind: KernelKind = "spectral") -> Array:
    """Fourier symbol of the inverse Laplacian, with the k=0 mode set to 0.

    **Arguments:**

    - `domain`: the `Domain`.
    - `kind`: `"spectral"` (`-1/k^2`) or `"finite_difference"` (inverse of `laplace_kernel`'s
      finite-difference form).

    **Returns:** real array of shape `domain.fourier_shape` in (Mpc/h)^2; `phi_k = kernel * delta_k`
    solves `laplacian(phi) = delta` for a zero-mean `delta`.
    """
    check_kernel_kind("kind", kind)
    return _inverse_laplace_kernel(domain, kind)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _inverse_laplace_kernel(domain: Domain, kind: str) -> Array:
    lap = _laplace_kernel(domain, kind)
    zero = lap == 0
    return jnp.where(zero, 0.0, 1.0 / jnp.where(zero, 1.0, lap))


def gaussian_filter_kernel(domain: Domain, smoothing_scale: ArrayLike) -> Array:
    """Gaussian filter `exp(-k^2 r_s^2)`, e.g. the long-range part of a force split.

    **Arguments:**

    - `domain`: the `Domain`.
    - `smoothing_scale`: `r_s` in Mpc/h (a scalar; may be traced and differentiated).

    **Returns:** real array of shape `domain.fourier_shape`, 1 at k=0.
    """
    r_s = jnp.asarray(smoothing_scale, dtype=float_dtype())
    if r_s.ndim != 0:
        raise ValueError(f"smoothing_scale must be a scalar, got shape {r_s.shape}")
    return _gaussian(domain, r_s)


@functools.partial(jax.jit, static_argnums=0)
def _gaussian(domain: Domain, r_s: Array) -> Array:
    kx, ky, kz = wavevectors(domain)
    return jnp.exp(-(kx**2 + ky**2 + kz**2) * r_s**2)
