"""NaN poisoning: inside `jit` an invalid traced parameter (filter network, PGD, cosmology) makes
the hybrid run's positions and the loss (value and gradient) NaN, never a finite wrong answer.

Each test compiles its jitted function once and feeds it every poisoned input in turn."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jpm_hybrid as jh

STEPS = 2

# the filter's layers: hidden, the value head (spline coefficients), the spacing head (knots; a NaN
# there once gave a finite answer: the B-spline skipped NaN knot spans as empty)
FILTER_LEAVES = [
    ("hidden1", "kernel"),
    ("hidden2", "bias"),
    ("values", "kernel"),
    ("spacings", "bias"),
    ("spacings", "kernel"),
]


def _poison(tree, path):
    """A copy of the pure dict `tree` with the first entry of the leaf at `path` set to NaN."""
    tree = jax.tree.map(jnp.array, tree)
    node = tree
    for key in path[:-1]:
        node = node[key]
    leaf = node[path[-1]]
    node[path[-1]] = leaf.ravel().at[0].set(jnp.nan).reshape(leaf.shape)
    return tree


def _nan_count(tree):
    return jax.tree.map(lambda g: int(jnp.isnan(g).sum()), tree)


def _every_leaf_has_nan(tree):
    return all(bool(jnp.isnan(leaf).any()) for leaf in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def filter_setup():
    model = jh.SplineFilter(rngs=nnx.Rngs(2))
    graphdef, params = nnx.split(model, nnx.Param)
    return model, graphdef, nnx.to_pure_dict(params)


def test_nan_in_bspline_knots_or_coefficients_gives_nan_value_and_gradient():
    knots = jnp.concatenate([jnp.zeros(3), jnp.linspace(0.0, 1.0, 5), jnp.ones(3)])
    coefficients = jnp.linspace(0.0, 1.0, 7)
    u = jnp.linspace(0.0, 0.99, 11)
    assert bool(jnp.isfinite(jh.bspline(u, knots, coefficients)).all())

    def total(k, c):
        return jnp.sum(jh.bspline(u, k, c))

    for bad_knots, bad_coefficients in [
        (knots.at[4:7].set(jnp.nan), coefficients),  # every inner knot but the ends
        (knots, jnp.full_like(coefficients, jnp.nan)),
    ]:
        value = jh.bspline(u, bad_knots, bad_coefficients)
        assert bool(jnp.isnan(value).all()), value
        # (the spline is linear in the coefficients: its gradient with respect to them is the
        # basis, finite for finite knots; NaN flows to the other argument)
        grads = jax.grad(total, argnums=(0, 1))(bad_knots, bad_coefficients)
        assert any(bool(jnp.isnan(g).any()) for g in grads), grads
    # one NaN knot: NaN wherever the spline depends on it (a cubic's support is 4 spans)
    value = jh.bspline(u, knots.at[5].set(jnp.nan), coefficients)
    assert bool(jnp.isnan(value).all()), value


def test_nan_filter_parameter_gives_nan_positions(filter_setup, helpers, coarse_domain):
    _, graphdef, params = filter_setup
    state = helpers.initial(coarse_domain)

    @jax.jit
    def run(p):
        model = nnx.merge(graphdef, nnx.State(p))
        return jh.hybrid_nbody(
            helpers.cosmo, state, coarse_domain, [1.0], model, steps=STEPS
        ).snapshots.positions

    assert bool(jnp.isfinite(run(params)).all())
    for leaf in FILTER_LEAVES:
        x = run(_poison(params, leaf))
        assert bool(jnp.isnan(x).all()), f"NaN in {leaf}: {int(jnp.isnan(x).sum())} of {x.size}"


def test_nan_filter_parameter_gives_nan_loss_and_gradient(filter_setup, tiny_truth):
    truth, _ = tiny_truth
    model, _, _ = filter_setup
    loss, params = jh.make_loss(model, truth, steps=STEPS)
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    value, grad = value_and_grad(params)
    assert np.isfinite(float(value))
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grad))
    for leaf in [("values", "kernel"), ("spacings", "bias")]:
        value, grad = value_and_grad(_poison(params, leaf))
        assert np.isnan(float(value)), leaf
        assert _every_leaf_has_nan(grad), (leaf, _nan_count(grad))


def test_nan_pgd_parameter_gives_nan_positions_loss_and_gradient(tiny_truth):
    truth, _ = tiny_truth
    pgd = jh.PGDCorrection(0.3, 3.0, alpha=0.5)
    graphdef, _ = nnx.split(pgd, nnx.Param)

    @jax.jit
    def run(p):
        model = nnx.merge(graphdef, nnx.State(p))
        return jh.hybrid_nbody(
            truth.cosmo, truth.initial, truth.domain, [1.0], model, steps=STEPS
        ).snapshots.positions

    loss, params = jh.make_loss(pgd, truth, steps=STEPS)
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    assert bool(jnp.isfinite(run(params)).all())
    assert np.isfinite(float(value_and_grad(params)[0]))
    for name in ["alpha", "log_k_l", "log_k_s"]:
        bad = dict(params, **{name: jnp.asarray(jnp.nan, params[name].dtype)})
        assert bool(jnp.isnan(run(bad)).all()), name
        value, grad = value_and_grad(bad)
        assert np.isnan(float(value)), name
        assert _every_leaf_has_nan(grad), (name, grad)


# the parameters the PM run depends on (radiation is neglected, so `h`, `n_s` and `sigma8` do not
# enter the dynamics of a given initial state: a NaN there leaves the run finite and correct;
# `sigma8` enters the conditioned filter, below)
def test_nan_cosmology_parameter_gives_nan_positions(helpers, coarse_domain):
    state = helpers.initial(coarse_domain)
    model = jh.SplineFilter(rngs=nnx.Rngs(2))  # concrete, closed over: checked at trace time

    @jax.jit
    def run(cosmo):
        return jh.hybrid_nbody(
            cosmo, state, coarse_domain, [1.0], model, steps=STEPS
        ).snapshots.positions

    as_arrays = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), helpers.cosmo)
    assert bool(jnp.isfinite(run(as_arrays)).all())
    for field in ["Omega_c", "Omega_b", "w0", "wa"]:
        bad = dataclasses.replace(as_arrays, **{field: jnp.asarray(jnp.nan, jnp.float32)})
        x = run(bad)
        assert bool(jnp.isnan(x).all()), f"NaN {field}: {int(jnp.isnan(x).sum())} of {x.size}"


def test_nan_sigma8_poisons_the_conditioned_filter(helpers, coarse_domain):
    state = helpers.initial(coarse_domain)
    model = jh.SplineFilter(jh.FilterConfig(conditioned=True), rngs=nnx.Rngs(1))

    @jax.jit
    def run(sigma8):
        cosmo = dataclasses.replace(helpers.cosmo, sigma8=sigma8)
        return jh.hybrid_nbody(
            cosmo, state, coarse_domain, [1.0], model, steps=STEPS
        ).snapshots.positions

    assert bool(jnp.isfinite(run(jnp.asarray(0.8, jnp.float32))).all())
    assert bool(jnp.isnan(run(jnp.asarray(jnp.nan, jnp.float32))).all())


def test_eager_nan_filter_is_refused_before_the_run(filter_setup, helpers, coarse_domain):
    _, graphdef, params = filter_setup
    model = nnx.merge(graphdef, nnx.State(_poison(params, ("spacings", "bias"))))
    report = jh.force_reversal(model, coarse_domain, [0.5, 1.0])
    assert np.isnan(report.min_multiplier)
    with pytest.raises(ValueError, match="not finite"):
        jh.check_force_reversal(model, coarse_domain, [0.5, 1.0])
    state = helpers.initial(coarse_domain)
    with pytest.raises(ValueError, match="not finite"):
        jh.hybrid_nbody(helpers.cosmo, state, coarse_domain, [1.0], model, steps=STEPS)
