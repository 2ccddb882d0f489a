"""Classifier two-sample test (C2ST) for rotations.

Features are the flattened rotation matrices (9 numbers: a continuous, injective representation of
SO(3), unlike Euler angles or quaternions with their sign ambiguity). Each sample is split in half; a
one-hidden-layer MLP is trained by full-batch Adam (logistic loss) on one half of both samples and its
accuracy is measured on the other half. Under the null (same distribution) the held-out accuracy has
mean 0.5 and standard deviation about `0.5 / sqrt(n_test)`; clearly different distributions give ~1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from ._checks import check_matrix


def _mlp(params, x):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    h = jnp.tanh(h @ params["w2"] + params["b2"])
    return (h @ params["w3"] + params["b3"])[..., 0]


@functools.partial(jax.jit, static_argnums=(3, 4))
def _fit_and_score(key, x_train, y_train, hidden, num_steps, x_test, y_test, learning_rate):
    k1, k2, k3 = jax.random.split(key, 3)
    d = x_train.shape[-1]
    dtype = x_train.dtype
    params = {
        "w1": jax.random.normal(k1, (d, hidden), dtype) / jnp.sqrt(d),
        "b1": jnp.zeros((1, hidden), dtype),
        "w2": jax.random.normal(k2, (hidden, hidden), dtype) / jnp.sqrt(hidden),
        "b2": jnp.zeros((1, hidden), dtype),
        "w3": jax.random.normal(k3, (hidden, 1), dtype) / jnp.sqrt(hidden),
        "b3": jnp.zeros((1, 1), dtype),
    }
    tx = optax.adam(learning_rate)

    def loss_fn(p):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(_mlp(p, x_train), y_train))

    def step(carry, _):
        p, s = carry
        grads = jax.grad(loss_fn)(p)
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=num_steps)
    predictions = _mlp(params, x_test) > 0
    return jnp.mean(predictions == (y_test > 0.5))


def c2st(key, R_a, R_b, *, hidden: int = 64, num_steps: int = 1000, learning_rate: float = 1e-2):
    """Classifier two-sample test accuracy between two samples of rotations.

    **Arguments:**

    - `key`: a `jax.random` key (shuffling and classifier initialisation).
    - `R_a`, `R_b`: rotations, shapes `(n_a, 3, 3)` and `(n_b, 3, 3)`; the larger one is truncated
      to the size of the smaller (balanced classes), each needs >= 4 rotations.
    - `hidden`: width of the two hidden layers of the classifier.
    - `num_steps`: full-batch Adam steps.
    - `learning_rate`: Adam learning rate.

    **Returns:**

    The held-out accuracy, a scalar in `[0, 1]`: about 0.5 when the samples come from the same
    distribution, close to 1 when they are easy to tell apart.
    """
    check_matrix(R_a, "R_a")
    check_matrix(R_b, "R_b")
    R_a, R_b = jnp.asarray(R_a), jnp.asarray(R_b)
    if R_a.ndim != 3 or R_b.ndim != 3:
        raise ValueError(f"samples must have shape (n, 3, 3), got {R_a.shape} and {R_b.shape}.")
    n = min(R_a.shape[0], R_b.shape[0])
    if n < 4:
        raise ValueError(f"each sample needs at least 4 rotations, got {n}.")
    dtype = jnp.result_type(R_a.dtype, R_b.dtype, float)
    key_a, key_b, key_fit = jax.random.split(key, 3)
    x_a = jax.random.permutation(key_a, R_a.reshape(-1, 9).astype(dtype))[:n]
    x_b = jax.random.permutation(key_b, R_b.reshape(-1, 9).astype(dtype))[:n]
    half = n // 2
    x_train = jnp.concatenate([x_a[:half], x_b[:half]])
    y_train = jnp.concatenate([jnp.zeros(half, dtype), jnp.ones(half, dtype)])
    x_test = jnp.concatenate([x_a[half:], x_b[half:]])
    y_test = jnp.concatenate([jnp.zeros(n - half, dtype), jnp.ones(n - half, dtype)])
    return _fit_and_score(
        key_fit, x_train, y_train, int(hidden), int(num_steps), x_test, y_test, learning_rate
    )
