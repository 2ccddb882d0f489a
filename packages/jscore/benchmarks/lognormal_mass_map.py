"""Non-Gaussian benchmark: log-normal convergence-like maps seen through a masked, noisy shear
operator; posterior mean of a learned hybrid prior (Gaussian score + trained U-Net residual) against
Kaiser-Squires and the Wiener filter.

Everything is generated here: `g` is a Gaussian random field, `kappa = (exp(g) - E exp(g)) / std`
(zero mean, unit variance, skewed), the data are `gamma = A kappa + n` with `A` the flat-sky shear
operator (`jscore.ShearOperator`), white noise on both components and masked pixels (two holes and
10% random pixels) carrying no data. The hybrid prior is trained by denoising score matching on
independent maps; the Gaussian part uses the power spectrum measured on those training maps, as does
the Wiener filter.

Run (about 30 minutes on two CPU cores shared with other jobs; training 18 of them, 2000 steps):

    nice -n 10 python packages/jscore/benchmarks/lognormal_mass_map.py

Options: `--steps` (training steps), `--maps` (test maps), `--chains`, `--checkpoint PATH`
(reuse a trained model if the file exists, else save it there).
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


def lognormal_maps(key, n, shape, var_g):
    """`n` standardised log-normal maps, `(exp(g) - mean) / std` with `g` a GRF of pixel variance
    `var_g` (analytic mean `exp(var_g / 2)`, variance `(exp(var_g) - 1) exp(var_g)`)."""
    k = jscore.fourier_wavenumber(shape)
    p = 1.0 / (1.0 + (k / 0.6) ** 2)
    weights = np.full(p.shape, 2.0)
    weights[:, 0] = 1.0
    weights[:, -1] = 1.0
    pixel_var = float(np.sum(weights * np.asarray(p)) / np.prod(shape))
    grf = jscore.GaussianFieldPrior(p * (var_g / pixel_var), shape)
    g = jax.vmap(grf.sample)(jax.random.split(key, n))
    mean, std = np.exp(var_g / 2), np.sqrt((np.exp(var_g) - 1.0) * np.exp(var_g))
    return np.asarray((jnp.exp(g) - mean) / std, np.float32)


def measured_power(maps):
    """Mean `|x_hat_k|^2` (unitary FFT) over the maps, averaged in rings of `|k|` (isotropic)."""
    shape = maps.shape[1:]
    p2 = np.mean(np.abs(np.fft.rfftn(maps, axes=(1, 2), norm="ortho")) ** 2, axis=0)
    k = np.asarray(jscore.fourier_wavenumber(shape))
    ring = np.round(k / (2 * np.pi / shape[0])).astype(int)
    weights = np.full(p2.shape, 2.0)
    weights[:, 0] = 1.0
    weights[:, -1] = 1.0
    total = np.bincount(ring.ravel(), (weights * p2).ravel())
    count = np.bincount(ring.ravel(), weights.ravel())
    return (total / count)[ring].astype(np.float32)


def observation_mask(shape, key):
    mask = np.ones(shape, np.float32)
    mask[4:12, 18:28] = 0.0
    mask[20:27, 3:9] = 0.0
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**30)))
    mask[rng.random(shape) < 0.1] = 0.0
    return mask


def smooth(x, scale):
    k = np.asarray(jscore.fourier_wavenumber(x.shape))
    return np.fft.irfftn(
        np.fft.rfftn(x, norm="ortho") * np.exp(-0.5 * (k * scale) ** 2),
        s=x.shape,
        axes=(0, 1),
        norm="ortho",
    )


def metrics(estimate, truth):
    rmse = float(np.sqrt(np.mean((estimate - truth) ** 2)))
    corr = float(np.corrcoef(estimate.ravel(), truth.ravel())[0, 1])
    return rmse, corr


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--var-g", type=float, default=0.8)
    parser.add_argument("--noise", type=float, default=0.3, help="shear noise std per component")
    parser.add_argument("--train", type=int, default=8192, help="training maps")
    parser.add_argument("--steps", type=int, default=2000, help="DSM training steps")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--maps", type=int, default=8, help="test maps")
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--hmc-steps", type=int, default=300)
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16], help="U-Net widths")
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    shape = (args.size, args.size)
    t_start = time.perf_counter()

    train = lognormal_maps(jax.random.key(0), args.train, shape, args.var_g)
    power = measured_power(train)
    gauss = jscore.GaussianFieldPrior(jnp.asarray(power), shape)
    print(
        f"training maps: {train.shape}, skewness {float(np.mean(train**3)):.2f}, "
        f"max {train.max():.1f} std"
    )

    model = jscore.HybridScore(
        gauss, jscore.ScoreUNet(tuple(args.channels), data_std=float(train.std()), rngs=nnx.Rngs(0))
    )
    trainer = jscore.DSMTrainer(
        model, sigma_min=0.005, sigma_max=3.0, learning_rate=2e-3, ema_decay=0.995
    )
    state = trainer.init()
    t0 = time.perf_counter()
    if args.checkpoint and os.path.exists(args.checkpoint):
        state = jscore.load_checkpoint(args.checkpoint, state)
        print(f"loaded {args.checkpoint} (step {int(state.step)})")
    else:
        stream = jscore.MinibatchStream(jax.random.key(1), train, args.batch)
        state, _history = trainer.train(
            jax.random.key(2), state, stream, args.steps, checkpoint=args.checkpoint
        )
        print(f"trained {args.steps} steps in {time.perf_counter() - t0:.0f} s")
    learned = trainer.model(state.ema_params)

    test = lognormal_maps(jax.random.key(100), args.maps, shape, args.var_g)
    op = jscore.ShearOperator(shape)
    mask = observation_mask(shape, jax.random.key(3))
    variance = np.where(mask > 0, args.noise**2, np.inf).astype(np.float32)
    noise = jscore.DiagonalNoise(jnp.asarray(np.stack([variance, variance])))
    mask2 = np.stack([mask, mask])

    settings = {
        "num_chains": args.chains,
        "annealing": jscore.AnnealingConfig(1.0, 0.01, 0.97, num_steps=args.hmc_steps),
        "hmc": jscore.HMCConfig(step_size=0.25),
        "ode": jscore.ODEConfig(sigma_end=0.005),
    }

    def posterior(score_fn):
        def run(y, key):
            return jscore.annealed_posterior_sample(
                key, score_fn, op.forward, op.adjoint, noise, y, **settings
            )

        return jax.jit(run)

    run_learned = posterior(lambda x, s: learned(x, s))
    run_gauss = posterior(gauss.score)
    scales = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]  # pixels; 0 = no smoothing
    rows = {
        "Kaiser-Squires (A^T y, masked shear set to 0)": [],
        "Kaiser-Squires + Gaussian smoothing (best of 0-2 pixels, chosen on the truth)": [],
        "Wiener filter (CG, measured power spectrum)": [],
        "annealed HMC posterior mean, Gaussian prior (same spectrum)": [],
        "annealed HMC posterior mean, hybrid learned prior": [],
    }
    names = list(rows)
    accept = []
    t_sample = 0.0
    for i, truth in enumerate(test):
        key = jax.random.fold_in(jax.random.key(7), i)
        gamma = np.asarray(op.forward(jnp.asarray(truth)))
        n = args.noise * np.asarray(jax.random.normal(key, gamma.shape))
        y = jnp.asarray(((gamma + n) * mask2).astype(np.float32))
        ks = np.asarray(op.adjoint(y))
        rows[names[0]].append(metrics(ks, truth))
        rows[names[1]].append(min(metrics(smooth(ks, s), truth) for s in scales))
        wf, _ = jscore.wiener_filter_cg(y, op.forward, op.adjoint, noise, gauss)
        rows[names[2]].append(metrics(np.asarray(wf), truth))
        samples, _ = run_gauss(y, jax.random.fold_in(key, 1))
        rows[names[3]].append(metrics(np.asarray(samples.mean(0)), truth))
        t0 = time.perf_counter()
        samples, info = run_learned(y, jax.random.fold_in(key, 2))
        samples.block_until_ready()
        t_sample += time.perf_counter() - t0
        accept.append(float(info.acceptance_rate.mean()))
        rows[names[4]].append(metrics(np.asarray(samples.mean(0)), truth))
        print(
            f"map {i}: "
            + ", ".join(f"{r[-1][0]:.3f}" for r in rows.values())
            + f" (sigma reached {float(info.sigma.max()):.3g})",
            flush=True,
        )

    print(
        f"\n{args.maps} test maps {shape[0]}x{shape[1]}, log-normal var_g = {args.var_g}, shear noise "
        f"std {args.noise}, {100 * (1 - mask.mean()):.0f}% of pixels masked; {args.chains} chains x "
        f"{args.hmc_steps} HMC steps (acceptance {np.mean(accept):.2f}); DSM training "
        f"{int(state.step)} steps of batch {args.batch}; total {time.perf_counter() - t_start:.0f} s "
        f"(learned-prior sampling {t_sample / args.maps:.0f} s per map, first one compiling)\n"
    )
    print("| Method | RMSE (mean over maps) | Pearson r (mean) |")
    print("| --- | --- | --- |")
    for name, values in rows.items():
        v = np.asarray(values)
        print(f"| {name} | {v[:, 0].mean():.3f} | {v[:, 1].mean():.3f} |")


if __name__ == "__main__":
    main()
