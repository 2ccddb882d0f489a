"""Radially averaged power spectra and posterior plots (matplotlib is optional, imported lazily)."""

from __future__ import annotations

import numpy as np

from ._fourier import hermitian_weights, rfft_shape


def _wavenumber(shape, spacing):
    freqs = [np.fft.fftfreq(n, d=spacing) for n in shape[:-1]]
    freqs.append(np.fft.rfftfreq(shape[-1], d=spacing))
    grids = np.meshgrid(*freqs, indexing="ij")
    return 2.0 * np.pi * np.sqrt(sum(g**2 for g in grids))


def radial_power_spectrum(
    x, *, spacing: float = 1.0, num_bins: int | None = None, power_map=None
) -> tuple[np.ndarray, np.ndarray]:
    """The isotropic power spectrum of a field: `|x_hat_k|^2` (unitary FFT, jscore's convention, so a
    `jscore.GaussianFieldPrior` with power map `P` gives `E = P`) averaged in linear rings of `|k|`,
    excluding `k = 0`.

    **Arguments:**

    - `x`: one field (any number of axes; NumPy or JAX array). Average the result over samples for
      an ensemble spectrum.
    - `spacing`: pixel size, as in `jscore.fourier_wavenumber` (`k` is in radians per its unit).
    - `num_bins`: number of rings between the fundamental and the largest `|k|`; default
      `min(shape) // 2`.
    - `power_map`: instead of `x`'s spectrum, bin this power map on the half-complex grid of fields of
      shape `x.shape` (e.g. a prior's `power`); `x` then only gives the shape.

    **Returns:**

    `(k, power)`: ring centres (mean `|k|` per ring) and the mean power per ring (empty rings are
    dropped).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1:
        raise ValueError(f"x must be a field with at least one axis, got shape {x.shape}")
    if not spacing > 0:
        raise ValueError(f"spacing must be positive, got {spacing!r}")
    shape = x.shape
    if power_map is not None:
        power = np.asarray(power_map, dtype=np.float64)
        if power.shape != rfft_shape(shape):
            raise ValueError(
                f"power_map must have shape {rfft_shape(shape)} for fields of shape {shape}, "
                f"got {power.shape}"
            )
    else:
        power = np.abs(np.fft.rfftn(x, norm="ortho")) ** 2
    k = _wavenumber(shape, spacing)
    weights = hermitian_weights(shape)
    num_bins = num_bins if num_bins is not None else max(1, min(shape) // 2)
    if not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive int, got {num_bins!r}")
    k_fund = 2.0 * np.pi / (max(shape) * spacing)
    edges = np.linspace(0.5 * k_fund, k.max() * (1 + 1e-9), num_bins + 1)
    which = np.digitize(k.ravel(), edges) - 1
    keep = (which >= 0) & (which < num_bins) & (k.ravel() > 0)
    w = weights.ravel()[keep]
    count = np.bincount(which[keep], w, num_bins)
    total = np.bincount(which[keep], w * power.ravel()[keep], num_bins)
    ksum = np.bincount(which[keep], w * k.ravel()[keep], num_bins)
    good = count > 0
    return ksum[good] / count[good], total[good] / count[good]


def plot_posterior(
    samples,
    *,
    prior_power=None,
    truth=None,
    mean=None,
    mask=None,
    spacing: float = 1.0,
    num_samples: int = 3,
    cmap: str = "magma",
    title: str | None = None,
    extent=None,
):
    """A figure summarising posterior samples of a 2-D map: the truth (if given), the posterior mean and
    standard deviation, a few samples, and the radially averaged power spectra of the mean, of the
    samples and of the truth against the prior's.

    Needs matplotlib (`pip install "jscore[plot]"`); builds a `matplotlib.figure.Figure` directly, so it
    works without a display and without pyplot.

    **Arguments:**

    - `samples`: posterior samples, shape `(n, ny, nx)`, `n >= 2`.
    - `prior_power`: the prior's power map on the half-complex grid (e.g. `GaussianFieldPrior.power`);
      drawn as the reference spectrum.
    - `truth`: the true map, if known.
    - `mean`: the posterior mean to show (default: the mean of `samples`).
    - `mask`: optional 0/1 map of observed pixels; its boundary is outlined on the maps.
    - `spacing`: pixel size, for the `k` axis of the spectra.
    - `num_samples`: how many samples to show (at most `n`).
    - `cmap`: colour map of the maps (the standard deviation uses `viridis`).
    - `title`: optional figure title.
    - `extent`: optional `(left, right, bottom, top)` of the maps, passed to `imshow`.

    **Returns:**

    The `matplotlib.figure.Figure`.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover
        raise ImportError('plot_posterior needs matplotlib: pip install "jscore[plot]"') from e

    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[0] < 2:
        raise ValueError(f"samples must have shape (n >= 2, ny, nx), got {samples.shape}")
    shape = samples.shape[1:]
    for name, value in (("truth", truth), ("mean", mean), ("mask", mask)):
        if value is not None and np.shape(value) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {np.shape(value)}")
    if prior_power is not None and np.shape(prior_power) != rfft_shape(shape):
        raise ValueError(
            f"prior_power must have shape {rfft_shape(shape)}, got {np.shape(prior_power)}"
        )
    if not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative int, got {num_samples!r}")
    num_samples = min(num_samples, samples.shape[0])
    post_mean = samples.mean(0) if mean is None else np.asarray(mean, dtype=np.float64)
    post_std = samples.std(0, ddof=1)

    panels = []
    if truth is not None:
        panels.append(("truth", np.asarray(truth, dtype=np.float64)))
    panels.append(("posterior mean", post_mean))
    panels.append(("posterior std", post_std))
    panels.extend((f"sample {i + 1}", samples[i]) for i in range(num_samples))
    ncols = max(len(panels), 2)
    fig = Figure(figsize=(3.0 * ncols, 6.4), layout="constrained")
    grid = fig.add_gridspec(2, ncols, height_ratios=[1.0, 0.9])
    # Colour scales: the truth's range for every map when it is known; otherwise the posterior mean
    # (smoother) and the samples get their own ranges.
    sample_range = np.percentile(samples[: max(num_samples, 1)], [1.0, 99.5])
    mean_range = np.percentile(post_mean, [1.0, 99.5])
    if truth is not None:
        sample_range = mean_range = np.percentile(np.asarray(truth), [1.0, 99.5])
    for j, (label, image) in enumerate(panels):
        ax = fig.add_subplot(grid[0, j])
        is_std = label == "posterior std"
        if is_std:
            vmin, vmax = None, None
        elif label == "posterior mean":
            vmin, vmax = mean_range
        else:
            vmin, vmax = sample_range
        im = ax.imshow(
            image,
            origin="lower",
            cmap="viridis" if is_std else cmap,
            vmin=vmin,
            vmax=vmax,
            extent=extent,
        )
        if mask is not None:
            ax.contour(np.asarray(mask), levels=[0.5], colors="w", linewidths=0.5, extent=extent)
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8)

    ax = fig.add_subplot(grid[1, :])
    for i in range(samples.shape[0]):
        k, p = radial_power_spectrum(samples[i], spacing=spacing)
        ax.loglog(k, p, color="tab:blue", alpha=0.25, lw=0.7, label="samples" if i == 0 else None)
    k, p = radial_power_spectrum(post_mean, spacing=spacing)
    ax.loglog(k, p, color="tab:orange", lw=1.5, label="posterior mean")
    if truth is not None:
        k, p = radial_power_spectrum(truth, spacing=spacing)
        ax.loglog(k, p, color="k", lw=1.5, label="truth")
    if prior_power is not None:
        k, p = radial_power_spectrum(samples[0], spacing=spacing, power_map=prior_power)
        ax.loglog(k, p, color="tab:red", ls="--", lw=1.5, label="prior")
    ax.set_xlabel("|k| (the multipole ell when spacing is in radians)")
    ax.set_ylabel("power per mode (unitary FFT)")
    ax.legend(loc="lower left", fontsize="small")
    if title:
        fig.suptitle(title)
    return fig
