"""The `Domain`: the static description of a periodic mesh (shape, box, device grid, halo)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence

import numpy as np

__all__ = ["Domain"]

_MIN_CELLS = 2
_ON_STRAY = ("warn", "nan")
_FFT_BACKENDS = ("rfft", "jax", "cudecomp")


def _as_triple_of_ints(name: str, value: object) -> tuple[int, int, int]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value, value)
    if not isinstance(value, Sequence) or len(value) != 3:
        raise ValueError(f"{name} must be an int or a sequence of 3 ints, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must contain Python ints, got {value!r}")
        out.append(int(v))
    return (out[0], out[1], out[2])


def _as_triple_of_floats(name: str, value: object) -> tuple[float, float, float]:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = (value, value, value)
    if not isinstance(value, Sequence) or len(value) != 3:
        raise ValueError(f"{name} must be a number or a sequence of 3 numbers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must contain Python numbers, got {value!r}")
        out.append(float(v))
    return (out[0], out[1], out[2])


@dataclasses.dataclass(frozen=True)
class Domain:
    """A periodic box sampled by a regular mesh, possibly split over a 2-D grid of devices.

    A `Domain` is configuration, not data: it is frozen and hashable, so it can be passed as a static
    argument to `jax.jit` and closed over freely. Everything that changes array shapes lives here.

    **Arguments:**

    - `mesh_shape`: number of cells along (x, y, z); an int means a cubic mesh. At least 2 per axis.
    - `box_size`: side lengths of the periodic box along (x, y, z) in Mpc/h; a number means a cube.
    - `device_grid`: `(px, py)`, the pencil decomposition over devices: the x axis is split in `px`
      slabs and the y axis in `py`; the z axis is never split. Default `(1, 1)` (one device).
      `mesh_shape[0]` must be divisible by `px` and `mesh_shape[1]` by `py`; for the pencil FFT's
      transposes every axis must in fact be divisible by both `px` and `py`.
    - `halo`: width in cells of the halo (ghost) region that distributed painting/reading exchange
      between neighbouring devices; it bounds how far a particle may stray from its home slab.
      Non-negative; when the mesh is split along an axis it may not exceed the local slab width there.
      Unused on one device. On a device grid it must be at least 1 (the CIC/TSC stencils reach one
      node beyond their cell), plus the largest distance, in cells, that a particle moves away
      from the slab of the device that holds it (see `jpm_core.stray_particles`).
    - `on_stray`: how distributed `paint`/`read` report a particle further than `halo` cells
      from its device's slab (which they cannot assign correctly). Never silently: called eagerly
      (outside `jit`) they raise `ValueError` before any compute; inside a compiled program the
      painted mesh becomes NaN (a stray reads NaN), and `"warn"` (default) also prints a message
      from the host, `"nan"` does not (no host round-trip per call, for GPUs). Unused on one
      device.
    - `fft_backend`: the distributed FFT (unused on one device):
      - `"rfft"` (default): jpm-core's distributed real-to-complex transform (a local real FFT
        along z, then complex FFTs along y and x between two XLA all-to-all transposes; see
        `jpm_core.fft`). Half the work and memory of a complex transform, and its output has the
        one-device layout `(nx, ny, nz // 2 + 1)`. Needs `nx` and `ny` divisible by `px * py`.
      - `"jax"`: jaxdecomp's complex pencil transform with XLA collectives; output transposed to
        `(ny, nz, nx)`. Needs every axis divisible by both `px` and `py`.
      - `"cudecomp"`: the same through NVIDIA's cuDecomp library (needs a jaxdecomp built with
        CUDA; see the GPU cluster page of the docs).

      `"rfft"` and `"jax"` run on CPUs, GPUs and across processes; kernels built from
      `jpm_core.wavevectors` follow any of the layouts.

    **Raises:** `ValueError`/`TypeError` eagerly, naming the offending value.

    Positions attached to a domain are in *mesh units*: mesh node `i` sits at coordinate `i`, and
    the box spans `[0, mesh_shape)` periodically.
    """

    mesh_shape: tuple[int, int, int]
    box_size: tuple[float, float, float]
    device_grid: tuple[int, int] = (1, 1)
    halo: int = 0
    on_stray: str = "warn"
    fft_backend: str = "rfft"

    def __post_init__(self) -> None:
        mesh = _as_triple_of_ints("mesh_shape", self.mesh_shape)
        box = _as_triple_of_floats("box_size", self.box_size)
        grid = self.device_grid
        if not isinstance(grid, Sequence) or len(grid) != 2:
            raise ValueError(f"device_grid must be a pair (px, py), got {grid!r}")
        if any(isinstance(g, bool) or not isinstance(g, numbers.Integral) for g in grid):
            raise TypeError(f"device_grid must contain Python ints, got {grid!r}")
        grid = (int(grid[0]), int(grid[1]))
        halo = self.halo
        if isinstance(halo, bool) or not isinstance(halo, numbers.Integral):
            raise TypeError(f"halo must be a Python int (cells), got {halo!r}")
        halo = int(halo)

        for n in mesh:
            if n < _MIN_CELLS:
                raise ValueError(
                    f"mesh_shape must have at least {_MIN_CELLS} cells per axis, got {mesh!r}"
                )
        for b in box:
            if not (math.isfinite(b) and b > 0):
                raise ValueError(f"box_size must be positive and finite (Mpc/h), got {box!r}")
        if grid[0] < 1 or grid[1] < 1:
            raise ValueError(f"device_grid entries must be >= 1, got {grid!r}")
        for axis, (n, p) in enumerate(zip(mesh[:2], grid, strict=True)):
            if n % p:
                raise ValueError(
                    f"mesh_shape[{axis}]={n} is not divisible by device_grid[{axis}]={p} "
                    f"(mesh_shape={mesh!r}, device_grid={grid!r})"
                )
        if self.fft_backend not in _FFT_BACKENDS:
            raise ValueError(
                f"fft_backend must be one of {_FFT_BACKENDS}, got {self.fft_backend!r}"
            )
        if grid != (1, 1) and self.fft_backend == "rfft":
            n_dev = grid[0] * grid[1]
            for axis, n in enumerate(mesh[:2]):
                if n % n_dev:
                    raise ValueError(
                        f"mesh_shape[{axis}]={n} must be divisible by px * py = {n_dev} for the "
                        f"distributed real FFT (fft_backend='rfft'), whose transposes split x and "
                        f"y over all devices (mesh_shape={mesh!r}, device_grid={grid!r}); "
                        "fft_backend='jax' (jaxdecomp's complex pencil FFT) needs every axis "
                        "divisible by px and by py instead"
                    )
        elif grid != (1, 1):
            for axis, n in enumerate(mesh):
                if n % grid[0] or n % grid[1]:
                    raise ValueError(
                        f"mesh_shape[{axis}]={n} must be divisible by both entries of "
                        f"device_grid={grid!r}: the pencil FFT transposes every axis over both "
                        f"device axes (mesh_shape={mesh!r})"
                    )
        if halo < 0:
            raise ValueError(f"halo must be >= 0 cells, got {halo!r}")
        if self.on_stray not in _ON_STRAY:
            raise ValueError(f"on_stray must be one of {_ON_STRAY}, got {self.on_stray!r}")
        for axis, (n, p) in enumerate(zip(mesh[:2], grid, strict=True)):
            if p > 1 and halo > n // p:
                raise ValueError(
                    f"halo={halo} cells is larger than the local slab of {n // p} cells along "
                    f"axis {axis} (mesh_shape={mesh!r}, device_grid={grid!r})"
                )
        object.__setattr__(self, "mesh_shape", mesh)
        object.__setattr__(self, "box_size", box)
        object.__setattr__(self, "device_grid", grid)
        object.__setattr__(self, "halo", halo)

    # ----------------------------------------------------------------------------------- derived
    @property
    def n_cells(self) -> int:
        """Total number of cells, `nx * ny * nz`."""
        return math.prod(self.mesh_shape)

    @property
    def volume(self) -> float:
        """Volume of the box in (Mpc/h)^3."""
        return math.prod(self.box_size)

    @property
    def cell_size(self) -> tuple[float, float, float]:
        """Side lengths of one cell along (x, y, z) in Mpc/h."""
        return tuple(b / n for b, n in zip(self.box_size, self.mesh_shape, strict=True))  # type: ignore[return-value]

    @property
    def cell_volume(self) -> float:
        """Volume of one cell in (Mpc/h)^3, `volume / n_cells`."""
        return self.volume / self.n_cells

    @property
    def fundamental_frequency(self) -> tuple[float, float, float]:
        """Fundamental wavenumber `2 pi / box_size` along each axis, in h/Mpc."""
        return tuple(2 * math.pi / b for b in self.box_size)  # type: ignore[return-value]

    @property
    def nyquist_frequency(self) -> tuple[float, float, float]:
        """Nyquist wavenumber `pi / cell_size` along each axis, in h/Mpc."""
        return tuple(math.pi / c for c in self.cell_size)  # type: ignore[return-value]

    @property
    def fourier_shape(self) -> tuple[int, int, int]:
        """Shape of `jpm_core.fft(field, self)`.

        The real-to-complex layout `(nx, ny, nz // 2 + 1)` on one device and with the default
        distributed transform (`fft_backend="rfft"`); jaxdecomp's complex pencil transform
        (`"jax"`, `"cudecomp"`) is transposed, `(ny, nz, nx)`.
        """
        nx, ny, nz = self.mesh_shape
        if self.transposed_fourier:
            return (ny, nz, nx)
        return (nx, ny, nz // 2 + 1)

    @property
    def transposed_fourier(self) -> bool:
        """Whether `jpm_core.fft` returns jaxdecomp's transposed complex layout `(ny, nz, nx)`."""
        return self.is_distributed and self.fft_backend != "rfft"

    @property
    def n_devices(self) -> int:
        """Number of devices the mesh is split over, `px * py`."""
        return self.device_grid[0] * self.device_grid[1]

    @property
    def is_distributed(self) -> bool:
        """Whether the mesh is split over more than one device."""
        return self.n_devices > 1

    @property
    def local_mesh_shape(self) -> tuple[int, int, int]:
        """Shape of the block of the mesh held by one device (without halo)."""
        nx, ny, nz = self.mesh_shape
        px, py = self.device_grid
        return (nx // px, ny // py, nz)

    def kvec(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Wavevector components on the Fourier grid of `jpm_core.fft`, as float64 NumPy arrays.

        **Returns:** `(kx, ky, kz)` in h/Mpc, each with one non-singleton axis, broadcasting to
        `fourier_shape`. One device: shapes `(nx, 1, 1)`, `(1, ny, 1)`, `(1, 1, nz // 2 + 1)`, with
        `kx`, `ky` in `numpy.fft.fftfreq` order and `kz` in `numpy.fft.rfftfreq` order.
        The same with `fft_backend="rfft"`. jaxdecomp's transposed `(ny, nz, nx)` layout:
        `(1, 1, nx)`, `(ny, 1, 1)`, `(1, nz, 1)`, all in `fftfreq` order. Use
        `jpm_core.wavevectors` for JAX arrays.
        """
        nx, ny, nz = self.mesh_shape
        cx, cy, cz = self.cell_size
        kx = 2 * np.pi * np.fft.fftfreq(nx, d=cx)
        ky = 2 * np.pi * np.fft.fftfreq(ny, d=cy)
        if self.transposed_fourier:
            kz = 2 * np.pi * np.fft.fftfreq(nz, d=cz)
            return kx.reshape(1, 1, nx), ky.reshape(ny, 1, 1), kz.reshape(1, nz, 1)
        kz = 2 * np.pi * np.fft.rfftfreq(nz, d=cz)
        return kx.reshape(nx, 1, 1), ky.reshape(1, ny, 1), kz.reshape(1, 1, nz // 2 + 1)
