"""The particle state PyTree shared by LPT and the time integrator."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jpm_core._src.domain import Domain

__all__ = ["ParticleState", "rescale_state"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ParticleState:
    """Positions and momenta of particles at one scale factor, as an immutable PyTree.

    Conventions (shared by `jpm_core.lpt` and `jpm_core.nbody`):

    - `positions`: comoving positions in *mesh units* (cells of the `Domain`), shape `(..., 3)`,
      usually `(nx, ny, nz, 3)` (one particle per cell, ordered like the Lagrangian grid). They are
      **not wrapped** into the box: `positions - lagrangian_grid(domain)` is the displacement.
      Painting and reading wrap periodically.
    - `momenta`: the FastPM/pmwd canonical momentum `p = a^3 E(a) dx/da`, in mesh units (cells
      times H0, i.e. the derivative is taken with time measured in units of 1/H0), same shape
      as `positions`. The equations of motion are `dx/da = p / (a^3 E)` and
      `dp/da = F / (a^2 E)` with `F = (3 Omega_m / 2) * pm_forces(x)`.
    - `a`: the scale factor, a scalar array (or `(n_snapshots,)` for stacked snapshots).

    Every field is a leaf: the state passes through `jit`, `vmap`, `grad` and `lax.scan`.
    """

    positions: Array
    momenta: Array
    a: Array


def rescale_state(state: ParticleState, source: Domain, target: Domain) -> ParticleState:
    """Express a `ParticleState` in the mesh units of another `Domain` of the same box.

    Positions and momenta are in cells (see `ParticleState`); this multiplies them, axis by axis,
    by `source.cell_size / target.cell_size`. Its main use is a force mesh finer than the particle
    grid (FastPM's "boost factor", `B = 2` by default there): generate the linear field and the
    LPT state on a particle `Domain`, then run `nbody` on a finer force `Domain`:

    ```python
    particles = jc.Domain(64, 1000.0)   # 64^3 particles
    mesh = jc.Domain(128, 1000.0)       # forces on a 128^3 mesh (B = 2)
    delta = jc.linear_field(key, particles, lambda k: jc.linear_power(cosmo, k))
    state = jc.rescale_state(jc.lpt(cosmo, delta, particles, 0.1), particles, mesh)
    snaps = jc.nbody(cosmo, state, mesh, [1.0], steps=10,
                     kernel="finite_difference", laplace="finite_difference").snapshots
    ```

    Use the finite-difference kernels with a finer force mesh: the spectral gradient aliases the
    particle lattice's harmonics into large-scale forces (`nbody` warns; see the README).
    The lattice blocks of a distributed state keep their sharding (the scaling is elementwise).

    **Arguments:**

    - `state`: the `ParticleState` in cells of `source`.
    - `source`: the `Domain` whose cells `state` is expressed in.
    - `target`: the `Domain` to express it in; same `box_size` as `source`.

    **Returns:** a new `ParticleState` (same `a`, same shapes and dtypes).

    **Raises:** `TypeError`/`ValueError` for non-`Domain` arguments, different boxes, or positions
    and momenta not of shape `(..., 3)` and equal shapes.
    """
    for name, dom in (("source", source), ("target", target)):
        if not isinstance(dom, Domain):
            raise TypeError(f"{name} must be a jpm_core.Domain, got {type(dom).__name__}")
    if not np.allclose(source.box_size, target.box_size, rtol=1e-12, atol=0.0):
        raise ValueError(
            f"source and target must describe the same box, got box_size {source.box_size} "
            f"and {target.box_size}"
        )
    if not isinstance(state, ParticleState):
        raise TypeError(f"state must be a jpm_core.ParticleState, got {type(state).__name__}")
    x, p = jnp.asarray(state.positions), jnp.asarray(state.momenta)
    if x.ndim < 1 or x.shape[-1] != 3 or p.shape != x.shape:
        raise ValueError(
            "state.positions and state.momenta must have the same shape (..., 3), got "
            f"{tuple(x.shape)} and {tuple(p.shape)}"
        )
    ratio = np.asarray(source.cell_size) / np.asarray(target.cell_size)
    ratio = ratio.reshape((1,) * (x.ndim - 1) + (3,))  # explicit rank: rank promotion may raise
    return ParticleState(
        positions=x * jnp.asarray(ratio, x.dtype),
        momenta=p * jnp.asarray(ratio, p.dtype),
        a=state.a,
    )
