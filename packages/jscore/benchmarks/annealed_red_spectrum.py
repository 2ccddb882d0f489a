"""Annealed HMC against the exact Gaussian posterior of a red spectrum with a mask and non-stationary
noise (issue 13): error of the posterior mean in units of the sampling floor, chi2/dof of the mean,
and the variance of the largest-variance posterior eigenmodes, by chain count, with the identity
mass ("before") and with `jscore.FourierPreconditioner` ("after").

    nice -n 10 python packages/jscore/benchmarks/annealed_red_spectrum.py --size 64 \
        --chains 16 64 256 1024

The problem (the same as in `tests/test_sampler.py`, there at 32x32): a Gaussian random field prior
`P(k) = 20 (1 + (k / 0.3)^2)^-1.5` (unitary FFT, per-mode variance), per-pixel noise standard
deviations uniform in [0.3, 0.8], 26% of the pixels masked (a square hole of 3/8 of the side and 15% scattered
pixels, infinite variance). The exact posterior is a dense float64 eigendecomposition of its precision.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jscore


def spectrum(k):
    return 20.0 * (1.0 + (np.asarray(k) / 0.3) ** 2) ** -1.5


def problem(n, seed=0):
    """Prior power map, noise variance (inf where masked), data, and the mask."""
    shape = (n, n)
    rng = np.random.default_rng(seed)
    power = spectrum(np.asarray(jscore.fourier_wavenumber(shape)))
    mask = np.ones(shape)
    hole = 3 * n // 8
    mask[n // 8 : n // 8 + hole, n // 2 : n // 2 + hole] = 0.0
    mask[rng.random(shape) < 0.15] = 0.0
    std = rng.uniform(0.3, 0.8, shape)
    variance = np.where(mask > 0, std**2, np.inf)
    prior = jscore.GaussianFieldPrior(jnp.asarray(power, jnp.float32), shape)
    x_true = np.asarray(prior.sample(jax.random.key(seed + 1), dtype=jnp.float32), np.float64)
    y = np.where(mask > 0, x_true + std * rng.standard_normal(shape), np.nan)
    return power, variance, y, mask


def exact_posterior(variance, y):
    """Mean, pixel standard deviations and the eigendecomposition of the precision (float64)."""
    shape = y.shape
    freqs = np.meshgrid(*[np.fft.fftfreq(m) for m in shape], indexing="ij")
    full = spectrum(2.0 * np.pi * np.sqrt(sum(f**2 for f in freqs)))  # on the full FFT grid
    kernel = np.fft.ifftn(1.0 / full).real  # circulant precision of the prior
    coords = np.stack(np.unravel_index(np.arange(y.size), shape), axis=-1)
    diff = (coords[:, None, :] - coords[None, :, :]) % np.asarray(shape)
    precision = kernel[diff[..., 0], diff[..., 1]]
    w = np.where(np.isinf(variance), 0.0, 1.0 / variance).reshape(-1)
    precision[np.diag_indices(y.size)] += w
    lam, vec = np.linalg.eigh(precision)  # ascending: vec[:, 0] is the largest-variance mode
    b = w * np.nan_to_num(y.reshape(-1))
    mean = vec @ ((vec.T @ b) / lam)
    sd = np.sqrt((vec**2) @ (1.0 / lam))
    return mean, sd, lam, vec


def errors(samples, mean, sd, lam, vec, num_top=20):
    """Mean error over pixels / floor, chi2 per dof of the mean, top-mode variance ratios."""
    draws = np.asarray(samples, np.float64).reshape(samples.shape[0], -1)
    n = draws.shape[0]
    delta = draws.mean(0) - mean
    mean_error = np.mean(np.abs(delta) / sd)
    floor = np.sqrt(2.0 / np.pi / n)
    chi2 = n * np.sum((vec.T @ delta) ** 2 * lam) / delta.size
    proj = (draws - draws.mean(0)) @ vec[:, :num_top]
    ratios = proj.var(0, ddof=1) * lam[:num_top]
    return mean_error, floor, chi2, ratios


def run(
    method, power, variance, y, num_chains, num_steps, step_size, sigma_init=0.5, mass_factor=1.0,
    seed=0,
):  # fmt: skip
    shape = y.shape
    prior = jscore.GaussianFieldPrior(jnp.asarray(power, jnp.float32), shape)
    op = jscore.IdentityOperator(shape)
    noise = jscore.DiagonalNoise(jnp.asarray(variance, jnp.float32))
    if method == "identity":  # the README's settings
        annealing = jscore.AnnealingConfig(sigma_init, 0.01, 0.98, num_steps=num_steps)
        hmc = jscore.HMCConfig(step_size=0.1, step_size_exponent=0.5)
        preconditioner = None
    else:
        annealing = jscore.AnnealingConfig(sigma_init, 0.01, 0.98, num_steps=num_steps)
        hmc = jscore.HMCConfig(step_size=step_size, step_size_exponent=0.0)
        precision = float(noise.total_precision()) / y.size
        # a misspecified mass (mass_factor != 1) stands for the measured spectrum of a learned prior
        preconditioner = jscore.FourierPreconditioner(mass_factor * prior.power, shape, precision)

    @jax.jit
    def sample(key, y):
        return jscore.annealed_posterior_sample(
            key, prior.score, op.forward, op.adjoint, noise, y, num_chains=num_chains,
            annealing=annealing, hmc=hmc, preconditioner=preconditioner,
        )  # fmt: skip

    start = time.perf_counter()
    samples, info = sample(jax.random.key(seed), jnp.asarray(y, jnp.float32))
    samples = np.asarray(samples)
    jscore.diagnose_annealing(info, annealing)
    return samples, float(np.mean(info.acceptance_rate)), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--chains", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--methods", nargs="+", default=["identity", "preconditioned"])
    parser.add_argument("--num-steps", type=int, default=300)
    parser.add_argument("--step-size", type=float, default=0.25, help="preconditioned step size")
    parser.add_argument("--sigma-init", type=float, default=0.5)
    parser.add_argument(
        "--mass-factor", type=float, default=1.0, help="preconditioner power / prior power"
    )
    args = parser.parse_args()
    power, variance, y, mask = problem(args.size)
    start = time.perf_counter()
    mean, sd, lam, vec = exact_posterior(variance, y)
    print(
        f"{args.size}x{args.size}: {100 * (1 - mask.mean()):.0f}% masked, posterior std "
        f"{sd.min():.3f}-{sd.max():.3f} per pixel, top eigenmode std {lam[0] ** -0.5:.2f}, "
        f"smallest {lam[-1] ** -0.5:.3f} (exact posterior {time.perf_counter() - start:.0f} s)"
    )
    print("| method | chains | mean error / floor | chi2/dof | top-1, top-10 mean, top-20 mean "
          "variance ratio (min-max of top 20) | acceptance | s |")  # fmt: skip
    for method in args.methods:
        for n in args.chains:
            samples, acc, seconds = run(
                method, power, variance, y, n, args.num_steps, args.step_size, args.sigma_init,
                args.mass_factor,
            )  # fmt: skip
            mean_error, floor, chi2, ratios = errors(samples, mean, sd, lam, vec)
            print(
                f"| {method} | {n} | {mean_error:.3f} / {floor:.3f} = {mean_error / floor:.2f} | "
                f"{chi2:.2f} | {ratios[0]:.2f}, {ratios[:10].mean():.2f}, {ratios.mean():.2f} "
                f"({ratios.min():.2f}-{ratios.max():.2f}) | {acc:.2f} | {seconds:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
