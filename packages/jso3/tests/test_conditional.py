"""Conditional DSM with the equivariant graph network: a toy whose orientations scatter around an axis
that only the neighbours' positions reveal (two marked neighbours on either side of the object along
the axis, plus isotropic clutter). The trained model must reproduce the alignment statistic
`mean |cos(R e_z, axis)|`, known from the construction, on held-out neighbourhoods."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import jso3

SIGMA_TRUE = 0.3


def _toy(key, n, n_clutter=4, half_length=2.0):
    k_axis, k_jitter, k_clutter, k_frame, k_noise, k_center = jax.random.split(key, 6)
    axis = jax.random.normal(k_axis, (n, 3))
    axis = axis / jnp.linalg.norm(axis, axis=-1, keepdims=True)
    center = 100.0 * jax.random.uniform(k_center, (n, 3))
    marked = half_length * jnp.stack([axis, -axis], axis=1)
    marked = marked + 0.2 * jax.random.normal(k_jitter, (n, 2, 3))
    clutter = 2.0 * jax.random.normal(k_clutter, (n, n_clutter, 3))
    positions = center[:, None, :] + jnp.concatenate([marked, clutter], axis=1)
    features = jnp.concatenate([jnp.ones((n, 2, 1)), jnp.zeros((n, n_clutter, 1))], axis=1)
    nb = jso3.Neighbourhood(center, positions, features, jnp.ones(positions.shape[:2]))
    # a Haar rotation turned so that its z column is the axis (uniform spin about it), then noise
    U = jso3.sample_uniform(k_frame, (n,))
    z = U[:, :, 2]
    cross = jnp.cross(z, axis)
    angle = jnp.arctan2(jnp.linalg.norm(cross, axis=-1), jnp.sum(z * axis, axis=-1))
    turn = jso3.exp(cross / jnp.linalg.norm(cross, axis=-1, keepdims=True) * angle[:, None])
    R = jso3.IGSO3.from_sigma(SIGMA_TRUE).sample(k_noise, (n,)) @ turn @ U
    return nb, R, axis


def _alignment(R, axis):
    return float(jnp.mean(jnp.abs(jnp.sum(R[:, :, 2] * axis, axis=-1))))


@pytest.mark.slow
def test_conditional_dsm_learns_an_alignment_seen_only_through_neighbours():
    nb, R, _ = _toy(jax.random.key(0), 2000)
    nb_test, _, axis_test = _toy(jax.random.key(1), 1000)
    # truth: cos(R e_z, axis) = axis . N axis with N the IGSO(3) noise, whose law does not depend on
    # the axis (isotropy), so the statistic is E |N_zz| (Monte Carlo, 200000 draws)
    noise = jso3.IGSO3.from_sigma(SIGMA_TRUE).sample(jax.random.key(4), (200_000,))
    truth = float(jnp.mean(jnp.abs(noise[:, 2, 2])))
    gnn = jso3.EGNN(
        1, hidden=16, num_layers=1, num_scalars=8, num_vectors=2, num_tensors=4,
        length_scale=2.0, rngs=nnx.Rngs(0),
    )  # fmt: skip
    model = jso3.ConditionalScoreNet(gnn, hidden=64, depth=2, rngs=nnx.Rngs(1))
    model, _ = jso3.train_dsm(
        jax.random.key(2), model, R, context=nb, sigma_min=0.05, sigma_max=3.0, num_steps=600,
        batch_size=128, learning_rate=2e-3, steps_per_call=300, progress=False,
    )  # fmt: skip
    samples = jax.jit(
        lambda key: jso3.sample_conditional(
            key, model, nb_test, sigma_min=0.05, num_steps=100, sampler="ode"
        )
    )(jax.random.key(3))
    learned = _alignment(samples, axis_test)
    assert abs(learned - truth) < 0.05 * truth, (learned, truth)
    # unaligned axes would give 0.5: the samples follow their own neighbourhood
    assert _alignment(samples, jnp.roll(axis_test, 1, axis=0)) < 0.6
