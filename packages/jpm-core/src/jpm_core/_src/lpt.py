"""Lagrangian perturbation theory (1LPT and 2LPT) initial conditions on the Lagrangian grid.

Conventions (all lengths in mesh units, i.e. cells of the `Domain`):

- One particle per cell, at the mesh node `q = (i, j, l)`; positions have shape `(nx, ny, nz, 3)`.
- `linear_delta` is the linear density contrast extrapolated to a = 1 (as `jpm_core.linear_field`
  makes it with `linear_power(cosmo, k)` at a = 1); `phi` solves `laplacian(phi) = linear_delta`.
- First order: `psi1 = -grad(phi)`; second order: `psi2 = grad(inv_laplace(delta2))` with
  `delta2 = sum_{i<j} (phi_ii phi_jj - phi_ij^2)`. The trajectory is

      x(q, a) = q + D1(a) psi1(q) + D2(a) psi2(q),

  with `D1(1) = 1` and `D2 < 0` (`D2 = -3/7 D1^2` in Einstein-de Sitter), the convention of
  `jpm_core.growth_factor_second` (Bouchet et al. 1995, Scoccimarro 1998). In a collapsing region
  (`delta2 > 0` at a peak) `D2 psi2` points along `psi1`: 2LPT makes the infall larger.
- Momentum `p = a^3 E(a) dx/da`; with `dD/da = f D / a`:

      p(q, a) = a^2 E(a) (f1(a) D1(a) psi1(q) + f2(a) D2(a) psi2(q)).
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from jpm_core._src._checks import (
    A_MAX,
    check_domain,
    check_scale_factor,
    check_shape,
    float_dtype,
    is_concrete,
)
from jpm_core._src.config import DEFAULT_FORCES, ForceConfig, check_forces
from jpm_core._src.cosmology.background import efunc
from jpm_core._src.cosmology.growth import (
    growth_factor,
    growth_factor_second,
    growth_rate,
    growth_rate_second,
)
from jpm_core._src.cosmology.parameters import Cosmology
from jpm_core._src.domain import Domain
from jpm_core._src.fft import fft, ifft
from jpm_core._src.kernels import gradient_kernel, inverse_laplace_kernel
from jpm_core._src.state import ParticleState

__all__ = ["A_MAX", "lagrangian_grid", "lpt", "lpt_displacements"]


def _check_order(order: object) -> int:
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    return int(order)


def lagrangian_grid(domain: Domain, dtype: jnp.dtype | None = None) -> Array:
    """The unperturbed particle positions: one particle on each mesh node.

    **Arguments:**

    - `domain`: the `Domain`.
    - `dtype`: floating dtype; default float32 (float64 under `jax_enable_x64`).

    **Returns:** array of shape `(nx, ny, nz, 3)` in mesh units, `grid[i, j, l] = (i, j, l)`.
    """
    check_domain("domain", domain)
    dtype = float_dtype() if dtype is None else dtype
    axes = [jnp.arange(n, dtype=dtype) for n in domain.mesh_shape]
    return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)


def lpt_displacements(
    linear_delta: ArrayLike,
    domain: Domain,
    *,
    order: int = 2,
    forces: ForceConfig = DEFAULT_FORCES,
) -> tuple[Array, ...]:
    """Unit-growth LPT displacement fields `psi1` (and `psi2`) on the Lagrangian grid.

    `psi1 = -grad(phi)` and `psi2 = grad(inv_laplace(delta2))`, with `laplacian(phi) =
    linear_delta` and `delta2 = phi_xx phi_yy + phi_xx phi_zz + phi_yy phi_zz - phi_xy^2 - phi_xz^2
    - phi_yz^2`; derivatives in Fourier space (`forces.kernel` for each derivative, so second
    derivatives are products of two gradient symbols; `forces.laplace` for the inverse
    Laplacians, `"lattice"` meaning the spectral one here, as the displacement field is a
    continuum one and the lattice symbol corrects the painting of `nbody`'s forces;
    `forces.scheme` is unused). The displacement
    at scale factor a is `D1(a) psi1 + D2(a) psi2` (see `lpt`).

    **Arguments:**

    - `linear_delta`: linear density contrast at a = 1, real array of shape `domain.mesh_shape`.
    - `domain`: the `Domain`.
    - `order`: 1 or 2 (static).
    - `forces`: a `ForceConfig`: its `kernel` (gradient symbol, see `gradient_kernel`) and
      `laplace` (Laplacian symbol) are used.

    **Returns:** a tuple of `order` arrays of shape `(nx, ny, nz, 3)` in mesh units: `(psi1,)` or
    `(psi1, psi2)`. `psi2` is dimensionless times cells like `psi1` (it is later multiplied by
    the negative `D2`).
    """
    check_domain("domain", domain)
    order = _check_order(order)
    delta = jnp.asarray(linear_delta)
    check_shape("linear_delta", delta, domain.mesh_shape)
    if not jnp.issubdtype(delta.dtype, jnp.floating):
        delta = delta.astype(float_dtype())
    forces = check_forces("forces", forces)
    return _displacements(delta, domain, order, forces.kernel, _lpt_laplace(forces))


def _lpt_laplace(forces: ForceConfig) -> str:
    """The Laplacian LPT inverts: the spectral one for `"lattice"` (a painting correction)."""
    return "spectral" if forces.laplace == "lattice" else forces.laplace


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _displacements(
    delta: Array, domain: Domain, order: int, kernel: str, laplace: str
) -> tuple[Array, ...]:
    dtype = delta.dtype
    inv_lap = inverse_laplace_kernel(domain, laplace)
    grads = [gradient_kernel(domain, axis, kernel) for axis in range(3)]
    cells = [jnp.asarray(c, dtype) for c in domain.cell_size]
    phi_k = fft(delta, domain) * inv_lap
    psi1 = jnp.stack(
        [-ifft(grads[i] * phi_k, domain).astype(dtype) / cells[i] for i in range(3)], axis=-1
    )
    if order == 1:
        return (psi1,)
    hess = {}
    for i in range(3):
        for j in range(i, 3):
            hess[i, j] = ifft(grads[i] * grads[j] * phi_k, domain).astype(dtype)
    delta2 = (
        hess[0, 0] * hess[1, 1]
        + hess[0, 0] * hess[2, 2]
        + hess[1, 1] * hess[2, 2]
        - hess[0, 1] ** 2
        - hess[0, 2] ** 2
        - hess[1, 2] ** 2
    )
    phi2_k = fft(delta2, domain) * inv_lap
    psi2 = jnp.stack(
        [ifft(grads[i] * phi2_k, domain).astype(dtype) / cells[i] for i in range(3)], axis=-1
    )
    return psi1, psi2


def _growth_coefficients(cosmo: Cosmology, a: Array, order: int) -> Array:
    """`(D1, a^2 E f1 D1[, D2, a^2 E f2 D2])` at the scalar `a`, in the dtype of `a`."""
    dtype = a.dtype
    hubble = a * a * efunc(cosmo, a).astype(dtype)
    d1 = growth_factor(cosmo, a).astype(dtype)
    coefficients = [d1, hubble * growth_rate(cosmo, a).astype(dtype) * d1]
    if order == 2:
        d2 = growth_factor_second(cosmo, a).astype(dtype)
        coefficients += [d2, hubble * growth_rate_second(cosmo, a).astype(dtype) * d2]
    return jnp.stack(coefficients)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _lpt_state(
    delta: Array,
    coefficients: Array,
    domain: Domain,
    order: int,
    kernel: str,
    laplace: str,
) -> tuple[Array, Array]:
    """Positions and momenta of `lpt` (one compiled program per configuration)."""
    displacements = _displacements(delta, domain, order, kernel, laplace)
    q = lagrangian_grid(domain, delta.dtype)
    positions = q + coefficients[0] * displacements[0]
    momenta = coefficients[1] * displacements[0]
    if order == 2:
        positions = positions + coefficients[2] * displacements[1]
        momenta = momenta + coefficients[3] * displacements[1]
    return positions, momenta


def lpt(
    cosmo: Cosmology,
    linear_delta: ArrayLike,
    domain: Domain,
    a: ArrayLike,
    *,
    order: int = 2,
    forces: ForceConfig = DEFAULT_FORCES,
) -> ParticleState:
    """Particles displaced from the Lagrangian grid by 1LPT or 2LPT, with consistent momenta.

    Positions `x = q + D1(a) psi1 + D2(a) psi2` and momenta
    `p = a^3 E(a) dx/da = a^2 E(a) (f1 D1 psi1 + f2 D2 psi2)` (the `psi2` terms only for
    `order=2`), with `psi1`, `psi2` from `lpt_displacements` and the growth functions of
    `cosmo`. The state is the exact growing-mode trajectory of linear (second-order) theory, so
    `jpm_core.nbody` can start from it at any `a`.

    **Arguments:**

    - `cosmo`: the `Cosmology` (traced; differentiable).
    - `linear_delta`: linear density contrast at a = 1, shape `domain.mesh_shape` (e.g.
      `linear_field(key, domain, lambda k: linear_power(cosmo, k))`); differentiable.
    - `domain`: the `Domain` (static).
    - `a`: scale factor of the initial conditions, a scalar in (0, 1.5] (traced allowed).
    - `order`: 1 (Zel'dovich) or 2 (static).
    - `forces`: a `ForceConfig` whose `kernel` and `laplace` are the Fourier symbols of the
      derivatives (see `lpt_displacements`); pass the one given to `nbody`.

    **Returns:** a `ParticleState` with `positions` and `momenta` of shape `(nx, ny, nz, 3)` in
    mesh units (positions not wrapped into the box) and `a` a scalar array (a NumPy scalar when
    `a` is concrete, so that it stays concrete under `jit` and `nbody` can start from it).
    """
    check_domain("domain", domain)
    order = _check_order(order)
    check_scale_factor("a", a)
    if jnp.ndim(a) != 0:
        raise ValueError(f"a must be a scalar, got shape {tuple(jnp.shape(a))}")
    delta = jnp.asarray(linear_delta)
    check_shape("linear_delta", delta, domain.mesh_shape)
    if not jnp.issubdtype(delta.dtype, jnp.floating):
        delta = delta.astype(float_dtype())
    a_array = jnp.asarray(a, delta.dtype)
    if is_concrete((cosmo, a)):
        # known numbers (even while tracing an enclosing jit): evaluate the growth functions now,
        # with their own cached compilations, rather than inlining their tables into the program
        with jax.ensure_compile_time_eval():
            coefficients = _growth_coefficients(cosmo, a_array, order)
    else:
        coefficients = _growth_coefficients(cosmo, a_array, order)
    forces = check_forces("forces", forces)
    positions, momenta = _lpt_state(
        delta, coefficients, domain, order, forces.kernel, _lpt_laplace(forces)
    )
    # A concrete `a` is stored as a NumPy scalar: it stays concrete inside `jit`, so that `nbody`
    # can read the start of its time grid from the state without an explicit `a_init`.
    a_leaf = a if isinstance(a, jax.core.Tracer) else np.asarray(a, dtype=np.dtype(delta.dtype))
    return ParticleState(positions=positions, momenta=momenta, a=a_leaf)
