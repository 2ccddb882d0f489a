"""The device mesh: one home for the `(px, py)` mesh and the shardings built on it.

Every distributed operation of jpm-core (the FFTs, `white_noise`/`linear_field`, halo painting and
reading) runs on the same `jax.sharding.Mesh` of the first `px * py` devices, with axes
`("x", "y")`: real mesh fields are sharded `P("x", "y")` (x in `px` slabs, y in `py` slabs, z
whole), the output of the distributed real FFT `P(None, ("x", "y"), None)` (ky over all devices).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jpm_core._src.domain import Domain

__all__ = [
    "AXES",
    "as_device_grid",
    "device_mesh",
    "domain_mesh",
    "fourier_sharding",
    "pencil_sharding",
    "real_sharding",
]

AXES = ("x", "y")


def as_device_grid(device_grid: object) -> tuple[int, int]:
    """`(px, py)` as Python ints, checked (`ValueError`/`TypeError`)."""
    if not isinstance(device_grid, Sequence) or len(device_grid) != 2:
        raise ValueError(f"device_grid must be a pair (px, py), got {device_grid!r}")
    if any(isinstance(g, bool) or not isinstance(g, numbers.Integral) for g in device_grid):
        raise TypeError(f"device_grid must contain Python ints, got {device_grid!r}")
    px, py = int(device_grid[0]), int(device_grid[1])
    if px < 1 or py < 1:
        raise ValueError(f"device_grid entries must be >= 1, got {device_grid!r}")
    return px, py


@functools.cache
def device_mesh(device_grid: tuple[int, int]) -> Mesh:
    """The `(px, py)` mesh `("x", "y")` of the first `px * py` devices (cached, unchecked)."""
    px, py = device_grid
    devices = np.asarray(jax.devices()[: px * py], dtype=object).reshape(px, py)
    return Mesh(devices, AXES)


def domain_mesh(domain: Domain) -> Mesh:
    """The device mesh of a `Domain`; `ValueError` if too few devices are visible."""
    px, py = domain.device_grid
    n_visible = len(jax.devices())
    if n_visible < px * py:
        raise ValueError(
            f"device_grid={domain.device_grid!r} needs {px * py} devices, "
            f"but only {n_visible} are visible"
        )
    return device_mesh(domain.device_grid)


def real_sharding(device_grid: Sequence[int]) -> NamedSharding:
    """Sharding of a real mesh field: `P("x", "y")` over the `(px, py)` mesh of the first devices.

    **Arguments:**

    - `device_grid`: `(px, py)`.

    **Returns:** a `NamedSharding` (the same as `jpm_core`'s pencil sharding of real fields).
    """
    return NamedSharding(device_mesh(as_device_grid(device_grid)), PartitionSpec(*AXES))


def fourier_sharding(device_grid: Sequence[int]) -> NamedSharding:
    """Sharding of `prfft3d`'s output: `P(None, ("x", "y"), None)`, ky split over all devices.

    **Arguments:**

    - `device_grid`: `(px, py)`.

    **Returns:** a `NamedSharding` over the same mesh as `real_sharding(device_grid)`.
    """
    return NamedSharding(device_mesh(as_device_grid(device_grid)), PartitionSpec(None, AXES, None))


def pencil_sharding(domain: Domain) -> NamedSharding:
    """Sharding of a real mesh field of `domain` over its device grid (device count checked)."""
    return NamedSharding(domain_mesh(domain), PartitionSpec(*AXES))
