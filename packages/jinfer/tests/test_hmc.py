"""`sample_posterior` against an exact Gaussian posterior; resuming after a kill; diagnostics.

The model is a linear-Gaussian full-field toy with the structure of `jlens.lognormal_model`: two
parameters, a non-centred latent field of 24 pixels, a noisy observation of both. Its posterior is
Gaussian with a closed form (the parameters' marginal: `y | theta ~ N(B theta, C C^T + sigma^2 I)`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import jinfer

RNG = np.random.default_rng(0)
N_PIX = 24
B = RNG.normal(size=(N_PIX, 2)) * 0.5
C = RNG.normal(size=(N_PIX, N_PIX)) * 0.2
SIGMA = 0.5
THETA_TRUE = np.array([0.7, -0.4])
Y = B @ THETA_TRUE + C @ RNG.normal(size=N_PIX) + SIGMA * RNG.normal(size=N_PIX)


def model(y):
    theta = numpyro.sample("theta", dist.Normal(0.0, 1.0).expand((2,)).to_event(1))
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand((N_PIX,)).to_event(1))
    numpyro.deterministic("field", jnp.asarray(C) @ z)
    numpyro.sample(
        "y", dist.Normal(jnp.asarray(B) @ theta + jnp.asarray(C) @ z, SIGMA).to_event(1), obs=y
    )


def _exact_theta_posterior():
    cov_y = C @ C.T + SIGMA**2 * np.eye(N_PIX)
    precision = np.eye(2) + B.T @ np.linalg.solve(cov_y, B)
    cov = np.linalg.inv(precision)
    return cov @ B.T @ np.linalg.solve(cov_y, Y), cov


RUN = {"num_chains": 4, "num_warmup": 300, "num_samples": 600, "progress": False}


def test_nuts_reaches_the_exact_gaussian_posterior():
    out = jinfer.sample_posterior(
        jax.random.key(0), model, jnp.asarray(Y), dense_mass=[("theta",)], **RUN
    )
    mean, cov = _exact_theta_posterior()
    theta = out.samples["theta"]
    assert theta.shape == (4, 600, 2)
    assert out.samples["z"].shape == (4, 600, N_PIX)
    assert out.samples["field"].shape == (4, 600, N_PIX)
    ess = out.diagnostics["theta"]["ess_bulk"]
    assert np.all(ess > 400), ess
    assert np.all(out.diagnostics["theta"]["ess_tail"] > 200)
    assert np.all(out.diagnostics["theta"]["r_hat"] < 1.02)
    assert np.all(out.diagnostics["z"]["r_hat"] < 1.05)
    flat = theta.reshape(-1, 2)
    sd = np.sqrt(np.diag(cov))
    # means within 4 Monte Carlo errors; covariance to ~3 sigma of its sampling error at ESS > 400
    assert np.all(np.abs(flat.mean(0) - mean) < 4 * sd / np.sqrt(ess)), (flat.mean(0), mean)
    np.testing.assert_allclose(flat.std(0), sd, rtol=0.15)
    np.testing.assert_allclose(np.corrcoef(flat.T)[0, 1], cov[0, 1] / sd.prod(), atol=0.15)
    assert out.divergences.sum() == 0
    assert np.all((out.accept_prob > 0.6) & (out.accept_prob < 0.99))
    assert out.step_size.shape == (4,)


def test_a_killed_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    import jinfer._src.hmc as hmc

    run = {**RUN, "num_warmup": 100, "num_samples": 60, "chunk_size": 20, "keep": ["theta"]}
    ref = jinfer.sample_posterior(jax.random.key(1), model, jnp.asarray(Y), **run)
    assert set(ref.samples) == {"theta"}
    path = tmp_path / "chains.msgpack"
    real, calls = hmc.write_checkpoint, []

    def killed_after_two(*args, **kw):  # after the warmup's file and the first chunk's
        real(*args, **kw)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(hmc, "write_checkpoint", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        jinfer.sample_posterior(jax.random.key(1), model, jnp.asarray(Y), checkpoint=path, **run)
    monkeypatch.undo()
    resumed = jinfer.sample_posterior(
        jax.random.key(1), model, jnp.asarray(Y), checkpoint=path, **run
    )
    np.testing.assert_array_equal(resumed.samples["theta"], ref.samples["theta"])
    np.testing.assert_array_equal(resumed.divergences, ref.divergences)
    np.testing.assert_array_equal(resumed.accept_prob, ref.accept_prob)
    # a finished run's file returns at once; another key's run refuses it
    again = jinfer.sample_posterior(
        jax.random.key(1), model, jnp.asarray(Y), checkpoint=path, **run
    )
    np.testing.assert_array_equal(again.samples["theta"], ref.samples["theta"])
    with pytest.raises(ValueError, match="another run"):
        jinfer.sample_posterior(jax.random.key(2), model, jnp.asarray(Y), checkpoint=path, **run)
    with pytest.raises(ValueError, match="another run"):  # other data
        jinfer.sample_posterior(
            jax.random.key(1), model, jnp.asarray(Y) + 1, checkpoint=path, **run
        )
    assert [p.name for p in tmp_path.iterdir()] == ["chains.msgpack"]


def test_the_run_fingerprint_ignores_memory_addresses():
    import jinfer._src.hmc as hmc

    settings = {"num_chains": 2}
    one, other = object(), object()  # same repr up to the address, as in another process
    assert hmc._digest((Y, one), {}, settings) == hmc._digest((Y, other), {}, settings)
    assert hmc._digest((Y,), {}, settings) != hmc._digest((Y + 1,), {}, settings)


def test_the_run_fingerprint_of_numpyro_priors_is_the_same_in_every_process():
    """numpyro distributions flatten in a hash-seeded order: the digest must not depend on it."""
    import subprocess
    import sys

    code = (
        "import numpyro.distributions as d, jinfer._src.hmc as h;"
        "p = {'a': d.Uniform(0.1, 0.5), 'b': d.Normal(0.0, 2.0)};"
        "print(h._digest((), {'priors': p}, {}))"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)},
        ).stdout.strip()
        for seed in range(6)
    }  # fmt: skip
    assert len(digests) == 1, digests
    import jinfer._src.hmc as hmc

    one = {"priors": {"a": dist.Uniform(0.1, 0.5)}}
    other = {"priors": {"a": dist.Uniform(0.1, 0.6)}}
    assert hmc._digest((), one, {}) != hmc._digest((), other, {})


def test_diagnostics_flag_chains_that_disagree():
    rng = np.random.default_rng(3)
    good = rng.normal(size=(4, 500))
    bad = good + np.array([0.0, 0.0, 0.0, 3.0])[:, None]  # one chain stuck elsewhere
    sticky = np.cumsum(rng.normal(size=(4, 500)), axis=1) * 0.05  # random walks: tiny ESS
    d = jinfer.mcmc_diagnostics({"good": good, "bad": bad, "sticky": sticky})
    assert d["good"]["r_hat"] < 1.01
    assert d["good"]["ess_bulk"] > 1200
    assert d["good"]["ess_tail"] > 800
    assert d["bad"]["r_hat"] > 1.5
    assert d["sticky"]["ess_bulk"] < 100
    assert d["sticky"]["ess_tail"] < 100
    with pytest.raises(ValueError, match="num_chains >= 2"):
        jinfer.mcmc_diagnostics({"one": good[:1]})


def test_bad_settings_are_errors_before_sampling():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_chains"):
        jinfer.sample_posterior(key, model, Y, num_chains=0)
    with pytest.raises(ValueError, match="target_accept_prob"):
        jinfer.sample_posterior(key, model, Y, target_accept_prob=1.5)
    with pytest.raises(ValueError, match="dense_mass"):
        jinfer.sample_posterior(key, model, Y, dense_mass=[("theta", 3)])
    with pytest.raises(TypeError, match="numpyro model"):
        jinfer.sample_posterior(key, "model", Y)
