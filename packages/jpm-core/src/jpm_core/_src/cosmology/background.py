"""Background expansion of a flat w0-wa CDM universe (radiation neglected): E(a), distances."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jpm_core._src.cosmology import _grid
from jpm_core._src.cosmology.parameters import (
    A_MAX,
    A_TOLERANCE,
    HUBBLE_DISTANCE,
    Cosmology,
    as_float,
    check_cosmology,
    check_scale_factor,
    float_dtype,
    is_valid,
    poison,
    scale_factor_ok,
)

__all__ = ["comoving_distance", "efunc", "scale_factor_of_chi"]

_NEWTON_STEPS = 4


def de_to_matter(cosmo: Cosmology, x: jax.Array) -> jax.Array:
    """rho_de(a) / rho_m(a) at x = ln(a): `(1 - Omega_m) / Omega_m a^(-3 (w0 + wa)) e^(-3 wa (1-a))`."""
    exponent = -3.0 * (cosmo.w0 + cosmo.wa) * x - 3.0 * cosmo.wa * (1.0 - jnp.exp(x))
    return (1.0 - cosmo.Omega_m) / cosmo.Omega_m * jnp.exp(exponent)


def omega_de_of_x(cosmo: Cosmology, x: jax.Array) -> jax.Array:
    """Dark-energy density parameter Omega_de(a) at x = ln(a) (Omega_m(a) = 1 - Omega_de(a))."""
    ratio = de_to_matter(cosmo, x)
    return ratio / (1.0 + ratio)


def _efunc_of_x(cosmo: Cosmology, x: jax.Array) -> jax.Array:
    # E^2 = Omega_m a^-3 (1 + rho_de / rho_m): no cancellation and no 0/0 when Omega_m = 1.
    return jnp.sqrt(cosmo.Omega_m * jnp.exp(-3.0 * x) * (1.0 + de_to_matter(cosmo, x)))


def _dchi_dx(cosmo: Cosmology, x: jax.Array) -> jax.Array:
    # d chi / d ln a = -c / (a H) = -D_H a^(1/2) / sqrt(Omega_m (1 + rho_de / rho_m)).
    return (
        -HUBBLE_DISTANCE
        * jnp.exp(0.5 * x)
        / jnp.sqrt(cosmo.Omega_m * (1.0 + de_to_matter(cosmo, x)))
    )


def _cast(cosmo: Cosmology, dtype: jnp.dtype) -> Cosmology:
    return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=dtype), cosmo)


def _distance_table(cosmo: Cosmology) -> tuple[Cosmology, jax.Array, jax.Array, jax.Array]:
    """chi at the grid nodes (Simpson rule per interval), its slope and the cast cosmology."""
    dtype = float_dtype(*jax.tree.leaves(cosmo))
    cosmo = _cast(cosmo, dtype)
    x = _grid.nodes(dtype)
    slopes = _dchi_dx(cosmo, x)
    mid = _dchi_dx(cosmo, x[:-1] + 0.5 * _grid.STEP)
    # chi decrease over each interval; sums run outward from a = 1 so that chi is accurate (in
    # relative terms) near a = 1 too, even in float32.
    decrease = -(_grid.STEP / 6.0) * (slopes[:-1] + 4.0 * mid + slopes[1:])
    past = jnp.cumsum(decrease[: _grid.N_TODAY][::-1])[::-1]
    future = -jnp.cumsum(decrease[_grid.N_TODAY :])
    chi = jnp.concatenate([past, jnp.zeros((1,), dtype), future])
    return cosmo, x, chi, slopes


def _tail_coefficient(cosmo: Cosmology) -> jax.Array:
    # Below the grid the universe is matter dominated: chi(a) = chi(a_min) + c (sqrt(a_min) - sqrt(a)).
    return 2.0 * HUBBLE_DISTANCE / jnp.sqrt(cosmo.Omega_m)


def guarded(
    cosmo: Cosmology, value: jax.Array, argument: jax.Array, argument_ok: jax.Array
) -> jax.Array:
    """`value`, NaN (value and derivatives) where the cosmology or the argument is invalid."""
    return poison(value, is_valid(cosmo) & argument_ok, argument, *jax.tree.leaves(cosmo))


@jax.jit
def _efunc(cosmo: Cosmology, a: jax.Array) -> jax.Array:
    dtype = float_dtype(a, *jax.tree.leaves(cosmo))
    cosmo = _cast(cosmo, dtype)
    a = a.astype(dtype)
    ok = scale_factor_ok(a, None)
    value = _efunc_of_x(cosmo, jnp.log(jnp.where(ok, a, 1.0)))
    return guarded(cosmo, value, a, ok)


@jax.jit
def _comoving_distance(cosmo: Cosmology, a: jax.Array) -> jax.Array:
    cosmo, _, chi, slopes = _distance_table(cosmo)
    a = a.astype(jnp.result_type(a, chi))
    ok = scale_factor_ok(a, A_MAX)
    a_valid = jnp.where(ok, a, 1.0)
    a_min = jnp.exp(jnp.asarray(_grid.X_MIN, a.dtype))
    inside = a_valid >= a_min
    x = jnp.log(jnp.where(inside, a_valid, a_min))
    on_grid = _grid.hermite(x, chi, slopes)
    a_tail = jnp.where(inside, a_min, a_valid)
    tail = chi[0] + _tail_coefficient(cosmo) * (jnp.sqrt(a_min) - jnp.sqrt(a_tail))
    return guarded(cosmo, jnp.where(inside, on_grid, tail), a, ok)


@jax.jit
def _scale_factor_of_chi(cosmo: Cosmology, chi: jax.Array) -> jax.Array:
    cosmo, x_nodes, chi_nodes, slopes = _distance_table(cosmo)
    chi = chi.astype(jnp.result_type(chi, chi_nodes))
    chi_end = chi_nodes[-1]  # negative: the distance to a = A_MAX, in the future
    ok = jnp.isfinite(chi) & (chi >= chi_end * (1.0 + A_TOLERANCE))
    chi_argument, chi = chi, jnp.where(ok, chi, 0.0)
    inside = chi <= chi_nodes[0]
    target = jnp.where(inside, chi, chi_nodes[0])

    # Linear first guess, then Newton on the Hermite interpolant: the result inverts
    # `comoving_distance` to rounding error.
    def newton(x, chi_nodes, slopes, target):
        residual = _grid.hermite(x, chi_nodes, slopes) - target
        return jnp.maximum(x - residual / _grid.hermite_slope(x, chi_nodes, slopes), _grid.X_MIN)

    frozen = jax.lax.stop_gradient((chi_nodes, slopes, target))
    x = jnp.interp(frozen[2], frozen[0][::-1], x_nodes[::-1])
    for _ in range(_NEWTON_STEPS):
        x = newton(x, *frozen)
    # One more step with live inputs: at convergence its derivatives are those of the inverse
    # function (implicit function theorem), without differentiating through the iterations.
    x = newton(jax.lax.stop_gradient(x), chi_nodes, slopes, target)
    a_min = jnp.exp(x_nodes[0])
    beyond = jnp.where(inside, chi_nodes[0], chi)
    sqrt_a = jnp.sqrt(a_min) - (beyond - chi_nodes[0]) / _tail_coefficient(cosmo)
    value = jnp.where(inside, jnp.exp(x), jnp.square(jnp.maximum(sqrt_a, 0.0)))
    return guarded(cosmo, value, chi_argument, ok)


def efunc(cosmo: Cosmology, a: Any) -> jax.Array:
    """Dimensionless Hubble rate E(a) = H(a) / H0 of a flat w0-wa CDM universe.

    `E^2 = Omega_m a^-3 + (1 - Omega_m) a^(-3 (1 + w0 + wa)) exp(-3 wa (1 - a))`; radiation is
    neglected.

    **Arguments:**

    - `cosmo`: the [`Cosmology`][jpm_core.Cosmology].
    - `a`: scale factor (finite, > 0), scalar or array of any shape.

    **Returns:**

    E(a), same shape as `a`.

    **Raises:**

    `ValueError` for an invalid cosmology (see [`check_cosmology`][jpm_core.check_cosmology]) or
    scale factor, when they are concrete; traced, those points give NaN (value and gradient).
    """
    check_cosmology(cosmo)
    check_scale_factor("efunc", a, None)
    return _efunc(cosmo, as_float(a))


def comoving_distance(cosmo: Cosmology, a: Any) -> jax.Array:
    """Line-of-sight comoving distance chi(a) = c / H0 int_a^1 da' / (a'^2 E(a')), in Mpc/h.

    Computed by Simpson quadrature in ln(a) on a fixed grid (401 nodes, a from 6e-6 to 1.65) and
    cubic Hermite interpolation between nodes (relative error < 1e-6); below the grid the exact
    matter-dominated form is used. Differentiable with respect to `cosmo` and `a`. Negative for
    a > 1.

    **Arguments:**

    - `cosmo`: the [`Cosmology`][jpm_core.Cosmology].
    - `a`: scale factor in (0, A_MAX], `A_MAX = e^0.5 = 1.6487` (the end of the tables), scalar
      or array of any shape.

    **Returns:**

    chi in Mpc/h, same shape as `a`.

    **Raises:**

    `ValueError` for an invalid cosmology or scale factor, when they are concrete; traced, those
    points give NaN (value and gradient).
    """
    check_cosmology(cosmo)
    check_scale_factor("comoving_distance", a, A_MAX)
    return _comoving_distance(cosmo, as_float(a))


def scale_factor_of_chi(cosmo: Cosmology, chi: Any) -> jax.Array:
    """Scale factor a(chi) at comoving distance `chi`: the inverse of [`comoving_distance`][jpm_core.comoving_distance].

    Newton iterations on the interpolated table of chi (exact inverse of `comoving_distance` to
    rounding error). Beyond the particle horizon of the matter-dominated model the result is 0.

    **Arguments:**

    - `cosmo`: the [`Cosmology`][jpm_core.Cosmology].
    - `chi`: comoving distance in Mpc/h, finite and >= `comoving_distance(cosmo, A_MAX)` (a
      negative number: the future up to the end of the tables), scalar or array of any shape.

    **Returns:**

    The scale factor, same shape as `chi`.

    **Raises:**

    `ValueError` for an invalid cosmology or distance, when they are concrete; traced, those
    points give NaN (value and gradient).
    """
    check_cosmology(cosmo)
    if not isinstance(chi, jax.core.Tracer):
        values = np.asarray(chi, dtype=np.float64)
        chi_end = float(_comoving_distance(cosmo, jnp.asarray(A_MAX)))
        bad = ~(np.isfinite(values) & (values >= chi_end * (1.0 + A_TOLERANCE)))
        if np.any(bad):
            raise ValueError(
                f"scale_factor_of_chi: chi must be finite and >= comoving_distance(cosmo, "
                f"A_MAX) = {chi_end:.6g} Mpc/h (a <= {A_MAX:.6g}), got "
                f"{values[bad] if values.ndim else values}"
            )
    return _scale_factor_of_chi(cosmo, as_float(chi))
