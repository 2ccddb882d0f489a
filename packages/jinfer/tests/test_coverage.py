"""`coverage`: calibrated on exact posteriors, the analytic ECP of a mis-scaled Gaussian, biases
found per parameter, and the `tarp` package's reading on the same inputs."""

from __future__ import annotations

import importlib.util

import jax
import numpy as np
import pytest

import jinfer

N_SIMS, N_SAMPLES, DIM, NOISE = 400, 400, 2, 0.5
POST_VAR = NOISE**2 / (1 + NOISE**2)  # theta ~ N(0, I), x = theta + N(0, NOISE^2 I)


def _problem(seed, scale=1.0, shift=(0.0, 0.0)):
    """Truths, observations, and samples of N(mean + shift * std, (scale * std)^2) per simulation."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(N_SIMS, DIM))
    x = theta + NOISE * rng.normal(size=(N_SIMS, DIM))
    mean = x / (1 + NOISE**2)
    std = np.sqrt(POST_VAR)
    centre = mean + np.asarray(shift) * std
    samples = centre[:, None, :] + scale * std * rng.normal(size=(N_SIMS, N_SAMPLES, DIM))

    def log_q(t):  # the estimate's own density, up to a constant
        return -0.5 * np.sum((t - centre[:, None, :]) ** 2, axis=-1) / (scale * std) ** 2

    return theta, samples, (log_q(samples), log_q(theta[:, None, :])[:, 0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_posteriors_are_calibrated_by_every_method(seed):
    theta, samples, log_prob = _problem(seed)
    key = jax.random.key(seed)
    results = [
        jinfer.coverage(key, samples, theta),
        jinfer.coverage(key, samples, theta, method="hpd", log_prob=log_prob),
        jinfer.coverage(key, samples, theta, method="marginal"),
    ]
    for r in results:
        assert r.ecp.shape == (101, r.credibility.shape[1])
        assert np.all(r.p_value > 1e-3), (r.method, r.p_value)
        assert np.all(r.max_deviation < 1.63 / np.sqrt(N_SIMS))  # the KS 1% critical value
        assert np.all((r.band[0] <= r.alpha + 1e-12) & (r.alpha <= r.band[1] + 1e-12))


@pytest.mark.parametrize("scale", [0.6, 1.5])
def test_mis_scaled_posteriors_follow_the_analytic_hpd_coverage_and_are_rejected(scale):
    theta, samples, log_prob = _problem(3, scale=scale)
    key = jax.random.key(3)
    hpd = jinfer.coverage(key, samples, theta, method="hpd", log_prob=log_prob)
    # 2-D Gaussian: the truth's level is F_chi2(m / c^2) with m ~ chi2_2, so ECP = 1 - (1 - a)^(c^2)
    exact = 1 - (1 - hpd.alpha) ** (scale**2)
    tolerance = 4 * np.sqrt(exact * (1 - exact) / N_SIMS) + 2 / N_SAMPLES + 1e-9
    assert np.all(np.abs(hpd.ecp[:, 0] - exact) <= tolerance)
    assert hpd.p_value[0] < 1e-6
    middle = hpd.ecp[50, 0]  # overconfident: below the diagonal; underconfident: above
    assert (middle < 0.4) if scale < 1 else (middle > 0.6)
    assert jinfer.coverage(key, samples, theta).p_value[0] < 1e-4  # TARP rejects it too


def test_a_bias_in_one_parameter_is_found_in_that_parameter_only():
    theta, samples, _ = _problem(4, shift=(0.6, 0.0))
    marginal = jinfer.coverage(jax.random.key(4), samples, theta, method="marginal")
    assert marginal.p_value[0] < 1e-6
    assert marginal.p_value[1] > 1e-3
    # the samples sit too high: the truth falls low in them, too many small levels
    assert marginal.ecp[50, 0] > 0.6


@pytest.mark.skipif(importlib.util.find_spec("tarp") is None, reason="tarp is a test reference")
def test_tarp_agrees_with_the_tarp_package_on_the_same_references():
    import tarp

    theta, samples, _ = _problem(5, scale=0.8)
    rng = np.random.default_rng(5)
    references = rng.uniform(theta.min(0), theta.max(0), size=theta.shape)
    ours = jinfer.coverage(jax.random.key(5), samples, theta, references=references)
    scale = theta.std(axis=0)  # ours measures distances in units of each parameter's spread
    ecp, alpha = tarp.get_tarp_coverage(
        np.swapaxes(samples, 0, 1) / scale, theta / scale, references=references / scale,
        num_alpha_bins=20,
    )  # fmt: skip
    # tarp bins the unrandomised levels r / n between their extremes; (r + u) / (n + 1) gives r back
    ranks = np.floor(ours.credibility[:, 0] * (N_SAMPLES + 1))
    levels = ranks / N_SAMPLES
    assert np.ptp(levels) > 0.9
    below = np.mean(levels[None, :] < alpha[1:-1, None] - 1e-9, axis=1)  # interior edges
    at_or_below = np.mean(levels[None, :] <= alpha[1:-1, None] + 1e-9, axis=1)
    assert np.all((below - 1e-12 <= ecp[1:-1]) & (ecp[1:-1] <= at_or_below + 1e-12))
    assert ecp[-1] == pytest.approx(1.0)


def test_bad_inputs_are_clear_errors():
    theta, samples, log_prob = _problem(6)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="method"):
        jinfer.coverage(key, samples, theta, method="sbc")
    with pytest.raises(ValueError, match="samples must be"):
        jinfer.coverage(key, samples[0], theta)
    with pytest.raises(ValueError, match="truths must be"):
        jinfer.coverage(key, samples, theta[:-1])
    bad = samples.copy()
    bad[3, 4, 0] = np.nan
    with pytest.raises(ValueError, match="samples must be finite"):
        jinfer.coverage(key, bad, theta)
    with pytest.raises(ValueError, match="log_prob"):
        jinfer.coverage(key, samples, theta, method="hpd")
    with pytest.raises(ValueError, match="log_prob"):
        jinfer.coverage(key, samples, theta, log_prob=log_prob)
    with pytest.raises(ValueError, match="must not be NaN"):
        jinfer.coverage(
            key, samples, theta, method="hpd", log_prob=(log_prob[0], np.full(N_SIMS, np.nan))
        )
    outside = (log_prob[0], log_prob[1].copy())
    outside[1][:5] = -np.inf  # truths outside the estimate's support: level 1
    hpd = jinfer.coverage(key, samples, theta, method="hpd", log_prob=outside)
    assert np.all(hpd.credibility[:5, 0] > N_SAMPLES / (N_SAMPLES + 1))
    with pytest.raises(ValueError, match="log_prob must be arrays"):
        jinfer.coverage(
            key, samples, theta, method="hpd", log_prob=(log_prob[0][:, :3], log_prob[1])
        )
    with pytest.raises(ValueError, match="references"):
        jinfer.coverage(key, samples, theta, method="marginal", references=theta)
    with pytest.raises(ValueError, match="references must be"):
        jinfer.coverage(key, samples, theta, references=theta[:, :1])
    with pytest.raises(ValueError, match="vary"):
        jinfer.coverage(key, samples, np.zeros_like(theta))
    with pytest.raises(ValueError, match="n_alpha"):
        jinfer.coverage(key, samples, theta, n_alpha=1)


def test_plot_coverage_draws_every_curve():
    theta, samples, _ = _problem(7, scale=0.7)
    key = jax.random.key(7)
    results = [
        jinfer.coverage(key, samples, theta),
        jinfer.coverage(key, samples, theta, method="marginal"),
    ]
    fig = jinfer.plot_coverage(results)
    ax = fig.axes[0]
    assert len(ax.get_legend().get_texts()) == 1 + 3  # the band and three curves
    with pytest.raises(ValueError, match="labels"):
        jinfer.plot_coverage(results, labels=["a"])
