"""jlens' input checks, one home for every module (the federation's convention).

Every check takes `(name, value, ...)` in that order, `name` being the argument as the user wrote
it. Eager (concrete) bad input raises before any compute: `ValueError` for a bad value or shape,
`TypeError` for a wrong type. Checks of values skip tracers; the traced path poisons the result with
NaN where the module says so.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

__all__ = [
    "check_choice",
    "check_ell",
    "check_finite_positive",
    "check_static_positive",
    "is_concrete",
]


def is_concrete(tree: object) -> bool:
    """Whether no leaf of `tree` is a JAX tracer (its values are known while tracing)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def check_finite_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """Eager `ValueError` unless every element of a concrete `value` is finite and > 0 (>= 0)."""
    if not is_concrete(value):
        return
    array = np.asarray(value, dtype=np.float64)
    ok = np.isfinite(array) & ((array >= 0) if allow_zero else (array > 0))
    if not np.all(ok):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")


def check_static_positive(name: str, value: Any) -> float:
    """`value` as a Python float if it is a finite number > 0, else `ValueError`/`TypeError`."""
    if isinstance(value, jax.core.Tracer | bool):
        raise TypeError(f"{name} must be a Python number (it is static), got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a real number, got {value!r}") from error
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return number


def check_ell(name: str, ell: Any) -> None:
    """Eager `ValueError` unless concrete multipoles are finite and >= 1, in a 0-d or 1-d array."""
    if np.ndim(ell) > 1:
        raise ValueError(f"{name} must be a scalar or a 1-d array, got shape {np.shape(ell)}")
    if not is_concrete(ell):
        return
    array = np.asarray(ell, dtype=np.float64)
    if not np.all(np.isfinite(array) & (array >= 1)):
        raise ValueError(f"{name} must be finite and >= 1, got {ell!r}")


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """`ValueError` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
