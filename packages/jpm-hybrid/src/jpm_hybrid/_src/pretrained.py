"""Trained filters shipped with the package (package data, the federation's msgpack checkpoint
format, never pickle), loaded by one call."""

from __future__ import annotations

import importlib.resources
from typing import Any

from .checkpoint import _read_filter
from .filters import SplineFilter

#: name -> (file under `jpm_hybrid/weights/`, one line); the architecture is recorded in the file
PRETRAINED: dict[str, tuple[str, str]] = {
    "default": (
        "default.msgpack",
        "physical |k|, trained on 32^3 particles in (64 Mpc/h)^3 with jpm-core's default forces, "
        "10 steps from a = 0.1, against a 4x force-mesh truth",
    ),
}


def _check_name(name: str) -> tuple[str, str]:
    if name not in PRETRAINED:
        raise ValueError(f"no pretrained filter {name!r}; available: {sorted(PRETRAINED)}")
    return PRETRAINED[name]


def pretrained_filter(name: str = "default") -> SplineFilter:
    """A trained `SplineFilter` shipped with the package, ready for `hybrid_nbody` or
    `potential_filter`.

    `"default"`: `|k|` in h/Mpc (applies at any box and mesh; the spline spans `[0, pi/2]` h/Mpc,
    the training mesh's Nyquist frequency, and the correction is constant beyond), trained with `jpm-hybrid train` on
    four 32^3-particle boxes of 64 Mpc/h at `Omega_m = 0.3`, `sigma8 = 0.8`, against jpm-core runs
    on a force mesh 4x finer per side with 100 steps, for hybrid runs of 10 steps from 2LPT at
    `a = 0.1` with jpm-core's default forces. `pretrained_info(name)` has the exact settings and the
    package README the measured improvement, also at other cosmologies, boxes and resolutions.

    Use it as trained: with jpm-core's default `ForceConfig()` and a similar number of steps (the
    filter also corrects the time stepping of a 10-step run).

    **Arguments:**

    - `name`: a key of `PRETRAINED`.

    **Returns:** a new `SplineFilter`.

    **Raises:** `ValueError` for an unknown name, or (from `load_filter`) a damaged file.
    """
    return _load(name)[0]


def pretrained_info(name: str = "default") -> dict[str, Any]:
    """How a shipped filter was trained: `{"name", "description", "architecture", "training"}`,
    the last two read from the file's metadata (truth folders, steps, iterations, learning rate,
    losses, coarse mesh and box)."""
    _, meta = _load(name)
    return {
        "name": name,
        "description": PRETRAINED[name][1],
        "architecture": meta.get("architecture"),
        "training": meta.get("user"),
    }


def _load(name: str) -> tuple[SplineFilter, dict[str, Any]]:
    filename, _ = _check_name(name)
    resource = importlib.resources.files("jpm_hybrid") / "weights" / filename
    with importlib.resources.as_file(resource) as path:
        return _read_filter(path, None)
