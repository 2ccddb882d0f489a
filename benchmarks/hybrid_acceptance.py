"""jpm-hybrid's acceptance figures (issue 15): plain PM, PGD and the hybrid against the truth on
held-out seeds, the robustness of the shipped physical-|k| filter (another Omega_m, twice the box,
half the mesh) against a grid-|k| filter trained on the same data, and the cost of a hybrid step.

Everything goes through the `jpm-hybrid` command line (so the numbers are what a user gets):

    python benchmarks/hybrid_acceptance.py WORK [--filter F] [--skip-cost]

1. `jpm-hybrid truth` makes, in WORK, the training truths (seeds 0-3) and the held-out ones
   (seeds 100-102) of the default configuration (32^3 particles, 64 Mpc/h, Omega_m = 0.3,
   sigma8 = 0.8, 2LPT at a = 0.1, snapshots a = 0.25 0.5 0.75 1, force mesh 4x finer, 100 steps),
   and held-out ones at Omega_m = 0.25 and 0.35, at 128 Mpc/h and at 16^3 (folders reused when
   present);
2. `jpm-hybrid train` trains the physical-|k| filter (400 Adam steps, cosine decay from 1e-2), PGD
   (200 steps) and a grid-|k| filter (400 steps) on the training truths, 10 hybrid steps (files
   reused when present; `--filter F` evaluates F, e.g. the shipped weights, as the physical one);
3. `jpm-hybrid evaluate` on each held-out folder; the table of the issue's numbers is printed
   (`|P/P_truth - 1|` at k_Nyq/2 and averaged over [k_Nyq/4, k_Nyq/2], `1 - r` there, mean over
   the three seeds), with the improvement factor over plain PM;
4. the cost: one hybrid step against one plain PM step (`jpm_core.nbody` with and without the
   filter, 10 steps, jit-compiled, interleaved, median of 15) at 32^3 and 64^3.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CONFIG = ["--mesh", "32", "--box", "64"]
TEST_SEEDS = ["--seeds", "100", "101", "102"]
SETS = {
    "test": [*CONFIG, *TEST_SEEDS],
    "test_om025": [*CONFIG, "--omega-m", "0.25", *TEST_SEEDS],
    "test_om035": [*CONFIG, "--omega-m", "0.35", *TEST_SEEDS],
    "test_box128": ["--mesh", "32", "--box", "128", *TEST_SEEDS],
    "test_mesh16": ["--mesh", "16", "--box", "64", *TEST_SEEDS],
}
LABELS = {
    "test": "held-out seeds, training configuration",
    "test_om025": "Omega_m = 0.25",
    "test_om035": "Omega_m = 0.35",
    "test_box128": "box 128 Mpc/h (2x), 32^3",
    "test_mesh16": "mesh 16^3 (half), 64 Mpc/h",
}


def jpm_hybrid(*args) -> None:
    exe = shutil.which("jpm-hybrid") or str(Path(sys.executable).with_name("jpm-hybrid"))
    cmd = [exe, *map(str, args)]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def cost(mesh: int, repeat: int = 15) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    import jpm_core as jc
    import jpm_hybrid as jh

    cosmo = jc.Cosmology()
    domain = jc.Domain(mesh, 2.0 * mesh)
    delta = jc.linear_field(jax.random.key(0), domain, lambda k: jc.linear_power(cosmo, k))
    state = jc.lpt(cosmo, delta, domain, 0.1)
    model = jh.SplineFilter(rngs=nnx.Rngs(0))
    fn, params = jh.potential_filter(model, domain)

    def plain(x):
        s = jc.ParticleState(x, state.momenta, state.a)
        return jc.nbody(cosmo, s, domain, (1.0,), steps=10).snapshots.positions

    def hybrid(x, p):
        s = jc.ParticleState(x, state.momenta, state.a)
        return jc.nbody(
            cosmo, s, domain, (1.0,), steps=10, potential_filter=fn, filter_params=p
        ).snapshots.positions

    compiled = {}
    for name, f, args in (("pm", plain, (state.positions,)),
                          ("hybrid", hybrid, (state.positions, params))):  # fmt: skip
        compiled[name] = (jax.jit(f).lower(*args).compile(), args)
        jax.block_until_ready(compiled[name][0](*args))
    runs = {"pm": [], "hybrid": []}
    for _ in range(repeat):  # interleaved, so that a drift of the machine's speed hits both alike
        for name, (fn_c, args) in compiled.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn_c(*args))
            runs[name].append(time.perf_counter() - t0)
    out = {name: float(np.median(r)) for name, r in runs.items()}
    out["ratio"] = out["hybrid"] / out["pm"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--filter", type=Path, default=None, help="physical filter to evaluate")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "train").exists():
        jpm_hybrid("truth", work / "train", *CONFIG, "--seeds", 0, 1, 2, 3, "--no-progress")
    for name, flags in SETS.items():
        if not (work / name).exists():
            jpm_hybrid("truth", work / name, *flags, "--no-progress")
    physical = args.filter or work / "physical.msgpack"
    train = ["--steps", 10, "--learning-rate", "1e-2", "--no-progress"]
    if not physical.exists():
        jpm_hybrid("train", work / "train", "--out", physical, "--iterations", 400, *train)
    if not (work / "pgd.json").exists():
        jpm_hybrid("train", work / "train", "--out", work / "pgd.json", "--model", "pgd",
                   "--iterations", 200, *train)  # fmt: skip
    if not (work / "grid.msgpack").exists():
        jpm_hybrid("train", work / "train", "--out", work / "grid.msgpack", "--k-unit", "grid",
                   "--iterations", 400, *train)  # fmt: skip
    rows = []
    for name in SETS:
        for label, filt in (("physical", physical), ("grid", work / "grid.msgpack")):
            out = work / f"eval_{name}_{label}"
            if not out.exists():
                extra = ["--pgd", work / "pgd.json"] if label == "physical" else []
                jpm_hybrid("evaluate", work / name, "--out", out, "--filter", filt, "--steps", 10,
                           *extra)  # fmt: skip
            metrics = json.loads((out / "metrics.json").read_text())
            for model, m in metrics["models"].items():
                if label == "grid" and model != "hybrid":
                    continue
                tag = "hybrid, grid-unit k" if label == "grid" else model
                rows.append((name, tag, m))
    print(
        "| test set | model | abs(P/P_truth - 1) at k_Nyq/2 | mean over [k_Nyq/4, k_Nyq/2] "
        "| 1 - r at k_Nyq/2 | mean 1 - r over [k_Nyq/4, k_Nyq/2] | PM / model, band P error |"
    )
    print("|---|---|---|---|---|---|---|")
    pm_band = {n: m["power_error_quarter_to_half_nyquist"] for n, t, m in rows if t == "pm"}
    for name, tag, m in rows:
        band = m["power_error_quarter_to_half_nyquist"]
        print(f"| {LABELS[name]} | {tag} | {m['power_error_at_half_nyquist']:.4f} | {band:.4f} "
              f"| {m['one_minus_r_at_half_nyquist']:.2e} "
              f"| {m['one_minus_r_quarter_to_half_nyquist']:.2e} "
              f"| {pm_band[name] / band:.1f} |")  # fmt: skip
    if not args.skip_cost:
        for mesh in (32, 64):
            c = cost(mesh)
            print(
                f"cost, {mesh}^3, 10 steps: PM {c['pm']:.4f} s, hybrid {c['hybrid']:.4f} s, "
                f"ratio {c['ratio']:.3f}"
            )
    os.sync()


if __name__ == "__main__":
    main()
