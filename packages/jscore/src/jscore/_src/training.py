"""Denoising score matching: the loss, minibatch streams from memory or memory-mapped `.npy` files, a
trainer with Adam and an EMA of the weights, and checkpoints in the federation's format (jflows)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import Array

import jflows
from jflows import progress_bar

from ._checks import check_int, check_scalar, check_sigma_range

ScoreFn = Callable[[Array, Array], Array]
SigmaSampler = Callable[[Array, int], Array]


_STATE_KIND = "jscore.DSMTrainState"
_RUN_KIND = "jscore.train_dsm"


def _check_sigma_range(sigma_min, sigma_max) -> None:
    check_sigma_range("sigma_min", sigma_min, "sigma_max", sigma_max)


def log_uniform_sigma(
    key: Array, num: int, sigma_min: float, sigma_max: float, dtype=None
) -> Array:
    """`num` noise levels drawn log-uniformly in `[sigma_min, sigma_max]`.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `num`: how many (static).
    - `sigma_min`, `sigma_max`: the range, `0 < sigma_min <= sigma_max`.
    - `dtype`: floating dtype (default: JAX's default float).

    **Returns:**

    An array of shape `(num,)`.
    """
    num = check_int("num", num, minimum=1)
    _check_sigma_range(sigma_min, sigma_max)
    dtype = dtype or jnp.result_type(float)
    u = jax.random.uniform(key, (num,), dtype)
    lo, hi = np.log(float(sigma_min)), np.log(float(sigma_max))
    return jnp.exp(lo + (hi - lo) * u)


def dsm_loss(score_fn: ScoreFn, x: Array, sigma: Array, noise: Array) -> Array:
    """The sigma^2-weighted denoising score-matching loss
    `mean_i || u_i + sigma_i s(x_i + sigma_i u_i, sigma_i) ||^2` (squared norm over the field, mean over
    the batch).

    Its minimiser is the score of `p_sigma = p * N(0, sigma^2 I)`; the minimum is not zero (for a Gaussian
    `N(0, C)` at a fixed sigma it is `sum_k c_k / (c_k + sigma^2)` over the eigenvalues `c_k` of `C`).

    **Arguments:**

    - `score_fn`: `s(x, sigma)` on a batch, `x` of shape `(batch, *field)` and `sigma` of shape
      `(batch,)` (e.g. a `jscore.ScoreMLP` or `jscore.ScoreUNet`).
    - `x`: clean samples, shape `(batch, *field)`.
    - `sigma`: noise levels, shape `(batch,)`.
    - `noise`: standard normal draws `u`, shaped like `x`.

    **Returns:**

    The scalar loss.
    """
    if x.ndim < 2 or sigma.shape != x.shape[:1] or noise.shape != x.shape:
        raise ValueError(
            f"dsm_loss needs x of shape (batch, *field), sigma of shape (batch,) and noise shaped like "
            f"x; got {x.shape}, {sigma.shape}, {noise.shape}"
        )
    s = sigma.reshape(sigma.shape + (1,) * (x.ndim - 1)).astype(x.dtype)
    residual = noise + s * score_fn(x + s * noise, sigma)
    return jnp.mean(jnp.sum(residual**2, axis=tuple(range(1, x.ndim))))


class MinibatchStream:
    """Minibatches of samples from an in-memory array or a `.npy` file read through a memory map,
    reshuffled every epoch.

    The batch of training step `t` is a pure function of `(key, t)`: epoch `e = t // steps_per_epoch`
    uses the permutation `jax.random.permutation(fold_in(key, e), n)`, so a resumed run sees exactly the
    batches an uninterrupted run would. Only the rows of each batch are read from disk.

    **Arguments:**

    - `key`: a `jax.random` key for the shuffling.
    - `data`: an array of samples `(n, *field)` (NumPy or JAX), or the path of a `.npy` file (opened
      with `numpy.load(path, mmap_mode="r")`).
    - `batch_size`: samples per batch, at most `n`.
    - `drop_remainder`: drop the last incomplete batch of each epoch (default; keeps shapes static
      for `jax.jit`), or yield it smaller.
    """

    def __init__(self, key: Array, data, batch_size: int, *, drop_remainder: bool = True):
        if isinstance(data, (str, os.PathLike)):
            data = np.load(os.fspath(data), mmap_mode="r")
        elif not isinstance(data, np.ndarray):
            data = np.asarray(data)
        if data.ndim < 2:
            raise ValueError(
                f"data must have shape (n, *field) with a field axis, got {data.shape}"
            )
        self.data = data
        self.num_samples = int(data.shape[0])
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        if self.batch_size > self.num_samples:
            raise ValueError(
                f"batch_size {batch_size} exceeds the number of samples {self.num_samples}"
            )
        self.key = key
        self.drop_remainder = bool(drop_remainder)
        full, rest = divmod(self.num_samples, self.batch_size)
        self.steps_per_epoch = full + (0 if self.drop_remainder or rest == 0 else 1)
        self._cache: tuple[int, np.ndarray] | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the samples in `epoch`."""
        if self._cache is None or self._cache[0] != epoch:
            perm = jax.random.permutation(jax.random.fold_in(self.key, epoch), self.num_samples)
            self._cache = (epoch, np.asarray(perm))
        return self._cache[1]

    def batch(self, step: int) -> np.ndarray:
        """The minibatch of training step `step` (0-based, counted over all epochs)."""
        epoch, i = divmod(int(step), self.steps_per_epoch)
        index = self.permutation(epoch)[i * self.batch_size : (i + 1) * self.batch_size]
        order = np.argsort(index)
        out = np.empty((len(index), *self.data.shape[1:]), self.data.dtype)
        out[order] = self.data[index[order]]  # sorted reads from a memory map
        return out

    def epoch(self, epoch: int) -> Iterator[np.ndarray]:
        """Iterate over the batches of one epoch."""
        for i in range(self.steps_per_epoch):
            yield self.batch(epoch * self.steps_per_epoch + i)


@flax.struct.dataclass
class DSMTrainState:
    """The state of a `DSMTrainer` (a PyTree): `step` (int32 scalar), `params` and `ema_params` (pure
    dicts of the model's `nnx.Param` arrays, as from `flax.nnx.to_pure_dict`) and the optax
    `opt_state`."""

    step: Array
    params: dict
    ema_params: dict
    opt_state: object


class DSMTrainer:
    """Train a flax nnx score model by sigma^2-weighted denoising score matching (see `jscore.dsm_loss`)
    with an optax optimizer (Adam by default) and an exponential moving average of the weights.

    Step `t` of a run draws its batch from `stream.batch(t)` and its noise levels and noise from
    `fold_in(key, t)`, so training is a pure function of `(key, state, stream)`: a run resumed from a
    checkpoint is bit-for-bit identical to an uninterrupted one. The model passed in is not modified
    (its parameters are copied at construction).

    **Arguments:**

    - `model`: an `nnx.Module` with the call `model(x, sigma)` on batches (e.g. `jscore.ScoreUNet`);
      only its `nnx.Param` variables are trained, the rest (e.g. `HybridScore`'s power map) is frozen.
    - `sigma_min`, `sigma_max`: range of the log-uniform noise levels, `0 < sigma_min <= sigma_max`.
    - `optimizer`: an `optax.GradientTransformation`; default `optax.adam(learning_rate)`.
    - `learning_rate`: used by the default optimizer.
    - `ema_decay`: decay of the weight average, in [0, 1); the effective decay at step `t` is
      `min(ema_decay, (1 + t) / (10 + t))`, so that short runs average over their recent past.
    - `sigma_sampler`: optional `sampler(key, batch_size) -> sigma` replacing the log-uniform draw.
    """

    def __init__(
        self,
        model: nnx.Module,
        *,
        sigma_min: float,
        sigma_max: float,
        optimizer: optax.GradientTransformation | None = None,
        learning_rate: float = 1e-3,
        ema_decay: float = 0.999,
        sigma_sampler: SigmaSampler | None = None,
    ):
        if not isinstance(model, nnx.Module):
            raise TypeError(f"model must be a flax nnx.Module, got {type(model).__name__}")
        _check_sigma_range(sigma_min, sigma_max)
        check_scalar("learning_rate", learning_rate, low=0.0)
        check_scalar("ema_decay", ema_decay, low=0.0, low_open=False, high=1.0, high_open=True)
        if sigma_sampler is not None and not callable(sigma_sampler):
            raise TypeError("sigma_sampler must be callable or None")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.ema_decay = float(ema_decay)
        self.optimizer = optimizer if optimizer is not None else optax.adam(learning_rate)
        self.sigma_sampler = sigma_sampler
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        self._graphdef, self._rest = graphdef, rest
        self._init_params = nnx.to_pure_dict(params)
        self._step = jax.jit(self._step_impl)

    def init(self) -> DSMTrainState:
        """A fresh state from the model's current parameters (EMA equal to them, step 0)."""
        params = jax.tree.map(jnp.asarray, self._init_params)
        return DSMTrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            ema_params=jax.tree.map(jnp.copy, params),
            opt_state=self.optimizer.init(params),
        )

    def model(self, params: dict) -> nnx.Module:
        """The model with the given parameters (e.g. `state.ema_params`), a new module."""
        return nnx.merge(self._graphdef, nnx.State(params), self._rest)

    def loss(self, key: Array, params: dict, batch: Array) -> Array:
        """The DSM loss of `params` on one batch, with noise levels and noise drawn from `key`."""
        k_sigma, k_noise = jax.random.split(key)
        n = batch.shape[0]
        if self.sigma_sampler is None:
            sigma = log_uniform_sigma(k_sigma, n, self.sigma_min, self.sigma_max, batch.dtype)
        else:
            sigma = jnp.asarray(self.sigma_sampler(k_sigma, n), batch.dtype)
        noise = jax.random.normal(k_noise, batch.shape, batch.dtype)
        return dsm_loss(self.model(params), batch, sigma, noise)

    def _step_impl(self, state: DSMTrainState, batch: Array, key: Array):
        key = jax.random.fold_in(key, state.step)
        loss, grads = jax.value_and_grad(self.loss, argnums=1)(key, state.params, batch)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        t = state.step.astype(jnp.float32)
        decay = jnp.minimum(self.ema_decay, (1.0 + t) / (10.0 + t))
        ema = jax.tree.map(
            lambda e, p: (decay * e + (1.0 - decay) * p).astype(p.dtype), state.ema_params, params
        )
        return DSMTrainState(state.step + 1, params, ema, opt_state), loss

    def train(
        self,
        key: Array,
        state: DSMTrainState,
        stream: MinibatchStream,
        num_steps: int,
        *,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        progress: bool = True,
    ) -> tuple[DSMTrainState, dict[str, np.ndarray]]:
        """Run `num_steps` more training steps from `state` (pure: `state` is not modified).

        **Arguments:**

        - `key`: a `jax.random` key for the noise (the same key across resumed runs).
        - `state`: from `init()` or `jscore.load_checkpoint`.
        - `stream`: a `jscore.MinibatchStream` of clean samples.
        - `num_steps`: steps to run now.
        - `checkpoint`: if given, save the state there (`jscore.save_checkpoint`, atomic) every
          `checkpoint_every` steps (if given) and at the end.
        - `progress`: show a `rich` progress bar with the step, the ETA and the running loss (on
          stderr).

        **Returns:**

        `(state, history)`: the new state and `{"loss": the loss of each step}` (NumPy).
        """
        if not isinstance(stream, MinibatchStream):
            raise TypeError(f"stream must be a jscore.MinibatchStream, got {type(stream).__name__}")
        if not isinstance(state, DSMTrainState):
            raise TypeError(f"state must be a jscore.DSMTrainState, got {type(state).__name__}")
        num_steps = check_int("num_steps", num_steps, minimum=0)
        if checkpoint_every is not None:
            checkpoint_every = check_int("checkpoint_every", checkpoint_every, minimum=1)

        def save(state, losses):
            if checkpoint is not None:
                save_checkpoint(checkpoint, state)

        state, losses = self._run(key, state, stream, num_steps, progress, save, checkpoint_every)
        if checkpoint is not None:
            save_checkpoint(checkpoint, state)
        return state, {"loss": losses}

    def _run(self, key, state, stream, num_steps, progress, save, save_every):
        """The loop: `num_steps` steps from `state`, calling `save(state, losses_so_far)` every
        `save_every` steps; returns the state and the losses as a NumPy array."""
        start = int(state.step)
        losses = []
        with progress_bar("jscore.train_dsm", num_steps, enabled=progress, start=start) as bar:
            for i in range(num_steps):
                batch = jnp.asarray(stream.batch(start + i))
                state, loss = self._step(state, batch, key)
                losses.append(loss)
                done = i + 1
                if bar.due(done, num_steps):
                    recent = float(jnp.mean(jnp.stack(losses[-bar.every :])))
                    bar.update(done, loss=recent)
                if save_every and done % save_every == 0:
                    save(state, losses)
        losses = np.asarray(jnp.stack(losses)) if losses else np.zeros((0,), np.float32)
        return state, losses


def _state_template(state: DSMTrainState):
    return jax.tree.map(jnp.asarray, state)


def _package_version() -> str:
    from .. import __version__

    return __version__


def save_checkpoint(path: str | os.PathLike, state: DSMTrainState) -> None:
    """Write a `DSMTrainState` (step, parameters, EMA parameters, optimizer state) to `path` in the
    federation's checkpoint format (`jflows.write_checkpoint`: msgpack, never pickle, written to a
    temporary file and moved into place with `os.replace`; format, package `jscore`, its version and
    the kind `"jscore.DSMTrainState"` recorded)."""
    if not isinstance(state, DSMTrainState):
        raise TypeError(f"state must be a jscore.DSMTrainState, got {type(state).__name__}")
    jflows.write_checkpoint(
        path,
        jax.device_get(state),
        package="jscore",
        package_version=_package_version(),
        kind=_STATE_KIND,
        metadata={"step": int(state.step)},
    )


def load_checkpoint(path: str | os.PathLike, template: DSMTrainState) -> DSMTrainState:
    """Read a checkpoint written by `save_checkpoint` into a new state with the structure of
    `template` (e.g. `trainer.init()`; pure: the template is not modified).

    Refuses with a `ValueError` naming the file and the field: a file of another format, package
    (jflows, jso3, ...), kind or incompatible jscore version, and a state of another architecture
    (a tree of another structure, shape or dtype than the template's). Arrays load bit-for-bit.
    """
    if not isinstance(template, DSMTrainState):
        raise TypeError(f"template must be a jscore.DSMTrainState, got {type(template).__name__}")
    state, _ = jflows.read_checkpoint(
        path,
        _state_template(template),
        package="jscore",
        package_version=_package_version(),
        kind=_STATE_KIND,
    )
    return state


def train_dsm(
    key: Array,
    model: nnx.Module,
    data,
    *,
    num_steps: int,
    batch_size: int,
    sigma_min: float,
    sigma_max: float,
    learning_rate: float = 1e-3,
    ema_decay: float = 0.999,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
) -> tuple[nnx.Module, dict[str, np.ndarray]]:
    """Train a score model by DSM in one call (a `DSMTrainer` over a `MinibatchStream`); pure: the
    model passed in is not modified.

    With `checkpoint=path`, the run state (trainer state and the losses so far) is saved there
    atomically every `checkpoint_every` steps (if given) and at the end; a rerun with the same
    arguments finding the file resumes from it and ends bit-for-bit where an uninterrupted run ends
    (same model, same history). A file from a run with other settings is refused.

    **Arguments:**

    - `key`: a `jax.random` key (split for the shuffling and the noise).
    - `model`: the score model (left unchanged).
    - `data`: samples `(n, *field)`, in memory or the path of a `.npy` file (memory-mapped).
    - `num_steps`: total training steps.
    - `batch_size`, `sigma_min`, `sigma_max`, `learning_rate`, `ema_decay`: as in
      `jscore.MinibatchStream` and `jscore.DSMTrainer`.
    - `checkpoint`, `checkpoint_every`: where and how often to save (see above).
    - `progress`: show a `rich` progress bar with the loss (on stderr).

    **Returns:**

    `(trained_model, history)`: a new model carrying the EMA parameters, and `{"loss": per-step
    losses}` (NumPy, `num_steps` entries).
    """
    num_steps = check_int("num_steps", num_steps, minimum=0)
    if checkpoint_every is not None:
        checkpoint_every = check_int("checkpoint_every", checkpoint_every, minimum=1)
    key_data, key_noise = jax.random.split(key)
    stream = MinibatchStream(key_data, data, batch_size)
    trainer = DSMTrainer(
        model,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        learning_rate=learning_rate,
        ema_decay=ema_decay,
    )
    state = trainer.init()
    settings = {
        "num_steps": num_steps,
        "batch_size": int(batch_size),
        "sigma_min": float(sigma_min),
        "sigma_max": float(sigma_max),
        "learning_rate": float(learning_rate),
        "ema_decay": float(ema_decay),
        "key_data": [int(v) for v in _key_data(key).ravel()],
    }
    done_losses = np.zeros((0,), np.float32)
    if checkpoint is not None and os.path.exists(checkpoint):
        state, done_losses = _load_run(checkpoint, state, num_steps, settings)

    def save(state, losses):
        _save_run(checkpoint, state, np.concatenate([done_losses, _stack(losses)]), settings)

    remaining = num_steps - int(state.step)
    state, losses = trainer._run(
        key_noise, state, stream, remaining, progress, save if checkpoint else None,
        checkpoint_every if checkpoint else None,
    )  # fmt: skip
    losses = np.concatenate([done_losses, losses]).astype(np.float32)
    if checkpoint is not None:
        _save_run(checkpoint, state, losses, settings)
    return trainer.model(state.ema_params), {"loss": losses}


def _key_data(key) -> np.ndarray:
    if jax.dtypes.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    return np.asarray(key)


def _stack(losses) -> np.ndarray:
    return np.asarray(jnp.stack(losses)) if losses else np.zeros((0,), np.float32)


def _save_run(path, state, losses, settings) -> None:
    """A `train_dsm` checkpoint: the trainer state and a fixed-length loss buffer (NaN for the steps
    not yet run), with the run's settings as metadata."""
    buffer = np.full((settings["num_steps"],), np.nan, np.float32)
    buffer[: len(losses)] = losses
    jflows.write_checkpoint(
        path,
        {"state": jax.device_get(state), "loss": buffer},
        package="jscore",
        package_version=_package_version(),
        kind=_RUN_KIND,
        metadata={"settings": settings, "step": int(state.step)},
    )


def _load_run(path, state, num_steps, settings):
    template = {
        "state": _state_template(state),
        "loss": np.zeros((num_steps,), np.float32),
    }
    tree, metadata = jflows.read_checkpoint(
        path, template, package="jscore", package_version=_package_version(), kind=_RUN_KIND
    )
    saved = metadata.get("settings")
    if saved != settings:
        diff = sorted(
            k for k in settings if not isinstance(saved, dict) or saved.get(k) != settings[k]
        )
        raise ValueError(
            f"{os.fspath(path)!r}: field 'metadata' records a train_dsm run with other settings "
            f"({', '.join(diff) or 'unknown'} differ); use another checkpoint path or delete the file"
        )
    new_state = tree["state"]
    step = int(new_state.step)
    return new_state, np.asarray(tree["loss"][:step], np.float32)
