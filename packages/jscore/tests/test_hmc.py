"""The score line integral, the annealed HMC kernel at fixed sigma, and the probability-flow ODE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jscore


@pytest.mark.x64
@pytest.mark.parametrize("num_points", [2, 3, 5])
def test_line_integral_is_exact_for_a_gaussian(num_points):
    rng = np.random.default_rng(0)
    d = 12
    m = rng.normal(size=(d, d))
    cov = m @ m.T + d * np.eye(d)
    prec = np.linalg.inv(cov)
    mu = rng.normal(size=d)

    def log_density(x):  # the exact value, computed with NumPy
        return -0.5 * (x - mu) @ prec @ (x - mu)

    def score(x, sigma):  # the N(mu, cov + sigma^2 I) family
        return -jnp.linalg.solve(jnp.asarray(cov) + sigma**2 * jnp.eye(d), x - jnp.asarray(mu))

    x0, x1 = rng.normal(size=d), 3.0 * rng.normal(size=d)
    got = jscore.score_line_integral(
        score, jnp.asarray(x0), jnp.asarray(x1), 0.0, num_points=num_points
    )
    np.testing.assert_allclose(float(got), log_density(x1) - log_density(x0), rtol=1e-10)


@pytest.mark.x64
def test_line_integral_beyond_gaussians():
    # log p = -sum(x^4)/4: Simpson (3 points) is exact for this quartic; a non-polynomial log
    # density converges as the number of points grows, while the trapezoid rule does not stay exact.
    def quartic_score(x, sigma):
        return -(x**3)

    x0 = jnp.asarray([0.3, -1.2, 0.7])
    x1 = jnp.asarray([1.5, 0.4, -0.9])
    exact = float(-np.sum(np.asarray(x1) ** 4) / 4 + np.sum(np.asarray(x0) ** 4) / 4)
    simpson = jscore.score_line_integral(quartic_score, x0, x1, 0.0, num_points=3)
    trapezoid = jscore.score_line_integral(quartic_score, x0, x1, 0.0, num_points=2)
    np.testing.assert_allclose(float(simpson), exact, rtol=1e-12)
    assert abs(float(trapezoid) - exact) > 1e-2

    def logcosh_score(x, sigma):
        return -jnp.tanh(x)

    exact = float(
        -np.sum(np.log(np.cosh(np.asarray(x1)))) + np.sum(np.log(np.cosh(np.asarray(x0))))
    )
    errors = [
        abs(float(jscore.score_line_integral(logcosh_score, x0, x1, 0.0, num_points=n)) - exact)
        for n in (3, 9, 33)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-7


def test_line_integral_rejects_bad_point_counts():
    with pytest.raises(ValueError, match="num_points"):
        jscore.score_line_integral(lambda x, s: -x, jnp.zeros(3), jnp.ones(3), 0.0, num_points=4)


def _gaussian_problem(shape, noise_var):
    k = jscore.fourier_wavenumber(shape)
    power = 1.0 / (1.0 + (k / 0.5) ** 2)
    prior = jscore.GaussianFieldPrior(power, shape)
    y = prior.sample(jax.random.key(1)) + jnp.sqrt(noise_var) * jax.random.normal(
        jax.random.key(2), shape
    )
    return prior, power, y


@pytest.mark.parametrize("mass", ["identity", "fourier"])
def test_fixed_sigma_hmc_samples_the_exact_annealed_posterior(mass):
    # At fixed sigma the target N(0, C + s^2) N(y; x, N + s^2) is Gaussian and diagonal in Fourier
    # space: precision 1/(P + s^2) + 1/(N + s^2). The step size is large enough (acceptance ~0.7)
    # that leapfrog alone would inflate the variance by ~15%: the Metropolis test, with its prior term
    # from the score line integral, must correct it. The Fourier mass is deliberately off (its
    # likelihood precision 3 times the true one, so its scales are up to 3 times too small): the
    # samples must still follow the target, which checks the kinetic energy of the mass matrix.
    shape, noise_var, sigma = (8, 8), 0.1, 0.05
    prior, power, y = _gaussian_problem(shape, noise_var)
    noise = jscore.DiagonalNoise(jnp.full(shape, noise_var))
    op = jscore.IdentityOperator(shape)
    loglik = jscore.annealed_log_likelihood(op.forward, op.adjoint, noise, y)
    num_chains, num_steps = 256, 220
    if mass == "identity":
        eps, preconditioner = 0.12, None
    else:
        eps, preconditioner = 0.9, jscore.FourierPreconditioner(power, shape, 3.0 / noise_var)

    def step(key, state):
        return jscore.annealed_hmc_step(
            key, state, prior.score, loglik, step_size=eps, sigma_decay=1.0,
            preconditioner=preconditioner,
        )  # fmt: skip

    @jax.jit
    def run(key):
        init = jax.vmap(jscore.annealed_hmc_init, (0, None))(jnp.zeros((num_chains, *shape)), sigma)

        def body(state, key):
            state, info = jax.vmap(step)(jax.random.split(key, num_chains), state)
            return state, (state.position, info.is_accepted, state.sigma)

        return jax.lax.scan(body, init, jax.random.split(key, num_steps))[1]

    xs, accepted, sigmas = run(jax.random.key(0))
    assert np.all(np.asarray(sigmas) == np.float32(sigma))
    acceptance = float(jnp.mean(accepted))
    assert 0.5 < acceptance < 0.9, acceptance
    # Burn-in of 60 steps, then every 20th step: 8 x 256 draws.
    xs = np.asarray(xs[80::20], np.float64).reshape(-1, *shape)
    precision = 1.0 / (np.asarray(power, np.float64) + sigma**2) + 1.0 / (noise_var + sigma**2)
    mean = (
        np.fft.rfftn(np.asarray(y, np.float64), norm="ortho") / (noise_var + sigma**2) / precision
    )
    xh = np.fft.rfftn(xs, axes=(1, 2), norm="ortho")
    mean_error = np.mean(np.abs(xh.mean(0) - mean) * np.sqrt(precision))  # noise level ~0.02
    variance_error = np.mean(
        np.mean(np.abs(xh - mean) ** 2, axis=0) * precision - 1
    )  # noise ~0.005
    assert mean_error < 0.05
    assert abs(variance_error) < 0.03


@pytest.mark.x64
def test_probability_flow_ode_transports_a_gaussian_family_exactly():
    # For p_sigma = N(0, v + sigma^2) per coordinate, the flow maps x to x sqrt(v + s1^2) / sqrt(v + s0^2).
    v = jnp.asarray([0.01, 0.3, 1.0, 4.0])

    def score(x, sigma):
        return -x / (v + sigma**2)

    x = jnp.asarray([0.5, -1.0, 2.0, 0.1])
    for s0, s1 in ((0.2, 0.0), (1.0, 0.05)):
        got = jscore.probability_flow_ode(score, x, s0, s1, num_steps=256)
        expected = np.asarray(x) * np.sqrt((np.asarray(v) + s1**2) / (np.asarray(v) + s0**2))
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-3)
    # Second order: halving the step divides the error by about 4.
    exact = np.asarray(x) * np.sqrt(np.asarray(v) / (np.asarray(v) + 0.04))
    e1 = np.max(np.abs(np.asarray(jscore.probability_flow_ode(score, x, 0.2, num_steps=8)) - exact))
    e2 = np.max(
        np.abs(np.asarray(jscore.probability_flow_ode(score, x, 0.2, num_steps=16)) - exact)
    )
    assert 3.0 < e1 / e2 < 5.0
