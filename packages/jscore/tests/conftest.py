"""Fixtures of the jscore tests: dense NumPy (float64) references, written independently of jscore's code."""

from __future__ import annotations

import types

import numpy as np
import pytest


def power_law(k):
    """The test spectrum: unit variance on large scales, falling as k^-2 beyond k = 0.5."""
    return 1.0 / (1.0 + (np.asarray(k) / 0.5) ** 2)


def full_wavenumber(shape, spacing=1.0):
    """|k| on the full FFT grid."""
    freqs = np.meshgrid(*[np.fft.fftfreq(n, d=spacing) for n in shape], indexing="ij")
    return 2.0 * np.pi * np.sqrt(sum(f**2 for f in freqs))


def dense_circulant(full_power, shape):
    """The dense covariance `F^H diag(P) F` (unitary F) of a stationary field on a periodic grid."""
    kernel = np.fft.ifftn(full_power).real  # c(r) = (1/n) sum_k P_k exp(i k r)
    coords = np.stack(np.unravel_index(np.arange(int(np.prod(shape))), shape), axis=-1)
    diff = (coords[:, None, :] - coords[None, :, :]) % np.asarray(shape)
    return kernel[tuple(diff[..., a] for a in range(len(shape)))]


def dense_gaussian_posterior(prior_cov, forward, noise_var, y):
    """Mean and covariance of x | y for x ~ N(0, C), y = F x + n, n ~ N(0, diag(noise_var)),
    with zero precision where the variance is infinite."""
    w = np.where(np.isinf(noise_var), 0.0, 1.0 / noise_var)
    precision = np.linalg.inv(prior_cov) + forward.T @ (w[:, None] * forward)
    cov = np.linalg.inv(precision)
    return cov @ (forward.T @ (w * y)), cov


@pytest.fixture
def ref():
    """The dense references above, as a namespace (tests run with --import-mode=importlib, so helper
    modules cannot be imported by name)."""
    return types.SimpleNamespace(
        power_law=power_law,
        full_wavenumber=full_wavenumber,
        dense_circulant=dense_circulant,
        dense_gaussian_posterior=dense_gaussian_posterior,
    )
