"""Fourier-space kernels: gradient, Laplacian, inverse Laplacian, Gaussian long-range filter.

Every kernel is an array in the layout of `jpm_core.fft` (it broadcasts against `fft(field, domain)`)
and is expressed in physical units: wavenumbers in h/Mpc, so a gradient kernel has units h/Mpc and
the inverse Laplacian (Mpc/h)^2. The discretisations, with `w = k * cell_size`:

- `"spectral"`: the exact continuum symbols, `i k` and `-k^2`;
- `"finite_difference"`: the symbols of finite-difference stencils: gradient
  `i (8 sin w - sin 2w) / (6 cell)` (the 4-point, 4th-order central difference) and Laplacian
  `-sum_i (2 sin(w_i / 2) / cell_i)^2` (the 3-point, 2nd-order stencil per axis);
- `"lattice"` (Laplacian only): the lattice-consistent symbol of TSC with one particle per cell,
  `L = -R(k) sum_a k_a sin(w_a) / cell_a prod_{b != a} s(w_b)`, `s(w) = (3 + cos w) / 4`,
  `R = prod_b s(w_b)`. A particle near its node paints with TSC weights `3/4, 1/8, 1/8` and a
  displacement `psi` with derivative weights `-1/2, 0, 1/2`, so a displacement field paints
  `-sum_a D_a psi_a`, `D_a = i sin(w_a) / cell_a prod_{b != a} s(w_b)`, and reading the force back
  at the nodes multiplies it by `R`. With the spectral gradient `i k`, the force of a linear
  growing mode (`psi` along `k`) is then the continuum one, `psi` times the source term: painting,
  Poisson solve and read-back together are exact for linear theory at every `k` of the mesh. The
  symbol vanishes at `k = 0` and on the Nyquist points of each axis (where the lattice paints
  nothing); the inverse is 0 there.

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

from jpm_core._src._checks import check_kernel_kind, check_laplace_kind, float_dtype
from jpm_core._src.config import KernelKind, LaplaceKind
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


def laplace_kernel(domain: Domain, kind: LaplaceKind = "spectral") -> Array:
    """Fourier symbol of the Laplacian.

    **Arguments:**

    - `domain`: the `Domain`.
    - `kind`: `"spectral"` (`-k^2`), `"finite_difference"` (`-sum_i (2 sin(k_i cell_i / 2) /
      cell_i)^2`) or `"lattice"` (TSC's lattice-consistent symbol with one particle per cell,
      see the module docstring; the default of `jpm_core.ForceConfig`).

    **Returns:** real array of shape `domain.fourier_shape` in (h/Mpc)^2 (non-positive, 0 at k=0;
    `"lattice"` is also 0 on the Nyquist points of each axis).
    """
    check_laplace_kind("kind", kind)
    return _laplace_kernel(domain, kind)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _laplace_kernel(domain: Domain, kind: str) -> Array:
    ks = wavevectors(domain)
    if kind == "lattice":
        return _lattice_laplace(ks, domain.cell_size)
    if kind == "spectral":
        terms = [k**2 for k in ks]
    else:
        terms = [
            (2.0 * jnp.sin(0.5 * k * c) / c) ** 2 for k, c in zip(ks, domain.cell_size, strict=True)
        ]
    return -(terms[0] + terms[1] + terms[2])


def _lattice_laplace(ks: tuple[Array, Array, Array], cells: tuple[float, ...]) -> Array:
    """`-R(k) sum_a k_a sin(w_a) / cell_a prod_{b != a} s(w_b)` (see the module docstring)."""
    s = [(3.0 + jnp.cos(k * c)) / 4.0 for k, c in zip(ks, cells, strict=True)]
    read = s[0] * s[1] * s[2]
    paint = sum(
        k * jnp.sin(k * c) / c * (s[(i + 1) % 3] * s[(i + 2) % 3])
        for i, (k, c) in enumerate(zip(ks, cells, strict=True))
    )
    return -read * paint


_LATTICE_ZERO_RTOL = 1e-6
"""`|L| <= 1e-6 k^2` counts as a zero of the lattice symbol (k = 0, the axis Nyquist points)."""


def inverse_laplace_kernel(domain: Domain, kind: LaplaceKind = "spectral") -> Array:
    """Fourier symbol of the inverse Laplacian, with the k=0 mode set to 0.

    **Arguments:**

    - `domain`: the `Domain`.
    - `kind`: `"spectral"` (`-1/k^2`), `"finite_difference"` or `"lattice"` (inverses of
      `laplace_kernel`'s forms; `"lattice"` is also 0 where its symbol vanishes, on the axis
      Nyquist points).

    **Returns:** real array of shape `domain.fourier_shape` in (Mpc/h)^2; `phi_k = kernel * delta_k`
    solves `laplacian(phi) = delta` for a zero-mean `delta`.
    """
    check_laplace_kind("kind", kind)
    return _inverse_laplace_kernel(domain, kind)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _inverse_laplace_kernel(domain: Domain, kind: str) -> Array:
    lap = _laplace_kernel(domain, kind)
    if kind == "lattice":
        ks = wavevectors(domain)
        k2 = ks[0] ** 2 + ks[1] ** 2 + ks[2] ** 2
        zero = jnp.abs(lap) <= _LATTICE_ZERO_RTOL * k2
    else:
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
