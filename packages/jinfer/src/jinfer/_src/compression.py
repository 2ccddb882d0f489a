"""Neural compression of maps: a ResNet-style summary network, VMIM and regression baselines.

VMIM (variational mutual information maximisation; Jeffrey, Alsing & Lanusse 2021, Lanzieri, Zeghal
et al. 2024) trains a compressor `F` jointly with a conditional density `q(theta | s)` on simulations
`(theta_i, x_i)` by minimising `-E log q(theta | F(x))`: the minimum over `q` is the conditional
entropy of `theta` given `s = F(x)`, so the best `F` keeps the most information about `theta` (a
sufficient statistic reaches the entropy given the full map). The regression losses (MSE, MAE,
Gaussian NLL) are the baselines that paper compares against: MSE's summary is the posterior mean,
which is not sufficient in general.

Training is `jflows.train` (minibatch optax, early stopping, resumable atomic checkpoints); this module
writes no training loop. Data augmentation draws one element of the map's symmetry group per map and
step (the square's dihedral group D4; D2 for rectangular maps; optional periodic translations).
"""

from __future__ import annotations

import itertools
import numbers
import os
import pathlib
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jflows import ConditionalFlow, read_checkpoint, train, write_checkpoint

__all__ = [
    "VMIM",
    "MapCompressor",
    "augment_maps",
    "compression_loss",
    "load_compressor",
    "save_compressor",
    "train_compressor",
]

COMPRESSOR_KIND = "jinfer.compressor"
LOSSES = ("vmim", "mse", "mae", "gnll")


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class _ResBlock(nnx.Module):
    """`x + conv(act(conv(act(x))))`, the second convolution initialised small (near identity)."""

    def __init__(self, width, kernel_size, padding, activation, rngs):
        conv = {"kernel_size": (kernel_size, kernel_size), "padding": padding, "rngs": rngs}
        self.conv1 = nnx.Conv(width, width, **conv)
        self.conv2 = nnx.Conv(width, width, **conv)
        self.conv2.kernel[...] = 0.1 * self.conv2.kernel[...]
        self.activation = activation

    def __call__(self, h):
        return h + self.conv2(self.activation(self.conv1(self.activation(h))))


class MapCompressor(nnx.Module):
    r"""A ResNet-style CNN that compresses maps `(channels, ny, nx)` to a summary vector.

    A 3x3 stem convolution to `widths[0]` features; then one stage per width: `blocks` residual blocks
    (two convolutions each), and between stages a stride-2 convolution to the next width; then a
    global average over the map, a hidden dense layer and a linear head to `summary_dim` outputs. With
    `periodic=True` (the default, for the periodic maps of `jlens.lognormal_maps`) every convolution
    pads circularly, so a translation of the map by a multiple of the total stride `2**(len(widths)-1)`
    pixels leaves the summary unchanged; with `periodic=False` it pads with zeros (survey footprints).
    The maps are standardised first by `(map - loc) / scale` per channel.

    Called on `(channels, ny, nx)` it returns `(summary_dim,)`; on `(n, channels, ny, nx)` it returns
    `(n, summary_dim)`. A PyTree (flax nnx): it passes through `jax.jit`, `jax.vmap` and `jax.grad`.

    **Arguments:**

    - `channels`: number of channels of a map (tomographic bins; the layout is `jlens`'s
      `(n_bins, ny, nx)`).
    - `summary_dim`: number of summaries (the number of parameters for VMIM and MSE/MAE; twice that
      for the Gaussian-NLL baseline, which also predicts a log standard deviation).
    - `rngs`: `flax.nnx.Rngs` for initialisation.
    - `widths`: feature widths of the stages (default `(16, 32, 64)`).
    - `blocks`: residual blocks per stage.
    - `kernel_size`: odd convolution size.
    - `hidden`: width of the dense layer after pooling.
    - `periodic`: circular padding (periodic maps) or zero padding.
    - `activation`: a smooth activation (default `jax.nn.silu`).
    - `loc`, `scale`: the standardisation of the maps, scalars or shape `(channels,)` (e.g. the mean
      and standard deviation of the training maps per channel; `scale` must be positive).
    """

    def __init__(
        self,
        channels: int,
        summary_dim: int,
        *,
        rngs: nnx.Rngs,
        widths: Sequence[int] = (16, 32, 64),
        blocks: int = 1,
        kernel_size: int = 3,
        hidden: int = 64,
        periodic: bool = True,
        activation: Callable = jax.nn.silu,
        loc=0.0,
        scale=1.0,
    ):
        self.channels = _positive_int("channels", channels)
        self.summary_dim = _positive_int("summary_dim", summary_dim)
        widths = tuple(_positive_int("widths entry", w) for w in widths)
        if not widths:
            raise ValueError("widths must hold at least one width")
        blocks = _positive_int("blocks", blocks)
        kernel_size = _positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        hidden = _positive_int("hidden", hidden)
        if not isinstance(periodic, bool):
            raise TypeError(f"periodic must be True or False, got {periodic!r}")
        loc_arr, scale_arr = (
            np.broadcast_to(np.asarray(v, np.float64), (channels,)) for v in (loc, scale)
        )
        if not (
            np.all(np.isfinite(loc_arr))
            and np.all(np.isfinite(scale_arr))
            and np.all(scale_arr > 0)
        ):
            raise ValueError(
                f"loc must be finite and scale finite and > 0, got loc={loc!r}, scale={scale!r}"
            )
        self.widths, self.periodic, self.activation = widths, periodic, activation
        self.stride = 2 ** (len(widths) - 1)
        padding = "CIRCULAR" if periodic else "SAME"
        dtype = jnp.result_type(float)
        self.loc = nnx.Variable(jnp.asarray(loc_arr, dtype))
        self.scale = nnx.Variable(jnp.asarray(scale_arr, dtype))
        k = (kernel_size, kernel_size)
        self.stem = nnx.Conv(channels, widths[0], kernel_size=k, padding=padding, rngs=rngs)
        self.stages = nnx.List(
            [
                nnx.List(
                    [_ResBlock(w, kernel_size, padding, activation, rngs) for _ in range(blocks)]
                )
                for w in widths
            ]
        )
        self.downs = nnx.List(
            [
                nnx.Conv(a, b, kernel_size=k, strides=(2, 2), padding=padding, rngs=rngs)
                for a, b in itertools.pairwise(widths)
            ]
        )
        self.dense = nnx.Linear(widths[-1], hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, summary_dim, rngs=rngs)

    def _check(self, maps):
        shape = jnp.shape(maps)
        if len(shape) not in (3, 4) or shape[-3] != self.channels:
            raise ValueError(
                f"maps must have shape (channels={self.channels}, ny, nx) or (n, {self.channels}, "
                f"ny, nx), got {shape}"
            )
        if shape[-2] < self.stride or shape[-1] < self.stride:
            raise ValueError(
                f"maps of {shape[-2]} x {shape[-1]} pixels are smaller than the network's total "
                f"stride {self.stride} (widths={self.widths}): use larger maps or fewer stages"
            )

    def __call__(self, maps) -> jax.Array:
        self._check(maps)
        maps = jnp.asarray(maps)
        single = maps.ndim == 3
        h = maps[None] if single else maps
        h = (h - self.loc[...][None, :, None, None]) / self.scale[...][None, :, None, None]
        h = jnp.moveaxis(h, 1, -1)  # (n, ny, nx, channels): flax's layout
        h = self.stem(h)
        for i, stage in enumerate(self.stages):
            if i:
                h = self.downs[i - 1](self.activation(h))
            for block in stage:
                h = block(h)
        h = jnp.mean(self.activation(h), axis=(1, 2))
        out = self.head(self.activation(self.dense(h)))
        return out[0] if single else out


class VMIM(nnx.Module):
    """A compressor and a conditional flow `q(theta | F(x))`, trained together by VMIM.

    `log_prob(theta, maps)` is `flow.log_prob(theta, compressor(maps))`; `sample(key, maps, n)` draws
    from `q(theta | F(maps))` for one map; `summaries(maps)` is `compressor(maps)`.

    **Arguments:**

    - `compressor`: an `nnx.Module` mapping maps to summaries (e.g. a
      [`MapCompressor`][jinfer.MapCompressor]).
    - `flow`: a `jflows.ConditionalFlow` with `context_dim` equal to the number of summaries.
    """

    def __init__(self, compressor: nnx.Module, flow: ConditionalFlow):
        if not isinstance(compressor, nnx.Module):
            raise TypeError(
                f"compressor must be a flax nnx.Module, got {type(compressor).__name__}"
            )
        if not isinstance(flow, ConditionalFlow):
            raise TypeError(f"flow must be a jflows.ConditionalFlow, got {type(flow).__name__}")
        summary_dim = getattr(compressor, "summary_dim", None)
        if summary_dim is not None and summary_dim != flow.context_dim:
            raise ValueError(
                f"the compressor gives {summary_dim} summaries but the flow conditions on "
                f"context_dim={flow.context_dim}"
            )
        self.compressor, self.flow = compressor, flow

    def summaries(self, maps) -> jax.Array:
        return self.compressor(maps)

    def log_prob(self, theta, maps) -> jax.Array:
        return self.flow.log_prob(theta, self.compressor(maps))

    def sample(self, key, maps, n: int = 1) -> jax.Array:
        if jnp.ndim(maps) != 3:
            raise ValueError(
                f"sample takes one map (channels, ny, nx), got shape {jnp.shape(maps)}"
            )
        return self.flow.sample(key, self.compressor(maps), n)


def augment_maps(key, maps, *, translations: bool = False) -> jax.Array:
    """Apply a random symmetry of the map to each map: the dihedral group, optionally translations.

    For square maps each map gets one of the 8 elements of D4 (the rotations by multiples of 90
    degrees, with or without a reflection), uniformly; for rectangular maps one of the 4 elements of
    D2 (the reflections of each axis). With `translations=True` (periodic maps only) a uniform
    circular shift along each axis follows. Convergence maps are invariant in distribution under
    these (the shear's components are not, so transform shear maps with care). jit-able.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `maps`: `(n, channels, ny, nx)` (or `(channels, ny, nx)`: one map).
    - `translations`: add random periodic translations.

    **Returns:**

    The transformed maps, same shape.
    """
    maps = jnp.asarray(maps)
    if maps.ndim not in (3, 4):
        raise ValueError(
            f"maps must have shape (n, channels, ny, nx) or (channels, ny, nx), got {maps.shape}"
        )
    single = maps.ndim == 3
    m = maps[None] if single else maps
    n, _, ny, nx = m.shape
    k_flip, k_roll = jax.random.split(key)
    bits = jax.random.randint(k_flip, (n, 3), 0, 2).astype(bool)
    if ny != nx:
        bits = bits.at[:, 2].set(False)

    def one(x, b, shift):
        x = jnp.where(b[0], x[:, :, ::-1], x)
        x = jnp.where(b[1], x[:, ::-1, :], x)
        if ny == nx:  # the transpose with the two reflections generates D4
            x = jnp.where(b[2], jnp.swapaxes(x, 1, 2), x)
        if translations:
            x = jnp.roll(x, shift, axis=(1, 2))
        return x

    shifts = jax.random.randint(k_roll, (n, 2), 0, jnp.asarray([[ny, nx]]))
    out = jax.vmap(one)(m, bits, shifts)
    return out[0] if single else out


def _check_data(theta, maps):
    theta = jnp.asarray(theta)
    maps = jnp.asarray(maps)
    if theta.ndim == 1:
        theta = theta[:, None]
    if theta.ndim != 2:
        raise ValueError(f"theta must have shape (n, dim), got {theta.shape}")
    if maps.ndim != 4:
        raise ValueError(f"maps must have shape (n, channels, ny, nx), got {maps.shape}")
    if maps.shape[0] != theta.shape[0]:
        raise ValueError(f"theta has {theta.shape[0]} rows but maps has {maps.shape[0]}")
    for name, a in (("theta", theta), ("maps", maps)):
        if not np.all(np.isfinite(np.asarray(a))):
            raise ValueError(f"{name} holds non-finite values: every simulation must be finite")
    return theta, maps


def compression_loss(loss: str, *, augment: bool = True, translations: bool = False) -> Callable:
    """The training objective `loss_fn(model, batch, key)` for `jflows.train(..., loss_takes_key=True)`.

    `batch` is `{"theta": (n, dim), "maps": (n, channels, ny, nx)}`. With a key (training steps) and
    `augment=True` the maps are transformed by [`augment_maps`][jinfer.augment_maps] first; with
    `key=None` (validation) they are not.

    - `"vmim"`: `-mean log q(theta | F(x))`, `model` a [`VMIM`][jinfer.VMIM].
    - `"mse"`: `mean |F(x) - theta|^2`, `model` a compressor with `dim` summaries.
    - `"mae"`: `mean |F(x) - theta|_1`, same model.
    - `"gnll"`: the Gaussian NLL `mean sum_i [(theta_i - m_i)^2 / (2 s_i^2) + log s_i]` with
      `(m, log s) = F(x)`, `model` a compressor with `2 dim` summaries (the summary is `m`).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    for name, flag in (("augment", augment), ("translations", translations)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")

    def loss_fn(model, batch, key=None):
        maps, theta = batch["maps"], batch["theta"]
        if key is not None and augment:
            maps = augment_maps(key, maps, translations=translations)
        if loss == "vmim":
            return -jnp.mean(model.log_prob(theta, maps))
        s = model(maps)
        d = theta.shape[-1]
        if loss == "mse":
            return jnp.mean(jnp.sum((s - theta) ** 2, axis=-1))
        if loss == "mae":
            return jnp.mean(jnp.sum(jnp.abs(s - theta), axis=-1))
        m, log_s = s[:, :d], s[:, d:]
        return jnp.mean(jnp.sum(0.5 * (theta - m) ** 2 * jnp.exp(-2 * log_s) + log_s, axis=-1))

    return loss_fn


def train_compressor(
    key,
    model: nnx.Module,
    theta,
    maps,
    *,
    loss: str = "vmim",
    augment: bool = True,
    translations: bool = False,
    **train_kwargs,
) -> tuple[nnx.Module, dict[str, np.ndarray]]:
    """Train a compressor on simulations `(theta_i, maps_i)` by VMIM or a regression baseline.

    Pure: `model` is not modified. Checks the data (shapes, finite values, the model's fit to the loss)
    before any compute, then runs `jflows.train` with
    [`compression_loss`][jinfer.compression_loss]`(loss, augment=..., translations=...)`; every keyword
    of `jflows.train` passes through (`learning_rate`, `batch_size`, `max_epochs`, `patience`,
    `validation_fraction`, `progress`, `checkpoint` for a run that resumes after a kill, ...);
    `step_loop` defaults to `"python"` here (one compiled call per minibatch), as convolutions run
    about 10x slower inside a compiled loop on CPU.

    **Arguments:**

    - `key`: a `jax.random` key (validation split, minibatches, augmentations).
    - `model`: a [`VMIM`][jinfer.VMIM] for `loss="vmim"`; a compressor (e.g.
      [`MapCompressor`][jinfer.MapCompressor]) with `dim` summaries for `"mse"`/`"mae"`, `2 dim` for
      `"gnll"`.
    - `theta`: parameters, `(n, dim)` (or `(n,)`).
    - `maps`: simulated maps, `(n, channels, ny, nx)`.
    - `loss`: `"vmim"`, `"mse"`, `"mae"` or `"gnll"`.
    - `augment`, `translations`: see [`augment_maps`][jinfer.augment_maps].

    **Returns:**

    `(trained_model, history)` as `jflows.train` returns them.
    """
    theta, maps = _check_data(theta, maps)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    d = theta.shape[1]
    if loss == "vmim":
        if not isinstance(model, VMIM):
            raise TypeError(f"loss='vmim' trains a jinfer.VMIM, got {type(model).__name__}")
        if model.flow.dim != d:
            raise ValueError(f"the flow's dim is {model.flow.dim} but theta has {d} columns")
        out = jax.eval_shape(model.compressor, maps[:1])
    else:
        if isinstance(model, VMIM):
            raise TypeError(f"loss={loss!r} trains a compressor alone, not a VMIM")
        out = jax.eval_shape(model, maps[:1])
        want = 2 * d if loss == "gnll" else d
        if out.shape != (1, want):
            raise ValueError(
                f"loss={loss!r} needs {want} summaries per map for theta of dim {d}, the model "
                f"gives shape {out.shape[1:]}"
            )
    fn = compression_loss(loss, augment=augment, translations=translations)
    # one compiled call per minibatch: XLA runs convolutions ~10x slower inside a loop on CPU
    train_kwargs.setdefault("step_loop", "python")
    return train(
        key, model, fn, {"theta": theta, "maps": maps}, loss_takes_key=True, **train_kwargs
    )


def save_compressor(path, model: nnx.Module, *, metadata=None) -> pathlib.Path:
    """Write a compressor's (or a whole [`VMIM`][jinfer.VMIM]'s) state to `path`, atomically.

    The federation's checkpoint format (`jflows.write_checkpoint`: msgpack, no pickle, format and
    version) with `package="jinfer"`, `kind="jinfer.compressor"`, the module's class name in the
    metadata, and the leaves of `nnx.to_pure_dict(nnx.state(model))`. Reading needs a template built
    with the same configuration.
    """
    from jinfer import __version__

    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax nnx.Module, got {type(model).__name__}")
    meta = {"class": type(model).__qualname__, "user": metadata}
    return write_checkpoint(
        path,
        nnx.to_pure_dict(nnx.state(model)),
        package="jinfer",
        package_version=__version__,
        kind=COMPRESSOR_KIND,
        metadata=meta,
    )


def load_compressor(path, template: nnx.Module) -> nnx.Module:
    """Read a module written by [`save_compressor`][jinfer.save_compressor] into a copy of `template`.

    Pure: `template` is not modified. Refused with a `ValueError` naming the file when it is not a
    jinfer compressor, was written from another class, or its arrays do not match the template's
    names, shapes and dtypes (another architecture). Loads back bit-for-bit.
    """
    from jinfer import __version__

    if not isinstance(template, nnx.Module):
        raise TypeError(f"template must be a flax nnx.Module, got {type(template).__name__}")
    graphdef, state = nnx.split(template)
    pure, meta = read_checkpoint(
        path,
        nnx.to_pure_dict(state),
        package="jinfer",
        package_version=__version__,
        kind=COMPRESSOR_KIND,
    )
    if meta.get("class") != type(template).__qualname__:
        raise ValueError(
            f"{os.fspath(path)!r} holds a {meta.get('class')}, not a {type(template).__qualname__}"
        )
    state = jax.tree.map(lambda a: a, state)
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state, copy=True)
