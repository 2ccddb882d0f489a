"""numpyro models as simulators with joint scores: `simulate_with_score`, Lotka-Volterra."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("numpyro")
pytest.importorskip("diffrax")

import numpyro
import numpyro.distributions as dist

from jflows import (
    ConditionalFlow,
    fit_npe,
    lotka_volterra_model,
    lotka_volterra_simulate,
    simulate_with_score,
    standardisation,
)

MU0, S0 = np.array([0.3, -0.5, 1.0]), np.array([1.0, 0.5, 2.0])
A = np.array([[1.0, 0.5, 0.0], [-0.3, 0.8, 0.2]])
SIG = 0.4


def gaussian_model():
    # two parameter sites (a scalar and a 2-vector) to check the flattening order
    a = numpyro.sample("a", dist.Normal(MU0[0], S0[0]))
    b = numpyro.sample("b", dist.Normal(MU0[1:], S0[1:]).to_event(1))
    theta = jnp.concatenate([a[None], b])
    numpyro.sample("x", dist.Normal(jnp.asarray(A) @ theta, SIG).to_event(1))


@pytest.mark.x64
def test_score_equals_the_analytic_gaussian_score():
    theta, x, score = simulate_with_score(
        jax.random.key(0), gaussian_model, 200, theta_sites=("a", "b"), x_site="x"
    )
    assert theta.shape == score.shape == (200, 3)
    assert x.shape == (200, 2)
    theta, x = np.asarray(theta), np.asarray(x)
    # grad_theta [log N(theta; mu0, s0^2) + log N(x; A theta, sig^2)], written out by hand
    expected = -(theta - MU0) / S0**2 + (x - theta @ A.T) @ A / SIG**2
    np.testing.assert_allclose(np.asarray(score), expected, rtol=1e-10, atol=1e-10)
    # theta really is drawn from the prior (mean and scale, 200 draws: ~4 sigma bounds)
    assert np.all(np.abs(theta.mean(0) - MU0) < 4 * S0 / np.sqrt(200))
    # site order is respected: ("b", "a") puts the scalar last
    theta_ba, _, score_ba = simulate_with_score(
        jax.random.key(0), gaussian_model, 200, theta_sites=("b", "a"), x_site="x"
    )
    np.testing.assert_array_equal(np.asarray(theta_ba), theta[:, [1, 2, 0]])
    np.testing.assert_allclose(np.asarray(score_ba), expected[:, [1, 2, 0]], rtol=1e-10, atol=1e-10)


TAU = 0.3


def latent_model():
    theta = numpyro.sample("theta", dist.Normal(0.0, 1.0))
    z = numpyro.sample("z", dist.Normal(theta, TAU))
    numpyro.sample("x", dist.Normal(z, SIG))


@pytest.mark.x64
def test_latents_are_held_at_their_simulated_values():
    # joint score -theta + (z - theta) / tau^2: it determines z, whose residuals must have the
    # simulator's law (z - theta ~ N(0, tau^2), x - z ~ N(0, sig^2)); had z been resampled or
    # marginalised, these would fail
    theta, x, score = simulate_with_score(
        jax.random.key(1), latent_model, 4000, theta_sites=["theta"], x_site="x"
    )
    theta, x, score = (np.asarray(a)[:, 0] for a in (theta, x, score))
    z = theta + TAU**2 * (score + theta)
    n = theta.size
    for resid, scale in ((z - theta, TAU), (x - z, SIG)):
        assert abs(resid.mean()) < 4 * scale / np.sqrt(n)
        assert abs(resid.std() / scale - 1) < 4 / np.sqrt(2 * n)


def test_bad_sites_raise():
    with pytest.raises(ValueError, match="'c' is not an unobserved sample site"):
        simulate_with_score(jax.random.key(0), gaussian_model, 2, theta_sites=("c",), x_site="x")
    with pytest.raises(ValueError, match="also one of theta_sites"):
        simulate_with_score(jax.random.key(0), gaussian_model, 2, theta_sites=("x",), x_site="x")
    with pytest.raises(TypeError, match="sequence of site names"):
        simulate_with_score(jax.random.key(0), gaussian_model, 2, theta_sites="a", x_site="x")
    with pytest.raises(ValueError, match="n must be a positive int"):
        simulate_with_score(jax.random.key(0), gaussian_model, 0, theta_sites=("a",), x_site="x")
    with pytest.raises(ValueError, match="times must be increasing"):
        lotka_volterra_simulate(jax.random.key(0), 2, times=(2.0, 1.0))


def _lv_log_joint_numpy(theta, x, times, x0=(30.0, 1.0), noise=0.1):
    """Independent log p(theta, x): scipy's ODE solver, the log-normal densities written out."""
    from scipy.integrate import solve_ivp

    alpha, beta, gamma, delta = theta

    def rhs(t, y):
        return [alpha * y[0] - beta * y[0] * y[1], delta * y[0] * y[1] - gamma * y[1]]

    sol = solve_ivp(
        rhs, (0.0, times[-1]), x0, t_eval=times, rtol=1e-11, atol=1e-11, method="DOP853"
    )
    pops = sol.y.T
    locs = np.array([np.log(1.0) - 0.125, np.log(0.05), np.log(1.0) - 0.125, np.log(0.05)])
    log_t = np.log(theta)
    prior = np.sum(-0.5 * ((log_t - locs) / 0.5) ** 2 - log_t - np.log(0.5 * np.sqrt(2 * np.pi)))
    lx = np.log(x.reshape(pops.shape))
    lik = np.sum(
        -0.5 * ((lx - np.log(pops)) / noise) ** 2 - lx - np.log(noise * np.sqrt(2 * np.pi))
    )
    return prior + lik


@pytest.mark.slow
@pytest.mark.x64
def test_lotka_volterra_score_matches_finite_differences_of_an_independent_solver():
    pytest.importorskip("scipy")
    times = (1.0, 2.0, 3.0, 4.0)
    theta, x, score = lotka_volterra_simulate(jax.random.key(3), 3, times=times)
    for t, xx, s in zip(np.asarray(theta), np.asarray(x), np.asarray(score), strict=True):
        eps = 1e-6 * t
        fd = [
            (_lv_log_joint_numpy(t + e, xx, times) - _lv_log_joint_numpy(t - e, xx, times))
            / (2 * e[i])
            for i, e in enumerate(np.diag(eps))
        ]
        np.testing.assert_allclose(s, fd, rtol=1e-4, atol=1e-3 * np.max(np.abs(fd)))


@pytest.fixture(scope="module")
def lv_sims():
    return lotka_volterra_simulate(jax.random.key(0), 48)


def test_lotka_volterra_shapes_and_values(lv_sims):
    theta, x, score = lv_sims
    assert theta.shape == score.shape == (48, 4)
    assert x.shape == (48, 20)
    for a in (theta, x, score):
        assert np.all(np.isfinite(np.asarray(a)))
    assert np.all(np.asarray(theta) > 0)
    assert np.all(np.asarray(x) > 0)
    # log-normal priors: medians exp(-0.125), 0.05, exp(-0.125), 0.05 (48 draws, loose bounds)
    med = np.median(np.asarray(theta), axis=0)
    np.testing.assert_allclose(med, [np.exp(-0.125), 0.05, np.exp(-0.125), 0.05], rtol=0.35)
    # the model is an ordinary numpyro model: its trace has the documented sites
    tr = numpyro.handlers.trace(numpyro.handlers.seed(lotka_volterra_model, 0)).get_trace()
    assert tr["populations"]["value"].shape == (10, 2)
    assert tr["x"]["value"].shape == (10, 2)


@pytest.mark.slow
def test_short_npe_fit_on_lotka_volterra(lv_sims):
    theta, x, score = lv_sims
    log_theta, log_x = jnp.log(theta), jnp.log(x)
    # score w.r.t. log theta: chain rule plus the log-Jacobian of theta = exp(log theta)
    log_score = score * theta + 1.0
    flow = ConditionalFlow(
        4, 20, rngs=nnx.Rngs(0), hidden=(32,), num_layers=2, loc_scale=standardisation(log_theta)
    )
    trained, hist = fit_npe(
        jax.random.key(0),
        flow,
        log_theta,
        log_x,
        log_score,
        score_weight=1e-3,
        max_epochs=15,
        batch_size=16,
        validation_fraction=0.25,
        progress=False,
    )
    assert np.all(np.isfinite(hist["loss"]))
    assert hist["loss"][-1] < hist["loss"][0]
    samples = trained.sample(jax.random.key(1), log_x[0], n=8)
    assert samples.shape == (8, 4)
    assert np.all(np.isfinite(np.asarray(samples)))
