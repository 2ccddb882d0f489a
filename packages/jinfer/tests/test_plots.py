"""The corner figure: panels, levels that enclose the stated mass, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import jinfer
from jinfer._src.plots import _mass_levels


def test_corner_figure_has_one_panel_per_pair_and_the_histograms_are_densities():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 3))
    b = rng.normal(0.3, 1.2, size=(1500, 3))
    fig = jinfer.plot_corner([a, b], ["Omega_c", "sigma8", "w0"], ["NUTS", "VMIM"], truth=[0, 0, 0])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 6  # 3 diagonal + 3 lower-triangle panels
    diag = fig.axes[0]
    patches = diag.patches
    assert len(patches) == 2  # one outline per set
    assert [t.get_text() for t in diag.get_legend().get_texts()] == ["NUTS", "VMIM"]
    assert fig.axes[3].get_ylabel() == "sigma8"
    assert fig.axes[8].get_xlabel() == "w0"


def test_the_contour_levels_enclose_68_and_95_percent():
    rng = np.random.default_rng(1)
    h, _, _ = np.histogram2d(*rng.normal(size=(2, 200_000)), bins=60, range=[[-4, 4], [-4, 4]])
    l95, l68 = _mass_levels(h, (0.95, 0.68))
    assert l95 < l68
    np.testing.assert_allclose(h[h >= l68].sum() / h.sum(), 0.68, atol=0.01)
    np.testing.assert_allclose(h[h >= l95].sum() / h.sum(), 0.95, atol=0.01)


def test_corner_errors():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match=r"shape \(n >= 2, 3\)"):
        jinfer.plot_corner(x, ["a", "b", "c"])
    with pytest.raises(ValueError, match="non-finite"):
        jinfer.plot_corner(np.full((10, 2), np.nan), ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        jinfer.plot_corner([x, x], ["a", "b"], ["one"])
    with pytest.raises(ValueError, match="truth"):
        jinfer.plot_corner(x, ["a", "b"], truth=[0.0])


def test_the_fisher_overlay_draws_the_ellipses_of_the_marginal_covariance():
    rng = np.random.default_rng(2)
    cov = np.array([[0.04, 0.018], [0.018, 0.0225]])
    samples = rng.multivariate_normal([0.3, 0.8], cov, size=4000)
    fisher = np.linalg.inv(cov)
    fig = jinfer.plot_corner(
        samples, ["a", "b"], ["samples"], truth=[0.3, 0.8], fisher=fisher, ranges=[[-0.5, 1.1],
                                                                                  [0.2, 1.4]]
    )  # fmt: skip
    pair = fig.axes[2]
    ellipses = [p for p in pair.patches if type(p).__name__ == "Ellipse"]
    assert len(ellipses) == 2
    # the 68.3% ellipse: x^T C^{-1} x = 2.30; its axes from the eigenvalues of C (numpy, not ours)
    eig = np.linalg.eigvalsh(cov)
    small = min(ellipses, key=lambda e: e.width)
    np.testing.assert_allclose(
        sorted([small.width, small.height]), sorted(2 * np.sqrt(-2 * np.log(1 - 0.683) * eig)),
        rtol=1e-6,
    )  # fmt: skip
    np.testing.assert_allclose(small.center, [0.3, 0.8])
    assert pair.get_xlim() == (-0.5, 1.1)
    assert pair.get_ylim() == (0.2, 1.4)
    # the diagonal: the Gaussian marginal, a density (its peak is 1 / (sqrt(2 pi) sigma))
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata().max(), 1 / np.sqrt(2 * np.pi * 0.04), rtol=1e-3)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["samples", "Fisher"]


def test_fisher_overlay_errors():
    x = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match="fisher must have shape"):
        jinfer.plot_corner(x, ["a", "b"], truth=[0, 0], fisher=np.eye(3))
    with pytest.raises(ValueError, match="positive definite"):
        jinfer.plot_corner(x, ["a", "b"], truth=[0, 0], fisher=-np.eye(2))
    with pytest.raises(ValueError, match="fisher_center"):
        jinfer.plot_corner(x, ["a", "b"], fisher=np.eye(2))
    with pytest.raises(ValueError, match="ranges"):
        jinfer.plot_corner(x, ["a", "b"], ranges=[[0, -1], [0, 1]])
