"""The fixed ln(a) grid on which background and growth tables are built, and its interpolation.

Tables are functions of x = ln(a) on a uniform grid from x = -12 (a = 6.1e-6, deep in matter
domination) to x = 0.5 (a = 1.65) with step 1/32; a = 1 (x = 0) is a node, so quantities normalised
at a = 1 are exact there. Between nodes, values are interpolated with cubic Hermite polynomials that
use the exact derivatives the equations provide (error of order step^4 / 384 times the fourth
derivative, below 1e-7 here).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

X_MIN = -12.0
"""ln(a) of the first node."""
STEP = 1.0 / 32.0
"""Grid spacing in ln(a)."""
N_TODAY = 384
"""Index of the node at a = 1 (x = X_MIN + N_TODAY * STEP = 0)."""
N_NODES = N_TODAY + 17
"""Number of nodes: the last one is at x = 0.5."""
X_MAX = X_MIN + STEP * (N_NODES - 1)
"""ln(a) of the last node (0.5): the tables, hence the growth functions and distances, end there."""


def nodes(dtype: jnp.dtype) -> jax.Array:
    """The grid of x = ln(a), shape `(N_NODES,)`."""
    return X_MIN + STEP * jnp.arange(N_NODES, dtype=dtype)


def _locate(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    index = jnp.clip(jnp.floor((x - X_MIN) / STEP), 0, N_NODES - 2)
    # The offset from the node, not (x - X_MIN) / STEP - index: nodes are exact binary fractions, so
    # this keeps float32 precision relative to x near a = 1 (where chi and 1 - a are small).
    t = (x - (X_MIN + STEP * index)) / STEP
    return index.astype(jnp.int32), t


def hermite(x: jax.Array, values: jax.Array, slopes: jax.Array) -> jax.Array:
    """Cubic Hermite interpolation of a table on the grid (polynomial extrapolation outside).

    **Arguments:**

    - `x`: ln(a), any shape.
    - `values`, `slopes`: the table and its derivative with respect to x at the nodes,
      `(N_NODES,)` or `(N_NODES, m)` (several tables interpolated with one gather each).

    **Returns:**

    The interpolated values, shape `x.shape` or `x.shape + (m,)`.
    """
    index, t = _locate(x)
    t = t.reshape(t.shape + (1,) * (values.ndim - 1))
    y0, y1 = values[index], values[index + 1]
    d0, d1 = STEP * slopes[index], STEP * slopes[index + 1]
    u = 1.0 - t
    return (
        (1.0 + 2.0 * t) * u * u * y0
        + t * u * u * d0
        + t * t * (3.0 - 2.0 * t) * y1
        - t * t * u * d1
    )


def hermite_slope(x: jax.Array, values: jax.Array, slopes: jax.Array) -> jax.Array:
    """Derivative with respect to x of [`hermite`][] (same arguments)."""
    index, t = _locate(x)
    t = t.reshape(t.shape + (1,) * (values.ndim - 1))
    y0, y1 = values[index], values[index + 1]
    d0, d1 = STEP * slopes[index], STEP * slopes[index + 1]
    dy = (
        6.0 * t * (t - 1.0) * (y0 - y1)
        + (3.0 * t - 1.0) * (t - 1.0) * d0
        + t * (3.0 * t - 2.0) * d1
    )
    return dy / STEP
