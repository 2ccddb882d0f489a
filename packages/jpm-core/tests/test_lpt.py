"""Tests of `lpt`, `lpt_displacements` and `lagrangian_grid` against analytic results."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jpm_core as jc
from jpm_core import Cosmology, efunc, growth_factor, growth_factor_second


def _cosine_field(domain, amplitudes, modes):
    """phi = sum_i A_i cos(k_i x_i) (physical coordinates) and delta = laplacian(phi)."""
    coords = [np.arange(n) * c for n, c in zip(domain.mesh_shape, domain.cell_size, strict=True)]
    grids = np.meshgrid(*coords, indexing="ij")
    ks = [2 * np.pi * m / b for m, b in zip(modes, domain.box_size, strict=True)]
    cos = [np.cos(k * g) for k, g in zip(ks, grids, strict=True)]
    sin = [np.sin(k * g) for k, g in zip(ks, grids, strict=True)]
    delta = sum(-a * k**2 * c for a, k, c in zip(amplitudes, ks, cos, strict=True))
    return delta, ks, cos, sin


@pytest.mark.x64
def test_first_and_second_order_match_analytic_cosine_fields():
    # phi = sum_i A_i cos(k_i x_i): psi1_i = A_i k_i sin(k_i x_i); delta2 = sum_{i<j} A_i A_j k_i^2
    # k_j^2 cos_i cos_j, each pair a single Fourier mode with |k|^2 = k_i^2 + k_j^2, so
    # psi2_i = sum_{j != i} A_i A_j k_i^3 k_j^2 / (k_i^2 + k_j^2) sin_i cos_j. Anisotropic cells.
    domain = jc.Domain((16, 12, 8), (100.0, 60.0, 40.0))
    amps, modes = (8.0, -13.0, 5.0), (2, 1, 1)
    delta, ks, cos, sin = _cosine_field(domain, amps, modes)
    psi1, psi2 = jc.lpt_displacements(jnp.asarray(delta), domain, order=2)
    for i in range(3):
        cell = domain.cell_size[i]
        want1 = amps[i] * ks[i] * sin[i] / cell
        want2 = (
            sum(
                amps[i]
                * amps[j]
                * ks[i] ** 3
                * ks[j] ** 2
                / (ks[i] ** 2 + ks[j] ** 2)
                * sin[i]
                * cos[j]
                for j in range(3)
                if j != i
            )
            / cell
        )
        np.testing.assert_allclose(psi1[..., i], want1, atol=1e-12 * np.abs(want1).max())
        np.testing.assert_allclose(psi2[..., i], want2, atol=1e-12 * np.abs(want2).max())
    assert np.abs(psi2).max() > 0.1 * np.abs(psi1).max()  # the second order matters here


@pytest.mark.x64
def test_second_order_vanishes_for_one_dimensional_perturbations():
    domain = jc.Domain(8, 40.0)
    rng = np.random.default_rng(0)
    profile = rng.normal(size=8)
    delta = jnp.broadcast_to(jnp.asarray(profile - profile.mean())[:, None, None], (8, 8, 8))
    psi1, psi2 = jc.lpt_displacements(delta, domain, order=2)
    assert np.abs(psi1[..., 0]).max() > 0.1
    assert np.abs(psi1[..., 1:]).max() < 1e-14
    assert np.abs(psi2).max() < 1e-12 * np.abs(psi1).max()


@pytest.mark.x64
def test_einstein_de_sitter_trajectory_and_momenta():
    # In Einstein-de Sitter D1 = a, D2 = -3/7 a^2, f1 = 1, f2 = 2, E = a^(-3/2), so
    # x = q + a psi1 - 3/7 a^2 psi2 and p = a^2 E (a psi1 - 6/7 a^2 psi2).
    eds = Cosmology(Omega_c=0.95, Omega_b=0.05)
    domain = jc.Domain(8, 40.0)
    delta = jax.random.normal(jax.random.key(1), domain.mesh_shape)
    psi1, psi2 = jc.lpt_displacements(delta, domain, order=2)
    q = jc.lagrangian_grid(domain)
    a = 0.4
    state = jc.lpt(eds, delta, domain, a, order=2)
    want_x = q + a * psi1 - 3.0 / 7.0 * a**2 * psi2
    want_p = a**2 * a**-1.5 * (a * psi1 - 6.0 / 7.0 * a**2 * psi2)
    scale = np.abs(psi1).max()
    np.testing.assert_allclose(state.positions, want_x, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(state.momenta, want_p, rtol=0, atol=1e-5 * scale)
    assert float(state.a) == a


@pytest.mark.x64
@pytest.mark.parametrize("order", [1, 2])
def test_momenta_are_the_derivative_of_the_trajectory(order):
    # p = a^3 E dx/da: central finite differences of lpt positions in a.
    cosmo = Cosmology()
    domain = jc.Domain(8, 40.0)
    delta = jax.random.normal(jax.random.key(2), domain.mesh_shape)
    a, h = 0.5, 1e-4
    x_plus = jc.lpt(cosmo, delta, domain, a + h, order=order).positions
    x_minus = jc.lpt(cosmo, delta, domain, a - h, order=order).positions
    state = jc.lpt(cosmo, delta, domain, a, order=order)
    velocity = state.momenta / (a**3 * efunc(cosmo, a))
    fd = (x_plus - x_minus) / (2 * h)
    np.testing.assert_allclose(fd, velocity, rtol=0, atol=1e-6 * np.abs(velocity).max())


@pytest.mark.x64
def test_second_order_enhances_infall_onto_a_peak():
    cosmo = Cosmology()
    domain = jc.Domain(8, 40.0)
    assert float(growth_factor_second(cosmo, 1.0)) < 0
    r2 = sum((np.arange(8)[s] - 4.0) ** 2 for s in np.ix_(range(8), range(8), range(8)))
    blob = np.exp(-r2 / (2 * 1.2**2))
    delta = jnp.asarray(blob - blob.mean())
    q = jc.lagrangian_grid(domain)
    psi1, _ = jc.lpt_displacements(delta, domain, order=2)
    first = float(growth_factor(cosmo, 1.0)) * psi1
    second = jc.lpt(cosmo, delta, domain, 1.0, order=2).positions - q
    inner = (r2 > 0) & (r2 <= 4)
    radial = (q - 4.0)[inner]
    # first order falls towards the peak; the second-order term adds to the infall
    assert np.all(np.sum(first[inner] * radial, axis=-1) < 0)
    assert np.all(np.sum((second - first)[inner] * first[inner], axis=-1) > 0)


def test_float32_default_shapes_and_jit():
    domain = jc.Domain((8, 6, 4), (40.0, 30.0, 20.0))
    delta = jax.random.normal(jax.random.key(3), domain.mesh_shape)
    cosmo = Cosmology()
    state = jc.lpt(cosmo, delta, domain, 0.1)
    assert state.positions.shape == (8, 6, 4, 3)
    assert state.momenta.shape == (8, 6, 4, 3)
    assert state.positions.dtype == jnp.float32
    assert state.momenta.dtype == jnp.float32
    grid = jc.lagrangian_grid(domain)
    np.testing.assert_array_equal(grid[2, 3, 1], [2.0, 3.0, 1.0])

    @jax.jit
    def run(delta, cosmo):
        inner = jc.lpt(cosmo, delta, domain, 0.1)
        # a concrete `a` stays concrete under jit, so nbody can start from it
        assert not isinstance(inner.a, jax.core.Tracer)
        return inner

    jitted = run(delta, cosmo)
    np.testing.assert_allclose(jitted.positions, state.positions, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jitted.momenta, state.momenta, rtol=1e-5, atol=1e-5)


@pytest.mark.x64
def test_lpt_gradients_wrt_the_linear_field():
    domain = jc.Domain(8, 40.0)
    cosmo = Cosmology()
    delta = 0.5 * jax.random.normal(jax.random.key(5), domain.mesh_shape)
    weights = jax.random.normal(jax.random.key(6), (*domain.mesh_shape, 3))

    @jax.jit
    def f(delta):
        state = jc.lpt(cosmo, delta, domain, 0.5, order=2)
        return jnp.sum(weights * state.positions) + jnp.sum(weights * state.momenta**2)

    check_grads(f, (delta,), order=1, modes=("fwd", "rev"))


@pytest.mark.x64
@pytest.mark.slow
def test_lpt_gradients_wrt_cosmology():
    domain = jc.Domain(8, 40.0)
    delta = 0.5 * jax.random.normal(jax.random.key(7), domain.mesh_shape)
    weights = jax.random.normal(jax.random.key(8), (*domain.mesh_shape, 3))

    @jax.jit
    def f(omega_c, w0):
        cosmo = Cosmology(Omega_c=omega_c, w0=w0)
        state = jc.lpt(cosmo, delta, domain, 0.5, order=2)
        return jnp.sum(weights * state.positions) + jnp.sum(weights * state.momenta)

    check_grads(f, (0.26, -0.9), order=1, modes=("fwd", "rev"), eps=1e-5)


def test_eager_errors():
    domain = jc.Domain(8, 40.0)
    cosmo = Cosmology()
    delta = jnp.zeros((8, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        jc.lpt(cosmo, jnp.zeros((8, 8, 4)), domain, 0.5)
    with pytest.raises(ValueError, match="order"):
        jc.lpt(cosmo, delta, domain, 0.5, order=3)
    with pytest.raises(ValueError, match="order"):
        jc.lpt_displacements(delta, domain, order=True)
    for a in (0.0, -0.1, 2.0, float("nan")):
        with pytest.raises(ValueError, match="a must lie in"):
            jc.lpt(cosmo, delta, domain, a)
    with pytest.raises(ValueError, match="scalar"):
        jc.lpt(cosmo, delta, domain, jnp.array([0.1, 0.2]))
    with pytest.raises(TypeError, match="Domain"):
        jc.lpt(cosmo, delta, (8, 8, 8), 0.5)
