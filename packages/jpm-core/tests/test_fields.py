import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jpm_core import (
    Domain,
    default_k_edges,
    linear_field,
    linear_field_from_noise,
    power_spectrum,
    white_noise,
)


def _power_law(k):
    return 2.0e3 * (k / 0.1) ** -1.5 * jnp.exp(-((k / 0.8) ** 2))


def _reference_binned_power(domain, edges, power_np):
    """Mean of P(|k|) over the modes of the full complex grid in each shell (numpy only)."""
    freqs = [
        2 * np.pi * np.fft.fftfreq(n, d=c)
        for n, c in zip(domain.mesh_shape, domain.cell_size, strict=True)
    ]
    kx, ky, kz = np.meshgrid(*freqs, indexing="ij")
    kmag = np.sqrt(kx**2 + ky**2 + kz**2).ravel()
    out = []
    for lo, hi in itertools.pairwise(edges):
        sel = (kmag >= lo) & (kmag < hi) & (kmag > 0)
        out.append(power_np(kmag[sel]).mean())
    return np.array(out)


def test_white_noise_statistics_and_reproducibility():
    domain = Domain((16, 16, 32), 100.0)
    key = jax.random.key(0)
    w = white_noise(key, domain)
    assert w.shape == (16, 16, 32)
    assert w.dtype == jnp.float32
    n = w.size
    assert abs(float(w.mean())) < 5 / np.sqrt(n)
    assert abs(float(w.var()) - 1) < 5 * np.sqrt(2 / n)
    np.testing.assert_array_equal(w, white_noise(key, domain))
    assert not np.allclose(w, white_noise(jax.random.key(1), domain))


@pytest.mark.parametrize(
    "grid",
    [
        (2, 4),
        pytest.param((8, 1), marks=pytest.mark.slow),
        pytest.param((4, 2), marks=pytest.mark.slow),
        pytest.param((1, 8), marks=pytest.mark.slow),
    ],
)
def test_white_noise_is_the_same_on_any_device_layout(grid, n_devices):
    if n_devices < 8:
        pytest.skip("needs 8 (fake) devices")
    key = jax.random.key(11)
    single = white_noise(key, Domain((16, 8, 8), 10.0))
    dist_domain = Domain((16, 8, 8), 10.0, device_grid=grid)
    sharded = white_noise(key, dist_domain)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(sharded), np.asarray(single))
    jitted = jax.jit(white_noise, static_argnums=1)(key, dist_domain)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(single))


@pytest.mark.parametrize(
    "grid",
    [
        (2, 4),
        pytest.param((1, 8), marks=pytest.mark.slow),
        pytest.param((8, 1), marks=pytest.mark.slow),
    ],
)
def test_distributed_linear_field_and_power_match_one_device(grid, n_devices):
    if n_devices < 8:
        pytest.skip("needs 8 (fake) devices")
    single = Domain((16, 8, 24), (160.0, 80.0, 240.0))
    dist = Domain((16, 8, 24), (160.0, 80.0, 240.0), device_grid=grid)
    key = jax.random.key(4)

    def run(domain):
        delta = linear_field(key, domain, _power_law)
        return delta, power_spectrum(delta, domain)

    d1, p1 = jax.jit(lambda: run(single))()
    d8, p8 = jax.jit(lambda: run(dist))()
    assert len(d8.sharding.device_set) == 8
    scale = float(jnp.abs(d1).max())
    np.testing.assert_allclose(np.asarray(d8), np.asarray(d1), atol=2e-6 * scale)
    np.testing.assert_array_equal(np.asarray(p8.n_modes), np.asarray(p1.n_modes))
    np.testing.assert_allclose(np.asarray(p8.k), np.asarray(p1.k), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(p8.power), np.asarray(p1.power), rtol=1e-5)


def test_white_noise_needs_enough_devices(n_devices):
    if n_devices >= 16:
        pytest.skip("enough devices for a 4 x 4 grid")
    with pytest.raises(ValueError, match=r"needs 16 devices"):
        white_noise(jax.random.key(0), Domain(16, 10.0, device_grid=(4, 4)))


def test_linear_field_is_real_zero_mean_and_reproducible():
    domain = Domain(16, 200.0)
    key = jax.random.key(3)

    @jax.jit
    def make(key):
        noise = white_noise(key, domain)
        return linear_field(key, domain, _power_law), linear_field_from_noise(
            noise, domain, _power_law
        )

    delta, ref = make(key)
    assert delta.shape == domain.mesh_shape
    assert delta.dtype == jnp.float32
    assert abs(float(delta.mean())) < 1e-5 * float(delta.std())
    np.testing.assert_array_equal(delta, make(key)[0])
    # the noise is drawn from the key alone: the field equals the coloured white noise
    np.testing.assert_allclose(ref, delta, rtol=1e-5, atol=1e-5 * float(delta.std()))


def test_measured_power_matches_input_within_error_bars():
    # independent references: the input P(k) averaged over each shell's modes (numpy), and the
    # Gaussian sampling error P * sqrt(2 / n_modes) of the estimator
    domain = Domain(32, (300.0, 300.0, 300.0))
    n_real = 8
    keys = jax.random.split(jax.random.key(42), n_real)
    spectra = jax.jit(
        jax.vmap(lambda k: power_spectrum(linear_field(k, domain, _power_law), domain))
    )(keys)
    measured = np.asarray(spectra.power).mean(axis=0)
    n_modes = np.asarray(spectra.n_modes[0]) * n_real
    edges = default_k_edges(domain)
    expected = _reference_binned_power(
        domain, edges, lambda k: 2.0e3 * (k / 0.1) ** -1.5 * np.exp(-((k / 0.8) ** 2))
    )
    sigma = expected * np.sqrt(2 / n_modes)
    pulls = (measured - expected) / sigma
    assert np.all(np.abs(pulls) < 5), pulls
    n_bins = len(pulls)
    chi2 = np.sum(pulls**2)
    assert chi2 < n_bins + 5 * np.sqrt(2 * n_bins), chi2


@pytest.mark.x64
def test_linear_field_from_noise_scales_and_differentiates():
    domain = Domain(8, 50.0)
    noise = white_noise(jax.random.key(7), domain)

    @jax.jit
    def energy(amp):
        return jnp.sum(linear_field_from_noise(noise, domain, lambda k: amp * _power_law(k)) ** 2)

    e1 = float(energy(1.0))
    # the field scales as sqrt(amp): energy is linear in amp, derivative energy(1)
    assert float(energy(4.0)) == pytest.approx(4 * e1, rel=1e-12)
    assert float(jax.grad(energy)(2.0)) == pytest.approx(e1, rel=1e-10)


@pytest.mark.x64
def test_gradient_is_finite_with_a_sharp_cutoff():
    # P = 0 beyond a cutoff must not produce NaN gradients (sqrt at 0)
    domain = Domain(8, 50.0)
    noise = white_noise(jax.random.key(1), domain)

    def energy(amp):
        def power(k):
            return jnp.where(k < 0.3, amp * _power_law(k), 0.0)

        return jnp.sum(linear_field_from_noise(noise, domain, power) ** 2)

    g = jax.grad(energy)(2.0)
    assert np.isfinite(float(g))
    assert float(g) == pytest.approx(float(energy(2.0)) / 2.0, rel=1e-10)


def test_linear_field_errors():
    domain = Domain(8, 50.0)
    with pytest.raises(ValueError, match=r"\(8, 8, 5\)"):
        linear_field(jax.random.key(0), domain, lambda k: jnp.ones(3))
    with pytest.raises(ValueError, match=r"\(4, 4, 4\)"):
        linear_field_from_noise(jnp.zeros((4, 4, 4)), domain, _power_law)


@pytest.mark.parametrize("bad", [jnp.nan, -1.0])
def test_invalid_power_poisons_the_field_and_its_gradient(bad):
    # issue 11: a NaN (or negative) power at some k used to give a finite field with holes
    domain = Domain(8, 50.0)
    noise = white_noise(jax.random.key(2), domain)

    def energy(amp):
        def power(k):
            return jnp.where(k > 0.4, bad, amp * _power_law(k))

        return jnp.sum(linear_field_from_noise(noise, domain, power) ** 2)

    assert np.isnan(float(energy(1.0)))
    assert np.isnan(float(jax.jit(energy)(1.0)))
    assert np.isnan(float(jax.grad(energy)(1.0)))
