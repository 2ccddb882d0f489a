"""Acceptance (slow, minutes of CPU): a score network trained by DSM on the toy distributions, sampled
with the probability-flow ODE, is hard to tell from exact samples (the federation's C2ST,
`jflows.c2st` on flattened rotation matrices, <= 0.6)."""

import time

import jax
import pytest
from flax import nnx

import jflows
import jso3


def _train_and_compare(dist, *, num_steps, seed=0):
    key_data, key_train, key_sample, key_true, key_c2st = jax.random.split(jax.random.key(seed), 5)
    data = dist.sample(key_data, (50000,))
    model = jso3.ScoreNet(hidden=128, depth=3, rngs=nnx.Rngs(seed))
    start = time.perf_counter()
    model, history = jso3.train_dsm(
        key_train, model, data, sigma_min=0.03, sigma_max=3.0, num_steps=num_steps,
        batch_size=256, learning_rate=2e-3, steps_per_call=500, num_grid=256, progress=False,
    )  # fmt: skip
    losses = history["loss"]
    train_s = time.perf_counter() - start
    sample = jax.jit(
        lambda key: jso3.sample_from_score(
            key, lambda R, s: model(R, s), (4000,), sigma_max=3.0, sigma_min=0.03,
            num_steps=200, sampler="ode",
        )
    )  # fmt: skip
    R_model = sample(key_sample)
    R_true = dist.sample(key_true, (4000,))
    with jax.numpy_rank_promotion("allow"):  # jflows' classifier broadcasts its biases
        result = jflows.c2st(key_c2st, R_model.reshape(-1, 9), R_true.reshape(-1, 9))
    accuracy = result.accuracy
    print(f"{type(dist).__name__}: train {train_s:.0f} s, final loss {losses[-500:].mean():.4f}, "
          f"C2ST {accuracy:.3f}")  # fmt: skip
    return accuracy


@pytest.mark.slow
def test_four_blobs_c2st():
    assert _train_and_compare(jso3.four_blobs(), num_steps=6000) <= 0.6


@pytest.mark.slow
def test_checkerboard_c2st():
    assert _train_and_compare(jso3.Checkerboard(), num_steps=6000) <= 0.6
