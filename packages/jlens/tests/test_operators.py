"""Geometry checks, Kaiser-Squires round trip, forward/adjoint dot-product tests, shape noise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlens

GEO = jlens.FlatSky(32, pixel_arcmin=2.0)


def _field(key, shape=(32, 32)):
    return jax.random.normal(jax.random.key(key), shape)


def test_flat_sky_sizes_and_errors():
    a = jlens.FlatSky(128, field_deg=5.0)
    b = jlens.FlatSky(128, pixel_arcmin=5.0 * 60 / 128)
    assert a.pixel_area_arcmin2 == pytest.approx((300 / 128) ** 2)
    assert a.ell_nyquist == pytest.approx(np.pi / a.pixel_rad)
    assert a.ell_fundamental == pytest.approx(2 * np.pi / np.deg2rad(5.0))
    a.check_same("b", b)
    assert hash(a) == hash(jlens.FlatSky(128, field_deg=5.0))
    with pytest.raises(ValueError, match="mismatched pixel sizes"):
        a.check_same("other", jlens.FlatSky(128, field_deg=6.0))
    with pytest.raises(ValueError, match="exactly one"):
        jlens.FlatSky(64)
    with pytest.raises(ValueError, match="exactly one"):
        jlens.FlatSky(64, field_deg=1.0, pixel_arcmin=1.0)
    with pytest.raises(ValueError, match="field_deg"):
        jlens.FlatSky(64, field_deg=-1.0)
    with pytest.raises(ValueError, match="square"):
        a.check_map("kappa", np.zeros((128, 64)))
    with pytest.raises(ValueError, match="aliases"):
        a.check_ell_range("ell_edges", [100.0, 2 * a.ell_nyquist])
    with pytest.raises(ValueError, match="square"):
        jlens.map_power_spectrum(np.zeros((128, 120)), a, [200.0, 400.0])
    with pytest.raises(ValueError, match="aliases"):
        jlens.map_power_spectrum(np.zeros((128, 128)), a, [200.0, 1e5])


def test_kaiser_squires_round_trip_exact_up_to_zero_mode():
    kappa = _field(0, (2, 32, 32))
    gamma = jlens.kappa_to_shear(kappa)
    assert gamma.shape == (2, 2, 32, 32)
    back = jlens.kaiser_squires(gamma)
    expected = kappa - kappa.mean(axis=(-2, -1), keepdims=True)
    np.testing.assert_allclose(back, expected, atol=2e-5)
    d1, d2 = jlens.shear_multipliers((32, 32))
    norm = np.asarray(d1**2 + d2**2)
    assert np.all(norm.ravel()[1:] > 0)
    # |gamma|^2 = |kappa|^2 mode by mode away from the Nyquist lines (power is conserved)
    assert float(jnp.sum(gamma[0] ** 2)) == pytest.approx(float(jnp.sum(expected[0] ** 2)), rel=0.1)


def test_shear_of_a_plane_wave():
    """kappa = cos(l x) along x: gamma_1 = cos(l x), gamma_2 = 0 (D_1 = 1 on the x axis)."""
    x = np.arange(32)
    kappa = np.tile(np.cos(2 * np.pi * 3 * x / 32), (32, 1))
    gamma = np.asarray(jlens.kappa_to_shear(kappa))
    np.testing.assert_allclose(gamma[0], kappa, atol=1e-5)
    np.testing.assert_allclose(gamma[1], 0.0, atol=1e-5)
    diagonal = np.cos(2 * np.pi * 3 * (x[:, None] + x[None, :]) / 32)
    gamma = np.asarray(jlens.kappa_to_shear(diagonal))  # l_x = l_y: D_1 = 0, D_2 = 1
    np.testing.assert_allclose(gamma[0], 0.0, atol=1e-5)
    np.testing.assert_allclose(gamma[1], diagonal, atol=1e-5)


@pytest.mark.parametrize("padding", [0, 8])
@pytest.mark.parametrize("masked", [False, True])
def test_shear_operator_adjoint_dot_product(padding, masked):
    mask = (np.asarray(_field(9)) > -0.5).astype(np.float32) if masked else None
    op = jlens.ShearOperator(GEO, mask=mask, padding=padding, noise_std=0.01)
    x = _field(1)
    y = _field(2, (2, 32, 32))
    lhs = jnp.vdot(op.forward(x), y)
    rhs = jnp.vdot(x, op.adjoint(y))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4)
    # jit and vmap through the operator (a PyTree)
    batched = jax.jit(jax.vmap(lambda o, k: o.forward(k), in_axes=(None, 0)))(op, x[None])
    np.testing.assert_allclose(batched[0], op.forward(x), atol=1e-6)


def test_convergence_operator_and_layout_errors():
    mask = np.ones((32, 32))
    mask[:5] = 0
    op = jlens.ConvergenceOperator(GEO, mask=mask, noise_std=0.02)
    x, y = _field(3), _field(4)
    np.testing.assert_allclose(jnp.vdot(op.forward(x), y), jnp.vdot(x, op.adjoint(y)), rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, ny, nx\)"):
        jlens.kaiser_squires(np.zeros((32, 32, 2)))
    with pytest.raises(ValueError, match="mask"):
        jlens.ShearOperator(GEO, mask=np.ones((16, 16)))
    with pytest.raises(ValueError, match="padding"):
        jlens.kappa_to_shear(np.zeros((8, 8)), padding=-1)
    with pytest.raises(ValueError, match="needs noise_std"):
        jlens.ShearOperator(GEO).simulate(jax.random.key(0), x)


def test_shape_noise_level():
    geo = jlens.FlatSky(128, field_deg=5.0)
    std = jlens.shape_noise_std(0.2, 30.0, geo)
    assert float(std) == pytest.approx(0.2 / np.sqrt(30.0 * (300 / 128) ** 2), rel=1e-6)
    per_bin = jlens.shape_noise_std(0.26, np.full(5, 27.0 / 5), jlens.FlatSky(256, field_deg=10.0))
    np.testing.assert_allclose(per_bin, 0.26 / np.sqrt(5.4 * (600 / 256) ** 2), rtol=1e-6)
    op = jlens.ShearOperator(geo, noise_std=std)
    observed = op.simulate(jax.random.key(5), jnp.zeros((128, 128)))
    assert float(observed.std()) == pytest.approx(float(std), rel=0.02)
    with pytest.raises(ValueError, match="n_gal"):
        jlens.shape_noise_std(0.2, 0.0, geo)
    traced = jax.jit(lambda n: jlens.shape_noise_std(0.2, n, geo))(-1.0)
    assert np.isnan(traced)
