"""Nonlinear matter power spectrum: halofit (Smith et al. 2003) as revised by Takahashi et al. 2012.

Equation numbers refer to Takahashi et al. 2012, ApJ 761, 152 (arXiv:1208.2701), appendix A. The
fit is evaluated on the linear spectrum of [`linear_power`][jpm_core.linear_power]; wavenumbers are in
h/Mpc and lengths in Mpc/h.

Dark energy enters the fit through Omega_de(a) (1 + w) in a_n and b_n (eq. A6, A7) and through
Omega_m(a) in f1, f2, f3 (Smith et al. 2003, eq. C17-C18, flat-universe branch). Takahashi et al.
calibrated constant-w models only; for a time-varying equation of state (wa != 0) three choices of
(w, Omega_de(a)) are offered (`dark_energy`):

- `"w0"` (default): w0 and the true Omega_de(a). This is what pyccl 3.3 computes (measured: its
  halofit agrees with this choice to 1e-4 for wa != 0, and not with the two others);
- `"cpl"`: the local w(a) = w0 + wa (1 - a) and the true Omega_de(a);
- `"distance_matched"`: the constant-w cosmology with the same comoving distance from a to the drag
  epoch (Casarini et al. 2016, arXiv:1601.07230, the mapping CCL's C source describes): w_eff(a)
  solves `chi_{w_eff}(a_drag) - chi_{w_eff}(a) = chi(a_drag) - chi(a)` (z_drag from Eisenstein & Hu
  1998 eq. 4), and Omega_de(a) is that cosmology's.

All three coincide for wa = 0. The linear spectrum, the growth factor and the nonlinear scale are
always those of the true cosmology.

The root solves (the nonlinear scale k_sigma, and w_eff) are a fixed number of Newton steps whose
inputs are frozen (`stop_gradient`), followed by one more step with live inputs: at convergence the
derivatives of that step are those of the implicit function, so `grad`/`jvp` are exact without
differentiating through the iterations, and everything traces under `jit` and `vmap`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp

from jpm_core._src.cosmology.background import comoving_distance, efunc
from jpm_core._src.cosmology.growth import growth_factor
from jpm_core._src.cosmology.parameters import Cosmology, as_float, float_dtype
from jpm_core._src.cosmology.power import (
    Transfer,
    _check_transfer,
    _simpson_weights,
    linear_power,
)

__all__ = ["nonlinear_power"]

DarkEnergy = Literal["w0", "cpl", "distance_matched"]
_DARK_ENERGY = ("w0", "cpl", "distance_matched")

# Fixed ln k grid (h/Mpc) of the Gaussian-filtered variance and its derivatives (Simpson's rule):
# it resolves the filter for R from about 5e-3 to 1e2 Mpc/h.
_LOGK_MIN, _LOGK_MAX, _N_LOGK = math.log(1e-4), math.log(2e3), 1025
# Table of ln R (Mpc/h) for the first guess of the nonlinear scale; the solution is clipped to it.
_LOGR_MIN, _LOGR_MAX, _N_LOGR = math.log(5e-3), math.log(1e2), 48
_NEWTON_R = 4
_NEWTON_W = 4


def _k_grid(dtype: jnp.dtype) -> tuple[jax.Array, jax.Array]:
    k = jnp.exp(jnp.linspace(_LOGK_MIN, _LOGK_MAX, _N_LOGK, dtype=dtype))
    step = (_LOGK_MAX - _LOGK_MIN) / (_N_LOGK - 1)
    return k, jnp.asarray(_simpson_weights(_N_LOGK, step), dtype)


def _gaussian_moments(delta2_weighted: jax.Array, k: jax.Array, log_r: jax.Array) -> jax.Array:
    """S_m(ln R) = d^m/d(ln R)^m int dln k Delta^2(k) exp(-k^2 R^2) for m = 0, 1, 2.

    `delta2_weighted` is Delta^2_L(k, a=1) times the quadrature weights on the k grid; `log_r` is
    flat. Returns shape `(3, n)`. With y = kR: d/dlnR exp(-y^2) = -2 y^2 exp(-y^2) and
    d^2/dlnR^2 exp(-y^2) = (4 y^4 - 4 y^2) exp(-y^2).
    """
    y2 = (jnp.exp(log_r)[:, None] * k[None, :]) ** 2
    kernel = delta2_weighted[None, :] * jnp.exp(-y2)
    s0 = jnp.sum(kernel, axis=-1)
    s1 = jnp.sum(kernel * (-2.0 * y2), axis=-1)
    s2 = jnp.sum(kernel * (4.0 * y2 * y2 - 4.0 * y2), axis=-1)
    return jnp.stack([s0, s1, s2])


def _nonlinear_scale(
    delta2_weighted: jax.Array, k: jax.Array, log_d2: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(k_sigma, n_eff, C) where D^2 sigma_G^2(R = 1/k_sigma) = 1, for flat `log_d2 = ln D(a)^2`.

    Newton's method on f(ln R) = ln S0(ln R) + ln D^2 (f' = S1 / S0), from linear interpolation in a
    table of ln S0 on the fixed ln R grid. n_eff = -3 - dln sigma^2 / dln R (eq. A4) and
    C = -d^2 ln sigma^2 / dln R^2 (eq. A5).
    """
    dtype = delta2_weighted.dtype
    frozen = jax.lax.stop_gradient((delta2_weighted, log_d2))
    table_r = jnp.linspace(_LOGR_MIN, _LOGR_MAX, _N_LOGR, dtype=dtype)
    table = jnp.log(_gaussian_moments(frozen[0], k, table_r)[0])  # decreasing in ln R
    log_r = jnp.interp(-frozen[1], table[::-1], table_r[::-1])

    def newton(log_r, weighted, log_d2):
        s0, s1, _ = _gaussian_moments(weighted, k, log_r)
        step = (jnp.log(s0) + log_d2) * s0 / s1
        return jnp.clip(log_r - step, _LOGR_MIN, _LOGR_MAX)

    for _ in range(_NEWTON_R):
        log_r = newton(log_r, *frozen)
    log_r = newton(jax.lax.stop_gradient(log_r), delta2_weighted, log_d2)
    s0, s1, s2 = _gaussian_moments(delta2_weighted, k, log_r)
    d1, d2 = s1 / s0, s2 / s0
    return jnp.exp(-log_r), -3.0 - d1, -(d2 - d1 * d1)


def _z_drag(cosmo: Cosmology) -> jax.Array:
    """Redshift of the drag epoch, Eisenstein & Hu (1998) eq. 4."""
    om = cosmo.Omega_m * cosmo.h**2
    ob = cosmo.Omega_b * cosmo.h**2
    b1 = 0.313 * om**-0.419 * (1.0 + 0.607 * om**0.674)
    b2 = 0.238 * om**0.223
    return 1291.0 * om**0.251 / (1.0 + 0.659 * om**0.828) * (1.0 + b1 * ob**b2)


def _constant_w(cosmo: Cosmology, w: jax.Array) -> Cosmology:
    return Cosmology(cosmo.Omega_c, cosmo.Omega_b, cosmo.h, cosmo.n_s, cosmo.sigma8, w, 0.0 * w)


def _effective_w(cosmo: Cosmology, a: jax.Array, a_drag: jax.Array) -> jax.Array:
    """w_eff(a) (scalar `a`): the constant w with the same chi(a_drag) - chi(a) as `cosmo`."""
    ends = jnp.stack([a_drag, a])

    def span(cosmo):
        chi = comoving_distance(cosmo, ends)
        return chi[0] - chi[1]

    target = span(cosmo)

    def newton(w, cosmo, target):
        value, slope = jax.jvp(lambda w: span(_constant_w(cosmo, w)) - target, (w,), (1.0 + 0 * w,))
        return w - value / slope

    frozen = jax.lax.stop_gradient((cosmo, target))
    # CPL weighted towards late times, where the distance is built: a close first guess.
    w = frozen[0].w0 + 0.5 * frozen[0].wa * (1.0 - a)
    w = jax.lax.stop_gradient(w)
    for _ in range(_NEWTON_W):
        w = newton(w, *frozen)
    return newton(jax.lax.stop_gradient(w), cosmo, target)


def _coefficients(n: jax.Array, c: jax.Array, de_w: jax.Array) -> dict[str, jax.Array]:
    """Eq. A6-A13: the fit's coefficients from n_eff, C and Omega_de(a) (1 + w)."""
    n2 = n * n
    n3 = n2 * n
    n4 = n3 * n
    return {
        "a": 10.0
        ** (
            1.5222
            + 2.8553 * n
            + 2.3706 * n2
            + 0.9903 * n3
            + 0.2250 * n4
            - 0.6038 * c
            + 0.1749 * de_w
        ),
        "b": 10.0 ** (-0.5642 + 0.5864 * n + 0.5716 * n2 - 1.5474 * c + 0.2279 * de_w),
        "c": 10.0 ** (0.3698 + 2.0404 * n + 0.8161 * n2 + 0.5869 * c),
        "gamma": 0.1971 - 0.0843 * n + 0.8460 * c,
        "alpha": jnp.abs(6.0835 + 1.3373 * n - 0.1959 * n2 - 5.5274 * c),
        "beta": 2.0379 - 0.7354 * n + 0.3157 * n2 + 1.2490 * n3 + 0.3980 * n4 - 0.1682 * c,
        "nu": 10.0 ** (5.2105 + 3.6902 * n),
    }


def _halofit(
    delta2_lin: jax.Array,
    y: jax.Array,
    n_eff: jax.Array,
    curv: jax.Array,
    omega_m: jax.Array,
    w: jax.Array,
) -> jax.Array:
    """Eq. A1-A3: Delta^2_NL from Delta^2_L, y = k / k_sigma, n_eff, C, Omega_m(a) and w."""
    coef = _coefficients(n_eff, curv, (1.0 - omega_m) * (1.0 + w))
    # Smith et al. (2003) eq. C17-C18, flat branch (Omega_de(a) = 1 - Omega_m(a)).
    f1, f2, f3 = (omega_m**p for p in (-0.0307, -0.0585, 0.0743))
    # Eq. A2: the two-halo term.
    quasi_linear = (
        delta2_lin
        * (1.0 + delta2_lin) ** coef["beta"]
        / (1.0 + coef["alpha"] * delta2_lin)
        * jnp.exp(-(y / 4.0 + y * y / 8.0))
    )
    # Eq. A3: the one-halo term (mu_n = 0).
    one_halo = (
        coef["a"]
        * y ** (3.0 * f1)
        / (1.0 + coef["b"] * y**f2 + (coef["c"] * f3 * y) ** (3.0 - coef["gamma"]))
        / (1.0 + coef["nu"] / (y * y))
    )
    return quasi_linear + one_halo


@functools.partial(jax.jit, static_argnames=("transfer", "dark_energy"))
def _nonlinear_power(
    cosmo: Cosmology, k: jax.Array, a: jax.Array, transfer: str, dark_energy: str
) -> jax.Array:
    dtype = float_dtype(k, a, *jax.tree.leaves(cosmo))
    cosmo = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=dtype), cosmo)
    k, a = k.astype(dtype), a.astype(dtype)
    positive = k > 0
    k_safe = jnp.where(positive, k, 1.0)

    # Linear power at a = 1 on the quadrature grid and at the requested k, in one call.
    grid, weights = _k_grid(dtype)
    both = linear_power(cosmo, jnp.concatenate([grid, k_safe.reshape(-1)]), transfer=transfer)
    delta2_grid = grid**3 * both[:_N_LOGK] / (2.0 * math.pi**2)
    power_today = both[_N_LOGK:].reshape(k.shape)

    # Everything that depends on a only, on the flat scale factors.
    a_flat = a.reshape(-1)
    d1 = growth_factor(cosmo, a_flat)
    k_sigma, n_eff, curv = _nonlinear_scale(delta2_grid * weights, grid, 2.0 * jnp.log(d1))
    if dark_energy == "distance_matched":
        a_drag = 1.0 / (1.0 + _z_drag(cosmo))
        w = jax.vmap(_effective_w, in_axes=(None, 0, None))(cosmo, a_flat, a_drag)
        e = jax.vmap(lambda w, a: efunc(_constant_w(cosmo, w), a))(w, a_flat)
    else:
        w = cosmo.w0 + (cosmo.wa * (1.0 - a_flat) if dark_energy == "cpl" else 0.0 * a_flat)
        e = efunc(cosmo, a_flat)
    omega_m = cosmo.Omega_m / (a_flat**3 * e * e)

    def per_a(x: jax.Array) -> jax.Array:  # back to the shape of a, to broadcast with k
        return x.reshape(a.shape)

    delta2_lin = k_safe**3 * power_today * per_a(d1) ** 2 / (2.0 * math.pi**2)
    delta2 = _halofit(
        delta2_lin, k_safe / per_a(k_sigma), *(per_a(x) for x in (n_eff, curv, omega_m, w))
    )
    power = delta2 * (2.0 * math.pi**2) / k_safe**3
    return jnp.where(positive, power, 0.0)


def nonlinear_power(
    cosmo: Cosmology,
    k: Any,
    a: Any = 1.0,
    *,
    transfer: Transfer = "eisenstein_hu",
    dark_energy: DarkEnergy = "w0",
) -> jax.Array:
    """Nonlinear matter power spectrum P_nl(k, a) from halofit (Takahashi et al. 2012).

    The Smith et al. (2003) halo model fit with the revised coefficients of Takahashi et al. (2012,
    eq. A6-A13), applied to [`linear_power`][jpm_core.linear_power]. The nonlinear scale k_sigma
    solves sigma(R = 1/k_sigma, a) = 1 for the Gaussian filter exp(-k^2 R^2); it and the effective
    index n_eff and curvature C (eq. A4-A5) come from Simpson integrals on a fixed grid of 1025
    points in ln k from 1e-4 to 2e3 h/Mpc, and Newton steps with implicit-function derivatives.
    Dark energy enters through Omega_de(a) (1 + w) and Omega_m(a): for wa != 0, `dark_energy`
    chooses w0 (default, as pyccl 3.3 computes), the local w(a), or the distance-matched constant
    w of Casarini et al. (2016); see the module notes. No massive neutrinos (the Bird et al. 2012
    corrections vanish).

    Validated against pyccl (`matter_power_spectrum="halofit"`) to better than 1% for k in
    [0.01, 5] h/Mpc and z in [0, 2], including w0-wa cosmologies. The fit itself is accurate to
    about 5% (k < 1 h/Mpc) and 10% (k < 10 h/Mpc) for z <= 10 against N-body simulations (its
    authors' estimate). k_sigma is confined to [1e-2, 2e2] h/Mpc (the nonlinear scale of any
    a <= 1 and of a well above z = 10 for usual cosmologies).

    Differentiable with respect to `cosmo`, `k` and `a`; traces under `jit` and `vmap`; float32 by
    default, float64 with `jax_enable_x64`.

    **Arguments:**

    - `cosmo`: the [`Cosmology`][jpm_core.Cosmology].
    - `k`: wavenumber in h/Mpc (>= 0), scalar or array.
    - `a`: scale factor (> 0, at most about 1.6), scalar or array broadcastable with `k` (same
      rank or scalar).
    - `transfer`: the linear transfer function, as in `linear_power`; static.
    - `dark_energy`: `"w0"` (default), `"cpl"` or `"distance_matched"`: the w and Omega_de(a) of
      the fit's dark-energy terms when wa != 0 (identical for wa = 0); static.

    **Returns:**

    P_nl(k, a) in (Mpc/h)^3, shape of `k` broadcast with `a`; 0 at k = 0.
    """
    if dark_energy not in _DARK_ENERGY:
        raise ValueError(f"dark_energy must be one of {_DARK_ENERGY}, got {dark_energy!r}")
    _check_transfer(cosmo, transfer)  # linear_power's own check: one message for both
    k, a = as_float(k), as_float(a)
    if k.ndim and a.ndim and k.ndim != a.ndim:
        raise ValueError(
            f"a (shape {a.shape}) must be a scalar or have the rank of k (shape {k.shape})"
        )
    return _nonlinear_power(cosmo, k, a, transfer, dark_energy)
