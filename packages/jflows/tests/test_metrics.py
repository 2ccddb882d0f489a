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
