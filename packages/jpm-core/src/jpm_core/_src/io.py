"""Snapshot files and run folders: particle states, their cosmology, domain and units.

Snapshot format (`"jpm-core-snapshots"`, version 1), in one of two containers with the same content:

- NumPy (`.npz`, `numpy.savez_compressed`): `positions`, `momenta`
  `(n_snapshots, *particle_shape, 3)` in the dtype of the simulation, stored bit for bit; `a`
  `(n_snapshots,)`, the scale factors; `metadata`, a 0-d unicode array holding a JSON object
  (loaded without pickle): the format name and version, the `jpm_core` version, the units, the
  `Cosmology` parameters, the `Domain`, the scale factors, and any user entries (seed, command line).
- HDF5 (`.h5`/`.hdf5`, needs `h5py`: `pip install 'jpm-core[hdf5]'`): the same three arrays as
  datasets (gzip + shuffle, lossless; each with a `units` attribute), the same JSON object as the
  root attribute `metadata`, and its main entries again as plain attributes for HDF5 tools: the
  root's `format`, `format_version`, `jpm_core_version`, the groups `cosmology` (`Omega_c`, ...),
  `domain` (`mesh_shape`, `box_size`, ...), `units` and `run` (the user entries that are numbers or
  strings). `load_snapshots` reads the JSON, so both containers load to the same `SnapshotFile`.

Files are written atomically: to a temporary file in the target directory, flushed to disk, then
renamed over the final name with `os.replace`, so a reader never sees a partial file under the final
name (an interrupted write leaves at most a `.tmp` file next to it).

Run folders (`"jpm-simulate-run"`, version 1, written by `jpm-simulate`) hold the snapshot file(s),
the power spectra and a `manifest.json`: `"complete": true`, the package version, the configuration,
and every other file of the folder with its size and SHA-256. `load_snapshots(folder)` refuses a
folder whose manifest is missing, marked incomplete, or whose files do not match it.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from jpm_core._src.cosmology.parameters import Cosmology, check_cosmology
from jpm_core._src.domain import Domain
from jpm_core._src.state import ParticleState

__all__ = [
    "SnapshotFile",
    "load_snapshots",
    "publish_folder",
    "save_snapshots",
    "staged_folder",
    "verify_run",
    "write_manifest",
]

FORMAT_NAME = "jpm-core-snapshots"
FORMAT_VERSION = 1
RUN_FORMAT_NAME = "jpm-simulate-run"
RUN_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
FileFormat = Literal["npz", "hdf5"]
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


def _import_h5py():
    try:
        import h5py
    except ImportError as error:
        raise ImportError(
            "HDF5 snapshot files need h5py, which is not installed: pip install 'jpm-core[hdf5]' "
            "(or write .npz files, which need nothing more)"
        ) from error
    return h5py


def _file_format(path: Path, file_format: str | None) -> str:
    if file_format is None:
        return "hdf5" if path.suffix.lower() in HDF5_SUFFIXES else "npz"
    if file_format not in ("npz", "hdf5"):
        raise ValueError(f"file_format must be 'npz', 'hdf5' or None, got {file_format!r}")
    return file_format


def _fsync_directory(path: Path) -> None:
    """Make a rename in `path` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary_name(path: Path, suffix: str = ".tmp") -> Path:
    """A unique hidden name next to `path` (same file system, so a rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}{suffix}")


def _write_npz(tmp_path: Path, states: ParticleState, text: str) -> None:
    # created with O_EXCL and the default permissions (umask), unlike tempfile.mkstemp's 0600
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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


def _write_hdf5(tmp_path: Path, states: ParticleState, meta: dict[str, Any], text: str) -> None:
    h5py = _import_h5py()
    units = meta["units"]
    with h5py.File(tmp_path, "x") as handle:  # "x": create, fail if it exists
        for name in _ARRAYS:
            array = getattr(states, name)
            dataset = handle.create_dataset(
                name,
                data=array,
                compression="gzip" if array.ndim > 1 else None,
                shuffle=array.ndim > 1,
            )
            dataset.attrs["units"] = units[name]
        handle.attrs["metadata"] = text
        for key in ("format", "format_version", "jpm_core_version", "n_snapshots", "dtype"):
            handle.attrs[key] = meta[key]
        for group_name in ("cosmology", "domain", "units"):
            group = handle.create_group(group_name)
            for key, value in meta[group_name].items():
                if value is not None:  # HDF5 has no null (the JSON keeps it)
                    group.attrs[key] = value
        run = handle.create_group("run")
        for key, value in meta.items():
            if key not in _RESERVED and isinstance(value, str | int | float | bool):
                run.attrs[key] = value
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_snapshots(
    path: str | os.PathLike[str],
    result_or_states: Any,
    *,
    domain: Domain,
    cosmo: Cosmology,
    metadata: Mapping[str, Any] | None = None,
    file_format: FileFormat | None = None,
) -> Path:
    """Write particle snapshots, their cosmology and domain to a `.npz` or HDF5 file, atomically.

    The arrays are stored bit for bit (the simulation's dtype); the JSON metadata records the
    units (positions in mesh units with the Mpc/h cell size, momenta `p = a^3 E dx/da`), the
    cosmology, the domain, the scale factors and the `jpm_core` version; an HDF5 file holds the
    same JSON and also its main entries as attributes (see the module docstring). The file appears
    under `path` only once complete (temporary file in the same directory, then `os.replace`); an
    existing file there is replaced.

    **Arguments:**

    - `path`: the file to write (used as given).
    - `result_or_states`: an `NBodyResult` (its `snapshots`), a `ParticleState` (stacked, with
      `a` of shape `(n_snapshots,)`, or a single state with a scalar `a`) or a sequence of
      single `ParticleState`s.
    - `domain`: the `Domain` of the run (positions are in its mesh units).
    - `cosmo`: the `Cosmology` of the run (concrete values; checked with `check_cosmology`).
    - `metadata`: optional extra JSON-able entries (str, numbers, bools, None, lists, dicts;
      NumPy scalars and arrays are converted to numbers and lists), e.g. the seed and the
      command line. They are stored at the top level of the metadata; the names used by the
      format itself (`format`, `units`, `cosmology`, `domain`, ...) are refused.
    - `file_format`: `"npz"` (compressed NumPy archive), `"hdf5"` (needs `h5py`, the `hdf5`
      extra) or `None` (default): HDF5 when `path` ends in `.h5`, `.hdf5` or `.hdf`, else npz.

    **Returns:** the `pathlib.Path` written.

    **Raises:** `TypeError`/`ValueError` for inconsistent states, a bad cosmology or domain,
    reserved or non-JSON-able metadata, an unknown `file_format`; `ImportError` for HDF5 without
    `h5py`. Nothing is written when it raises.
    """
    path = Path(path)
    kind = _file_format(path, file_format)
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
    if kind == "hdf5":
        _import_h5py()  # before anything is written

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
    meta = json.loads(text)  # plain JSON types (NumPy values converted) for the HDF5 attributes

    tmp_path = _temporary_name(path)
    try:
        if kind == "hdf5":
            _write_hdf5(tmp_path, states, meta, text)
        else:
            _write_npz(tmp_path, states, text)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as archive:
        missing = [name for name in (*_ARRAYS, "metadata") if name not in archive.files]
        if missing:
            raise ValueError(f"{os.fspath(path)!r} is not a jpm-core snapshot file: no {missing}")
        arrays = {name: archive[name] for name in _ARRAYS}
        meta = json.loads(str(archive["metadata"][()]))
    return arrays, meta


def _read_hdf5(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    h5py = _import_h5py()
    with h5py.File(path, "r") as handle:
        missing = [name for name in _ARRAYS if name not in handle]
        if missing or "metadata" not in handle.attrs:
            missing += [] if "metadata" in handle.attrs else ["metadata attribute"]
            raise ValueError(f"{os.fspath(path)!r} is not a jpm-core snapshot file: no {missing}")
        arrays = {name: handle[name][()] for name in _ARRAYS}
        text = handle.attrs["metadata"]
    return arrays, json.loads(text.decode() if isinstance(text, bytes) else str(text))


def _snapshot_file_in_run(folder: Path, manifest: dict[str, Any]) -> Path:
    names = manifest.get("snapshot_files") or []
    if not names:
        raise ValueError(f"run folder {os.fspath(folder)!r}: its manifest lists no snapshot file")
    npz = [name for name in names if not name.lower().endswith(HDF5_SUFFIXES)]
    return folder / (npz or names)[0]  # npz first: it needs no optional dependency


def load_snapshots(path: str | os.PathLike[str]) -> SnapshotFile:
    """Read a snapshot file written by `save_snapshots` (npz or HDF5), or a `jpm-simulate` run.

    A run folder given as `path`, or a file that a run folder's `manifest.json` lists, is checked
    against the manifest first: it must say `"complete": true` and every file it lists must have
    its recorded size and SHA-256.

    **Arguments:**

    - `path`: a `.npz` or HDF5 snapshot file (recognised by its content, not its name), or a run
      folder written by `jpm-simulate` (its npz snapshot file is read, else its HDF5 one).

    **Returns:** a `SnapshotFile` `(snapshots, cosmo, domain, metadata)`: the stacked
    `ParticleState` of NumPy arrays exactly as saved, the reconstructed `Cosmology` and `Domain`,
    and the metadata dict.

    **Raises:** `ValueError` if the file is not a jpm-core snapshot file of a known version, or
    if the run folder (of the file) is incomplete or does not match its manifest;
    `ImportError` for an HDF5 file without `h5py`.
    """
    path = Path(path)
    if path.is_dir():
        path = _snapshot_file_in_run(path, verify_run(path))
    else:
        manifest_path = path.parent / MANIFEST_FILE
        if manifest_path.is_file():
            manifest = _read_manifest(path.parent)
            if path.name in manifest.get("files", {}):
                verify_run(path.parent)
    with open(path, "rb") as handle:
        signature = handle.read(len(_HDF5_SIGNATURE))
    arrays, meta = (_read_hdf5 if signature == _HDF5_SIGNATURE else _read_npz)(path)
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


# ---------------------------------------------------------------------------------- run folders
def _file_entry(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def write_manifest(
    folder: str | os.PathLike[str],
    *,
    configuration: Mapping[str, Any],
    snapshot_files: Sequence[str],
    complete: bool,
) -> Path:
    """Write `folder/manifest.json` atomically, listing every other file of `folder`.

    **Arguments:**

    - `folder`: the run folder (flat: sub-folders are refused).
    - `configuration`: JSON-able description of the run (options, cosmology, domain, ...).
    - `snapshot_files`: the names of the snapshot files among the folder's files.
    - `complete`: whether the run is finished; `jpm-simulate` writes `False` when it starts
      writing the folder and `True` once every file is in place.

    **Returns:** the path of the manifest.
    """
    from jpm_core import __version__

    folder = Path(folder)
    files = {}
    for entry in sorted(folder.iterdir()):
        if entry.name == MANIFEST_FILE or entry.name.startswith(f".{MANIFEST_FILE}."):
            continue
        if not entry.is_file() or entry.is_symlink():
            raise ValueError(f"run folder {os.fspath(folder)!r} holds {entry.name!r}, not a file")
        files[entry.name] = _file_entry(entry)
    missing = [name for name in snapshot_files if name not in files]
    if missing:
        raise ValueError(f"snapshot files {missing} are not in {os.fspath(folder)!r}")
    manifest = {
        "format": RUN_FORMAT_NAME,
        "format_version": RUN_FORMAT_VERSION,
        "complete": bool(complete),
        "jpm_core_version": __version__,
        "snapshot_files": list(snapshot_files),
        "files": files,
        "configuration": dict(configuration),
    }
    text = json.dumps(manifest, default=_json_default, allow_nan=False, indent=2) + "\n"
    path = folder / MANIFEST_FILE
    tmp_path = _temporary_name(path)
    try:
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_directory(folder)
    return path


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ValueError(
            f"{os.fspath(folder)!r} has no {MANIFEST_FILE}: not a complete jpm-simulate run (an "
            "interrupted run, a folder of another program, or written before jpm-core 0.2)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{os.fspath(path)!r} is not valid JSON: {error}") from error
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != RUN_FORMAT_NAME
        or manifest.get("format_version") != RUN_FORMAT_VERSION
    ):
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(
            f"{os.fspath(path)!r}: unknown run format {found!r} (expected {RUN_FORMAT_NAME!r} "
            f"version {RUN_FORMAT_VERSION})"
        )
    return manifest


def verify_run(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a `jpm-simulate` run folder against its `manifest.json`.

    **Arguments:**

    - `folder`: the run folder.

    **Returns:** the manifest (a dict).

    **Raises:** `ValueError` naming the folder and the file if the manifest is missing or not
    valid, not marked `"complete": true`, or if a listed file is missing or differs in size or
    SHA-256 (files not listed, e.g. notes added by hand, are ignored).
    """
    folder = Path(folder)
    manifest = _read_manifest(folder)
    if manifest.get("complete") is not True:
        raise ValueError(
            f"run folder {os.fspath(folder)!r} is not complete (its manifest says "
            f"complete={manifest.get('complete')!r}): the run was interrupted while writing"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ValueError(f"{os.fspath(folder / MANIFEST_FILE)!r} lists no files")
    for name, expected in files.items():
        entry = folder / name
        if Path(name).name != name or not entry.is_file():
            raise ValueError(f"run folder {os.fspath(folder)!r}: {name!r} is missing")
        size = entry.stat().st_size
        if size != expected.get("size"):
            raise ValueError(
                f"run folder {os.fspath(folder)!r}: {name!r} has {size} bytes, the manifest says "
                f"{expected.get('size')}: modified or truncated after the run"
            )
        if _file_entry(entry)["sha256"] != expected.get("sha256"):
            raise ValueError(
                f"run folder {os.fspath(folder)!r}: the SHA-256 checksum of {name!r} does not "
                "match the manifest: modified after the run"
            )
    return manifest


@contextlib.contextmanager
def staged_folder(final: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh hidden folder next to `final` to write a run into; removed if the block raises.

    The folder (`.NAME.<pid>.<random>.partial`) is on the same file system as `final`, so that
    `publish_folder` can rename it into place atomically.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = _temporary_name(final, ".partial")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # the kernel or the file system cannot exchange: rename in two steps
    raise OSError(code, f"cannot exchange {os.fspath(a)!r} and {os.fspath(b)!r}", os.fspath(b))


def publish_folder(
    staging: str | os.PathLike[str], final: str | os.PathLike[str], *, overwrite: bool = False
) -> None:
    """Move a finished `staging` folder to `final`, replacing what is there only now.

    A missing or empty `final` is replaced by one `rename`. A non-empty one (with `overwrite`) is
    swapped with `staging` in one atomic `renameat2(RENAME_EXCHANGE)` on Linux, then deleted;
    where the system cannot exchange, it is first renamed aside (`.NAME.<pid>.<random>.old`),
    then `staging` takes its name, then the old one is deleted (should the second rename fail,
    the old folder is put back). At no point does `final` hold a mix of two runs.

    **Arguments:**

    - `staging`: the complete new folder (from `staged_folder`).
    - `final`: where it goes.
    - `overwrite`: whether a non-empty `final` may be replaced.

    **Raises:** `FileExistsError` if `final` is not empty and `overwrite` is false.
    """
    staging, final = Path(staging), Path(final)
    if not final.exists() or (final.is_dir() and not any(final.iterdir())):
        os.replace(staging, final)  # POSIX: a directory may replace an empty directory
    elif not overwrite:
        raise FileExistsError(
            errno.EEXIST, "the output folder is not empty (and overwrite is off)", os.fspath(final)
        )
    elif _exchange(staging, final):
        shutil.rmtree(staging)  # now the previous run
    else:
        aside = _temporary_name(final, ".old")
        os.replace(final, aside)
        try:
            os.replace(staging, final)
        except BaseException:
            os.replace(aside, final)
            raise
        shutil.rmtree(aside)
    _fsync_directory(final.parent)
