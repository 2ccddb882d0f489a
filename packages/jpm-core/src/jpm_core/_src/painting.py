"""Mass assignment: paint particles onto a periodic mesh and read a mesh back at particle positions.

Conventions:

- Positions are in *mesh units* (cells): mesh node `(i, j, l)` sits at coordinate `(i, j, l)`, and
  the box is `[0, nx) x [0, ny) x [0, nz)` with periodic wrapping (any real coordinate is accepted).
  A `(..., 3)` array is accepted: `(N, 3)` particle lists or `(nx, ny, nz, 3)` Lagrangian grids;
  the leading shape is kept for weights and read values.
- Kernels (per axis, `d` the distance to a node in cells, product over the three axes):
  CIC `max(0, 1 - |d|)` (2 nodes); TSC `3/4 - d^2` for `|d| < 1/2`, `(3/2 - |d|)^2 / 2` for
  `1/2 <= |d| < 3/2` (3 nodes). Both sum to 1 over nodes, so painting conserves mass exactly.
- `read` is the transpose (adjoint) of `paint` for the same positions:
  `<paint(x, w), f> == <w, read(f, x)>`.

Gradients w.r.t. positions are the derivatives of these piecewise-polynomial kernels (CIC is
continuous with kinks at nodes; TSC is continuously differentiable).

The stencil kernels themselves live in `_src/stencil.py` (shared with the distributed painting and
reading of `_src/halo.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jpm_core._src._checks import (
    check_domain,
    check_positions,
    check_scheme,
    check_shape,
    check_weights,
)
from jpm_core._src.config import Scheme
from jpm_core._src.domain import Domain
from jpm_core._src.fft import wavevectors
from jpm_core._src.halo import (
    check_distributed_particles,
    distributed_paint,
    distributed_read,
    stray_message,
)
from jpm_core._src.halo import (
    stray_particles as _stray_particles,
)
from jpm_core._src.stencil import paint_flat, read_flat

__all__ = ["compensate_window", "mass_assignment_window", "paint", "read", "stray_particles"]


def _check_distributed(shape: tuple[int, ...], domain: Domain) -> None:
    if domain.halo < 1:
        raise ValueError(
            f"halo={domain.halo} is too small on device_grid={domain.device_grid!r}: the CIC/TSC "
            "stencils reach one node beyond their cell, so the halo must be at least 1 cell plus "
            "the largest distance (in cells) a particle moves away from its device's slab; "
            "pass Domain(..., halo=...)"
        )
    check_distributed_particles("positions", shape, domain)


def _check_no_strays(positions: Array, domain: Domain, order: int, what: str) -> None:
    """Eager calls (concrete positions): raise before painting/reading if any particle strays."""
    if isinstance(positions, jax.core.Tracer):
        return  # inside jit: the result is poisoned with NaN instead (see Domain.on_stray)
    count = int(_stray_particles(positions, domain, order))
    if count:
        raise ValueError(stray_message(count, domain, what))


def stray_particles(positions: ArrayLike, domain: Domain, scheme: Scheme = "cic") -> Array:
    """Count the particles that distributed `paint`/`read` cannot assign (0 on one device).

    On a device grid the particles of the block `positions[i*a/px:(i+1)*a/px,
    j*b/py:(j+1)*b/py]` live on device `(i, j)`, whose slab of the mesh is
    `[i*nx/px, (i+1)*nx/px) x [j*ny/py, (j+1)*ny/py)` (periodically); a particle whose stencil
    reaches further than `domain.halo` cells outside that slab is a stray. Use it to choose the halo
    (or to watch a run from an observer) before `paint`/`read` would stop.

    **Arguments:**

    - `positions`: array `(a, b, ..., 3)` in mesh units; on a device grid its first two axes are
      split over the devices, like the `(nx, ny, nz, 3)` Lagrangian grid.
    - `domain`: the `Domain`.
    - `scheme`: `"cic"` or `"tsc"` (TSC reaches one more node below).

    **Returns:** int32 scalar, the number of strays (NaN positions count as strays).
    """
    check_domain("domain", domain)
    order = check_scheme("scheme", scheme)
    positions = check_positions("positions", positions)
    if not domain.is_distributed:
        return jnp.zeros((), jnp.int32)
    _check_distributed(positions.shape, domain)
    return _stray_particles(positions, domain, order)


def paint(
    positions: ArrayLike,
    domain: Domain,
    weights: ArrayLike | None = None,
    scheme: Scheme = "cic",
) -> Array:
    """Deposit particle weights onto the mesh (CIC or TSC), periodically.

    **Arguments:**

    - `positions`: array `(..., 3)` of particle positions in mesh units (cells).
    - `domain`: the `Domain`.
    - `weights`: particle weights (masses), shape `positions.shape[:-1]` or a scalar; default 1.
    - `scheme`: `"cic"` (cloud in cell) or `"tsc"` (triangular shaped cloud).

    **Returns:** array of shape `domain.mesh_shape`: the weight deposited on each node (its sum is
    the total weight). For the density contrast use `painted / painted.mean() - 1`.
    """
    check_domain("domain", domain)
    order = check_scheme("scheme", scheme)
    positions = check_positions("positions", positions)
    weights = check_weights("weights", weights, positions)
    if domain.is_distributed:
        _check_distributed(positions.shape, domain)
        _check_no_strays(positions, domain, order, "paint")
        return distributed_paint(positions, weights.astype(positions.dtype), domain, order)
    return paint_flat(positions.reshape(-1, 3), weights.reshape(-1), domain.mesh_shape, order)


def read(
    field: ArrayLike,
    positions: ArrayLike,
    domain: Domain,
    scheme: Scheme = "cic",
) -> Array:
    """Interpolate a mesh field at particle positions (CIC or TSC), periodically; adjoint of `paint`.

    **Arguments:**

    - `field`: real array of shape `domain.mesh_shape`, or `domain.mesh_shape + (C,)` for a field
      with `C` components per node (e.g. the 3 force components), read with one stencil.
    - `positions`: array `(..., 3)` of positions in mesh units (cells).
    - `domain`: the `Domain`.
    - `scheme`: `"cic"` or `"tsc"`.

    **Returns:** array of shape `positions.shape[:-1]` (or `positions.shape[:-1] + (C,)`), the
    interpolated values.
    """
    check_domain("domain", domain)
    order = check_scheme("scheme", scheme)
    positions = check_positions("positions", positions)
    field = jnp.asarray(field)
    if field.ndim == 4:
        check_shape("field", field, (*domain.mesh_shape, field.shape[-1]))
    else:
        check_shape("field", field, domain.mesh_shape)
    if domain.is_distributed:
        _check_distributed(positions.shape, domain)
        _check_no_strays(positions, domain, order, "read")
        return distributed_read(field, positions, domain, order)
    out_shape = positions.shape[:-1] + field.shape[3:]
    flat = read_flat(field, positions.reshape(-1, 3), domain.mesh_shape, order)
    return flat.reshape(out_shape)


def mass_assignment_window(domain: Domain, scheme: Scheme = "cic") -> Array:
    """Fourier transform of the mass-assignment kernel, `prod_i sinc(k_i cell_i / 2)^p`.

    `p` is 2 for CIC and 3 for TSC; `sinc(x) = sin(x) / x`. Aliasing is not modelled.

    **Arguments:**

    - `domain`: the `Domain`.
    - `scheme`: `"cic"` or `"tsc"`.

    **Returns:** real array of shape `domain.fourier_shape` (1 at k=0, positive everywhere).
    """
    order = check_scheme("scheme", scheme)
    out = None
    for k, cell in zip(wavevectors(domain), domain.cell_size, strict=True):
        # jnp.sinc(x) = sin(pi x) / (pi x); we want sin(k cell / 2) / (k cell / 2)
        w = jnp.sinc(k * cell / (2.0 * jnp.pi)) ** order
        out = w if out is None else out * w
    return out


def compensate_window(field_k: ArrayLike, domain: Domain, scheme: Scheme = "cic") -> Array:
    """Divide Fourier coefficients by the mass-assignment window (deconvolution).

    **Arguments:**

    - `field_k`: complex array of shape `domain.fourier_shape` (the output of `jpm_core.fft`).
    - `domain`: the `Domain`.
    - `scheme`: the scheme the field was painted with, `"cic"` or `"tsc"`.

    **Returns:** `field_k / mass_assignment_window(domain, scheme)`, same shape.
    """
    field_k = jnp.asarray(field_k)
    check_shape("field_k", field_k, domain.fourier_shape)
    return field_k / mass_assignment_window(domain, scheme)
