"""Linear forward operators `A`, each given as a pair of functions `forward(x) = A x` and
`adjoint(y) = A^T y`.

Any pair of functions works with jscore (that is the contract: lensing operators live in jlens); the
classes here cover the cases used by tests and baselines. Their bound methods `op.forward` and
`op.adjoint` are the functions to pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._checks import concrete


@dataclasses.dataclass(frozen=True)
class IdentityOperator:
    """`A = I` on fields of the given shape (denoising).

    **Arguments:**

    - `shape`: shape of one field (static).
    """

    shape: tuple[int, ...] = dataclasses.field(metadata={"static": True})

    def forward(self, x: Array) -> Array:
        return x

    def adjoint(self, y: Array) -> Array:
        return y


@dataclasses.dataclass(frozen=True)
class MaskOperator:
    """`A = diag(mask)`: keeps the observed pixels and zeroes the others (shape-preserving).

    Since `A A^T = diag(mask)` and the data are identically zero where `mask = 0`, the annealed
    likelihood `N(y; A x, Sigma + sigma^2 I)` is exact for this operator with diagonal noise (see
    `annealed_posterior_sample`), whatever finite variance `Sigma` gives the masked pixels.

    **Arguments:**

    - `mask`: 1 (or True) on observed pixels, 0 (False) on masked ones; the shape of one field.
    """

    mask: Array

    def __post_init__(self):
        value = concrete(self.mask)
        if value is not None and not np.all((value == 0) | (value == 1)):
            raise ValueError("MaskOperator.mask must contain only 0/1 (or booleans)")

    def forward(self, x: Array) -> Array:
        return x * jnp.asarray(self.mask, dtype=x.dtype)

    def adjoint(self, y: Array) -> Array:
        return y * jnp.asarray(self.mask, dtype=y.dtype)


jax.tree_util.register_dataclass(IdentityOperator)
jax.tree_util.register_dataclass(MaskOperator)


def adjoint_mismatch(
    forward_op: Callable[[Array], Array],
    adjoint_op: Callable[[Array], Array],
    x: Array,
    key: Array,
) -> Array:
    """Dot-product test of an operator pair: `|<A u, v> - <u, A^T v>| / (|A u| |v|)` for random
    `u` (shaped like `x`) and `v = A u + w` with random `w`; round-off level when `adjoint_op` is the
    adjoint, of order one when it is not.

    **Arguments:**

    - `forward_op`, `adjoint_op`: the pair to test.
    - `x`: an example field (only its shape and dtype are used).
    - `key`: a `jax.random` key.

    **Returns:**

    The relative mismatch, a scalar.
    """
    y_struct = jax.eval_shape(forward_op, x)
    k1, k2 = jax.random.split(key)
    u = jax.random.normal(k1, jnp.shape(x), jnp.result_type(x))
    au = forward_op(u)
    # v correlated with A u, so that <A u, v> is of order |A u| |v| rather than a random sum.
    v = au + jax.random.normal(k2, y_struct.shape, y_struct.dtype)
    lhs = jnp.vdot(au, v)
    rhs = jnp.vdot(u, adjoint_op(v))
    return jnp.abs(lhs - rhs) / (jnp.linalg.norm(au) * jnp.linalg.norm(v))
