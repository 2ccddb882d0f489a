import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jpm_core import (
    Domain,
    cross_correlation,
    default_k_edges,
    power_spectrum,
    white_noise,
)

DOMAIN = Domain((16, 16, 16), (100.0, 100.0, 100.0))


def _coords(domain):
    return np.meshgrid(
        *[np.arange(n) * c for n, c in zip(domain.mesh_shape, domain.cell_size, strict=True)],
        indexing="ij",
    )


def _full_grid_kmag(domain):
    freqs = [
        2 * np.pi * np.fft.fftfreq(n, d=c)
        for n, c in zip(domain.mesh_shape, domain.cell_size, strict=True)
    ]
    kx, ky, kz = np.meshgrid(*freqs, indexing="ij")
    return np.sqrt(kx**2 + ky**2 + kz**2)


@pytest.mark.x64
@pytest.mark.parametrize("shape", [(16, 16, 16), (12, 10, 9)])
def test_mode_counts_and_k_centres_against_the_full_complex_grid(shape):
    domain = Domain(shape, (100.0, 120.0, 90.0))
    field = np.random.default_rng(0).normal(size=shape)
    spec = power_spectrum(field, domain)
    edges = default_k_edges(domain)
    kmag = _full_grid_kmag(domain).ravel()
    counts, k_means = [], []
    for lo, hi in itertools.pairwise(edges):
        sel = (kmag >= lo) & (kmag < hi) & (kmag > 0)
        counts.append(sel.sum())
        k_means.append(kmag[sel].mean() if sel.any() else np.nan)
    np.testing.assert_array_equal(np.asarray(spec.n_modes), counts)
    np.testing.assert_allclose(np.asarray(spec.k), k_means, rtol=1e-12)
    # one bin holding everything: every mode but k=0
    everything = power_spectrum(field, domain, k_edges=[1e-6, 10.0])
    assert everything.n_modes[0] == domain.n_cells - 1


@pytest.mark.x64
@pytest.mark.parametrize("m", [(2, 1, 3), (3, -2, 0)])  # k_z > 0 (stored once), k_z = 0 (twice)
def test_plane_wave_power_is_analytic(m):
    # delta = A cos(k0.x): two modes +-k0 with |delta_k| = A N / 2, so the bin holding k0 has
    # P = 2 * V / N^2 * (A N / 2)^2 / n_modes = V A^2 / (2 n_modes); other bins are 0
    amp = 0.7
    k0 = np.array([2 * np.pi * mi / L for mi, L in zip(m, DOMAIN.box_size, strict=True)])
    x = _coords(DOMAIN)
    field = amp * np.cos(sum(k * xi for k, xi in zip(k0, x, strict=True)))
    spec = power_spectrum(field, DOMAIN)
    edges = default_k_edges(DOMAIN)
    b = np.searchsorted(edges, np.linalg.norm(k0), side="right") - 1
    expected = np.zeros(len(edges) - 1)
    expected[b] = DOMAIN.volume * amp**2 / (2 * float(spec.n_modes[b]))
    np.testing.assert_allclose(np.asarray(spec.power), expected, atol=1e-10 * expected[b])
    # deconvolution divides by the squared window at k0
    w = np.prod(
        [np.sinc(k * c / (2 * np.pi)) ** 2 for k, c in zip(k0, DOMAIN.cell_size, strict=True)]
    )
    dec = power_spectrum(field, DOMAIN, deconvolve="cic")
    assert dec.power[b] == pytest.approx(expected[b] / w**2, rel=1e-10)


def test_white_noise_is_flat_at_the_shot_noise_level():
    domain = Domain((32, 24, 17), (200.0, 150.0, 100.0))  # odd n_z: no Nyquist plane
    noise = np.random.default_rng(5).normal(size=(4, *domain.mesh_shape)).astype(np.float32)
    spec = jax.jit(jax.vmap(lambda f: power_spectrum(f, domain)))(noise)
    level = domain.volume / domain.n_cells
    measured = np.asarray(spec.power).mean(axis=0)
    n_modes = 4 * np.asarray(spec.n_modes[0])
    pulls = (measured - level) / (level * np.sqrt(2 / n_modes))
    assert np.all(np.abs(pulls) < 5), pulls
    # shot-noise subtraction leaves zero on average
    sub = power_spectrum(noise[0], domain, shot_noise=level)
    total = float(np.sum(np.asarray(sub.power) * np.asarray(sub.n_modes)) / np.sum(sub.n_modes))
    assert abs(total) < 5 * level * np.sqrt(2 / float(np.sum(sub.n_modes)))


@pytest.mark.x64
def test_cross_spectrum_and_correlation():
    rng = np.random.default_rng(1)
    a = rng.normal(size=DOMAIN.mesh_shape)
    b = rng.normal(size=DOMAIN.mesh_shape)
    auto = power_spectrum(a, DOMAIN)
    np.testing.assert_allclose(power_spectrum(a, DOMAIN, a).power, auto.power, rtol=1e-12)
    np.testing.assert_allclose(power_spectrum(a, DOMAIN, -2 * a).power, -2 * auto.power, rtol=1e-12)
    np.testing.assert_allclose(cross_correlation(a, 3 * a, DOMAIN).power, 1.0, rtol=1e-12)
    np.testing.assert_allclose(cross_correlation(a, -a, DOMAIN).power, -1.0, rtol=1e-12)
    r = cross_correlation(a, b, DOMAIN)
    # independent fields: r ~ N(0, 1/(n_modes/2)) per bin
    assert np.all(np.abs(np.asarray(r.power)) < 5 / np.sqrt(np.asarray(r.n_modes) / 2))
    # a + b: r = 1/sqrt(2) in expectation
    r2 = cross_correlation(a, a + b, DOMAIN)
    assert np.all(np.abs(np.asarray(r2.power) - 2**-0.5) < 5 / np.sqrt(np.asarray(r2.n_modes)))


def test_jit_grad_and_empty_bins():
    domain = Domain(8, 64.0)
    f = white_noise(jax.random.key(0), domain)
    edges = jnp.array([0.05, 0.1, 0.11, 0.3])  # the middle bin is empty (k_f ~ 0.098)

    @jax.jit
    def loss(scale, edges):
        return power_spectrum(scale * f, domain, k_edges=edges)

    spec = loss(2.0, edges)
    assert bool(jnp.isnan(spec.power[1]))
    assert spec.n_modes[1] == 0
    g = jax.grad(lambda s: jnp.nansum(loss(s, edges).power))(2.0)
    # P scales as s^2: d/ds sum P = 2 sum P / s
    np.testing.assert_allclose(g, 2 * np.nansum(np.asarray(spec.power)) / 2.0, rtol=1e-4)


def test_errors():
    f = jnp.zeros(DOMAIN.mesh_shape)
    with pytest.raises(ValueError, match="'ngp'"):
        power_spectrum(f, DOMAIN, deconvolve="ngp")
    with pytest.raises(ValueError, match="k_edges"):
        power_spectrum(f, DOMAIN, k_edges=[0.3, 0.1])
    with pytest.raises(ValueError, match="n_bins"):
        power_spectrum(f, DOMAIN, n_bins=0)
    with pytest.raises(ValueError, match="shot_noise"):
        power_spectrum(f, DOMAIN, f, shot_noise=1.0)
    with pytest.raises(ValueError, match=r"\(8, 8, 8\)"):
        power_spectrum(jnp.zeros((8, 8, 8)), DOMAIN)
