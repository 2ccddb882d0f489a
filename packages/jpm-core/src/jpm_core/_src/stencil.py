"""The single-device CIC/TSC stencil kernels, the one home of painting's and reading's compute.

`jpm_core.paint`/`read` call them on the whole periodic mesh; the distributed versions
(`_src/halo.py`) call them on each device's padded local mesh. Positions are flat `(P, 3)` arrays in
mesh units; `order` is the number of nodes per axis (2 CIC, 3 TSC).

Implementation: on a mesh padded by `S - 1` periodic nodes (`S` = 2 for CIC, 3 for TSC), every
particle's `S^3` stencil is one contiguous block: reading is one block gather `(N, S, S, S, C)`
contracted with the per-axis weights, painting one block scatter-add followed by folding the padding
back. Corner indices are int32 per axis.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["paint_flat", "read_flat"]


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


@functools.partial(jax.jit, static_argnums=(2, 3))
def paint_flat(flat_pos: Array, flat_w: Array, mesh_shape: tuple[int, int, int], order: int):
    return _paint_kernel(flat_pos, flat_w, mesh_shape, order)


@functools.partial(jax.jit, static_argnums=(2, 3))
def read_flat(field: Array, flat_pos: Array, mesh_shape: tuple[int, int, int], order: int):
    return _read_kernel(field, flat_pos, mesh_shape, order)
