"""The log-normal shift parameter lambda(cosmology) from sbi_lens's tables (CosMomentum).

Two table files ship with sbi_lens (MIT; read them where they are, jlens does not copy them):

- `lognormal_shift.csv` (set A): columns `Omega_m, sigma_8, lambda` on an 8 x 8 grid, rows ordered
  with Omega_m outermost, one source bin.
- `lognormal_shifts_LSSTY10_om_s8_w_bin.npy` (set B): shape `(8, 8, 8, 5, 5)`, the last axis holding
  `(Omega_m, sigma_8, w0, bin, lambda)`. Its **first axis runs over sigma_8 and its second over
  Omega_m** (the third over w0); the names in the file say otherwise.

`ShiftTable` reads the grid's axes from the values in the table (so the axis order is right whatever
the file says) and interpolates lambda multilinearly on the node coordinates
`(x - x_min) / (x_max - x_min) (n - 1)`, clamped to the table (outside it lambda is the value at the
edge). With `compat="sbi_lens"` it reproduces sbi_lens's lookup exactly instead: parameter j of
`(Omega_m, sigma_8, w0)` is put on table axis j at coordinate `(x_j - min_j) / (max_j - min_j) n_j - 0.5`
(`jax.scipy.ndimage.map_coordinates`, order 1, mode "nearest"), which (a) takes sigma_8's axis for
Omega_m's and vice versa on the set B table and (b) maps the table's range onto cell centres rather
than its nodes (a stretch of n / (n - 1) and a half-cell offset, on both tables).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

from jlens._src._checks import check_choice
from jlens._src._jpm_core_api import Cosmology

__all__ = ["PARAMETERS", "ShiftTable"]

PARAMETERS = ("Omega_m", "sigma8", "w0")
"""Parameters that a shift table may depend on, in sbi_lens's order."""


def _parameter(cosmo: Cosmology, name: str) -> jax.Array:
    if name == "Omega_m":
        return cosmo.Omega_c + cosmo.Omega_b
    return getattr(cosmo, name)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ShiftTable:
    """lambda per source bin tabulated on a regular grid of cosmological parameters.

    Call it on a `jpm_core.Cosmology` to get the shifts, shape `(n_bins,)`: pass it as `shifts` to
    [`lognormal_maps`][jlens.lognormal_maps]. Differentiable (multilinear interpolation) and jit-able.
    Build it with [`ShiftTable.from_sbi_lens`][jlens.ShiftTable.from_sbi_lens] or directly.

    **Arguments:**

    - `values`: lambda on the grid, shape `(*grid, n_bins)` (> 0).
    - `axes`: the parameter names of the grid's axes (static), from `PARAMETERS`.
    - `nodes`: the nodes of each axis (static tuples of increasing floats).
    - `raw`: the file's parameter columns in its own axis layout, shape `(*grid, n_params)` (used only
      by the compatibility lookup), or None.
    - `compat`: `None` (correct lookup) or `"sbi_lens"` (the original's indexing, exactly).
    """

    values: Any
    axes: tuple[str, ...] = dataclasses.field(metadata={"static": True})
    nodes: tuple[tuple[float, ...], ...] = dataclasses.field(metadata={"static": True})
    raw: Any = None
    compat: str | None = dataclasses.field(default=None, metadata={"static": True})

    def __post_init__(self) -> None:
        if self.compat is not None:
            check_choice("ShiftTable.compat", self.compat, ("sbi_lens",))
        for name in self.axes:
            check_choice("ShiftTable.axes", name, PARAMETERS)
        if len(self.nodes) != len(self.axes):
            raise ValueError(f"ShiftTable needs one node list per axis, got {len(self.nodes)}")
        if isinstance(self.values, jax.core.Tracer):
            return
        values = np.asarray(self.values)
        if values.shape[:-1] != tuple(len(n) for n in self.nodes):
            raise ValueError(
                f"ShiftTable.values must have shape (*grid, n_bins) with grid "
                f"{tuple(len(n) for n in self.nodes)}, got {values.shape}"
            )
        if not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError("ShiftTable.values must be finite and > 0")
        if self.compat == "sbi_lens" and self.raw is None:
            raise ValueError("ShiftTable(compat='sbi_lens') needs the raw parameter columns")

    @property
    def n_bins(self) -> int:
        """Number of source bins."""
        return int(np.shape(self.values)[-1])

    @classmethod
    def from_sbi_lens(cls, path: str | os.PathLike, *, compat: str | None = None) -> ShiftTable:
        """Read one of sbi_lens's tables (`.csv`: set A; `.npy`: set B).

        **Arguments:**

        - `path`: the file.
        - `compat`: None for the correct lookup, `"sbi_lens"` to reproduce the original's.

        **Returns:**

        A `ShiftTable` with 1 (csv) or 5 (npy) bins.
        """
        path = os.fspath(path)
        if path.endswith(".csv"):
            data = np.loadtxt(path, delimiter=",", skiprows=1)
            if data.ndim != 2 or data.shape[1] != 3:
                raise ValueError(f"{path}: expected columns Omega_m, sigma_8, lambda")
            n = round(np.sqrt(data.shape[0]))
            grid = data.reshape(n, n, 3)
            params = grid[..., :2]
            values = grid[..., 2:3]
            file_names = ("Omega_m", "sigma8")
        elif path.endswith(".npy"):
            table = np.load(path)
            if table.ndim != 5 or table.shape[-1] != 5:
                raise ValueError(f"{path}: expected shape (n, n, n, n_bins, 5), got {table.shape}")
            params = table[..., 0, :3]
            values = table[..., 4]
            file_names = ("Omega_m", "sigma8", "w0")
        else:
            raise ValueError(f"{path}: expected a .csv or .npy table of sbi_lens")
        # Which parameter varies along each axis (read from the values, not from the file's names).
        axes, nodes = [], []
        n_axes = params.ndim - 1
        for axis in range(n_axes):
            index = tuple(slice(None) if a == axis else 0 for a in range(n_axes))
            line = params[index]  # (n, n_params): the parameters along this axis, others at 0
            moving = [j for j in range(line.shape[1]) if np.ptp(line[:, j]) > 0]
            if len(moving) != 1:
                raise ValueError(f"{path}: axis {axis} of the table is not one parameter's grid")
            axes.append(file_names[moving[0]])
            nodes.append(tuple(float(v) for v in line[:, moving[0]]))
        return cls(
            values=np.asarray(values, np.float64),
            axes=tuple(axes),
            nodes=tuple(nodes),
            raw=np.asarray(params, np.float64),
            compat=compat,
        )

    def _coordinates(self, cosmo: Cosmology) -> jax.Array:
        if self.compat == "sbi_lens":
            raw = jnp.asarray(self.raw)
            coords = []
            for j in range(raw.ndim - 1):  # parameter j of (Omega_m, sigma8, w0) on axis j
                x = _parameter(cosmo, PARAMETERS[j])
                lo, hi = jnp.min(raw[..., j]), jnp.max(raw[..., j])
                coords.append((x - lo) / (hi - lo) * raw.shape[j] - 0.5)
            return jnp.stack(coords)
        coords = []
        for name, line in zip(self.axes, self.nodes, strict=True):
            x = _parameter(cosmo, name)
            coords.append((x - line[0]) / (line[-1] - line[0]) * (len(line) - 1))
        return jnp.stack(coords)

    def __call__(self, cosmo: Cosmology) -> jax.Array:
        """lambda per bin at `cosmo`, shape `(n_bins,)`."""
        values = jnp.asarray(self.values)
        dtype = jnp.result_type(values, *jax.tree.leaves(cosmo), float)
        coords = self._coordinates(cosmo).astype(dtype)
        values = values.astype(dtype)
        return jnp.stack(
            [
                map_coordinates(values[..., i], list(coords), order=1, mode="nearest")
                for i in range(self.n_bins)
            ]
        )
