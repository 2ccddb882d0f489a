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


def _full_wavevectors(domain):
    """`(kx, ky, kz)` on the full complex FFT grid (numpy's `fftn` layout), h/Mpc."""
    ks = [
        2 * np.pi * np.fft.fftfreq(n, d=c)
        for n, c in zip(domain.mesh_shape, domain.cell_size, strict=True)
    ]
    return np.meshgrid(*ks, indexing="ij")


def _gaussian_second_order_moments(domain, power):
    """Exact one-point moments of `delta1 = tr(Phi)` and `delta2 = sum_{i<j} Phi_ii Phi_jj -
    Phi_ij^2` (`Phi_ij = d_i d_j laplacian^-1 delta1`) for the Gaussian mesh field of `linear_field`
    (`E|delta_k|^2 = P(k) n_cells^2 / V`), by Isserlis' (Wick's) theorem from the covariances
    `<Phi_ij Phi_kl> = sum_k P(k) k_i k_j k_k k_l / (k^4 V)` over the full complex grid."""
    k = _full_wavevectors(domain)
    k2 = k[0] ** 2 + k[1] ** 2 + k[2] ** 2
    p = np.where(k2 > 0, power(np.sqrt(np.where(k2 > 0, k2, 1.0))), 0.0) / domain.volume
    w = {(i, j): k[i] * k[j] / np.where(k2 > 0, k2, 1.0) for i in range(3) for j in range(3)}
    cov = {(a, b): float(np.sum(p * w[a] * w[b])) for a in w for b in w}

    def e4(a, b, c, d):
        return cov[a, b] * cov[c, d] + cov[a, c] * cov[b, d] + cov[a, d] * cov[b, c]

    pairs = [(i, j) for i in range(3) for j in range(i + 1, 3)]
    terms = [(1.0, (i, i), (j, j)) for i, j in pairs] + [(-1.0, (i, j), (i, j)) for i, j in pairs]
    trace = [(i, i) for i in range(3)]
    var1 = sum(cov[a, b] for a in trace for b in trace)
    mean2 = sum(s * cov[a, b] for s, a, b in terms)
    var2 = sum(s * t * e4(a, b, c, d) for s, a, b in terms for t, c, d in terms) - mean2**2
    m112 = sum(s * e4(a, b, c, d) for a in trace for b in trace for s, c, d in terms)
    return var1, var2, m112


@pytest.mark.x64
def test_second_order_field_statistics_match_gaussian_expectations():
    # 2LPT's source delta2 (= div psi2) is quadratic in the Gaussian field, so its one-point
    # moments follow from the linear power spectrum alone: var(delta2) and <delta1^2 delta2>, the
    # term behind the tree-level skewness of the 2LPT density (2/3 sigma^4 for an isotropic field,
    # which with D2 = -3/7 D1^2 gives S3 = 34/7). Power cut at half the Nyquist frequency so the
    # spectral symbols are exact; three realisations of 64^3.
    domain = jc.Domain(64, 500.0)
    k_cut = 0.5 * min(domain.nyquist_frequency)

    def power(k):
        return np.where(k < k_cut, 50.0 * (k / 0.1) ** -1.5, 0.0)

    var1, var2, m112 = _gaussian_second_order_moments(domain, power)
    # the Wick sums on the cubic mesh reproduce the isotropic value within 0.5%
    np.testing.assert_allclose(m112 / var1**2, 2 / 3, rtol=5e-3)
    grids = _full_wavevectors(domain)
    ratios = []
    for seed in range(3):
        key = jax.random.key(seed)
        delta = jc.linear_field(key, domain, lambda k: jnp.where(k < k_cut, power(k), 0.0))
        _, psi2 = jc.lpt_displacements(delta, domain, order=2)
        psi2 = np.asarray(psi2) * np.asarray(domain.cell_size)  # cells -> Mpc/h
        delta2 = sum(
            np.real(np.fft.ifftn(1j * g * np.fft.fftn(psi2[..., i]))) for i, g in enumerate(grids)
        )
        d1 = np.asarray(delta)
        ratios.append([d1.var() / var1, delta2.var() / var2, np.mean(d1**2 * delta2) / m112])
    ratios = np.mean(ratios, axis=0)  # per-realisation scatter 1-2%
    np.testing.assert_allclose(ratios, 1.0, rtol=0.03)
