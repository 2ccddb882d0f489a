"""Mass mapping of the COSMOS field and of a kappa-TNG test map with jscore (Remy, Lanusse et al. 2022).

Data: `cosmos_mass_map/` of the shared data directory (from CosmoStat/jax-lensing, MIT; 360 x 360
pixels of 0.29 arcmin): observed COSMOS shear `e1, e2`, its mask, per-pixel shape-noise standard
deviations `std1, std2`, a kappa-TNG convergence map with COSMOS-like noisy shear, and the theory
convergence power spectrum `ktng_PS_theory.npy`.

1. kappa-TNG test: RMSE and Pearson correlation against the true map of Kaiser-Squires (raw and
   Gaussian-smoothed), the Wiener filter (conjugate gradients) and the posterior mean of annealed HMC
   with the Gaussian prior score of the theory power spectrum.
2. COSMOS: posterior mean, standard deviation and samples from the observed shear.

Shear operator: `jscore.ShearOperator` (flat-sky Kaiser-Squires, periodic); masked pixels get an
infinite noise variance (no data). Needs astropy (FITS) and matplotlib (`jscore[examples]`).

Command that makes the figures of the docs (from the repository root; about 10 min on 2 CPU cores):

    nice -n 10 python packages/jscore/examples/cosmos_mass_map.py \
        --data ../shared/data/cosmos_mass_map --out docs/figures/jscore
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jscore

PIXEL_ARCMIN = 0.29


def read_fits(path):
    from astropy.io import fits

    return np.asarray(fits.getdata(path), dtype=np.float64)


def theory_power_map(ps_path, shape, pixel_arcmin=PIXEL_ARCMIN):
    """The theory C_ell as a jscore power map: per-mode variance `C(|k|) / pixel_area` (unitary FFT,
    `k` in radians^-1 = ell), log-log interpolation; the `k = 0` mode (invisible in shear) gets the
    value at the fundamental."""
    ell, cl = np.load(ps_path)
    pixel = np.deg2rad(pixel_arcmin / 60.0)
    k = np.asarray(jscore.fourier_wavenumber(shape, pixel))
    k0 = 2 * np.pi / (max(shape) * pixel)
    log_c = np.interp(np.log(np.maximum(k, k0)), np.log(ell), np.log(cl))
    return np.exp(log_c) / pixel**2


def load_problem(data_dir, which):
    """`(y, variance, mask, truth)` with `y` of shape `(2, 360, 360)`, infinite variance off the mask."""

    def path(name):
        return os.path.join(data_dir, name)

    mask = read_fits(path("cosmos_full_mask_0.29arcmin360.fits"))
    std = np.stack([read_fits(path("std1.fits")), read_fits(path("std2.fits"))])
    if which == "ktng":
        y = np.moveaxis(read_fits(path("ktng_cosmos_e360.fits")), -1, 0)
        truth = read_fits(path("ktng_cosmos_kappa360.fits"))
    else:
        y = np.stack(
            [
                read_fits(path("cosmos_full_e1_0.29arcmin360.fits")),
                read_fits(path("cosmos_full_e2_0.29arcmin360.fits")),
            ]
        )
        truth = None
    observed = (mask > 0) & (std > 0)
    variance = np.where(observed, std**2, np.inf)
    y = np.where(observed, y, 0.0)
    return y, variance, mask, truth


def smooth(x, scale_pixels):
    k = np.asarray(jscore.fourier_wavenumber(x.shape))
    return np.fft.irfftn(
        np.fft.rfftn(x) * np.exp(-0.5 * (k * scale_pixels) ** 2), s=x.shape, axes=(0, 1)
    )


def metrics(estimate, truth):
    estimate = np.asarray(estimate, np.float64)
    return (
        float(np.sqrt(np.mean((estimate - truth) ** 2))),
        float(np.corrcoef(estimate.ravel(), truth.ravel())[0, 1]),
    )


def sample_posterior(y, variance, power, args, key):
    shape = (power.shape[0], 2 * (power.shape[-1] - 1))
    op = jscore.ShearOperator(shape)
    noise = jscore.DiagonalNoise(jnp.asarray(variance, jnp.float32))
    prior = jscore.GaussianFieldPrior(jnp.asarray(power, jnp.float32), shape)

    def progress(step, sigma, accepted):
        print(f"  step {step}: sigma {sigma.max():.3g}, accepted {accepted.mean():.0f}", flush=True)

    def run(y, key):
        return jscore.annealed_posterior_sample(
            key,
            prior.score,
            op.forward,
            op.adjoint,
            noise,
            y,
            num_chains=args.chains,
            annealing=jscore.AnnealingConfig(
                sigma_init=args.sigma_init,
                sigma_min=args.sigma_min,
                sigma_decay=args.sigma_decay,
                num_steps=args.steps,
            ),
            hmc=jscore.HMCConfig(
                step_size=args.step_size, step_size_exponent=args.step_size_exponent
            ),
            progress_fn=progress,
            progress_every=max(1, args.steps // 5),
        )

    t0 = time.perf_counter()
    samples, info = jax.jit(run)(jnp.asarray(y, jnp.float32), key)
    samples.block_until_ready()
    seconds = time.perf_counter() - t0
    print(
        f"  {args.chains} chains x {args.steps} steps: {seconds:.0f} s "
        f"({1e3 * seconds / (args.chains * args.steps):.0f} ms per chain-step, compilation included); "
        f"acceptance {float(info.acceptance_rate.mean()):.2f}, sigma reached "
        f"{float(info.sigma.max()):.3g}",
        flush=True,
    )
    return np.asarray(samples, np.float64), prior, op, noise


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/cosmos_mass_map")
    parser.add_argument("--out", default="docs/figures/jscore")
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--sigma-init", type=float, default=0.1)
    parser.add_argument("--sigma-min", type=float, default=0.005)
    parser.add_argument("--sigma-decay", type=float, default=0.97)
    parser.add_argument("--step-size", type=float, default=0.03)
    parser.add_argument("--step-size-exponent", type=float, default=1.0)
    parser.add_argument("--skip-cosmos", action="store_true")
    args = parser.parse_args()

    from matplotlib.figure import Figure  # noqa: F401  (fail early without matplotlib)

    os.makedirs(args.out, exist_ok=True)
    shape = (360, 360)
    power = theory_power_map(os.path.join(args.data, "ktng_PS_theory.npy"), shape)
    extent = (0.0, shape[1] * PIXEL_ARCMIN / 60, 0.0, shape[0] * PIXEL_ARCMIN / 60)

    print("kappa-TNG test map with COSMOS-like noise and mask")
    y, variance, mask, truth = load_problem(args.data, "ktng")
    samples, prior, op, noise = sample_posterior(y, variance, power, args, jax.random.key(0))
    ks = np.asarray(op.adjoint(jnp.asarray(y)), np.float64)
    wiener, cg = jscore.wiener_filter_cg(
        jnp.asarray(y, jnp.float32), op.forward, op.adjoint, noise, prior, tol=1e-5
    )
    print(
        f"  Wiener filter: {int(cg.num_iterations)} CG iterations, residual {float(cg.residual_norm):.1e}"
    )
    scales = np.array([1.0, 2.0, 3.0, 4.0, 6.0])  # pixels
    best = min(scales, key=lambda s: metrics(smooth(ks, s), truth)[0])
    rows = [
        ("Kaiser-Squires (masked shear set to 0)", ks),
        (
            f"Kaiser-Squires + Gaussian smoothing ({best * PIXEL_ARCMIN:.2f} arcmin, best on the truth)",
            smooth(ks, best),
        ),
        ("Wiener filter (theory C_ell, CG)", np.asarray(wiener)),
        (
            f"Annealed HMC posterior mean, Gaussian prior score ({args.chains} chains)",
            samples.mean(0),
        ),
    ]
    print("\n| Method | RMSE | Pearson r |\n| --- | --- | --- |")
    for name, est in rows:
        rmse, r = metrics(est, truth)
        print(f"| {name} | {rmse:.4f} | {r:.3f} |")
    print(
        f"\n(truth pixel std {truth.std():.4f}; posterior mean vs Wiener RMS difference "
        f"{np.sqrt(np.mean((samples.mean(0) - np.asarray(wiener)) ** 2)):.4f}, mean posterior std "
        f"{samples.std(0, ddof=1).mean():.4f})\n"
    )
    fig = jscore.plot_posterior(
        samples,
        prior_power=power,
        truth=truth,
        mask=mask,
        spacing=np.deg2rad(PIXEL_ARCMIN / 60),
        num_samples=2,
        title="kappa-TNG map, COSMOS-like noise and mask: Gaussian-prior score posterior",
        extent=extent,
    )
    fig.savefig(os.path.join(args.out, "ktng_posterior.png"), dpi=70)

    if args.skip_cosmos:
        return
    print("COSMOS field")
    y, variance, mask, _ = load_problem(args.data, "cosmos")
    samples, *_ = sample_posterior(y, variance, power, args, jax.random.key(1))
    fig = jscore.plot_posterior(
        samples,
        prior_power=power,
        mask=mask,
        spacing=np.deg2rad(PIXEL_ARCMIN / 60),
        num_samples=3,
        title="COSMOS (HST/ACS shear): Gaussian-prior score posterior",
        extent=extent,
    )
    fig.savefig(os.path.join(args.out, "cosmos_posterior.png"), dpi=70)
    print(f"figures in {args.out}")


if __name__ == "__main__":
    main()
