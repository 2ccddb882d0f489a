"""The particle state PyTree shared by LPT and the time integrator."""

from __future__ import annotations

import dataclasses

import jax
from jax import Array

__all__ = ["ParticleState"]


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
