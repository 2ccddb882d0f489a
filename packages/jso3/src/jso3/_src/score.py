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

import hashlib
import itertools
import math
import os
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jflows

from ._checks import (
    check_matrix,
    check_positive,
    check_positive_int,
    check_rotation,
    concrete_or_none,
    poison,
)
from .igso3 import igso3_sample_angle, igso3_tangent_score
from .ode import probability_flow_sample, reverse_sde_sample, sigma_schedule
from .so3 import exp, sample_uniform


def _check_sigma_range(sigma_min, sigma_max) -> None:
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
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
        check_matrix("R", R)
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
    key,
    score_fn: Callable,
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

    - `key`: a `jax.random` key.
    - `score_fn`: `score_fn(R, sigma, context) -> (..., 3)` for `R` of shape `(..., 3, 3)` and `sigma`
      of shape `(...)` (e.g. a `ScoreNet`).
    - `R0`: clean rotations, shape `(..., 3, 3)`.
    - `sigma_min`, `sigma_max`: noise range, `0 < sigma_min < sigma_max`.
    - `context`: passed through to `score_fn` (shape `(..., context_dim)`), or `None`.
    - `num_grid`: grid size of the inverse-CDF IGSO(3) angle sampler (static).

    **Returns:**

    A scalar.

    **Raises:**

    `ValueError` if `R0` is concrete and not a batch of rotations (see `jso3.log`) or the noise
    range is invalid; a traced non-rotation in `R0` makes the loss (and its gradient) NaN.
    """
    R0, valid = check_rotation("R0", R0)
    _check_sigma_range(sigma_min, sigma_max)
    R, sigma, v, eps = _noise(key, R0, sigma_min, sigma_max, num_grid)
    target = igso3_tangent_score(v, eps)
    prediction = score_fn(R, sigma, context)
    per_example = sigma**2 * jnp.sum((prediction - target) ** 2, axis=-1)
    return jnp.mean(poison(per_example, valid))


def _model_kind(model) -> str:
    """The checkpoint `kind` of a module: `"jso3.ScoreNet"`, `"jso3.ConditionalScoreNet"`, or
    `"<module>.<class>"` for another `nnx.Module`."""
    cls = type(model)
    package = cls.__module__.split(".")[0]
    return f"{package}.{cls.__qualname__}"


def _version() -> str:
    import jso3  # the package is fully imported by the time a checkpoint is written or read

    return jso3.__version__


def _fingerprint(*trees) -> str:
    """SHA-256 of the dtypes, shapes and bytes of every leaf (to refuse resuming another run)."""
    h = hashlib.sha256()
    for tree in trees:
        for leaf in jax.tree.leaves(tree):
            if jax.dtypes.issubdtype(getattr(leaf, "dtype", np.float64), jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            value = np.ascontiguousarray(np.asarray(leaf))
            h.update(f"{value.dtype}{value.shape}".encode())
            h.update(value.tobytes())
    return h.hexdigest()


def _write_training_checkpoint(path, tree, metadata):
    jflows.write_checkpoint(
        path, tree, package="jso3", package_version=_version(), kind="jso3.train_dsm",
        metadata=metadata,
    )  # fmt: skip


def train_dsm(
    key,
    model: nnx.Module,
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
    checkpoint=None,
    progress: bool = True,
):
    """Train a score model by DSM with Adam (cosine-decayed learning rate), on minibatches drawn with
    replacement from `data`. Pure: `model` is not modified; the trained model is a new module.

    Steps run in jitted chunks of `steps_per_call` (`lax.scan`); a `rich` progress bar (step, loss
    of the last chunk, elapsed and remaining time) goes to stderr unless `progress=False`.

    **Arguments:**

    - `key`: a `jax.random` key (minibatches and noise).
    - `model`: a `ScoreNet`, a `ConditionalScoreNet`, or any `nnx.Module` called as
      `model(R, sigma, context)`; the initial state of the training (left unchanged).
    - `data`: clean rotations, shape `(N, 3, 3)`, `N >= 1`.
    - `sigma_min`, `sigma_max`: noise range, `0 < sigma_min < sigma_max`.
    - `num_steps`: number of optimisation steps.
    - `context`: one context per rotation: an array of shape `(N, context_dim)` for a `ScoreNet`, a
      `Neighbourhood` with batch shape `(N,)` for a `ConditionalScoreNet` (any PyTree whose arrays
      have leading dimension `N`), or `None`.
    - `batch_size`, `learning_rate`: Adam minibatch size and peak learning rate.
    - `steps_per_call`: steps per jitted chunk (and per progress update and checkpoint).
    - `num_grid`: grid size of the IGSO(3) angle sampler.
    - `checkpoint`: a file path or `None`. If given, the training state (parameters, optimiser
      state, losses so far, step) is written there atomically after every chunk (federation format,
      `jflows.write_checkpoint`, kind `"jso3.train_dsm"`), and a call whose file already exists
      resumes from it: the result is bit-for-bit that of an uninterrupted run. A file written by a
      run with other arguments (key, data, context, initial model or settings) is refused with a
      `ValueError`.
    - `progress`: show the progress bar.

    **Returns:**

    `(new_model, history)`: the trained module (same class and structure as `model`) and a dict of
    NumPy arrays, `history["loss"]` the `num_steps` minibatch losses.

    **Raises:**

    `ValueError` for invalid arguments, among them `data` that is empty or not a batch of rotations
    (non-finite, not orthogonal, determinant -1; see `jso3.log`); `RuntimeError` naming the step if
    a loss is not finite.
    """
    check_matrix("data", data)
    if np.ndim(data) != 3:
        raise ValueError(f"`data` must have shape (N, 3, 3), got {np.shape(data)}.")
    if np.shape(data)[0] == 0:
        raise ValueError(
            "`data` is empty: train_dsm needs at least one rotation, got shape (0, 3, 3)."
        )
    if concrete_or_none(data) is None:
        raise ValueError("`data` must be a concrete array (train_dsm runs its own jitted loop).")
    data, _ = check_rotation("data", data)
    n_data = data.shape[0]
    if context is not None:
        context = jax.tree.map(jnp.asarray, context)
        shapes = [leaf.shape for leaf in jax.tree.leaves(context)]
        if not shapes or any(len(sh) < 1 or sh[0] != n_data for sh in shapes):
            raise ValueError(
                f"every array of `context` must have leading dimension N = {n_data}, "
                f"got shapes {shapes}."
            )
    _check_sigma_range(sigma_min, sigma_max)
    check_positive_int("num_steps", num_steps)
    check_positive_int("batch_size", batch_size)
    check_positive_int("steps_per_call", steps_per_call)
    check_positive_int("num_grid", num_grid)
    check_positive("learning_rate", learning_rate)
    steps_per_call = min(int(steps_per_call), num_steps)

    graphdef, params = nnx.split(model)
    schedule = optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.05)
    tx = optax.adam(schedule)
    opt_state = tx.init(params)
    sigma_lo = jnp.asarray(sigma_min, data.dtype)
    sigma_hi = jnp.asarray(sigma_max, data.dtype)

    def loss_fn(params, key):
        key_batch, key_noise = jax.random.split(key)
        idx = jax.random.randint(key_batch, (batch_size,), 0, n_data)
        ctx = None if context is None else jax.tree.map(lambda c: c[idx], context)
        net = nnx.merge(graphdef, params)
        return dsm_loss(
            key_noise, lambda R, s, c: net(R, s, c), data[idx],
            sigma_min=sigma_lo, sigma_max=sigma_hi, context=ctx, num_grid=num_grid,
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
    losses = np.full((num_steps,), np.nan, dtype=np.dtype(data.dtype))
    done = 0
    metadata = None
    if checkpoint is not None:
        metadata = {
            "num_steps": num_steps,
            "batch_size": batch_size,
            "learning_rate": float(learning_rate),
            "steps_per_call": steps_per_call,
            "num_grid": num_grid,
            "sigma_min": float(sigma_min),
            "sigma_max": float(sigma_max),
            "model": _model_kind(model),
            "run": _fingerprint(jax.random.key_data(key), data, context, params),
        }
        path = pathlib.Path(os.fspath(checkpoint))
        if path.exists():
            template = {"params": params, "opt_state": opt_state, "losses": losses, "step": 0}
            state, saved = jflows.read_checkpoint(
                path, template, package="jso3", package_version=_version(), kind="jso3.train_dsm"
            )
            for field, value in metadata.items():
                if saved.get(field) != value:
                    raise ValueError(
                        f"checkpoint {os.fspath(path)!r}: field {field!r} is "
                        f"{saved.get(field)!r}, this run has {value!r} (another run's file: "
                        "delete it or pass another path)."
                    )
            params, opt_state = state["params"], state["opt_state"]
            losses, done = np.array(state["losses"]), int(state["step"])

    with jflows.progress_bar("jso3.train_dsm", num_steps, enabled=progress, start=done) as bar:
        if done:
            bar.update(done, loss=float(np.mean(losses[max(0, done - steps_per_call) : done])))
        for first in range(done, num_steps, steps_per_call):
            params, opt_state, chunk_losses = chunk(
                params, opt_state, keys[first : first + steps_per_call]
            )
            chunk_losses = np.asarray(chunk_losses)
            finite = np.isfinite(chunk_losses)
            if not np.all(finite):
                bad = first + int(np.argmin(finite))
                raise RuntimeError(
                    f"train_dsm: the loss is {chunk_losses[bad - first]} at step {bad} "
                    f"(of {num_steps}); lower the learning rate or check the model."
                )
            done = first + chunk_losses.shape[0]
            losses[first:done] = chunk_losses
            if checkpoint is not None:
                _write_training_checkpoint(
                    checkpoint,
                    {"params": params, "opt_state": opt_state, "losses": losses, "step": done},
                    metadata,
                )
            bar.update(done, loss=float(np.mean(chunk_losses)))
    return nnx.merge(graphdef, params), {"loss": losses}


def save_checkpoint(path, model: nnx.Module, *, metadata=None) -> pathlib.Path:
    """Write the state of an `nnx.Module` to `path` in the federation's checkpoint format.

    A msgpack file (never pickle) written by `jflows.write_checkpoint`: to a temporary file in the
    same directory, then moved into place with `os.replace`, so `path` always holds either the old
    or the new complete checkpoint. It records the format, `package = "jso3"`, the package version
    and `kind = "jso3.ScoreNet"` (or `"jso3.ConditionalScoreNet"`, or `"<module>.<class>"`).

    **Arguments:**

    - `path`: destination file.
    - `model`: the module whose `nnx.state` is saved.
    - `metadata`: optional JSON-like dict stored with it (see `jflows.write_checkpoint`).

    **Returns:**

    The path, as a `pathlib.Path`.
    """
    return jflows.write_checkpoint(
        path, nnx.state(model), package="jso3", package_version=_version(),
        kind=_model_kind(model), metadata=metadata,
    )  # fmt: skip


def load_checkpoint(path, template: nnx.Module) -> nnx.Module:
    """Load a checkpoint written by `save_checkpoint` into a new module. Pure: `template` is not
    modified.

    **Arguments:**

    - `path`: the checkpoint file.
    - `template`: a module built with the same configuration as the saved one (its values are not
      used).

    **Returns:**

    A new module of the template's class holding the saved values bit for bit.

    **Raises:**

    `ValueError` naming the file and the field for a file that is not a federation checkpoint, was
    written by another package or for another kind of module (e.g. a `ScoreNet` file loaded into a
    `ConditionalScoreNet`), by an incompatible jso3 version (another minor version below 1.0), or
    holds a tree of another structure, shape or dtype.
    """
    graphdef, state = nnx.split(template)
    restored, _ = jflows.read_checkpoint(
        path, state, package="jso3", package_version=_version(), kind=_model_kind(template)
    )
    return nnx.merge(graphdef, restored)


_SAMPLERS = ("ode", "sde")


def _default_num_steps(sampler, num_steps):
    if num_steps is None:
        return 1000 if sampler == "sde" else 200
    return num_steps


def sample_from_score(
    key,
    score_fn: Callable[[jax.Array, jax.Array], jax.Array],
    shape=(),
    *,
    sigma_max=3.0,
    sigma_min=0.01,
    num_steps: int | None = None,
    method: str = "heun",
    sampler: str = "sde",
    dtype=None,
):
    """Sample rotations with a (learned) score: Haar-uniform rotations at `sigma_max`, transported to
    `sigma_min` on a geometric `sigma_schedule`, by the reverse SDE (`reverse_sde_sample`, geodesic
    random walk; the default) or the probability-flow ODE (`probability_flow_sample`, deterministic
    given the start).

    Why the SDE is the default: with a *learned* score the ODE transports the score's errors to the
    samples, while the SDE's noise lets them decay. On the conditional toy of the tests
    (`tests/test_conditional.py`, measured with `ConditionalScoreNet` after 600 Adam steps), the
    ODE's samples are rejected by a KS test against the exact conditional law and the SDE's pass (the
    numbers are in the package README, "Choosing the sampler"). With the exact score both are
    accurate (tested); the ODE is the cheaper one then (Heun is second order).

    `sigma_max` must be large enough that the noised data are uniform (IGSO(3) at `sigma = 3` differs
    from Haar by about 1e-3 in density).

    **Arguments:**

    - `key`: a `jax.random` key.
    - `score_fn`: `score_fn(R, sigma) -> (..., 3)`, e.g. `lambda R, s: model(R, s)`; close over a
      context for a conditional model.
    - `shape`: batch shape of the sample.
    - `sigma_max`, `sigma_min`: start and end of the integration, `0 < sigma_min < sigma_max`.
    - `num_steps`: number of SDE or ODE steps (static); default 1000 for the SDE (first order), 200
      for the Heun ODE.
    - `method`: ODE step, `"heun"`, `"midpoint"` or `"euler"` (ignored by the SDE).
    - `sampler`: `"sde"` (default) or `"ode"`.
    - `dtype`: floating dtype of the rotations (default: JAX's default float).

    **Returns:**

    Rotations of shape `(*shape, 3, 3)`.
    """
    _check_sigma_range(sigma_min, sigma_max)
    if sampler not in _SAMPLERS:
        raise ValueError(f"`sampler` must be 'ode' or 'sde', got {sampler!r}.")
    num_steps = _default_num_steps(sampler, num_steps)
    R_init = sample_uniform(key, tuple(shape), dtype=dtype)
    sigmas = sigma_schedule(sigma_max, sigma_min, num_steps).astype(R_init.dtype)
    if sampler == "sde":
        return reverse_sde_sample(jax.random.fold_in(key, 1), score_fn, R_init, sigmas)
    return probability_flow_sample(score_fn, R_init, sigmas, method=method)
