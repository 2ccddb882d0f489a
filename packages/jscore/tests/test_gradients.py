"""Gradients of jscore's public differentiable functions against float64 finite differences
(`jax.test_util.check_grads`, forward and reverse mode where the function supports them), and the
analytic gradients jscore returns against automatic differentiation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import jscore

pytestmark = pytest.mark.x64

SHAPE = (6, 5)


def _prior():
    power = 1.0 / (1.0 + (jscore.fourier_wavenumber(SHAPE) / 0.5) ** 2)
    return jscore.GaussianFieldPrior(jnp.asarray(power, jnp.float64), SHAPE)


def _field(seed, shape=SHAPE):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


def test_gaussian_prior_score_log_prob_and_their_gradients():
    prior = _prior()
    x = _field(0)
    check_grads(jax.jit(prior.score), (x, 0.3), order=1, modes=("fwd", "rev"))
    check_grads(jax.jit(prior.log_prob), (x, 0.3), order=1, modes=("fwd", "rev"))
    # The score is the gradient of the log density (an independent relation, not a tautology: the
    # score is a Fourier multiplier, log_prob a quadratic form plus a log-determinant).
    for sigma in (0.0, 0.3):
        np.testing.assert_allclose(
            np.asarray(prior.score(x, sigma)),
            np.asarray(jax.grad(prior.log_prob)(x, sigma)),
            rtol=1e-10,
            atol=1e-12,
        )


def test_operators_have_correct_derivatives():
    x = _field(1)
    mask = jnp.asarray(np.random.default_rng(2).random(SHAPE) < 0.7, jnp.float64)
    shear = jscore.ShearOperator(SHAPE)
    rng = np.random.default_rng(3)
    full = rng.normal(size=(2, *SHAPE))
    full = full + np.roll(np.flip(full, axis=(1, 2)), 1, axis=(1, 2))
    fourier = jscore.FourierOperator(jnp.asarray(full[..., : SHAPE[-1] // 2 + 1]), SHAPE)
    for op in (jscore.MaskOperator(mask), shear, fourier):
        check_grads(jax.jit(op.forward), (x,), order=1, modes=("fwd", "rev"))
        check_grads(jax.jit(op.adjoint), (op.forward(x),), order=1, modes=("fwd", "rev"))


def test_annealed_log_likelihood_gradient_is_the_autodiff_gradient():
    shear = jscore.ShearOperator(SHAPE)
    variance = np.full((2, *SHAPE), 0.2)
    variance[:, 0, :2] = np.inf  # masked pixels carry no information (and may hold NaN)
    noise = jscore.DiagonalNoise(jnp.asarray(variance))
    y = np.asarray(shear.forward(_field(4))) + 0.3 * np.random.default_rng(5).normal(
        size=(2, *SHAPE)
    )
    y[:, 0, :2] = np.nan
    loglik = jscore.annealed_log_likelihood(shear.forward, shear.adjoint, noise, jnp.asarray(y))
    x = _field(6)

    @jax.jit
    def value(x, sigma):
        return loglik(x, sigma)[0]

    check_grads(value, (x, 0.1), order=1, modes=("fwd", "rev"))
    for sigma in (0.0, 0.1):
        np.testing.assert_allclose(
            np.asarray(loglik(x, sigma)[1]),
            np.asarray(jax.grad(value)(x, sigma)),
            rtol=1e-10,
            atol=1e-12,
        )


def test_score_line_integral_and_probability_flow_ode_gradients():
    prior = _prior()
    x0, x1 = _field(7), _field(8)

    @jax.jit
    def line(x0, x1):
        return jscore.score_line_integral(prior.score, x0, x1, 0.2, num_points=3)

    check_grads(line, (x0, x1), order=1, modes=("fwd", "rev"))
    # For a Gaussian the line integral is exact, so its gradient in x1 is the score at x1.
    np.testing.assert_allclose(
        np.asarray(jax.grad(line, argnums=1)(x0, x1)),
        np.asarray(prior.score(x1, 0.2)),
        rtol=1e-10,
        atol=1e-12,
    )

    @jax.jit
    def flow(x, sigma_start):
        return jscore.probability_flow_ode(prior.score, x, sigma_start, 0.0, num_steps=4)

    check_grads(flow, (x0, 0.4), order=1, modes=("fwd", "rev"))


def test_dsm_loss_gradients_in_the_data_and_the_network_parameters():
    model = jscore.ScoreMLP(3, hidden_features=(8,), rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rng = np.random.default_rng(9)
    # Random weights everywhere (the output layer starts at zero), in float64.
    params = jax.tree.map(
        lambda p: jnp.asarray(0.5 * rng.normal(size=p.shape)), nnx.to_pure_dict(params)
    )
    x = jnp.asarray(rng.normal(size=(4, 3)))
    sigma = jnp.asarray([0.2, 0.5, 1.0, 2.0])
    noise = jnp.asarray(rng.normal(size=(4, 3)))

    @jax.jit
    def loss(params, x, sigma, noise):
        net = nnx.merge(graphdef, nnx.State(params), rest)
        return jscore.dsm_loss(net, x, sigma, noise)

    check_grads(loss, (params, x, sigma, noise), order=1, modes=("fwd", "rev"))


def test_wiener_filters_and_conjugate_gradient_derivatives():
    prior = _prior()
    y = _field(10)
    power = prior.power

    @jax.jit
    def fourier_mean(y, power):
        return jscore.fourier_wiener_filter(y, power, 0.3)[0]

    check_grads(fourier_mean, (y, power), order=1, modes=("fwd", "rev"))
    # The iterative solvers run a while loop (forward mode only in JAX); converged to round-off,
    # their derivative is the solve of the derivative.
    mask = jnp.asarray(np.random.default_rng(11).random(SHAPE) < 0.7, jnp.float64)
    op = jscore.MaskOperator(mask)
    noise = jscore.DiagonalNoise(jnp.where(mask > 0, 0.3, jnp.inf))

    @jax.jit
    def wiener(y):
        return jscore.wiener_filter_cg(y, op.forward, op.adjoint, noise, prior, tol=1e-13)[0]

    check_grads(wiener, (y * mask,), order=1, modes=("fwd",))

    m = np.random.default_rng(12).normal(size=(7, 7))
    spd = jnp.asarray(m @ m.T + 7 * np.eye(7))

    @jax.jit
    def solve(b):
        return jscore.conjugate_gradient(lambda v: spd @ v, b, tol=1e-14)[0]

    check_grads(solve, (jnp.asarray(np.arange(7.0)),), order=1, modes=("fwd",))
