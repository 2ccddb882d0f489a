"""Simulation campaigns: `(theta, x[, score])` sets for implicit inference, sharded and resumable.

A campaign is a folder: `campaign.json` (what the campaign is: its size, chunk size, key digest and
the arrays' names, shapes and dtypes) and one HDF5 file per finished chunk, `chunk_000000.h5`, ...
Each chunk is computed as one `jit` of the `vmap`ped simulator over its keys, the keys sharded over
the devices along a one-axis mesh, so the same code runs on one CPU, on 8 fake CPU devices or on
the GPUs of a machine. A chunk's file is written under a temporary name, flushed and moved into
place (`os.replace`): a killed campaign leaves finished chunks and at most a temporary file, which a
rerun deletes before going on from the first missing chunk. Simulation `i` uses the key
`split(fold_in(key, chunk), chunk_size)[i % chunk_size]`, so the result does not depend on the
devices, on the order in which chunks were computed, or on interruptions.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import pathlib
import uuid
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["load_campaign", "run_campaign"]

FORMAT = "jinfer/campaign"
FORMAT_VERSION = 1
MANIFEST = "campaign.json"


def _chunk_name(c: int) -> str:
    return f"chunk_{c:06d}.h5"


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def run_campaign(
    key,
    simulate: Callable,
    n: int,
    path,
    *,
    chunk_size: int = 256,
    devices=None,
    progress: bool = True,
) -> pathlib.Path:
    """Run `n` simulations in chunks, sharded over the devices, into a resumable folder of HDF5 files.

    `simulate(key) -> {"theta": ..., "x": ..., ...}` draws one simulation (parameters from the prior,
    then the data; any dict of arrays, e.g. with a `"score"`) from one key; it is `vmap`ped over a
    chunk's keys and `jit`ted with the keys sharded over `devices`. A rerun with the same arguments
    skips the finished chunks (a finished campaign returns at once); a folder of another campaign
    (other key, size, chunk size or arrays) is refused with a `ValueError`. Read the result with
    [`load_campaign`][jinfer.load_campaign].

    **Arguments:**

    - `key`: a `jax.random` key.
    - `simulate`: the per-simulation function, jit/vmap-able, returning a dict of arrays.
    - `n`: number of simulations.
    - `path`: the campaign folder (created if missing).
    - `chunk_size`: simulations per chunk (and per file); a multiple of the number of devices.
    - `devices`: the devices to shard over (default: `jax.devices()`, all of them).
    - `progress`: show a progress bar (chunks).

    **Returns:**

    `pathlib.Path(path)`.
    """
    from jflows import progress_bar

    n = _positive_int("n", n)
    chunk_size = _positive_int("chunk_size", chunk_size)
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must hold at least one device")
    if chunk_size % len(devices):
        raise ValueError(
            f"chunk_size={chunk_size} is not a multiple of the {len(devices)} devices: each chunk "
            "is split evenly over them"
        )
    if not callable(simulate):
        raise TypeError(f"simulate must be a callable simulate(key) -> dict, got {simulate!r}")
    if jax.process_count() > 1:
        raise NotImplementedError(
            "run_campaign runs in one process (any number of local devices); multi-host campaigns "
            "are not supported yet"
        )
    spec = jax.eval_shape(simulate, key)
    if not isinstance(spec, dict) or not spec or not all(isinstance(k, str) for k in spec):
        raise TypeError(
            f"simulate(key) must return a non-empty dict of arrays keyed by name, got {spec!r}"
        )
    for name, leaf in spec.items():
        if not hasattr(leaf, "shape") or "/" in name:
            raise TypeError(f"simulate(key)[{name!r}] must be an array (and its name have no '/')")
    n_chunks = -(-n // chunk_size)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n": n,
        "chunk_size": chunk_size,
        "n_chunks": n_chunks,
        "key": hashlib.sha256(np.asarray(jax.random.key_data(key)).tobytes()).hexdigest(),
        "arrays": {k: [list(v.shape), np.dtype(v.dtype).str] for k, v in spec.items()},
        "simulate": getattr(simulate, "__qualname__", type(simulate).__qualname__),
    }
    folder = pathlib.Path(os.fspath(path))
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST
    if manifest_path.exists():
        found = _read_manifest(folder)
        if found != manifest:
            differ = sorted(k for k in manifest if found.get(k) != manifest[k])
            raise ValueError(
                f"{os.fspath(folder)!r} holds another campaign (it differs in {differ}); delete it "
                "or pass another path"
            )
    else:
        _atomic_write_bytes(manifest_path, json.dumps(manifest, indent=1).encode())
    for stray in folder.glob(".*.tmp"):  # half-written chunks of a killed run
        stray.unlink()

    mesh = Mesh(np.asarray(devices), ("sims",))
    sharding = NamedSharding(mesh, PartitionSpec("sims"))
    run = jax.jit(jax.vmap(simulate), in_shardings=sharding)
    todo = [c for c in range(n_chunks) if not (folder / _chunk_name(c)).exists()]
    with progress_bar(
        "jinfer.run_campaign", n_chunks, enabled=progress, start=n_chunks - len(todo), fields=()
    ) as bar:
        for done, c in enumerate(todo, start=n_chunks - len(todo) + 1):
            keys = jax.random.split(jax.random.fold_in(key, c), chunk_size)
            out = run(jax.device_put(keys, sharding))
            rows = min(chunk_size, n - c * chunk_size)
            _write_chunk(folder, c, {k: np.asarray(v)[:rows] for k, v in out.items()})
            bar.update(done)
    return folder


def _atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_chunk(folder: pathlib.Path, c: int, arrays: dict[str, np.ndarray]) -> None:
    import h5py

    final = folder / _chunk_name(c)
    tmp = folder / f".{final.name}.{uuid.uuid4().hex}.tmp"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["chunk"] = c
            for name, a in arrays.items():
                f.create_dataset(name, data=a)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_manifest(folder: pathlib.Path) -> dict:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{os.fspath(path)!r} is not a campaign manifest: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(path)!r}: field 'format' is not {FORMAT!r}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)!r}: field 'format_version' is {manifest['format_version']}, newer "
            f"than the supported {FORMAT_VERSION}: upgrade jinfer to read it"
        )
    return manifest


def load_campaign(path, *, partial: bool = False) -> dict[str, np.ndarray]:
    """Read a campaign written by [`run_campaign`][jinfer.run_campaign] into one array per name.

    **Arguments:**

    - `path`: the campaign folder.
    - `partial`: return the finished chunks of an unfinished campaign (in simulation order, up to
      the first missing chunk) instead of raising.

    **Returns:**

    `{name: array (n, ...)}` with the names `simulate` returned.

    **Raises:**

    `ValueError` if the folder is not a campaign, a chunk is missing (unless `partial`), or a
    chunk's arrays do not match the manifest.
    """
    import h5py

    folder = pathlib.Path(os.fspath(path))
    manifest = _read_manifest(folder)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in manifest["arrays"]}
    for c in range(manifest["n_chunks"]):
        file = folder / _chunk_name(c)
        if not file.exists():
            if partial:
                break
            raise ValueError(
                f"{os.fspath(folder)!r}: chunk {c} of {manifest['n_chunks']} is missing (the "
                "campaign is unfinished: rerun run_campaign, or pass partial=True)"
            )
        with h5py.File(file, "r") as f:
            for name, (shape, dtype) in manifest["arrays"].items():
                if name not in f:
                    raise ValueError(f"{os.fspath(file)!r}: array {name!r} is missing")
                a = f[name][...]
                if a.shape[1:] != tuple(shape) or a.dtype != np.dtype(dtype):
                    raise ValueError(
                        f"{os.fspath(file)!r}: array {name!r} has shape {a.shape[1:]} and dtype "
                        f"{a.dtype}, the manifest says {tuple(shape)} and {np.dtype(dtype)}"
                    )
                parts[name].append(a)
    return {
        name: (
            np.concatenate(p)
            if p
            else np.zeros((0, *manifest["arrays"][name][0]), manifest["arrays"][name][1])
        )
        for name, p in parts.items()
    }
