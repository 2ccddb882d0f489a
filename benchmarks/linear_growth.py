"""Linear growth of jpm-core's force configurations: the measured curve T(k)^2 / D1^2 (issue 11).

One Planck realisation at a small fraction of its amplitude (default 1%: linear), 2LPT at a = 0.1,
`nbody` to a = 1 in float32 with one particle per cell, for each configuration and box. Both states
are painted (CIC) on the particle grid; the growth of each k bin is the cross spectrum with the
initial field over the initial power, `T(k) = P_01 / P_00` (same modes: no cosmic variance, the
window cancels), compared with `(D1(1) / D1(0.1))^2` from the cosmology module. The goal is
|T^2 / D1^2 - 1| < 1% for k <= k_Nyq / 4 and < 3% up to k_Nyq / 2.

Configurations (the 2LPT initial state is the same for all: `lpt` with the default forces, whose
displacement uses the spectral gradient and Laplacian):

- `default (lattice TSC)`: `ForceConfig()`, i.e. `ForceConfig(kernel="spectral",
  laplace="lattice", scheme="tsc")`, force mesh = particle grid;
- `spectral CIC (JaxPM-like, jpm-core 0.2 default)`: `ForceConfig(kernel="spectral",
  laplace="spectral", scheme="cic")`, force mesh = particle grid;
- `FastPM B=2 finite difference`: `ForceConfig(kernel="finite_difference",
  laplace="finite_difference", scheme="cic")` on a 2x finer force mesh (`rescale_state`).

Writes `jpm-core-linear-growth.csv` (one row per configuration, box and k bin) and
`jpm-core-linear-growth.png` into `--out`, and prints the worst deviations per range.

    python benchmarks/linear_growth.py [--mesh 32] [--boxes 256 1000] [--amplitude 0.01] \
        [--out docs/figures]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import jax
import numpy as np
from rich.progress import Progress

import jpm_core as jc

COSMO = jc.Cosmology()
A_INIT = 0.1
GOAL = {"quarter": 0.01, "half": 0.03}


DEFAULT = "default (lattice TSC)"
SPECTRAL_CIC = "spectral CIC (JaxPM-like, jpm-core 0.2 default)"
FASTPM = "FastPM B=2 finite difference"


def _options(name: str, particles: jc.Domain) -> tuple[jc.Domain, dict]:
    """(force mesh, nbody keyword arguments) of a configuration."""
    if name == DEFAULT:
        return particles, {"forces": jc.ForceConfig()}
    if name == SPECTRAL_CIC:
        return particles, {
            "forces": jc.ForceConfig(kernel="spectral", laplace="spectral", scheme="cic")
        }
    if name == FASTPM:
        mesh = jc.Domain(2 * particles.mesh_shape[0], particles.box_size[0])
        fd = jc.ForceConfig(kernel="finite_difference", laplace="finite_difference", scheme="cic")
        return mesh, {"forces": fd}
    raise ValueError(name)


CONFIGURATIONS = (DEFAULT, SPECTRAL_CIC, FASTPM)


def measure(name: str, box: float, n: int, amplitude: float, steps: int, seed: int):
    """(k, T^2 / D1^2 - 1, k_Nyq) of one configuration in one box."""
    particles = jc.Domain(n, box)
    delta = amplitude * jc.linear_field(
        jax.random.key(seed), particles, lambda k: jc.linear_power(COSMO, k)
    )
    state = jc.lpt(COSMO, delta, particles, A_INIT, order=2)
    mesh, options = _options(name, particles)
    start = state if mesh is particles else jc.rescale_state(state, particles, mesh)
    run = jax.jit(lambda s: jc.nbody(COSMO, s, mesh, [1.0], steps=steps, a_init=A_INIT, **options))
    out = run(start).snapshots
    final = jc.ParticleState(out.positions[0], out.momenta[0], out.a[0])
    if mesh is not particles:
        final = jc.rescale_state(final, mesh, particles)

    def density(positions):
        rho = jc.paint(positions, particles)
        return rho / rho.mean() - 1.0

    initial, evolved = density(state.positions), density(final.positions)
    p00 = jc.power_spectrum(initial, particles)
    p01 = jc.power_spectrum(evolved, particles, initial)
    want = float(jc.growth_factor(COSMO, 1.0) / jc.growth_factor(COSMO, A_INIT)) ** 2
    deviation = (np.asarray(p01.power) / np.asarray(p00.power)) ** 2 / want - 1.0
    return np.asarray(p00.k), deviation, np.pi * n / box


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", type=int, default=32, help="particles per axis (default 32)")
    parser.add_argument("--boxes", type=float, nargs="+", default=[256.0, 1000.0])
    parser.add_argument("--amplitude", type=float, default=0.01, help="of the Planck field")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/figures"), help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    rows, curves = [], {}
    with Progress() as progress:
        task = progress.add_task("runs", total=len(CONFIGURATIONS) * len(args.boxes))
        for box in args.boxes:
            for name in CONFIGURATIONS:
                k, dev, k_nyq = measure(name, box, args.mesh, args.amplitude, args.steps, args.seed)
                curves[(name, box)] = (k, dev, k_nyq)
                rows += [
                    (name, box, args.mesh, kk, kk / k_nyq, d) for kk, d in zip(k, dev, strict=True)
                ]
                progress.advance(task)

    csv_path = args.out / "jpm-core-linear-growth.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["configuration", "box_mpc_h", "n", "k_h_mpc", "k_over_knyq", "deviation"])
        writer.writerows(rows)

    print(f"{'configuration':48s} {'box':>6s} {'k<=kNyq/4':>10s} {'k<=kNyq/2':>10s}")
    for (name, box), (k, dev, k_nyq) in curves.items():
        quarter = np.max(np.abs(dev[k <= k_nyq / 4]))
        half = np.max(np.abs(dev[k <= k_nyq / 2]))
        print(f"{name:48s} {box:6.0f} {100 * quarter:9.2f}% {100 * half:9.2f}%")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = dict(zip(CONFIGURATIONS, ("tab:red", "tab:blue", "tab:gray"), strict=True))
    styles = dict(zip(args.boxes, ("-", "--", ":", "-."), strict=False))
    for (name, box), (k, dev, k_nyq) in curves.items():
        ax.plot(
            k / k_nyq,
            100 * dev,
            styles.get(box, "-"),
            color=colors[name],
            marker="o",
            ms=2.5,
            label=f"{name}, {box:g} Mpc/h",
        )
    ax.axhspan(-100 * GOAL["half"], 100 * GOAL["half"], color="0.92", zorder=0)
    ax.axhspan(-100 * GOAL["quarter"], 100 * GOAL["quarter"], color="0.82", zorder=0)
    for x in (0.25, 0.5):
        ax.axvline(x, color="0.5", lw=0.6)
    ax.set_xlabel(r"$k / k_\mathrm{Nyq}$ of the particle grid")
    ax.set_ylabel(r"$T(k)^2 / (D_1(1)/D_1(0.1))^2 - 1$  [%]")
    ax.set_title(
        f"jpm-core linear growth: {args.mesh}$^3$ particles, {args.steps} steps from a = 0.1, "
        "float32",
        fontsize=9,
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(-50, 50)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    png_path = args.out / "jpm-core-linear-growth.png"
    fig.savefig(png_path, dpi=130)
    print(f"wrote {csv_path} and {png_path}")


if __name__ == "__main__":
    main()
