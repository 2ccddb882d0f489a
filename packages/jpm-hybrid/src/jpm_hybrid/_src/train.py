"""Training a correction through the PM integrator: the paper's loss, an optax loop with a progress
bar, atomic checkpoints in the federation's format, and a resume that is bit-for-bit."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import Array

import jflows
import jpm_core
from jflows import progress_bar

from ._checks import check_int, check_nonnegative_float
from .filters import SplineFilter, filter_function
from .filters import _cosmology_inputs as cosmology_inputs
from .pgd import PGDCorrection
from .simulate import TruthData, step_grid

_RUN_KIND = "jpm_hybrid.train_hybrid"
_HISTORY_KEYS = ("loss", "mse", "power")


def _package_version() -> str:
    from .. import __version__

    return __version__


def periodic_difference(x: Array, y: Array, mesh_shape: Sequence[int]) -> Array:
    """`x - y` wrapped into `[-L/2, L/2)` per axis (positions in mesh units, box `L = mesh_shape`)."""
    size = jnp.asarray(mesh_shape, x.dtype).reshape((1,) * (jnp.ndim(x) - 1) + (-1,))
    d = x - y
    return d - size * jnp.round(d / size)


def density_power(positions: Array, domain: jpm_core.Domain, k_edges: Array) -> Array:
    """`P(k)` of the CIC-painted density contrast of particles at `positions` (mesh units)."""
    rho = jpm_core.paint(positions, domain, scheme="cic")
    delta = rho / jnp.mean(rho) - 1.0
    return jpm_core.power_spectrum(delta, domain, k_edges=k_edges).power


class _Stacked(NamedTuple):
    """The training data as arrays with a leading simulation axis."""

    domain: jpm_core.Domain
    a_init: float
    a_snapshots: tuple[float, ...]
    cosmo: Any  # one concrete Cosmology shared by all, or a stacked Cosmology PyTree
    shared_cosmo: bool
    x0: Array
    p0: Array
    targets: Array
    pk_ref: Array
    k_edges: np.ndarray


def _as_truth_list(data) -> list[TruthData]:
    items = [data] if isinstance(data, TruthData) else list(data)
    if not items or not all(isinstance(d, TruthData) for d in items):
        raise TypeError("data must be a jpm_hybrid.TruthData or a non-empty sequence of them")
    return items


def _cosmo_values(cosmo) -> tuple[float, ...]:
    return tuple(float(np.asarray(getattr(cosmo, f.name))) for f in dataclasses.fields(cosmo))


def _stack(data) -> _Stacked:
    items = _as_truth_list(data)
    first = items[0]
    domain = first.domain
    a_init = float(np.asarray(first.initial.a))
    a_snaps = tuple(float(a) for a in np.asarray(first.snapshots.a))
    for i, d in enumerate(items):
        if d.domain != domain:
            raise ValueError(f"data[{i}].domain differs from data[0].domain")
        if (
            float(np.asarray(d.initial.a)) != a_init
            or tuple(float(a) for a in np.asarray(d.snapshots.a)) != a_snaps
        ):
            raise ValueError(f"data[{i}] has other scale factors than data[0]")
        if np.shape(d.snapshots.positions) != np.shape(first.snapshots.positions):
            raise ValueError(f"data[{i}].snapshots has another shape than data[0].snapshots")
    shared = all(_cosmo_values(d.cosmo) == _cosmo_values(first.cosmo) for d in items)
    cosmo = (
        first.cosmo
        if shared
        else jax.tree.map(
            lambda *v: jnp.stack([jnp.asarray(x) for x in v]), *[d.cosmo for d in items]
        )
    )
    edges = jpm_core.default_k_edges(domain)
    targets = jnp.stack([jnp.asarray(d.snapshots.positions) for d in items])
    pk_ref = jnp.stack([jnp.stack([density_power(x, domain, edges) for x in t]) for t in targets])
    return _Stacked(
        domain=domain,
        a_init=a_init,
        a_snapshots=a_snaps,
        cosmo=cosmo,
        shared_cosmo=shared,
        x0=jnp.stack([jnp.asarray(d.initial.positions) for d in items]),
        p0=jnp.stack([jnp.asarray(d.initial.momenta) for d in items]),
        targets=targets,
        pk_ref=pk_ref,
        k_edges=edges,
    )


def _select_cosmo(stacked: _Stacked, sim):
    if stacked.shared_cosmo:
        return stacked.cosmo
    return jax.tree.map(lambda v: v[sim], stacked.cosmo)


def _loss_terms(positions, targets, pk_ref, stacked: _Stacked):
    """(mse, power term) of predicted snapshots against targets."""
    d = periodic_difference(positions, targets, stacked.domain.mesh_shape)
    mse = jnp.mean(jnp.sum(d**2, axis=-1))
    power = 0.0
    for i in range(positions.shape[0]):
        pk = density_power(positions[i], stacked.domain, stacked.k_edges)
        ref = pk_ref[i]
        valid = ref > 0
        ratio = jnp.where(valid, pk / jnp.where(valid, ref, 1.0), 1.0)
        power = power + jnp.sum((ratio - 1.0) ** 2)
    return mse, power


def _make_loss(model, stacked: _Stacked, *, steps, power_weight, forces, gradient):
    """`(loss(params, sim) -> (total, (mse, power)), params, graphdef)` for a correction model."""
    steps = step_grid(stacked.a_init, stacked.a_snapshots, steps).tolist()
    if isinstance(model, SplineFilter):
        graphdef, params = nnx.split(model, nnx.Param)
        fn = filter_function(graphdef, model.config, stacked.domain)

        def predict(params, sim):
            cosmo = _select_cosmo(stacked, sim)
            state = jpm_core.ParticleState(stacked.x0[sim], stacked.p0[sim], stacked.a_init)
            filter_params = {"model": params, "cosmology": cosmology_inputs(model.config, cosmo)}
            return jpm_core.nbody(
                cosmo,
                state,
                stacked.domain,
                list(stacked.a_snapshots),
                steps=steps,
                a_init=stacked.a_init,
                forces=forces,
                gradient=gradient,
                potential_filter=fn,
                filter_params=filter_params,
            ).snapshots.positions

    elif isinstance(model, PGDCorrection):
        graphdef, params = nnx.split(model, nnx.Param)
        plain = []
        for sim in range(stacked.x0.shape[0]):
            state = jpm_core.ParticleState(stacked.x0[sim], stacked.p0[sim], stacked.a_init)
            plain.append(
                jpm_core.nbody(
                    _select_cosmo(stacked, sim),
                    state,
                    stacked.domain,
                    list(stacked.a_snapshots),
                    steps=steps,
                    forces=forces,
                ).snapshots.positions
            )
        plain = jnp.stack(plain)  # the PM run does not depend on the PGD parameters
        a_snaps = jnp.asarray(stacked.a_snapshots, plain.dtype)

        def predict(params, sim):
            pgd = nnx.merge(graphdef, nnx.State(params))
            x = plain[sim]
            return jnp.stack(
                [x[i] + pgd(x[i], stacked.domain, a_snaps[i]) for i in range(x.shape[0])]
            )

    else:
        raise TypeError(
            "model must be a jpm_hybrid.SplineFilter or a jpm_hybrid.PGDCorrection, got "
            f"{type(model).__name__}"
        )

    def loss(params, sim=0):
        positions = predict(params, sim)
        mse, power = _loss_terms(positions, stacked.targets[sim], stacked.pk_ref[sim], stacked)
        return mse + power_weight * power, (mse, power)

    return loss, nnx.to_pure_dict(params), graphdef


def make_loss(
    model: SplineFilter | PGDCorrection,
    data: TruthData | Sequence[TruthData],
    *,
    steps: int | Sequence[float],
    power_weight: float = 0.1,
    forces: jpm_core.ForceConfig | None = None,
    gradient: Any = None,
) -> tuple[Callable[..., Array], dict]:
    """The training loss of a correction as a function of its parameters.

    `loss(params, sim=0) = mean_snapshots mean_particles |x - x_ref|^2 + power_weight *
    sum_snapshots sum_k (P(k) / P_ref(k) - 1)^2`, the paper's loss: positions in mesh units of
    the coarse domain with periodic differences (the minimum image), `P` of the CIC-painted density
    in jpm-core's default bins (width `k_f`, up to the Nyquist frequency), bins without reference
    power skipped.

    **Arguments:**

    - `model`: a `SplineFilter` (the hybrid run is differentiated through `jpm_core.nbody`) or a
      `PGDCorrection` (the PM run is computed once; only the displacement is differentiated).
    - `data`: a `TruthData` or a sequence of them (same domain and scale factors); `sim` picks one.
    - `steps`: the hybrid run's steps (an int is spread over the snapshot intervals by
      `jpm_hybrid.step_grid`; or the explicit boundaries).
    - `power_weight`: lambda (0.1 or 0.01 in the paper).
    - `forces`, `gradient`: as in `jpm_core.nbody` (defaults `ForceConfig()`, `Adjoint()`).

    **Returns:** `(loss, params)`: `loss(params, sim=0) -> scalar` (jitted; differentiable with
    `jax.grad`) and the model's parameters as a pure dict (the point to differentiate at).
    """
    power_weight = check_nonnegative_float("power_weight", power_weight)
    forces = jpm_core.ForceConfig() if forces is None else forces
    gradient = jpm_core.Adjoint() if gradient is None else gradient
    loss, params, _ = _make_loss(
        model,
        _stack(data),
        steps=steps,
        power_weight=power_weight,
        forces=forces,
        gradient=gradient,
    )
    scalar = jax.jit(lambda p, sim: loss(p, sim)[0])
    return (lambda p, sim=0: scalar(p, jnp.asarray(sim, jnp.int32))), params


def _architecture(model) -> dict[str, Any]:
    if isinstance(model, SplineFilter):
        return {"model": "SplineFilter", **model.config.to_dict()}
    return {"model": "PGDCorrection", "mu": model.mu}


def _key_data(key) -> list[int]:
    key = jnp.asarray(key)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return [int(v) for v in np.asarray(key).ravel()]


def _fingerprint(stacked: _Stacked) -> str:
    digest = hashlib.sha256()
    for array in (stacked.x0, stacked.p0, stacked.targets):
        digest.update(np.ascontiguousarray(np.asarray(array)).tobytes())
    return digest.hexdigest()


def _empty_history(num_steps: int) -> dict[str, np.ndarray]:
    return {name: np.full((num_steps,), np.nan, np.float32) for name in _HISTORY_KEYS}


def _save_run(path, params, opt_state, step, history, settings) -> None:
    jflows.write_checkpoint(
        path,
        {
            "step": np.asarray(step, np.int32),
            "params": jax.device_get(params),
            "opt_state": jax.device_get(opt_state),
            "history": history,
        },
        package="jpm-hybrid",
        package_version=_package_version(),
        kind=_RUN_KIND,
        metadata={"settings": settings, "step": int(step)},
    )


def _load_run(path, params, opt_state, num_steps, settings):
    template = {
        "step": np.zeros((), np.int32),
        "params": params,
        "opt_state": opt_state,
        "history": _empty_history(num_steps),
    }
    tree, metadata = jflows.read_checkpoint(
        path, template, package="jpm-hybrid", package_version=_package_version(), kind=_RUN_KIND
    )
    saved = metadata.get("settings")
    if saved != settings:
        differ = sorted(
            k for k in settings if not isinstance(saved, dict) or saved.get(k) != settings[k]
        )
        raise ValueError(
            f"{os.fspath(path)!r}: field 'metadata' records a train_hybrid run with other settings "
            f"({', '.join(differ) or 'unknown'} differ); use another checkpoint path or delete it"
        )
    return tree["params"], tree["opt_state"], int(tree["step"]), tree["history"]


def train_hybrid(
    key: Array,
    model: SplineFilter | PGDCorrection,
    data: TruthData | Sequence[TruthData],
    *,
    num_steps: int,
    steps: int | Sequence[float],
    optimizer: optax.GradientTransformation | None = None,
    power_weight: float = 0.1,
    forces: jpm_core.ForceConfig | None = None,
    gradient: Any = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    progress: bool = True,
) -> tuple[SplineFilter | PGDCorrection, dict[str, np.ndarray]]:
    """Train a correction so that the hybrid run matches the truth: the paper's loss (see
    `jpm_hybrid.make_loss`) minimised with optax, gradients through the PM integrator
    (`jpm_core.nbody`'s reverse-time adjoint by default).

    Pure: the model passed in is not modified; a new one is returned. Step `t` trains on the
    simulation `randint(fold_in(key, t), 0, len(data))` (always the first with one), so a run is a
    function of its arguments. With `checkpoint=path` the run state (parameters, optimizer state,
    history) is written there atomically (jflows format) every `checkpoint_every` steps and at the
    end; a rerun with the same arguments that finds the file resumes from it and ends bit-for-bit
    where an uninterrupted run ends (same parameters, same history). A file from a run with other
    settings (model architecture, data, `num_steps`, `steps`, `power_weight`, key) is refused; the
    optimizer is not recorded: pass the same one.

    **Arguments:**

    - `key`: a `jax.random` key (picks the simulation of each step).
    - `model`: a `SplineFilter` or a `PGDCorrection` (left unchanged).
    - `data`: a `TruthData` or a sequence of them (same coarse domain and scale factors).
    - `num_steps`: optimisation steps in total.
    - `steps`: time steps of the hybrid run (as in `jpm_hybrid.make_loss`).
    - `optimizer`: an `optax.GradientTransformation` (default `optax.adam(1e-2)`, the paper's).
    - `power_weight`: lambda of the power-spectrum term (default 0.1).
    - `forces`, `gradient`: as in `jpm_core.nbody` (defaults `ForceConfig()`, `Adjoint()`).
    - `checkpoint`, `checkpoint_every`: where and how often to save (see above).
    - `progress`: a `rich` progress bar with the step, the ETA and the loss (stderr).

    **Returns:** `(trained_model, history)`: a new model and `{"loss", "mse", "power"}` per step
    (NumPy float32, `num_steps` entries; `loss = mse + power_weight * power` before the step's
    update).

    **Raises:** `RuntimeError` naming the step if the loss becomes non-finite (e.g. a filter that
    reversed the force); `ValueError`/`TypeError` for bad arguments or a foreign checkpoint.
    """
    num_steps = check_int("num_steps", num_steps, minimum=0)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, minimum=1)
    power_weight = check_nonnegative_float("power_weight", power_weight)
    forces = jpm_core.ForceConfig() if forces is None else forces
    gradient = jpm_core.Adjoint() if gradient is None else gradient
    optimizer = optax.adam(1e-2) if optimizer is None else optimizer
    stacked = _stack(data)
    loss_fn, params, graphdef = _make_loss(
        model, stacked, steps=steps, power_weight=power_weight, forces=forces, gradient=gradient
    )
    params = jax.tree.map(jnp.array, params)  # copies: the model is never touched
    opt_state = optimizer.init(params)
    n_sims = int(stacked.x0.shape[0])
    settings = {
        "architecture": _architecture(model),
        "num_steps": num_steps,
        "steps": steps if isinstance(steps, int) else [float(s) for s in steps],
        "power_weight": power_weight,
        "forces": [forces.kernel, forces.laplace, forces.scheme],
        "gradient": type(gradient).__name__,
        "n_sims": n_sims,
        "data_sha256": _fingerprint(stacked),
        "key": _key_data(key),
    }

    @jax.jit
    def update(params, opt_state, step):
        sim = jax.random.randint(jax.random.fold_in(key, step), (), 0, n_sims)
        (loss, (mse, power)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, sim)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, jnp.stack([loss, mse, power])

    start, history = 0, _empty_history(num_steps)
    if checkpoint is not None and os.path.exists(checkpoint):
        params, opt_state, start, history = _load_run(
            checkpoint, params, opt_state, num_steps, settings
        )
        history = {k: np.array(v) for k, v in history.items()}
    with progress_bar("jpm_hybrid.train_hybrid", num_steps, enabled=progress, start=start) as bar:
        for t in range(start, num_steps):
            params, opt_state, values = update(params, opt_state, jnp.asarray(t, jnp.int32))
            values = np.asarray(values)
            if not np.all(np.isfinite(values)):
                raise RuntimeError(
                    f"train_hybrid: the loss is not finite at step {t} ({values[0]!r}); a filter "
                    "with 1 + f < 0 reverses the force (see jpm_hybrid.force_reversal): lower "
                    "the learning rate"
                )
            for name, v in zip(_HISTORY_KEYS, values, strict=True):
                history[name][t] = v
            if bar.due(t + 1):
                bar.update(t + 1, loss=float(values[0]))
            if checkpoint is not None and (t + 1) % checkpoint_every == 0 and t + 1 < num_steps:
                _save_run(checkpoint, params, opt_state, t + 1, history, settings)
    if checkpoint is not None:
        _save_run(checkpoint, params, opt_state, num_steps, history, settings)
    trained = nnx.merge(graphdef, nnx.State(jax.tree.map(jnp.asarray, params)))
    return trained, {k: np.asarray(v, np.float32) for k, v in history.items()}
