"""The federation's checkpoint format: `write_checkpoint` / `read_checkpoint` of any PyTree of arrays.

One file is one msgpack map (flax's msgpack encoding of NumPy arrays; never pickle):

    {"format": "jpm-federation/checkpoint", "format_version": 1,
     "package": "jscore", "package_version": "0.2.0", "kind": "jscore.ScoreNet",
     "metadata": {...JSON-like...},
     "leaves": {keystr(path): ndarray, ...},          # in the tree's flattening order
     "prng_keys": {keystr(path): impl_name, ...}}     # typed PRNG-key leaves, stored as key data

The tree's structure is not stored: the reader supplies a template, and the saved leaves are matched to
the template's by their `jax.tree_util.keystr` paths, shapes and dtypes.
"""

from __future__ import annotations

import os
import pathlib
import re
import uuid
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

__all__ = ["FORMAT", "FORMAT_VERSION", "checkpoint_info", "read_checkpoint", "write_checkpoint"]

FORMAT = "jpm-federation/checkpoint"
FORMAT_VERSION = 1
_OLD_JFLOWS_FORMAT = "jflows-state-v1"
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)(?:\.\d+)?(?:[.+-]?[0-9A-Za-z.+-]*)?$")


def _parse_version(name: str, version) -> tuple[int, int]:
    if not isinstance(version, str) or not (m := _VERSION_RE.match(version)):
        raise ValueError(
            f"{name} must be a version string 'MAJOR.MINOR[.PATCH...]', got {version!r}"
        )
    return int(m.group(1)), int(m.group(2))


def _check_name(name: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _json_like(where: str, value):
    """A copy of `value` with tuples as lists; `ValueError` for anything that is not JSON-like."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise ValueError(f"metadata{where}: integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, np.generic) and value.shape == () and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, list | tuple):
        return [_json_like(f"{where}[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"metadata{where}: keys must be strings, got {k!r}")
            out[k] = _json_like(f"{where}[{k!r}]", v)
        return out
    raise ValueError(
        f"metadata{where}: {type(value).__name__} is not JSON-like (use None, bool, int, float, "
        "str, lists and string-keyed dicts of them; arrays belong in the tree)"
    )


def _is_prng_key(leaf) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def write_checkpoint(
    path,
    tree,
    *,
    package: str,
    package_version: str,
    kind: str,
    metadata: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """Write a PyTree of arrays to `path` in the federation's checkpoint format, atomically.

    The file is a msgpack map holding `format = "jpm-federation/checkpoint"`, `format_version = 1`,
    `package`, `package_version`, `kind`, `metadata` and the leaves of `tree` keyed by their PyTree
    path (`jax.tree_util.keystr`) as NumPy arrays (dtype, including `bfloat16`, and shape preserved;
    typed PRNG keys are stored as their key data with the implementation's name). No pickle. The bytes
    go to a temporary file in the same directory, are `fsync`ed and moved into place with `os.replace`:
    a reader sees the old file or the new one, never a partial one, and a failed write leaves the old
    file as it was.

    **Arguments:**

    - `path`: the file to write (its directory must exist).
    - `tree`: any JAX PyTree whose leaves are arrays or scalars (`nnx.state(model)`,
      `nnx.to_pure_dict(...)`, NamedTuples, optax states, ...). Leaves must be fully addressable.
    - `package`: the writing package's distribution name (e.g. `"jscore"`).
    - `package_version`: its version, `"MAJOR.MINOR[.PATCH...]"` (e.g. `jscore.__version__`).
    - `kind`: what the tree is, by convention `"<package>.<Class>"` (e.g. `"jso3.ScoreNet"`).
    - `metadata`: a JSON-like mapping (string keys; `None`, bool, int, float, str, lists and dicts of
      them) stored with the arrays and returned by [`read_checkpoint`][jflows.read_checkpoint];
      tuples come back as lists.

    **Returns:**

    `pathlib.Path(path)`.
    """
    _check_name("package", package)
    _check_name("kind", kind)
    _parse_version("package_version", package_version)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a mapping or None, got {type(metadata).__name__}")
    meta = _json_like("", dict(metadata or {}))

    leaves, prng_keys = {}, {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = jax.tree_util.keystr(key_path)
        if _is_prng_key(leaf):
            prng_keys[name] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        value = np.asarray(leaf)
        if value.dtype.kind not in "biufc" and value.dtype != jnp.bfloat16:
            raise TypeError(
                f"tree leaf {name}: {type(leaf).__name__} of dtype {value.dtype} cannot be "
                "checkpointed (numeric, bool and bfloat16 arrays can)"
            )
        leaves[name] = value  # flax writes the C-order bytes (0-d arrays stay 0-d)
    blob = serialization.msgpack_serialize(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package": package,
            "package_version": package_version,
            "kind": kind,
            "metadata": meta,
            "leaves": leaves,
            "prng_keys": prng_keys,
        },
        in_place=True,
    )

    path = pathlib.Path(os.fspath(path))
    directory = path.absolute().parent
    tmp = directory / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as f:  # a fresh file, with the usual (umask) permissions
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (POSIX); not available everywhere
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


def _read_header(path) -> tuple[str, dict]:
    """Open and decode a checkpoint; check format and format_version. Returns `(name, blob)`."""
    name = os.fspath(path)
    with open(name, "rb") as f:  # FileNotFoundError as is
        raw = f.read()
    try:
        blob = serialization.msgpack_restore(raw)
    except Exception as e:  # random bytes raise many kinds of errors from msgpack
        raise ValueError(
            f"{name!r} is not a {FORMAT} file: it does not decode as msgpack ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(blob, dict) or "format" not in blob:
        raise ValueError(f"{name!r} is not a {FORMAT} file: no 'format' field")
    fmt = blob["format"]
    if fmt == _OLD_JFLOWS_FORMAT:
        raise ValueError(
            f"{name!r}: field 'format' is {fmt!r}, the format of jflows 0.1's `save`, not {FORMAT!r}; "
            "jflows >= 0.2 reads only the federation format (re-create the file with "
            "jflows.save_checkpoint)"
        )
    if fmt != FORMAT:
        raise ValueError(f"{name!r}: field 'format' is {fmt!r}, expected {FORMAT!r}")
    version = blob.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{name!r}: field 'format_version' is {version!r}, not a positive integer")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{name!r}: field 'format_version' is {version}, newer than the supported "
            f"{FORMAT_VERSION}: upgrade jflows to read it"
        )
    for field, kind in (("package", str), ("package_version", str), ("kind", str)):
        if not isinstance(blob.get(field), kind):
            raise ValueError(f"{name!r}: field {field!r} is missing or not a string")
    for field in ("metadata", "leaves", "prng_keys"):
        if not isinstance(blob.get(field), dict):
            raise ValueError(f"{name!r}: field {field!r} is missing or not a map")
    return name, blob


def checkpoint_info(path) -> dict[str, Any]:
    """What a checkpoint file holds, without a template: read it to choose the template.

    Checks the format and `format_version` as `read_checkpoint` does (a `ValueError` naming the
    file and the field otherwise); package, kind and version are returned, not checked.

    **Arguments:**

    - `path`: a file written by [`write_checkpoint`][jflows.write_checkpoint].

    **Returns:** a dict with `"package"`, `"package_version"`, `"kind"`, `"format_version"`,
    `"metadata"` (the JSON-like metadata as written) and `"leaves"` (`{keystr path: (shape,
    dtype name)}`, in the tree's flattening order).
    """
    _, blob = _read_header(path)
    leaves = {
        key: (tuple(int(n) for n in np.shape(value)), str(np.asarray(value).dtype))
        for key, value in blob["leaves"].items()
    }
    return {
        "package": blob["package"],
        "package_version": blob["package_version"],
        "kind": blob["kind"],
        "format_version": blob["format_version"],
        "metadata": blob["metadata"],
        "leaves": leaves,
    }


def _placed(arr, leaf):
    """`arr` with the template leaf's sharding, where it has one."""
    if isinstance(leaf, jax.Array) and leaf.is_deleted():
        return arr
    sharding = getattr(leaf, "sharding", None)
    return arr if sharding is None else jax.device_put(arr, sharding)


def read_checkpoint(path, template, *, package: str, package_version: str, kind: str):
    """Read a file written by [`write_checkpoint`][jflows.write_checkpoint] into a new tree.

    Checks, in this order, and refuses with a `ValueError` naming the file and the field: the format
    (also for a corrupt or random file and for jflows 0.1's own format), `format_version` (newer than
    this jflows supports), `package` (another package wrote it), `kind`, `package_version`
    (incompatible: another major version, or another minor version while the major is 0), the tree's
    structure (the first missing or unexpected leaf path), and each leaf's shape and dtype.

    **Arguments:**

    - `path`: the file (`FileNotFoundError` if it does not exist).
    - `template`: a PyTree with the structure, shapes and dtypes to read (its values are not used and
      it is not modified); leaves may be arrays, `jax.ShapeDtypeStruct`s or scalars.
    - `package`, `package_version`, `kind`: what the caller expects, with the reading package's own
      version as `package_version`.

    **Returns:**

    `(tree, metadata)`: a new tree with the template's structure holding the saved leaves, bit-for-bit
    (as jax arrays of the saved dtype placed with the template leaf's sharding where it has one; as
    NumPy arrays where the template leaf is a NumPy array; as Python scalars where it is one), and the
    metadata dict.
    """
    _check_name("package", package)
    _check_name("kind", kind)
    want = _parse_version("package_version", package_version)
    name, blob = _read_header(path)
    if blob["package"] != package:
        raise ValueError(
            f"{name!r}: field 'package' is {blob['package']!r}: written by {blob['package']}, "
            f"expected {package}"
        )
    if blob["kind"] != kind:
        raise ValueError(f"{name!r}: field 'kind' is {blob['kind']!r}, expected {kind!r}")
    saved_version = blob["package_version"]
    try:
        got = _parse_version("package_version", saved_version)
    except ValueError:
        raise ValueError(
            f"{name!r}: field 'package_version' is {saved_version!r}, not a version string"
        ) from None
    if got[0] != want[0] or (want[0] == 0 and got[1] != want[1]):
        rule = "the same major version" + (
            " and, below 1.0, the same minor version" if want[0] == 0 else ""
        )
        raise ValueError(
            f"{name!r}: field 'package_version' is {saved_version!r}, incompatible with {package} "
            f"{package_version} (it reads files of {rule})"
        )

    saved, prng_keys = blob["leaves"], blob["prng_keys"]
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [jax.tree_util.keystr(p) for p, _ in flat]
    missing = [n for n in names if n not in saved]
    if missing:
        raise ValueError(
            f"{name!r}: field 'leaves' lacks the template's leaf {missing[0]} "
            f"({len(missing)} missing): the tree has another structure"
        )
    if len(saved) != len(names):
        known = set(names)
        extra = [n for n in saved if n not in known]
        raise ValueError(
            f"{name!r}: field 'leaves' has {extra[0]}, which the template lacks "
            f"({len(extra)} unexpected): the tree has another structure"
        )

    out = []
    for leaf_name, (_, leaf) in zip(names, flat, strict=True):
        value = saved[leaf_name]
        if not isinstance(value, np.ndarray):
            value = np.asarray(value)
        is_key = _is_prng_key(leaf)
        if is_key != (leaf_name in prng_keys):
            what = "a PRNG key" if leaf_name in prng_keys else "an array"
            raise ValueError(
                f"{name!r}: leaf {leaf_name} is {what} in the file but not in the template"
            )
        if is_key:
            try:
                restored = jax.random.wrap_key_data(jnp.asarray(value), impl=prng_keys[leaf_name])
            except Exception as e:
                raise ValueError(
                    f"{name!r}: leaf {leaf_name} holds {prng_keys[leaf_name]!r} key data of shape "
                    f"{value.shape} that cannot be wrapped ({e})"
                ) from None
            if restored.dtype != leaf.dtype or restored.shape != tuple(leaf.shape):
                raise ValueError(
                    f"{name!r}: leaf {leaf_name} is {restored.dtype}{list(restored.shape)} in the "
                    f"file, {leaf.dtype}{list(leaf.shape)} in the template"
                )
            out.append(_placed(restored, leaf))
            continue
        if isinstance(leaf, bool | int | float | complex):
            t_shape, t_dtype = (), np.asarray(leaf).dtype
        elif hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            t_shape, t_dtype = tuple(leaf.shape), np.dtype(leaf.dtype)
        else:
            t = np.asarray(leaf)
            t_shape, t_dtype = t.shape, t.dtype
        if value.shape != t_shape or value.dtype != t_dtype:
            raise ValueError(
                f"{name!r}: leaf {leaf_name} is {value.dtype}{list(value.shape)} in the file, "
                f"{t_dtype}{list(t_shape)} in the template"
            )
        if isinstance(leaf, bool | int | float | complex):
            out.append(type(leaf)(value.item()))
        elif isinstance(leaf, np.ndarray | np.generic):
            out.append(np.array(value))
        else:  # a copy: the file's buffer is read-only
            out.append(_placed(jnp.array(value, dtype=value.dtype), leaf))
    metadata = blob["metadata"]
    return jax.tree_util.tree_unflatten(treedef, out), metadata
