"""Born convergence maps painted from a running `jpm_core.nbody` through its `observer` hook.

Hand-written (no JAX library does it: JaxPM paints density planes from stored snapshots,
DifferentiableHOS is TensorFlow): the observer sits at the centre of the box's `z = 0` face and
looks along `+z` (plane-parallel flat sky: a particle's comoving distance is its `z` coordinate and
its angle its transverse offset over that distance). At each step `[a_start, a_end]` the observer
takes the particles that the past light cone sweeps during the step. With
`crossing="interpolate"` (the default) each is drawn **where the cone crossed it**: jpm-core's
observer sees the positions at both ends of the step (`observer_start_positions=True`), a
kick-drift-kick particle moves on the straight segment between them (linearly in the step's
drift factor), and the cone's distance is interpolated linearly in the same variable between its
exact values at the ends of the step, an error second order in the step (the particle's path is
exact). With `crossing="end"` the particles in `chi(a_end) <= z < chi(a_start)` are taken at
their end-of-step positions, an error of at most one step's displacement. With the Born
approximation and the lensing
efficiency `q_i(chi)` of each source distribution, `kappa_i = int q_i(chi) delta(chi theta, chi)
dchi`, computed in one of two ways:

- `method="mesh"` (default): the shell's particles are painted (CIC) on the run's mesh, the
  transverse CIC windows of painting and reading are divided out in Fourier space, and
  `q_i (1 + delta)` is integrated along `rays_per_pixel^2` rays per pixel with `nodes_per_step`
  midpoint nodes over the shell widened by two cells on each side (a CIC cloud reaches one cell
  from its particle, and trilinear reading one more);
- `method="particles"`: each particle is deposited on the map with bilinear weights and carries
  `q_i(chi_p) V_p / (chi_p^2 dOmega)`; exact in expectation, but its shot noise dominates once a
  pixel holds few particles.

In both, the mean `int q_i dchi` is subtracted analytically, and the update of the carry is
`carry + g(state)`, affine, so the maps are differentiated exactly by jpm-core's default adjoint.

Box modes: one elongated box (`box_size[2] >= chi` of the farthest lens; the transverse sides must
hold the field of view at that distance), or a cubic box replicated along the line of sight
(`replication_key`): replica `r` fills the distances `[r L, (r + 1) L)` with the box's particles
under a random permutation of its axes and a random periodic shift, drawn once per lightcone (as
DifferentiableHOS does), which breaks the repetition of structures along the cone. A step's shell
must be thinner than the box (it then meets at most two replicas).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jlens._src._checks import is_concrete
from jlens._src._jpm_core_api import (
    HUBBLE_DISTANCE,
    Cosmology,
    check_cosmology,
    comoving_distance,
    paint,
    paint_grid,
    read,
    scale_factor_of_chi,
)
from jlens._src.geometry import FlatSky, check_geometry
from jlens._src.limber import lensing_efficiency
from jlens._src.operators import kappa_to_shear
from jlens._src.redshift import RedshiftDistribution, as_bins

__all__ = ["BornLightcone"]

# nodes of the lensing-efficiency table (interpolated at every particle) and of the mean integral
_N_TABLE = 2048
# how far (in cells) a particle may move in one step across a replica boundary and still be seen
_MARGIN_CELLS = 4.0
# the six axis permutations of a replica (rows: the cone's x, y, z as box axes)
_PERMUTATIONS = np.asarray(
    [np.eye(3)[list(order)] for order in itertools.permutations(range(3))], float
)


@dataclasses.dataclass(frozen=True)
class BornLightcone:
    """The Born convergence of a PM run: an `observer` for `jpm_core.nbody` and the map it makes.

    ```python
    cone = jlens.BornLightcone(cosmo, domain, geometry, sources=[1.0], a_init=0.1)
    run = jpm_core.nbody(cosmo, state, domain, [1.0], steps=30, **cone.nbody_kwargs())
    kappa = cone.convergence(run.observer_carry)  # (n_sources, npix, npix)
    ```

    **Arguments:**

    - `cosmo`: the `jpm_core.Cosmology` of the run (may be traced).
    - `domain`: the run's `jpm_core.Domain` (positions in its mesh units); `box_size[2]` must
      reach the farthest lens, `box_size[0]` and `box_size[1]` the field of view there.
    - `geometry`: the [`FlatSky`][jlens.FlatSky] map, centred on the line of sight.
    - `sources`: source redshift(s) (floats: Born convergence for a single source plane each)
      or [`RedshiftDistribution`][jlens.RedshiftDistribution](s) (tomographic bins, one pass);
      not a mix.
    - `a_init`: the run's initial scale factor; the cone is painted from `chi(a_init)` down to the
      observer, so every source must lie at `z <= 1 / a_init - 1` (its lenses all in the run).
    - `a_final`: the run's final scale factor (1 by default: the observer at `z = 0`).
    - `method`: `"mesh"` (default): each step's shell of particles is painted (CIC) on the run's
      mesh, the transverse CIC windows are divided out, and `q (1 + delta)` is integrated along
      rays through every pixel; needs a single-device domain. `"particles"`: each particle is
      deposited on the map (bilinear) with weight `q(chi) V_p / (chi^2 dOmega)`: exact in
      expectation, but shot-noise dominated once a pixel holds few particles. Both subtract the
      mean `int q dchi` analytically.
    - `nodes_per_step`: ray nodes per step (`"mesh"`): keep their spacing, (shell width + 4 cells)
      / `nodes_per_step`, at or below a quarter of a cell along `z` (the midpoint rule's error
      on the piecewise-linear trilinear read is second order in it: measured 1.3% of the map's
      rms at half a cell, 0.1% at an eighth).
    - `rays_per_pixel`: rays per pixel side (`"mesh"`), averaged in the pixel.
    - `replication_key`: `None` (default): one elongated box. A PRNG key: replicate the cubic
      box along the line of sight, each replica with a random axis permutation and shift
      (`box_size[2]` may then be shorter than the farthest lens; the transverse sides must still
      hold the field of view there; each step must sweep less than one box length less 6
      cells, and a particle that crosses a replica boundary during a step must move less than 4
      cells in it).
    - `crossing`: `"interpolate"` (default): each particle at the point of its path where the
      light cone crossed it (run `nbody` with `observer_start_positions=True`, or pass
      `**cone.nbody_kwargs()`); `"end"`: at its position at the end of that step.

    **Raises:** `ValueError` before any compute for sources beyond the cone, a box too short for
    the farthest lens or too narrow for the field of view there, and bad redshifts; `TypeError`
    for a wrong geometry or domain.
    """

    cosmo: Cosmology
    domain: Any
    geometry: FlatSky
    sources: Any
    a_init: float
    a_final: float = 1.0
    method: str = "mesh"
    nodes_per_step: int = 64
    rays_per_pixel: int = 2
    crossing: str = "interpolate"
    replication_key: Any = None

    def __post_init__(self) -> None:
        if self.method not in ("mesh", "particles"):
            raise ValueError(f"method must be 'mesh' or 'particles', got {self.method!r}")
        if self.crossing not in ("interpolate", "end"):
            raise ValueError(f"crossing must be 'interpolate' or 'end', got {self.crossing!r}")
        for name in ("nodes_per_step", "rays_per_pixel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        check_cosmology(self.cosmo)
        check_geometry("geometry", self.geometry)
        if not (hasattr(self.domain, "box_size") and hasattr(self.domain, "mesh_shape")):
            raise TypeError(f"domain must be a jpm_core.Domain, got {type(self.domain).__name__}")
        if self.method == "mesh" and self.domain.is_distributed:
            raise ValueError(
                "method='mesh' needs a single-device domain (its rays cross the device slabs); "
                "use method='particles' or gather the state"
            )
        a_init, a_final = float(self.a_init), float(self.a_final)
        if not (0.0 < a_init < a_final <= 1.0):
            raise ValueError(f"need 0 < a_init < a_final <= 1, got {a_init!r}, {a_final!r}")
        object.__setattr__(self, "a_init", a_init)
        object.__setattr__(self, "a_final", a_final)
        kind, sources = _parse_sources(self.sources)
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "_kind", kind)
        z_cone = 1.0 / a_init - 1.0
        z_far = max(sources) if kind == "planes" else max(b.z_max for b in sources)
        if z_far > z_cone * (1 + 1e-9):
            raise ValueError(
                f"source redshift {z_far!r} (the farthest source or n(z)'s z_max) is beyond the light cone of a run from "
                f"a_init={a_init!r} (z = {z_cone:.4g}): start the run earlier"
            )
        # the farthest distance that can lens: the sources' (or the cone's start)
        z_lens = min(z_far, z_cone)
        chi_far = (
            float(comoving_distance(self.cosmo, 1.0 / (1.0 + z_lens)))
            if is_concrete(self.cosmo)
            else None
        )
        box = np.asarray(self.domain.box_size, float)
        replicate = self.replication_key is not None
        if replicate:
            mesh = np.asarray(self.domain.mesh_shape)
            if not (np.all(box == box[0]) and np.all(mesh == mesh[0])):
                raise ValueError(
                    "replication permutes the box's axes: it needs a cubic box and mesh, got "
                    f"box_size {box.tolist()} and mesh_shape {mesh.tolist()} (or use an "
                    "elongated box with replication_key=None)"
                )
        if chi_far is not None:
            if box[2] < chi_far and not replicate:
                raise ValueError(
                    f"the box is {box[2]:.4g} Mpc/h long along z but the farthest lens is at "
                    f"chi = {chi_far:.4g} Mpc/h: use an elongated box, or replicate this one "
                    "(replication_key=jax.random.key(...))"
                )
            width = chi_far * self.geometry.field_rad
            if min(box[0], box[1]) < width:
                raise ValueError(
                    f"the field of view ({self.geometry.field_rad:.4g} rad) spans {width:.4g} "
                    f"Mpc/h at chi = {chi_far:.4g} Mpc/h, wider than the box's transverse sides "
                    f"{box[:2].tolist()}: shrink the field or widen the box"
                )
        # the replicas of the box along the line of sight: axis permutations and shifts
        if replicate:
            # enough replicas for any cosmology when the distance is traced (E(z) >= 1/2 bound)
            reach = chi_far if chi_far is not None else 2.0 * z_lens * HUBBLE_DISTANCE
            n_rep = math.ceil(reach / box[2]) + 1
            key_perm, key_shift = jax.random.split(self.replication_key)
            choice = jax.random.randint(key_perm, (n_rep,), 0, len(_PERMUTATIONS))
            perms = jnp.asarray(_PERMUTATIONS, jnp.result_type(float))[choice]
            shifts = jax.random.uniform(key_shift, (n_rep, 3), jnp.result_type(float)) * box[0]
        else:
            perms = jnp.eye(3, dtype=jnp.result_type(float))[None]
            shifts = jnp.zeros((1, 3), jnp.result_type(float))
        object.__setattr__(self, "_perms", perms)
        object.__setattr__(self, "_shifts", shifts)
        # the lensing-efficiency table, once per lightcone (not once per step)
        chi_nodes, q_nodes = self._make_table(jnp.result_type(float))
        object.__setattr__(self, "_chi_nodes", chi_nodes)
        object.__setattr__(self, "_q_nodes", q_nodes)

    # -- the pieces ---------------------------------------------------------------------------

    @property
    def n_sources(self) -> int:
        return len(self.sources)

    def init(self, dtype: Any = jnp.float32) -> jax.Array:
        """The observer's initial carry: zero maps of shape `(n_sources, npix, npix)`."""
        return jnp.zeros((self.n_sources, *self.geometry.shape), dtype)

    def nbody_kwargs(self, dtype: Any = jnp.float32) -> dict[str, Any]:
        """The keyword arguments of `jpm_core.nbody` that attach this lightcone, maps of `dtype`:
        `nbody(..., **cone.nbody_kwargs())` (`observer`, `observer_init`, and
        `observer_start_positions`, on for `crossing="interpolate"`)."""
        return {
            "observer": self.observer,
            "observer_init": self.init(dtype),
            "observer_start_positions": self.crossing == "interpolate",
        }

    def _table(self, dtype: Any) -> tuple[jax.Array, jax.Array]:
        """chi nodes and q_i(chi) (shape `(n_sources, _N_TABLE)`), from the construction's table."""
        return self._chi_nodes.astype(dtype), self._q_nodes.astype(dtype)

    def _make_table(self, dtype: Any) -> tuple[jax.Array, jax.Array]:
        """chi nodes and q_i(chi) (shape `(n_sources, _N_TABLE)`) from 0 to chi(a_init)."""
        chi_max = comoving_distance(self.cosmo, jnp.asarray(self.a_init, dtype))
        chi = jnp.linspace(0.0, 1.0, _N_TABLE, dtype=dtype) * chi_max
        if self._kind == "bins":
            q = lensing_efficiency(self.cosmo, self.sources, chi)
        else:
            chi_s = comoving_distance(self.cosmo, 1.0 / (1.0 + jnp.asarray(self.sources, dtype)))[
                :, None
            ]
            a = scale_factor_of_chi(self.cosmo, chi)
            omega_m = self.cosmo.Omega_c + self.cosmo.Omega_b
            amp = 1.5 * omega_m / HUBBLE_DISTANCE**2
            q = (amp * chi / a)[None, :] * jnp.clip(1.0 - chi[None, :] / chi_s, 0.0)
        return chi, q.astype(dtype)

    def observer(
        self,
        state: Any,
        a_start: jax.Array,
        a_end: jax.Array,
        carry: jax.Array,
        positions_start: jax.Array | None = None,
    ) -> jax.Array:
        """`jpm_core.nbody`'s observer: add the step's shell of the light cone to `carry`.

        With `crossing="interpolate"` (the default) run `nbody` with
        `observer_start_positions=True` (or `**cone.nbody_kwargs()`): it passes `positions_start`.
        """
        if self.crossing == "interpolate" and positions_start is None:
            raise TypeError(
                "BornLightcone(crossing='interpolate') needs the positions at the start of each "
                "step: call jpm_core.nbody(..., observer_start_positions=True) (or pass "
                "**cone.nbody_kwargs()), or use crossing='end'"
            )
        dtype = carry.dtype
        cell = jnp.asarray(
            np.asarray(self.domain.box_size, float) / np.asarray(self.domain.mesh_shape, float),
            dtype,
        )
        x1 = jnp.reshape(jnp.asarray(state.positions, dtype), (-1, 3)) * cell[None, :]
        x0 = None
        if self.crossing == "interpolate":
            x0 = jnp.reshape(jnp.asarray(positions_start, dtype), (-1, 3)) * cell[None, :]
        chi_hi = comoving_distance(self.cosmo, a_start.astype(dtype))
        chi_lo = comoving_distance(self.cosmo, a_end.astype(dtype))
        perms = self._perms.astype(dtype)
        shifts = self._shifts.astype(dtype)
        n_rep = perms.shape[0]

        def replica(r):
            return self._replica(r, perms[r], shifts[r], x0, x1, chi_lo, chi_hi, dtype)

        if n_rep == 1:
            return carry + replica(0)
        # a step's shell is thinner than the box: it meets one replica, or two at a boundary
        # (a particle that starts the step up to _MARGIN_CELLS cells below the boundary and
        # crosses the cone above it is the lower replica's)
        length = float(self.domain.box_size[2])
        margin = _MARGIN_CELLS * cell[2]
        r_hi = jnp.clip(jnp.floor(chi_hi / length), 0, n_rep - 1).astype(jnp.int32)
        r_lo = jnp.clip(jnp.floor((chi_lo - margin) / length), 0, n_rep - 1).astype(jnp.int32)
        out = carry + replica(r_hi)
        return out + jax.lax.cond(
            r_lo != r_hi, lambda: replica(r_lo), lambda: jnp.zeros(carry.shape, carry.dtype)
        )

    def _replica(self, r, perm, shift, x0, x1, chi_lo, chi_hi, dtype):
        """The contribution of replica `r` of the box to the step's shell.

        Replica `r` fills the distances `[r L, (r + 1) L)` (`L = box_size[2]`); a particle at box
        coordinates `x` appears there at `c = (P_r x + s_r) mod box` (cone frame: `c_z + r L` is
        its distance, `c_x - L_x / 2`, `c_y - L_y / 2` its transverse offsets), `P_r` an axis
        permutation and `s_r` a shift (the identity and 0 for the elongated box).

        With `crossing="interpolate"` a particle moves on the segment from its start to its end
        position, `x(t) = x0 + t (x1 - x0)` for the step's drift fraction `t` in `[0, 1]`, and
        the cone on `chi(t) = chi_hi + t (chi_lo - chi_hi)` (linear in `t` between its exact
        ends); it is taken at the root `t` of `d(t) = chi(t)` (`d` its distance), in the step
        iff `0 <= t < 1`, i.e. `d0 <= chi_hi` and `d1 > chi_lo` (consecutive steps partition the
        particles). With `crossing="end"`: the end positions, in the step iff
        `chi_lo <= d1 < chi_hi`.
        """
        box = jnp.asarray(np.asarray(self.domain.box_size, float), dtype)
        offset = jnp.asarray(r, dtype) * box[2]
        c1 = x1 @ perm.T
        if x0 is None:
            c = jnp.mod(c1 + shift[None, :], box[None, :])
            d1 = c[:, 2] + offset
            inside = (d1 >= chi_lo) & (d1 < chi_hi)
            x_box = x1
        else:
            p0 = x0 @ perm.T
            c0 = jnp.mod(p0 + shift[None, :], box[None, :])
            step = c1 - p0  # unwrapped positions: the step's true displacement
            d0 = c0[:, 2] + offset
            dz = step[:, 2]
            inside = (d0 <= chi_hi) & (d0 + dz > chi_lo)
            # the cone sweeps chi_hi - chi_lo per step, far more than any particle moves
            speed = jnp.where(inside, chi_hi - chi_lo + dz, 1.0)
            t = jnp.clip(jnp.where(inside, (chi_hi - d0) / speed, 0.0), 0.0, 1.0)
            c = c0 + t[:, None] * step
            c = c.at[:, :2].set(jnp.mod(c[:, :2], box[None, :2]))  # transverse: periodic
            x_box = x0 + t[:, None] * (x1 - x0)
        if self.method == "mesh":
            return self._rays(x_box, inside, perm, shift, offset, chi_lo, chi_hi, dtype)
        return self._deposit(c, inside, offset, dtype)

    def _rays(self, x_box, inside, perm, shift, offset, chi_lo, chi_hi, dtype):
        """Paint the replica's shell particles on the run's mesh (CIC, box coordinates), divide
        out the CIC windows across the line of sight, and integrate `q (1 + delta)` along
        `rays_per_pixel^2` rays per pixel over the shell widened by two cells on each side (the
        shell's CIC clouds, read trilinearly, lie within it), with `nodes_per_step` midpoint
        nodes; the rays are mapped back to box coordinates, `x = P_r^T (c - s_r)`."""
        mesh = np.asarray(self.domain.mesh_shape, float)
        cell = jnp.asarray(np.asarray(self.domain.box_size, float) / mesh, dtype)
        counts = paint(x_box / cell[None, :], self.domain, weights=inside.astype(dtype))
        # the box axis along the line of sight of this replica is perm[2]'s one
        counts = _compensate_cic(counts, self.domain.mesh_shape, 1.0 - perm[2])
        mean_count = x_box.shape[0] / float(np.prod(mesh))
        # ray nodes: midpoints of nodes_per_step equal pieces of [chi_lo - 2c, chi_hi + 2c]
        lo = jnp.maximum(chi_lo - 2 * cell[2], 0.0)
        hi = chi_hi + 2 * cell[2]
        k = self.nodes_per_step
        t = (jnp.arange(k, dtype=dtype) + 0.5) / k
        chi = lo + (hi - lo) * t  # (k,)
        dchi = (hi - lo) / k
        s = self.rays_per_pixel
        n = self.geometry.npix
        offsets = (jnp.arange(n * s, dtype=dtype) + 0.5) / s - n / 2  # in pixels
        theta = offsets * self.geometry.pixel_rad
        ty, tx = jnp.meshgrid(theta, theta, indexing="ij")  # (n s, n s)
        box = jnp.asarray(np.asarray(self.domain.box_size, float), dtype)
        cx = box[0] / 2 + chi[:, None, None] * tx[None]
        cy = box[1] / 2 + chi[:, None, None] * ty[None]
        cz = jnp.broadcast_to(chi[:, None, None] - offset, cx.shape)
        cone = jnp.stack([cx, cy, cz], axis=-1) - shift[None, None, None, :]
        # box coordinates in cells (read wraps periodically)
        points = (cone @ perm) / cell[None, None, None, :]
        # only the nodes of this replica (and the two cells its clouds reach beyond its faces)
        own = (chi >= offset - 2 * cell[2]) & (chi < offset + box[2] + 2 * cell[2])
        values = read(counts, points, self.domain) / mean_count
        values = jnp.where(own[:, None, None], values, 0.0)
        chi_nodes, q_nodes = self._table(dtype)
        q = jax.vmap(lambda row: jnp.interp(chi, chi_nodes, row))(q_nodes)  # (n_src, k)
        rays = jnp.einsum("sk,kyx->syx", q, values) * dchi
        return rays.reshape(rays.shape[0], n, s, n, s).mean(axis=(2, 4))

    def _deposit(self, c, inside, offset, dtype):
        """Each shell particle on the map (bilinear), weight `q(chi) V_p / (chi^2 dOmega)`."""
        box = jnp.asarray(np.asarray(self.domain.box_size, float), dtype)
        chi_p = c[:, 2] + offset
        inside = inside & (chi_p > 0)
        safe_chi = jnp.where(inside, chi_p, 1.0)
        chi_nodes, q_nodes = self._table(dtype)
        q = jax.vmap(lambda row: jnp.interp(safe_chi, chi_nodes, row))(q_nodes)
        volume = float(np.prod(self.domain.box_size)) / c.shape[0]
        weight = jnp.where(inside, volume / (safe_chi**2 * self.geometry.pixel_rad**2), 0.0)
        weights = q * weight[None, :]  # (n_sources, n_particles)
        theta_x = (c[:, 0] - box[0] / 2) / safe_chi
        theta_y = (c[:, 1] - box[1] / 2) / safe_chi
        return _paint_cic(weights, theta_x, theta_y, self.geometry)

    def mean(self, dtype: Any = jnp.float32) -> jax.Array:
        """`int q_i dchi` over the distances the run sweeps, shape `(n_sources,)`."""
        chi_nodes, q_nodes = self._table(dtype)
        chi_lo = comoving_distance(self.cosmo, jnp.asarray(self.a_final, dtype))
        keep = chi_nodes >= chi_lo
        q = jnp.where(keep[None], q_nodes, 0.0)
        width = jnp.diff(chi_nodes)[None, :]
        return jnp.sum(0.5 * (q[:, 1:] + q[:, :-1]) * width, axis=-1)

    def convergence(self, carry: jax.Array) -> jax.Array:
        """The Born convergence from the final carry: `carry - mean`, shape `(n_sources, npix,
        npix)` (axis 1 is y, axis 2 is x, as everywhere in jlens)."""
        return carry - self.mean(carry.dtype)[:, None, None]

    def shear(self, carry: jax.Array, *, padding: int | None = None) -> jax.Array:
        """The Born shear `(gamma_1, gamma_2)` from the final carry, shape `(n_sources, 2, npix,
        npix)`: [`kappa_to_shear`][jlens.kappa_to_shear] of
        [`convergence`][jlens.BornLightcone.convergence].

        The cone's patch of sky is not periodic, so the convergence is zero-padded by `padding`
        pixels on every side before the Fourier transform (default `npix // 2`, which keeps the
        wrap-around of the periodic transform out of the map; the shear near the edges still misses
        the mass outside the patch, as for any flat-sky patch). `padding=0` treats the map as
        periodic.
        """
        if padding is None:
            padding = self.geometry.npix // 2
        return kappa_to_shear(self.convergence(carry), padding=padding)


def _compensate_cic(field: jax.Array, mesh_shape: Sequence[int], axes: jax.Array) -> jax.Array:
    """Divide by the windows of CIC painting and CIC (trilinear) reading, `sinc(k_i / 2)^4`
    (`k_i` in radians per cell), along the axes `i` where `axes[i]` is 1 (0: not along that
    axis; the line of sight needs none), in Fourier space."""
    window = jnp.ones((), field.dtype)
    for axis, n in enumerate(mesh_shape):
        freq = np.fft.rfftfreq(n) if axis == len(mesh_shape) - 1 else np.fft.fftfreq(n)
        shape = [1] * len(mesh_shape)
        shape[axis] = freq.size
        w = jnp.asarray(np.sinc(freq).reshape(shape) ** 4, field.dtype)
        window = window * (1.0 - axes[axis] + axes[axis] * w)
    spectrum = jnp.fft.rfftn(field) / window
    return jnp.fft.irfftn(spectrum, s=tuple(mesh_shape)).astype(field.dtype)


def _paint_cic(weights: jax.Array, tx: jax.Array, ty: jax.Array, geometry: FlatSky) -> jax.Array:
    """Bilinear (CIC) deposit of `weights` (n, p) at angles (tx, ty) (radians from the centre)
    on the non-periodic map (`jpm_core.paint_grid`: deposits off the map are dropped); pixel
    `(j, i)` (y, x) is centred on the node `(j, i)`."""
    n = geometry.npix
    u = tx / geometry.pixel_rad + n / 2 - 0.5
    v = ty / geometry.pixel_rad + n / 2 - 0.5
    positions = jnp.stack([v, u], axis=-1)
    return jax.vmap(lambda w: paint_grid(positions, (n, n), w, "cic", periodic=False))(weights)


def _parse_sources(sources: Any) -> tuple[str, tuple]:
    if isinstance(sources, RedshiftDistribution):
        return "bins", (sources,)
    if isinstance(sources, (int, float, np.floating, np.integer)) and not isinstance(sources, bool):
        sources = [sources]
    if (
        isinstance(sources, Sequence)
        and sources
        and all(isinstance(s, RedshiftDistribution) for s in sources)
    ):
        return "bins", tuple(as_bins(list(sources)))
    try:
        values = tuple(float(s) for s in sources)
    except (TypeError, ValueError) as error:
        raise TypeError(
            "sources must be source redshifts (floats) or jlens.RedshiftDistribution(s), got "
            f"{sources!r}"
        ) from error
    if not values or not all(math.isfinite(z) and z > 0 for z in values):
        raise ValueError(f"source redshifts must be finite and > 0, got {list(values)}")
    return "planes", values
