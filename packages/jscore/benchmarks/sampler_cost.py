"""Cost of annealed HMC per chain-step (one HMC transition of one chain: 3 leapfrog steps and a
3-node Simpson line integral of the prior score) on masked shear data, for the analytic Gaussian
prior score and for a hybrid prior with a U-Net residual, at 64x64 and 360x360.

Run:

    nice -n 10 python packages/jscore/benchmarks/sampler_cost.py

Timings exclude compilation (the jitted sampler is run once before timing); they also report the
posterior cost per independent sample, which is `num_steps` chain-steps plus the probability-flow
ODE (16 Heun steps, 32 posterior-score evaluations) per chain.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jscore


def time_sampler(shape, score_fn, num_chains, num_steps, repeats):
    op = jscore.ShearOperator(shape)
    mask = np.ones(shape, np.float32)
    mask[: shape[0] // 3, : shape[1] // 3] = 0.0
    variance = np.where(mask > 0, 0.09, np.inf).astype(np.float32)
    noise = jscore.DiagonalNoise(jnp.asarray(np.stack([variance, variance])))
    y = jnp.zeros((2, *shape), jnp.float32)

    def run(y, key, num_steps, num_ode_steps):
        # Timing only: a fixed number of steps, whether or not sigma_min is reached.
        sigma_min = 0.1 * 0.98**num_steps * 1.001
        return jscore.annealed_posterior_sample(
            key,
            score_fn,
            op.forward,
            op.adjoint,
            noise,
            y,
            num_chains=num_chains,
            annealing=jscore.AnnealingConfig(0.1, sigma_min, 0.98, num_steps=num_steps),
            hmc=jscore.HMCConfig(step_size=0.01),
            ode=jscore.ODEConfig(num_steps=num_ode_steps, sigma_end=min(0.005, sigma_min)),
        )

    results = {}
    for label, steps, ode in (("hmc", num_steps, 0), ("ode", 0, 16)):
        fn = jax.jit(lambda y, k, s=steps, o=ode: run(y, k, s, o)[0])
        fn(y, jax.random.key(0)).block_until_ready()  # compile
        best = np.inf
        for r in range(repeats):
            t0 = time.perf_counter()
            fn(y, jax.random.key(r + 1)).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        results[label] = best
    per_step = results["hmc"] / (num_chains * num_steps)
    per_ode = results["ode"] / num_chains
    return per_step, per_ode


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 360])
    parser.add_argument(
        "--priors", nargs="+", default=["gaussian", "hybrid"], choices=["gaussian", "hybrid"]
    )
    args = parser.parse_args()
    print(
        f"{args.steps} steps; jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPU cores visible, "
        f"load average {os.getloadavg()[0]:.1f}; {args.chains} chains, best of {args.repeats}"
    )
    print(
        "\n| Grid | Prior score | ms per chain-step | ms per chain for the ODE (16 Heun steps) | "
        "s per posterior sample (300 steps + ODE) |\n| --- | --- | --- | --- | --- |"
    )
    for n in args.sizes:
        shape = (n, n)
        power = 1e-3 / (1.0 + (jscore.fourier_wavenumber(shape) / 0.3) ** 2)
        gauss = jscore.GaussianFieldPrior(power, shape)
        hybrid = jscore.HybridScore(
            gauss, jscore.ScoreUNet((8, 16), data_std=0.03, rngs=nnx.Rngs(0))
        )
        scores = {
            "gaussian": ("Gaussian (analytic, FFT)", gauss.score),
            "hybrid": ("hybrid, U-Net (8, 16) residual", lambda x, s, m=hybrid: m(x, s)),
        }
        for name, score in (scores[p] for p in args.priors):
            step, ode = time_sampler(shape, score, args.chains, args.steps, args.repeats)
            print(
                f"| {n}x{n} | {name} | {1e3 * step:.1f} | {1e3 * ode:.0f} | "
                f"{300 * step + ode:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
