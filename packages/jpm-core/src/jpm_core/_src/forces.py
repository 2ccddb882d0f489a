"""Particle-mesh forces: paint, solve Poisson in Fourier space, differentiate, read back."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jpm_core._src.domain import Domain
from jpm_core._src.fft import _check_domain, _float_dtype, fft, ifft, wavenumbers
from jpm_core._src.kernels import (
    KernelKind,
    gaussian_filter_kernel,
    gradient_kernel,
    inverse_laplace_kernel,
)
from jpm_core._src.painting import Scheme, _check_positions, paint, read

__all__ = ["pm_forces", "potential_k"]

PotentialFilter = Callable[[Array], ArrayLike]


def potential_k(
    delta: ArrayLike,
    domain: Domain,
    *,
    laplace: KernelKind = "spectral",
    smoothing_scale: ArrayLike | None = None,
    potential_filter: PotentialFilter | None = None,
) -> Array:
    """Fourier coefficients of the potential `phi` solving `laplacian(phi) = delta` (k=0 set to 0).

    **Arguments:**

    - `delta`: real density contrast, shape `domain.mesh_shape`.
    - `domain`: the `Domain`.
    - `laplace`: `"spectral"` (`phi_k = -delta_k / k^2`) or `"finite_difference"`.
    - `smoothing_scale`: optional `r_s` in Mpc/h; multiplies by `exp(-k^2 r_s^2)` (long-range part).
    - `potential_filter`: optional callable `kmag -> multiplier`, `kmag` the array of `|k|` in h/Mpc
      of shape `domain.fourier_shape`; its result (real or complex, that shape or a scalar)
      multiplies `phi_k`. It may close over traced parameters; gradients flow through it.

    **Returns:** complex array of shape `domain.fourier_shape`, in (Mpc/h)^2 times the units of
    `delta`, in the layout of `jpm_core.fft`.
    """
    phi_k = fft(delta, domain) * inverse_laplace_kernel(domain, laplace)
    if smoothing_scale is not None:
        phi_k = phi_k * gaussian_filter_kernel(domain, smoothing_scale)
    if potential_filter is not None:
        kmag = wavenumbers(domain)
        multiplier = jnp.asarray(potential_filter(kmag))
        if multiplier.ndim not in (0, 3):
            raise ValueError(
                "potential_filter must return a scalar or an array broadcastable to "
                f"{domain.fourier_shape}, got shape {tuple(multiplier.shape)}"
            )
        phi_k = phi_k * multiplier
    return phi_k


def pm_forces(
    positions: ArrayLike,
    domain: Domain,
    weights: ArrayLike | None = None,
    *,
    kernel: KernelKind = "spectral",
    laplace: KernelKind = "spectral",
    scheme: Scheme = "cic",
    smoothing_scale: ArrayLike | None = None,
    potential_filter: PotentialFilter | None = None,
    mean_density: ArrayLike | None = None,
) -> Array:
    """Particle-mesh force `-grad(phi)` at the particles, with `laplacian(phi) = delta`.

    Steps: paint the particles (`scheme`), form the density contrast
    `delta = rho / mean_density - 1`, solve `phi_k = -delta_k / k^2` (or its finite-difference
    form), apply the optional Gaussian long-range filter and `potential_filter`, differentiate
    (`kernel`), inverse-transform and read back at the particles with the same scheme.

    No cosmology enters: the gravitational acceleration of FastPM-style equations of motion,
    `dp/da = F / (a^2 E(a))`, is `F = (3 Omega_m / 2) * pm_forces(...)`; the caller multiplies.
    The returned vector points towards overdensities (attractive).

    **Arguments:**

    - `positions`: array `(..., 3)` in mesh units (cells), see `jpm_core.paint`.
    - `domain`: the `Domain`.
    - `weights`: optional particle weights, shape `positions.shape[:-1]` or scalar.
    - `kernel`: gradient kernel, `"spectral"` (`i k`) or `"finite_difference"` (4-point).
    - `laplace`: Laplacian used in the Poisson solve, `"spectral"` or `"finite_difference"`.
    - `scheme`: mass-assignment scheme for paint and read, `"cic"` or `"tsc"`.
    - `smoothing_scale`: optional Gaussian long-range filter scale `r_s` in Mpc/h.
    - `potential_filter`: optional hook `kmag -> multiplier` applied to `phi_k` (see
      `potential_k`); to make it depend on the scale factor, close over it:
      `potential_filter=lambda k: f(params, k, a)`.
    - `mean_density`: mean painted weight per cell; default `sum(weights) / n_cells` (for unit
      weights, `n_particles / n_cells`).

    **Returns:** array of the shape of `positions`, the force in mesh units (cells) per axis, i.e.
    the physical gradient (in Mpc/h, for `delta` dimensionless) divided by the cell size along
    that axis, so it is consistent with positions in cells.
    """
    _check_domain(domain)
    positions = _check_positions(positions)
    rho = paint(positions, domain, weights, scheme=scheme)
    if mean_density is None:
        if weights is None:
            mean_density = math.prod(positions.shape[:-1]) / domain.n_cells
        else:
            mean_density = rho.sum() / domain.n_cells
    delta = rho / mean_density - 1.0
    phi_k = potential_k(
        delta,
        domain,
        laplace=laplace,
        smoothing_scale=smoothing_scale,
        potential_filter=potential_filter,
    )
    dtype = _float_dtype()
    components = []
    for axis in range(3):
        grad_axis = ifft(gradient_kernel(domain, axis, kernel) * phi_k, domain)
        components.append(-grad_axis / jnp.asarray(domain.cell_size[axis], dtype))
    # one read of the 3-component mesh: the stencil is computed once
    return read(jnp.stack(components, axis=-1), positions, domain, scheme=scheme)
