"""Particle-mesh forces: paint, solve Poisson in Fourier space, differentiate, read back."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jpm_core._src._checks import check_domain, check_positions, float_dtype
from jpm_core._src.config import DEFAULT_FORCES, ForceConfig, check_forces
from jpm_core._src.domain import Domain
from jpm_core._src.fft import fft, ifft, wavenumbers
from jpm_core._src.kernels import gaussian_filter_kernel, gradient_kernel, inverse_laplace_kernel
from jpm_core._src.painting import paint, read

__all__ = ["PotentialFilter", "pm_forces", "potential_k"]

PotentialFilter = Callable[[Array, Array, Any], ArrayLike]
"""`(k, a, params) -> multiplier` of the Fourier-space potential, the one signature of the hook.

`k` is the array of wavenumber magnitudes `|k|` in h/Mpc of shape `domain.fourier_shape`, `a` the
scalar scale factor of the force evaluation, `params` the PyTree passed as `filter_params=` (to
`nbody`, `pm_forces`, `potential_k`, or as diffrax's `args` to `nbody_vector_field`'s vector field):
pass learned parameters there, not in a closure, so that every gradient method (and diffrax's
adjoints) differentiates with respect to them. The result (real or complex, a scalar or an array
of that shape) multiplies `phi_k`.
"""


def apply_potential_filter(
    phi_k: Array, domain: Domain, potential_filter: PotentialFilter, a: ArrayLike, params: Any
) -> Array:
    """`phi_k` times the filter's multiplier at `(|k|, a, params)` (its shape checked)."""
    kmag = wavenumbers(domain)
    multiplier = jnp.asarray(potential_filter(kmag, jnp.asarray(a, kmag.dtype), params))
    if multiplier.ndim not in (0, 3):
        raise ValueError(
            "potential_filter must return a scalar or an array broadcastable to "
            f"{domain.fourier_shape}, got shape {tuple(multiplier.shape)}"
        )
    return phi_k * multiplier


def _check_filter_arguments(potential_filter: object, a: object) -> None:
    if potential_filter is None:
        return
    if not callable(potential_filter):
        raise TypeError(
            "potential_filter must be a callable (k, a, params) -> multiplier, got "
            f"{type(potential_filter).__name__}"
        )
    if a is None:
        raise ValueError(
            "potential_filter needs the scale factor of the force: pass a=... (the filter is "
            "called as potential_filter(k, a, filter_params))"
        )


def potential_k(
    delta: ArrayLike,
    domain: Domain,
    *,
    forces: ForceConfig = DEFAULT_FORCES,
    smoothing_scale: ArrayLike | None = None,
    potential_filter: PotentialFilter | None = None,
    filter_params: Any = None,
    a: ArrayLike | None = None,
) -> Array:
    """Fourier coefficients of the potential `phi` solving `laplacian(phi) = delta` (k=0 set to 0).

    **Arguments:**

    - `delta`: real density contrast, shape `domain.mesh_shape`.
    - `domain`: the `Domain`.
    - `forces`: a `ForceConfig`; only its `laplace` is used here (`"spectral"`:
      `phi_k = -delta_k / k^2`, or `"finite_difference"`).
    - `smoothing_scale`: optional `r_s` in Mpc/h; multiplies by `exp(-k^2 r_s^2)` (long-range part).
    - `potential_filter`: optional `(k, a, params) -> multiplier` (see `PotentialFilter`), called
      with `k` the array of `|k|` in h/Mpc of shape `domain.fourier_shape`, the scale factor `a`
      and `filter_params`; its result (real or complex, that shape or a scalar) multiplies
      `phi_k`. Gradients flow to `filter_params` (and `a`). A NaN multiplier gives a NaN
      potential (never a finite one).
    - `filter_params`: the PyTree of parameters passed to `potential_filter` (default `None`).
    - `a`: the scale factor passed to `potential_filter`; required with a filter.

    **Returns:** complex array of shape `domain.fourier_shape`, in (Mpc/h)^2 times the units of
    `delta`, in the layout of `jpm_core.fft`.
    """
    check_domain("domain", domain)
    forces = check_forces("forces", forces)
    _check_filter_arguments(potential_filter, a)
    phi_k = fft(delta, domain) * inverse_laplace_kernel(domain, forces.laplace)
    if smoothing_scale is not None:
        phi_k = phi_k * gaussian_filter_kernel(domain, smoothing_scale)
    if potential_filter is not None:
        phi_k = apply_potential_filter(phi_k, domain, potential_filter, a, filter_params)
    return phi_k


def pm_forces(
    positions: ArrayLike,
    domain: Domain,
    weights: ArrayLike | None = None,
    *,
    forces: ForceConfig = DEFAULT_FORCES,
    smoothing_scale: ArrayLike | None = None,
    potential_filter: PotentialFilter | None = None,
    filter_params: Any = None,
    a: ArrayLike | None = None,
    mean_density: ArrayLike | None = None,
) -> Array:
    """Particle-mesh force `-grad(phi)` at the particles, with `laplacian(phi) = delta`.

    Steps: paint the particles (`forces.scheme`), form the density contrast
    `delta = rho / mean_density - 1`, solve `phi_k = -delta_k / k^2` (or its finite-difference
    form, `forces.laplace`), apply the optional Gaussian long-range filter and `potential_filter`,
    differentiate (`forces.kernel`), inverse-transform and read back at the particles with the
    same scheme.

    No cosmology enters: the gravitational acceleration of FastPM-style equations of motion,
    `dp/da = F / (a^2 E(a))`, is `F = (3 Omega_m / 2) * pm_forces(...)`; the caller multiplies.
    The returned vector points towards overdensities (attractive).

    **Arguments:**

    - `positions`: array `(..., 3)` in mesh units (cells), see `jpm_core.paint`.
    - `domain`: the `Domain`.
    - `weights`: optional particle weights, shape `positions.shape[:-1]` or scalar.
    - `forces`: the `ForceConfig` (gradient kernel, Laplacian, mass-assignment scheme).
    - `smoothing_scale`: optional Gaussian long-range filter scale `r_s` in Mpc/h.
    - `potential_filter`: optional `(k, a, params) -> multiplier` applied to `phi_k` (see
      `potential_k` and `PotentialFilter`).
    - `filter_params`: the PyTree passed to `potential_filter` as `params` (differentiable).
    - `a`: the scale factor passed to `potential_filter`; required with a filter.
    - `mean_density`: mean painted weight per cell; default `sum(weights) / n_cells` (for unit
      weights, `n_particles / n_cells`).

    **Returns:** array of the shape of `positions`, the force in mesh units (cells) per axis, i.e.
    the physical gradient (in Mpc/h, for `delta` dimensionless) divided by the cell size along
    that axis, so it is consistent with positions in cells.
    """
    check_domain("domain", domain)
    forces = check_forces("forces", forces)
    _check_filter_arguments(potential_filter, a)
    positions = check_positions("positions", positions)
    rho = paint(positions, domain, weights, scheme=forces.scheme)
    if mean_density is None:
        if weights is None:
            mean_density = math.prod(positions.shape[:-1]) / domain.n_cells
        else:
            mean_density = rho.sum() / domain.n_cells
    delta = rho / mean_density - 1.0
    phi_k = potential_k(
        delta,
        domain,
        forces=forces,
        smoothing_scale=smoothing_scale,
        potential_filter=potential_filter,
        filter_params=filter_params,
        a=a,
    )
    dtype = float_dtype()
    components = []
    for axis in range(3):
        grad_axis = ifft(gradient_kernel(domain, axis, forces.kernel) * phi_k, domain)
        components.append(-grad_axis / jnp.asarray(domain.cell_size[axis], dtype))
    # one read of the 3-component mesh: the stencil is computed once
    return read(jnp.stack(components, axis=-1), positions, domain, scheme=forces.scheme)
