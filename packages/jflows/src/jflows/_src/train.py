"""Training: `fit` (NLL + score matching, minibatch Adam, early stopping), NPE/NLE wrappers,
held-out NLL, and pickle-free checkpoints."""

from __future__ import annotations

import os
import sys
import time
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, serialization

from jflows._src.flow import ConditionalFlow

__all__ = ["fit", "fit_nle", "fit_npe", "held_out_nll", "load", "save"]


def _as_2d(name, a, n=None):
    a = jnp.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (n, k), got {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} rows but theta has {n}: shapes must match")
    return a


def _check_data(flow, theta, x, score):
    if not isinstance(flow, ConditionalFlow):
        raise TypeError(f"flow must be a ConditionalFlow, got {type(flow).__name__}")
    dtype = flow._dtype()
    theta = _as_2d("theta", theta).astype(dtype)
    n = theta.shape[0]
    if theta.shape[1] != flow.dim:
        raise ValueError(f"theta must have shape (n, {flow.dim}), got {theta.shape}")
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


def fit(
    flow: ConditionalFlow,
    theta,
    x=None,
    score=None,
    *,
    key,
    score_weight: float = 0.0,
    learning_rate: float | optax.Schedule = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    batch_size: int = 128,
    max_epochs: int = 500,
    validation_fraction: float = 0.1,
    patience: int = 20,
    progress: bool = True,
) -> tuple[ConditionalFlow, dict]:
    r"""Train `q(theta | x)` on simulated pairs by NLL, optionally plus score matching.

    The loss of a minibatch is (Zeghal et al. 2022)

        L = - mean_i log q(theta_i | x_i)
            + score_weight * mean_i || ∇_theta log q(theta_i | x_i) - score_i ||^2,

    where `score_i = ∇_theta log p(theta_i, z_i | x_i)` is the joint score returned by a
    differentiable simulator (unbiased but noisy for the posterior score; its expectation over the
    latents `z` given `(theta, x)` is `∇_theta log p(theta | x)`). A random `validation_fraction` of
    the rows is held out; every epoch (one pass over shuffled minibatches of the rest) is followed by
    the validation loss, training stops after `patience` epochs without improvement, and the
    parameters of the best epoch are returned. Each epoch is one compiled call (`jax.jit` of a
    `lax.scan` over the minibatch steps), so the result depends only on the inputs and `key`.

    The same function does **NPE** (`theta` = parameters, `x` = data or summaries: `q` is a posterior,
    see [`fit_npe`][jflows.fit_npe]) and **NLE** (`theta` = data summaries, `x` = parameters: `q` is a
    likelihood, see [`fit_nle`][jflows.fit_nle]; a score term then needs `∇_data log p`, rarely
    available).

    **Arguments:**

    - `flow`: the initial `ConditionalFlow` (not modified; a trained copy is returned).
    - `theta`: `(n, flow.dim)` samples of the modelled variable.
    - `x`: `(n, flow.context_dim)` contexts (`None` for an unconditional flow).
    - `score`: `(n, flow.dim)` joint scores w.r.t. `theta`, or `None` (then `score_weight` is unused).
    - `key`: a `jax.random` key (validation split and minibatch order).
    - `score_weight`: weight `lambda` of the score-matching term.
    - `learning_rate`: Adam's learning rate, a float or an `optax` schedule (of the step count).
    - `optimizer`: any `optax.GradientTransformation`, replacing Adam (`learning_rate` then unused).
    - `batch_size`: minibatch size (capped at the number of training rows; the last incomplete
      minibatch of each shuffled epoch is dropped).
    - `max_epochs`: maximal number of epochs.
    - `validation_fraction`: held-out fraction in `[0, 1)`; `0` trains for `max_epochs` without early
      stopping and returns the last parameters.
    - `patience`: epochs without a better validation loss before stopping.
    - `progress`: print a one-line progress report to stderr (updated in place).

    **Returns:**

    `(trained_flow, history)` with `history = {"train_loss": [...], "val_loss": [...],
    "best_epoch": int, "best_val_loss": float, "epochs": int, "val_indices": array}` (per-epoch
    mean losses; `val_loss` empty when there is no validation split; `val_indices` are the rows held
    out for validation).
    """
    theta, x, score = _check_data(flow, theta, x, score)
    n = theta.shape[0]
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    n_val = round(validation_fraction * n) if validation_fraction > 0 else 0
    if validation_fraction > 0:
        n_val = max(n_val, 1)
    n_train = n - n_val
    if n_train < 1 or (validation_fraction > 0 and n < 2):
        raise ValueError(
            f"n={n} rows are too few for validation_fraction={validation_fraction} "
            f"({n_val} validation rows, {n_train} training rows)"
        )
    for name, value in (("batch_size", batch_size), ("max_epochs", max_epochs)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(patience, int) or patience < 1:
        raise ValueError(f"patience must be a positive int, got {patience!r}")
    if score_weight < 0:
        raise ValueError(f"score_weight must be >= 0, got {score_weight!r}")
    if score is not None and score_weight == 0:
        score = None
    batch_size = min(batch_size, n_train)
    steps = n_train // batch_size

    split_key, key = jax.random.split(key)
    perm = jax.random.permutation(split_key, n)
    tr, va = perm[n_val:], perm[:n_val]

    def take(a, idx):
        return None if a is None else a[idx]

    data_tr = (theta[tr], take(x, tr), take(score, tr))
    data_va = (theta[va], take(x, va), take(score, va))

    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
    tx = optimizer if optimizer is not None else optax.adam(learning_rate)
    opt_state = tx.init(params)
    weight = jnp.asarray(score_weight, theta.dtype)

    def loss_fn(params, batch):
        model = nnx.merge(graphdef, params, rest, copy=True)
        return _loss(model, *batch, weight)

    @jax.jit
    def epoch(params, opt_state, key, data_tr, data_va):
        # one compiled call per epoch: the shuffled minibatch steps, then the validation loss
        # (the data are arguments, not constants baked into the program)
        order = jax.random.permutation(key, n_train)[: steps * batch_size].reshape(steps, -1)

        def step(carry, idx):
            params, opt_state = carry
            batch = jax.tree.map(lambda a: a[idx], data_tr)
            loss, grads = jax.value_and_grad(loss_fn)(params, batch)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
        val = loss_fn(params, data_va) if n_val else jnp.zeros((), losses.dtype)
        return params, opt_state, jnp.mean(losses), val

    history = {"train_loss": [], "val_loss": []}
    best_params, best_val, best_epoch, waited = params, np.inf, 0, 0
    start = time.perf_counter()
    for ep in range(max_epochs):
        key, sub = jax.random.split(key)
        params, opt_state, train_loss, val = epoch(params, opt_state, sub, data_tr, data_va)
        history["train_loss"].append(float(train_loss))
        if n_val:
            val = float(val)
            history["val_loss"].append(val)
            if val < best_val:
                best_params, best_val, best_epoch, waited = params, val, ep, 0
            else:
                waited += 1
        else:
            best_params, best_epoch = params, ep
        if progress:
            msg = f"\rjflows.fit epoch {ep + 1}/{max_epochs} train {float(train_loss):.4f}"
            if n_val:
                msg += f" val {history['val_loss'][-1]:.4f} best {best_val:.4f}@{best_epoch + 1}"
            sys.stderr.write(msg + f" [{time.perf_counter() - start:.1f}s]")
            sys.stderr.flush()
        if n_val and waited >= patience:
            break
    if progress:
        sys.stderr.write("\n")
    history["best_epoch"] = best_epoch
    history["val_indices"] = np.asarray(va)
    history["best_val_loss"] = float(best_val) if n_val else float("nan")
    history["epochs"] = len(history["train_loss"])
    return nnx.merge(graphdef, best_params, rest, copy=True), history


def fit_npe(flow, theta, x, score=None, **kwargs) -> tuple[ConditionalFlow, dict]:
    """Neural posterior estimation: `fit` of `q(theta | x)` with `theta` = parameters, `x` = data.

    **Arguments:**

    - `flow`: a `ConditionalFlow(dim=theta.shape[1], context_dim=x.shape[1], ...)`.
    - `theta`: `(n, d)` parameters drawn from the prior.
    - `x`: `(n, c)` simulated data (or summaries) at those parameters.
    - `score`: optional `(n, d)` joint scores `∇_theta log p(theta, z | x)` from the simulator.
    - `**kwargs`: keyword arguments of [`fit`][jflows.fit] (`key` is required).

    **Returns:**

    `(posterior_flow, history)`; `posterior_flow.sample(key, x_obs, n)` samples `p(theta | x_obs)`.
    """
    return fit(flow, theta, x, score, **kwargs)


def fit_nle(flow, theta, x, score=None, **kwargs) -> tuple[ConditionalFlow, dict]:
    """Neural likelihood estimation: `fit` of `q(x | theta)`, the roles of `fit`'s arrays swapped.

    **Arguments:**

    - `flow`: a `ConditionalFlow(dim=x.shape[1], context_dim=theta.shape[1], ...)`.
    - `theta`: `(n, d)` parameters (the context).
    - `x`: `(n, c)` simulated data summaries (the modelled variable).
    - `score`: optional `(n, c)` scores `∇_x log p(x, z | theta)` (rarely available).
    - `**kwargs`: keyword arguments of [`fit`][jflows.fit] (`key` is required).

    **Returns:**

    `(likelihood_flow, history)`; `likelihood_flow.log_prob(x_obs, theta)` is `log q(x_obs | theta)`,
    to be added to a log-prior and sampled by MCMC.
    """
    return fit(flow, x, theta, score, **kwargs)


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
_FORMAT = "jflows-state-v1"


def _named_leaves(flow):
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(flow))[0]
    return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


def save(path, flow: ConditionalFlow) -> None:
    """Write the flow's state (all parameters and scaling constants) to `path` as msgpack.

    No pickle: the file holds a flat map from each leaf's PyTree path to its array. It is written to
    a temporary file in the same directory and moved into place with `os.replace` (atomic).

    **Arguments:**

    - `path`: file name (e.g. `"posterior.msgpack"`).
    - `flow`: the `ConditionalFlow` (or any nnx module) to save.
    """
    from jflows import __version__

    arrays = {name: np.asarray(leaf) for name, leaf in _named_leaves(flow).items()}
    blob = serialization.msgpack_serialize(
        {"format": _FORMAT, "version": __version__, "arrays": arrays}
    )
    path = os.fspath(path)
    tmp = os.path.join(
        os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp"
    )
    try:
        with open(tmp, "xb") as f:  # a fresh file, with the usual (umask) permissions
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(path, flow_template: ConditionalFlow) -> ConditionalFlow:
    """Read a state written by [`save`][jflows.save] into a copy of `flow_template`.

    **Arguments:**

    - `path`: the file.
    - `flow_template`: a flow constructed with the same configuration (its values are ignored).

    **Returns:**

    A new flow with the saved arrays (bit-for-bit); `ValueError` if names, shapes or dtypes differ.
    """
    with open(path, "rb") as f:
        blob = serialization.msgpack_restore(f.read())
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a jflows checkpoint ({_FORMAT})")
    saved = blob["arrays"]
    graphdef, state = nnx.split(flow_template)
    flat, treedef = jax.tree_util.tree_flatten_with_path(state)
    names = [jax.tree_util.keystr(p) for p, _ in flat]
    if sorted(names) != sorted(saved):
        missing, extra = set(names) - set(saved), set(saved) - set(names)
        raise ValueError(
            f"checkpoint does not match the template: missing {sorted(missing)}, "
            f"unexpected {sorted(extra)}"
        )
    leaves = []
    for name, (_, leaf) in zip(names, flat, strict=True):
        value = np.asarray(saved[name])
        if value.shape != leaf.shape or value.dtype != leaf.dtype:
            raise ValueError(
                f"{name}: checkpoint has {value.dtype}{value.shape}, template "
                f"{leaf.dtype}{leaf.shape}"
            )
        leaves.append(jnp.asarray(value))
    return nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, leaves))
