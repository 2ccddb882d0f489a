"""Denoising score matching (DSM) on SO(3): a score network, the DSM loss, training, checkpoints and
sampling with a learned score.

DSM. A clean rotation `R0` is noised as `R = exp(hat(v)) @ R0` with `v` the tangent vector of an
IGSO(3)(identity, eps = sigma^2 / 2) sample. The perturbation kernel `p(R | R0)` is IGSO(3)(R0, eps), whose
world-frame score at `R` is `igso3_tangent_score(v, eps)`: that is the regression target, and its
minimiser over score functions is the score of the noised data density (Vincent 2011). The noise scale
is drawn log-uniformly in `[sigma_min, sigma_max]`, one per example, and the loss is weighted by
`sigma^2`: for small `sigma` the target is `-v / sigma^2` with `|v| ~ sigma`, so `sigma^2 |s - target|^2 =
|sigma s - sigma target|^2` has an `O(1)` scale at every noise level. The network predicts `sigma * score`
(its output is divided by `sigma`), so the weighted loss is a plain squared error on the raw output.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ._checks import check_matrix, check_positive, concrete_or_none
from .igso3 import igso3_sample_angle, igso3_tangent_score
from .ode import probability_flow_sample, reverse_sde_sample, sigma_schedule
from .so3 import exp, sample_uniform


def _check_sigma_range(sigma_min, sigma_max) -> None:
    check_positive(sigma_min, "sigma_min")
    check_positive(sigma_max, "sigma_max")
    lo, hi = concrete_or_none(sigma_min), concrete_or_none(sigma_max)
    if lo is None or hi is None:  # traced: checked when concrete
        return
    if np.shape(lo) != () or np.shape(hi) != ():
        raise ValueError(f"sigma_min and sigma_max must be scalars, got {lo!r} and {hi!r}.")
    if not lo < hi:
        raise ValueError(f"need sigma_min < sigma_max, got {sigma_min!r} and {sigma_max!r}.")


def _mlp_head(in_dim: int, hidden: int, depth: int, rngs: nnx.Rngs):
    """`depth` hidden `Linear` layers of width `hidden` and a small-initialised 3-vector output
    (the tangent score), shared by `ScoreNet` and `ConditionalScoreNet`."""
    dims = [in_dim] + [hidden] * depth
    layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(dims)])
    out = nnx.Linear(
        hidden,
        3,
        kernel_init=nnx.initializers.variance_scaling(0.1, "fan_in", "normal"),
        rngs=rngs,
    )
    return layers, out


class ScoreNet(nnx.Module):
    """MLP score model `s(R, sigma[, context])` on SO(3), returning world-frame tangent vectors.

    Input features: the flattened rotation matrix (9 numbers), a Fourier embedding of `log sigma`
    (`log sigma` and `sin`/`cos` of `2^k log sigma`, `k < num_fourier`), and the context vector if the
    model has one. The MLP output `u` (3 numbers) is returned as `u / sigma`, i.e. the network
    predicts `sigma * score`, which is `O(1)` at every noise level (see the module docstring).

    **Arguments:**

    - `context_dim`: size of the context vector (0: unconditional).
    - `hidden`: width of the hidden layers.
    - `depth`: number of hidden layers.
    - `num_fourier`: number of Fourier frequencies of the `log sigma` embedding.
    - `rngs`: `flax.nnx.Rngs` for the initialisation.
    """

    def __init__(
        self,
        *,
        context_dim: int = 0,
        hidden: int = 128,
        depth: int = 3,
        num_fourier: int = 4,
        rngs: nnx.Rngs,
    ):
        if context_dim < 0 or hidden < 1 or depth < 1 or num_fourier < 0:
            raise ValueError(
                f"invalid ScoreNet sizes: context_dim={context_dim}, hidden={hidden}, "
                f"depth={depth}, num_fourier={num_fourier}."
            )
        self.context_dim = context_dim
        self.num_fourier = num_fourier
        self.layers, self.out = _mlp_head(
            9 + 1 + 2 * num_fourier + context_dim, hidden, depth, rngs
        )

    def __call__(self, R, sigma, context=None):
        """Evaluate the score.

        **Arguments:**

        - `R`: rotations, shape `(..., 3, 3)`.
        - `sigma`: noise scales > 0, broadcastable to `R.shape[:-2]`.
        - `context`: shape `(..., context_dim)` (broadcastable batch), required iff `context_dim > 0`.

        **Returns:**

        World-frame tangent scores of shape `(..., 3)`.
        """
        check_matrix(R, "R")
        R = jnp.asarray(R)
        batch = R.shape[:-2]
        sigma = jnp.broadcast_to(jnp.asarray(sigma, R.dtype), batch)
        log_sigma = jnp.log(sigma)[..., None]
        freqs = 2.0 ** jnp.arange(self.num_fourier, dtype=R.dtype).reshape(
            (1,) * len(batch) + (-1,)
        )
        features = [R.reshape(*batch, 9), log_sigma]
        if self.num_fourier:
            features += [jnp.sin(freqs * log_sigma), jnp.cos(freqs * log_sigma)]
        if self.context_dim:
            if context is None:
                raise ValueError(f"this ScoreNet needs a context of size {self.context_dim}.")
            context = jnp.asarray(context, R.dtype)
            if context.shape[-1:] != (self.context_dim,):
                raise ValueError(
                    f"`context` must have shape (..., {self.context_dim}), got {context.shape}."
                )
            features.append(jnp.broadcast_to(context, (*batch, self.context_dim)))
        elif context is not None:
            raise ValueError("this ScoreNet has context_dim=0 but a context was given.")
        h = jnp.concatenate(features, axis=-1)
        for layer in self.layers:
            h = nnx.gelu(layer(h))
        return self.out(h) / sigma[..., None]


def _noise(key, R0, sigma_min, sigma_max, num_grid):
    """Per-example log-uniform sigma, IGSO(3) tangent noise `v` and noised rotations."""
    batch = R0.shape[:-2]
    n = math.prod(batch)
    key_sigma, key_angle, key_axis = jax.random.split(key, 3)
    u = jax.random.uniform(key_sigma, (n,), dtype=R0.dtype)
    log_min, log_max = jnp.log(sigma_min), jnp.log(sigma_max)
    sigma = jnp.exp(log_min + u * (log_max - log_min))
    eps = 0.5 * sigma**2
    keys = jax.random.split(key_angle, n)
    omega = jax.vmap(lambda k, e: igso3_sample_angle(k, e, (), num_grid))(keys, eps)
    axis = jax.random.normal(key_axis, (n, 3), dtype=R0.dtype)
    axis = axis / jnp.linalg.norm(axis, axis=-1, keepdims=True)
    v = axis * omega[:, None]
    R = exp(v) @ R0.reshape(n, 3, 3)
    return R.reshape(R0.shape), sigma.reshape(batch), v.reshape(*batch, 3), eps.reshape(batch)


def dsm_loss(
    score_fn: Callable,
    key,
    R0,
    *,
    sigma_min,
    sigma_max,
    context=None,
    num_grid: int = 512,
):
    """Sigma^2-weighted denoising score matching loss on SO(3), averaged over the batch.

    `loss = mean sigma^2 |score_fn(R, sigma, context) - igso3_tangent_score(v, sigma^2 / 2)|^2` with
    `R = exp(hat(v)) @ R0`, `v` an IGSO(3)(sigma) tangent sample and `sigma` log-uniform in
    `[sigma_min, sigma_max]`, drawn independently for every example.

    **Arguments:**

    - `score_fn`: `score_fn(R, sigma, context) -> (..., 3)` for `R` of shape `(..., 3, 3)` and `sigma`
      of shape `(...)` (e.g. a `ScoreNet`).
    - `key`: a `jax.random` key.
    - `R0`: clean rotations, shape `(..., 3, 3)`.
    - `sigma_min`, `sigma_max`: noise range, `0 < sigma_min < sigma_max`.
    - `context`: passed through to `score_fn` (shape `(..., context_dim)`), or `None`.
    - `num_grid`: grid size of the inverse-CDF IGSO(3) angle sampler (static).

    **Returns:**

    A scalar.
    """
    check_matrix(R0, "R0")
    _check_sigma_range(sigma_min, sigma_max)
    R0 = jnp.asarray(R0)
    if not jnp.issubdtype(R0.dtype, jnp.floating):
        R0 = R0.astype(jnp.result_type(float))
    R, sigma, v, eps = _noise(key, R0, sigma_min, sigma_max, num_grid)
    target = igso3_tangent_score(v, eps)
    prediction = score_fn(R, sigma, context)
    return jnp.mean(sigma**2 * jnp.sum((prediction - target) ** 2, axis=-1))


def train_dsm(
    model: ScoreNet,
    key,
    data,
    *,
    sigma_min,
    sigma_max,
    num_steps: int,
    context=None,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    steps_per_call: int = 100,
    num_grid: int = 512,
    progress: bool = True,
):
    """Train a score model by DSM with Adam (cosine-decayed learning rate), on minibatches drawn with
    replacement from `data`.

    The model is updated in place (and returned). Steps run in jitted chunks of `steps_per_call`
    (`lax.scan`); a one-line progress report goes to stderr after every chunk unless `progress=False`.

    **Arguments:**

    - `model`: a `ScoreNet`, a `ConditionalScoreNet`, or any `nnx.Module` called as
      `model(R, sigma, context)`.
    - `key`: a `jax.random` key.
    - `data`: clean rotations, shape `(N, 3, 3)`.
    - `sigma_min`, `sigma_max`: noise range, `0 < sigma_min < sigma_max`.
    - `num_steps`: number of optimisation steps.
    - `context`: one context per rotation: an array of shape `(N, context_dim)` for a `ScoreNet`, a
      `Neighbourhood` with batch shape `(N,)` for a `ConditionalScoreNet` (any PyTree whose arrays
      have leading dimension `N`), or `None`.
    - `batch_size`, `learning_rate`: Adam minibatch size and peak learning rate.
    - `steps_per_call`: steps per jitted chunk (and per progress line).
    - `num_grid`: grid size of the IGSO(3) angle sampler.
    - `progress`: print progress to stderr.

    **Returns:**

    `(model, losses)` with `losses` the NumPy array of the `num_steps` minibatch losses.
    """
    check_matrix(data, "data")
    data = jnp.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"`data` must have shape (N, 3, 3), got {data.shape}.")
    if context is not None:
        context = jax.tree.map(jnp.asarray, context)
        shapes = [leaf.shape for leaf in jax.tree.leaves(context)]
        if not shapes or any(len(sh) < 1 or sh[0] != data.shape[0] for sh in shapes):
            raise ValueError(
                f"every array of `context` must have leading dimension N = {data.shape[0]}, "
                f"got shapes {shapes}."
            )
    _check_sigma_range(sigma_min, sigma_max)
    for name, value in (("num_steps", num_steps), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    steps_per_call = max(1, min(int(steps_per_call), num_steps))

    graphdef, params = nnx.split(model)
    schedule = optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.05)
    tx = optax.adam(schedule)
    opt_state = tx.init(params)
    n_data = data.shape[0]
    sigma_min = jnp.asarray(sigma_min, data.dtype)
    sigma_max = jnp.asarray(sigma_max, data.dtype)

    def loss_fn(params, key):
        key_batch, key_noise = jax.random.split(key)
        idx = jax.random.randint(key_batch, (batch_size,), 0, n_data)
        ctx = None if context is None else jax.tree.map(lambda c: c[idx], context)
        net = nnx.merge(graphdef, params)
        return dsm_loss(
            lambda R, s, c: net(R, s, c), key_noise, data[idx],
            sigma_min=sigma_min, sigma_max=sigma_max, context=ctx, num_grid=num_grid,
        )  # fmt: skip

    def step(carry, key):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @jax.jit
    def chunk(params, opt_state, keys):
        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), keys)
        return params, opt_state, losses

    keys = jax.random.split(key, num_steps)
    losses = []
    start = time.perf_counter()
    for first in range(0, num_steps, steps_per_call):
        params, opt_state, chunk_losses = chunk(
            params, opt_state, keys[first : first + steps_per_call]
        )
        losses.append(np.asarray(chunk_losses))
        if progress:
            done = first + chunk_losses.shape[0]
            print(
                f"\rtrain_dsm: step {done}/{num_steps}  loss {float(np.mean(losses[-1])):.4f}  "
                f"({time.perf_counter() - start:.1f} s)",
                end="\n" if done == num_steps else "",
                file=sys.stderr,
                flush=True,
            )
    nnx.update(model, params)
    return model, np.concatenate(losses)


def save_checkpoint(path, model: nnx.Module) -> None:
    """Write the state of an `nnx.Module` to `path` as msgpack (never pickle).

    The file is written to a temporary file in the same directory and moved into place with
    `os.replace`, so `path` always holds either the old or the new complete checkpoint.

    **Arguments:**

    - `path`: destination file.
    - `model`: the module whose `nnx.state` is saved.
    """
    pure = nnx.to_pure_dict(nnx.state(model))
    payload = flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, pure))
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".msgpack", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path, model: nnx.Module) -> nnx.Module:
    """Load a checkpoint written by `save_checkpoint` into a module of the same structure (in place).

    **Arguments:**

    - `path`: the checkpoint file.
    - `model`: a module built with the same configuration (its values are overwritten).

    **Returns:**

    `model`, holding the saved values bit for bit.
    """
    with open(os.fspath(path), "rb") as f:
        restored = flax.serialization.msgpack_restore(f.read())
    state = nnx.state(model)
    expected = jax.tree.structure(nnx.to_pure_dict(state))
    if jax.tree.structure(restored) != expected:
        raise ValueError(f"checkpoint {path!r} does not match the structure of the model.")
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, restored))
    nnx.update(model, state)
    return model


def sample_from_score(
    score_fn: Callable[[jax.Array, jax.Array], jax.Array],
    key,
    shape=(),
    *,
    sigma_max=3.0,
    sigma_min=0.01,
    num_steps: int = 200,
    method: str = "heun",
    sampler: str = "ode",
    dtype=None,
):
    """Sample rotations with a (learned) score: Haar-uniform rotations at `sigma_max`, transported to
    `sigma_min` on a geometric `sigma_schedule`, by the probability-flow ODE
    (`probability_flow_sample`, deterministic given the start) or the reverse SDE
    (`reverse_sde_sample`, geodesic random walk).

    `sigma_max` must be large enough that the noised data are uniform (IGSO(3) at `sigma = 3` differs
    from Haar by about 1e-3 in density).

    **Arguments:**

    - `score_fn`: `score_fn(R, sigma) -> (..., 3)`, e.g. `lambda R, s: model(R, s)`; close over a
      context for a conditional model.
    - `key`: a `jax.random` key.
    - `shape`: batch shape of the sample.
    - `sigma_max`, `sigma_min`: start and end of the integration, `0 < sigma_min < sigma_max`.
    - `num_steps`: number of ODE or SDE steps (static).
    - `method`: ODE step, `"heun"`, `"midpoint"` or `"euler"` (ignored by the SDE).
    - `sampler`: `"ode"` (default) or `"sde"`. The SDE is first order: give it several times more
      steps than the Heun ODE (e.g. 1000 instead of 200).
    - `dtype`: floating dtype of the rotations (default: JAX's default float).

    **Returns:**

    Rotations of shape `(*shape, 3, 3)`.
    """
    _check_sigma_range(sigma_min, sigma_max)
    if sampler not in ("ode", "sde"):
        raise ValueError(f"`sampler` must be 'ode' or 'sde', got {sampler!r}.")
    R_init = sample_uniform(key, tuple(shape), dtype=dtype)
    sigmas = sigma_schedule(sigma_max, sigma_min, num_steps).astype(R_init.dtype)
    if sampler == "sde":
        return reverse_sde_sample(score_fn, jax.random.fold_in(key, 1), R_init, sigmas)
    return probability_flow_sample(score_fn, R_init, sigmas, method=method)
