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

Implementation: on a mesh padded by `S - 1` periodic nodes (`S` = 2 for CIC, 3 for TSC), every
particle's `S^3` stencil is one contiguous block: reading is one block gather `(N, S, S, S, C)`
contracted with the per-axis weights, painting one block scatter-add followed by folding the padding
back. Corner indices are int32 per axis.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jpm_core._src.domain import Domain
from jpm_core._src.fft import _check_domain, _check_shape, _float_dtype, wavevectors
from jpm_core._src.halo import (
    check_distributed_particles,
    distributed_paint,
    distributed_read,
    stray_message,
)
from jpm_core._src.halo import (
    stray_particles as _stray_particles,
)

__all__ = ["compensate_window", "mass_assignment_window", "paint", "read", "stray_particles"]

Scheme = Literal["cic", "tsc"]
_SCHEMES = {"cic": 2, "tsc": 3}  # scheme -> order (number of nodes per axis; window exponent)


def _check_scheme(scheme: str) -> int:
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme must be one of {tuple(_SCHEMES)}, got {scheme!r}")
    return _SCHEMES[scheme]


def _check_positions(positions: ArrayLike) -> Array:
    positions = jnp.asarray(positions)
    if positions.ndim < 1 or positions.shape[-1] != 3:
        raise ValueError(
            f"positions must have shape (..., 3) (mesh units), got shape {tuple(positions.shape)}"
        )
    if not jnp.issubdtype(positions.dtype, jnp.floating):
        positions = positions.astype(_float_dtype())
    return positions


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
    _check_domain(domain)
    order = _check_scheme(scheme)
    positions = _check_positions(positions)
    if not domain.is_distributed:
        return jnp.zeros((), jnp.int32)
    _check_distributed(positions.shape, domain)
    return _stray_particles(positions, domain, order)


def _window_weights(positions: Array, mesh_shape: tuple[int, int, int], order: int):
    """Lower corner of every particle's stencil and the per-axis weights.

    **Returns:** `(corner, w, dw)`: `corner` int32 `(P, 3)`, the first node of the `S = order`
    nodes per axis, wrapped into `[0, n)`; `w` and `dw`, `(P, 3, S)`, the kernel's weights on
    those nodes and their derivatives with respect to the coordinate (the piecewise polynomial's
    derivative; at kinks, that of the piece on the right, which is what autodiff of
    `floor`/`round` gives too).
    """
    if order == 2:
        base = jnp.floor(positions)
        d = positions - base  # in [0, 1)
        w = jnp.stack([1.0 - d, d], axis=-1)  # (P, 3, 2)
        dw = jnp.stack([-jnp.ones_like(d), jnp.ones_like(d)], axis=-1)
        first = base
    else:
        base = jnp.round(positions)
        d = positions - base  # in [-1/2, 1/2]
        w = jnp.stack([0.5 * (0.5 - d) ** 2, 0.75 - d**2, 0.5 * (0.5 + d) ** 2], axis=-1)
        dw = jnp.stack([d - 0.5, -2.0 * d, 0.5 + d], axis=-1)
        first = base - 1.0  # offsets -1, 0, 1
    n = jnp.asarray([mesh_shape], jnp.int32)
    corner = first.astype(jnp.int32) % n
    return corner, w, dw


def _outer(wx: Array, wy: Array, wz: Array) -> Array:
    """`(P, S)` x3 -> `(P, S, S, S)` tensor product per particle."""
    return wx[:, :, None, None] * wy[:, None, :, None] * wz[:, None, None, :]


# The mesh is padded by S - 1 nodes at the upper end of each axis (periodic copies), so that every
# particle's S^3 stencil is one contiguous block starting at its corner: reading is a single
# block gather `(P, S, S, S, C)` and painting a single block scatter-add followed by folding the
# padding back onto the first nodes. On CPU this is 8x faster for reading than gathering S^3
# scattered nodes with flat indices (64^3 CIC read of 3 components: 7 ms instead of 58 ms).
_GATHER = jax.lax.GatherDimensionNumbers(
    offset_dims=(1, 2, 3, 4), collapsed_slice_dims=(), start_index_map=(0, 1, 2)
)
_SCATTER = jax.lax.ScatterDimensionNumbers(
    update_window_dims=(1, 2, 3), inserted_window_dims=(), scatter_dims_to_operand_dims=(0, 1, 2)
)


def _scatter_blocks(values: Array, corner: Array, mesh_shape: tuple[int, int, int], s: int):
    """Add `(P, S, S, S)` blocks at their corners into a periodic mesh of `mesh_shape`."""
    padded = jnp.zeros(tuple(n + s - 1 for n in mesh_shape), values.dtype)
    padded = jax.lax.scatter_add(
        padded,
        corner,
        values,
        _SCATTER,
        indices_are_sorted=False,
        unique_indices=False,
        mode="promise_in_bounds",
    )
    for axis, n in enumerate(mesh_shape):  # fold the periodic padding back, axis by axis
        head = jax.lax.slice_in_dim(padded, 0, n, axis=axis)
        tail = jax.lax.slice_in_dim(padded, n, n + s - 1, axis=axis)
        wrapped = jax.lax.slice_in_dim(head, 0, s - 1, axis=axis) + tail
        padded = jax.lax.dynamic_update_slice_in_dim(head, wrapped, 0, axis=axis)
    return padded


def _gather_blocks(field: Array, corner: Array, s: int) -> Array:
    """The `(P, S, S, S, C)` blocks of a periodic `(nx, ny, nz, C)` field at the corners."""
    pad = [(0, s - 1)] * 3 + [(0, 0)]
    padded = jnp.pad(field, pad, mode="wrap")
    return jax.lax.gather(
        padded, corner, _GATHER, slice_sizes=(s, s, s, field.shape[3]), mode="promise_in_bounds"
    )


# The kernels below carry hand-written JVPs, linear in the tangents, so that JAX derives the VJPs
# by transposition: the position derivative of painting is one scatter (forward) or one gather
# (reverse) with the window's gradient, instead of the autodiff of the whole stencil computation
# (which cost 20x a paint at 64^3 on CPU). Forward and reverse mode both work.
@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _paint_kernel(flat_pos: Array, flat_w: Array, mesh_shape: tuple[int, int, int], order: int):
    corner, w, _ = _window_weights(flat_pos, mesh_shape, order)
    dtype = jnp.result_type(w.dtype, flat_w.dtype)
    w = w.astype(dtype)
    values = _outer(w[:, 0], w[:, 1], w[:, 2]) * flat_w.astype(dtype)[:, None, None, None]
    return _scatter_blocks(values, corner, mesh_shape, order)


@_paint_kernel.defjvp
def _paint_kernel_jvp(mesh_shape, order, primals, tangents):
    flat_pos, flat_w = primals
    dpos, dw_part = tangents
    corner, w, dw = _window_weights(flat_pos, mesh_shape, order)
    dtype = jnp.result_type(w.dtype, flat_w.dtype)
    w, dw = w.astype(dtype), dw.astype(dtype)
    mass = flat_w.astype(dtype)[:, None, None, None]
    kern = _outer(w[:, 0], w[:, 1], w[:, 2])
    out = _scatter_blocks(kern * mass, corner, mesh_shape, order)
    # d mesh = scatter(kern * d(weight) + weight * sum_a d(kern)/d(x_a) * dpos_a), linear in tangents
    # (P, S, S, S, 3): the kernel's gradient; contracted with dpos by one dot_general, whose
    # transpose is again one (XLA CPU ran the elementwise form's transpose 10x slower)
    grad = jnp.stack(
        [
            _outer(dw[:, 0], w[:, 1], w[:, 2]),
            _outer(w[:, 0], dw[:, 1], w[:, 2]),
            _outer(w[:, 0], w[:, 1], dw[:, 2]),
        ],
        axis=-1,
    )
    dkern = jnp.einsum("pijka,pa->pijk", grad, jnp.asarray(dpos, dtype))
    dvalues = kern * jnp.asarray(dw_part, dtype)[:, None, None, None] + mass * dkern
    return out, _scatter_blocks(dvalues, corner, mesh_shape, order)


def _contract(blocks: Array, wx: Array, wy: Array, wz: Array) -> Array:
    return jnp.einsum("pijkc,pi,pj,pk->pc", blocks, wx, wy, wz)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _read_kernel(field: Array, flat_pos: Array, mesh_shape: tuple[int, int, int], order: int):
    corner, w, _ = _window_weights(flat_pos, mesh_shape, order)
    channels = field.shape[3:]
    blocks = _gather_blocks(field.reshape(*mesh_shape, -1), corner, order)
    dtype = jnp.result_type(w.dtype, blocks.dtype)
    w = w.astype(dtype)
    out = _contract(blocks.astype(dtype), w[:, 0], w[:, 1], w[:, 2])  # (P, C)
    return out.reshape(flat_pos.shape[0], *channels)


@_read_kernel.defjvp
def _read_kernel_jvp(mesh_shape, order, primals, tangents):
    field, flat_pos = primals
    dfield, dpos = tangents
    corner, w, dw = _window_weights(flat_pos, mesh_shape, order)
    channels = field.shape[3:]
    blocks = _gather_blocks(field.reshape(*mesh_shape, -1), corner, order)
    dtype = jnp.result_type(w.dtype, blocks.dtype)
    blocks, w, dw = blocks.astype(dtype), w.astype(dtype), dw.astype(dtype)
    out = _contract(blocks, w[:, 0], w[:, 1], w[:, 2])
    # d out = gather(dfield) . kern + sum_a dpos_a * (blocks . d(kern)/d(x_a)), linear in tangents
    # one single-channel block gather per component: its transpose (the scatter-add that carries
    # the cotangent back to the mesh) is 2x faster on XLA CPU than one scatter of (S, S, S, C) blocks
    dfield = jnp.asarray(dfield, dtype).reshape(*mesh_shape, -1)
    dfield_part = jnp.concatenate(
        [
            _contract(_gather_blocks(dfield[..., c : c + 1], corner, order), *w.transpose(1, 0, 2))
            for c in range(dfield.shape[-1])
        ],
        axis=-1,
    )
    jac = jnp.stack(
        [
            _contract(blocks, dw[:, 0], w[:, 1], w[:, 2]),
            _contract(blocks, w[:, 0], dw[:, 1], w[:, 2]),
            _contract(blocks, w[:, 0], w[:, 1], dw[:, 2]),
        ],
        axis=-1,
    )  # (P, C, 3), contracted with dpos by one dot_general (so is its transpose)
    dout = dfield_part + jnp.einsum("pca,pa->pc", jac, jnp.asarray(dpos, dtype))
    shape = (flat_pos.shape[0], *channels)
    return out.reshape(shape), dout.reshape(shape)


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
    _check_domain(domain)
    order = _check_scheme(scheme)
    positions = _check_positions(positions)
    lead = positions.shape[:-1]
    if weights is None:
        weights = jnp.ones(lead, dtype=positions.dtype)
    else:
        weights = jnp.asarray(weights)
        if weights.ndim == 0:
            weights = jnp.broadcast_to(weights, lead)
        elif weights.shape != lead:
            raise ValueError(
                f"weights must be a scalar or have shape positions.shape[:-1] = {lead}, "
                f"got {tuple(weights.shape)}"
            )
    if domain.is_distributed:
        _check_distributed(positions.shape, domain)
        _check_no_strays(positions, domain, order, "paint")
        return distributed_paint(positions, weights.astype(positions.dtype), domain, order)
    return _paint_flat(positions.reshape(-1, 3), weights.reshape(-1), domain.mesh_shape, order)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _paint_flat(flat_pos: Array, flat_w: Array, mesh_shape: tuple[int, int, int], order: int):
    return _paint_kernel(flat_pos, flat_w, mesh_shape, order)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _read_flat(field: Array, flat_pos: Array, mesh_shape: tuple[int, int, int], order: int):
    return _read_kernel(field, flat_pos, mesh_shape, order)


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
    _check_domain(domain)
    order = _check_scheme(scheme)
    positions = _check_positions(positions)
    field = jnp.asarray(field)
    if field.ndim == 4:
        _check_shape("field", field, (*domain.mesh_shape, field.shape[-1]))
    else:
        _check_shape("field", field, domain.mesh_shape)
    if domain.is_distributed:
        _check_distributed(positions.shape, domain)
        _check_no_strays(positions, domain, order, "read")
        return distributed_read(field, positions, domain, order)
    out_shape = positions.shape[:-1] + field.shape[3:]
    flat = _read_flat(field, positions.reshape(-1, 3), domain.mesh_shape, order)
    return flat.reshape(out_shape)


def mass_assignment_window(domain: Domain, scheme: Scheme = "cic") -> Array:
    """Fourier transform of the mass-assignment kernel, `prod_i sinc(k_i cell_i / 2)^p`.

    `p` is 2 for CIC and 3 for TSC; `sinc(x) = sin(x) / x`. Aliasing is not modelled.

    **Arguments:**

    - `domain`: the `Domain`.
    - `scheme`: `"cic"` or `"tsc"`.

    **Returns:** real array of shape `domain.fourier_shape` (1 at k=0, positive everywhere).
    """
    order = _check_scheme(scheme)
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
    _check_shape("field_k", field_k, domain.fourier_shape)
    return field_k / mass_assignment_window(domain, scheme)
