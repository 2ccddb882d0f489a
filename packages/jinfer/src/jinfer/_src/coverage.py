"""Coverage of posterior estimates over many simulations: TARP, highest-density and marginal (SBC).

A posterior estimator is calibrated when, over pairs `(theta_i, x_i)` drawn from the prior and the
simulator, the true `theta_i` falls inside the `alpha` credible region of `q(theta | x_i)` a
fraction `alpha` of the time, for every `alpha`. Each method below gives every simulation the
*credibility level* `f_i` at which its truth enters a family of credible regions; the expected
coverage probability `ECP(alpha)` is the fraction of simulations with `f_i <= alpha`, and a
calibrated estimator has `f_i ~ Uniform(0, 1)`, that is `ECP(alpha) = alpha`.

- `"tarp"` (Lemos, Coogan et al. 2023): balls around a random reference point per simulation; the
  level is the fraction of posterior samples closer to the reference than the truth. With random
  references, ECP = alpha for all alpha is necessary *and sufficient* for the estimator to be the
  true posterior (their theorem 3); needs samples only.
- `"hpd"`: highest-density regions of the estimator itself; the level is the fraction of samples
  whose density exceeds the truth's (needs `log q` at the samples and at the truth, which a flow
  gives).
- `"marginal"`: one-sided marginal intervals per parameter: the level is the fraction of samples
  below the truth, that is the rank statistic of simulation-based calibration (Talts et al. 2018),
  one column per parameter.

Ranks are randomised (`f = (r + u) / (n + 1)`, `r` the number of samples on the inner side,
`u ~ U(0, 1)`), so that `f` is exactly uniform for a calibrated estimator whatever the number of
samples, and the Kolmogorov-Smirnov p-value is exact rather than distorted by ties.

Written by hand rather than taken from the `tarp` package (which the tests run on the same inputs
as a reference): `tarp` 0.1.1 needs two undeclared packages to import, draws from NumPy's global
random state, bins ECP between the smallest and largest level rather than over [0, 1], and its
"bootstrap" mutates its inputs in place.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

__all__ = ["Coverage", "coverage", "plot_coverage"]

_METHODS = ("tarp", "hpd", "marginal")


class Coverage(NamedTuple):
    """What [`coverage`][jinfer.coverage] measures (NumPy arrays; `k` = 1 for `"tarp"` and `"hpd"`,
    the number of parameters for `"marginal"`).

    - `method`: the method's name.
    - `alpha`: `(m,)` credibility levels, from 0 to 1.
    - `ecp`: `(m, k)` expected coverage probability at each level.
    - `band`: `(2, m)` the central 95% interval of the ECP of a *calibrated* estimator with this
      many simulations, pointwise (binomial quantiles): an ECP curve outside it at many levels is
      miscalibrated.
    - `credibility`: `(n_sims, k)` the level at which each truth enters the credible regions.
    - `max_deviation`: `(k,)` the largest `|ECP(alpha) - alpha|` (the Kolmogorov-Smirnov statistic).
    - `p_value`: `(k,)` the Kolmogorov-Smirnov p-value of `credibility` against `U(0, 1)`: small
      values reject calibration (exact, thanks to the randomised ranks).
    - `n_sims`, `n_samples`: the sizes the measurement rests on.
    """

    method: str
    alpha: np.ndarray
    ecp: np.ndarray
    band: np.ndarray
    credibility: np.ndarray
    max_deviation: np.ndarray
    p_value: np.ndarray
    n_sims: int
    n_samples: int


def _finite(name: str, value: np.ndarray) -> None:
    if not np.all(np.isfinite(value)):
        raise ValueError(
            f"{name} must be finite ({int(np.sum(~np.isfinite(value)))} values are not)"
        )


def _tarp_ranks(samples, truths, references, scale):
    d_samples = np.linalg.norm((samples - references[:, None, :]) / scale[None, None, :], axis=-1)
    d_truths = np.linalg.norm((truths - references) / scale[None, :], axis=-1)
    return np.sum(d_samples < d_truths[:, None], axis=1)


def coverage(
    key: jax.Array,
    samples: Any,
    truths: Any,
    *,
    method: str = "tarp",
    log_prob: tuple[Any, Any] | None = None,
    references: Any = None,
    n_alpha: int = 101,
) -> Coverage:
    """The coverage of a posterior estimator over simulations (see the module docstring).

    **Arguments:**

    - `key`: a PRNG key (the references of `"tarp"` and the randomisation of the ranks).
    - `samples`: `(n_sims, n_samples, d)` posterior samples, `samples[i]` drawn from the estimate
      `q(theta | x_i)` (simulations first: what `jax.vmap` of a sampler over observations returns).
    - `truths`: `(n_sims, d)` the parameters that simulated each `x_i` (drawn from the prior).
    - `method`: `"tarp"`, `"hpd"` or `"marginal"`.
    - `log_prob`: for `"hpd"` only, the pair `(log q(samples[i, j] | x_i) of shape (n_sims,
      n_samples), log q(truths[i] | x_i) of shape (n_sims,))`.
    - `references`: for `"tarp"` only, `(n_sims, d)` reference points; default: drawn uniformly in
      the truths' bounding box (the prior's support, for a box prior). Distances are measured in
      units of each parameter's spread over the truths, so that no parameter dominates the metric.
    - `n_alpha`: the number of levels at which the ECP is reported.

    **Returns:**

    A [`Coverage`][jinfer.Coverage]. The function works on concrete arrays (NumPy), after
    sampling: call it outside `jit`.

    **Raises:**

    `ValueError`, before any compute, for arrays of the wrong shapes, non-finite values, fewer than
    2 simulations or samples, an unknown method, `log_prob` with a method other than `"hpd"` (or
    missing for it), `references` with a method other than `"tarp"`, or `n_alpha < 2`.

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import jinfer

    # theta ~ N(0, 1), x = theta + N(0, 0.5^2): the exact posterior is N(0.8 x, 0.2)
    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    theta = jax.random.normal(k1, (300, 1))
    x = theta + 0.5 * jax.random.normal(k2, (300, 1))
    post = 0.8 * x[:, None, :] + jnp.sqrt(0.2) * jax.random.normal(k3, (300, 500, 1))
    result = jinfer.coverage(k4, post, theta)
    assert result.p_value[0] > 1e-3  # calibrated
    ```
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if not isinstance(n_alpha, int) or n_alpha < 2:
        raise ValueError(f"n_alpha must be an integer >= 2, got {n_alpha!r}")
    samples = np.asarray(samples, dtype=np.float64)
    truths = np.asarray(truths, dtype=np.float64)
    if samples.ndim != 3:
        raise ValueError(f"samples must be (n_sims, n_samples, d), got shape {samples.shape}")
    n_sims, n_samples, dim = samples.shape
    if truths.shape != (n_sims, dim):
        raise ValueError(
            f"truths must be (n_sims, d) = {(n_sims, dim)} to match samples, got {truths.shape}"
        )
    if n_sims < 2 or n_samples < 2 or dim < 1:
        raise ValueError(
            f"need at least 2 simulations, 2 samples and 1 parameter, got shape {samples.shape}"
        )
    _finite("samples", samples)
    _finite("truths", truths)
    if (log_prob is not None) != (method == "hpd"):
        raise ValueError('log_prob is needed by method="hpd" and by no other method')
    if references is not None and method != "tarp":
        raise ValueError('references are used by method="tarp" only')
    key_ref, key_u = jax.random.split(key)

    if method == "tarp":
        low, high = truths.min(axis=0), truths.max(axis=0)
        scale = truths.std(axis=0)
        if np.any(scale <= 0):
            raise ValueError(
                "every parameter must vary over the truths (its spread sets the metric)"
            )
        if references is None:
            u = np.asarray(
                jax.random.uniform(key_ref, (n_sims, dim), dtype=jnp.float32), np.float64
            )
            references = low + u * (high - low)
        references = np.asarray(references, dtype=np.float64)
        if references.shape != (n_sims, dim):
            raise ValueError(
                f"references must be (n_sims, d) = {(n_sims, dim)}, got {references.shape}"
            )
        _finite("references", references)
        ranks = _tarp_ranks(samples, truths, references, scale)[:, None]
    elif method == "hpd":
        lp_samples, lp_truths = (np.asarray(a, dtype=np.float64) for a in log_prob)
        if lp_samples.shape != (n_sims, n_samples) or lp_truths.shape != (n_sims,):
            raise ValueError(
                f"log_prob must be arrays of shapes {(n_sims, n_samples)} and {(n_sims,)}, got "
                f"{lp_samples.shape} and {lp_truths.shape}"
            )
        # -inf is a density of zero (a truth outside the estimate's support enters no region
        # before level 1); NaN and +inf are errors
        for name, lp in (("at the samples", lp_samples), ("at the truths", lp_truths)):
            if np.any(np.isnan(lp) | (lp == np.inf)):
                raise ValueError(f"log_prob {name} must not be NaN or +inf")
        ranks = np.sum(lp_samples > lp_truths[:, None], axis=1)[:, None]
    else:
        ranks = np.sum(samples < truths[:, None, :], axis=1)

    u = np.asarray(jax.random.uniform(key_u, ranks.shape, dtype=jnp.float32), np.float64)
    credibility = (ranks + u) / (n_samples + 1)
    alpha = np.linspace(0.0, 1.0, n_alpha)
    ecp = np.mean(credibility[None, :, :] <= alpha[:, None, None], axis=1)
    band = np.stack(
        [
            scipy.stats.binom.ppf(0.025, n_sims, alpha) / n_sims,
            scipy.stats.binom.ppf(0.975, n_sims, alpha) / n_sims,
        ]
    )
    tests = [scipy.stats.kstest(credibility[:, j], "uniform") for j in range(ranks.shape[1])]
    return Coverage(
        method=method,
        alpha=alpha,
        ecp=ecp,
        band=band,
        credibility=credibility,
        max_deviation=np.array([t.statistic for t in tests]),
        p_value=np.array([t.pvalue for t in tests]),
        n_sims=n_sims,
        n_samples=n_samples,
    )


def plot_coverage(results: Coverage | list[Coverage], labels: Any = None):
    """The ECP against the credibility level, with the 95% band of a calibrated estimator.

    Curves below the diagonal are overconfident (credible regions too small), above it
    underconfident; for `"marginal"` a curve that bows to one side is biased. Needs matplotlib
    (`pip install "jinfer[plot]"`); returns a `matplotlib.figure.Figure` (no pyplot).

    **Arguments:**

    - `results`: one [`Coverage`][jinfer.Coverage] or a list of them (same number of simulations
      for the band to apply to all).
    - `labels`: optional legend labels, one per curve (a `"marginal"` result has one curve per
      parameter); default: the method (and the parameter index).

    **Raises:**

    `ValueError` when `labels` does not have one entry per curve.
    """
    from matplotlib.figure import Figure

    results = [results] if isinstance(results, Coverage) else list(results)
    curves = [(r, j) for r in results for j in range(r.ecp.shape[1])]
    if labels is None:
        labels = [r.method if r.ecp.shape[1] == 1 else f"{r.method} [{j}]" for r, j in curves]
    labels = list(labels)
    if len(labels) != len(curves):
        raise ValueError(f"labels must have one entry per curve ({len(curves)}), got {len(labels)}")
    fig = Figure(figsize=(4.2, 4.0), layout="constrained")
    ax = fig.add_subplot()
    first = results[0]
    ax.fill_between(
        first.alpha, first.band[0], first.band[1], color="0.85", label="calibrated, 95%"
    )
    ax.plot([0, 1], [0, 1], color="0.4", lw=0.8, ls="--")
    for (r, j), label in zip(curves, labels, strict=True):
        ax.plot(r.alpha, r.ecp[:, j], lw=1.6, label=f"{label} (KS p = {r.p_value[j]:.2g})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("credibility level")
    ax.set_ylabel("expected coverage")
    ax.legend(fontsize=7, loc="upper left")
    return fig
