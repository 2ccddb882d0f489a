"""Diagnostic plots of rotation samples (matplotlib is an optional dependency, imported lazily)."""

from __future__ import annotations

import numpy as np

from ._checks import check_rotation


def plot_rotations(R, path=None, *, angle_density=None, bins: int = 60, title=None):
    """Plot a sample of rotations: the rotated z-axis `R e_z` on the sphere (Mollweide projection,
    2-D histogram of longitude and latitude) and the histogram of rotation angles against a reference
    density (default: the Haar law `(1 - cos omega) / pi`).

    Needs matplotlib (`pip install "jso3[plot]"`); works without a display (no pyplot).

    **Arguments:**

    - `R`: rotations, shape `(n, 3, 3)` (any batch shape is flattened).
    - `path`: if given, the figure is saved there (format from the suffix, e.g. `.png`).
    - `angle_density`: callable `omega -> density` on `[0, pi]` drawn over the angle histogram
      (e.g. `lambda w: np.exp(jso3.igso3_angle_log_prob(w, eps))`); `None` draws the Haar density.
    - `bins`: number of histogram bins per axis.
    - `title`: optional figure title.

    **Returns:**

    The `matplotlib.figure.Figure`.
    """
    check_rotation("R", R)
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover
        raise ImportError('plot_rotations needs matplotlib: pip install "jso3[plot]"') from e

    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    axis = R[:, :, 2]
    lon = np.arctan2(axis[:, 1], axis[:, 0])
    lat = np.arcsin(np.clip(axis[:, 2], -1.0, 1.0))
    cos_angle = np.clip(0.5 * (np.trace(R, axis1=-2, axis2=-1) - 1.0), -1.0, 1.0)
    angle = np.arccos(cos_angle)

    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_sphere = fig.add_subplot(1, 2, 1, projection="mollweide")
    lon_edges = np.linspace(-np.pi, np.pi, 2 * bins + 1)
    lat_edges = np.arcsin(np.linspace(-1.0, 1.0, bins + 1))  # equal-area bins
    counts, _, _ = np.histogram2d(lon, lat, bins=[lon_edges, lat_edges])
    mesh = ax_sphere.pcolormesh(lon_edges, lat_edges, counts.T, cmap="viridis", shading="flat")
    fig.colorbar(mesh, ax=ax_sphere, shrink=0.6, label="count per equal-area cell")
    ax_sphere.set_title(r"rotated axis $R\,e_z$")
    ax_sphere.grid(True, alpha=0.3)

    ax_angle = fig.add_subplot(1, 2, 2)
    ax_angle.hist(angle, bins=bins, range=(0.0, np.pi), density=True, alpha=0.6, label="sample")
    grid = np.linspace(0.0, np.pi, 400)
    if angle_density is None:
        ref, label = (1.0 - np.cos(grid)) / np.pi, "Haar"
    else:
        ref, label = np.asarray(angle_density(grid)), "reference"
    ax_angle.plot(grid, ref, "k-", lw=1.5, label=label)
    ax_angle.set_xlabel(r"rotation angle $\omega$")
    ax_angle.set_ylabel("density")
    ax_angle.legend()
    if title is not None:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path)
    return fig
