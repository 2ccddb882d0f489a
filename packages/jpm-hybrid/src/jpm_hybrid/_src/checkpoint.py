"""Filter files: a `SplineFilter`'s parameters in the federation's checkpoint format (jflows:
msgpack, never pickle, atomic), with its architecture and `|k|` unit recorded and checked."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jflows

from .filters import FilterConfig, SplineFilter

FILTER_KIND = "jpm_hybrid.SplineFilter"


def _package_version() -> str:
    from .. import __version__

    return __version__


def save_filter(
    path: str | os.PathLike, model: SplineFilter, *, metadata: dict[str, Any] | None = None
) -> None:
    """Write a `SplineFilter` to `path` with `jflows.write_checkpoint` (package `"jpm-hybrid"`, kind
    `"jpm_hybrid.SplineFilter"`); the metadata records the architecture (`FilterConfig`, `|k|` unit
    and range included) next to any `metadata` given (e.g. how it was trained)."""
    if not isinstance(model, SplineFilter):
        raise TypeError(f"model must be a jpm_hybrid.SplineFilter, got {type(model).__name__}")
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    jflows.write_checkpoint(
        path,
        jax.device_get(params),
        package="jpm-hybrid",
        package_version=_package_version(),
        kind=FILTER_KIND,
        metadata={"architecture": model.config.to_dict(), "user": dict(metadata or {})},
    )


def load_filter(
    path: str | os.PathLike, template: SplineFilter | FilterConfig | None = None
) -> SplineFilter:
    """Read a filter written by `save_filter` into a new `SplineFilter` (pure: a template model is
    not modified).

    **Arguments:**

    - `path`: the file.
    - `template`: a `SplineFilter` or the `FilterConfig` it was built with (the architecture and
      `|k|` unit the caller expects, checked against the file); `None` takes the architecture
      recorded in the file (`filter_config(path)`).

    **Raises:** `ValueError` naming the file and the field for a file of another format, package,
    kind or incompatible version (jflows' checks), parameters of another shape (another
    architecture), and a filter for another `|k|` unit, range or conditioning than the template's:
    a grid-unit filter is never applied as a physical one, or the reverse.
    """
    return _read_filter(path, template)[0]


def filter_config(path: str | os.PathLike) -> FilterConfig:
    """The `FilterConfig` recorded in a filter file (architecture, `|k|` unit and range).

    **Raises:** `ValueError` naming the file for a file that `save_filter` did not write.
    """
    info = jflows.checkpoint_info(path)
    if info["package"] != "jpm-hybrid" or info["kind"] != FILTER_KIND:
        raise ValueError(
            f"{os.fspath(path)!r}: field 'kind' is {info['kind']!r} of package "
            f"{info['package']!r}, expected {FILTER_KIND!r} of 'jpm-hybrid'"
        )
    saved = info["metadata"].get("architecture")
    if not isinstance(saved, dict):
        raise ValueError(f"{os.fspath(path)!r}: field 'architecture' is missing from the metadata")
    names = {f.name for f in dataclasses.fields(FilterConfig)}
    try:
        return FilterConfig(**{k: v for k, v in saved.items() if k in names})
    except (TypeError, ValueError) as error:
        raise ValueError(f"{os.fspath(path)!r}: field 'architecture' is invalid: {error}") from None


def _read_filter(
    path: str | os.PathLike, template: SplineFilter | FilterConfig | None
) -> tuple[SplineFilter, dict[str, Any]]:
    """`load_filter`, also returning the file's metadata (`{"architecture", "user"}`)."""
    if template is None:
        template = filter_config(path)
    if isinstance(template, SplineFilter):
        config = template.config
    elif isinstance(template, FilterConfig):
        config = template
    else:
        raise TypeError(
            f"template must be a SplineFilter or a FilterConfig, got {type(template).__name__}"
        )
    fresh = nnx.eval_shape(lambda: SplineFilter(config, rngs=nnx.Rngs(0)))
    graphdef, abstract = nnx.split(fresh, nnx.Param)
    shapes = jax.tree.map(
        lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), nnx.to_pure_dict(abstract)
    )
    try:
        params, metadata = jflows.read_checkpoint(
            path, shapes, package="jpm-hybrid", package_version=_package_version(), kind=FILTER_KIND
        )
    except ValueError as error:
        if "leaf" not in str(error):
            raise
        raise ValueError(
            f"{error}: the file holds parameters of another shape than a SplineFilter with "
            f"{config.to_dict()} (another architecture)"
        ) from error
    saved = metadata.get("architecture")
    expected = config.to_dict()
    if not isinstance(saved, dict):
        raise ValueError(f"{os.fspath(path)!r}: field 'architecture' is missing from the metadata")
    for field in ("k_unit", "k_max", "conditioned", "n_knots", "width"):
        ok = (
            np.isclose(saved.get(field, np.nan), expected[field], rtol=1e-12, atol=0)
            if field == "k_max"
            else saved.get(field) == expected[field]
        )
        if not ok:
            raise ValueError(
                f"{os.fspath(path)!r}: field 'architecture.{field}' is {saved.get(field)!r}, "
                f"expected {expected[field]!r}"
                + (": the filter was trained for another |k| unit" if field == "k_unit" else "")
            )
    return nnx.merge(graphdef, nnx.State(jax.tree.map(jnp.asarray, params))), metadata
