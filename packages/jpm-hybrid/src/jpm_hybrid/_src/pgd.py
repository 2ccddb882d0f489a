"""The PGD baseline: potential gradient descent (Dai, Pen & Yu 2018).

A short-range displacement added to the particles of a PM snapshot, along the gradient of a
band-passed potential:

    dx = alpha(a) * (-grad) phi_PGD,   phi_PGD,k = phi_k * exp(-(k_l / k)^2) * exp(-(k / k_s)^4),

with `laplacian(phi) = delta` of the painted particles (the PM potential), so particles move
towards the potential minima of halos (`alpha > 0`) on scales between `1/k_l` and `1/k_s`: the
small-scale clustering that a coarse PM run lacks. The low-pass `exp(-(k/k_s)^4)` suppresses the
grid noise, the high-pass `exp(-(k_l/k)^2)` leaves the large scales to the PM force. Three fitted
parameters, `alpha`, `k_l`, `k_s` (h/Mpc); `alpha(a) = alpha * a^mu` with a fixed exponent `mu`
(0 by default, as when one snapshot is fitted).

The displacement is computed with `jpm_core.pm_forces` and its `potential_filter` hook, so it
uses the run's own Poisson solver, mass assignment and gradient kernel.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

import jpm_core

from ._checks import check_positive_float


def pgd_kernel(k: Array, k_l: Array, k_s: Array) -> Array:
    """The PGD band-pass `exp(-(k_l/k)^2) exp(-(k/k_s)^4)` (0 at `k = 0`); `k`, `k_l`, `k_s` in the
    same unit."""
    safe = jnp.where(k > 0, k, 1.0)
    high = jnp.where(k > 0, jnp.exp(-((k_l / safe) ** 2)), 0.0)
    return high * jnp.exp(-((k / k_s) ** 4))


class PGDCorrection(nnx.Module):
    """The PGD baseline as a flax nnx module with three trainable parameters: `alpha`,
    `log_k_l`, `log_k_s` (the scales are fitted in log so that they stay positive).

    Apply it with `jpm_hybrid.hybrid_nbody(..., model=pgd)` (a plain PM run whose snapshots are then
    displaced) or directly with `pgd(positions, domain, a)`; train it with `jpm_hybrid.train_hybrid`
    like a `SplineFilter`.

    **Arguments:**

    - `k_l`: the high-pass scale in h/Mpc (large scales are left to the PM force).
    - `k_s`: the low-pass scale in h/Mpc (the grid noise is cut).
    - `alpha`: the initial amplitude (dimensionless; 0 reproduces plain PM).
    - `mu`: the fixed exponent of `alpha(a) = alpha * a^mu` (not trained).
    - `forces`: the `jpm_core.ForceConfig` of the displacement's Poisson solve (default: jpm-core's).
    """

    def __init__(
        self,
        k_l: float,
        k_s: float,
        *,
        alpha: float = 0.0,
        mu: float = 0.0,
        forces: jpm_core.ForceConfig | None = None,
    ):
        k_l = check_positive_float("k_l", k_l)
        k_s = check_positive_float("k_s", k_s)
        if not math.isfinite(float(alpha)):
            raise ValueError(f"alpha must be finite, got {alpha!r}")
        if not math.isfinite(float(mu)):
            raise ValueError(f"mu must be finite, got {mu!r}")
        self.alpha = nnx.Param(jnp.asarray(float(alpha), jnp.float32))
        self.log_k_l = nnx.Param(jnp.asarray(math.log(k_l), jnp.float32))
        self.log_k_s = nnx.Param(jnp.asarray(math.log(k_s), jnp.float32))
        self.mu = float(mu)
        self.forces = jpm_core.ForceConfig() if forces is None else forces

    def __call__(self, positions: Array, domain: jpm_core.Domain, a: Any) -> Array:
        """The PGD displacement (mesh units, shaped like `positions`) of particles at `positions`
        (mesh units of `domain`, one snapshot) at scale factor `a`."""
        dtype = jnp.asarray(positions).dtype
        params = {
            "k_l": jnp.exp(self.log_k_l[...]).astype(dtype),
            "k_s": jnp.exp(self.log_k_s[...]).astype(dtype),
        }
        force = jpm_core.pm_forces(
            positions,
            domain,
            forces=self.forces,
            potential_filter=lambda k, a_, p: pgd_kernel(k, p["k_l"], p["k_s"]),
            filter_params=params,
            a=a,
        )
        amplitude = self.alpha[...].astype(dtype) * jnp.asarray(a, dtype) ** self.mu
        return amplitude * force

    def correct(self, snapshots: jpm_core.ParticleState, domain: jpm_core.Domain):
        """Stacked snapshots (`a` of shape `(n,)`) with the PGD displacement added to each."""
        moved = [
            snapshots.positions[i] + self(snapshots.positions[i], domain, snapshots.a[i])
            for i in range(snapshots.positions.shape[0])
        ]
        return jpm_core.ParticleState(jnp.stack(moved), snapshots.momenta, snapshots.a)


def pgd_parameters(model: PGDCorrection) -> dict[str, float]:
    """The fitted parameters in physical units: `alpha`, `k_l`, `k_s` (h/Mpc), `mu`."""
    return {
        "alpha": float(jax.device_get(model.alpha[...])),
        "k_l": float(jnp.exp(model.log_k_l[...])),
        "k_s": float(jnp.exp(model.log_k_s[...])),
        "mu": model.mu,
    }
