"""Misuse and edge cases that jscore 0.1 got silently wrong (issue 13): each is now a clear error, a
warning, or handled. References are analytic or dense float64 computations, not the code's output."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jscore

SHAPE = (16, 16)
NOISE_VAR = 0.1


def _problem(shape=SHAPE):
    power = 1.0 / (1.0 + (jscore.fourier_wavenumber(shape) / 0.5) ** 2)
    prior = jscore.GaussianFieldPrior(power, shape)
    truth = prior.sample(jax.random.key(1))
    y = truth + jnp.sqrt(NOISE_VAR) * jax.random.normal(jax.random.key(2), shape)
    return prior, power, y


def _mask(shape=SHAPE):
    mask = np.ones(shape)
    mask[2:7, 3:9] = 0.0
    mask[np.random.default_rng(0).random(shape) < 0.15] = 0.0
    return mask


# ---------------------------------------------------------------------------------------------------
# Learned priors and the probability-flow ODE down to sigma = 0


@pytest.mark.x64
def test_probability_flow_ode_to_zero_never_evaluates_the_score_at_zero():
    # A Gaussian family whose score function, like every network, is undefined at sigma = 0
    # (0 * log(0) = NaN there): the flow to sigma_end = 0 must still be the exact transport
    # x -> x sqrt(v / (v + s0^2)).
    v = jnp.asarray([0.01, 0.3, 1.0, 4.0])

    def score(x, sigma):
        return -x / (v + sigma**2) + 0.0 * jnp.log(sigma)

    x = jnp.asarray([0.5, -1.0, 2.0, 0.1])
    got = jscore.probability_flow_ode(score, x, 0.2, 0.0, num_steps=256)
    expected = np.asarray(x) * np.sqrt(np.asarray(v) / (np.asarray(v) + 0.04))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-3)


def test_learned_prior_samples_are_finite_with_the_default_sigma_end():
    dim = 4
    model = jscore.ScoreMLP(dim, hidden_features=(8,), rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rng = np.random.default_rng(1)  # random weights: the untrained output layer is zero
    params = jax.tree.map(
        lambda p: jnp.asarray(0.1 * rng.normal(size=p.shape), p.dtype), nnx.to_pure_dict(params)
    )
    net = nnx.merge(graphdef, nnx.State(params), rest)
    op = jscore.IdentityOperator((dim,))
    noise = jscore.DiagonalNoise(jnp.full((dim,), 0.5))
    y = jnp.asarray([0.3, -0.2, 1.0, 0.0])

    @jax.jit
    def run(key):
        return jscore.annealed_posterior_sample(
            key, lambda x, s: net(x, s), op.forward, op.adjoint, noise, y, num_chains=4,
            annealing=jscore.AnnealingConfig(1.0, 0.05, 0.9, num_steps=40),
            hmc=jscore.HMCConfig(step_size=0.3),
        )  # fmt: skip

    samples, info = run(jax.random.key(0))
    assert jscore.ODEConfig().sigma_end == 0.0  # the default
    assert np.all(np.isfinite(np.asarray(samples))), "NaN samples with sigma_end = 0"
    assert np.all(np.isfinite(np.asarray(info.hmc_position)))


# ---------------------------------------------------------------------------------------------------
# NaN in masked pixels with infinite variance (the survey convention)


def test_nan_in_masked_pixels_carries_no_information():
    prior, _, y = _problem()
    mask = _mask()
    observed = mask > 0
    op = jscore.IdentityOperator(SHAPE)
    noise = jscore.DiagonalNoise(jnp.asarray(np.where(observed, NOISE_VAR, np.inf)))
    y_zero = jnp.where(jnp.asarray(observed), y, 0.0)
    y_nan = jnp.where(jnp.asarray(observed), y, jnp.nan)

    # Wiener filter: the NaN data give the map of the zero-filled data (0.1 gave an all-zero map).
    reference, _ = jscore.wiener_filter_cg(y_zero, op.forward, op.adjoint, noise, prior, tol=1e-6)
    mean, info = jscore.wiener_filter_cg(y_nan, op.forward, op.adjoint, noise, prior, tol=1e-6)
    assert float(info.residual_norm) < 1e-5
    assert float(jnp.abs(mean).max()) > 0.1
    np.testing.assert_array_equal(np.asarray(mean), np.asarray(reference))
    draw = jscore.wiener_filter_sample(
        jax.random.key(3), y_nan, op.forward, op.adjoint, noise, prior
    )
    assert np.all(np.isfinite(np.asarray(draw)))
    x_direct, _ = jscore.direct_inversion(y_nan, op.forward, op.adjoint, noise)
    np.testing.assert_allclose(np.asarray(x_direct), np.asarray(y_zero), atol=1e-6)

    # The annealed likelihood and the sampler (0.1: all-NaN output, acceptance 0).
    loglik = jscore.annealed_log_likelihood(op.forward, op.adjoint, noise, y_nan)
    value, grad = loglik(jnp.zeros(SHAPE), 0.05)
    assert np.isfinite(float(value))
    assert np.all(np.asarray(grad)[~observed] == 0.0)

    @jax.jit
    def sample(y):
        return jscore.annealed_posterior_sample(
            jax.random.key(0), prior.score, op.forward, op.adjoint, noise, y, num_chains=8,
            annealing=jscore.AnnealingConfig(0.5, 0.02, 0.95, num_steps=120),
            hmc=jscore.HMCConfig(step_size=0.1),
        )  # fmt: skip

    samples, info = sample(y_nan)
    expected, _ = sample(y_zero)
    assert np.all(np.isfinite(np.asarray(samples)))
    assert float(info.acceptance_rate.mean()) > 0.5
    np.testing.assert_array_equal(np.asarray(samples), np.asarray(expected))

    # NaN where the noise variance is finite is an error, not a silent NaN.
    with pytest.raises(ValueError, match=r"not finite .* where the noise variance is finite"):
        jscore.wiener_filter_cg(
            y_nan, op.forward, op.adjoint, jscore.DiagonalNoise(jnp.full(SHAPE, 0.1)), prior
        )


# ---------------------------------------------------------------------------------------------------
# The annealing schedule and its diagnostics


def test_annealing_schedules_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match=r"sigma_min=0.5 exceeds sigma_init=0.1: .*anneal upward"):
        jscore.AnnealingConfig(sigma_init=0.1, sigma_min=0.5)
    # The 0.1 defaults with sigma_init = 1 and 60 steps stopped at sigma 0.29 without a word.
    with pytest.raises(
        ValueError, match=r"num_steps=60 is too few .* 228 accepted moves .* 0\.298"
    ):
        jscore.AnnealingConfig(sigma_init=1.0, sigma_min=0.01, sigma_decay=0.98, num_steps=60)
    assert jscore.AnnealingConfig(1.0, 0.01, 0.98, num_steps=228).num_accepted_needed == 228
    with pytest.raises(ValueError, match=r"sigma_decay=1\.0 never lowers sigma"):
        jscore.AnnealingConfig(sigma_decay=1.0)
    with pytest.raises(ValueError, match="sigma_decay"):
        jscore.AnnealingConfig(sigma_decay=0.0)
    with pytest.raises(ValueError, match="num_quadrature_points"):
        jscore.HMCConfig(num_quadrature_points=4)
    with pytest.raises(ValueError, match="step_size"):
        jscore.HMCConfig(step_size=-0.1)
    with pytest.raises(ValueError, match="sigma_end"):
        jscore.ODEConfig(sigma_end=-1.0)
    config = jscore.AnnealingConfig(0.5, 0.01, 0.98, 250)
    assert hash(config) == hash(jscore.AnnealingConfig(0.5, 0.01, 0.98, 250))  # static under jit

    prior, _, y = _problem((8, 8))
    op = jscore.IdentityOperator((8, 8))
    noise = jscore.DiagonalNoise(jnp.full((8, 8), NOISE_VAR))
    with pytest.raises(ValueError, match=r"sigma_end=0.05 exceeds AnnealingConfig.sigma_min=0.01"):
        jscore.annealed_posterior_sample(
            jax.random.key(0), prior.score, op.forward, op.adjoint, noise, y,
            annealing=config, ode=jscore.ODEConfig(sigma_end=0.05),
        )  # fmt: skip


def test_collapsed_acceptance_and_chains_short_of_sigma_min_warn():
    prior, _, y = _problem((8, 8))
    op = jscore.IdentityOperator((8, 8))
    noise = jscore.DiagonalNoise(jnp.full((8, 8), NOISE_VAR))
    annealing = jscore.AnnealingConfig(0.5, 0.01, 0.9, num_steps=60)
    # A step size far beyond the posterior's smallest scale: (almost) nothing is accepted.
    with pytest.warns(jscore.AnnealingWarning) as record:
        _, info = jscore.annealed_posterior_sample(
            jax.random.key(0), prior.score, op.forward, op.adjoint, noise, y, num_chains=4,
            annealing=annealing, hmc=jscore.HMCConfig(step_size=3.0),
        )  # fmt: skip
    messages = " ".join(str(w.message) for w in record)
    assert float(info.acceptance_rate.mean()) < 0.1
    assert "acceptance rate collapsed" in messages
    assert "stopped above sigma_min=0.01" in messages
    # A sound run is silent; the diagnostics also work on the info of a jitted run.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, good = jscore.annealed_posterior_sample(
            jax.random.key(0), prior.score, op.forward, op.adjoint, noise, y, num_chains=4,
            annealing=annealing, hmc=jscore.HMCConfig(step_size=0.1),
        )  # fmt: skip
        assert jscore.diagnose_annealing(good, annealing) == []
    short = good._replace(sigma=good.sigma.at[1].set(0.29))
    with pytest.warns(jscore.AnnealingWarning, match=r"1 of 4 chains .*highest sigma 0\.29"):
        jscore.diagnose_annealing(short, annealing)


# ---------------------------------------------------------------------------------------------------
# Shapes that used to broadcast or fail opaquely


def test_shape_mismatches_raise_a_clear_value_error():
    shape = (32, 32)
    x = jnp.zeros(shape)
    column_mask = jscore.MaskOperator(jnp.ones((32, 1)))
    with pytest.raises(ValueError, match=r"shape \(32, 1\), but x has shape \(32, 32\)"):
        column_mask.forward(x)
    prior16, _, _ = _problem()
    with pytest.raises(
        ValueError, match=r"GaussianFieldPrior is defined on fields of shape \(16, 16\)"
    ):
        prior16.score(x, 0.1)
    op = jscore.IdentityOperator(shape)
    noise = jscore.DiagonalNoise(jnp.full(shape, NOISE_VAR))
    with pytest.raises(
        ValueError, match=r"GaussianFieldPrior is defined on fields of shape \(16, 16\)"
    ):
        jscore.annealed_posterior_sample(
            jax.random.key(0), prior16.score, op.forward, op.adjoint, noise, x
        )
    with pytest.raises(ValueError, match="MaskOperator"):
        jscore.annealed_posterior_sample(
            jax.random.key(0), prior16.score, column_mask.forward, column_mask.adjoint, noise, x
        )
    # Shear in the FITS layout (ny, nx, 2).
    shear = jscore.ShearOperator(SHAPE)
    fits_layout = jnp.zeros((*SHAPE, 2))
    with pytest.raises(ValueError, match=r"layout \(2, ny, nx\).*FITS layout .*moveaxis"):
        shear.adjoint(fits_layout)
    fits_noise = jscore.DiagonalNoise(jnp.full((*SHAPE, 2), 0.1))
    with pytest.raises(ValueError, match=r"layout \(2, ny, nx\)"):
        jscore.wiener_filter_cg(fits_layout, shear.forward, shear.adjoint, fits_noise, prior16)
    with pytest.raises(ValueError, match=r"ShearOperator is defined on fields of shape \(16, 16\)"):
        shear.forward(jnp.zeros((16, 8)))


# ---------------------------------------------------------------------------------------------------
# What is true of A A^T for the shear and mask operators


def _dense(fn, n_in, shape_in):
    basis = np.eye(n_in).reshape(n_in, *shape_in)
    return np.stack([np.asarray(fn(jnp.asarray(b))).reshape(-1) for b in basis], axis=1)


@pytest.mark.x64
def test_shear_operator_a_at_is_the_e_mode_projector_not_the_identity():
    shape = (9, 9)  # odd: no Nyquist modes
    n = 81
    op = jscore.ShearOperator(shape)
    a = _dense(op.forward, n, shape)  # (2n, n)
    np.testing.assert_allclose(a.T @ a, np.eye(n) - 1.0 / n, atol=1e-12)  # A^T A = I but the mean
    p = a @ a.T
    np.testing.assert_allclose(p @ p, p, atol=1e-12)  # a projector ...
    assert round(np.trace(p)) == n - 1  # ... of rank n - 1, not 2n: A A^T != I
    g = np.random.default_rng(0).normal(size=2 * n)
    rel = np.linalg.norm(p @ g - g) / np.linalg.norm(g)
    assert 0.6 < rel < 0.8  # the 0.70 of the audit (sqrt of the B-mode half)

    # The annealed likelihood N(y; A x, Sigma + sigma^2 I) against the exact
    # N(y; A x, Sigma + sigma^2 A A^T): the same gradient in x for white noise ...
    rng = np.random.default_rng(1)
    x, y, sigma = rng.normal(size=n), rng.normal(size=2 * n), 0.3

    def exact_gradient(variance):
        cov = np.diag(variance) + sigma**2 * p
        return a.T @ np.linalg.solve(cov, y - a @ x)

    def jscore_gradient(variance):
        noise = jscore.DiagonalNoise(jnp.asarray(variance.reshape(2, *shape)))
        loglik = jscore.annealed_log_likelihood(
            op.forward, op.adjoint, noise, jnp.asarray(y.reshape(2, *shape))
        )
        return np.asarray(loglik(jnp.asarray(x.reshape(shape)), sigma)[1]).reshape(-1)

    white = np.full(2 * n, 0.2)
    np.testing.assert_allclose(jscore_gradient(white), exact_gradient(white), rtol=1e-10)
    # ... but not for non-stationary noise (a masked survey): there it is an approximation.
    uneven = np.where(rng.random(2 * n) < 0.3, 5.0, 0.2)
    got, want = jscore_gradient(uneven), exact_gradient(uneven)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) > 0.01


@pytest.mark.x64
def test_mask_operator_annealed_likelihood_has_the_exact_x_dependence():
    shape = (5, 6)
    n = 30
    mask = (np.random.default_rng(2).random(shape) < 0.7).astype(float)
    op = jscore.MaskOperator(jnp.asarray(mask))
    a = _dense(op.forward, n, shape)
    p = a @ a.T
    assert not np.allclose(p, np.eye(n))  # A A^T = diag(mask) != I ...
    rng = np.random.default_rng(3)
    x, sigma = rng.normal(size=n), 0.3
    y = a @ rng.normal(size=n)  # masked data are zero
    variance = rng.uniform(0.1, 0.5, n)
    exact = a.T @ np.linalg.solve(np.diag(variance) + sigma**2 * p, y - a @ x)
    noise = jscore.DiagonalNoise(jnp.asarray(variance.reshape(shape)))
    loglik = jscore.annealed_log_likelihood(
        op.forward, op.adjoint, noise, jnp.asarray(y.reshape(shape))
    )
    got = np.asarray(loglik(jnp.asarray(x.reshape(shape)), sigma)[1]).reshape(-1)
    np.testing.assert_allclose(got, exact, rtol=1e-10)  # ... yet the gradient is exact
