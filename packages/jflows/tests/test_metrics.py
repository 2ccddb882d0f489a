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
        # 2000 steps of 128 rows, one network per fold (a fifth of the defaults' cost)
        res = c2st(jax.random.key(seed), p, q, steps=2000, ensemble=1)
        acc.append(res.accuracy)
    bayes = np.array([0.5 * (1 + math.erf(s / 2 / math.sqrt(2))) for s in shifts])
    assert abs(acc[0] - 0.5) < 0.04  # ~3.5 standard errors
    assert np.all(np.diff(acc) > 0), acc
    assert np.all(np.asarray(acc) < bayes + 0.04), (acc, bayes)
    assert np.all(np.asarray(acc) > bayes - 0.05), (acc, bayes)
    assert acc[-1] > 0.95


def _phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


# Bayes accuracies of the two Gaussian checks (analytic): unit Gaussians a distance 1 apart,
# Phi(1 / 2); a unit Gaussian against one whose first axis is 1.5x wider (the 1D problem:
# |x| < c with c^2 = 2 log 1.5 / (1 - 1 / 1.5^2) classifies as the narrow one)
SHIFT_BAYES = _phi(0.5)  # 0.6915
_C = math.sqrt(2 * math.log(1.5) / (1 - 1 / 1.5**2))
WIDE_BAYES = 0.5 * ((2 * _phi(_C) - 1) + 2 * (1 - _phi(_C / 1.5)))  # 0.5968


def _gaussian_check(case, seed, n=4000):
    """`(p, q, bayes, oracle)`: the samples, the analytic Bayes accuracy and the accuracy of the
    Bayes classifier (the sign of the exact log density ratio) on these very samples."""
    rng = np.random.default_rng(2000 + seed)
    p = rng.normal(size=(n, 2))
    if case == "shift":
        q, bayes = rng.normal(size=(n, 2)) + np.array([[1.0, 0.0]]), SHIFT_BAYES

        def log_ratio(t):
            return t[:, 0] - 0.5

    else:
        q, bayes = rng.normal(size=(n, 2)) * np.array([[1.5, 1.0]]), WIDE_BAYES

        def log_ratio(t):
            return -math.log(1.5) + 0.5 * t[:, 0] ** 2 * (1 - 1 / 1.5**2)

    oracle = 0.5 * (np.mean(log_ratio(p) < 0) + np.mean(log_ratio(q) > 0))
    return p, q, bayes, oracle


@pytest.mark.parametrize("case", ["shift", "wide"])
def test_c2st_within_0_01_of_bayes_on_gaussians_for_every_seed(case):
    # A cheap MLP (1000 steps, one network per fold): on Gaussians the quadratic logistic regression
    # is the Bayes-optimal family, and the MLPs see the quadratic features too. 4000 + 4000
    # samples, five seeds: within 0.01 of the Bayes classifier on the same samples (measured:
    # 0.0006-0.005 below; the 0.2 C2ST before read about as well here, 0.000-0.007 below: the
    # Gaussians were not its weakness, the thin moons below were). The Bayes accuracy itself is a
    # sampling error (0.0052) away from the sample's (seed 2 of "shift": 0.012 below), so against
    # it: 20 000 + 20 000 samples, three seeds.
    for seed in range(5):
        p, q, bayes, oracle = _gaussian_check(case, seed)
        res = c2st(jax.random.key(seed), p, q, steps=1000, ensemble=1)
        assert abs(res.accuracy - oracle) < 0.01, (case, seed, res.accuracy, oracle, bayes)
    for seed in range(5, 8):
        p, q, bayes, oracle = _gaussian_check(case, seed, n=20_000)
        res = c2st(jax.random.key(seed), p, q, steps=1000, ensemble=1)
        assert abs(res.accuracy - bayes) < 0.01, (case, seed, res.accuracy, oracle, bayes)
        assert res.std_error == pytest.approx(math.sqrt(res.accuracy * (1 - res.accuracy) / 40_000))
        assert len(res.classifiers) == 5
        assert set(res.classifiers) <= {"mlp", "quadratic"}


@pytest.mark.slow  # ~1.5 min per case on two shared cores
@pytest.mark.parametrize("case", ["shift", "wide"])
def test_c2st_defaults_within_0_01_of_bayes_on_gaussians_for_every_seed(case):
    for seed in range(5):
        p, q, bayes, oracle = _gaussian_check(case, seed)
        res = c2st(jax.random.key(seed), p, q)
        assert abs(res.accuracy - oracle) < 0.01, (case, seed, res.accuracy, oracle, bayes)
        assert abs(res.accuracy - bayes) < 0.01 + 2 * res.std_error, (case, seed, res, bayes)


def test_c2st_input_checks():
    p, q = _gaussians(0, 0.0)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="shapes"):
        c2st(key, p, q[:, :1])
    with pytest.raises(ValueError, match="folds"):
        c2st(key, p, q, folds=1)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        c2st(key, p, q, steps=True)
    with pytest.raises(ValueError, match="quadratic must be a bool"):
        c2st(key, p, q, quadratic=1)
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


@pytest.mark.slow  # ~20 s; the stated error is also checked by the seed tests' tolerance
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


def _moons_check(seed, n=4000):
    """`(p, q, oracle)`: widths 0.01 and 0.015, and the Bayes classifier's accuracy on them."""
    rng = np.random.default_rng(1000 + seed)
    p, log_density = _moons(rng, n, 0.01)
    q, _ = _moons(rng, n, 0.015)

    def log_ratio(t):
        return log_density(t, 0.015) - log_density(t, 0.01)

    oracle = 0.5 * (np.mean(log_ratio(p) < 0) + np.mean(log_ratio(q) > 0))
    return p, q, oracle


@pytest.mark.slow  # ~25 s
def test_c2st_resolves_thin_moons_for_every_seed():
    # The benchmark's target has 0.01-thin crescents: the exact posterior against one with width
    # 0.015 (Bayes accuracy 0.597). With the quadratic features a crescent's circle is one linear
    # unit; a cheap setting (2000 steps, one network per fold) reads 0.007-0.010 below the Bayes
    # classifier on the same samples (seeds 0-2). The 0.2 C2ST before (an MLP of the raw
    # coordinates) read 0.507-0.521 with these settings, 0.573-0.590 with its defaults.
    bayes = _moons_bayes()
    for seed in range(3):
        p, q, oracle = _moons_check(seed)
        res = c2st(jax.random.key(seed), p, q, steps=2000, ensemble=1)
        assert abs(res.accuracy - oracle) < 0.015, (seed, res.accuracy, oracle, bayes)
        assert abs(res.accuracy - bayes) < 0.015, (seed, res.accuracy, oracle, bayes)
        assert set(res.classifiers) == {"mlp"}, res.classifiers  # no quadratic boundary here
    rng = np.random.default_rng(7)
    same = c2st(jax.random.key(1), _moons(rng, 4000, 0.01)[0], _moons(rng, 4000, 0.01)[0],
                steps=2000, ensemble=1)  # fmt: skip
    assert abs(same.accuracy - 0.5) < 3 * same.std_error, same


@pytest.mark.slow  # ~1 min on two cores
def test_c2st_defaults_on_thin_moons_over_seeds():
    # measured (defaults, seeds 0-4): 0.590, 0.587, 0.595, 0.585, 0.586 against the Bayes
    # classifier's 0.594, 0.596, 0.602, 0.599, 0.596 on the same samples (0.004-0.014 below) and
    # the Bayes accuracy 0.597 (0.001-0.012 below; the 0.2 C2ST before: 0.588, 0.581, 0.589 on
    # seeds 0-2)
    bayes = _moons_bayes()
    for seed in range(5):
        p, q, oracle = _moons_check(seed)
        res = c2st(jax.random.key(seed), p, q)
        assert abs(res.accuracy - oracle) < 0.02, (seed, res.accuracy, oracle, bayes)
        assert abs(res.accuracy - bayes) < 0.015, (seed, res.accuracy, oracle, bayes)
