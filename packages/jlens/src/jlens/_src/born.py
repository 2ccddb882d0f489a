"""Born convergence maps painted from a running `jpm_core.nbody` through its `observer` hook.

Hand-written (no JAX library does it: JaxPM paints density planes from stored snapshots,
DifferentiableHOS is TensorFlow): the observer sits at the centre of the box's `z = 0` face and
looks along `+z` (plane-parallel flat sky: a particle's comoving distance is its `z` coordinate and
its angle its transverse offset over that distance). At each step `[a_start, a_end]` the observer
takes the particles in the shell `chi(a_end) <= z < chi(a_start)` that the past light cone sweeps
during the step, **at their positions at the end of the step** (the state jpm-core's observer
sees): a particle is drawn where it is at the step's end, not where the cone crossed it, an error
of at most its displacement during one step. With the Born approximation and the lensing
efficiency `q_i(chi)` of each source distribution, `kappa_i = int q_i(chi) delta(chi theta, chi)
dchi`, computed in one of two ways:

- `method="mesh"` (default): the shell's particles are painted (CIC) on the run's mesh, the
  transverse CIC windows of painting and reading are divided out in Fourier space, and
  `q_i (1 + delta)` is integrated along `rays_per_pixel^2` rays per pixel with `nodes_per_step`
  midpoint nodes over the shell widened by one cell on each side (where the shell's clouds lie);
- `method="particles"`: each particle is deposited on the map with bilinear weights and carries
  `q_i(chi_p) V_p / (chi_p^2 dOmega)`; exact in expectation, but its shot noise dominates once a
  pixel holds few particles.

In both, the mean `int q_i dchi` is subtracted analytically, and the update of the carry is
`carry + g(state)`, affine, so the maps are differentiated exactly by jpm-core's default adjoint.

Box mode: one elongated box (`box_size[2] >= chi` of the farthest lens; the transverse sides must
hold the field of view at that distance). Box replication is not implemented yet.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jlens._src._jpm_core_api import (
    HUBBLE_DISTANCE,
    Cosmology,
    check_cosmology,
    comoving_distance,
    paint,
    read,
    scale_factor_of_chi,
)
from jlens._src.geometry import FlatSky, check_geometry
from jlens._src.limber import lensing_efficiency
from jlens._src.redshift import RedshiftDistribution, as_bins

__all__ = ["BornLightcone"]

# nodes of the lensing-efficiency table (interpolated at every particle) and of the mean integral
_N_TABLE = 2048


@dataclasses.dataclass(frozen=True)
class BornLightcone:
    """The Born convergence of a PM run: an `observer` for `jpm_core.nbody` and the map it makes.

    ```python
    cone = jlens.BornLightcone(cosmo, domain, geometry, sources=[1.0], a_init=0.1)
    run = jpm_core.nbody(cosmo, state, domain, [1.0], steps=30,
                         observer=cone.observer, observer_init=cone.init())
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
      expectation, but shot-noise dominated once a pixel holds few particles. Both take the
      particles at the end of the step in which the light cone sweeps them (an error of at most
      one step's displacement) and subtract the mean `int q dchi` analytically.
    - `nodes_per_step`: ray nodes per step (`"mesh"`): keep their spacing, (shell width + 2 cells)
      / `nodes_per_step`, at or below half a cell along `z`.
    - `rays_per_pixel`: rays per pixel side (`"mesh"`), averaged in the pixel.

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
    nodes_per_step: int = 32
    rays_per_pixel: int = 2

    def __post_init__(self) -> None:
        if self.method not in ("mesh", "particles"):
            raise ValueError(f"method must be 'mesh' or 'particles', got {self.method!r}")
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
        chi_far = _concrete_chi(self.cosmo, 1.0 / (1.0 + z_lens))
        box = np.asarray(self.domain.box_size, float)
        if chi_far is not None:
            if box[2] < chi_far:
                raise ValueError(
                    f"the box is {box[2]:.4g} Mpc/h long along z but the farthest lens is at "
                    f"chi = {chi_far:.4g} Mpc/h: use an elongated box (replication is not "
                    "implemented yet)"
                )
            width = chi_far * self.geometry.field_rad
            if min(box[0], box[1]) < width:
                raise ValueError(
                    f"the field of view ({self.geometry.field_rad:.4g} rad) spans {width:.4g} "
                    f"Mpc/h at chi = {chi_far:.4g} Mpc/h, wider than the box's transverse sides "
                    f"{box[:2].tolist()}: shrink the field or widen the box"
                )

    # -- the pieces ---------------------------------------------------------------------------

    @property
    def n_sources(self) -> int:
        return len(self.sources)

    def init(self, dtype: Any = jnp.float32) -> jax.Array:
        """The observer's initial carry: zero maps of shape `(n_sources, npix, npix)`."""
        return jnp.zeros((self.n_sources, *self.geometry.shape), dtype)

    def _table(self, dtype: Any) -> tuple[jax.Array, jax.Array]:
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

    def observer(self, state: Any, a_start: jax.Array, a_end: jax.Array, carry: jax.Array):
        """`jpm_core.nbody`'s observer: add the step's shell of the light cone to `carry`."""
        if self.method == "mesh":
            return self._observe_mesh(state, a_start, a_end, carry)
        return self._observe_particles(state, a_start, a_end, carry)

    def _observe_mesh(self, state, a_start, a_end, carry):
        """Paint the shell's particles on the run's mesh (CIC), then integrate `q (1 + delta)`
        along `rays_per_pixel^2` rays per pixel over the shell widened by one cell on each side
        (the shell's CIC clouds lie within it), with `nodes_per_step` midpoint nodes."""
        dtype = carry.dtype
        mesh = np.asarray(self.domain.mesh_shape, float)
        cell_np = np.asarray(self.domain.box_size, float) / mesh
        cell = jnp.asarray(cell_np, dtype)
        positions = jnp.asarray(state.positions, dtype)
        chi_p = jnp.mod(positions[..., 2] * cell[2], jnp.asarray(self.domain.box_size[2], dtype))
        chi_hi = comoving_distance(self.cosmo, a_start.astype(dtype))
        chi_lo = comoving_distance(self.cosmo, a_end.astype(dtype))
        inside = (chi_p >= chi_lo) & (chi_p < chi_hi)
        counts = paint(positions, self.domain, weights=inside.astype(dtype))
        counts = _compensate_cic(counts, self.domain.mesh_shape)
        mean_count = positions.size / 3 / float(np.prod(mesh))
        # ray nodes: midpoints of nodes_per_step equal pieces of [chi_lo - c, chi_hi + c]
        lo = jnp.maximum(chi_lo - cell[2], 0.0)
        hi = chi_hi + cell[2]
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
        px = (box[0] / 2 + chi[:, None, None] * tx[None]) / cell[0]
        py = (box[1] / 2 + chi[:, None, None] * ty[None]) / cell[1]
        pz = jnp.broadcast_to(chi[:, None, None] / cell[2], px.shape)
        values = read(counts, jnp.stack([px, py, pz], axis=-1), self.domain) / mean_count
        chi_nodes, q_nodes = self._table(dtype)
        q = jax.vmap(lambda row: jnp.interp(chi, chi_nodes, row))(q_nodes)  # (n_src, k)
        rays = jnp.einsum("sk,kyx->syx", q, values) * dchi
        pixels = rays.reshape(rays.shape[0], n, s, n, s).mean(axis=(2, 4))
        return carry + pixels

    def _observe_particles(self, state, a_start, a_end, carry):
        dtype = carry.dtype
        cell = jnp.asarray(
            np.asarray(self.domain.box_size, float) / np.asarray(self.domain.mesh_shape, float),
            dtype,
        )
        box = jnp.asarray(np.asarray(self.domain.box_size, float), dtype)
        x = jnp.reshape(jnp.asarray(state.positions, dtype), (-1, 3)) * cell[None, :]
        x = jnp.mod(x, box[None, :])  # periodic box: wrap before measuring distances
        chi_p = x[:, 2]
        chi_hi = comoving_distance(self.cosmo, a_start.astype(dtype))
        chi_lo = comoving_distance(self.cosmo, a_end.astype(dtype))
        inside = (chi_p >= chi_lo) & (chi_p < chi_hi) & (chi_p > 0)
        safe_chi = jnp.where(inside, chi_p, 1.0)
        chi_nodes, q_nodes = self._table(dtype)
        q = jax.vmap(lambda row: jnp.interp(safe_chi, chi_nodes, row))(q_nodes)
        volume = float(np.prod(self.domain.box_size)) / x.shape[0]
        weight = jnp.where(inside, volume / (safe_chi**2 * self.geometry.pixel_rad**2), 0.0)
        weights = q * weight[None, :]  # (n_sources, n_particles)
        theta_x = (x[:, 0] - box[0] / 2) / safe_chi
        theta_y = (x[:, 1] - box[1] / 2) / safe_chi
        return carry + _paint_cic(weights, theta_x, theta_y, self.geometry)

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


def _compensate_cic(field: jax.Array, mesh_shape: Sequence[int]) -> jax.Array:
    """Divide by the windows of CIC painting and CIC (trilinear) reading, `prod_i sinc(k_i / 2)^4`
    (`k_i` in radians per cell), in Fourier space."""
    windows = []
    for axis, n in enumerate(mesh_shape):
        freq = np.fft.rfftfreq(n) if axis == len(mesh_shape) - 1 else np.fft.fftfreq(n)
        shape = [1] * len(mesh_shape)
        shape[axis] = freq.size
        windows.append(np.sinc(freq).reshape(shape) ** 4)
    window = windows[0] * windows[1]  # transverse only: the ray integral along z needs none
    spectrum = jnp.fft.rfftn(field) / jnp.asarray(window, field.dtype)
    return jnp.fft.irfftn(spectrum, s=tuple(mesh_shape)).astype(field.dtype)


def _paint_cic(weights: jax.Array, tx: jax.Array, ty: jax.Array, geometry: FlatSky) -> jax.Array:
    """Bilinear deposit of `weights` (n, p) at angles (tx, ty) (radians from the centre) on the
    non-periodic map; deposits that fall off the map are dropped."""
    n = geometry.npix
    u = tx / geometry.pixel_rad + n / 2 - 0.5
    v = ty / geometry.pixel_rad + n / 2 - 0.5
    i0 = jnp.floor(u)
    j0 = jnp.floor(v)
    fu, fv = u - i0, v - j0
    i0 = i0.astype(jnp.int32)
    j0 = j0.astype(jnp.int32)
    out = jnp.zeros((weights.shape[0], n, n), weights.dtype)
    for di, wu in ((0, 1 - fu), (1, fu)):
        for dj, wv in ((0, 1 - fv), (1, fv)):
            i, j = i0 + di, j0 + dj
            ok = (i >= 0) & (i < n) & (j >= 0) & (j < n)
            flat = jnp.where(ok, j * n + i, n * n)  # out of range: dropped
            w = weights * (wu * wv)[None, :]
            out = (
                out.reshape(weights.shape[0], n * n)
                .at[:, flat]
                .add(w, mode="drop")
                .reshape(weights.shape[0], n, n)
            )
    return out


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


def _concrete_chi(cosmo: Cosmology, a: float) -> float | None:
    leaves = jax.tree.leaves(cosmo)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return None
    return float(comoving_distance(cosmo, a))
