"""Linear matter power spectrum: Eisenstein & Hu (1998) transfer functions, sigma8 normalisation.

Equation numbers refer to Eisenstein & Hu 1998, ApJ 496, 605 (arXiv:astro-ph/9709112). Wavenumbers
are in h/Mpc and lengths in Mpc/h throughout (the paper's Mpc^-1 quantities are divided by h).
Following the authors' own code, the baryon-to-photon ratio at the drag epoch is evaluated at
1 + z_drag and the one at equality at z_eq.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jpm_core._src.cosmology.growth import _growth_factor
from jpm_core._src.cosmology.parameters import (
    A_MAX,
    Cosmology,
    as_float,
    check_cosmology,
    check_scale_factor,
    float_dtype,
    is_valid,
    poison,
)

__all__ = ["T_CMB", "linear_power", "sigma_r"]

T_CMB = 2.7255
"""CMB temperature in K used by the transfer functions (Fixsen 2009)."""

Transfer = Literal["eisenstein_hu", "eisenstein_hu_nowiggles"]
_TRANSFERS = ("eisenstein_hu", "eisenstein_hu_nowiggles")

# Fixed log-k grid (h/Mpc) of the sigma(R) integral: Simpson's rule in ln k.
_LOGK_MIN, _LOGK_MAX, _N_LOGK = math.log(1e-5), math.log(1e3), 2049


def _t0(q: jax.Array, alpha: Any, beta: Any) -> jax.Array:
    """Eq. 19-20: the pressureless transfer function T0(k, alpha_c, beta_c) of q = k / (13.41 k_eq)."""
    c = 14.2 / alpha + 386.0 / (1.0 + 69.9 * q**1.08)
    log = jnp.log(math.e + 1.8 * beta * q)
    return log / (log + c * q * q)


# (c, p) of the terms (c * omega_m h^2)^p of eq. 4, 7, 11, 12 and 23.
_OM_POWERS = {
    "b1": (1.0, -0.419),
    "b1_b": (1.0, 0.674),
    "b2": (1.0, 0.223),
    "zd": (1.0, 0.251),
    "zd_b": (1.0, 0.828),
    "silk": (1.0, 0.73),
    "silk_b": (10.4, -0.95),
    "a1": (46.9, 0.670),
    "a1_b": (32.1, -0.532),
    "a2": (12.0, 0.424),
    "a2_b": (45.0, -0.582),
    "bb1": (458.0, -0.708),
    "bb2": (0.395, -0.0266),
    "node": (1.0, 0.435),
}


def _transfer_wiggles(cosmo: Cosmology, k: jax.Array) -> jax.Array:
    """Eq. 16-24: T(k) with baryon acoustic oscillations; k > 0 in h/Mpc."""
    h = cosmo.h
    om, ob = cosmo.Omega_m * h * h, cosmo.Omega_b * h * h
    fb = cosmo.Omega_b / cosmo.Omega_m
    fc = cosmo.Omega_c / cosmo.Omega_m
    theta = T_CMB / 2.7

    # The fitting formulae raise c * omega_m h^2 to a dozen constant powers: evaluated as one
    # vector exp(p (ln c + ln om)), a much smaller program to compile and differentiate.
    scale, power = np.array(list(_OM_POWERS.values()), dtype=np.float64).T
    om_powers = dict(zip(_OM_POWERS, jnp.exp(power * (np.log(scale) + jnp.log(om))), strict=True))

    z_eq = 2.50e4 * om / theta**4  # eq. 2
    k_eq = 7.46e-2 * om / theta**2 / h  # eq. 3, h/Mpc
    b1 = 0.313 * om_powers["b1"] * (1.0 + 0.607 * om_powers["b1_b"])  # eq. 4
    b2 = 0.238 * om_powers["b2"]
    z_d = 1291.0 * om_powers["zd"] / (1.0 + 0.659 * om_powers["zd_b"]) * (1.0 + b1 * ob**b2)
    r_eq = 31.5 * ob / theta**4 * (1e3 / z_eq)  # eq. 5
    r_d = 31.5 * ob / theta**4 * (1e3 / (1.0 + z_d))
    s = (  # eq. 6, sound horizon at the drag epoch, Mpc/h
        2.0
        / (3.0 * k_eq)
        * jnp.sqrt(6.0 / r_eq)
        * jnp.log((jnp.sqrt(1.0 + r_d) + jnp.sqrt(r_d + r_eq)) / (1.0 + jnp.sqrt(r_eq)))
    )
    k_silk = 1.6 * ob**0.52 * om_powers["silk"] * (1.0 + om_powers["silk_b"]) / h  # eq. 7

    a1 = om_powers["a1"] * (1.0 + om_powers["a1_b"])  # eq. 11
    a2 = om_powers["a2"] * (1.0 + om_powers["a2_b"])
    alpha_c = jnp.exp(-fb * jnp.log(a1) - fb**3 * jnp.log(a2))
    bb1 = 0.944 / (1.0 + om_powers["bb1"])  # eq. 12
    bb2 = om_powers["bb2"]
    beta_c = 1.0 / (1.0 + bb1 * (fc**bb2 - 1.0))

    y = z_eq / (1.0 + z_d)  # eq. 15
    sqrt_y = jnp.sqrt(1.0 + y)
    g_y = y * (-6.0 * sqrt_y + (2.0 + 3.0 * y) * jnp.log((sqrt_y + 1.0) / (sqrt_y - 1.0)))
    alpha_b = 2.07 * k_eq * s * (1.0 + r_d) ** -0.75 * g_y  # eq. 14
    beta_b = 0.5 + fb + (3.0 - 2.0 * fb) * jnp.sqrt((17.2 * om) ** 2 + 1.0)  # eq. 24
    beta_node = 8.41 * om_powers["node"]  # eq. 23

    q = k / (13.41 * k_eq)  # eq. 10
    ks = k * s
    f = 1.0 / (1.0 + (ks / 5.4) ** 4)  # eq. 18
    t_c = f * _t0(q, 1.0, beta_c) + (1.0 - f) * _t0(q, alpha_c, beta_c)  # eq. 17
    ks3 = ks**3
    s_tilde_k = ks * ks / jnp.cbrt(ks3 + beta_node**3)  # eq. 22: k * s_tilde
    envelope = _t0(q, 1.0, 1.0) / (1.0 + (ks / 5.2) ** 2) + alpha_b * ks3 / (
        ks3 + beta_b**3
    ) * jnp.exp(-((k / k_silk) ** 1.4))
    t_b = envelope * jnp.sin(s_tilde_k) / s_tilde_k  # eq. 21, j0(x) = sin(x) / x, and x > 0 here
    return fb * t_b + fc * t_c  # eq. 16


def _transfer_nowiggles(cosmo: Cosmology, k: jax.Array) -> jax.Array:
    """Eq. 26-31: the zero-baryon-oscillation ("no-wiggle") T(k); k > 0 in h/Mpc."""
    h = cosmo.h
    om, ob = cosmo.Omega_m * h * h, cosmo.Omega_b * h * h
    fb = cosmo.Omega_b / cosmo.Omega_m
    theta = T_CMB / 2.7
    s = h * 44.5 * jnp.log(9.83 / om) / jnp.sqrt(1.0 + 10.0 * ob**0.75)  # eq. 26, Mpc/h
    alpha_gamma = 1.0 - 0.328 * jnp.log(431.0 * om) * fb + 0.38 * jnp.log(22.3 * om) * fb * fb
    gamma_eff = (
        cosmo.Omega_m * h * (alpha_gamma + (1.0 - alpha_gamma) / (1.0 + (0.43 * k * s) ** 4))
    )
    q = k * theta * theta / gamma_eff  # eq. 28
    log = jnp.log(2.0 * math.e + 1.8 * q)  # eq. 29
    c = 14.2 + 731.0 / (1.0 + 62.5 * q)
    return log / (log + c * q * q)


def _unnormalised_power(cosmo: Cosmology, k: jax.Array, transfer: str) -> jax.Array:
    """k^n_s T(k)^2 for k > 0 in h/Mpc."""
    t = (_transfer_wiggles if transfer == "eisenstein_hu" else _transfer_nowiggles)(cosmo, k)
    return k**cosmo.n_s * t * t


def _top_hat(x: jax.Array) -> jax.Array:
    """Fourier transform of the spherical top-hat, 3 (sin x - x cos x) / x^3, stable near 0."""
    small = x < 0.5
    xs = jnp.where(small, x, 1.0)
    xl = jnp.where(small, 1.0, x)
    x2 = xs * xs
    series = 1.0 + x2 * (-1.0 / 10.0 + x2 * (1.0 / 280.0 + x2 * (-1.0 / 15120.0 + x2 / 1330560.0)))
    exact = 3.0 * (jnp.sin(xl) - xl * jnp.cos(xl)) / xl**3
    return jnp.where(small, series, exact)


def _simpson_weights(n: int, step: float) -> np.ndarray:
    weights = np.ones(n)
    weights[1:-1:2] = 4.0
    weights[2:-1:2] = 2.0
    return weights * step / 3.0


def _log_k_grid(dtype: jnp.dtype) -> tuple[jax.Array, jax.Array]:
    """The fixed k grid (h/Mpc) of the sigma(R) integral and its Simpson weights in ln k."""
    k = jnp.exp(jnp.linspace(_LOGK_MIN, _LOGK_MAX, _N_LOGK, dtype=dtype))
    step = (_LOGK_MAX - _LOGK_MIN) / (_N_LOGK - 1)
    return k, jnp.asarray(_simpson_weights(_N_LOGK, step), dtype)


def _sigma2_unnormalised(power_on_grid: jax.Array, r: jax.Array) -> jax.Array:
    """int dln k k^3 P(k) W(kR)^2 / (2 pi^2) for flat `r`, from the power on the k grid."""
    k, weights = _log_k_grid(r.dtype)
    integrand = k**3 * power_on_grid * weights / (2.0 * math.pi**2)
    window = _top_hat(r[:, None] * k[None, :])
    return jnp.sum(integrand[None, :] * window * window, axis=-1)


def _power_with_grid(cosmo: Cosmology, k: jax.Array, transfer: str) -> tuple[jax.Array, jax.Array]:
    """Unnormalised power at the flat wavenumbers `k` (> 0) and on the sigma(R) grid.

    One evaluation of the transfer function on both sets of wavenumbers: half the code to compile
    (and to differentiate) compared to two separate calls.
    """
    grid, _ = _log_k_grid(k.dtype)
    both = _unnormalised_power(cosmo, jnp.concatenate([k, grid]), transfer)
    return both[: k.shape[0]], both[k.shape[0] :]


def _amplitude(cosmo: Cosmology, power_on_grid: jax.Array) -> jax.Array:
    """The factor that brings k^n_s T^2 to sigma8 at a = 1."""
    eight = jnp.full((1,), 8.0, power_on_grid.dtype)
    return cosmo.sigma8**2 / _sigma2_unnormalised(power_on_grid, eight)[0]


def _cast(cosmo: Cosmology, *values: Any) -> tuple[Cosmology, jnp.dtype]:
    dtype = float_dtype(*values, *jax.tree.leaves(cosmo))
    return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=dtype), cosmo), dtype


def _growth(cosmo: Cosmology, a: jax.Array | None, dtype: jnp.dtype) -> jax.Array:
    # a = None stands for a = 1, where D1 = 1 exactly: skip the growth table altogether.
    # Invalid scale factors give NaN (value and derivatives): `_growth_factor` is guarded.
    return jnp.ones((), dtype) if a is None else _growth_factor(cosmo, a).astype(dtype)


def _guarded(
    cosmo: Cosmology, value: jax.Array, transfer: str, argument: jax.Array, argument_ok: jax.Array
) -> jax.Array:
    valid = is_valid(cosmo, baryons=transfer == "eisenstein_hu") & argument_ok
    return poison(value, valid, argument, *jax.tree.leaves(cosmo))


@functools.partial(jax.jit, static_argnames="transfer")
def _linear_power(cosmo: Cosmology, k: jax.Array, a: jax.Array | None, transfer: str) -> jax.Array:
    cosmo_f, dtype = _cast(cosmo, k, *([] if a is None else [a]))
    k = k.astype(dtype)
    positive = k > 0
    k_ok = jnp.isfinite(k) & (k >= 0)  # P(0) = 0: the mean of a periodic field has no power
    k_safe = jnp.where(positive & k_ok, k, 1.0)
    power, on_grid = _power_with_grid(cosmo_f, k_safe.reshape(-1), transfer)
    power = _amplitude(cosmo_f, on_grid) * power.reshape(k.shape)
    power = _guarded(cosmo_f, jnp.where(positive, power, 0.0), transfer, k, k_ok)
    return power * _growth(cosmo, a, dtype) ** 2


@functools.partial(jax.jit, static_argnames="transfer")
def _sigma_r(cosmo: Cosmology, r: jax.Array, a: jax.Array | None, transfer: str) -> jax.Array:
    cosmo_f, dtype = _cast(cosmo, r, *([] if a is None else [a]))
    r = r.astype(dtype)
    r_ok = jnp.isfinite(r) & (r > 0)
    r_safe = jnp.where(r_ok, r, 8.0)
    _, on_grid = _power_with_grid(cosmo_f, jnp.ones((0,), dtype), transfer)
    sigma2 = _sigma2_unnormalised(on_grid, r_safe.reshape(-1)).reshape(r.shape)
    sigma = _guarded(cosmo_f, jnp.sqrt(_amplitude(cosmo_f, on_grid) * sigma2), transfer, r, r_ok)
    return sigma * _growth(cosmo, a, dtype)


def _scale_factor(a: Any) -> jax.Array | None:
    """None for the Python number 1 (the default): no growth factor to compute."""
    if isinstance(a, int | float) and not isinstance(a, bool) and a == 1:
        return None
    return as_float(a)


def _check_argument(function: str, name: str, values: Any, minimum: float, strict: bool) -> None:
    """Eager (no-op on tracers): `values` finite and > (or >=) `minimum`."""
    if isinstance(values, jax.core.Tracer):
        return
    array = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(array) & ((array > minimum) if strict else (array >= minimum))
    if not np.all(ok):
        relation = ">" if strict else ">="
        raise ValueError(
            f"{function}: {name} must be finite and {relation} {minimum:g}, "
            f"got {array[~ok] if array.ndim else array}"
        )


def _check_transfer(cosmo: Cosmology, transfer: str) -> None:
    if transfer not in _TRANSFERS:
        raise ValueError(f"transfer must be one of {_TRANSFERS}, got {transfer!r}")
    check_cosmology(cosmo)
    if transfer == "eisenstein_hu" and not isinstance(cosmo.Omega_b, jax.core.Tracer):
        omega_b = np.asarray(cosmo.Omega_b, dtype=np.float64)
        if not np.all(omega_b > 0):
            raise ValueError(
                "transfer='eisenstein_hu' needs Omega_b > 0 (use 'eisenstein_hu_nowiggles' "
                f"without baryons), got Omega_b={omega_b}"
            )


def linear_power(
    cosmo: Cosmology, k: Any, a: Any = 1.0, transfer: Transfer = "eisenstein_hu"
) -> jax.Array:
    """Linear matter power spectrum P(k, a) = D1(a)^2 A k^n_s T(k)^2, normalised to `sigma8`.

    T(k) is the Eisenstein & Hu (1998) fitting formula, with baryon acoustic oscillations
    (`"eisenstein_hu"`, needs `Omega_b > 0`) or without (`"eisenstein_hu_nowiggles"`, their
    zero-baryon-oscillation form). The amplitude A makes sigma(8 Mpc/h, a=1) equal to
    `cosmo.sigma8`, with the top-hat variance integrated by Simpson's rule on a fixed grid of
    2049 points in ln k from 1e-5 to 1e3 h/Mpc. P(k=0) = 0 (with finite gradients): the k = 0
    mode of a periodic field is its mean, which carries no fluctuation.

    **Arguments:**

    - `cosmo`: the [`Cosmology`][jpm_core.Cosmology].
    - `k`: wavenumber in h/Mpc (finite, >= 0), scalar or array.
    - `a`: scale factor in (0, A_MAX] (`A_MAX = e^0.5`, see
      [`growth_factor`][jpm_core.growth_factor]), scalar or array broadcastable with `k` (same
      rank or scalar: implicit rank promotion is not relied upon).
    - `transfer`: `"eisenstein_hu"` (default) or `"eisenstein_hu_nowiggles"`; static.

    **Returns:**

    P(k, a) in (Mpc/h)^3, shape of `k` broadcast with `a`.

    **Raises:**

    `ValueError` for an invalid cosmology (see [`check_cosmology`][jpm_core.check_cosmology];
    `Omega_b > 0` for `"eisenstein_hu"`), `k` or `a`, when they are concrete; traced, those
    points give NaN (value and gradient).
    """
    _check_transfer(cosmo, transfer)
    _check_argument("linear_power", "k", k, 0.0, strict=False)
    check_scale_factor("linear_power", a, A_MAX)
    return _linear_power(cosmo, as_float(k), _scale_factor(a), transfer)


def sigma_r(
    cosmo: Cosmology, r: Any, a: Any = 1.0, transfer: Transfer = "eisenstein_hu"
) -> jax.Array:
    """R.m.s. linear density contrast sigma(R, a) in spherical top-hats of radius R.

    `sigma^2(R) = int dk k^2 P(k, a) W(kR)^2 / (2 pi^2)`, `W(x) = 3 (sin x - x cos x) / x^3`, on
    the fixed ln k grid of [`linear_power`][jpm_core.linear_power]; `sigma_r(cosmo, 8.0)` equals
    `cosmo.sigma8`.

    **Arguments:**

    - `cosmo`: the [`Cosmology`][jpm_core.Cosmology].
    - `r`: radius in Mpc/h (finite, > 0), scalar or array.
    - `a`: scale factor in (0, A_MAX], scalar or array broadcastable with `r` (same rank or
      scalar).
    - `transfer`: as in `linear_power`; static.

    **Returns:**

    sigma(R, a), shape of `r` broadcast with `a`.

    **Raises:**

    `ValueError` for an invalid cosmology, `r` or `a`, when they are concrete; traced, those
    points give NaN (value and gradient).
    """
    _check_transfer(cosmo, transfer)
    _check_argument("sigma_r", "r", r, 0.0, strict=True)
    check_scale_factor("sigma_r", a, A_MAX)
    return _sigma_r(cosmo, as_float(r), _scale_factor(a), transfer)
