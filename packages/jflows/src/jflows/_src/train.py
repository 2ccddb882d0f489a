"""Training: a generic pure trainer `train` (minibatch optax, early stopping, progress bar,
resumable checkpoints), `fit` (NLL + score matching) on top of it, the NPE/NLE wrappers, held-out
NLL, and the flow's checkpoints in the federation format."""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jflows._src.checkpoint import read_checkpoint, write_checkpoint
from jflows._src.flow import ConditionalFlow
from jflows._src.layers import BoxScaling
from jflows._src.progress import progress_bar

__all__ = [
    "fit",
    "fit_nle",
    "fit_npe",
    "held_out_nll",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]


def _as_2d(name, a, n=None):
    a = jnp.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (n, k), got {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} rows but theta has {n}: shapes must match")
    if not jnp.issubdtype(a.dtype, jnp.number):
        raise ValueError(f"{name} must hold numbers, got dtype {a.dtype}")
    bad = ~np.isfinite(np.asarray(a))
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{name} has {rows.size} rows with NaN or inf values (first: row {int(rows[0])}); "
            "remove them before training"
        )
    return a


def _check_data(flow, theta, x, score):
    if not isinstance(flow, ConditionalFlow):
        raise TypeError(f"flow must be a ConditionalFlow, got {type(flow).__name__}")
    dtype = flow._dtype()
    theta = _as_2d("theta", theta).astype(dtype)
    n = theta.shape[0]
    if theta.shape[1] != flow.dim:
        raise ValueError(f"theta must have shape (n, {flow.dim}), got {theta.shape}")
    if isinstance(flow.scaling, BoxScaling):
        low, high = np.asarray(flow.scaling.low[...]), np.asarray(flow.scaling.high[...])
        outside = np.any((np.asarray(theta) < low) | (np.asarray(theta) > high), axis=1)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            raise ValueError(
                f"theta has {int(outside.sum())} rows outside the flow's box [{low}, {high}] "
                f"(first: row {first}, {np.asarray(theta[first])}); their density is 0"
            )
    if flow.context_dim == 0:
        if x is not None:
            raise ValueError(f"the flow is unconditional but got x of shape {jnp.shape(x)}")
    else:
        if x is None:
            raise ValueError(f"the flow needs a context x of shape (n, {flow.context_dim})")
        x = _as_2d("x", x, n).astype(dtype)
        if x.shape[1] != flow.context_dim:
            raise ValueError(f"x must have shape ({n}, {flow.context_dim}), got {x.shape}")
    if score is not None:
        score = _as_2d("score", score, n).astype(dtype)
        if score.shape != theta.shape:
            raise ValueError(f"score must have theta's shape {theta.shape}, got {score.shape}")
    return theta, x, score


def _loss(flow, theta, x, score, score_weight):
    nll = -jnp.mean(flow.log_prob(theta, x))
    if score is None:
        return nll
    residual = flow.score(theta, x) - score
    return nll + score_weight * jnp.mean(jnp.sum(residual**2, axis=-1))


def _real(name, value):
    """`value` as a Python float if it is a real number (a Python or NumPy/JAX scalar, not a bool),
    else a `ValueError`; NaN and inf come back as they are, for the caller's range check."""
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    if (
        hasattr(value, "dtype")
        and np.shape(value) == ()
        and (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer))
    ):
        return float(value)
    raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _fingerprint(data, settings) -> str:
    """A digest of the training data and settings: a checkpoint resumes only the same run."""
    h = hashlib.sha256(repr(sorted(settings.items())).encode())
    for leaf in jax.tree.leaves(data):
        a = np.asarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


_TRAIN_KIND = "jflows.train_state"


def train(
    key,
    model: nnx.Module,
    loss_fn: Callable,
    data,
    *,
    learning_rate: float | optax.Schedule = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    batch_size: int = 128,
    max_epochs: int = 500,
    validation_fraction: float = 0.1,
    patience: int = 20,
    progress: bool = True,
    checkpoint=None,
    checkpoint_every: int = 1,
    loss_takes_key: bool = False,
    step_loop: str = "scan",
) -> tuple[nnx.Module, dict[str, np.ndarray]]:
    """Train any flax `nnx` model on a minimisation objective, by minibatch optax and early stopping.

    Pure: `model` is not modified; a trained copy is returned. The rows of `data` (a PyTree of
    arrays sharing their leading dimension `n`, e.g. a dict or a tuple; `None` leaves allowed) are
    split at random into a training part and a held-out `validation_fraction`. Every epoch (one pass
    over shuffled minibatches of the training rows, one compiled `lax.scan`) is followed by the loss
    of the validation rows as one batch; training stops after `patience` epochs without a better
    validation loss and the parameters (`nnx.Param`s; other state is carried unchanged) of the best
    epoch are returned. The result depends only on the inputs and `key`.

    A non-finite loss stops the run with a `RuntimeError` naming the epoch and step.

    **Checkpoints.** With `checkpoint=path`, the full training state (parameters, optimiser state,
    best parameters, key, counters, history) is written to `path` atomically every
    `checkpoint_every` epochs and at the end, in the federation format (kind `"jflows.train_state"`,
    with a digest of `data` and of the settings). A rerun with the same arguments resumes from the
    file and ends bit-for-bit where an uninterrupted run ends (a finished run's file returns its
    result at once); a file of another run (other data or settings) is refused with a `ValueError`.

    **Arguments:**

    - `key`: a `jax.random` key (validation split and minibatch order).
    - `model`: the initial `nnx.Module`.
    - `loss_fn`: `loss_fn(model, batch) -> scalar`, `batch` a PyTree like `data` with the rows of a
      minibatch; it must be a mean over the rows for the validation loss to be comparable.
    - `data`: the PyTree of `(n, ...)` arrays.
    - `learning_rate`: Adam's learning rate, a float or an `optax` schedule (of the step count).
    - `optimizer`: any `optax.GradientTransformation`, replacing Adam (`learning_rate` then unused).
    - `batch_size`: minibatch size (capped at the number of training rows; the last incomplete
      minibatch of each shuffled epoch is dropped).
    - `max_epochs`: maximal number of epochs.
    - `validation_fraction`: held-out fraction in `[0, 1)`; `0` trains for `max_epochs` without early
      stopping and returns the last parameters.
    - `patience`: epochs without a better validation loss before stopping.
    - `progress`: show a `rich` progress bar (epochs, losses, ETA) on stderr.
    - `checkpoint`: a file name for resumable training, or `None`.
    - `checkpoint_every`: epochs between two checkpoint writes.
    - `loss_takes_key`: call `loss_fn(model, batch, key)` with a fresh `jax.random` key at every
      training step (for a stochastic objective: data augmentation, noise injection), and with
      `key=None` for the validation loss (which must then be deterministic). The step keys derive
      from `key`, so the result stays reproducible and a resumed run stays bit-for-bit.
    - `step_loop`: `"scan"` runs an epoch's minibatch steps as one compiled `lax.scan` (the fastest
      for small models such as flows); `"python"` compiles one step and calls it once per minibatch,
      for models whose operations XLA runs slowly inside a loop (convolutions on CPU run about 10x
      slower inside a `lax.scan` body). The same random streams in both.

    **Returns:**

    `(trained_model, history)`, `history` a dict of NumPy arrays: `"loss"` (per-epoch mean training
    loss), `"val_loss"` (per-epoch validation loss; empty without a validation split),
    `"best_epoch"`, `"best_val_loss"`, `"epochs"` (0-d), `"val_indices"` (the validation rows).
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax nnx.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
    if not isinstance(loss_takes_key, bool):
        raise TypeError(f"loss_takes_key must be True or False, got {loss_takes_key!r}")
    if step_loop not in ("scan", "python"):
        raise ValueError(f"step_loop must be 'scan' or 'python', got {step_loop!r}")
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("data holds no arrays")
    shapes = [jnp.shape(a) for a in leaves]
    if any(len(s) == 0 for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise ValueError(f"the arrays of data must share their leading dimension, got {shapes}")
    n = shapes[0][0]
    if not (
        not isinstance(validation_fraction, bool)
        and isinstance(validation_fraction, numbers.Real)
        and 0.0 <= validation_fraction < 1.0
    ):
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    n_val = max(round(validation_fraction * n), 1) if validation_fraction > 0 else 0
    n_train = n - n_val
    if n_train < 1 or (validation_fraction > 0 and n < 2):
        raise ValueError(
            f"n={n} rows are too few for validation_fraction={validation_fraction} "
            f"({n_val} validation rows, {n_train} training rows)"
        )
    for name, value in (
        ("batch_size", batch_size),
        ("max_epochs", max_epochs),
        ("patience", patience),
        ("checkpoint_every", checkpoint_every),
    ):
        _check_positive_int(name, value)
    if optimizer is None and not callable(learning_rate):
        learning_rate = _real("learning_rate", learning_rate)
        if not math.isfinite(learning_rate):
            raise ValueError(f"learning_rate must be a finite number, got {learning_rate!r}")
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    batch_size = min(batch_size, n_train)
    steps = n_train // batch_size

    split_key, key = jax.random.split(key)
    perm = jax.random.permutation(split_key, n)
    tr, va = perm[n_val:], perm[:n_val]
    data_tr = jax.tree.map(lambda a: jnp.asarray(a)[tr], data)
    data_va = jax.tree.map(lambda a: jnp.asarray(a)[va], data)

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.copy, params)  # the caller's model never shares a buffer with ours
    tx = optimizer if optimizer is not None else optax.adam(learning_rate)
    opt_state = tx.init(params)

    def loss_of(params, batch, step_key=None):
        model = nnx.merge(graphdef, params, rest, copy=True)
        return loss_fn(model, batch, step_key) if loss_takes_key else loss_fn(model, batch)

    def plan(key):  # an epoch's minibatch rows and step keys
        if loss_takes_key:  # (the key-free path draws exactly what it drew before this option)
            key, steps_key = jax.random.split(key)
            step_keys = jax.random.split(steps_key, steps)
        else:
            step_keys = None
        order = jax.random.permutation(key, n_train)[: steps * batch_size].reshape(steps, -1)
        return order, step_keys

    def step(carry, xs, data_tr):
        params, opt_state = carry
        idx, step_key = xs
        batch = jax.tree.map(lambda a: a[idx], data_tr)
        loss, grads = jax.value_and_grad(loss_of)(params, batch, step_key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def validation(params, data_va, dtype):
        return loss_of(params, data_va) if n_val else jnp.zeros((), dtype)

    if step_loop == "scan":

        @jax.jit
        def epoch(params, opt_state, key, data_tr, data_va):
            # one compiled call per epoch: the shuffled minibatch steps, then the validation loss
            # (the data are arguments, not constants baked into the program)
            xs = plan(key)
            (params, opt_state), losses = jax.lax.scan(
                lambda c, x: step(c, x, data_tr), (params, opt_state), xs
            )
            return params, opt_state, losses, validation(params, data_va, losses.dtype)

    else:
        jit_plan, jit_step = jax.jit(plan), jax.jit(step)
        jit_validation = jax.jit(validation, static_argnums=2)

        def epoch(params, opt_state, key, data_tr, data_va):
            order, step_keys = jit_plan(key)
            carry, losses = (params, opt_state), []
            for i in range(steps):
                carry, loss = jit_step(
                    carry, (order[i], None if step_keys is None else step_keys[i]), data_tr
                )
                losses.append(loss)
            losses = jnp.stack(losses)
            return *carry, losses, jit_validation(carry[0], data_va, losses.dtype)

    history = {"loss": [], "val_loss": []}
    best_params, best_val, best_epoch, waited, start = params, math.inf, 0, 0, 0
    done = False
    path, settings, fingerprint = None, {}, ""
    if checkpoint is not None:
        from jflows import __version__

        path = pathlib.Path(os.fspath(checkpoint))
        settings = {
            "batch_size": batch_size,
            "max_epochs": max_epochs,
            "validation_fraction": float(validation_fraction),
            "patience": patience,
            "learning_rate": repr(learning_rate),
            "optimizer": repr(optimizer),
            "model": type(model).__qualname__,
        }
        if loss_takes_key:  # (absent otherwise: older checkpoints keep their fingerprint)
            settings["loss_takes_key"] = True
        if step_loop != "scan":
            settings["step_loop"] = step_loop
        fingerprint = _fingerprint((data, jax.random.key_data(key)), settings)
        state_tree = {"params": params, "opt_state": opt_state, "best": best_params, "key": key}
        if path.exists():
            restored, meta = read_checkpoint(
                path, state_tree, package="jflows", package_version=__version__, kind=_TRAIN_KIND
            )
            if meta.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{os.fspath(path)!r}: field 'metadata' ('fingerprint') belongs to another "
                    "run (other data, key or settings); delete the file or pass another path"
                )
            params, opt_state = restored["params"], restored["opt_state"]
            best_params, key = restored["best"], restored["key"]
            history = {k: list(meta["history"][k]) for k in ("loss", "val_loss")}
            best_val = math.inf if meta["best_val"] is None else meta["best_val"]
            best_epoch, waited, start = meta["best_epoch"], meta["waited"], meta["epochs"]
            done = meta["done"]

    def save(epochs, done):
        from jflows import __version__

        write_checkpoint(
            path,
            {"params": params, "opt_state": opt_state, "best": best_params, "key": key},
            package="jflows",
            package_version=__version__,
            kind=_TRAIN_KIND,
            metadata={
                "fingerprint": fingerprint,
                "settings": settings,
                "history": history,
                "best_val": None if math.isinf(best_val) else best_val,
                "best_epoch": best_epoch,
                "waited": waited,
                "epochs": epochs,
                "done": done,
            },
        )

    with progress_bar(
        "jflows.train",
        max_epochs,
        enabled=progress and not done,
        start=start,
        fields=("loss", "val"),
    ) as bar:
        ep = start
        while not done and ep < max_epochs:
            key, sub = jax.random.split(key)
            params, opt_state, losses, val = epoch(params, opt_state, sub, data_tr, data_va)
            losses = np.asarray(losses)
            if not np.all(np.isfinite(losses)):
                bad = int(np.flatnonzero(~np.isfinite(losses))[0])
                raise RuntimeError(
                    f"the training loss is {losses[bad]} at epoch {ep + 1}, step {bad + 1} of "
                    f"{steps}: check the data, the model's initial parameters and the learning rate"
                )
            train_loss = float(np.mean(losses))
            history["loss"].append(train_loss)
            if n_val:
                val = float(val)
                if not math.isfinite(val):
                    raise RuntimeError(
                        f"the validation loss is {val} at epoch {ep + 1} (training loss "
                        f"{train_loss:.6g})"
                    )
                history["val_loss"].append(val)
                if val < best_val:
                    best_params, best_val, best_epoch, waited = params, val, ep, 0
                else:
                    waited += 1
            else:
                best_params, best_epoch = params, ep
            ep += 1
            bar.update(ep, loss=train_loss, val=history["val_loss"][-1] if n_val else math.nan)
            done = ep >= max_epochs or bool(n_val and waited >= patience)
            if path is not None and (done or ep % checkpoint_every == 0):
                save(ep, done)
    out = {k: np.asarray(v, dtype=np.float64) for k, v in history.items()}
    out["best_epoch"] = np.asarray(best_epoch)
    out["best_val_loss"] = np.asarray(best_val if n_val else math.nan)
    out["epochs"] = np.asarray(len(history["loss"]))
    out["val_indices"] = np.asarray(va)
    return nnx.merge(graphdef, best_params, rest, copy=True), out


def fit(
    key,
    flow: ConditionalFlow,
    theta,
    x=None,
    score=None,
    *,
    score_weight: float | None = None,
    learning_rate: float | optax.Schedule = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    batch_size: int = 128,
    max_epochs: int = 500,
    validation_fraction: float = 0.1,
    patience: int = 20,
    progress: bool = True,
    checkpoint=None,
    checkpoint_every: int = 1,
) -> tuple[ConditionalFlow, dict[str, np.ndarray]]:
    r"""Train `q(theta | x)` on simulated pairs by NLL, optionally plus score matching.

    The loss of a minibatch is (Zeghal et al. 2022)

        L = - mean_i log q(theta_i | x_i)
            + score_weight * mean_i || ∇_theta log q(theta_i | x_i) - score_i ||^2,

    where `score_i = ∇_theta log p(theta_i, z_i | x_i)` is the joint score returned by a
    differentiable simulator (unbiased but noisy for the posterior score; its expectation over the
    latents `z` given `(theta, x)` is `∇_theta log p(theta | x)`). Training is
    [`train`][jflows.train] of this loss (minibatch Adam, early stopping on a random validation split,
    best parameters restored, progress bar, resumable checkpoints).

    The same function does **NPE** (`theta` = parameters, `x` = data or summaries: `q` is a posterior,
    see [`fit_npe`][jflows.fit_npe]) and **NLE** (`theta` = data summaries, `x` = parameters: `q` is a
    likelihood, see [`fit_nle`][jflows.fit_nle]; a score term then needs `∇_data log p`, rarely
    available).

    Checked before training (`ValueError`): shapes, NaN or inf in `theta`, `x` or `score`, `theta`
    outside the flow's `box`, non-finite or negative hyperparameters, a `score` without a
    `score_weight` and a `score_weight` without a `score`.

    **Arguments:**

    - `key`: a `jax.random` key (validation split and minibatch order).
    - `flow`: the initial `ConditionalFlow` (not modified; a trained copy is returned).
    - `theta`: `(n, flow.dim)` samples of the modelled variable.
    - `x`: `(n, flow.context_dim)` contexts (`None` for an unconditional flow).
    - `score`: `(n, flow.dim)` joint scores w.r.t. `theta`, or `None`.
    - `score_weight`: weight `lambda >= 0` of the score-matching term; required with a `score` (its
      useful value depends on the scores' scale, so it is never guessed), refused without one.
    - `learning_rate`, `optimizer`, `batch_size`, `max_epochs`, `validation_fraction`, `patience`,
      `progress`, `checkpoint`, `checkpoint_every`: as in [`train`][jflows.train].

    **Returns:**

    `(trained_flow, history)` as in [`train`][jflows.train] (`history["loss"]`, `["val_loss"]`, ...).
    """
    theta, x, score = _check_data(flow, theta, x, score)
    if score is not None and score_weight is None:
        raise ValueError(
            "a score was passed without a score_weight: pass score_weight=lambda (> 0 to use the "
            "score term; its scale depends on the scores', see the README) or drop the score"
        )
    if score is None and score_weight is not None:
        raise ValueError(f"score_weight={score_weight!r} was passed without a score")
    if score_weight is not None:
        score_weight = _real("score_weight", score_weight)
        if not math.isfinite(score_weight):
            raise ValueError(f"score_weight must be a finite number, got {score_weight!r}")
        if score_weight < 0:
            raise ValueError(f"score_weight must be >= 0, got {score_weight!r}")
        if score_weight == 0:
            score = None
    weight = jnp.asarray(0.0 if score_weight is None else score_weight, theta.dtype)

    def loss_fn(model, batch):
        return _loss(model, *batch, weight)

    return train(
        key,
        flow,
        loss_fn,
        (theta, x, score),
        learning_rate=learning_rate,
        optimizer=optimizer,
        batch_size=batch_size,
        max_epochs=max_epochs,
        validation_fraction=validation_fraction,
        patience=patience,
        progress=progress,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )


def fit_npe(key, flow, theta, x, score=None, **kwargs) -> tuple[ConditionalFlow, dict]:
    """Neural posterior estimation: `fit` of `q(theta | x)` with `theta` = parameters, `x` = data.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `flow`: a `ConditionalFlow(dim=theta.shape[1], context_dim=x.shape[1], ...)`.
    - `theta`: `(n, d)` parameters drawn from the prior.
    - `x`: `(n, c)` simulated data (or summaries) at those parameters.
    - `score`: optional `(n, d)` joint scores `∇_theta log p(theta, z | x)` from the simulator
      (then `score_weight=` is required).
    - `**kwargs`: keyword arguments of [`fit`][jflows.fit].

    **Returns:**

    `(posterior_flow, history)`; `posterior_flow.sample(key, x_obs, n)` samples `p(theta | x_obs)`.
    """
    return fit(key, flow, theta, x, score, **kwargs)


def fit_nle(key, flow, theta, x, score=None, **kwargs) -> tuple[ConditionalFlow, dict]:
    """Neural likelihood estimation: `fit` of `q(x | theta)`, the roles of `fit`'s arrays swapped.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `flow`: a `ConditionalFlow(dim=x.shape[1], context_dim=theta.shape[1], ...)`.
    - `theta`: `(n, d)` parameters (the context).
    - `x`: `(n, c)` simulated data summaries (the modelled variable).
    - `score`: optional `(n, c)` scores `∇_x log p(x, z | theta)` (rarely available).
    - `**kwargs`: keyword arguments of [`fit`][jflows.fit].

    **Returns:**

    `(likelihood_flow, history)`; `likelihood_flow.log_prob(x_obs, theta)` is `log q(x_obs | theta)`,
    to be added to a log-prior and sampled by MCMC.
    """
    return fit(key, flow, x, theta, score, **kwargs)


def held_out_nll(flow: ConditionalFlow, theta, x=None) -> jax.Array:
    """Mean negative log-density `-mean_i log q(theta_i | x_i)` of held-out pairs.

    **Arguments:**

    - `flow`: a `ConditionalFlow`.
    - `theta`: `(n, flow.dim)`.
    - `x`: `(n, flow.context_dim)` or `(flow.context_dim,)` (shared), `None` if unconditional.

    **Returns:**

    A scalar (lower is better; `inf` if a point lies outside a `box` support).
    """
    theta = jnp.asarray(theta)
    if theta.ndim != 2:
        raise ValueError(f"theta must have shape (n, {flow.dim}), got {theta.shape}")
    return -jnp.mean(flow.log_prob(theta, x))


# ---------------------------------------------------------------------------------- checkpoints
FLOW_KIND = "jflows.ConditionalFlow"


def save_checkpoint(path, flow: ConditionalFlow, *, metadata=None) -> pathlib.Path:
    """Write the flow's state (all parameters and scaling constants) to `path`, atomically.

    The file is in the federation's format ([`write_checkpoint`][jflows.write_checkpoint], msgpack, no
    pickle) with `package="jflows"`, `kind="jflows.ConditionalFlow"` and the leaves of
    `nnx.to_pure_dict(nnx.state(flow))`. The flow's configuration (dimensions, layers, transform) is not
    stored: reading needs a template built with the same configuration.

    **Arguments:**

    - `path`: file name (e.g. `"posterior.msgpack"`).
    - `flow`: the `ConditionalFlow` to save (not modified).
    - `metadata`: optional JSON-like mapping stored with it (read back by `read_checkpoint`).

    **Returns:**

    `pathlib.Path(path)`.
    """
    from jflows import __version__

    if not isinstance(flow, ConditionalFlow):
        raise TypeError(f"flow must be a ConditionalFlow, got {type(flow).__name__}")
    return write_checkpoint(
        path,
        nnx.to_pure_dict(nnx.state(flow)),
        package="jflows",
        package_version=__version__,
        kind=FLOW_KIND,
        metadata=metadata,
    )


def load_checkpoint(path, template: ConditionalFlow) -> ConditionalFlow:
    """Read a flow written by [`save_checkpoint`][jflows.save_checkpoint] into a new flow.

    Pure: `template` is not modified. The file is refused (`ValueError` naming the file and the
    field) if it is not a federation checkpoint, was written by another package, is not a
    `jflows.ConditionalFlow`, comes from an incompatible jflows version (another minor version while
    below 1.0), or its arrays do not match the template's names, shapes and dtypes.

    **Arguments:**

    - `path`: the file.
    - `template`: a flow constructed with the same configuration (its values are ignored).

    **Returns:**

    A new flow with the saved arrays (bit-for-bit).
    """
    from jflows import __version__

    if not isinstance(template, ConditionalFlow):
        raise TypeError(f"template must be a ConditionalFlow, got {type(template).__name__}")
    graphdef, state = nnx.split(template)
    pure, _ = read_checkpoint(
        path,
        nnx.to_pure_dict(state),
        package="jflows",
        package_version=__version__,
        kind=FLOW_KIND,
    )
    state = jax.tree.map(lambda a: a, state)  # a fresh State: the template's stays untouched
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state, copy=True)
