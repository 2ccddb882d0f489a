"""Mass assignment on a device grid: local painting/reading with halo (ghost) cells.

The mesh is split over a `(px, py)` grid of devices as `P("x", "y")` (x in `px` slabs, y in `py`
slabs, z whole), the layout of `jpm_core.fft`. Particles are split the same way: the leading two
axes of a `(a, b, ..., 3)` position array are sharded over `("x", "y")`, so the device `(i, j)`
holds the particles of one Lagrangian block, and those particles must stay within `halo` cells of
that device's slab of the mesh (its *home*), however far they move.

On each device (inside `jax.shard_map`):

- `paint` deposits its particles on a local mesh padded by `halo` cells on each side of every split
  axis, then **adds** each ghost layer into the neighbour that owns those nodes (`lax.ppermute`
  along x, then along y on the x-cropped array, so corners reach the diagonal neighbour), and crops
  the padding;
- `read` **fills** the ghost layers from the neighbours (the transpose: along x, then y on the
  x-padded array) and interpolates locally.

So `read` is exactly the adjoint of `paint` on a device grid as on one device, and both are
differentiable (the transpose of a `ppermute` is the inverse permutation). jaxdecomp's
`halo_exchange` fills ghosts by copying; painting needs the accumulating transpose, so both
directions are written here with `ppermute` (about twenty lines), which XLA lowers to NCCL on GPUs
and to gloo/MPI collectives across CPU processes.

**Stray particles.** A particle further than `halo` cells from its home (minus the stencil's own
reach: CIC touches the node at `floor(u) + 1`, TSC the nodes `round(u) +- 1`) cannot be deposited
correctly. It is never dropped silently: a stray anywhere makes the whole painted mesh NaN (one
scalar `psum`), and a stray reads NaN, so the error propagates to everything downstream; with
`domain.on_stray == "warn"` (default) a message naming the count and the halo is also printed from
the host (`jax.debug.callback`), `"nan"` skips that host round-trip. Raising from inside the
compiled program is not an option: it would abort the process (see `_report`). Eager calls
(concrete positions) raise a `ValueError` before any compute instead (`jpm_core.paint`).
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
from jax import Array
from jax.sharding import PartitionSpec

from jpm_core._src.device_mesh import domain_mesh
from jpm_core._src.domain import Domain
from jpm_core._src.stencil import paint_flat, read_flat

__all__ = ["distributed_paint", "distributed_read", "stray_particles", "stray_statistics"]

_SPEC = PartitionSpec("x", "y")


def _stencil_reach(order: int) -> tuple[int, int]:
    """Cells a stencil reaches below and above `floor(u)` (CIC) or `round(u)` (TSC)."""
    return (0, 1) if order == 2 else (1, 1)


def check_distributed_particles(name: str, shape: tuple[int, ...], domain: Domain) -> None:
    """Eager checks of a particle array's shape for a device grid."""
    px, py = domain.device_grid
    if len(shape) < 3:
        raise ValueError(
            f"on device_grid={domain.device_grid!r} {name} must have shape (a, b, ..., 3) with its "
            f"first two axes split over the device grid (e.g. the (nx, ny, nz, 3) Lagrangian "
            f"grid), got shape {tuple(shape)}"
        )
    if shape[0] % px or shape[1] % py:
        raise ValueError(
            f"on device_grid={domain.device_grid!r} the first two axes of {name} "
            f"{tuple(shape)} must be divisible by {px} and {py}"
        )


def _local_coordinates(pos: Array, domain: Domain, order: int) -> tuple[Array, Array]:
    """Positions `(P, 3)` relative to the padded local mesh, and the stray flag `(P,)`."""
    lx, ly, _ = domain.local_mesh_shape
    nx, ny, _ = domain.mesh_shape
    px, py = domain.device_grid
    h = domain.halo
    below, above = _stencil_reach(order)
    origin = [jax.lax.axis_index("x") * lx, jax.lax.axis_index("y") * ly]
    cols = []
    stray = jnp.zeros(pos.shape[0], dtype=bool)
    for axis, (n, ln, p) in enumerate(((nx, lx, px), (ny, ly, py))):
        u = pos[:, axis]
        if p == 1:
            cols.append(u)  # whole axis on this device: periodic wrap by the stencil
            continue
        # the periodic image of u nearest the padded slab [-h, ln + h)
        u = jnp.mod(u - origin[axis].astype(u.dtype) + h, n) - h
        base = jnp.floor(u) if order == 2 else jnp.round(u)
        ok = (base - below >= -h) & (base + above <= ln + h - 1)
        stray = stray | ~ok  # NaN positions count as strays too
        cols.append(u + h)
    cols.append(pos[:, 2])
    return jnp.stack(cols, axis=-1), stray


def _ring(size: int, shift: int) -> list[tuple[int, int]]:
    return [(i, (i + shift) % size) for i in range(size)]


def _add_halo(a: Array, axis: int, name: str, size: int, h: int) -> Array:
    """Add the two ghost layers of `a` (padded by `h` along `axis`) into the neighbours; crop."""
    a = jnp.moveaxis(a, axis, 0)
    n = a.shape[0] - 2 * h
    from_left = jax.lax.ppermute(a[n + h :], name, _ring(size, 1))  # my right ghost -> right
    from_right = jax.lax.ppermute(a[:h], name, _ring(size, -1))  # my left ghost -> left
    a = a.at[h : 2 * h].add(from_left).at[n : n + h].add(from_right)
    return jnp.moveaxis(a[h : n + h], 0, axis)


def _fill_halo(a: Array, axis: int, name: str, size: int, h: int) -> Array:
    """Pad `a` by `h` along `axis` with the neighbours' edge layers (the transpose of `_add_halo`)."""
    a = jnp.moveaxis(a, axis, 0)
    n = a.shape[0]
    left = jax.lax.ppermute(a[n - h :], name, _ring(size, 1))  # my last layers -> right
    right = jax.lax.ppermute(a[:h], name, _ring(size, -1))  # my first layers -> left
    return jnp.moveaxis(jnp.concatenate([left, a, right], axis=0), 0, axis)


def _padded_shape(domain: Domain) -> tuple[int, int, int]:
    lx, ly, nz = domain.local_mesh_shape
    px, py = domain.device_grid
    h = domain.halo
    return (lx + (2 * h if px > 1 else 0), ly + (2 * h if py > 1 else 0), nz)


def stray_message(count: int, domain: Domain, what: str) -> str:
    return (
        f"jpm_core.{what}: {count} particle(s) are more than halo={domain.halo} cell(s) outside "
        f"the mesh slab of the device that holds them (device_grid={domain.device_grid!r}, "
        f"mesh_shape={domain.mesh_shape!r}); they cannot be assigned correctly. Increase "
        "Domain(halo=...) (up to the local slab width) or take more time steps"
    )


def _report(count: Array, domain: Domain, what: str) -> None:
    """Print a warning to stderr from the host when `count > 0` (never raises: see below)."""

    def callback(n):
        n = int(n)
        if n:
            print(f"WARNING: {stray_message(n, domain, what)}; the result is NaN", file=sys.stderr)

    # Raising here instead would kill one device's thread while the others wait for it in the
    # program's next collective: XLA then aborts the whole process. So: NaN plus a message.
    jax.debug.callback(callback, count)


def _finish(result: Array, total: Array, domain: Domain, what: str) -> Array:
    if domain.on_stray == "warn":
        _report(total, domain, what)
    return result


@functools.partial(jax.jit, static_argnums=(2, 3))
def distributed_paint(positions: Array, weights: Array, domain: Domain, order: int) -> Array:
    """Paint on a device grid; `positions (a, b, ..., 3)`, `weights (a, b, ...)` (checked)."""
    px, py = domain.device_grid
    h = domain.halo
    padded = _padded_shape(domain)

    def local(pos, w):
        flat_pos, stray = _local_coordinates(pos.reshape(-1, 3), domain, order)
        mesh = paint_flat(flat_pos, w.reshape(-1), padded, order)
        if px > 1:
            mesh = _add_halo(mesh, 0, "x", px, h)
        if py > 1:
            mesh = _add_halo(mesh, 1, "y", py, h)
        total = jax.lax.psum(stray.sum(dtype=jnp.int32), ("x", "y"))
        mesh = jnp.where(total > 0, jnp.nan, mesh)  # a stray anywhere poisons the whole mesh
        return mesh, total.reshape(1, 1)

    mesh, totals = jax.shard_map(
        local, mesh=domain_mesh(domain), in_specs=(_SPEC, _SPEC), out_specs=(_SPEC, _SPEC)
    )(positions, weights)
    return _finish(mesh, totals[0, 0], domain, "paint")


@functools.partial(jax.jit, static_argnums=(2, 3))
def distributed_read(field: Array, positions: Array, domain: Domain, order: int) -> Array:
    """Read on a device grid; `field (nx, ny, nz[, C])`, `positions (a, b, ..., 3)` (checked)."""
    px, py = domain.device_grid
    h = domain.halo
    padded = _padded_shape(domain)

    def local(f, pos):
        if px > 1:
            f = _fill_halo(f, 0, "x", px, h)
        if py > 1:
            f = _fill_halo(f, 1, "y", py, h)
        flat_pos, stray = _local_coordinates(pos.reshape(-1, 3), domain, order)
        out = read_flat(f, flat_pos, padded, order)
        out = jnp.where(stray.reshape((-1,) + (1,) * (out.ndim - 1)), jnp.nan, out)
        out = out.reshape(*pos.shape[:-1], *f.shape[3:])
        return out, stray.sum(dtype=jnp.int32).reshape(1, 1)

    out, counts = jax.shard_map(
        local, mesh=domain_mesh(domain), in_specs=(_SPEC, _SPEC), out_specs=(_SPEC, _SPEC)
    )(field, positions)
    return _finish(out, counts.sum(), domain, "read")


@functools.partial(jax.jit, static_argnums=(1, 2))
def stray_particles(positions: Array, domain: Domain, order: int) -> Array:
    def local(pos):
        _, stray = _local_coordinates(pos.reshape(-1, 3), domain, order)
        return stray.sum(dtype=jnp.int32).reshape(1, 1)

    counts = jax.shard_map(local, mesh=domain_mesh(domain), in_specs=_SPEC, out_specs=_SPEC)(
        positions
    )
    return counts.sum()


def _needed_halo(pos: Array, domain: Domain, order: int) -> Array:
    """`(P,)` int32: the smallest halo each particle's stencil needs (0 for NaN positions)."""
    lx, ly, _ = domain.local_mesh_shape
    nx, ny, _ = domain.mesh_shape
    px, py = domain.device_grid
    below, above = _stencil_reach(order)
    origin = [jax.lax.axis_index("x") * lx, jax.lax.axis_index("y") * ly]
    need = jnp.ones(pos.shape[0], jnp.int32)
    for axis, (n, ln, p) in enumerate(((nx, lx, px), (ny, ly, py))):
        if p == 1:
            continue
        u = pos[:, axis]
        # the periodic image of u nearest the centre of the slab [0, ln)
        centre = 0.5 * ln
        u = jnp.mod(u - origin[axis].astype(u.dtype) - centre + 0.5 * n, n) - 0.5 * n + centre
        base = jnp.floor(u) if order == 2 else jnp.round(u)
        reach = jnp.maximum(below - base, base + above - (ln - 1))
        reach = jnp.where(jnp.isfinite(u), reach, 0.0)
        need = jnp.maximum(need, reach.astype(jnp.int32))
    return need


@functools.partial(jax.jit, static_argnums=(1, 2))
def stray_statistics(positions: Array, domain: Domain, order: int) -> Array:
    """`int32 (2,)`: the number of strays among the *finite* positions, and the halo they need.

    Unlike `stray_particles`, NaN positions do not count: after a stray has poisoned a run with
    NaN, the count stays that of the particles that strayed (not of every particle).
    """

    def local(pos):
        flat = pos.reshape(-1, 3)
        _, stray = _local_coordinates(flat, domain, order)
        finite = jnp.all(jnp.isfinite(flat), axis=-1)
        count = jnp.sum(stray & finite, dtype=jnp.int32)
        need = jnp.max(_needed_halo(flat, domain, order))
        count = jax.lax.psum(count, ("x", "y"))
        need = jax.lax.pmax(need, ("x", "y"))
        return jnp.stack([count, need]).reshape(1, 1, 2)

    stats = jax.shard_map(
        local, mesh=domain_mesh(domain), in_specs=_SPEC, out_specs=PartitionSpec("x", "y", None)
    )(positions)
    return stats[0, 0]
