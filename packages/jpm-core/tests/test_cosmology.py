"""Cosmology module: validation, analytic limits, independent quadratures, transformations, gradients.

Comparisons with pyccl are in `test_cosmology_pyccl.py`. References here are closed forms or scipy
quadratures of the defining integrals, never numbers taken from the code under test.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import integrate

from jpm_core import (
    HUBBLE_DISTANCE,
    Cosmology,
    check_cosmology,
    comoving_distance,
    efunc,
    growth_factor,
    growth_factor_second,
    growth_rate,
    growth_rate_second,
    linear_power,
    scale_factor_of_chi,
    sigma_r,
)

LCDM = Cosmology(Omega_c=0.25, Omega_b=0.05, h=0.7, n_s=0.96, sigma8=0.8)
W0WA = Cosmology(Omega_c=0.22, Omega_b=0.045, h=0.68, n_s=0.97, sigma8=0.78, w0=-0.8, wa=-0.6)
EDS = Cosmology(Omega_c=0.95, Omega_b=0.05)  # Omega_m = 1: Einstein-de Sitter

# One array of scale factors for all float64 value tests: jitted functions compile once per shape.
A = np.array([1e-7, 1e-3, 0.05, 0.3, 0.6, 0.95, 1.0, 1.3])


A_MAX = math.exp(0.5)  # the end of the growth and distance tables (ln a = 0.5)


def _array_cosmology(cosmo, dtype=jnp.float64):
    return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), cosmo)


# ------------------------------------------------------------------------------------ the PyTree


def test_cosmology_is_a_pytree_with_seven_leaves():
    leaves, treedef = jax.tree.flatten(LCDM)
    assert leaves == [0.25, 0.05, 0.7, 0.96, 0.8, -1.0, 0.0]
    doubled = jax.tree.unflatten(treedef, [2 * leaf for leaf in leaves])
    assert isinstance(doubled, Cosmology)
    assert doubled.h == 1.4
    assert LCDM.Omega_m == pytest.approx(0.30)
    assert LCDM.Omega_de == pytest.approx(0.70)
    with pytest.raises(dataclasses.FrozenInstanceError):
        LCDM.h = 0.5  # type: ignore[misc]
    # A zero cosmology (optax state, tree_map) must be constructible: construction never validates.
    zeros = jax.tree.map(jnp.zeros_like, LCDM)
    assert float(zeros.h) == 0.0


def test_planck18_defaults():
    planck = Cosmology.planck18()
    assert planck == Cosmology()
    assert planck.Omega_c * planck.h**2 == pytest.approx(0.11933, rel=1e-4)
    assert planck.Omega_b * planck.h**2 == pytest.approx(0.02242, rel=1e-4)
    assert (planck.h, planck.n_s, planck.sigma8, planck.w0, planck.wa) == (
        0.6766,
        0.9665,
        0.8102,
        -1.0,
        0.0,
    )


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"Omega_c": 0.0}, r"Omega_c must be > 0, got 0\.0"),
        ({"Omega_c": -0.1}, r"Omega_c must be > 0, got -0\.1"),
        ({"Omega_b": -0.01}, r"Omega_b must be >= 0, got -0\.01"),
        ({"h": 0.0}, r"h must be > 0, got 0\.0"),
        ({"sigma8": -0.8}, r"sigma8 must be > 0, got -0\.8"),
        ({"Omega_c": 0.9, "Omega_b": 0.2}, r"Omega_m = Omega_c \+ Omega_b must be <= 1 .*got 1\.1"),
        ({"w0": -0.5, "wa": 0.75}, r"w0 \+ wa must be < 0.*got 0\.25"),
        ({"h": float("nan")}, r"h must be finite, got nan"),
        ({"n_s": float("inf")}, r"n_s must be finite, got inf"),
        ({"sigma8": np.array([0.8, -0.1])}, r"sigma8 must be > 0, got \[ 0\.8 -0\.1\]"),
        # w0 + wa < 0 but dark energy not negligible where the growth tables start (a = 6.1e-6)
        ({"w0": -0.3}, r"w0 \+ wa is too large: rho_de / rho_m must be <= 1e-06.*got -0\.3"),
    ],
)
def test_check_cosmology_rejects_unphysical_values(changes, match):
    cosmo = dataclasses.replace(LCDM, **changes)
    with pytest.raises(ValueError, match=match):
        check_cosmology(cosmo)
    with pytest.raises(ValueError, match=match):
        Cosmology.create(**{**dataclasses.asdict(LCDM), **changes})


def test_check_cosmology_type_errors():
    with pytest.raises(TypeError, match=r"expected a jpm_core\.Cosmology"):
        check_cosmology({"h": 0.7})
    with pytest.raises(TypeError, match=r"Cosmology\.h must be a real number"):
        check_cosmology(dataclasses.replace(LCDM, h="fast"))


def test_check_cosmology_accepts_edge_cases_and_returns_its_argument():
    assert check_cosmology(EDS) is EDS
    no_baryons = dataclasses.replace(LCDM, Omega_b=0.0)
    assert check_cosmology(no_baryons) is no_baryons
    batched = jax.tree.map(lambda v: np.array([v, v]), LCDM)
    assert check_cosmology(batched) is batched


def test_public_functions_validate_eagerly():
    bad = dataclasses.replace(LCDM, Omega_c=-0.2)
    for function in (efunc, comoving_distance, scale_factor_of_chi, growth_factor, growth_rate):
        with pytest.raises(ValueError, match=r"Omega_c must be > 0, got -0\.2"):
            function(bad, 0.5)
    with pytest.raises(ValueError, match="Omega_c must be > 0"):
        linear_power(bad, 0.1)
    with pytest.raises(ValueError, match="transfer must be one of"):
        linear_power(LCDM, 0.1, transfer="bbks")
    with pytest.raises(ValueError, match="needs Omega_b > 0"):
        linear_power(dataclasses.replace(LCDM, Omega_b=0.0), 0.1)
    nowiggles = linear_power(
        dataclasses.replace(LCDM, Omega_b=0.0), 0.1, transfer="eisenstein_hu_nowiggles"
    )
    assert np.isfinite(nowiggles)


def test_validation_is_a_no_op_on_tracers():
    bad = dataclasses.replace(LCDM, h=-0.7)
    assert float(jax.jit(lambda c: check_cosmology(c).h)(bad)) == pytest.approx(-0.7)
    # Inside jit the public functions do not raise: they return NaN (tested below).
    assert np.isnan(jax.jit(growth_factor)(dataclasses.replace(LCDM, Omega_c=-0.2), 0.5))
    assert float(jax.grad(lambda h: check_cosmology(dataclasses.replace(LCDM, h=h)).h)(0.7)) == 1.0


def test_valid_range_edges_are_accepted():
    # Omega_m = 1 exactly (float32 rounding of 0.95 + 0.05 included), the end of the tables,
    # and P(k = 0) = 0 are in the valid range, eagerly and traced.
    assert np.isfinite(jax.jit(growth_factor)(EDS, A_MAX))
    assert np.isfinite(growth_factor(EDS, A_MAX))
    assert float(jax.jit(linear_power)(LCDM, 0.0)) == 0.0
    assert np.isfinite(jax.jit(comoving_distance)(LCDM, 1e-9))


_OUT_OF_RANGE = [
    (growth_factor, -0.5),
    (growth_factor, 0.0),
    (growth_factor, 10.0),  # D1(10) = 6.7 before: a polynomial extrapolation of the table
    (growth_rate, 2.0),
    (growth_factor_second, -1.0),
    (growth_rate_second, float("nan")),
    (comoving_distance, 1.7),
    (efunc, -1.0),
    (efunc, 0.0),
]


@pytest.mark.parametrize(("function", "a"), _OUT_OF_RANGE)
def test_scale_factor_out_of_range_raises_eagerly(function, a):
    with pytest.raises(
        ValueError, match=rf"{function.__name__}: the scale factor a must be finite"
    ):
        function(LCDM, a)
    # an array: the message lists the offending values only
    with pytest.raises(ValueError, match=r"got \[") as info:
        function(LCDM, np.array([0.25, a]))
    assert "0.25" not in str(info.value).split("got")[-1]


def test_other_arguments_out_of_range_raise_eagerly():
    with pytest.raises(ValueError, match=r"linear_power: k must be finite and >= 0, got -0\.1"):
        linear_power(LCDM, -0.1)
    with pytest.raises(ValueError, match=r"linear_power: k must be finite and >= 0, got \[inf\]"):
        linear_power(LCDM, np.array([0.1, np.inf]))
    with pytest.raises(ValueError, match=r"linear_power: the scale factor a must be finite"):
        linear_power(LCDM, 0.1, a=-0.5)
    with pytest.raises(ValueError, match=r"sigma_r: r must be finite and > 0, got 0\.0"):
        sigma_r(LCDM, 0.0)
    with pytest.raises(ValueError, match=r"sigma_r: the scale factor a must be finite"):
        sigma_r(LCDM, 8.0, a=3.0)
    with pytest.raises(ValueError, match=r"scale_factor_of_chi: chi must be finite and >= "):
        scale_factor_of_chi(LCDM, -5000.0)  # beyond a = A_MAX in the future
    with pytest.raises(ValueError, match=r"scale_factor_of_chi: chi must be finite.*got nan"):
        scale_factor_of_chi(LCDM, float("nan"))


# Invalid cosmologies as a sampler may propose them, traced inside jit. Before, the first gave
# exactly the sigma8 > 0 answer, the second finite values and gradients, the others finite values
# (a homogeneous field) with NaN gradients.
_INVALID = {
    "sigma8<0": {"sigma8": -0.8},
    "Omega_m>1": {"Omega_c": 0.99},
    "n_s=nan": {"n_s": float("nan")},
    "h<0": {"h": -0.7},
    "h=0": {"h": 0.0},
    "Omega_b<0": {"Omega_b": -0.01},
    "Omega_c=0": {"Omega_c": 0.0},
    "early_dark_energy": {"w0": -0.3},
}

_TRACED_FUNCTIONS = {
    "P(k)": lambda c: linear_power(c, jnp.array([0.0, 0.05, 0.1])),
    "P_nowiggles(k,a)": lambda c: linear_power(
        c, jnp.array([0.05, 0.1]), 0.5, transfer="eisenstein_hu_nowiggles"
    ),
    "sigma_r": lambda c: sigma_r(c, jnp.array([8.0])),
    "D1": lambda c: growth_factor(c, jnp.array([0.1, 1.0])),
    "f1": lambda c: growth_rate(c, jnp.array([0.5])),
    "D2": lambda c: growth_factor_second(c, jnp.array([0.5])),
    "f2": lambda c: growth_rate_second(c, jnp.array([0.5])),
    "E": lambda c: efunc(c, jnp.array([0.5])),
    "chi": lambda c: comoving_distance(c, jnp.array([0.5])),
    "a(chi)": lambda c: scale_factor_of_chi(c, jnp.array([1000.0])),
}


def _all_nan(tree):
    return all(bool(jnp.all(jnp.isnan(leaf))) for leaf in jax.tree.leaves(tree))


def _traced_programs(function):
    """The jitted value, gradient and forward-mode tangent of `function` (compiled once per
    function and reused by every invalid cosmology: they differ only in traced values)."""

    def loss(c):
        return jnp.sum(function(c) ** 2)

    def tangent(c):
        return jax.jvp(loss, (c,), (jax.tree.map(jnp.ones_like, c),))[1]

    return jax.jit(function), jax.jit(jax.grad(loss)), jax.jit(tangent)


_TRACED_PROGRAMS = {name: _traced_programs(f) for name, f in _TRACED_FUNCTIONS.items()}


@pytest.mark.x64
@pytest.mark.parametrize("changes", list(_INVALID.values()), ids=list(_INVALID))
def test_invalid_traced_cosmology_poisons_values_and_gradients(changes):
    cosmo = _array_cosmology(dataclasses.replace(LCDM, **changes))
    for name, (value, gradient, tangent) in _TRACED_PROGRAMS.items():
        assert _all_nan(value(cosmo)), name
        assert _all_nan(gradient(cosmo)), name  # every parameter's derivative
        assert _all_nan(tangent(cosmo)), name


@pytest.mark.x64
def test_missing_baryons_poison_the_wiggles_transfer_only():
    cosmo = _array_cosmology(dataclasses.replace(LCDM, Omega_b=0.0))
    assert _all_nan(jax.jit(linear_power)(cosmo, jnp.array([0.1])))
    smooth = jax.jit(lambda c: linear_power(c, 0.1, transfer="eisenstein_hu_nowiggles"))
    assert np.isfinite(smooth(cosmo))


@pytest.mark.x64
def test_traced_arguments_out_of_range_give_nan_values_and_gradients():
    cosmo = _array_cosmology(LCDM)
    cases = [(function, a) for function, a in _OUT_OF_RANGE] + [
        (linear_power, -0.1),  # k < 0 (P = 0 before)
        (lambda c, k: linear_power(c, 0.1, k), 5.0),  # a beyond the tables
        (lambda c, r: sigma_r(c, r), -8.0),
        (scale_factor_of_chi, -5000.0),
    ]
    for function, argument in cases:
        value, grads = jax.jit(jax.value_and_grad(function, argnums=(0, 1)))(
            cosmo, jnp.asarray(argument)
        )
        assert np.isnan(value), (function, argument)
        assert _all_nan(grads), (function, argument)
    # element by element: the valid scale factors of a batch keep their values
    values = jax.jit(growth_factor)(cosmo, jnp.array([0.5, -1.0, 1.0, 10.0]))
    np.testing.assert_array_equal(np.isnan(values), [False, True, False, True])
    np.testing.assert_allclose(
        np.asarray(values)[[0, 2]], growth_factor(LCDM, np.array([0.5, 1.0]))
    )


@pytest.mark.x64
def test_invalid_traced_cosmology_poisons_lpt():
    import jpm_core as jc

    domain = jc.Domain(4, 100.0)
    delta = 0.1 * jax.random.normal(jax.random.key(0), domain.mesh_shape, jnp.float64)

    def positions(cosmo):
        return jnp.sum(jc.lpt(cosmo, delta, domain, 0.1).positions ** 2)

    bad = _array_cosmology(dataclasses.replace(LCDM, sigma8=-0.8, Omega_c=0.99))
    assert np.isnan(jax.jit(positions)(bad))
    assert _all_nan(jax.jit(jax.grad(positions))(bad))
    good = jax.jit(jax.grad(positions))(_array_cosmology(LCDM))
    assert all(np.isfinite(leaf) for leaf in jax.tree.leaves(good))


# ------------------------------------------------------------------------------------ analytic limits


@pytest.mark.x64
def test_einstein_de_sitter_limits():
    np.testing.assert_allclose(efunc(EDS, A), A**-1.5, rtol=1e-12)
    np.testing.assert_allclose(growth_factor(EDS, A), A, rtol=1e-9)
    np.testing.assert_allclose(growth_rate(EDS, A), 1.0, rtol=1e-9)
    np.testing.assert_allclose(growth_factor_second(EDS, A), -3.0 / 7.0 * A**2, rtol=1e-9)
    np.testing.assert_allclose(growth_rate_second(EDS, A), 2.0, rtol=1e-9)
    chi = 2.0 * HUBBLE_DISTANCE * (1.0 - np.sqrt(A))
    np.testing.assert_allclose(comoving_distance(EDS, A), chi, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(scale_factor_of_chi(EDS, chi), A, rtol=1e-6)  # cancellation at 1e-7
    # Beyond the particle horizon 2 c / H0 there is no scale factor: 0 by convention.
    beyond = scale_factor_of_chi(EDS, np.full(A.shape, 2.5 * HUBBLE_DISTANCE))
    np.testing.assert_array_equal(beyond, 0.0)


def _lcdm_growth_integral(cosmo, a):
    """Heath (1977): D1 proportional to E(a) int_0^a da' / (a' E(a'))^3 for Lambda-CDM."""
    om = cosmo.Omega_m

    def e(x):
        return math.sqrt(om / x**3 + 1.0 - om)

    integral = integrate.quad(lambda x: 1.0 / (x * e(x)) ** 3, 0.0, a, epsabs=0, epsrel=1e-12)[0]
    return e(a) * integral


@pytest.mark.x64
def test_growth_matches_heath_integral_for_lambda_cdm():
    reference = np.array([_lcdm_growth_integral(LCDM, x) for x in A])
    reference /= _lcdm_growth_integral(LCDM, 1.0)
    np.testing.assert_allclose(growth_factor(LCDM, A), reference, rtol=1e-6)
    # f1 = dlnD/dlna from the integral: dlnE/dlna + 1 / (a^2 E^3 int).
    om = LCDM.Omega_m
    e2 = om / A**3 + 1 - om
    integral = reference * _lcdm_growth_integral(LCDM, 1.0) / np.sqrt(e2)
    f_reference = -1.5 * om / A**3 / e2 + 1.0 / (A**2 * e2**1.5 * integral)
    np.testing.assert_allclose(growth_rate(LCDM, A), f_reference, rtol=1e-6)


def _inverse_e(cosmo, a):
    rho_de = a ** (-3 * (1 + cosmo.w0 + cosmo.wa)) * math.exp(-3 * cosmo.wa * (1 - a))
    return 1.0 / math.sqrt(cosmo.Omega_m / a**3 + (1 - cosmo.Omega_m) * rho_de)


@pytest.mark.x64
@pytest.mark.parametrize("cosmo", [LCDM, W0WA], ids=["lcdm", "w0wa"])
def test_comoving_distance_matches_quadrature(cosmo):
    reference = [
        HUBBLE_DISTANCE
        * integrate.quad(lambda x: _inverse_e(cosmo, x) / x**2, s, 1.0, epsabs=0, epsrel=1e-12)[0]
        for s in A
    ]
    np.testing.assert_allclose(comoving_distance(cosmo, A), reference, rtol=3e-7, atol=1e-9)
    np.testing.assert_allclose(efunc(cosmo, A), [1.0 / _inverse_e(cosmo, x) for x in A], rtol=1e-12)


@pytest.mark.x64
@pytest.mark.parametrize("cosmo", [LCDM, W0WA], ids=["lcdm", "w0wa"])
def test_growth_against_fitting_forms(cosmo):
    a = A[2:7]  # 0.05 <= a <= 1, where the fitting forms were calibrated
    rho_de = np.exp(-3 * (1 + cosmo.w0 + cosmo.wa) * np.log(a) - 3 * cosmo.wa * (1 - a))
    omega_m_a = cosmo.Omega_m / a**3 / (cosmo.Omega_m / a**3 + (1 - cosmo.Omega_m) * rho_de)
    d1, f1, d2, f2 = (
        np.asarray(function(cosmo, A))[2:7]
        for function in (growth_factor, growth_rate, growth_factor_second, growth_rate_second)
    )
    # Fitting forms, good to about 1e-2 for f1 with w0-wa (Linder 2005: gamma = 0.55 for
    # Lambda-CDM), a few 1e-3 for D2 (Bouchet et al. 1995), and about 1e-2 for f2.
    np.testing.assert_allclose(f1, omega_m_a**0.55, rtol=2e-2)
    np.testing.assert_allclose(d2, -3 / 7 * d1**2 * omega_m_a ** (-1 / 143), rtol=2e-3)
    np.testing.assert_allclose(f2, 2 * omega_m_a ** (6 / 11), rtol=1e-2)


@pytest.mark.x64
def test_growth_rates_are_log_derivatives():
    """f = dlnD/dlna: the rate tables agree with differentiating the factor tables."""
    log_a = jnp.log(jnp.asarray(A[1:]))

    def rates(x):
        cosmo = W0WA
        return jnp.stack(
            [
                jnp.log(growth_factor(cosmo, jnp.exp(x))),
                jnp.log(-growth_factor_second(cosmo, jnp.exp(x))),
            ]
        )

    derivatives = jax.jit(jax.vmap(jax.jacfwd(rates)))(log_a)
    np.testing.assert_allclose(growth_rate(W0WA, A)[1:], derivatives[:, 0], rtol=1e-6)
    np.testing.assert_allclose(growth_rate_second(W0WA, A)[1:], derivatives[:, 1], rtol=1e-6)


def test_scale_factor_of_chi_inverts_comoving_distance_float32():
    a = jnp.linspace(0.01, 1.5, 50)
    back = scale_factor_of_chi(W0WA, comoving_distance(W0WA, a))
    assert back.dtype == jnp.float32
    np.testing.assert_allclose(back, a, rtol=1e-5)


@pytest.mark.x64
def test_scale_factor_of_chi_inverts_comoving_distance_float64():
    back = scale_factor_of_chi(W0WA, comoving_distance(W0WA, A))
    assert back.dtype == jnp.float64
    np.testing.assert_allclose(back, A, rtol=1e-12)
    assert float(scale_factor_of_chi(W0WA, comoving_distance(W0WA, A))[6]) == 1.0


# ------------------------------------------------------------------------------------ power spectrum


def test_wiggles_oscillate_around_the_smooth_spectrum_and_power_vanishes_at_k_zero():
    k = jnp.concatenate([jnp.zeros((1,)), jnp.logspace(-4, 0, 399)])
    wiggles = linear_power(LCDM, k)
    smooth = linear_power(LCDM, k, transfer="eisenstein_hu_nowiggles")
    assert float(wiggles[0]) == 0.0
    assert float(smooth[0]) == 0.0
    assert bool(jnp.all(wiggles[1:] > 0))
    ratio = wiggles[1:] / smooth[1:]
    k = k[1:]
    assert abs(float(ratio[0]) - 1.0) < 1e-2  # same large-scale limit
    bao = (k > 0.02) & (k < 0.4)
    assert 0.02 < float(jnp.max(jnp.abs(ratio - 1.0) * bao)) < 0.15
    sign_changes = jnp.sum(jnp.diff(jnp.sign(ratio[bao] - jnp.mean(ratio[bao]))) != 0)
    assert int(sign_changes) >= 6  # several acoustic peaks


def test_power_scales_with_growth_squared_and_shapes_broadcast():
    k = jnp.logspace(-3, 0.5, 7)
    a = jnp.array([0.25, 0.5, 1.0])
    power = linear_power(W0WA, k[None, :], a[:, None])
    assert power.shape == (3, 7)
    expected = growth_factor(W0WA, a)[:, None] ** 2 * linear_power(W0WA, k)[None, :]
    np.testing.assert_allclose(power, expected, rtol=1e-5)
    sigma = sigma_r(W0WA, jnp.array([[8.0, 8.0, 8.0], [4.0, 8.0, 16.0]]))
    assert sigma.shape == (2, 3)
    np.testing.assert_allclose(sigma[0], W0WA.sigma8, rtol=1e-5)
    assert bool(jnp.all(jnp.diff(sigma[1]) < 0))  # smaller in larger spheres


# ------------------------------------------------------------------------------------ dtypes, shapes


@pytest.mark.parametrize(
    "function",
    [
        efunc,
        comoving_distance,
        scale_factor_of_chi,
        growth_factor,
        growth_rate,
        growth_factor_second,
        growth_rate_second,
    ],
)
def test_shapes_and_default_dtype(function):
    values = function(LCDM, jnp.array([[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]]))
    assert values.shape == (2, 3)
    assert values.dtype == jnp.float32
    np.testing.assert_array_equal(values[:, 1:], values[:, :1] * jnp.ones((1, 2)))
    if function is not scale_factor_of_chi:
        assert function(LCDM, 1).dtype == jnp.float32  # integers are promoted, scalars work


@pytest.mark.x64
def test_dtype_under_x64():
    for function in (efunc, comoving_distance, scale_factor_of_chi, growth_factor):
        assert function(LCDM, A).dtype == jnp.float64


# ------------------------------------------------------------------------------------ transformations


def _all_quantities(cosmo, a):
    # One function per kind of table: distance quadrature, growth ODE, EH transfer + sigma8.
    return jnp.stack(
        [comoving_distance(cosmo, a), growth_factor_second(cosmo, a), linear_power(cosmo, 0.1, a)]
    )


def test_vmap_over_cosmologies_matches_a_loop():
    cosmos = [LCDM, W0WA, Cosmology(Omega_c=0.3, Omega_b=0.04, h=0.72, w0=-1.1, wa=0.3)]
    stacked = jax.tree.map(lambda *leaves: jnp.array(leaves), *cosmos)
    function = jax.jit(_all_quantities)
    batched = jax.jit(jax.vmap(_all_quantities, in_axes=(0, None)))(stacked, 0.6)
    for i, cosmo in enumerate(cosmos):
        np.testing.assert_allclose(batched[i], function(cosmo, 0.6), rtol=2e-6)


@pytest.mark.slow
@pytest.mark.x64
def test_inside_a_diffrax_vector_field_with_gradients():
    """Integrate dlnD1/dlna = f1(a) with diffrax from a = 0.01 to 1: D1(0.01) = exp(-int f1)."""
    diffrax = pytest.importorskip("diffrax")

    def log_growth_deficit(omega_c):
        def vector_field(t, y, cosmo):
            return growth_rate(cosmo, jnp.exp(t))

        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(vector_field),
            diffrax.Tsit5(),
            t0=math.log(0.01),
            t1=0.0,
            dt0=0.05,
            y0=jnp.zeros(()),
            args=dataclasses.replace(W0WA, Omega_c=omega_c),
            stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
        )
        return solution.ys[-1]

    integral = jax.jit(log_growth_deficit)(W0WA.Omega_c)
    np.testing.assert_allclose(jnp.exp(-integral), growth_factor(W0WA, 0.01), rtol=1e-7)
    grad = jax.jit(jax.grad(log_growth_deficit))(W0WA.Omega_c)
    expected = jax.grad(
        lambda oc: -jnp.log(growth_factor(dataclasses.replace(W0WA, Omega_c=oc), 0.01))
    )(W0WA.Omega_c)
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


# ------------------------------------------------------------------------------------ gradients


def _quantities_by_scan(cosmo):
    """D1 and chi (in a lax.scan over scale factors, traced cosmology), and P(k)."""

    def body(carry, a):
        return carry, jnp.stack([growth_factor(cosmo, a), comoving_distance(cosmo, a) / 1000.0])

    _, background = jax.lax.scan(body, jnp.zeros(()), jnp.asarray(A[2:6]))
    k = jnp.array([0.0, 0.01, 0.1, 1.0])  # k = 0 included: P = 0 with finite derivatives
    return jnp.concatenate([background.reshape(-1), linear_power(cosmo, k) / 1000.0])


@pytest.mark.x64
def test_gradients_with_respect_to_cosmology_inside_lax_scan():
    """check_grads (fwd and rev) of D1, chi and P(k); D1 and chi traced inside a lax.scan body."""
    function = jax.jit(_quantities_by_scan)
    values = function(_array_cosmology(W0WA))
    np.testing.assert_allclose(values[0:8:2], growth_factor(W0WA, A)[2:6], rtol=1e-12)
    np.testing.assert_allclose(values[1:8:2], comoving_distance(W0WA, A)[2:6] / 1e3, rtol=1e-12)
    check_grads(function, (_array_cosmology(W0WA),), order=1, modes=("fwd", "rev"), eps=1e-4)


@pytest.mark.slow
@pytest.mark.x64
@pytest.mark.parametrize(
    "function",
    [
        lambda c: growth_factor_second(c, jnp.array([0.2, 0.7])),
        lambda c: growth_rate(c, 0.5),
        lambda c: growth_rate_second(c, 0.5),
        lambda c: scale_factor_of_chi(c, jnp.array([300.0, 2000.0])),
        lambda c: linear_power(c, jnp.array([0.05, 0.5]), transfer="eisenstein_hu_nowiggles"),
        lambda c: sigma_r(c, jnp.array([2.0, 20.0])),
    ],
    ids=["D2", "f1", "f2", "a_of_chi", "P_nowiggles", "sigma_r"],
)
def test_gradients_of_the_other_functions(function):
    check_grads(function, (_array_cosmology(W0WA),), order=1, modes=("fwd", "rev"), eps=1e-4)


def test_public_poison_keeps_valid_results_bit_for_bit_and_poisons_pytrees():
    import jpm_core as jc

    params = {"w": jnp.asarray([0.5, -1.0, 2.0]), "n": 3}  # an int leaf has no derivative

    def f(omega_c, w):
        cosmo = jc.Cosmology(Omega_c=omega_c)
        value = jc.growth_factor(cosmo, jnp.asarray(0.5)) * jnp.sum(w**2)
        ok = jnp.isfinite(omega_c) & (omega_c > 0) & jnp.all(jnp.isfinite(w))
        return jc.poison(value, ok, cosmo, {**params, "w": w})

    def plain(omega_c, w):
        return jc.growth_factor(jc.Cosmology(Omega_c=omega_c), jnp.asarray(0.5)) * jnp.sum(w**2)

    args = (jnp.float32(0.25), params["w"])
    grad = jax.jit(jax.grad(f, argnums=(0, 1)))
    assert f(*args) == plain(*args)
    for g, h in zip(grad(*args), jax.grad(plain, argnums=(0, 1))(*args), strict=True):
        np.testing.assert_array_equal(g, h)
    for bad in [(jnp.float32(jnp.nan), params["w"]), (args[0], params["w"].at[1].set(jnp.inf))]:
        assert np.isnan(jax.jit(f)(*bad))
        g_omega, g_w = grad(*bad)
        assert np.isnan(g_omega)
        assert np.all(np.isnan(g_w))
    # forward mode too
    _, tangent = jax.jvp(lambda o: f(o, params["w"]), (jnp.float32(-1.0),), (jnp.float32(1.0),))
    assert np.isnan(tangent)
