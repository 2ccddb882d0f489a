"""The elementwise smooth mixtures: bijectivity, inverse accuracy, log-derivatives, implicit gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jflows import RampMixture, SigmoidMixture

FAMILIES = [
    pytest.param(SigmoidMixture(num_components=4), id="sigmoid"),
    pytest.param(RampMixture(num_components=4), id="ramp"),
    pytest.param(RampMixture(num_components=3, alpha=2.0), id="ramp-alpha2"),
]
FAMILIES_FAST_RAMP = [
    *FAMILIES[:2],
    pytest.param(FAMILIES[2].values[0], id="ramp-alpha2", marks=pytest.mark.slow),
]
# The same in the default run, the ramp families' costlier checks only in the slow run.
FAMILIES_FAST_SIGMOID = [
    FAMILIES[0],
    pytest.param(FAMILIES[1].values[0], id="ramp", marks=pytest.mark.slow),
    pytest.param(FAMILIES[2].values[0], id="ramp-alpha2", marks=pytest.mark.slow),
]

# Points over the whole domain, including the end points and points within 1e-6 of them.
EDGES = [0.0, 1e-7, 3e-7, 1e-6, 1.0 - 1e-6, 1.0 - 3e-7, 1.0 - 1e-7, 1.0]


def _grid(n, dtype):
    return jnp.concatenate([jnp.linspace(0.0, 1.0, n, dtype=dtype), jnp.asarray(EDGES, dtype)])


def _raw(key, transform, shape, scale, dtype):
    return scale * jax.random.normal(key, (*shape, transform.num_params), dtype)


def _mixed_scale_raw(key, transform, n, dtype):
    # Rows cycle through mild (0.3), moderate (1.5) and extreme (3: slopes up to ~10, c near 0.01)
    # parameters; the grid is repeated for each scale so every point meets every regime.
    scales = jnp.repeat(jnp.asarray([0.3, 1.5, 3.0], dtype), n)
    return scales[:, None] * jax.random.normal(key, (3 * n, transform.num_params), dtype)


@pytest.mark.parametrize("transform", FAMILIES_FAST_RAMP)
def test_inverse_float32_whole_domain(transform):
    x1 = _grid(4001, jnp.float32)
    x = jnp.tile(x1, 3)
    raw = _mixed_scale_raw(jax.random.PRNGKey(7), transform, x1.shape[0], jnp.float32)
    y = transform.forward(x, raw)
    x_back = jax.jit(transform.inverse)(y, raw)
    assert x_back.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(x_back - x))) < 1e-5


@pytest.mark.x64
@pytest.mark.parametrize("transform", FAMILIES_FAST_SIGMOID)
def test_inverse_float64(transform):
    x1 = _grid(1001, jnp.float64)
    x = jnp.tile(x1, 3)
    raw = _mixed_scale_raw(jax.random.PRNGKey(3), transform, x1.shape[0], jnp.float64)
    x_back = transform.inverse(transform.forward(x, raw), raw)
    assert float(jnp.max(jnp.abs(x_back - x))) < 1e-12


@pytest.mark.x64
@pytest.mark.parametrize("transform", FAMILIES_FAST_RAMP)
def test_end_points_and_strict_monotonicity(transform):
    x = jnp.linspace(0.0, 1.0, 20001)
    raw = jnp.broadcast_to(
        _raw(jax.random.PRNGKey(1), transform, (), 2.0, jnp.float64),
        (*x.shape, transform.num_params),
    )
    y = transform.forward(x, raw)
    assert float(y[0]) == 0.0
    assert float(y[-1]) == pytest.approx(1.0, abs=1e-15)
    assert bool(jnp.all(jnp.diff(y) > 0))
    # f' >= c bounds the slope from below: the chord slopes can't be smaller than c.
    c = float(transform.constrained(raw[0])["c"])
    assert float(jnp.min(jnp.diff(y) / jnp.diff(x))) >= c * (1 - 1e-9)


@pytest.mark.x64
@pytest.mark.parametrize("transform", FAMILIES_FAST_SIGMOID)
def test_log_derivative_matches_autodiff(transform):
    x = jnp.linspace(1e-3, 1 - 1e-3, 301)
    raw = _raw(jax.random.PRNGKey(2), transform, x.shape, 1.5, jnp.float64)
    slope = jax.vmap(jax.grad(transform.forward))(x, raw)
    np.testing.assert_allclose(
        transform.log_derivative(x, raw), jnp.log(slope), rtol=1e-10, atol=1e-10
    )
    _, inv_log_det = transform.inverse_and_log_det(transform.forward(x, raw), raw)
    np.testing.assert_allclose(inv_log_det, -jnp.log(slope), rtol=1e-9, atol=1e-9)


@pytest.mark.x64
@pytest.mark.parametrize("transform", FAMILIES_FAST_SIGMOID)
def test_check_grads_forward_inverse_log_det(transform):
    x = jnp.array([0.02, 0.3, 0.55, 0.97])
    raw = _raw(jax.random.PRNGKey(4), transform, x.shape, 1.0, jnp.float64)
    y = transform.forward(x, raw)
    kw = {"order": 1, "modes": ("fwd", "rev"), "atol": 1e-5, "rtol": 1e-5, "eps": 1e-6}
    # Both outputs (value, log-det) of each direction, w.r.t. the input and the parameters.
    check_grads(jax.jit(transform.forward_and_log_det), (x, raw), **kw)
    check_grads(jax.jit(transform.inverse_and_log_det), (y, raw), **kw)


@pytest.mark.slow
@pytest.mark.x64
def test_inverse_second_order_grads():
    transform = SigmoidMixture(num_components=3)
    raw = _raw(jax.random.PRNGKey(5), transform, (3,), 1.0, jnp.float64)
    y = jnp.array([0.1, 0.5, 0.8])
    kw = {"order": 2, "modes": ("fwd", "rev"), "atol": 1e-5, "rtol": 1e-5, "eps": 1e-5}
    check_grads(jax.jit(transform.inverse), (y, raw), **kw)


def _analytic_inverse(y, a_raw, b_raw):
    # One sigmoid component with c -> 0: f(x) = sigmoid(a (logit x + b)), so
    # x = sigmoid(logit(y) / a - b); a = 1 + softplus(a_raw + log(expm1(1))) and the single
    # component's shift is b_raw (SigmoidMixture's parameterisation, written out independently).
    a = 1.0 + jax.nn.softplus(a_raw + math.log(math.expm1(1.0)))
    return jax.nn.sigmoid((jnp.log(y) - jnp.log1p(-y)) / a - b_raw)


@pytest.mark.x64
def test_implicit_gradient_equals_analytic_inverse_gradient():
    transform = SigmoidMixture(num_components=1, min_linear=0.0)

    def implicit(y, a_raw, b_raw):
        raw = jnp.stack([a_raw, b_raw, jnp.zeros_like(y), jnp.full_like(y, -60.0)], axis=-1)
        return transform.inverse(y, raw)

    y = jnp.array([1e-4, 0.2, 0.5, 0.9, 1 - 1e-4])
    a_raw = jnp.array([0.3, -0.5, 1.0, 0.0, 0.7])
    b_raw = jnp.array([-1.0, 0.5, 0.0, 2.0, -0.3])
    np.testing.assert_allclose(
        implicit(y, a_raw, b_raw), _analytic_inverse(y, a_raw, b_raw), rtol=1e-10
    )
    args = (y, a_raw, b_raw)
    grads_implicit = jax.vmap(jax.grad(implicit, argnums=(0, 1, 2)))(*args)
    grads_analytic = jax.vmap(jax.grad(_analytic_inverse, argnums=(0, 1, 2)))(*args)
    for g_implicit, g_analytic in zip(grads_implicit, grads_analytic, strict=True):
        np.testing.assert_allclose(g_implicit, g_analytic, rtol=1e-9, atol=1e-14)
    # forward mode: one JVP with unit tangents on all three arguments sums the partials
    ones = tuple(jnp.ones_like(v) for v in args)
    jvp_implicit = jax.jvp(implicit, args, ones)[1]
    np.testing.assert_allclose(jvp_implicit, sum(grads_analytic), rtol=1e-9, atol=1e-14)


def _count(jaxpr_text, names):
    return sum(jaxpr_text.count(f"{name}[") for name in names)


def test_inverse_gradient_does_not_differentiate_the_iterations():
    transform = SigmoidMixture(num_components=2)
    raw = jnp.zeros((3, transform.num_params))
    y = jnp.array([0.2, 0.5, 0.7])
    loops = ("scan", "while")
    n_primal = _count(str(jax.make_jaxpr(transform.inverse)(y, raw)), loops)
    grad = jax.grad(lambda y, r: jnp.sum(transform.inverse(y, r)), argnums=(0, 1))
    n_grad = _count(str(jax.make_jaxpr(grad)(y, raw)), loops)
    assert n_primal == 1  # the bisection/Newton loop
    assert n_grad == n_primal  # the primal solve only: no transposed (unrolled) loops


def test_invalid_configuration_and_shapes():
    with pytest.raises(ValueError, match="num_components"):
        SigmoidMixture(num_components=0)
    with pytest.raises(ValueError, match="min_linear"):
        SigmoidMixture(min_linear=1.0)
    with pytest.raises(ValueError, match="alpha"):
        RampMixture(alpha=0.0)
    transform = SigmoidMixture(num_components=2)
    with pytest.raises(ValueError, match="raw parameters must have shape"):
        transform.forward(jnp.zeros(3), jnp.zeros((3, 5)))
