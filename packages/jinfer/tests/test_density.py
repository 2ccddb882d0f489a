"""NLE + NUTS against the exact posterior of a linear-Gaussian model."""

from __future__ import annotations

import jax
import numpy as np
import numpyro.distributions as dist
import pytest
from flax import nnx

import jflows
import jinfer

A = np.array([[1.0, 0.6], [-0.4, 0.9]])
SIG = 0.3


def test_nle_posterior_sampled_by_nuts_matches_the_exact_posterior():
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(3000, 2)).astype(np.float32)
    x = (theta @ A.T + SIG * rng.normal(size=(3000, 2))).astype(np.float32)
    flow = jflows.ConditionalFlow(
        2, 2, rngs=nnx.Rngs(0), loc_scale=jflows.standardisation(x), hidden=(32, 32), num_layers=4
    )
    flow, _ = jflows.fit_nle(jax.random.key(0), flow, theta, x, learning_rate=3e-3, max_epochs=60, progress=False)  # fmt: skip
    x_obs = np.array([0.8, -0.5], np.float32)
    prior = dist.Normal(np.zeros(2, np.float32), 1.0).to_event(1)
    out = jinfer.sample_posterior(
        jax.random.key(1), jinfer.nle_model(flow, prior, x_obs), num_chains=4, num_warmup=300,
        num_samples=500, progress=False,
    )  # fmt: skip
    cov = np.linalg.inv(np.eye(2) + A.T @ A / SIG**2)
    mean = cov @ A.T @ x_obs / SIG**2
    samples = out.samples["theta"].reshape(-1, 2)
    sd = np.sqrt(np.diag(cov))
    # the learned likelihood's error dominates the Monte Carlo error here: 0.25 posterior std
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.25 * sd.max())
    np.testing.assert_allclose(samples.std(0), sd, rtol=0.2)
    assert np.all(out.diagnostics["theta"]["r_hat"] < 1.02)


def test_nle_model_checks_its_inputs():
    flow = jflows.ConditionalFlow(2, 3, rngs=nnx.Rngs(0))
    prior = dist.Normal(np.zeros(3), 1.0).to_event(1)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        jinfer.nle_model(flow, prior, np.zeros(3))
    with pytest.raises(ValueError, match="event shape"):
        jinfer.nle_model(flow, dist.Normal(0.0, 1.0), np.zeros(2))
    with pytest.raises(ValueError, match="non-finite"):
        jinfer.nle_model(flow, prior, np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="conditional"):
        jinfer.nle_model(jflows.ConditionalFlow(2, 0, rngs=nnx.Rngs(0)), prior, np.zeros(2))
