"""The optional distrax adapter (skipped when distrax is not installed)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflows import SigmoidMixture, to_distrax

with warnings.catch_warnings():
    # tensorflow-probability (under distrax) touches deprecated JAX names at import time
    warnings.simplefilter("ignore", DeprecationWarning)
    distrax = pytest.importorskip("distrax")


def test_distrax_bijector_round_trip_and_density():
    transform = SigmoidMixture(num_components=3)
    raw = jax.random.normal(jax.random.PRNGKey(0), (2, transform.num_params))
    bijector = to_distrax(transform, raw)
    x = jnp.array([[0.2, 0.7], [0.4, 0.9], [0.1, 0.3]])  # broadcast against the batch (2,)
    y, log_det = bijector.forward_and_log_det(x)
    assert y.shape == log_det.shape == (3, 2)
    np.testing.assert_allclose(bijector.inverse(y), x, atol=1e-5)
    # a flow on the unit square: closed-form density through distrax.Inverse, against autodiff
    base = distrax.Independent(distrax.Uniform(jnp.zeros(2), jnp.ones(2)), 1)
    flow = distrax.Transformed(base, distrax.Block(distrax.Inverse(bijector), 1))
    slopes = jax.vmap(jax.vmap(jax.grad(lambda x, r: transform.forward(x, r))))(
        x, jnp.broadcast_to(raw, (3, *raw.shape))
    )
    # (vmapped: distrax's Uniform broadcasts by rank promotion, which our test config forbids)
    log_prob = jax.vmap(flow.log_prob)(x)
    np.testing.assert_allclose(log_prob, jnp.sum(jnp.log(slopes), axis=-1), rtol=1e-5)
    with jax.numpy_rank_promotion("allow"):
        samples = flow.sample(seed=jax.random.PRNGKey(1), sample_shape=(5,))
    assert samples.shape == (5, 2)


def test_to_distrax_rejects_bad_parameters():
    with pytest.raises(ValueError, match="raw must have shape"):
        to_distrax(SigmoidMixture(num_components=2), jnp.zeros((2, 3)))
