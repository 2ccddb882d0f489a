"""C2ST against the Bayes-optimal accuracy of two Gaussians."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflows import c2st

N = 1000  # per sample: the accuracy's standard error is about 0.5 / sqrt(2N) = 0.011


def _gaussians(seed, shift):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(N, 2))
    q = rng.normal(size=(N, 2)) + np.array([[shift, 0.0]])
    return jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32)


def test_c2st_matches_the_bayes_accuracy_and_is_monotone():
    # Two unit Gaussians a distance delta apart: the best classifier has accuracy Phi(delta / 2)
    # (0.5 for delta = 0). A cross-validated classifier can only do worse than Bayes (up to noise).
    shifts = [0.0, 0.5, 1.0, 2.0, 4.0]
    acc = []
    for seed, shift in enumerate(shifts):
        p, q = _gaussians(seed, shift)
        acc.append(float(c2st(p, q, key=jax.random.key(seed))))
    bayes = np.array([0.5 * (1 + math.erf(s / 2 / math.sqrt(2))) for s in shifts])
    assert abs(acc[0] - 0.5) < 0.04  # ~3.5 standard errors
    assert np.all(np.diff(acc) > 0), acc
    assert np.all(np.asarray(acc) < bayes + 0.04), (acc, bayes)
    assert np.all(np.asarray(acc) > bayes - 0.05), (acc, bayes)
    assert acc[-1] > 0.95


def test_c2st_input_checks():
    p, q = _gaussians(0, 0.0)
    with pytest.raises(ValueError, match="shapes"):
        c2st(p, q[:, :1], key=jax.random.key(0))
    with pytest.raises(ValueError, match="folds"):
        c2st(p, q, key=jax.random.key(0), folds=1)


def _moons(rng, n, r_std):
    """Independent numpy sampler of the two-moons posterior at x_o = 0 with ring width `r_std`
    (inverting the simulator), and its normalised density `N(r; 0.1, r_std^2) / (2 pi r)`."""
    alpha = rng.uniform(-np.pi / 2, np.pi / 2, n)
    r = 0.1 + r_std * rng.normal(size=n)
    s = np.where(rng.random(n) < 0.5, 1.0, -1.0) * np.sqrt(2) * (r * np.cos(alpha) + 0.25)
    d = -np.sqrt(2) * r * np.sin(alpha)
    theta = np.stack([(s - d) / 2, (s + d) / 2], axis=-1)

    def log_density(theta, r_std):
        t1, t2 = theta[:, 0], theta[:, 1]
        d1 = -(0.25 - np.abs(t1 + t2) / np.sqrt(2))
        d2 = -(t2 - t1) / np.sqrt(2)
        rr = np.hypot(d1, d2)
        log_n = -0.5 * ((rr - 0.1) / r_std) ** 2 - np.log(r_std * np.sqrt(2 * np.pi))
        return np.where(d1 > 0, log_n - np.log(2 * np.pi * rr), -np.inf)

    return theta, log_density


def test_c2st_on_thin_moons_reaches_the_bayes_accuracy():
    # The benchmark's target has 0.01-thin crescents: the classifier must resolve them. The exact
    # posterior (ring width 0.01) against one with width 0.015: the Bayes accuracy 1/2 + TV/2, with
    # TV = E_p[max(0, 1 - q/p)] from the explicit densities (Monte Carlo, 2e5 draws). A classifier of
    # the radial distance alone reaches it (0.595 measured); on raw coordinates it has to learn the
    # crescents from 4000 + 4000 points (0.571 measured with the defaults; the tanh full-batch
    # classifier of the first version, 300 steps, gave 0.502: blind to the moons' width).
    n = 4000
    rng = np.random.default_rng(0)
    p, log_density = _moons(rng, n, 0.01)
    q, _ = _moons(rng, n, 0.015)
    big, _ = _moons(rng, 200_000, 0.01)
    tv = np.mean(np.maximum(0.0, 1.0 - np.exp(log_density(big, 0.015) - log_density(big, 0.01))))
    bayes = 0.5 + 0.5 * tv  # about 0.62
    acc = float(
        c2st(jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32), key=jax.random.key(0))
    )
    same = float(
        c2st(
            jnp.asarray(p, jnp.float32),
            jnp.asarray(_moons(rng, n, 0.01)[0], jnp.float32),
            key=jax.random.key(1),
        )
    )
    assert abs(same - 0.5) < 0.025, same  # 3 standard errors at 8000 points
    assert bayes - 0.05 < acc < bayes + 0.02, (acc, bayes)
