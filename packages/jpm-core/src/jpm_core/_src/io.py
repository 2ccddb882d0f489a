"""Snapshot files: particle states, their cosmology and domain, in a NumPy `.npz` archive.

Format (`"jpm-core-snapshots"`, version 1), one compressed `.npz` (`numpy.savez_compressed`):

- `positions`, `momenta`: `(n_snapshots, *particle_shape, 3)`, the dtype of the simulation,
  stored bit for bit;
- `a`: `(n_snapshots,)`, the scale factors;
- `metadata`: a 0-d unicode array holding a JSON object (loaded without pickle): the format name
  and version, the `jpm_core` version, the units, the `Cosmology` parameters, the `Domain`, the
  scale factors, and any user entries (e.g. seed, command line).

Files are written atomically: to a temporary file in the target directory, flushed to disk, then
renamed over the final name with `os.replace`, so a reader never sees a partial file under the final
name (an interrupted write leaves at most a `.tmp` file next to it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jpm_core._src.cosmology.parameters import Cosmology, check_cosmology
from jpm_core._src.domain import Domain
from jpm_core._src.state import ParticleState

__all__ = ["SnapshotFile", "load_snapshots", "save_snapshots"]

FORMAT_NAME = "jpm-core-snapshots"
FORMAT_VERSION = 1
_ARRAYS = ("positions", "momenta", "a")
_RESERVED = (
    "format",
    "format_version",
    "jpm_core_version",
    "units",
    "cosmology",
    "domain",
    "scale_factors",
    "n_snapshots",
    "particle_shape",
    "dtype",
)


class SnapshotFile(NamedTuple):
    """What `load_snapshots` returns.

    - `snapshots`: a `ParticleState` of NumPy arrays, `positions` and `momenta`
      `(n_snapshots, *particle_shape, 3)` in mesh units, `a` `(n_snapshots,)`.
    - `cosmo`: the `Cosmology` of the run (Python floats).
    - `domain`: the `Domain` of the run.
    - `metadata`: the full JSON metadata (a dict), user entries included.
    """

    snapshots: ParticleState
    cosmo: Cosmology
    domain: Domain
    metadata: dict[str, Any]


def _units(domain: Domain) -> dict[str, Any]:
    return {
        "length": "Mpc/h (comoving)",
        "positions": (
            "mesh units: cells of the domain, node i at coordinate i; multiply axis j by "
            "cell_size_mpc_h[j] for comoving Mpc/h; not wrapped into the periodic box "
            "(positions - Lagrangian grid = displacement)"
        ),
        "cell_size_mpc_h": list(domain.cell_size),
        "momenta": (
            "canonical momentum p = a^3 E(a) dx/da (FastPM/pmwd convention), x in mesh units, "
            "time in units of 1/H0; peculiar velocity in km/s = 100 * cell_size_mpc_h[j] * p / a"
        ),
        "a": "scale factor (a = 1 today)",
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metadata value {value!r} of type {type(value).__name__} is not JSON-able")


def _stack_states(result_or_states: Any) -> ParticleState:
    """An `NBodyResult`, a (stacked or single) `ParticleState` or a sequence of states -> stacked."""
    states = getattr(result_or_states, "snapshots", result_or_states)
    if isinstance(states, ParticleState):
        positions = np.asarray(states.positions)
        momenta = np.asarray(states.momenta)
        a = np.asarray(states.a)
        if a.ndim == 0:  # one state: add the snapshot axis
            positions, momenta, a = positions[None], momenta[None], a[None]
    elif (
        isinstance(states, Sequence)
        and states
        and all(isinstance(s, ParticleState) for s in states)
    ):
        positions = np.stack([np.asarray(s.positions) for s in states])
        momenta = np.stack([np.asarray(s.momenta) for s in states])
        a = np.stack([np.asarray(s.a) for s in states])
    else:
        raise TypeError(
            "result_or_states must be an NBodyResult, a ParticleState or a non-empty sequence of "
            f"ParticleState, got {type(result_or_states).__name__}"
        )
    if a.ndim != 1:
        raise ValueError(f"the scale factors must be a scalar per snapshot, got shape {a.shape}")
    if positions.ndim < 3 or positions.shape[-1] != 3 or positions.shape[0] != a.shape[0]:
        raise ValueError(
            f"positions must have shape (n_snapshots={a.shape[0]}, ..., 3), got {positions.shape}"
        )
    if momenta.shape != positions.shape:
        raise ValueError(
            f"momenta must have the shape of positions {positions.shape}, got {momenta.shape}"
        )
    return ParticleState(positions=positions, momenta=momenta, a=a)


def save_snapshots(
    path: str | os.PathLike[str],
    result_or_states: Any,
    *,
    domain: Domain,
    cosmo: Cosmology,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write particle snapshots, their cosmology and domain to a compressed `.npz` file, atomically.

    The arrays are stored bit for bit (the simulation's dtype); the JSON metadata records the
    units (positions in mesh units with the Mpc/h cell size, momenta `p = a^3 E dx/da`), the
    cosmology, the domain, the scale factors and the `jpm_core` version. The file appears under
    `path` only once complete (temporary file in the same directory, then `os.replace`); an
    existing file there is replaced.

    **Arguments:**

    - `path`: the file to write (used as given; `.npz` is the conventional suffix).
    - `result_or_states`: an `NBodyResult` (its `snapshots`), a `ParticleState` (stacked, with
      `a` of shape `(n_snapshots,)`, or a single state with a scalar `a`) or a sequence of
      single `ParticleState`s.
    - `domain`: the `Domain` of the run (positions are in its mesh units).
    - `cosmo`: the `Cosmology` of the run (concrete values; checked with `check_cosmology`).
    - `metadata`: optional extra JSON-able entries (str, numbers, bools, None, lists, dicts;
      NumPy scalars and arrays are converted to numbers and lists), e.g. the seed and the
      command line. They are stored at the top level of the metadata; the names used by the
      format itself (`format`, `units`, `cosmology`, `domain`, ...) are refused.

    **Returns:** the `pathlib.Path` written.

    **Raises:** `TypeError`/`ValueError` for inconsistent states, a bad cosmology or domain,
    reserved or non-JSON-able metadata.
    """
    if not isinstance(domain, Domain):
        raise TypeError(f"domain must be a jpm_core.Domain, got {type(domain).__name__}")
    check_cosmology(cosmo)
    states = _stack_states(result_or_states)
    user = dict(metadata or {})
    clash = sorted(set(user) & set(_RESERVED))
    if clash:
        raise ValueError(f"metadata keys {clash} are reserved by the snapshot format")
    if not all(isinstance(key, str) for key in user):
        raise TypeError(f"metadata keys must be strings, got {list(user)!r}")

    from jpm_core import __version__  # the package's own version, without an import cycle

    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "jpm_core_version": __version__,
        "units": _units(domain),
        "cosmology": {
            f.name: float(np.asarray(getattr(cosmo, f.name))) for f in dataclasses.fields(cosmo)
        },
        "domain": {
            "mesh_shape": list(domain.mesh_shape),
            "box_size": list(domain.box_size),
            "device_grid": list(domain.device_grid),
            "halo": domain.halo,
            "on_stray": domain.on_stray,
            "fft_backend": domain.fft_backend,
        },
        "scale_factors": [float(a) for a in states.a],
        "n_snapshots": int(states.a.shape[0]),
        "particle_shape": list(states.positions.shape[1:-1]),
        "dtype": str(states.positions.dtype),
        **user,
    }
    text = json.dumps(meta, default=_json_default, allow_nan=False)

    path = Path(path)
    # a unique name next to the target (same file system, so os.replace is atomic), created with
    # O_EXCL and the default permissions (umask), unlike tempfile.mkstemp's 0600
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(
                handle,
                positions=states.positions,
                momenta=states.momenta,
                a=states.a,
                metadata=np.array(text),
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def load_snapshots(path: str | os.PathLike[str]) -> SnapshotFile:
    """Read a snapshot file written by `save_snapshots`.

    **Arguments:**

    - `path`: the `.npz` file.

    **Returns:** a `SnapshotFile` `(snapshots, cosmo, domain, metadata)`: the stacked
    `ParticleState` of NumPy arrays exactly as saved, the reconstructed `Cosmology` and `Domain`,
    and the metadata dict.

    **Raises:** `ValueError` if the file is not a jpm-core snapshot file of a known version.
    """
    with np.load(path, allow_pickle=False) as archive:
        missing = [name for name in (*_ARRAYS, "metadata") if name not in archive.files]
        if missing:
            raise ValueError(f"{os.fspath(path)!r} is not a jpm-core snapshot file: no {missing}")
        arrays = {name: archive[name] for name in _ARRAYS}
        meta = json.loads(str(archive["metadata"][()]))
    if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)!r}: unknown snapshot format {meta.get('format')!r} version "
            f"{meta.get('format_version')!r} (expected {FORMAT_NAME!r} version {FORMAT_VERSION})"
        )
    cosmo = Cosmology(**meta["cosmology"])
    d = meta["domain"]
    domain = Domain(
        mesh_shape=tuple(d["mesh_shape"]),
        box_size=tuple(d["box_size"]),
        device_grid=tuple(d["device_grid"]),
        halo=d["halo"],
        on_stray=d.get("on_stray", "warn"),
        fft_backend=d.get("fft_backend", "jax"),
    )
    snapshots = ParticleState(
        positions=arrays["positions"], momenta=arrays["momenta"], a=arrays["a"]
    )
    return SnapshotFile(snapshots=snapshots, cosmo=cosmo, domain=domain, metadata=meta)
