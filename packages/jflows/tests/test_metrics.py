"""C2ST against the exact Bayes-optimal accuracy (two Gaussians, two-moons crescents); input checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflows import C2STResult, c2st

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
        # 4000 steps of 512 rows: the old default's cost (10_000 steps of 200), one network per fold
        res = c2st(jax.random.key(seed), p, q, steps=4000, ensemble=1)
        acc.append(res.accuracy)
    bayes = np.array([0.5 * (1 + math.erf(s / 2 / math.sqrt(2))) for s in shifts])
    assert abs(acc[0] - 0.5) < 0.04  # ~3.5 standard errors
    assert np.all(np.diff(acc) > 0), acc
    assert np.all(np.asarray(acc) < bayes + 0.04), (acc, bayes)
    assert np.all(np.asarray(acc) > bayes - 0.05), (acc, bayes)
    assert acc[-1] > 0.95


def test_c2st_input_checks():
    p, q = _gaussians(0, 0.0)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="shapes"):
        c2st(key, p, q[:, :1])
    with pytest.raises(ValueError, match="folds"):
        c2st(key, p, q, folds=1)
    # NaN / inf samples are refused (the old C2ST read 0.5 on all-NaN samples)
    with pytest.raises(ValueError, match="samples_q has 1 rows with NaN or inf"):
        c2st(key, p, q.at[7, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="samples_p has 1000 rows with NaN"):
        c2st(key, jnp.full_like(p, jnp.nan), q)
    with pytest.raises(ValueError, match="samples_p has 1 rows with NaN or inf"):
        c2st(key, p.at[0, 1].set(jnp.inf), q)
    # unbalanced sets are refused unless balanced by subsampling (the old C2ST read 0.90 for
    # 100 vs 900 samples of one distribution: the constant guess)
    with pytest.raises(ValueError, match="samples_p has 100 rows and samples_q 900"):
        c2st(key, p[:100], q[:900])
    res = c2st(key, p[:100], q[:900], balance=True, steps=1000, ensemble=1)
    assert isinstance(res, C2STResult)
    assert res.n == 200
    assert res.fold_accuracies.shape == (5,)
    assert res.std_error == pytest.approx(math.sqrt(res.accuracy * (1 - res.accuracy) / 200))
    assert abs(res.accuracy - 0.5) < 4 * 0.5 / math.sqrt(200), res


def test_c2st_std_error_matches_the_spread_over_seeds():
    # the stated error is binomial over the held-out predictions; the spread of the accuracy over
    # independent data sets (which also contains the classifier's own variation) is compared with it
    shift, n = 1.0, 500
    accs, errs = [], []
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        p = rng.normal(size=(n, 2))
        q = rng.normal(size=(n, 2)) + np.array([[shift, 0.0]])
        res = c2st(jax.random.key(seed), p, q, steps=1000, ensemble=1)
        accs.append(res.accuracy)
        errs.append(res.std_error)
    bayes = 0.5 * (1 + math.erf(shift / 2 / math.sqrt(2)))
    # 6 seeds: the sample standard deviation is within a factor ~2 of the truth
    assert 0.4 * np.mean(errs) < np.std(accs, ddof=1) < 2.5 * np.mean(errs), (accs, errs)
    assert abs(np.mean(accs) - bayes) < 3 * np.mean(errs) / math.sqrt(6) + 0.01, (accs, bayes)


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


def _moons_bayes():
    """The Bayes accuracy 1/2 + TV/2 of width 0.01 vs 0.015, TV = E_p[max(0, 1 - q/p)] from the
    explicit densities (Monte Carlo, 2e5 draws; 0.597)."""
    rng = np.random.default_rng(12345)
    big, log_density = _moons(rng, 200_000, 0.01)
    tv = np.mean(np.maximum(0.0, 1.0 - np.exp(log_density(big, 0.015) - log_density(big, 0.01))))
    return 0.5 + 0.5 * tv


@pytest.mark.slow  # ~2 min on 2 cores; the Gaussian checks above stay in the default suite
def test_c2st_on_thin_moons_reaches_the_bayes_accuracy():
    # The benchmark's target has 0.01-thin crescents: the classifier must resolve them. The exact
    # posterior (ring width 0.01) against one with width 0.015. A classifier of the radial distance
    # alone reaches the Bayes accuracy (0.595 measured); on raw coordinates it has to learn the
    # crescents from 4000 + 4000 points. Here one network per fold (10 000 steps of 512 rows); the
    # defaults (3 networks per fold) are checked over seeds in the slow test below. The tanh
    # full-batch classifier of the first version, 300 steps, gave 0.502: blind to the moons' width.
    n = 4000
    rng = np.random.default_rng(0)
    p, _ = _moons(rng, n, 0.01)
    q, _ = _moons(rng, n, 0.015)
    bayes = _moons_bayes()
    acc = c2st(jax.random.key(0), p, q, ensemble=1).accuracy
    same = c2st(jax.random.key(1), p, _moons(rng, n, 0.01)[0], steps=4000, ensemble=1).accuracy
    assert abs(same - 0.5) < 0.025, same  # 3 standard errors at 8000 points
    assert bayes - 0.05 < acc < bayes + 0.02, (acc, bayes)


@pytest.mark.slow
def test_c2st_defaults_on_thin_moons_over_seeds():
    # measured (seeds 0-2 of this test's data, defaults): 0.588, 0.581, 0.589 against 0.597
    bayes = _moons_bayes()
    for seed in range(3):
        rng = np.random.default_rng(1000 + seed)
        p, _ = _moons(rng, 4000, 0.01)
        q, _ = _moons(rng, 4000, 0.015)
        res = c2st(jax.random.key(seed), p, q)
        assert abs(res.accuracy - bayes) < 0.02, (seed, res.accuracy, bayes)


@pytest.mark.slow
def test_c2st_defaults_on_shifted_gaussians_over_seeds():
    shift = 1.0
    bayes = 0.5 * (1 + math.erf(shift / 2 / math.sqrt(2)))
    for seed in range(3):
        rng = np.random.default_rng(1000 + seed)
        p = rng.normal(size=(4000, 2))
        q = rng.normal(size=(4000, 2)) + np.array([[shift, 0.0]])
        res = c2st(jax.random.key(seed), p, q)
        # measured: 0.687, 0.685, 0.692 against 0.6915
        assert abs(res.accuracy - bayes) < 0.01, (seed, res.accuracy, bayes)
