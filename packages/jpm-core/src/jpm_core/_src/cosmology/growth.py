"""Linear (first-order) and second-order growth of structure in a flat w0-wa CDM universe.

With x = ln(a), primes for d/dx and Omega_m(a) = 1 - Omega_de(a), the growth equations are

    D1'' + (2 + dlnH/dlna) D1' = (3/2) Omega_m(a) D1,
    D2'' + (2 + dlnH/dlna) D2' - (3/2) Omega_m(a) D2 = -(3/2) Omega_m(a) D1^2,

with 2 + dlnH/dlna = 1/2 - (3/2) w(a) Omega_de(a). They are solved for g1 = D1 / a and
g2 = D2 / a^2, which are constant (g1 = 1, g2 = -3/7) in the matter era where they start, so the
fixed-step integrator only works where dark energy matters:

    g1'' = -(5/2 - (3/2) w Omega_de) g1' - (3/2) (1 - w) Omega_de g1,
    g2'' = -(9/2 - (3/2) w Omega_de) g2' - (7/2 + (3/2) (1 - 2 w) Omega_de) g2 - (3/2) Omega_m(a) g1^2.

Sign convention of the second order: D2 < 0, D2 = -3/7 D1^2 in Einstein-de Sitter, and the 2LPT
displacement is `psi2(q) = D2 * grad(inv_laplace(delta2))` with
`delta2 = sum_{i<j} (phi_ii phi_jj - phi_ij^2)`, `inv_laplace(phi) = delta_lin(a=1)`
(the first order being `psi1 = -D1 * grad(phi)`), as in Scoccimarro (1998) and Bouchet et al. (1995).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jpm_core._src.cosmology import _grid
from jpm_core._src.cosmology.background import guarded, omega_de_of_x
from jpm_core._src.cosmology.parameters import (
    A_MAX,
    Cosmology,
    as_float,
    check_cosmology,
    check_scale_factor,
    float_dtype,
    scale_factor_ok,
)

__all__ = ["growth_factor", "growth_factor_second", "growth_rate", "growth_rate_second"]


def _coefficients(cosmo: Cosmology, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(Omega_de(a), w(a) Omega_de(a)) at x = ln(a): all the growth equations need of the background."""
    omega_de = omega_de_of_x(cosmo, x)
    return omega_de, (cosmo.w0 + cosmo.wa * (1.0 - jnp.exp(x))) * omega_de


def _derivatives(
    coefficients: tuple[jax.Array, jax.Array], state: tuple[jax.Array, ...]
) -> tuple[jax.Array, ...]:
    """d/dx of the state (g1, g1', g2, g2'), given `_coefficients`."""
    omega_de, w_de = coefficients
    g1, dg1, g2, dg2 = state
    ddg1 = -(2.5 - 1.5 * w_de) * dg1 - 1.5 * (omega_de - w_de) * g1
    ddg2 = (
        -(4.5 - 1.5 * w_de) * dg2
        - (3.5 + 1.5 * (omega_de - 2.0 * w_de)) * g2
        - 1.5 * (1.0 - omega_de) * g1 * g1
    )
    return dg1, ddg1, dg2, ddg2


def _growth_table(cosmo: Cosmology) -> tuple[jax.Array, jax.Array]:
    """States (g1, g1', g2, g2') at the grid nodes and their x-derivatives, both `(N_NODES, 4)`.

    Classical Runge-Kutta 4 with the fixed grid step, Einstein-de Sitter initial conditions at the
    first node (a = 6.1e-6, where dark energy is negligible since w0 + wa < 0). The background
    coefficients are evaluated for all nodes and midpoints at once, outside the scan, whose body
    is then plain scalar arithmetic (cheap to compile and to differentiate).
    """
    dtype = float_dtype(*jax.tree.leaves(cosmo))
    cosmo = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=dtype), cosmo)
    x_nodes = _grid.nodes(dtype)
    h = _grid.STEP
    at_nodes = _coefficients(cosmo, x_nodes)
    at_midpoints = _coefficients(cosmo, x_nodes[:-1] + 0.5 * h)

    def axpy(state, scale, direction):
        return tuple(s + scale * d for s, d in zip(state, direction, strict=True))

    def step(state, coefficients):
        start, middle, end = coefficients
        k1 = _derivatives(start, state)
        k2 = _derivatives(middle, axpy(state, 0.5 * h, k1))
        k3 = _derivatives(middle, axpy(state, 0.5 * h, k2))
        k4 = _derivatives(end, axpy(state, h, k3))
        new = tuple(
            s + (h / 6.0) * (a + 2.0 * b + 2.0 * c + d)
            for s, a, b, c, d in zip(state, k1, k2, k3, k4, strict=True)
        )
        return new, new

    initial = tuple(jnp.asarray(v, dtype) for v in (1.0, 0.0, -3.0 / 7.0, 0.0))
    starts = tuple(c[:-1] for c in at_nodes)
    ends = tuple(c[1:] for c in at_nodes)
    _, states = jax.lax.scan(step, initial, (starts, at_midpoints, ends))
    states = tuple(
        jnp.concatenate([first[None], rest]) for first, rest in zip(initial, states, strict=True)
    )
    return jnp.stack(states, axis=-1), jnp.stack(_derivatives(at_nodes, states), axis=-1)


def _interpolate(
    cosmo: Cosmology, a: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(a as a float array, the table interpolated at a (last axis 4), g1 at a = 1, a valid).

    Invalid scale factors (outside (0, A_MAX]) are replaced by 1 before interpolating, so that
    they cannot produce NaNs that would leak into the derivatives of the valid ones; the callers
    poison them with `guarded`.
    """
    states, slopes = _growth_table(cosmo)
    a = a.astype(jnp.result_type(a, states))
    ok = scale_factor_ok(a, A_MAX)
    a_valid = jnp.where(ok, a, 1.0)
    # Below the grid, the matter era: g1 and g2 are constant, which clamping reproduces exactly.
    x = jnp.maximum(jnp.log(jnp.maximum(a_valid, jnp.finfo(a.dtype).tiny)), _grid.X_MIN)
    values = _grid.hermite(x, states, slopes)
    return a_valid, values, states[_grid.N_TODAY, 0], ok


@jax.jit
def _growth_factor(cosmo: Cosmology, a: jax.Array) -> jax.Array:
    a_valid, values, g1_today, ok = _interpolate(cosmo, a)
    return guarded(cosmo, a_valid * values[..., 0] / g1_today, a, ok)


@jax.jit
def _growth_rate(cosmo: Cosmology, a: jax.Array) -> jax.Array:
    _, values, _, ok = _interpolate(cosmo, a)
    return guarded(cosmo, 1.0 + values[..., 1] / values[..., 0], a, ok)


@jax.jit
def _growth_factor_second(cosmo: Cosmology, a: jax.Array) -> jax.Array:
    a_valid, values, g1_today, ok = _interpolate(cosmo, a)
    return guarded(cosmo, a_valid * a_valid * values[..., 2] / (g1_today * g1_today), a, ok)


@jax.jit
def _growth_rate_second(cosmo: Cosmology, a: jax.Array) -> jax.Array:
    _, values, _, ok = _interpolate(cosmo, a)
    return guarded(cosmo, 2.0 + values[..., 3] / values[..., 2], a, ok)


def growth_factor(cosmo: Cosmology, a: Any) -> jax.Array:
    """Linear growth factor D1(a) of the growing mode, normalised to D1(a=1) = 1.

    Solved in ln(a) from a = 6.1e-6 with Einstein-de Sitter initial conditions by a fixed-step RK4
    (`jax.lax.scan`, step 1/32 in ln a), then cubic Hermite interpolation: differentiable with
    respect to `cosmo`, and safe inside `jit`, `vmap`, `grad` and ODE vector fields. Radiation is
    neglected (D1 = a times a constant at early times).

    **Arguments:**

    - `cosmo`: the [`Cosmology`][jpm_core.Cosmology].
    - `a`: scale factor in (0, A_MAX], `A_MAX = e^0.5 = 1.6487` (the end of the tables; below
      a = 6.1e-6 the exact matter-era forms are used), scalar or array of any shape.

    **Returns:**

    D1(a), same shape as `a`.

    **Raises:**

    `ValueError` for an invalid cosmology (see [`check_cosmology`][jpm_core.check_cosmology]) or
    a scale factor outside (0, A_MAX], when they are concrete; traced, those points give NaN
    (value and gradient).
    """
    check_cosmology(cosmo)
    check_scale_factor("growth_factor", a, A_MAX)
    return _growth_factor(cosmo, as_float(a))


def growth_rate(cosmo: Cosmology, a: Any) -> jax.Array:
    """Linear growth rate f1(a) = dln D1 / dln a (about Omega_m(a)^0.55; 1 in Einstein-de Sitter).

    **Arguments:**

    - `cosmo`: the [`Cosmology`][jpm_core.Cosmology].
    - `a`: scale factor in (0, A_MAX], `A_MAX = e^0.5 = 1.6487` (the end of the tables; below
      a = 6.1e-6 the exact matter-era forms are used), scalar or array of any shape.

    **Returns:**

    f1(a), same shape as `a`.

    **Raises:**

    `ValueError` for an invalid cosmology (see [`check_cosmology`][jpm_core.check_cosmology]) or
    a scale factor outside (0, A_MAX], when they are concrete; traced, those points give NaN
    (value and gradient).
    """
    check_cosmology(cosmo)
    check_scale_factor("growth_rate", a, A_MAX)
    return _growth_rate(cosmo, as_float(a))


def growth_factor_second(cosmo: Cosmology, a: Any) -> jax.Array:
    """Second-order (2LPT) growth factor D2(a), negative, in units where D1(a=1) = 1.

    Convention: D2 = -3/7 D1^2 in Einstein-de Sitter (about -3/7 D1^2 Omega_m(a)^(-1/143) in
    general) and the second-order displacement is `psi2 = D2 * grad(inv_laplace(delta2))`, with
    `delta2 = sum_{i<j} (phi_ii phi_jj - phi_ij^2)` built from the linear potential at a = 1
    (`laplace(phi) = delta_lin`, first order `psi1 = -D1 * grad(phi)`).

    **Arguments:**

    - `cosmo`: the [`Cosmology`][jpm_core.Cosmology].
    - `a`: scale factor in (0, A_MAX], `A_MAX = e^0.5 = 1.6487` (the end of the tables; below
      a = 6.1e-6 the exact matter-era forms are used), scalar or array of any shape.

    **Returns:**

    D2(a), same shape as `a`.

    **Raises:**

    `ValueError` for an invalid cosmology (see [`check_cosmology`][jpm_core.check_cosmology]) or
    a scale factor outside (0, A_MAX], when they are concrete; traced, those points give NaN
    (value and gradient).
    """
    check_cosmology(cosmo)
    check_scale_factor("growth_factor_second", a, A_MAX)
    return _growth_factor_second(cosmo, as_float(a))


def growth_rate_second(cosmo: Cosmology, a: Any) -> jax.Array:
    """Second-order growth rate f2(a) = dln D2 / dln a (about 2 Omega_m(a)^(6/11); 2 in EdS).

    **Arguments:**

    - `cosmo`: the [`Cosmology`][jpm_core.Cosmology].
    - `a`: scale factor in (0, A_MAX], `A_MAX = e^0.5 = 1.6487` (the end of the tables; below
      a = 6.1e-6 the exact matter-era forms are used), scalar or array of any shape.

    **Returns:**

    f2(a), same shape as `a`.

    **Raises:**

    `ValueError` for an invalid cosmology (see [`check_cosmology`][jpm_core.check_cosmology]) or
    a scale factor outside (0, A_MAX], when they are concrete; traced, those points give NaN
    (value and gradient).
    """
    check_cosmology(cosmo)
    check_scale_factor("growth_rate_second", a, A_MAX)
    return _growth_rate_second(cosmo, as_float(a))
