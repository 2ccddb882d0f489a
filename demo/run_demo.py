"""A tour of the bottom layers on the CPU (PM N-body, then a score-prior reconstruction).

The main job is jinfer's `jinfer-demo` (explicit vs implicit inference on a log-normal lensing map,
with an HTML report); `python -m nox -s demo` runs it first and this tour second. Run the tour alone
in the development environment with `python demo/run_demo.py --out demo/output/pm_score`:

1. **jpm-core**: a Planck 2018 cosmology, a Gaussian linear density field, 2LPT initial conditions at
   a = 0.1, a FastPM kick-drift-kick simulation to a = 1, and the measured matter power spectrum at
   each snapshot against linear theory D1(a)^2 P_lin(k) (large scales must follow it).
2. **jpm-core -> jscore** (field-level inference of a Gaussian field): the linear density of the same
   box projected along z is a Gaussian map whose prior power follows from P_lin; it is observed through
   a mask with white noise, and reconstructed by the Wiener filter (exact posterior mean, conjugate
   gradients) and by annealed HMC posterior sampling driven only by the prior's score. The two posterior
   means must agree within the posterior spread.

Outputs in `--out`: `power_spectrum.png`, `density.png`, `reconstruction.png` and `summary.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jpm_core as jc
import jscore


def log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("demo/output/pm_score"), help="output folder")
    ap.add_argument("--mesh", type=int, default=32, help="particles and mesh cells per side")
    ap.add_argument("--box", type=float, default=128.0, help="box side in Mpc/h")
    ap.add_argument("--steps", type=int, default=10, help="PM steps from a=0.1 to a=1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chains", type=int, default=32, help="annealed HMC chains")
    ap.add_argument("--hmc-steps", type=int, default=400, help="HMC transitions per chain")
    args = ap.parse_args(argv)
    if args.mesh < 8 or args.mesh % 2:
        ap.error(f"--mesh must be an even number >= 8, got {args.mesh}")
    if not np.isfinite(args.box) or args.box <= 0:
        ap.error(f"--box must be a positive length in Mpc/h, got {args.box}")
    if args.steps < 1 or args.chains < 1 or args.hmc_steps < 1:
        ap.error("--steps, --chains and --hmc-steps must be >= 1")
    return args


# ------------------------------------------------------------------------------------ part 1: PM


def simulate(args: argparse.Namespace, cosmo: jc.Cosmology, domain: jc.Domain, key) -> dict:
    a_init = 0.1
    snapshots = (a_init + (1 - a_init) * (args.steps // 2) / args.steps, 1.0)  # on the step grid
    delta_lin = jc.linear_field(key, domain, lambda k: jc.linear_power(cosmo, k))
    log(
        f"jpm-core: {args.mesh}^3 particles, {args.box} Mpc/h, 2LPT at a={a_init}, {args.steps} steps"
    )

    @jax.jit
    def run(delta):
        state = jc.lpt(cosmo, delta, domain, a_init, order=2)
        return state, jc.nbody(
            cosmo, state, domain, snapshots, steps=args.steps, progress=True
        ).snapshots

    t0 = time.perf_counter()
    initial, snaps = jax.block_until_ready(run(delta_lin))
    log(f"jpm-core: simulation compiled and ran in {time.perf_counter() - t0:.1f} s")

    # Large scales must grow like linear theory: P(k, a) / P(k, a_init) = [D1(a) / D1(a_init)]^2.
    # Comparing one realisation with itself cancels its cosmic variance.
    spectra, rows = {}, []
    for a, positions in zip(
        [a_init, *snapshots], [initial.positions, *snaps.positions], strict=True
    ):
        rho = jc.paint(positions.reshape(-1, 3), domain)
        delta = rho / rho.mean() - 1.0
        # no shot-noise subtraction: particles from a lattice are far from Poisson-sampled
        ps = jc.power_spectrum(delta, domain, deconvolve="cic")
        theory = np.asarray(jc.linear_power(cosmo, ps.k, a))
        spectra[a] = (np.asarray(ps.k), np.asarray(ps.power), theory)
    # The lowest k bin must follow linear theory to a few percent: there both perturbation theory
    # and the PM force are accurate. Towards the mesh's Nyquist frequency the CIC paint and read
    # windows weaken the PM force of a one-particle-per-cell mesh and growth lags behind (expected).
    p_init = spectra[a_init][1]
    d_init = float(jc.growth_factor(cosmo, a_init))
    for a, (k, power, _) in spectra.items():
        growth = (float(jc.growth_factor(cosmo, a)) / d_init) ** 2
        ratios = power / p_init / growth
        rows.append({"a": a, "k_lowest": round(float(k[0]), 4),
                     "growth_over_linear_lowest_k": round(float(ratios[0]), 4),
                     "growth_over_linear_first_4_bins": [round(float(r), 3) for r in ratios[:4]]})  # fmt: skip
        log(f"jpm-core: a={a:.2f}  [P(k,a)/P(k,a_init)] / [D1(a)/D1(a_init)]^2 "
            f"in the first bins (k = {k[0]:.3f}, ...): {[round(float(r), 3) for r in ratios[:4]]}")  # fmt: skip
    final = snaps.positions[-1].reshape(-1, 3)
    rho_final = jc.paint(final, domain)
    return {
        "delta_lin": delta_lin,
        "spectra": spectra,
        "rows": rows,
        "delta_final": rho_final / rho_final.mean() - 1.0,
    }


# ----------------------------------------------------------------------- part 2: reconstruction


def projected_prior_power(cosmo: jc.Cosmology, domain: jc.Domain) -> np.ndarray:
    """Prior power of the z-averaged linear density map, in jscore's unitary-FFT convention.

    With `m(x, y) = mean_z delta(x, y, z)`, only the k_z = 0 modes survive; the map's unitary-FFT
    power is P_3D(k_perp) * Nx * Ny / V (DFT algebra of jpm-core's field normalisation). The k = 0
    mode, absent from the field, gets a tiny positive power so that the prior stays proper.
    """
    nx, ny, _ = domain.mesh_shape
    lx, ly, _ = domain.box_size
    kmag = np.asarray(jscore.fourier_wavenumber((nx, ny), spacing=lx / nx))
    power = np.asarray(jc.linear_power(cosmo, jnp.asarray(kmag))) * nx * ny / domain.volume
    power[0, 0] = 1e-6 * power.max()
    del ly
    return power


def reconstruct(args: argparse.Namespace, cosmo, domain, delta_lin, key) -> dict:
    truth = jnp.mean(delta_lin, axis=2)
    shape = truth.shape
    prior = jscore.GaussianFieldPrior(jnp.asarray(projected_prior_power(cosmo, domain)), shape)
    k_noise, k_mask, k_chains = jax.random.split(key, 3)
    sigma_n = 0.5 * float(jnp.std(truth))
    mask = np.asarray(jax.random.uniform(k_mask, shape) > 0.2, dtype=np.float32)
    mask[: shape[0] // 3, : shape[1] // 3] = 0.0  # a masked patch, as around a bright star
    op = jscore.MaskOperator(jnp.asarray(mask))
    noise = jscore.DiagonalNoise(jnp.full(shape, sigma_n**2))
    y = op.forward(truth + sigma_n * jax.random.normal(k_noise, shape))
    log(f"jscore: {shape[0]}x{shape[1]} map, noise sigma {sigma_n:.3g}, {mask.mean():.0%} observed")

    wf_mean, cg = jscore.wiener_filter_cg(y, op.forward, op.adjoint, noise, prior)
    log(f"jscore: Wiener filter by CG in {int(cg.num_iterations)} iterations")

    prior_std = float(np.sqrt(np.mean(projected_prior_power(cosmo, domain))))
    t0 = time.perf_counter()
    samples, info = jscore.annealed_posterior_sample(
        k_chains, prior.score, op.forward, op.adjoint, noise, y,
        num_chains=args.chains,
        annealing=jscore.AnnealingConfig(
            sigma_init=float(2.0 * prior_std), sigma_min=float(0.05 * sigma_n),
            num_steps=args.hmc_steps,
        ),
        hmc=jscore.HMCConfig(step_size=float(0.2 * prior_std)),
        ode=jscore.ODEConfig(num_steps=16),
    )  # fmt: skip
    samples = jax.block_until_ready(samples)
    log(f"jscore: {args.chains} annealed HMC chains in {time.perf_counter() - t0:.1f} s")
    hmc_mean, hmc_std = samples.mean(0), samples.std(0)

    def rmse(x):
        return float(jnp.sqrt(jnp.mean((x - truth) ** 2)))

    summary = {
        "rmse_wiener": rmse(wf_mean),
        "rmse_hmc_mean": rmse(hmc_mean),
        "rmse_data_as_estimate": rmse(y),
        "hmc_vs_wiener_mean_in_posterior_std": float(
            jnp.mean(jnp.abs(hmc_mean - wf_mean) / hmc_std)
        ),
        "mean_acceptance": float(jnp.mean(info.acceptance_rate)),
        "chains_reaching_sigma_min": int(jnp.sum(info.sigma <= 0.05 * sigma_n * 1.001)),
    }
    for name, value in summary.items():
        log(f"jscore: {name} = {value}")
    return {"truth": truth, "y": y, "mask": mask, "wf": wf_mean, "mean": hmc_mean,
            "std": hmc_std, "samples": samples, "summary": summary}  # fmt: skip


# ------------------------------------------------------------------------------------- figures


def figures(out: Path, sim: dict, rec: dict, domain: jc.Domain) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for a, (k, p, theory) in sim["spectra"].items():
        (line,) = ax.loglog(k, p, label=f"PM, a = {a:.2f}")
        ax.loglog(k, theory, "--", color=line.get_color(), lw=1)
    ax.set_xlabel("k [h/Mpc]")
    ax.set_ylabel("P(k) [(Mpc/h)$^3$]")
    ax.set_title("matter power spectrum (dashed: linear theory)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "power_spectrum.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    n = domain.mesh_shape[2]
    slab = slice(n // 2 - 2, n // 2 + 2)
    axes[0].imshow(
        np.asarray(sim["delta_lin"][:, :, slab].mean(2)).T, origin="lower", cmap="RdBu_r"
    )
    axes[0].set_title("linear density, a = 1")
    axes[1].imshow(np.log1p(np.asarray(sim["delta_final"][:, :, slab].mean(2)) + 1).T,
                   origin="lower", cmap="magma")  # fmt: skip
    axes[1].set_title("PM density log(2 + delta), a = 1")
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    fig.tight_layout()
    fig.savefig(out / "density.png", dpi=120)
    plt.close(fig)

    panels = [
        ("truth (projected linear density)", rec["truth"], "RdBu_r"),
        ("observed: mask x (truth + noise)", np.where(rec["mask"] > 0, rec["y"], np.nan), "RdBu_r"),
        ("Wiener filter (exact mean)", rec["wf"], "RdBu_r"),
        ("annealed HMC posterior mean", rec["mean"], "RdBu_r"),
        ("annealed HMC posterior std", rec["std"], "viridis"),
        ("one posterior sample", rec["samples"][0], "RdBu_r"),
    ]
    vmax = float(np.max(np.abs(np.asarray(rec["truth"]))))
    fig, axes = plt.subplots(2, 3, figsize=(11, 7.4))
    for axis, (title, img, cmap) in zip(axes.ravel(), panels, strict=True):
        kwargs = {"vmin": -vmax, "vmax": vmax} if cmap == "RdBu_r" else {}
        im = axis.imshow(np.asarray(img).T, origin="lower", cmap=cmap, **kwargs)
        axis.set_title(title, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
        fig.colorbar(im, ax=axis, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out / "reconstruction.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log(f"JAX {jax.__version__} on {jax.devices()[0].platform}; outputs in {args.out}")
    cosmo = jc.Cosmology.planck18()
    domain = jc.Domain(mesh_shape=args.mesh, box_size=args.box)
    k_field, k_rec = jax.random.split(jax.random.key(args.seed))

    sim = simulate(args, cosmo, domain, k_field)
    rec = reconstruct(args, cosmo, domain, sim["delta_lin"], k_rec)
    figures(args.out, sim, rec, domain)
    summary = {"power_spectrum": sim["rows"], "reconstruction": rec["summary"], "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"wrote {', '.join(sorted(p.name for p in args.out.iterdir()))}")

    # The demo checks itself: large scales grow linearly, and the score-driven posterior agrees
    # with the exact Wiener posterior mean to a fraction of the posterior spread.
    failures = []
    final_ratio = sim["rows"][-1]["growth_over_linear_lowest_k"]
    if not 0.95 < final_ratio < 1.05:
        failures.append(f"large-scale growth to a=1 is {final_ratio:.3f} x linear theory")
    # the mean of n posterior samples scatters by std / sqrt(n) around the exact mean, so the
    # average |difference| / std is about sqrt(2 / pi) / sqrt(n); allow twice that
    agreement = rec["summary"]["hmc_vs_wiener_mean_in_posterior_std"]
    if not agreement < 2 * 0.8 / np.sqrt(args.chains):
        failures.append(f"HMC mean differs from the Wiener mean by {agreement:.2f} posterior std")
    for failure in failures:
        log(f"CHECK FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
