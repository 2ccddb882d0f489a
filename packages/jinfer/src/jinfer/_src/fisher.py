"""Fisher matrices: from the Hessian of a log-likelihood, or of Gaussian summaries, and what they forecast.

The Fisher information of parameters `theta` is `F = -E[d^2 log p(x | theta) / dtheta dtheta^T]`.
Two ways to get it:

- `fisher_from_log_likelihood`: minus the Hessian of a scalar log-likelihood at `theta`
  (`jax.hessian`, forward over reverse), for one realisation of the data (the observed Fisher; its
  expectation over the data is the Fisher information);
- `gaussian_fisher`: for summaries `s ~ N(mu(theta), C)` with a covariance independent of the
  parameters, `F = J^T C^{-1} J` with `J = dmu/dtheta` (`jax.jacfwd`), the covariance given or
  estimated from simulations at the fiducial with the Hartlap et al. (2007) correction
  `(n - d - 2) / (n - 1)` of the inverse covariance.

From a Fisher matrix: the marginal (`sqrt(diag F^{-1})`) and conditional (`1 / sqrt(diag F)`) errors,
the 2-D marginal confidence ellipse of a pair of parameters, and a corner figure of those ellipses.

All functions are pure and jit/vmap/grad-friendly; their argument checks (shapes, finiteness,
positive definiteness) raise `ValueError` eagerly when the inputs are concrete and are skipped while
tracing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "conditional_errors",
    "fisher_ellipse",
    "fisher_from_log_likelihood",
    "gaussian_fisher",
    "marginal_errors",
    "plot_fisher_ellipses",
]

_METHODS = ("hessian",)


def _is_concrete(tree: Any) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def _check_theta(theta: Any) -> None:
    shape = jnp.shape(theta)
    if len(shape) != 1 or shape[0] == 0:
        raise ValueError(f"theta must be a non-empty 1-D array of parameters, got shape {shape}")
    if _is_concrete(theta) and not np.all(np.isfinite(np.asarray(theta))):
        raise ValueError(f"theta must be finite, got {np.asarray(theta)}")


def _check_spd(name: str, matrix: Any) -> None:
    """Eager checks of a square, finite, symmetric positive definite matrix (shape always)."""
    shape = jnp.shape(matrix)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {shape}")
    if not _is_concrete(matrix):
        return
    m = np.asarray(matrix, dtype=np.float64)
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} must be finite")
    scale = np.max(np.abs(m))
    if np.max(np.abs(m - m.T)) > 1e-6 * scale:
        raise ValueError(f"{name} must be symmetric")
    try:
        np.linalg.cholesky(m)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"{name} must be symmetric positive definite (its Cholesky factorisation failed)"
        ) from None


def _check_finite_result(name: str, value: jax.Array) -> None:
    if _is_concrete(value) and not np.all(np.isfinite(np.asarray(value))):
        raise ValueError(f"{name} is not finite")


def _inverse_spd(matrix: jax.Array) -> jax.Array:
    factor = jax.scipy.linalg.cho_factor(matrix, lower=True)
    eye = jnp.eye(matrix.shape[0], dtype=factor[0].dtype)
    return jax.scipy.linalg.cho_solve(factor, eye)


def fisher_from_log_likelihood(
    log_likelihood: Callable[[jax.Array], jax.Array],
    theta: Any,
    *,
    method: str = "hessian",
) -> jax.Array:
    """The Fisher matrix `F = -d^2 log L / dtheta dtheta^T` of a log-likelihood at `theta`.

    Computed with `jax.hessian` (forward-mode over reverse-mode) and symmetrised,
    `(F + F^T) / 2`. For one realisation of the data this is the observed Fisher matrix; its average
    over data realisations is the Fisher information.

    **Arguments:**

    - `log_likelihood`: a function of the parameters returning the scalar `log p(x | theta)` of the
      data (closed over).
    - `theta`: the parameters at which to evaluate it, a 1-D array of shape `(p,)`.
    - `method`: how the second derivatives are taken; only `"hessian"` (exact, automatic
      differentiation) for now.

    **Returns:**

    The Fisher matrix, shape `(p, p)`.

    **Raises:**

    `ValueError` for an unknown `method`, a `theta` that is not a non-empty 1-D array or not finite, a
    `log_likelihood` whose output is not a scalar, or (concrete inputs) a non-finite Hessian.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    _check_theta(theta)
    theta = jnp.asarray(theta)
    if not jnp.issubdtype(theta.dtype, jnp.floating):
        theta = theta.astype(jnp.result_type(float))
    out = jax.eval_shape(log_likelihood, theta)
    if getattr(out, "shape", None) != ():
        raise ValueError(
            "log_likelihood must return a scalar, got output of shape "
            f"{getattr(out, 'shape', type(out).__name__)}"
        )
    hessian = jax.hessian(log_likelihood)(theta)
    fisher = -0.5 * (hessian + hessian.T)
    _check_finite_result("the Hessian of log_likelihood", fisher)
    return fisher


def gaussian_fisher(
    mean_fn: Callable[[jax.Array], jax.Array],
    theta: Any,
    covariance: Any = None,
    *,
    simulations: Any = None,
    hartlap: bool = True,
) -> jax.Array:
    """The Fisher matrix `F = J^T C^{-1} J` of Gaussian summaries with a parameter-independent covariance.

    The summaries are `s ~ N(mu(theta), C)`; `J = dmu/dtheta` is taken with `jax.jacfwd` at the
    fiducial `theta` and `C^{-1} J` by a Cholesky solve. The covariance is either given, or estimated
    from `n` simulations of the summaries at the fiducial (sample covariance, `n - 1` normalisation);
    the inverse of an estimated covariance is biased high by `(n - 1) / (n - d - 2)`, which the
    Hartlap et al. (2007) factor `(n - d - 2) / (n - 1)` removes (`hartlap=True`).

    **Arguments:**

    - `mean_fn`: the mean of the summaries as a function of the parameters, `(p,) -> (d,)`.
    - `theta`: the fiducial parameters, a 1-D array of shape `(p,)`.
    - `covariance`: the covariance of the summaries, shape `(d, d)`, symmetric positive definite.
    - `simulations`: instead of `covariance`, summaries simulated at the fiducial, shape `(n, d)` with
      `n > d + 2`.
    - `hartlap`: whether to apply the Hartlap correction to an estimated covariance (ignored when
      `covariance` is given).

    **Returns:**

    The Fisher matrix, shape `(p, p)`.

    **Raises:**

    `ValueError` unless exactly one of `covariance` and `simulations` is given, for a `theta` that is
    not a finite 1-D array, a `mean_fn` whose output is not 1-D, shapes that do not match the
    summary dimension `d`, too few simulations (`n <= d + 2`), or (concrete inputs) a covariance that
    is not finite and symmetric positive definite.
    """
    if (covariance is None) == (simulations is None):
        raise ValueError("give exactly one of covariance and simulations")
    _check_theta(theta)
    theta = jnp.asarray(theta)
    if not jnp.issubdtype(theta.dtype, jnp.floating):
        theta = theta.astype(jnp.result_type(float))
    out = jax.eval_shape(mean_fn, theta)
    out_shape = getattr(out, "shape", None)
    if out_shape is None or len(out_shape) != 1 or out_shape[0] == 0:
        raise ValueError(
            f"mean_fn must return a non-empty 1-D array of summaries, got shape {out_shape}"
        )
    d = out_shape[0]
    factor = 1.0
    if simulations is not None:
        sims_shape = jnp.shape(simulations)
        if len(sims_shape) != 2 or sims_shape[1] != d:
            raise ValueError(
                f"simulations must have shape (n, {d}) (d = {d} summaries), got {sims_shape}"
            )
        n = sims_shape[0]
        if n <= d + 2:
            raise ValueError(
                f"too few simulations to estimate the inverse covariance: need n > d + 2 = {d + 2}, "
                f"got n = {n}"
            )
        if _is_concrete(simulations) and not np.all(np.isfinite(np.asarray(simulations))):
            raise ValueError("simulations must be finite")
        sims = jnp.asarray(simulations)
        centred = sims - jnp.mean(sims, axis=0)[None, :]
        covariance = centred.T @ centred / (n - 1)
        if hartlap:
            factor = (n - d - 2) / (n - 1)
        name = "the covariance estimated from simulations"
    else:
        if jnp.shape(covariance) != (d, d):
            raise ValueError(
                f"covariance must have shape ({d}, {d}) (d = {d} summaries), "
                f"got {jnp.shape(covariance)}"
            )
        name = "covariance"
    _check_spd(name, covariance)
    jac = jax.jacfwd(mean_fn)(theta)
    chol = jnp.linalg.cholesky(jnp.asarray(covariance, dtype=jac.dtype))
    white = jax.scipy.linalg.solve_triangular(chol, jac, lower=True)
    fisher = factor * (white.T @ white)
    fisher = 0.5 * (fisher + fisher.T)
    _check_finite_result("the Fisher matrix", fisher)
    return fisher


def marginal_errors(fisher: Any) -> jax.Array:
    """The marginal 1-sigma errors `sqrt(diag(F^{-1}))` forecast by a Fisher matrix.

    Each parameter's error with all the others marginalised over (Cramér-Rao bound).

    **Arguments:**

    - `fisher`: the Fisher matrix, shape `(p, p)`, symmetric positive definite.

    **Returns:**

    The errors, shape `(p,)`.

    **Raises:**

    `ValueError` if `fisher` is not square or (concrete) not finite and symmetric positive definite.
    """
    _check_spd("fisher", fisher)
    fisher = jnp.asarray(fisher)
    return jnp.sqrt(jnp.diag(_inverse_spd(fisher)))


def conditional_errors(fisher: Any) -> jax.Array:
    """The conditional 1-sigma errors `1 / sqrt(diag F)` forecast by a Fisher matrix.

    Each parameter's error with all the others held fixed at their fiducial values; never larger
    than the marginal error.

    **Arguments:**

    - `fisher`: the Fisher matrix, shape `(p, p)`, symmetric positive definite.

    **Returns:**

    The errors, shape `(p,)`.

    **Raises:**

    `ValueError` if `fisher` is not square or (concrete) not finite and symmetric positive definite.
    """
    _check_spd("fisher", fisher)
    return 1.0 / jnp.sqrt(jnp.diag(jnp.asarray(fisher)))


def _check_level(level: float) -> float:
    if not isinstance(level, int | float) or not 0.0 < level < 1.0:
        raise ValueError(f"level must be a probability in (0, 1), got {level!r}")
    return float(level)


def _check_pair(i: Any, j: Any, p: int) -> None:
    for name, k in (("i", i), ("j", j)):
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or not 0 <= k < p:
            raise ValueError(f"{name} must be a parameter index in [0, {p}), got {k!r}")
    if i == j:
        raise ValueError(f"i and j must be different parameters, got i = j = {i}")


def fisher_ellipse(
    fisher: Any, i: int, j: int, *, level: float = 0.68
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The 2-D marginal confidence ellipse of parameters `i` and `j` forecast by a Fisher matrix.

    From the marginal covariance `C = (F^{-1})[[i, j]][:, [i, j]]`: the ellipse
    `x^T C^{-1} x = q` holds the probability `level` of a 2-D Gaussian, with `q` the `level`
    quantile of a chi-squared with 2 degrees of freedom, `q = -2 log(1 - level)` (2.30 for 68.3 %,
    6.17 for 95.4 %). Its full axes are `2 sqrt(q lambda)` for the eigenvalues `lambda` of `C`.
    The result is what `matplotlib.patches.Ellipse` takes: `width` along the direction at `angle`
    from the `i` axis, `height` perpendicular to it.

    **Arguments:**

    - `fisher`: the Fisher matrix, shape `(p, p)`, symmetric positive definite.
    - `i`, `j`: the two parameters (indices), drawn on the horizontal and vertical axes.
    - `level`: the probability inside the ellipse, in `(0, 1)`.

    **Returns:**

    `(width, height, angle_deg)`: the full major axis, the full minor axis, and the angle of the major
    axis counter-clockwise from the `i` axis in degrees, in `(-90, 90]`.

    **Raises:**

    `ValueError` for a `fisher` that is not square or (concrete) not finite and symmetric positive
    definite, indices out of range or equal, or a `level` outside `(0, 1)`.
    """
    _check_spd("fisher", fisher)
    p = jnp.shape(fisher)[0]
    _check_pair(i, j, p)
    level = _check_level(level)
    q = -2.0 * math.log1p(-level)
    cov = _inverse_spd(jnp.asarray(fisher))
    a, b, c = cov[i, i], cov[j, j], cov[i, j]
    half_sum = 0.5 * (a + b)
    radius = jnp.hypot(0.5 * (a - b), c)
    major = half_sum + radius
    minor = jnp.maximum(half_sum - radius, 0.0)
    width = 2.0 * jnp.sqrt(q * major)
    height = 2.0 * jnp.sqrt(q * minor)
    angle = jnp.degrees(0.5 * jnp.arctan2(2.0 * c, a - b))
    return width, height, angle


def plot_fisher_ellipses(
    fishers: Any,
    names: Sequence[str],
    labels: Sequence[str] | None = None,
    ax: Any = None,
    *,
    fiducial: Any = None,
    levels: Sequence[float] = (0.683, 0.954),
):
    """A corner figure of the 2-D marginal confidence ellipses of one or several Fisher matrices.

    One panel per pair of parameters (`i` horizontal, `j > i` vertical) in the lower triangle of a
    `(p - 1) x (p - 1)` grid, one colour per Fisher matrix, one ellipse per level (see
    `fisher_ellipse`). Needs matplotlib (`pip install "jinfer[plot]"`); builds a
    `matplotlib.figure.Figure` directly, so it works without a display and without pyplot.

    **Arguments:**

    - `fishers`: a Fisher matrix of shape `(p, p)`, or a sequence of them (same `p`).
    - `names`: the `p` parameter names, for the axis labels.
    - `labels`: optional legend labels, one per Fisher matrix.
    - `ax`: optional `matplotlib` Axes to draw in; only for `p = 2` (a single panel).
    - `fiducial`: the centre of the ellipses, shape `(p,)` (default: zeros).
    - `levels`: the probabilities of the ellipses, each in `(0, 1)`.

    **Returns:**

    The `matplotlib.figure.Figure` (that of `ax` when given).

    **Raises:**

    `ValueError` for Fisher matrices of different or wrong shapes (or not symmetric positive
    definite), `names`, `labels` or `fiducial` of the wrong length, `p < 2`, an `ax` with `p > 2`,
    or a level outside `(0, 1)`.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Ellipse
    except ImportError as e:  # pragma: no cover
        raise ImportError(
            'plot_fisher_ellipses needs matplotlib: pip install "jinfer[plot]"'
        ) from e

    if np.ndim(fishers) == 2:
        fishers = [fishers]
    fishers = [np.asarray(f, dtype=np.float64) for f in fishers]
    if not fishers:
        raise ValueError("fishers must hold at least one Fisher matrix")
    p = fishers[0].shape[0] if fishers[0].ndim == 2 else 0
    for k, f in enumerate(fishers):
        if f.shape != (p, p):
            raise ValueError(
                f"every Fisher matrix must have shape {(p, p)}, got {f.shape} for fishers[{k}]"
            )
        _check_spd(f"fishers[{k}]", f)
    if p < 2:
        raise ValueError(f"need at least 2 parameters to draw ellipses, got p = {p}")
    names = list(names)
    if len(names) != p:
        raise ValueError(f"names must hold {p} parameter names, got {len(names)}")
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(fishers):
            raise ValueError(f"labels must hold {len(fishers)} labels, got {len(labels)}")
    if fiducial is None:
        fiducial = np.zeros(p)
    fiducial = np.asarray(fiducial, dtype=np.float64)
    if fiducial.shape != (p,):
        raise ValueError(f"fiducial must have shape ({p},), got {fiducial.shape}")
    levels = [_check_level(level) for level in levels]
    if not levels:
        raise ValueError("levels must hold at least one probability")
    if ax is not None and p != 2:
        raise ValueError(f"ax draws a single panel, for p = 2 parameters only; got p = {p}")

    if ax is None:
        fig = Figure(figsize=(2.6 * (p - 1) + 0.6, 2.6 * (p - 1) + 0.6), layout="constrained")
        grid = fig.subplots(p - 1, p - 1, squeeze=False)
    else:
        fig = ax.figure
        grid = np.array([[ax]])
    covs = [np.linalg.inv(f) for f in fishers]
    q_max = -2.0 * math.log1p(-max(levels))
    half = [1.15 * max(math.sqrt(q_max * c[k, k]) for c in covs) for k in range(p)]
    for row in range(p - 1):
        for col in range(p - 1):
            panel = grid[row, col]
            i, j = col, row + 1
            if i >= j:
                panel.set_axis_off()
                continue
            for k, f in enumerate(fishers):
                colour = f"C{k % 10}"
                for m, level in enumerate(levels):
                    width, height, angle = (float(v) for v in fisher_ellipse(f, i, j, level=level))
                    patch = Ellipse(
                        (fiducial[i], fiducial[j]),
                        width,
                        height,
                        angle=angle,
                        facecolor="none",
                        edgecolor=colour,
                        alpha=1.0 - 0.4 * m / max(len(levels) - 1, 1),
                        label=(labels[k] if labels is not None and m == 0 else None),
                    )
                    panel.add_patch(patch)
            panel.set_xlim(fiducial[i] - half[i], fiducial[i] + half[i])
            panel.set_ylim(fiducial[j] - half[j], fiducial[j] + half[j])
            if row == p - 2:
                panel.set_xlabel(names[i])
            if col == 0:
                panel.set_ylabel(names[j])
    if labels is not None:
        grid[0, 0].legend(loc="best", fontsize="small")
    return fig
