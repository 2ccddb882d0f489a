"""Eager input validation shared by the public functions (shapes are static, so this also runs
under `jit`; value checks only run when the value is concrete)."""

from __future__ import annotations

import numpy as np


def check_matrix(x, name: str = "R") -> None:
    """Raise `ValueError` unless `x` has shape `(..., 3, 3)`."""
    shape = np.shape(x)
    if len(shape) < 2 or tuple(shape[-2:]) != (3, 3):
        raise ValueError(f"`{name}` must have shape (..., 3, 3), got shape {tuple(shape)}.")


def check_vector(x, size: int = 3, name: str = "v") -> None:
    """Raise `ValueError` unless `x` has shape `(..., size)`."""
    shape = np.shape(x)
    if len(shape) < 1 or shape[-1] != size:
        raise ValueError(f"`{name}` must have shape (..., {size}), got shape {tuple(shape)}.")


def concrete_or_none(x):
    """`x` as a NumPy array when its value is known now (not a tracer), else `None`."""
    try:
        return np.asarray(x)
    except Exception:  # jax.errors.TracerArrayConversionError and friends
        return None


def check_positive(x, name: str) -> None:
    """Raise `ValueError` if `x` is concrete and has an entry that is not > 0 (or is NaN)."""
    value = concrete_or_none(x)
    if value is None or value.dtype == object:
        return
    if not np.all(value > 0):
        raise ValueError(f"`{name}` must be > 0, got {value!r}.")
