"""Plots of angular power spectra (matplotlib, an optional dependency imported when called)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["plot_cl", "plot_map"]


def plot_cl(
    ell: Any,
    cls: Any,
    *,
    measured: Any = None,
    measured_ell: Any = None,
    errors: Any = None,
    band: Any = None,
    labels: Any = None,
    scale: str = "ell2",
    figsize: tuple[float, float] | None = None,
) -> Any:
    """Draw C_ell for every pair of bins (lower triangle of a grid), with optional measurements.

    **Arguments:**

    - `ell`: multipoles of the theory, shape `(n_ell,)`.
    - `cls`: theory spectra, shape `(n_bins, n_bins, n_ell)` (as [`angular_cl`][jlens.angular_cl]
      returns) or `(n_ell,)` for a single spectrum.
    - `measured`: measured spectra, shape `(n_bins, n_bins, n_meas)` (or `(n_meas,)`), drawn as
      points at `measured_ell`; None for none.
    - `measured_ell`: multipoles of the measurements, shape `(n_meas,)` (default: `ell`).
    - `errors`: 1-sigma error bars of the measurements, same shape as `measured`.
    - `band`: 1-sigma half-width of a shaded band around the theory, same shape as `cls`
      (e.g. the Gaussian sample variance).
    - `labels`: names of the bins (default `"1"`, `"2"`, ...).
    - `scale`: `"ell2"` to plot ell (ell + 1) C_ell / (2 pi) (default) or `"cl"` for C_ell.
    - `figsize`: the figure size in inches (default: 2.6 inches per bin).

    **Returns:**

    The `matplotlib.figure.Figure`.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plot_cl needs matplotlib: pip install matplotlib") from error
    if scale not in ("ell2", "cl"):
        raise ValueError(f"scale must be 'ell2' or 'cl', got {scale!r}")
    ell = np.asarray(ell, dtype=np.float64)
    cls = np.asarray(cls, dtype=np.float64)
    if cls.ndim == 1:
        cls = cls[None, None]
    if cls.ndim != 3 or cls.shape[0] != cls.shape[1] or cls.shape[-1] != ell.shape[-1]:
        raise ValueError(f"cls must have shape (n_bins, n_bins, {ell.shape[-1]}), got {cls.shape}")
    n_bins = cls.shape[0]

    def as_pairs(name: str, values: Any, n: int) -> np.ndarray | None:
        if values is None:
            return None
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            values = values[None, None]
        if values.shape != (n_bins, n_bins, n):
            raise ValueError(f"{name} must have shape {(n_bins, n_bins, n)}, got {values.shape}")
        return values

    measured_ell = ell if measured_ell is None else np.asarray(measured_ell, dtype=np.float64)
    measured = as_pairs("measured", measured, measured_ell.shape[-1])
    errors = as_pairs("errors", errors, measured_ell.shape[-1])
    band = as_pairs("band", band, ell.shape[-1])
    labels = [str(i + 1) for i in range(n_bins)] if labels is None else [str(v) for v in labels]

    def factor(x: np.ndarray) -> np.ndarray:
        return x * (x + 1.0) / (2.0 * np.pi) if scale == "ell2" else np.ones_like(x)

    size = figsize or (2.6 * n_bins + 1.0, 2.2 * n_bins + 0.8)
    fig, axes = plt.subplots(n_bins, n_bins, figsize=size, squeeze=False, sharex=True)
    for i in range(n_bins):
        for j in range(n_bins):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            theory = factor(ell) * cls[i, j]
            ax.plot(ell, theory, color="C0", label="theory")
            if band is not None:
                width = factor(ell) * band[i, j]
                ax.fill_between(ell, theory - width, theory + width, color="C0", alpha=0.25)
            if measured is not None:
                points = factor(measured_ell) * measured[i, j]
                bars = None if errors is None else factor(measured_ell) * errors[i, j]
                ax.errorbar(
                    measured_ell, points, yerr=bars, fmt="o", ms=3, color="C1", label="measured"
                )
            ax.set_xscale("log")
            if np.all(theory > 0):
                ax.set_yscale("log")
            ax.set_title(f"({labels[i]}, {labels[j]})", fontsize=9)
            if i == n_bins - 1:
                ax.set_xlabel(r"$\ell$")
            if j == 0:
                ax.set_ylabel(r"$\ell(\ell+1)C_\ell/2\pi$" if scale == "ell2" else r"$C_\ell$")
    if measured is not None:
        axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_map(
    kappa: Any,
    geometry: Any = None,
    *,
    field_deg: float | None = None,
    ax: Any = None,
    cmap: str = "inferno",
    colorbar: bool = True,
    title: str | None = None,
    **imshow: Any,
) -> Any:
    """Draw a convergence map on the sky, axes in degrees (y along axis 0, drawn upwards).

    **Arguments:**

    - `kappa`: the map, shape `(ny, nx)`.
    - `geometry`: its [`FlatSky`][jlens.FlatSky] (gives the extent), or None with `field_deg`.
    - `field_deg`: side of the map in degrees when no geometry is given (default: pixel units).
    - `ax`: a matplotlib Axes to draw in (default: a new figure).
    - `cmap`, `colorbar`, `title`: display options; other keywords go to `imshow`.

    **Returns:**

    The `matplotlib.figure.Figure`.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plot_map needs matplotlib: pip install matplotlib") from error
    kappa = np.asarray(kappa, dtype=np.float64)
    if kappa.ndim != 2:
        raise ValueError(f"kappa must be one map of shape (ny, nx), got {kappa.shape}")
    if geometry is not None:
        geometry.check_map("kappa", kappa, batch=False)
        side = geometry.field_rad * 180.0 / np.pi
        unit = "deg"
    elif field_deg is not None:
        side, unit = float(field_deg), "deg"
    else:
        side, unit = float(kappa.shape[0]), "pixel"
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.8, 4.0))
    else:
        fig = ax.figure
    extent = (0.0, side * kappa.shape[1] / kappa.shape[0], 0.0, side)
    image = ax.imshow(kappa, origin="lower", extent=extent, cmap=cmap, **imshow)
    ax.set_xlabel(f"x [{unit}]")
    ax.set_ylabel(f"y [{unit}]")
    if title:
        ax.set_title(title)
    if colorbar:
        fig.colorbar(image, ax=ax, label=r"$\kappa$")
    return fig
