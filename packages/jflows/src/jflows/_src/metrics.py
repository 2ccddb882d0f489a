"""Classifier two-sample test (C2ST)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

__all__ = ["c2st"]


def _init_mlp(key, sizes, dtype):
    params = []
    keys = jax.random.split(key, len(sizes) - 1)
    for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True):
        w = jax.random.normal(k, (m, n), dtype) * jnp.sqrt(2.0 / m)  # He initialisation (ReLU)
        params.append((w, jnp.zeros((1, n), dtype)))
    return params


def _logit(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return (x @ w + b)[..., 0]


@functools.partial(jax.jit, static_argnames=("hidden", "steps", "folds", "batch_size"))
def _c2st(feats, labels, key, *, hidden, steps, folds, batch_size, learning_rate, weight_decay):
    n, d = feats.shape
    key_perm, key_init = jax.random.split(key)
    fold = jax.random.permutation(key_perm, n) % folds  # balanced random fold assignment
    sizes = (d, *hidden, 1)
    tx = optax.adamw(learning_rate, weight_decay=weight_decay)

    def train_and_score(k, init_key):
        is_train = fold != k
        n_train = jnp.sum(is_train)
        train_rows = jnp.argsort(~is_train, stable=True)  # this fold's training rows first

        def loss(params, idx):
            if idx is None:  # full batch
                bce = optax.sigmoid_binary_cross_entropy(_logit(params, feats), labels)
                return jnp.sum(is_train * bce) / n_train
            return jnp.mean(
                optax.sigmoid_binary_cross_entropy(_logit(params, feats[idx]), labels[idx])
            )

        init_key, batch_key = jax.random.split(init_key)
        params = _init_mlp(init_key, sizes, feats.dtype)

        def step(carry, step_key):
            params, state = carry
            idx = None
            if batch_size is not None:  # a minibatch of the training rows, drawn with replacement
                idx = train_rows[jax.random.randint(step_key, (batch_size,), 0, n_train)]
            grads = jax.grad(loss)(params, idx)
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(
            step, (params, tx.init(params)), jax.random.split(batch_key, steps)
        )
        correct = (_logit(params, feats) > 0) == (labels > 0.5)
        return jnp.sum(jnp.where(fold == k, correct, False))

    correct = jax.vmap(train_and_score)(jnp.arange(folds), jax.random.split(key_init, folds))
    return jnp.sum(correct) / n


def c2st(
    samples_p,
    samples_q,
    *,
    key,
    folds: int = 5,
    hidden: tuple[int, ...] | None = None,
    steps: int = 10_000,
    batch_size: int | None = 200,
    learning_rate: float = 1e-2,
    weight_decay: float = 0.0,
) -> jax.Array:
    """Classifier two-sample test: cross-validated accuracy of a classifier telling `p` from `q`.

    The pooled samples are standardised (pooled mean and standard deviation per feature), labelled
    0 (`p`) and 1 (`q`), split at random into `folds` folds; for each fold a ReLU MLP (default two
    hidden layers of `10 * d` units, as in sbibm's C2ST) is trained by AdamW on random minibatches of
    the other folds for `steps` steps, and the accuracy is counted on the held-out fold. The folds
    train in parallel (`vmap`) inside one compiled call. 0.5 means indistinguishable (up to a
    statistical error of about `0.5 / sqrt(n_p + n_q)`), 1.0 perfectly separable.

    A C2ST is only as sensitive as its classifier: on the two-moons posterior against a copy with
    1.5x wider crescents (Bayes accuracy 0.597) this one reaches 0.571 with 4000 + 4000 samples
    (tested), while a tanh MLP trained full-batch for 300 steps stayed at 0.50. Use a few thousand
    samples per side (sbibm uses 10000).

    **Arguments:**

    - `samples_p`, `samples_q`: arrays `(n_p, d)` and `(n_q, d)` (use equal sizes; the accuracy of
      a constant guess is `max(n_p, n_q) / (n_p + n_q)`).
    - `key`: a `jax.random` key (fold assignment, initialisation, minibatches).
    - `folds`: number of cross-validation folds (>= 2).
    - `hidden`: hidden widths (default `(10 d, 10 d)`).
    - `steps`: optimisation steps per fold.
    - `batch_size`: minibatch size (drawn with replacement from the training rows); `None`: full
      batch.
    - `learning_rate`, `weight_decay`: AdamW settings.

    **Returns:**

    The held-out accuracy, a scalar in `[0, 1]`.
    """
    p = jnp.asarray(samples_p)
    q = jnp.asarray(samples_q)
    if p.ndim != 2 or q.ndim != 2 or p.shape[1] != q.shape[1]:
        raise ValueError(f"samples must have shapes (n_p, d), (n_q, d), got {p.shape}, {q.shape}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if not isinstance(folds, int) or folds < 2 or folds > p.shape[0] + q.shape[0]:
        raise ValueError(f"folds must be an int in [2, n_p + n_q], got {folds!r}")
    dtype = jnp.result_type(p.dtype, q.dtype, float)
    feats = jnp.concatenate([p, q]).astype(dtype)
    mean, std = feats.mean(axis=0, keepdims=True), feats.std(axis=0, keepdims=True)
    feats = (feats - mean) / (std + jnp.finfo(dtype).tiny ** 0.25)
    labels = jnp.concatenate([jnp.zeros(p.shape[0], dtype), jnp.ones(q.shape[0], dtype)])
    d = p.shape[1]
    hidden = (10 * d, 10 * d) if hidden is None else tuple(int(h) for h in hidden)
    return _c2st(
        feats,
        labels,
        key,
        hidden=hidden,
        steps=int(steps),
        folds=folds,
        batch_size=None if batch_size is None else int(batch_size),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
    )
