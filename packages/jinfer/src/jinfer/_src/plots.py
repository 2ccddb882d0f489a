"""A corner figure of posterior samples: how explicit and implicit posteriors are compared by eye."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["plot_corner"]


def plot_corner(
    samples: Any,
    names: Sequence[str],
    labels: Sequence[str] | None = None,
    *,
    truth: Any = None,
    bins: int = 30,
    fisher: Any = None,
    fisher_center: Any = None,
    fisher_label: str = "Fisher",
    ranges: Any = None,
):
    """A corner figure of one or several sets of posterior samples of the same parameters.

    The diagonal shows each parameter's histogram (normalised, one outline per set), the lower
    triangle each pair's 2-D histogram as contours enclosing 68% and 95% of the samples. Needs
    matplotlib (`pip install "jinfer[plot]"`); builds a `matplotlib.figure.Figure` directly (no
    pyplot, no display needed).

    **Arguments:**

    - `samples`: an array `(n, p)`, or a list or tuple of them (one per method; the sizes may differ).
    - `names`: the `p` parameter names.
    - `labels`: optional legend labels, one per set.
    - `truth`: optional true values `(p,)`, drawn as lines.
    - `bins`: histogram bins per axis.
    - `fisher`: optional Fisher matrix `(p, p)`: its 68% and 95% ellipses (see
      [`fisher_ellipse`][jinfer.fisher_ellipse]) in the pair panels and its Gaussian marginals on
      the diagonal, dashed black, centred on `fisher_center` (default `truth`).
    - `fisher_center`, `fisher_label`: the centre `(p,)` and the legend label of the forecast.
    - `ranges`: optional axis limits `(p, 2)` (e.g. the prior's box); default: the samples' extent
      (and the Fisher 95% region), padded by 5%.

    **Returns:**

    The `matplotlib.figure.Figure`.

    **Raises:**

    `ValueError` for sets of different widths or with non-finite values, `names`, `labels` or
    `truth` of the wrong length, or `bins < 2`.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover
        raise ImportError('plot_corner needs matplotlib: pip install "jinfer[plot]"') from e

    sets = list(samples) if isinstance(samples, (list, tuple)) else [samples]
    sets = [np.asarray(s, np.float64) for s in sets]
    if not sets:
        raise ValueError("samples must hold at least one set of samples")
    p = len(names)
    for k, s in enumerate(sets):
        if s.ndim != 2 or s.shape[1] != p or s.shape[0] < 2:
            raise ValueError(f"samples set {k} must have shape (n >= 2, {p}), got {s.shape}")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"samples set {k} holds non-finite values")
    if labels is not None and len(labels) != len(sets):
        raise ValueError(f"labels must have {len(sets)} entries, got {len(labels)}")
    if truth is not None and np.shape(truth) != (p,):
        raise ValueError(f"truth must have shape ({p},), got {np.shape(truth)}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an int >= 2, got {bins!r}")
    if fisher is not None:
        from matplotlib.patches import Ellipse

        from jinfer._src.fisher import _check_spd, fisher_ellipse

        fisher = np.asarray(fisher, np.float64)
        if fisher.shape != (p, p):
            raise ValueError(f"fisher must have shape ({p}, {p}), got {fisher.shape}")
        _check_spd("fisher", fisher)
        centre = truth if fisher_center is None else fisher_center
        if centre is None or np.shape(centre) != (p,):
            raise ValueError(f"a Fisher overlay needs fisher_center (or truth) of shape ({p},)")
        centre = np.asarray(centre, np.float64)
        sigma = np.sqrt(np.diag(np.linalg.inv(fisher)))

    lo = np.min([s.min(0) for s in sets], axis=0)
    hi = np.max([s.max(0) for s in sets], axis=0)
    if fisher is not None:  # the 95% ellipse fits in the panels
        lo = np.minimum(lo, centre - 2.5 * sigma)
        hi = np.maximum(hi, centre + 2.5 * sigma)
    if ranges is not None:
        ranges = np.asarray(ranges, np.float64)
        if (
            ranges.shape != (p, 2)
            or not np.all(np.isfinite(ranges))
            or np.any(ranges[:, 1] <= ranges[:, 0])
        ):
            raise ValueError(f"ranges must be finite (low, high) pairs, shape ({p}, 2), low < high")
    pad = 0.05 * np.where(hi > lo, hi - lo, 1.0)
    lo, hi = (lo - pad, hi + pad) if ranges is None else (ranges[:, 0], ranges[:, 1])
    fig = Figure(figsize=(2.2 * p, 2.2 * p))
    axes = fig.subplots(p, p, squeeze=False)
    colours = [f"C{k}" for k in range(len(sets))]
    for i in range(p):
        for j in range(p):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                for k, s in enumerate(sets):
                    ax.hist(s[:, i], bins=bins, range=(lo[i], hi[i]), density=True,
                            histtype="step", color=colours[k],
                            label=None if labels is None else labels[k])  # fmt: skip
                if fisher is not None:
                    grid = np.linspace(lo[i], hi[i], 200)
                    pdf = np.exp(-0.5 * ((grid - centre[i]) / sigma[i]) ** 2)
                    ax.plot(grid, pdf / (math.sqrt(2 * math.pi) * sigma[i]), "k--", lw=0.9,
                            label=fisher_label if labels is not None else None)  # fmt: skip
                ax.set_yticks([])
                if truth is not None:
                    ax.axvline(truth[i], color="k", lw=0.8)
            else:
                for k, s in enumerate(sets):
                    h, xe, ye = np.histogram2d(s[:, j], s[:, i], bins=bins,
                                               range=[[lo[j], hi[j]], [lo[i], hi[i]]])  # fmt: skip
                    levels = _mass_levels(h, (0.95, 0.68))
                    if len(set(levels)) == len(levels):
                        centres = (0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]))
                        ax.contour(*centres, h.T, levels=levels, colors=colours[k])
                if fisher is not None:
                    for level in (0.683, 0.954):
                        width, height, angle = (float(v) for v in fisher_ellipse(
                            fisher, j, i, level=level))  # fmt: skip
                        ax.add_patch(Ellipse((centre[j], centre[i]), width, height, angle=angle,
                                             fill=False, ls="--", lw=0.9, color="k"))  # fmt: skip
                if truth is not None:
                    ax.axvline(truth[j], color="k", lw=0.8)
                    ax.axhline(truth[i], color="k", lw=0.8)
                ax.set_ylim(lo[i], hi[i])
            ax.set_xlim(lo[j], hi[j])
            if i == p - 1:
                ax.set_xlabel(names[j])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i])
    if labels is not None:
        axes[0, 0].legend(loc="upper left", fontsize="small", frameon=False)
    fig.tight_layout()
    return fig


def _mass_levels(h, masses):
    """Histogram heights whose super-level sets hold the given fractions of the counts (increasing)."""
    flat = np.sort(h.ravel())[::-1]
    cum = np.cumsum(flat) / flat.sum()
    return [float(flat[min(np.searchsorted(cum, m), flat.size - 1)]) for m in masses]
