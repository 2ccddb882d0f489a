"""Eager input checks (run before tracing; silent on traced values)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def concrete(x: Any) -> np.ndarray | None:
    """`x` as a NumPy array when its value is known now, else None (tracers, placeholders)."""
    if isinstance(x, jax.core.Tracer):
        return None
    if isinstance(x, (np.ndarray, np.generic, jax.Array, float, int)):
        return np.asarray(x)
    return None


def check_positive(name: str, x: Any, *, allow_inf: bool = False) -> None:
    """ValueError if a concrete `x` has a non-positive, NaN or (unless allowed) infinite entry."""
    value = concrete(x)
    if value is None:
        return
    bad = ~(value > 0) | np.isnan(value)
    if not allow_inf:
        bad |= np.isinf(value)
    if np.any(bad):
        first = value.reshape(-1)[np.argmax(bad.reshape(-1))]
        raise ValueError(
            f"{name} must be positive{'' if allow_inf else ' and finite'}; found {first!r}"
        )


def check_scalar(
    name: str,
    x: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = True,
    high_open: bool = False,
) -> None:
    """ValueError if a concrete scalar `x` is outside the (low, high] interval (open/closed as asked)."""
    value = concrete(x)
    if value is None:
        return
    if value.shape != ():
        raise ValueError(f"{name} must be a scalar, got shape {value.shape}")
    v = float(value)
    ok = not np.isnan(v)
    if low is not None:
        ok &= v > low if low_open else v >= low
    if high is not None:
        ok &= v < high if high_open else v <= high
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {v!r}")


def check_int(name: str, x: Any, *, minimum: int) -> int:
    """The Python int `x`, or ValueError/TypeError if it is not an int >= minimum."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be a Python int, got {x!r}")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x!r}")
    return int(x)
