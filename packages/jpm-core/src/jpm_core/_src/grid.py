"""CIC/TSC painting and reading on a bare 2-D or 3-D grid (maps, planes), periodic or not.

`jpm_core.paint`/`read` work on a `Domain`'s 3-D mesh; lens planes and angular maps are 2-D and
usually not periodic. These functions take the grid's shape instead of a domain and run the same
stencil kernels (`_src/stencil.py`, with their hand-written JVPs, so forward and reverse mode are
as cheap as for the mesh): a 2-D grid `(nx, ny)` is a 3-D one `(nx, ny, S)` (`S` the stencil's
nodes per axis) whose particles all sit at `z = 0`, summed (painting) or broadcast (reading) along
`z`. A non-periodic grid is padded by 3 nodes per side; particles whose stencil cannot reach the
grid get zero weight (and are moved to a safe place), so nothing wraps around.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jpm_core._src._checks import check_scheme, check_weights
from jpm_core._src.config import Scheme
from jpm_core._src.stencil import paint_flat, read_flat

__all__ = ["paint_grid", "read_grid"]

_PAD = 3  # nodes of padding per side for non-periodic grids (covers CIC's and TSC's stencils)


def _check(name: str, positions: ArrayLike, shape: Sequence[int]) -> tuple[Array, tuple]:
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or any(n < 1 for n in shape):
        raise ValueError(f"the grid shape must be 2 or 3 positive ints, got {shape}")
    positions = jnp.asarray(positions)
    if not jnp.issubdtype(positions.dtype, jnp.floating):
        positions = positions.astype(jnp.result_type(float))
    if positions.ndim < 1 or positions.shape[-1] != len(shape):
        raise ValueError(
            f"{name} must have shape (..., {len(shape)}) for a grid of shape {shape} (grid units), "
            f"got shape {tuple(positions.shape)}"
        )
    return positions, shape


def _prepare(positions: Array, weights: Array, shape: tuple, periodic: bool):
    """Flat `(P, 3)` positions and `(P,)` weights on the 3-D working grid, and that grid."""
    flat = positions.reshape(-1, len(shape))
    w = weights.reshape(-1)
    if not periodic:
        n = jnp.asarray(shape, flat.dtype)
        reach = jnp.all((flat >= -2.0) & (flat < n[None, :] + 1.0), axis=-1)
        flat = jnp.where(reach[:, None], flat, 0.0) + _PAD
        w = jnp.where(reach, w, jnp.zeros((), w.dtype))
        shape = tuple(s + 2 * _PAD for s in shape)
    return flat, w, shape


def _embed(flat: Array, shape: tuple, order: int) -> tuple[Array, tuple]:
    if len(shape) == 3:
        return flat, shape
    zeros = jnp.zeros((flat.shape[0], 1), flat.dtype)
    return jnp.concatenate([flat, zeros], axis=-1), (*shape, order)


def paint_grid(
    positions: ArrayLike,
    shape: Sequence[int],
    weights: ArrayLike | None = None,
    scheme: Scheme = "cic",
    *,
    periodic: bool = True,
) -> Array:
    """Deposit weights onto a 2-D or 3-D grid with the CIC or TSC kernel of `jpm_core.paint`.

    ```python
    plane = jpm_core.paint_grid(xy, (64, 64), weights=mass, periodic=False)  # a 2-D map
    ```

    **Arguments:**

    - `positions`: `(..., d)` positions in grid units (node `i` at coordinate `i`), `d = len(shape)`.
    - `shape`: the grid, 2 or 3 ints.
    - `weights`: shape `positions.shape[:-1]` or a scalar; default 1.
    - `scheme`: `"cic"` or `"tsc"`.
    - `periodic`: wrap around the grid (default), or drop what falls off it (`False`: a map
      whose edges are not joined; a particle's deposits on nodes outside the grid are lost).

    **Returns:** the grid `shape` of deposited weight. Differentiable (forward and reverse mode)
    with respect to positions and weights, with the same hand-written JVPs as `paint`.
    """
    order = check_scheme("scheme", scheme)
    positions, shape = _check("positions", positions, shape)
    weights = check_weights("weights", weights, positions)
    flat, w, work = _prepare(positions, weights.astype(positions.dtype), shape, periodic)
    flat, work3 = _embed(flat, work, order)
    out = paint_flat(flat, w, work3, order)
    if len(shape) == 2:
        out = out.sum(axis=-1)
    if not periodic:
        out = out[tuple(slice(_PAD, _PAD + n) for n in shape)]
    return out


def read_grid(
    field: ArrayLike,
    positions: ArrayLike,
    scheme: Scheme = "cic",
    *,
    periodic: bool = True,
) -> Array:
    """Interpolate a 2-D or 3-D grid at positions (CIC or TSC); the adjoint of `paint_grid`.

    **Arguments:**

    - `field`: the grid, 2-D or 3-D (one value per node).
    - `positions`: `(..., d)` positions in grid units, `d = field.ndim`.
    - `scheme`: `"cic"` or `"tsc"`.
    - `periodic`: wrap around (default), or read zeros beyond the grid's edges (`False`).

    **Returns:** shape `positions.shape[:-1]`. `<paint_grid(x, shape, w), f> == <w, read_grid(f, x)>`
    for the same `periodic`.
    """
    order = check_scheme("scheme", scheme)
    field = jnp.asarray(field)
    positions, shape = _check("positions", positions, field.shape)
    flat, _, work = _prepare(
        positions, jnp.ones(positions.shape[:-1], positions.dtype), shape, periodic
    )
    if not periodic:
        field = jnp.pad(field, [(_PAD, _PAD)] * len(shape))
        n = jnp.asarray(shape, flat.dtype)
        raw = positions.reshape(-1, len(shape))
        reach = jnp.all((raw >= -2.0) & (raw < n[None, :] + 1.0), axis=-1)
    flat, work3 = _embed(flat, work, order)
    if len(shape) == 2:
        field = jnp.broadcast_to(field[..., None], work3)
    out = read_flat(field, flat, work3, order)
    if not periodic:
        out = jnp.where(reach, out, jnp.zeros((), out.dtype))
    return out.reshape(positions.shape[:-1])
