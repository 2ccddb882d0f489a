"""Explicit full-field inference: NUTS over a numpyro model's parameters and latent fields.

`sample_posterior` runs numpyro's NUTS with many chains vectorised on the devices' cores, a dense
mass matrix for a block of low-dimensional parameters (the cosmology) and a diagonal one for the
latent field. The chains advance in chunks of steps, each one compiled `lax.scan` of numpyro's
kernel (`NUTS.init` / `NUTS.sample`, the blackjax-style pure kernel API; adaptation happens inside
the first `num_warmup` steps), compiled once and reused. With `checkpoint=path` the chains' state
and the samples so far are written atomically after every chunk (the federation's checkpoint
format, no pickle), so a killed run resumes at the last finished chunk and ends bit-for-bit where an
uninterrupted run ends: an uninterrupted run goes through the same chunks.

Diagnostics per scalar component: split R-hat (numpyro), bulk ESS (numpyro's
`effective_sample_size` of the draws) and tail ESS (the minimum of the ESS of the indicators of the
5% and 95% quantiles, Vehtari et al. 2021), computed by hand on numpyro's ESS because arviz is not a
dependency.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import numbers
import os
import pathlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro

from jflows import progress_bar, read_checkpoint, write_checkpoint

__all__ = ["PosteriorSamples", "mcmc_diagnostics", "sample_posterior"]

HMC_KIND = "jinfer.sample_posterior"


@dataclasses.dataclass(frozen=True)
class PosteriorSamples:
    """What [`sample_posterior`][jinfer.sample_posterior] returns.

    - `samples`: site name -> array `(num_chains, num_samples, *site_shape)` (constrained values;
      deterministic sites included).
    - `diagnostics`: site name -> `{"r_hat", "ess_bulk", "ess_tail"}`, arrays of the site's shape.
    - `divergences`: number of divergent transitions per chain after warmup, `(num_chains,)`.
    - `accept_prob`: mean acceptance probability per chain after warmup, `(num_chains,)`.
    - `step_size`: the adapted step size per chain, `(num_chains,)`.
    """

    samples: dict[str, np.ndarray]
    diagnostics: dict[str, dict[str, np.ndarray]]
    divergences: np.ndarray
    accept_prob: np.ndarray
    step_size: np.ndarray


def _ess_tail(x):
    from numpyro.diagnostics import effective_sample_size

    out = []
    for q in (0.05, 0.95):
        ind = (x <= np.quantile(x, q, axis=(0, 1), keepdims=True)).astype(np.float64)
        # a constant indicator has no autocorrelation to speak of: its ESS is the number of draws
        flat = ind.reshape(ind.shape[0], ind.shape[1], -1)
        varies = flat.std(axis=(0, 1)) > 0
        ess = np.full(flat.shape[2], float(flat.shape[0] * flat.shape[1]))
        if varies.any():
            ess[varies] = effective_sample_size(flat[:, :, varies])
        out.append(ess.reshape(ind.shape[2:]))
    return np.minimum(*out)


def mcmc_diagnostics(samples: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """Split R-hat, bulk ESS and tail ESS of every component of every site.

    **Arguments:**

    - `samples`: site name -> array `(num_chains, num_draws, ...)` with at least 2 chains and 4
      draws.

    **Returns:**

    site name -> `{"r_hat": ..., "ess_bulk": ..., "ess_tail": ...}`, arrays of the site's shape.
    """
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    out = {}
    for name, x in samples.items():
        x = np.asarray(x, np.float64)
        if x.ndim < 2 or x.shape[0] < 2 or x.shape[1] < 4:
            raise ValueError(
                f"samples[{name!r}] must have shape (num_chains >= 2, num_draws >= 4, ...), "
                f"got {x.shape}"
            )
        out[name] = {
            "r_hat": np.asarray(split_gelman_rubin(x)),
            "ess_bulk": np.asarray(effective_sample_size(x)),
            "ess_tail": _ess_tail(x),
        }
    return out


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _digest(args, kwargs, settings) -> str:
    h = hashlib.sha256(repr(sorted(settings.items())).encode())

    def update_array(leaf):
        a = np.asarray(leaf)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())

    # numpyro distributions flatten their parameters in an order that changes from one process to
    # the next (hash-seeded): digest them by class and sorted parameter names instead
    is_distribution = lambda x: isinstance(x, numpyro.distributions.Distribution)  # noqa: E731
    for leaf in jax.tree.leaves((args, kwargs), is_leaf=is_distribution):
        if is_distribution(leaf):
            h.update(type(leaf).__qualname__.encode())
            h.update(repr((leaf.batch_shape, leaf.event_shape)).encode())
            for name in sorted(getattr(leaf, "arg_constraints", {})):
                h.update(name.encode())
                for sub in jax.tree.leaves(getattr(leaf, name, None)):
                    update_array(sub)
        elif isinstance(leaf, (np.ndarray, jax.Array, numbers.Number)):
            update_array(leaf)
        else:  # (memory addresses in a repr change from one process to the next)
            h.update(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(leaf)).encode())
    return h.hexdigest()


def sample_posterior(
    key,
    model: Callable,
    *model_args,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 1000,
    chunk_size: int | None = None,
    dense_mass: bool | Sequence[Sequence[str]] = False,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    keep: Sequence[str] | None = None,
    checkpoint=None,
    progress: bool = True,
    **model_kwargs,
) -> PosteriorSamples:
    """Sample a numpyro model's posterior with NUTS: many chains, resumable, with diagnostics.

    The model's latent sites (parameters and latent fields; use a non-centred latent, as
    `jlens.lognormal_model` does) are sampled by numpyro's NUTS with `num_chains` chains vectorised
    in one program. The first `num_warmup` steps adapt (step size by dual averaging to
    `target_accept_prob`, mass matrix from the warmup's windows) and are discarded; the next
    `num_samples` are the draws. Both run in chunks of `chunk_size` steps; a progress bar (rich, on
    stderr) counts the chunks, with the mean acceptance and the number of divergences so far.

    `dense_mass` is numpyro's: `False` (diagonal), `True` (dense over all sites), or a list of
    tuples of site names, each a dense block, the other sites diagonal: `[("Omega_c", "sigma8")]`
    for a dense mass on the cosmology next to a diagonal one on a latent field of 10^4 pixels.

    **Resuming.** With `checkpoint=path` the chains' state and the samples so far are written
    atomically to `path` after every chunk. A rerun with the same arguments
    resumes from the last finished chunk (a finished run's file returns at once) and ends
    bit-for-bit where an uninterrupted run ends; a file of another run (other key, settings or
    data) is refused with a `ValueError`.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `model`: a numpyro model; `model(*model_args, **model_kwargs)` with its observations given.
    - `num_chains`, `num_warmup`, `num_samples`: chains, warmup steps, draws per chain after warmup.
    - `chunk_size`: steps per chunk (default: `num_samples // 10`, at least 1).
    - `dense_mass`: as above.
    - `target_accept_prob`, `max_tree_depth`: NUTS's.
    - `keep`: the sites to return (default: all latent and deterministic sites). A large latent
      field costs `num_chains * num_samples * size` floats in memory and in the checkpoint.
    - `checkpoint`: a file name for a resumable run, or `None`.
    - `progress`: show the progress bar.

    **Returns:**

    A [`PosteriorSamples`][jinfer.PosteriorSamples]; diagnostics need `num_chains >= 2`.
    """
    from numpyro.infer import NUTS

    num_chains = _positive_int("num_chains", num_chains)
    num_warmup = _positive_int("num_warmup", num_warmup)
    num_samples = _positive_int("num_samples", num_samples)
    chunk = (
        max(num_samples // 10, 1) if chunk_size is None else _positive_int("chunk_size", chunk_size)
    )
    chunk = min(chunk, num_samples)
    if not (isinstance(target_accept_prob, numbers.Real) and 0.0 < float(target_accept_prob) < 1.0):
        raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob!r}")
    max_tree_depth = _positive_int("max_tree_depth", max_tree_depth)
    if not callable(model):
        raise TypeError(f"model must be a numpyro model (a callable), got {model!r}")
    if not isinstance(dense_mass, bool):
        dense_mass = [tuple(block) for block in dense_mass]
        for block in dense_mass:
            if not block or not all(isinstance(n, str) for n in block):
                raise ValueError(f"dense_mass blocks must be tuples of site names, got {block!r}")

    kernel_kwargs = {
        "dense_mass": dense_mass,
        "target_accept_prob": float(target_accept_prob),
        "max_tree_depth": max_tree_depth,
    }
    kernel = NUTS(model, **kernel_kwargs)
    # the run's plan: warmup then sampling, each in chunks of `chunk` steps (a shorter last one)
    plan = [("warmup", n) for n in _split(num_warmup, chunk)]
    plan += [("sample", n) for n in _split(num_samples, chunk)]

    settings = {
        "num_chains": num_chains,
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "chunk": chunk,
        "kernel": repr(kernel_kwargs),
        "keep": repr(None if keep is None else sorted(keep)),
        "model": getattr(model, "__qualname__", repr(model)),
        "key": np.asarray(jax.random.key_data(key)).tolist(),
    }
    path = None if checkpoint is None else pathlib.Path(os.fspath(checkpoint))
    fingerprint = _digest(model_args, model_kwargs, settings) if path is not None else ""

    # numpyro's kernel API (init / sample, vectorised over the chains by init's batch of keys);
    # adaptation happens inside `sample` during the first `num_warmup` steps
    state = kernel.init(
        jax.random.split(key, num_chains), num_warmup, None, model_args, model_kwargs
    )
    postprocess = kernel.postprocess_fn(model_args, model_kwargs)
    samples, done = None, 0
    stats = {"divergences": np.zeros(num_chains, np.int64), "accept": np.zeros(num_chains)}
    if path is not None and path.exists():
        state, samples, done, stats = _resume(path, state, num_chains, fingerprint)

    # array leaves of the model's arguments are traced; the other leaves (configuration objects such
    # as `jlens.LognormalConfig`, strings, callables) are closed over as constants
    leaves, treedef = jax.tree.flatten((model_args, model_kwargs))
    traced = [isinstance(leaf, jax.Array | np.ndarray | np.generic) for leaf in leaves]
    dynamic = [leaf if t else None for leaf, t in zip(leaves, traced, strict=True)]

    def _rebuild(dynamic):
        merged = [d if t else leaf for d, leaf, t in zip(dynamic, leaves, traced, strict=True)]
        return jax.tree.unflatten(treedef, merged)

    @functools.partial(jax.jit, static_argnums=(2, 3))
    def _advance(state, dynamic, n, collect):
        args, kwargs = _rebuild(dynamic)

        def body(s, _):
            s = kernel.sample(s, args, kwargs)
            return s, ((s.z, s.diverging, s.accept_prob) if collect else None)

        state, out = jax.lax.scan(body, state, None, length=n)
        if not collect:
            return state, None
        z, diverging, accept = out
        sites = jax.vmap(jax.vmap(postprocess))(z)  # (n, chains, ...)
        sites = {k: jnp.swapaxes(v, 0, 1) for k, v in sites.items() if keep is None or k in keep}
        return state, (sites, diverging.sum(0), accept.sum(0))

    def advance(state, n, collect):
        return _advance(state, dynamic, n, collect)

    def save(done):
        from jinfer import __version__

        tree = {
            "state": {str(i): leaf for i, leaf in enumerate(jax.tree.leaves(state))},
            "samples": samples or {},
            "divergences": stats["divergences"],
            "accept": stats["accept"],
        }
        meta = {
            "fingerprint": fingerprint,
            "done": done,
            "sites": {k: [list(v.shape[2:]), v.dtype.str] for k, v in (samples or {}).items()},
            "drawn": _drawn(samples),
        }
        write_checkpoint(
            path, tree, package="jinfer", package_version=__version__, kind=HMC_KIND,
            metadata=meta,
        )  # fmt: skip

    with progress_bar(
        "jinfer.sample_posterior", len(plan), enabled=progress, start=done,
        fields=("accept", "divergent"),
    ) as bar:  # fmt: skip
        for i in range(done, len(plan)):
            phase, n = plan[i]
            state, out = advance(state, n, phase == "sample")
            if out is not None:
                new, diverging, accept = out
                new = {k: np.asarray(v) for k, v in new.items()}
                stats = {
                    "divergences": stats["divergences"] + np.asarray(diverging, np.int64),
                    "accept": stats["accept"] + np.asarray(accept, np.float64),
                }
                samples = (
                    new if samples is None
                    else {k: np.concatenate([samples[k], new[k]], axis=1) for k in samples}
                )  # fmt: skip
            if path is not None:
                save(i + 1)
            drawn = _drawn(samples)
            bar.update(
                i + 1,
                accept=float(stats["accept"].mean() / drawn) if drawn else math.nan,
                divergent=int(stats["divergences"].sum()),
            )
    samples = samples or {}
    diagnostics = mcmc_diagnostics(samples) if num_chains >= 2 and num_samples >= 4 else {}
    return PosteriorSamples(
        samples=samples,
        diagnostics=diagnostics,
        divergences=np.asarray(stats["divergences"]),
        accept_prob=np.asarray(stats["accept"]) / num_samples,
        step_size=np.asarray(state.adapt_state.step_size),
    )


def _split(total, chunk):
    return [chunk] * (total // chunk) + ([total % chunk] if total % chunk else [])


def _drawn(samples):
    return next(iter(samples.values())).shape[1] if samples else 0


def _resume(path, template, num_chains, fingerprint):
    from jflows import checkpoint_info
    from jinfer import __version__

    name = os.fspath(path)
    info = checkpoint_info(path)
    for field, want in (("package", "jinfer"), ("kind", HMC_KIND)):
        if info[field] != want:
            raise ValueError(f"{name!r}: field {field!r} is {info[field]!r}, expected {want!r}")
    meta = info.get("metadata") or {}
    if meta.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{name!r}: field 'metadata' ('fingerprint') belongs to another run (other key, "
            "settings or data); delete the file or pass another path"
        )
    leaves, treedef = jax.tree.flatten(template)  # the kernel's initial state: the structure
    drawn = int(meta["drawn"])
    tree = {
        "state": {str(i): leaf for i, leaf in enumerate(leaves)},
        "samples": {
            site: np.zeros((num_chains, drawn, *shape), np.dtype(dtype))
            for site, (shape, dtype) in (meta.get("sites") or {}).items()
        },
        "divergences": np.zeros(num_chains, np.int64),
        "accept": np.zeros(num_chains),
    }
    restored, _ = read_checkpoint(
        path, tree, package="jinfer", package_version=__version__, kind=HMC_KIND
    )
    state = jax.tree.unflatten(treedef, [restored["state"][str(i)] for i in range(len(leaves))])
    samples = {k: np.asarray(v) for k, v in restored["samples"].items()} if drawn else None
    stats = {
        "divergences": np.asarray(restored["divergences"]),
        "accept": np.asarray(restored["accept"]),
    }
    return state, samples, int(meta["done"]), stats
