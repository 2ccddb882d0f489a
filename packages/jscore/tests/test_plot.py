"""The radially averaged power spectrum (against analytic spectra) and the posterior figure."""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jscore


def test_radial_power_spectrum_of_white_noise_and_of_a_plane_wave():
    rng = np.random.default_rng(0)
    # White noise of variance v has power v on every mode (unitary FFT).
    p = np.mean(
        [jscore.radial_power_spectrum(rng.normal(0, 2.0, (64, 64)))[1] for _ in range(20)], 0
    )
    np.testing.assert_allclose(p, 4.0, rtol=0.1)
    # A plane wave a cos(k0 x) on n x n pixels puts |x_hat|^2 = (a n / 2)^2 on the two modes +-k0:
    # in the ring of k0 the weighted mean is 2 (a n / 2)^2 / (number of modes in that ring).
    n, m, a = 32, 5, 1.5
    x = a * np.cos(2 * np.pi * m * np.arange(n) / n)[None, :] * np.ones((n, 1))
    k, p = jscore.radial_power_spectrum(x, spacing=0.5, num_bins=n // 2)
    k_full = (
        2
        * np.pi
        * np.sqrt(np.fft.fftfreq(n, 0.5)[:, None] ** 2 + np.fft.fftfreq(n, 0.5)[None, :] ** 2)
    )
    edges = np.linspace(0.5 * 2 * np.pi / (n * 0.5), k_full.max() * (1 + 1e-9), n // 2 + 1)
    k0 = 2 * np.pi * m / (n * 0.5)
    ring = np.digitize(k_full, edges) - 1
    in_ring = ring == np.digitize(k0, edges) - 1
    expected = 2 * (a * n / 2) ** 2 / in_ring.sum()
    i = np.argmin(np.abs(k - k_full[in_ring].mean()))
    np.testing.assert_allclose(p[i], expected, rtol=1e-10)
    assert np.all(np.delete(p, i) < 1e-20)


def test_radial_power_spectrum_of_a_prior_power_map_matches_its_samples():
    shape = (48, 48)
    power = 1.0 / (1.0 + (jscore.fourier_wavenumber(shape) / 0.5) ** 2)
    prior = jscore.GaussianFieldPrior(power, shape)
    xs = np.asarray(jax.vmap(prior.sample)(jax.random.split(jax.random.key(0), 64)))
    measured = np.mean([jscore.radial_power_spectrum(x)[1] for x in xs], axis=0)
    k, binned = jscore.radial_power_spectrum(xs[0], power_map=power)
    np.testing.assert_allclose(measured, binned, rtol=0.15)
    # An independent evaluation of the spectrum at the ring centres (it is smooth in k).
    np.testing.assert_allclose(binned, 1.0 / (1.0 + (k / 0.5) ** 2), rtol=0.05)
    with pytest.raises(ValueError, match="power_map must have shape"):
        jscore.radial_power_spectrum(xs[0], power_map=np.ones((48, 48)))
    with pytest.raises(ValueError, match="spacing"):
        jscore.radial_power_spectrum(xs[0], spacing=0.0)


def test_plot_posterior_returns_a_figure():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    shape = (16, 16)
    power = 1.0 / (1.0 + (jscore.fourier_wavenumber(shape) / 0.5) ** 2)
    prior = jscore.GaussianFieldPrior(power, shape)
    samples = jax.vmap(prior.sample)(jax.random.split(jax.random.key(0), 5))
    truth = prior.sample(jax.random.key(1))
    mask = np.ones(shape)
    mask[4:8, 4:8] = 0
    fig = jscore.plot_posterior(
        samples, prior_power=power, truth=truth, mask=mask, num_samples=2, title="test"
    )
    assert isinstance(fig, Figure)
    # truth, mean, std, 2 samples + the spectrum panel; each map has a colour bar.
    assert len(fig.axes) == 5 * 2 + 1
    spectrum_axis = fig.axes[-1]
    labels = [line.get_label() for line in spectrum_axis.get_lines()]
    assert {"samples", "posterior mean", "truth", "prior"} <= set(labels)
    np.testing.assert_allclose(
        np.asarray(fig.axes[2].get_images()[0].get_array()),
        np.asarray(samples, np.float64).mean(0),
        atol=1e-6,
    )  # the posterior-mean panel shows the sample mean
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="samples must have shape"):
        jscore.plot_posterior(jnp.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="truth must have shape"):
        jscore.plot_posterior(samples, truth=jnp.zeros((8, 8)))
