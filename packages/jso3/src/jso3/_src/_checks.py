"""Input checks shared by every module of the package, all with the argument order `(name, value, ...)`.

Shapes are static, so shape checks also run under `jit`. Value checks run when the value is concrete
(not a tracer) and raise `ValueError` before any compute; on traced values they cannot raise, so the
functions that take rotations poison their result with NaN instead (`rotation_mask` + `poison`): a
traced non-rotation gives NaN, never a finite wrong answer.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def concrete_or_none(x):
    """`x` as a NumPy array when its value is known now (not a tracer), else `None`."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except Exception:  # jax.errors.TracerArrayConversionError and friends
        return None


def check_matrix(name: str, x) -> None:
    """Raise `ValueError` unless `x` has shape `(..., 3, 3)`."""
    shape = np.shape(x)
    if len(shape) < 2 or tuple(shape[-2:]) != (3, 3):
        raise ValueError(f"`{name}` must have shape (..., 3, 3), got shape {tuple(shape)}.")


def check_vector(name: str, x, size: int = 3) -> None:
    """Raise `ValueError` unless `x` has shape `(..., size)`."""
    shape = np.shape(x)
    if len(shape) < 1 or shape[-1] != size:
        raise ValueError(f"`{name}` must have shape (..., {size}), got shape {tuple(shape)}.")


def check_positive(name: str, x) -> None:
    """Raise `ValueError` if `x` is concrete and has an entry that is not > 0 (or is NaN)."""
    value = concrete_or_none(x)
    if value is None or value.dtype == object:
        return
    if not np.all(value > 0):
        raise ValueError(f"`{name}` must be > 0, got {value!r}.")


def check_positive_int(name: str, x) -> None:
    """Raise `ValueError` unless `x` is a Python (or NumPy) int >= 1."""
    if isinstance(x, bool) or not isinstance(x, int | np.integer) or x < 1:
        raise ValueError(f"`{name}` must be a positive int, got {x!r}.")


def rotation_tolerance(dtype) -> float:
    """Largest accepted `max |R^T R - I|` for rotations of `dtype`: `max(1e-5, 1000 eps)`, i.e. 1e-5
    in float64 (so float32 rotations cast to float64 pass) and 1.2e-4 in float32 (a 1000-step float32
    ODE without the Newton-Schulz polish drifts by a few 1e-5)."""
    return max(1e-5, 1000.0 * float(jnp.finfo(dtype).eps))


def as_float(x):
    """`x` as a JAX array of a floating dtype (JAX's default float for integer input)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _orthogonality_error(R, xp):
    eye = xp.broadcast_to(xp.eye(3, dtype=R.dtype), R.shape)
    return xp.max(xp.abs(xp.swapaxes(R, -1, -2) @ R - eye), axis=(-2, -1))


def _det(R):
    return (
        R[..., 0, 0] * (R[..., 1, 1] * R[..., 2, 2] - R[..., 1, 2] * R[..., 2, 1])
        - R[..., 0, 1] * (R[..., 1, 0] * R[..., 2, 2] - R[..., 1, 2] * R[..., 2, 0])
        + R[..., 0, 2] * (R[..., 1, 0] * R[..., 2, 1] - R[..., 1, 1] * R[..., 2, 0])
    )


class Validity(NamedTuple):
    """What `check_rotation` returns for traced rotations: the boolean mask `valid` (shape
    `R.shape[:-2]`, computed without gradient) and the rotations themselves (to poison gradients)."""

    valid: jax.Array
    R: jax.Array


def check_rotation(name: str, R):
    """Validate rotation matrices and return them as a floating JAX array, with their validity.

    Always checks the shape `(..., 3, 3)`. When `R` is concrete, raises `ValueError` unless every
    matrix is finite, orthogonal (`max |R^T R - I| <= rotation_tolerance(dtype)`) and has
    determinant +1, and returns `(R, None)`. When `R` is traced, returns `(R, Validity(valid, R))`;
    pass it to `poison`.
    """
    check_matrix(name, R)
    value = concrete_or_none(R)
    R = as_float(R)
    tol = rotation_tolerance(R.dtype)
    if value is not None:
        value = np.asarray(value, dtype=np.dtype(R.dtype))
        finite = np.all(np.isfinite(value), axis=(-2, -1))
        with np.errstate(invalid="ignore", over="ignore"):
            error = np.where(finite, _orthogonality_error(value, np), np.inf)
            det = _det(value)
        bad = ~(finite & (error <= tol) & (det > 0))
        if np.any(bad):
            first = int(np.argmax(bad.reshape(-1)))
            where = f" (first at index {np.unravel_index(first, bad.shape)})" if bad.ndim else ""
            if not finite.reshape(-1)[first]:
                reason = "has a non-finite entry"
            elif error.reshape(-1)[first] > tol:
                err = float(error.reshape(-1)[first])
                reason = f"is not orthogonal: max |R^T R - I| = {err:.3g} > {tol:.3g}"
            else:
                reason = "has determinant -1 (a reflection)"
            raise ValueError(
                f"`{name}` must hold rotation matrices; {int(np.sum(bad))} of {bad.size} "
                f"{reason}{where}."
            )
        return R, None
    Rs = jax.lax.stop_gradient(R)
    error = _orthogonality_error(Rs, jnp)
    valid = jnp.all(jnp.isfinite(Rs), axis=(-2, -1)) & (error <= tol) & (_det(Rs) > 0)
    return R, Validity(valid, R)


def poison(out, *validities):
    """`out` with NaN, in value and in gradient, where a `Validity` from `check_rotation` is False.

    Each mask has shape `out.shape[:k]` for some `k` (the batch dimensions come first); for a
    reduced output (e.g. a scalar loss over a batch) any invalid matrix poisons all of it. `None`
    (concrete, already checked input) is skipped. The gradient with respect to the offending
    rotations is NaN as well (not the finite value a `where` inside the computation could give).
    """
    checks = [v for v in validities if v is not None]
    if not checks:
        return out
    out = jnp.asarray(out)
    for valid, R in checks:
        # NaN in every entry of the gradient w.r.t. an invalid R, exactly 0 for the valid ones
        # (a product with a constant that is 0 or NaN: a `where` would pass 0 * NaN = NaN
        # cotangents to the valid matrices too)
        scale = jnp.where(valid, 0.0, jnp.nan).astype(R.dtype)
        tripwire = jnp.sum(R, axis=(-2, -1)) * scale
        extra = out.ndim - valid.ndim
        if extra < 0:
            valid, tripwire, extra = jnp.all(valid), jnp.sum(tripwire), out.ndim
        shape = valid.shape + (1,) * extra
        factor = jnp.where(valid, 1.0, jnp.nan).reshape(shape).astype(out.dtype)
        out = out * factor + tripwire.reshape(shape).astype(out.dtype)
    return out
