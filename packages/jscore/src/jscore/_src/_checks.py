"""Eager input checks (run before tracing; silent on traced values)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ._fourier import is_hermitian_symmetric, rfft_shape


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


def check_float(
    name: str,
    x: Any,
    *,
    low: float | None = None,
    low_open: bool = True,
    high: float | None = None,
    high_open: bool = False,
) -> float:
    """The Python float `x` (a configuration field), or ValueError if it is not a finite real number in
    the interval (open/closed as asked); unlike `check_scalar`, `x` must be concrete."""
    if isinstance(x, jax.core.Tracer):
        raise TypeError(f"{name} must be a concrete number (configuration is static), got a tracer")
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {x!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}")
    check_scalar(name, np.float64(v), low=low, high=high, low_open=low_open, high_open=high_open)
    return v


def check_sigma_range(name_min: str, sigma_min: Any, name_max: str, sigma_max: Any) -> None:
    """ValueError unless concrete `0 < sigma_min <= sigma_max`."""
    check_scalar(name_min, sigma_min, low=0.0)
    check_scalar(name_max, sigma_max, low=0.0)
    lo, hi = concrete(sigma_min), concrete(sigma_max)
    if lo is not None and hi is not None and not float(lo) <= float(hi):
        raise ValueError(
            f"need {name_min} <= {name_max}, got {name_min}={float(lo)!r} > {name_max}={float(hi)!r}"
        )


def check_power_map(name: str, power: Any, shape: Any) -> None:
    """ValueError unless `shape` is a tuple of positive ints and a concrete `power` is a positive,
    finite, symmetric map on the half-complex grid of fields of that shape."""
    if (
        not isinstance(shape, tuple)
        or not shape
        or not all(isinstance(n, int) and n > 0 for n in shape)
    ):
        raise ValueError(f"{name}.shape must be a non-empty tuple of positive ints, got {shape!r}")
    value = concrete(power)
    if value is None:
        return
    if value.shape != rfft_shape(shape):
        raise ValueError(
            f"{name}.power must live on the half-complex grid {rfft_shape(shape)} of a field of "
            f"shape {shape}, got shape {value.shape}"
        )
    check_positive(f"{name}.power", value)
    if not is_hermitian_symmetric(value, shape):
        raise ValueError(
            f"{name}.power must be symmetric, power(-k) = power(k), on the self-conjugate modes"
        )


def check_field_shape(name: str, x: Any, shape: tuple[int, ...], what: str) -> None:
    """ValueError if the array `x` (concrete or traced: shapes are static) is not of `shape`; `what`
    names the object that expects it (e.g. "GaussianFieldPrior"). No broadcasting."""
    got = tuple(np.shape(x))
    if got != tuple(shape):
        raise ValueError(
            f"{what} is defined on fields of shape {tuple(shape)}, but {name} has shape {got} "
            "(no broadcasting)"
        )
