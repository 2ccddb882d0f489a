"""halofit (Takahashi et al. 2012) against pyccl, an independent C implementation (test-only dependency).

Same configuration as tests/test_cosmology_pyccl.py: flat w0-wa CDM without neutrinos (m_nu = 0,
N_eff = 0), Eisenstein & Hu transfer function with T_CMB = 2.7255 K, sigma8 normalisation. pyccl's
growth includes the photons' radiation density, jpm-core's does not (relative effect on D(z)^2 of a
few 1e-4 at z = 2).

Largest relative differences reached (float64), k in [0.01, 5] h/Mpc and z in {0, 0.5, 1, 2}, over
the four cosmologies: 6e-4, at z = 2 (the radiation in pyccl's growth; 2e-5 at z = 0). The issue asks
for 1%; the tolerance is 2e-3.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pyccl
import pytest
from jax.test_util import check_grads

from jpm_core import T_CMB, Cosmology, comoving_distance, linear_power
from jpm_core._src.cosmology import halofit
from jpm_core._src.cosmology.halofit import nonlinear_power

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
WAVENUMBERS = np.geomspace(0.01, 5.0, 40)  # h/Mpc
REDSHIFTS = np.array([0.0, 0.5, 1.0, 2.0])


def _ccl(cosmo, **extra):
    return pyccl.Cosmology(
        **{k: float(v) for k, v in dataclasses.asdict(cosmo).items()},
        m_nu=0.0,
        Neff=0.0,
        transfer_function="eisenstein_hu",
        matter_power_spectrum="halofit",
        **extra,
    )


def _reference(cosmo):
    ccl = _ccl(cosmo, T_CMB=T_CMB)
    return np.stack(
        [
            pyccl.nonlin_matter_power(ccl, WAVENUMBERS * cosmo.h, 1.0 / (1.0 + z)) * cosmo.h**3
            for z in REDSHIFTS
        ]
    )


def _relative_error(actual, desired):
    return float(np.max(np.abs(np.asarray(actual, np.float64) / desired - 1.0)))


@pytest.mark.x64
def test_nonlinear_power_matches_pyccl():
    # One compiled program for every cosmology (the cosmology is an argument, not a constant).
    a = 1.0 / (1.0 + REDSHIFTS[:, None])
    for name, cosmo in COSMOLOGIES.items():
        power = nonlinear_power(cosmo, WAVENUMBERS[None, :], a)
        assert power.dtype == np.float64
        assert _relative_error(power, _reference(cosmo)) < 2e-3, name
        # Nonlinear power exceeds the linear one at k > 0.3 h/Mpc (no weakened comparison: it
        # would fail with halofit switched off).
        linear = linear_power(cosmo, WAVENUMBERS[None, :], a)
        assert np.all(np.asarray(power / linear)[:, WAVENUMBERS > 0.5] > 1.2), name


def test_float32_default_matches_pyccl():
    cosmo = COSMOLOGIES["w0wa_phantom_crossing"]
    power = nonlinear_power(cosmo, WAVENUMBERS[None, :], 1.0 / (1.0 + REDSHIFTS[:, None]))
    assert power.dtype == np.float32
    assert _relative_error(power, _reference(cosmo)) < 5e-3


@pytest.mark.x64
def test_gradients_match_finite_differences():
    base = COSMOLOGIES["w0wa_phantom_crossing"]

    def f(omega_c, sigma8, w0):
        cosmo = dataclasses.replace(base, Omega_c=omega_c, sigma8=sigma8, w0=w0)
        return nonlinear_power(cosmo, 1.0, 0.7)

    args = (jnp.asarray(base.Omega_c), jnp.asarray(base.sigma8), jnp.asarray(base.w0))
    check_grads(jax.jit(f), args, order=1, modes=("fwd", "rev"), eps=1e-5, atol=1e-6, rtol=1e-5)


@pytest.mark.x64
def test_jit_and_vmap_over_scale_factor():
    cosmo = COSMOLOGIES["w0wa_thawing"]
    k = jnp.asarray(WAVENUMBERS)
    a = jnp.asarray(1.0 / (1.0 + REDSHIFTS))
    direct = nonlinear_power(cosmo, k[None, :], a[:, None])
    mapped = jax.jit(jax.vmap(lambda a: nonlinear_power(cosmo, k, a)))(a)
    np.testing.assert_allclose(mapped, direct, rtol=1e-10)
    # k = 0: zero power (and no NaN).
    assert float(nonlinear_power(cosmo, jnp.array([0.0, 0.1]), 1.0)[0]) == 0.0


@pytest.mark.slow
@pytest.mark.x64
def test_dark_energy_choices():
    """The three w0-wa prescriptions coincide for wa = 0; w_eff matches distances to the drag epoch."""
    constant_w = COSMOLOGIES["low_omega_m_constant_w"]
    k = jnp.asarray([0.1, 1.0, 5.0])
    a = jnp.asarray([1.0, 0.5])
    default = nonlinear_power(constant_w, k[None, :], a[:, None])
    for choice in ("cpl", "distance_matched"):
        other = nonlinear_power(constant_w, k[None, :], a[:, None], dark_energy=choice)
        np.testing.assert_allclose(other, default, rtol=1e-7)

    # The distance-matched w solves chi_w(a_drag) - chi_w(a) = chi(a_drag) - chi(a), checked with
    # pyccl's distances (radiation off on both sides).
    cosmo = COSMOLOGIES["w0wa_phantom_crossing"]
    a_drag = 1.0 / (1.0 + halofit._z_drag(cosmo))
    w_eff = np.asarray(jax.vmap(halofit._effective_w, (None, 0, None))(cosmo, a, a_drag))
    assert np.all((w_eff > -1.3) & (w_eff < -0.8))

    def span(c, a):
        ccl = _ccl(c, T_CMB=0.0)
        return pyccl.comoving_radial_distance(ccl, float(a_drag)) - pyccl.comoving_radial_distance(
            ccl, float(a)
        )

    for w, scale_factor in zip(w_eff, a, strict=True):
        matched = dataclasses.replace(cosmo, w0=float(w), wa=0.0)
        assert abs(span(matched, scale_factor) / span(cosmo, scale_factor) - 1.0) < 1e-5
    # and jpm-core's own distances agree with that solution
    chi = comoving_distance(dataclasses.replace(cosmo, w0=float(w_eff[0]), wa=0.0), a_drag)
    assert abs(float(chi) / (span(cosmo, 1.0) * cosmo.h) - 1.0) < 1e-5


def test_bad_input_raises():
    cosmo = COSMOLOGIES["planck18"]
    with pytest.raises(ValueError, match="transfer"):
        nonlinear_power(cosmo, 0.1, transfer="bbks")
    with pytest.raises(ValueError, match="dark_energy"):
        nonlinear_power(cosmo, 0.1, dark_energy="w(z)")
    with pytest.raises(ValueError, match="rank"):
        nonlinear_power(cosmo, jnp.ones((2, 3)), jnp.ones(3))
    with pytest.raises(ValueError, match="Omega_b"):
        nonlinear_power(dataclasses.replace(cosmo, Omega_b=0.0), 0.1)
    with pytest.raises(ValueError, match="sigma8"):
        nonlinear_power(dataclasses.replace(cosmo, sigma8=-1.0), 0.1)
