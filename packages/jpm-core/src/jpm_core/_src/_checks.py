"""jpm-core's input checks, one home for every module (the federation's convention).

Every check takes `(name, value, ...)` in that order, `name` being the argument as the user wrote
it. Eager (concrete) bad input raises before any compute: `ValueError` for a bad value or shape,
`TypeError` for a wrong type. Checks of values skip tracers; the traced path poisons with NaN
where the module says so.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from jpm_core._src.config import KERNEL_KINDS, LAPLACE_KINDS, SCHEMES
from jpm_core._src.domain import Domain

__all__ = [
    "A_MAX",
    "check_domain",
    "check_kernel_kind",
    "check_laplace_kind",
    "check_positions",
    "check_scale_factor",
    "check_scheme",
    "check_shape",
    "check_weights",
    "float_dtype",
    "is_concrete",
]

A_MAX = 1.5
"""Largest scale factor accepted by `lpt` and `nbody` (the growth tables end at about 1.65)."""


def float_dtype() -> jnp.dtype:
    """The default floating dtype: float64 under `jax_enable_x64`, float32 otherwise."""
    return jnp.result_type(float)


def is_concrete(tree: object) -> bool:
    """Whether no leaf of `tree` is a JAX tracer (its values are known while tracing)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def check_domain(name: str, domain: object) -> Domain:
    """`domain` if it is a `Domain`, else `TypeError`."""
    if not isinstance(domain, Domain):
        raise TypeError(f"{name} must be a jpm_core.Domain, got {type(domain).__name__}")
    return domain


def check_shape(name: str, array: Array, expected: tuple[int, ...]) -> None:
    """`ValueError` unless `array.shape == expected`."""
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(array.shape)}")


def check_scale_factor(name: str, a: object) -> None:
    """Eager check that a concrete scale factor (or array of them) lies in (0, A_MAX]."""
    if isinstance(a, jax.core.Tracer):
        return
    values = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values <= 0) or np.any(values > A_MAX):
        raise ValueError(f"{name} must lie in (0, {A_MAX}], got {a!r}")


def check_positions(name: str, positions: ArrayLike) -> Array:
    """A `(..., 3)` floating array of positions in mesh units (integers are promoted)."""
    positions = jnp.asarray(positions)
    if positions.ndim < 1 or positions.shape[-1] != 3:
        raise ValueError(
            f"{name} must have shape (..., 3) (mesh units), got shape {tuple(positions.shape)}"
        )
    if not jnp.issubdtype(positions.dtype, jnp.floating):
        positions = positions.astype(float_dtype())
    return positions


def check_weights(name: str, weights: ArrayLike | None, positions: Array) -> Array:
    """Particle weights of shape `positions.shape[:-1]`: default 1, a scalar is broadcast."""
    lead = positions.shape[:-1]
    if weights is None:
        return jnp.ones(lead, dtype=positions.dtype)
    weights = jnp.asarray(weights)
    if weights.ndim == 0:
        return jnp.broadcast_to(weights, lead)
    if weights.shape != lead:
        raise ValueError(
            f"{name} must be a scalar or have shape positions.shape[:-1] = {lead}, "
            f"got {tuple(weights.shape)}"
        )
    return weights


def check_scheme(name: str, scheme: object) -> int:
    """The stencil order (2 CIC, 3 TSC) of a mass-assignment scheme name."""
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"{name} must be one of {tuple(SCHEMES)}, got {scheme!r}")
    return SCHEMES[scheme]


def check_kernel_kind(name: str, kind: object, kinds: tuple[str, ...] = KERNEL_KINDS) -> str:
    """A Fourier-kernel discretisation, one of `kinds` (`"spectral"` or `"finite_difference"`)."""
    if not isinstance(kind, str) or kind not in kinds:
        raise ValueError(f"{name} must be one of {kinds}, got {kind!r}")
    return kind


def check_laplace_kind(name: str, kind: object) -> str:
    """A Laplacian discretisation, `"lattice"`, `"spectral"` or `"finite_difference"`."""
    return check_kernel_kind(name, kind, LAPLACE_KINDS)
