"""Exactness at the box edges (issue 12): round trips in both directions within 1e-6 of 0 and 1 at
init scales 0.1-3 in float32 and float64, normalisation at every scale, NaN parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jflows import ConditionalFlow, RampMixture, SigmoidMixture

SCALES = [0.1, 0.3, 1.0, 3.0]
# the default suite runs the extreme init scales; the middle ones run with `nox -s slow`
SCALE_PARAMS = [s if s in (0.1, 3.0) else pytest.param(s, marks=pytest.mark.slow) for s in SCALES]
SEEDS = [0, 1, 2]
EDGES = [0.0, 1e-9, 1e-7, 3e-7, 1e-6, 1.0 - 1e-6, 1.0 - 3e-7, 1.0 - 1e-7, 1.0]
FAMILIES = [
    pytest.param(SigmoidMixture(num_components=8), id="sigmoid"),
    pytest.param(RampMixture(num_components=8), id="ramp"),
]
# Round-trip bounds, (data -> base -> data, base -> data -> base). The second direction's error is
# f' times the spacing of the floats next to x (the map is as exact as x can be): with the slopes
# a >= 1 the steepest maps at scale 3 (large shifts b) have f' ~ 1e3, hence its bound there.
BOUNDS = {
    "float32": {0.1: (1e-5, 1e-5), 0.3: (1e-5, 1e-5), 1.0: (1e-5, 1e-5), 3.0: (1e-5, 5e-4)},
    "float64": dict.fromkeys(SCALES, (1e-12, 1e-12)),
}


def _grid(dtype):
    return jnp.concatenate([jnp.linspace(0.0, 1.0, 1001, dtype=dtype), jnp.asarray(EDGES, dtype)])


def _transform_errors(transform, scale, dtype):
    x1 = _grid(dtype)
    n = 12
    errors = []
    for seed in SEEDS:
        raw = scale * jax.random.normal(jax.random.key(seed), (n, 1, transform.num_params), dtype)
        raw = jnp.broadcast_to(raw, (n, x1.size, transform.num_params))
        x = jnp.broadcast_to(x1, (n, x1.size))
        forward, inverse = jax.jit(transform.forward), jax.jit(transform.inverse)
        there_and_back = inverse(forward(x, raw), raw)
        back_and_there = forward(inverse(x, raw), raw)
        assert there_and_back.dtype == back_and_there.dtype == dtype
        errors.append(
            (
                float(jnp.max(jnp.abs(there_and_back - x))),
                float(jnp.max(jnp.abs(back_and_there - x))),
            )
        )
    return np.max(np.asarray(errors), axis=0)


@pytest.mark.parametrize("transform", FAMILIES)
@pytest.mark.parametrize("scale", SCALE_PARAMS)
def test_transform_round_trips_float32(transform, scale):
    errors = _transform_errors(transform, scale, jnp.float32)
    assert errors[0] < BOUNDS["float32"][scale][0]
    assert errors[1] < BOUNDS["float32"][scale][1]


@pytest.mark.x64
@pytest.mark.parametrize("transform", FAMILIES)
@pytest.mark.parametrize("scale", SCALE_PARAMS)
def test_transform_round_trips_float64(transform, scale):
    errors = _transform_errors(transform, scale, jnp.float64)
    assert errors[0] < BOUNDS["float64"][scale][0]
    assert errors[1] < BOUNDS["float64"][scale][1]


# ---------------------------------------------------------------------------------- flows
def _flow(dim, context_dim, seed, scale):
    return ConditionalFlow(
        dim, context_dim, rngs=nnx.Rngs(seed), hidden=(16, 16), num_layers=3, init_scale=scale
    )


FLOW_BOUNDS = {
    "float32": {0.1: (1e-5, 1e-5), 0.3: (1e-5, 1e-5), 1.0: (1e-5, 1e-5), 3.0: (1e-5, 1e-4)},
    "float64": dict.fromkeys(SCALES, (1e-12, 1e-12)),
}


def _flow_round_trips(scale, dtype):
    v = jnp.concatenate([jnp.linspace(0.0, 1.0, 41, dtype=dtype), jnp.asarray(EDGES, dtype)])
    a, b = jnp.meshgrid(v, v, indexing="ij")
    points = jnp.stack([a.ravel(), b.ravel()], axis=-1)
    context = jnp.asarray([0.4], dtype)
    errors = []
    for seed in SEEDS[:2]:
        flow = _flow(2, 1, seed, scale)
        to_base = jax.jit(jax.vmap(lambda u, f=flow: f._to_base(u, context)[0]))
        from_base = jax.jit(jax.vmap(lambda z, f=flow: f._from_base(z, context)[0]))
        there_and_back = from_base(to_base(points))
        back_and_there = to_base(from_base(points))
        assert there_and_back.dtype == dtype
        errors.append(
            (
                float(jnp.max(jnp.abs(there_and_back - points))),
                float(jnp.max(jnp.abs(back_and_there - points))),
            )
        )
    return np.max(np.asarray(errors), axis=0)


@pytest.mark.parametrize("scale", SCALE_PARAMS)
def test_flow_round_trips_float32(scale):
    errors = _flow_round_trips(scale, jnp.float32)
    assert errors[0] < FLOW_BOUNDS["float32"][scale][0]
    assert errors[1] < FLOW_BOUNDS["float32"][scale][1]


@pytest.mark.x64
@pytest.mark.parametrize("scale", SCALE_PARAMS)
def test_flow_round_trips_float64(scale):
    errors = _flow_round_trips(scale, jnp.float64)
    assert errors[0] < FLOW_BOUNDS["float64"][scale][0]
    assert errors[1] < FLOW_BOUNDS["float64"][scale][1]


# Gauss-Legendre in logit coordinates t of the unit box, u = sigmoid(t): the nodes cluster at the
# edges, where the density of a flow with a < 1 concentrated mass (the old flows lost 3e-4 of it at
# init scale 1 and 3e-2 at 3 beyond the last float below 1); with the slopes bounded the density is
# bounded, so the mass beyond |t| = 37 (u within 1e-16 of an edge) is negligible.
def _logit_nodes(n_intervals, m):
    edges = np.linspace(-40.0, 37.0, n_intervals + 1)
    x, w = np.polynomial.legendre.leggauss(m)
    lo, hi = edges[:-1, None], edges[1:, None]
    t = ((lo + hi) / 2 + (hi - lo) / 2 * x).ravel()
    u = 1 / (1 + np.exp(-t))
    return u, u * (1 - u) * ((hi - lo) / 2 * w).ravel()


@pytest.mark.x64
@pytest.mark.parametrize("scale", SCALE_PARAMS)
def test_log_prob_integrates_to_one_1d_every_scale(scale):
    u, jac = _logit_nodes(1000, 16)
    for seed in SEEDS:
        flow = _flow(1, 0, seed, scale)
        p = np.exp(np.asarray(flow.log_prob(jnp.asarray(u[:, None]))))
        assert float(np.sum(p * jac)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.x64
@pytest.mark.parametrize("scale", SCALE_PARAMS)
def test_log_prob_integrates_to_one_2d_every_scale(scale):
    u, jac = _logit_nodes(60, 8)
    a, b = np.meshgrid(u, u, indexing="ij")
    theta = jnp.asarray(np.stack([a.ravel(), b.ravel()], axis=-1))
    for seed in SEEDS:
        flow = _flow(2, 1, seed, scale)
        p = np.exp(np.asarray(flow.log_prob(theta, jnp.asarray([0.4])))).reshape(a.shape)
        total = float(np.einsum("ij,i,j->", p, jac, jac))
        assert total == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------------------------- NaN
@pytest.mark.parametrize("transform", FAMILIES)
def test_nan_parameters_give_nan(transform):
    y = jnp.asarray([0.0, 1e-7, 0.5, 1.0 - 1e-7, 1.0])
    raw = jnp.full((5, transform.num_params), jnp.nan)
    assert bool(jnp.all(jnp.isnan(transform.inverse(y, raw))))
    assert bool(jnp.all(jnp.isnan(transform.forward(y, raw))))
    flow = ConditionalFlow(2, 1, rngs=nnx.Rngs(0), hidden=(8,), num_layers=2, transform=transform)
    params = nnx.state(flow, nnx.Param)
    nnx.update(flow, jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.nan), params))
    theta, log_q = flow.sample_and_log_prob(jax.random.key(0), jnp.asarray([0.3]), n=16)
    assert bool(jnp.all(jnp.isnan(theta)))
    assert bool(jnp.all(jnp.isnan(log_q)))
    assert bool(jnp.all(jnp.isnan(flow.log_prob(jnp.full((4, 2), 0.5), jnp.asarray([0.3])))))


def test_sigmoid_slopes_are_at_least_one():
    raw = -30.0 * jnp.ones((3, SigmoidMixture(num_components=2).num_params))
    a = SigmoidMixture(num_components=2).constrained(raw)["a"]
    assert float(jnp.min(a)) >= 1.0
    with pytest.raises(ValueError, match="min_slope"):
        SigmoidMixture(min_slope=0.5)
