"""Map statistics: power-spectrum normalisation, cross spectra, mask correction, starlet, peaks, PDF."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlens

GEO = jlens.FlatSky(64, field_deg=4.0)
EDGES = np.geomspace(2 * GEO.ell_fundamental, GEO.ell_nyquist, 7)


def test_white_noise_power_and_cross_spectra():
    sigma = 0.3
    keys = jax.random.split(jax.random.key(0), 200)
    noise = jax.vmap(lambda k: sigma * jax.random.normal(k, (2, 64, 64)))(keys)
    ell, cl = jax.vmap(lambda m: jlens.map_power_spectrum(m, GEO, EDGES))(noise)
    assert cl.shape == (200, 2, 2, 6)
    expected = sigma**2 * GEO.pixel_rad**2  # white noise: C = sigma^2 * pixel area
    mean = np.asarray(cl.mean(0))
    np.testing.assert_allclose(mean[0, 0], expected, rtol=0.05)
    np.testing.assert_allclose(mean[1, 1], expected, rtol=0.05)
    assert np.all(np.abs(mean[0, 1]) < 0.05 * expected)  # independent maps
    np.testing.assert_allclose(cl[:, 0, 1], cl[:, 1, 0], rtol=1e-6)
    assert np.all(np.diff(ell[0]) > 0)
    _, single = jlens.map_power_spectrum(noise[0, 0], GEO, EDGES)
    np.testing.assert_allclose(single, cl[0, 0, 0], rtol=1e-5)
    _, cross = jlens.map_power_spectrum(noise[0, 0], GEO, EDGES, other=noise[0, 1])
    np.testing.assert_allclose(cross, cl[0, 0, 1], rtol=1e-4, atol=1e-12)


def test_plane_wave_normalisation():
    """kappa = A cos(l x): total power sum_bins C * N_modes * ell_f^2 / (2 pi)^2 ... = A^2 / 2."""
    x = np.arange(64)
    amplitude = 0.01
    m = 5
    kappa = amplitude * np.tile(np.cos(2 * np.pi * m * x / 64), (64, 1))
    ell_m = m * GEO.ell_fundamental
    edges = np.array([ell_m * 0.9, ell_m * 1.1])
    _, cl = jlens.map_power_spectrum(kappa, GEO, edges)
    counts = jlens.mode_counts(GEO, edges)
    # variance = sum over modes of C / field^2
    variance = float(cl[0]) * counts[0] / GEO.field_rad**2
    assert variance == pytest.approx(amplitude**2 / 2, rel=1e-4)


def test_mask_fsky_correction_on_white_noise():
    mask = np.ones((64, 64))
    mask[:, :16] = 0.0
    noise = jax.random.normal(jax.random.key(1), (50, 64, 64))
    masked = jax.vmap(lambda m: jlens.map_power_spectrum(m, GEO, EDGES, mask=mask)[1])(noise)
    np.testing.assert_allclose(masked.mean(0), GEO.pixel_rad**2, rtol=0.05)
    with pytest.raises(ValueError, match="without any mode"):
        jlens.map_power_spectrum(noise, GEO, [10.0, 20.0, 500.0])


def test_binned_theory_matches_binned_grid():
    ell = np.geomspace(10, 1e4, 400)
    cl = 1e-9 * (ell / 100) ** -1.0
    binned = np.asarray(jlens.binned_theory_cl(GEO, EDGES, ell, cl))
    grid = GEO.ell_grid_numpy()
    index = np.searchsorted(EDGES, grid, side="right") - 1
    w = GEO.rfft_weights()
    direct = [
        np.sum((w * 1e-9 * (np.where(grid > 0, grid, 1) / 100) ** -1.0)[index == b])
        / np.sum(w[index == b])
        for b in range(EDGES.size - 1)
    ]
    np.testing.assert_allclose(binned, direct, rtol=1e-3)


def test_starlet_sums_back_and_kills_constants():
    image = jax.random.normal(jax.random.key(2), (3, 64, 64))
    planes = jlens.starlet_transform(image, 4)
    assert planes.shape == (3, 5, 64, 64)
    np.testing.assert_allclose(planes.sum(axis=-3), image, atol=1e-5)
    const = jlens.starlet_transform(jnp.full((32, 32), 2.5), 3)
    np.testing.assert_allclose(const[:-1], 0.0, atol=1e-6)
    np.testing.assert_allclose(const[-1], 2.5, rtol=1e-6)
    # wavelet planes of white noise have zero mean and decreasing variance with scale
    stds = np.asarray(planes[0, :-1].std(axis=(-2, -1)))
    assert np.all(np.diff(stds) < 0)
    with pytest.raises(ValueError, match="n_scales"):
        jlens.starlet_transform(image, 0)


def test_peak_counts_on_a_known_image():
    y, x = np.mgrid[:64, :64]
    image = np.zeros((64, 64))
    for cy, cx, height in [(10, 10, 1.0), (40, 20, 2.5), (30, 50, 4.2), (55, 55, 2.7)]:
        image += height * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 2.0**2))
    peaks = np.asarray(jlens.find_peaks(image))
    assert peaks.sum() == 4
    counts = jlens.peak_counts(image, [0.5, 2.0, 3.0, 5.0])
    np.testing.assert_array_equal(counts, [1, 2, 1])
    mask = np.ones((64, 64))
    mask[25:35, 45:55] = 0
    np.testing.assert_array_equal(
        jlens.peak_counts(image, [0.5, 2.0, 3.0, 5.0], mask=mask), [1, 2, 0]
    )
    batched = jax.jit(jax.vmap(lambda im: jlens.peak_counts(im, [0.5, 2.0, 3.0, 5.0])))(
        jnp.stack([image, -image])
    )
    np.testing.assert_array_equal(batched, [[1, 2, 1], [0, 0, 0]])
    starlet = jlens.starlet_peak_counts(image, 3, np.linspace(-1, 5, 7))
    assert starlet.shape == (3, 6)
    assert float(starlet.sum()) > 0
    # a peak on the border: found on a periodic map, not otherwise
    edge = np.zeros((16, 16))
    edge[0, 5] = 1.0
    assert int(jlens.find_peaks(edge).sum()) == 1
    assert int(jlens.find_peaks(edge, periodic=False).sum()) == 0


def test_one_point_pdf_matches_numpy():
    values = np.asarray(jax.random.normal(jax.random.key(3), (64, 64)))
    edges = np.linspace(-3, 3, 13)
    pdf = np.asarray(jlens.one_point_pdf(values, edges))
    reference, _ = np.histogram(values, edges)
    np.testing.assert_allclose(pdf, reference / values.size / np.diff(edges), rtol=1e-5)
    counts = jlens.one_point_pdf(values, edges, density=False)
    np.testing.assert_allclose(counts, reference)
    with pytest.raises(ValueError, match="increasing"):
        jlens.one_point_pdf(values, [1.0, 0.0])


def test_plot_map_extent_in_degrees():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = jlens.plot_map(np.zeros((64, 64)), GEO, title="kappa")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_extent(), [0.0, 4.0, 0.0, 4.0])
    assert ax.get_xlabel() == "x [deg]"
    plt.close(fig)
    with pytest.raises(ValueError, match="one map"):
        jlens.plot_map(np.zeros((2, 64, 64)), GEO)
