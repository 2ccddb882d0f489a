"""Toy distributions on SO(3) with exact samplers and densities (benchmarks for DSM and the C2ST).

- `four_blobs()`: an equal-weight mixture of four IGSO(3) blobs (`sigma = 0.2`) at fixed, well separated
  means, as an `IGSO3Mixture` (exact sampler, density and score; noising it by IGSO(3)(s) gives the
  mixture with `sigma -> sqrt(sigma^2 + s^2)`, so its noised scores are exact too).
- `Checkerboard`: Haar measure restricted to the rotations whose rotated z-axis `R e_z` falls in the
  "black" cells of a checkerboard on the sphere, cells equal in area: longitude `phi` in `n_lon` bins of
  width `2 pi / n_lon` times `z = cos(theta)` in `n_z` bins of width `2 / n_z`; cell `(i, j)` is black when
  `i + j` is even. With ZYZ Euler angles `R = Rz(phi) Ry(theta) Rz(psi)`, the Haar measure is uniform in
  `(phi, cos theta, psi)`, so a sample is `phi, cos theta` uniform in a uniformly chosen black cell and
  `psi` uniform on `[0, 2 pi)`. The density w.r.t. the normalised Haar measure is 2 on the black cells
  (half the sphere) and 0 elsewhere.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_matrix, check_positive, check_rotation, poison
from .igso3 import IGSO3
from .so3 import quaternion_to_matrix

# Unit quaternions (w, x, y, z) of the four blob means, fixed once (normalised below); pairwise
# rotation angles >= 1.63 rad, 8 sigma at the default sigma = 0.2.
_FOUR_BLOB_QUATERNIONS = np.array(
    [
        [0.9, 0.3, -0.2, 0.25],
        [0.1, -0.7, 0.6, 0.35],
        [0.35, 0.25, 0.8, -0.4],
        [0.2, 0.5, -0.1, -0.85],
    ]
)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class IGSO3Mixture:
    """Mixture of IGSO(3) distributions with a common `eps`, as a PyTree.

    **Arguments:**

    - `means`: component means, shape `(K, 3, 3)`.
    - `eps`: scalar heat-kernel time (`sigma^2 / 2`) of every component, > 0.
    - `weights`: component weights, shape `(K,)`, summing to 1.
    """

    means: jax.Array
    eps: jax.Array
    weights: jax.Array

    def __post_init__(self):
        shape = np.shape(self.means)
        if len(shape) != 3 or shape[1:] != (3, 3):
            raise ValueError(f"`means` must have shape (K, 3, 3), got {shape}.")
        if np.shape(self.weights) != shape[:1]:
            raise ValueError(
                f"`weights` must have shape ({shape[0]},), got {np.shape(self.weights)}."
            )
        if np.shape(self.eps) != ():
            raise ValueError(f"`eps` must be a scalar, got shape {np.shape(self.eps)}.")
        check_positive("eps", self.eps)

    @property
    def sigma(self):
        """The common noise scale `sqrt(2 eps)`."""
        return jnp.sqrt(2.0 * self.eps)

    def noised(self, sigma) -> IGSO3Mixture:
        """The law of `exp(hat(v)) @ R` for `R` from this mixture and `v` IGSO(3)(sigma) noise."""
        check_positive("sigma", sigma)
        return IGSO3Mixture(self.means, self.eps + 0.5 * jnp.asarray(sigma) ** 2, self.weights)

    def _components(self):
        return [IGSO3(self.eps, self.means[k]) for k in range(self.means.shape[0])]

    def sample(self, key, shape=()):
        """Rotations of shape `(*shape, 3, 3)`."""
        shape = tuple(shape)
        key_c, key_s = jax.random.split(key)
        c = jax.random.choice(key_c, self.means.shape[0], shape, p=self.weights)
        R = IGSO3(self.eps).sample(key_s, shape)
        return R @ self.means[c]

    def _log_probs(self, R):
        check_matrix("R", R)  # values: checked by `IGSO3.log_prob` (ValueError, or NaN when traced)
        log_p = jnp.stack([d.log_prob(R) for d in self._components()], axis=-1)
        log_w = jnp.log(self.weights).reshape((1,) * (log_p.ndim - 1) + (-1,))
        return log_p + log_w

    def log_prob(self, R):
        """Log density w.r.t. the normalised Haar measure, shape `R.shape[:-2]`."""
        return jax.nn.logsumexp(self._log_probs(R), axis=-1)

    def score(self, R):
        """World-frame score, shape `(..., 3)`: the responsibility-weighted component scores."""
        resp = jax.nn.softmax(self._log_probs(R), axis=-1)
        scores = jnp.stack([d.score(R) for d in self._components()], axis=-2)
        return jnp.sum(resp[..., None] * scores, axis=-2)


def four_blobs(sigma=0.2, dtype=None) -> IGSO3Mixture:
    """The four-blob benchmark: equal-weight IGSO(3) mixture at four fixed means.

    **Arguments:**

    - `sigma`: noise scale of every blob (`eps = sigma^2 / 2`), > 0.
    - `dtype`: floating dtype (default: JAX's default float).

    **Returns:**

    An `IGSO3Mixture`.
    """
    check_positive("sigma", sigma)
    dtype = dtype or jnp.result_type(float)
    q = _FOUR_BLOB_QUATERNIONS / np.linalg.norm(_FOUR_BLOB_QUATERNIONS, axis=-1, keepdims=True)
    means = quaternion_to_matrix(jnp.asarray(q, dtype))
    return IGSO3Mixture(means, jnp.asarray(0.5 * sigma**2, dtype), jnp.full((4,), 0.25, dtype))


def _rz(a):
    c, s = jnp.cos(a), jnp.sin(a)
    o, z = jnp.ones_like(a), jnp.zeros_like(a)
    return jnp.stack(
        [jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1), jnp.stack([z, z, o], -1)], -2
    )


def _ry(a):
    c, s = jnp.cos(a), jnp.sin(a)
    o, z = jnp.ones_like(a), jnp.zeros_like(a)
    return jnp.stack(
        [jnp.stack([c, z, s], -1), jnp.stack([z, o, z], -1), jnp.stack([-s, z, c], -1)], -2
    )


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Checkerboard:
    """Checkerboard distribution of the rotated z-axis (see the module docstring), Haar within cells.

    **Arguments:**

    - `n_lon`: number of longitude bins (even, >= 2).
    - `n_z`: number of bins of `z = cos(theta)` (>= 1).
    """

    n_lon: int = 8
    n_z: int = 4

    def __post_init__(self):
        if not (isinstance(self.n_lon, int) and self.n_lon >= 2 and self.n_lon % 2 == 0):
            raise ValueError(f"`n_lon` must be an even int >= 2, got {self.n_lon!r}.")
        if not (isinstance(self.n_z, int) and self.n_z >= 1):
            raise ValueError(f"`n_z` must be a positive int, got {self.n_z!r}.")

    def cell(self, R):
        """Cell indices `(i_lon, j_z)` of `R e_z`, each of shape `R.shape[:-2]` (`ValueError` for
        concrete non-rotations; integer indices cannot be NaN, so traced ones are not flagged here:
        `log_prob` flags them)."""
        R, _ = check_rotation("R", R)
        axis = R[..., :, 2]
        phi = jnp.mod(jnp.arctan2(axis[..., 1], axis[..., 0]), 2 * jnp.pi)
        i = jnp.clip(jnp.floor(phi / (2 * jnp.pi) * self.n_lon), 0, self.n_lon - 1).astype(int)
        j = jnp.clip(jnp.floor((axis[..., 2] + 1) / 2 * self.n_z), 0, self.n_z - 1).astype(int)
        return i, j

    def log_prob(self, R):
        """Log density w.r.t. the normalised Haar measure: `log 2` on black cells, `-inf` elsewhere."""
        R, valid = check_rotation("R", R)
        i, j = self.cell(R)
        dtype = jnp.result_type(R.dtype, float)
        log_p = jnp.where((i + j) % 2 == 0, jnp.log(jnp.asarray(2.0, dtype)), -jnp.inf)
        return poison(log_p, valid)

    def sample(self, key, shape=(), dtype=None):
        """Exact samples, rotations of shape `(*shape, 3, 3)`."""
        shape = tuple(shape)
        dtype = dtype or jnp.result_type(float)
        k_cell, k_u, k_psi = jax.random.split(key, 3)
        # black cells: pick j uniformly, then i of the right parity uniformly
        n_half = self.n_lon // 2
        cell = jax.random.randint(k_cell, shape, 0, self.n_z * n_half)
        j = cell // n_half
        i = 2 * (cell % n_half) + (j % 2)
        u = jax.random.uniform(k_u, (*shape, 2), dtype=dtype)
        phi = (i + u[..., 0]) * (2 * jnp.pi / self.n_lon)
        z = -1.0 + (j + u[..., 1]) * (2.0 / self.n_z)
        theta = jnp.arccos(jnp.clip(z, -1.0, 1.0))
        psi = jax.random.uniform(k_psi, shape, dtype=dtype, maxval=2 * jnp.pi)
        return _rz(phi) @ _ry(theta) @ _rz(psi)
