"""Cosmology module against pyccl (an independent C implementation), test-only dependency.

Same physics on both sides: flat w0-wa CDM without radiation or neutrinos for the background and
growth (pyccl with T_CMB = 0, N_eff = 0, m_nu = 0); the Eisenstein & Hu transfer functions need a CMB
temperature, so the power spectra compare pyccl with T_CMB = 2.7255 K at a = 1 (where pyccl's
radiation-aware growth plays no role) with the same sigma8.

Tolerances are set a few times above what is reached (largest relative differences over these
cosmologies, float64 / float32: D1 1.1e-6 / 1.1e-6, f1 2e-7 / 2e-7, E 4e-6 / 4e-6 (pyccl's splines),
chi 2.4e-7 / 9e-7, a(chi) 2.3e-7 / 1.5e-6, P(k) 2.8e-6 / 2.6e-6, sigma(R) 7e-7 / 7e-7).
"""

import dataclasses

import jax
import numpy as np
import pyccl
import pytest

from jpm_core import (
    T_CMB,
    Cosmology,
    comoving_distance,
    efunc,
    growth_factor,
    growth_rate,
    linear_power,
    scale_factor_of_chi,
    sigma_r,
)

COSMOLOGIES = {
    "planck18": Cosmology.planck18(),
    "w0wa_phantom_crossing": Cosmology(
        Omega_c=0.20, Omega_b=0.045, h=0.65, n_s=0.98, sigma8=0.75, w0=-0.8, wa=-0.5
    ),
    "w0wa_thawing": Cosmology(
        Omega_c=0.33, Omega_b=0.04, h=0.75, n_s=0.94, sigma8=0.85, w0=-1.2, wa=0.4
    ),
    "low_omega_m_constant_w": Cosmology(
        Omega_c=0.17, Omega_b=0.05, h=0.72, n_s=1.0, sigma8=0.9, w0=-0.9, wa=0.0
    ),
}
SCALE_FACTORS = np.linspace(0.02, 0.98, 49)
WAVENUMBERS = np.logspace(-4, 1, 200)  # h/Mpc


def _ccl(cosmo, **extra):
    return pyccl.Cosmology(
        **{k: float(v) for k, v in dataclasses.asdict(cosmo).items()},
        m_nu=0.0,
        matter_power_spectrum="linear",
        **extra,
    )


def _ccl_background(cosmo):
    return _ccl(cosmo, T_CMB=0.0, Neff=0.0, transfer_function="eisenstein_hu")


def _relative_error(actual, desired):
    return float(np.max(np.abs(np.asarray(actual, np.float64) / desired - 1.0)))


@pytest.mark.x64
@pytest.mark.parametrize("name", COSMOLOGIES)
def test_background_and_growth_match_pyccl(name):
    cosmo = COSMOLOGIES[name]
    reference = _ccl_background(cosmo)
    a = SCALE_FACTORS
    chi = pyccl.comoving_radial_distance(reference, a) * cosmo.h  # Mpc -> Mpc/h
    assert _relative_error(efunc(cosmo, a), pyccl.h_over_h0(reference, a)) < 2e-5
    assert _relative_error(comoving_distance(cosmo, a), chi) < 5e-6
    assert _relative_error(scale_factor_of_chi(cosmo, chi), a) < 5e-6
    assert _relative_error(growth_factor(cosmo, a), pyccl.growth_factor(reference, a)) < 5e-6
    assert _relative_error(growth_rate(cosmo, a), pyccl.growth_rate(reference, a)) < 5e-6


@pytest.mark.x64
@pytest.mark.parametrize("name", COSMOLOGIES)
@pytest.mark.parametrize("transfer", ["eisenstein_hu", "eisenstein_hu_nowiggles"])
def test_linear_power_matches_pyccl(name, transfer):
    cosmo = COSMOLOGIES[name]
    reference = _ccl(cosmo, T_CMB=T_CMB, transfer_function=transfer)
    k = WAVENUMBERS
    expected = pyccl.linear_matter_power(reference, k * cosmo.h, 1.0) * cosmo.h**3
    assert _relative_error(linear_power(cosmo, k, transfer=transfer), expected) < 1e-5
    radii = np.array([1.0, 8.0, 30.0])  # Mpc/h
    expected_sigma = pyccl.sigmaR(reference, radii / cosmo.h, 1.0)
    assert _relative_error(sigma_r(cosmo, radii, transfer=transfer), expected_sigma) < 1e-5


def test_float32_defaults_match_pyccl():
    """The default precision is float32: everything above, to the accuracy float32 allows."""
    cosmo = COSMOLOGIES["w0wa_phantom_crossing"]
    reference = _ccl_background(cosmo)
    a = SCALE_FACTORS
    chi = pyccl.comoving_radial_distance(reference, a) * cosmo.h
    d1 = growth_factor(cosmo, a)
    assert d1.dtype == np.float32
    assert _relative_error(d1, pyccl.growth_factor(reference, a)) < 1e-5
    assert _relative_error(growth_rate(cosmo, a), pyccl.growth_rate(reference, a)) < 1e-5
    assert _relative_error(comoving_distance(cosmo, a), chi) < 2e-5
    assert _relative_error(scale_factor_of_chi(cosmo, chi), a) < 2e-5
    power_reference = _ccl(cosmo, T_CMB=T_CMB, transfer_function="eisenstein_hu")
    expected = pyccl.linear_matter_power(power_reference, WAVENUMBERS * cosmo.h, 1.0) * cosmo.h**3
    assert _relative_error(linear_power(cosmo, WAVENUMBERS), expected) < 1e-4
    assert not jax.config.jax_enable_x64
