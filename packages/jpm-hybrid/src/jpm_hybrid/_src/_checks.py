"""Eager input checks of jpm-hybrid: every check takes `(name, value, ...)` in that order, raises
`ValueError` (bad value or shape) or `TypeError` (wrong type) on concrete input, and is silent on
traced values."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np


def is_concrete(tree: Any) -> bool:
    """Whether no leaf of `tree` is a tracer (its values are known now)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """`value` as an int; TypeError for a non-integer (bool included), ValueError below `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_positive_float(name: str, value: Any) -> float:
    """`value` as a finite, positive float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return value


def check_nonnegative_float(name: str, value: Any) -> float:
    """`value` as a finite float >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`, else ValueError naming them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
