"""jpm-core against JaxPM 0.1.6 on the configuration of `shared/peers/jaxpm_bench.py`, in one run.

N^3 particles on an N^3 mesh, 256 Mpc/h, 1LPT at a = 0.1, fixed steps to a = 1, final CIC density,
float32, one CPU device. Forward time, and the gradient of sum(density^2) with respect to
(Omega_c, sigma8, initial field): wall time (median of repeats, after compilation), compile time, and
the compiled program's XLA temp memory (`memory_analysis()`), at 10 and 40 steps.

The peer runs in its own virtual environment (`.peers/jaxpm`, built by `shared/peers/setup_jaxpm.sh`
from PyPI when absent), through its own script; both codes are measured in the same run on the same
machine, and ratios (ours / JaxPM) are printed last.

    python benchmarks/bench_pm_vs_jaxpm.py [--mesh 64] [--steps 10 40] [--no-peer]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import jpm_core as jc

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "peers"
PEER_VENV = ROOT / ".peers" / "jaxpm"


def cosmology(omega_c, sigma8):
    # jax_cosmo's Planck15 with (Omega_c, sigma8) free, as the peer script uses
    return jc.Cosmology(Omega_c=omega_c, Omega_b=0.0486, h=0.6774, n_s=0.9667, sigma8=sigma8)


def make_simulate(domain: jc.Domain, steps: int, a_init: float = 0.1):
    def simulate(omega_c, sigma8, init):
        cosmo = cosmology(omega_c, sigma8)
        state = jc.lpt(cosmo, init, domain, a_init, order=1)
        snaps = jc.nbody(cosmo, state, domain, (1.0,), steps=steps).snapshots
        return jc.paint(snaps.positions[-1].reshape(-1, 3), domain)

    return simulate


def measure(fn, args, repeat: int) -> dict:
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    jax.block_until_ready(compiled(*args))
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t0)
    return {
        "compile_s": round(compile_s, 3),
        "run_s_median": round(sorted(runs)[len(runs) // 2], 4),
        "run_s_min": round(min(runs), 4),
        "xla_temp_mib": round(mem.temp_size_in_bytes / 2**20, 1) if mem is not None else None,
    }


def ours(mesh: int, steps: int, mode: str, repeat: int) -> dict:
    domain = jc.Domain(mesh_shape=mesh, box_size=256.0)
    cosmo0 = cosmology(0.25, 0.8)
    init = jc.linear_field(jax.random.key(0), domain, lambda k: jc.linear_power(cosmo0, k))
    simulate = make_simulate(domain, steps)
    if mode == "fwd":
        fn = simulate
    else:
        fn = jax.grad(lambda oc, s8, i: jnp.sum(simulate(oc, s8, i) ** 2), argnums=(0, 1, 2))
    result = measure(fn, (0.25, 0.8, init), repeat)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"code": f"jpm-core-{jc.__version__}", "mesh": mesh, "steps": steps, "mode": mode,
            **result, "peak_rss_mib_so_far": round(peak, 1)}  # fmt: skip


def peer(mesh: int, steps: int, mode: str, repeat: int) -> dict | None:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        setup = SHARED / "setup_jaxpm.sh"
        if not setup.exists():
            return None
        subprocess.run(["bash", str(setup), str(PEER_VENV)], check=True)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(
        [str(python), str(SHARED / "jaxpm_bench.py"), "--mesh", str(mesh), "--steps", str(steps),
         "--mode", mode, "--repeat", str(repeat)],
        capture_output=True, text=True, env=env, check=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mesh", type=int, default=64)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 40])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args()
    rows = []
    for steps in args.steps:
        for mode in ("fwd", "grad"):
            mine = ours(args.mesh, steps, mode, args.repeat)
            print(json.dumps(mine), flush=True)
            theirs = None if args.no_peer else peer(args.mesh, steps, mode, args.repeat)
            if theirs is not None:
                print(json.dumps(theirs), flush=True)
                rows.append((steps, mode, mine, theirs))
    for steps, mode, mine, theirs in rows:
        print(json.dumps({
            "ratio": "jpm-core / jaxpm", "mesh": args.mesh, "steps": steps, "mode": mode,
            "time": round(mine["run_s_median"] / theirs["run_s_median"], 3),
            "xla_temp_memory": round(mine["xla_temp_mib"] / theirs["xla_temp_mib"], 3)
            if mine["xla_temp_mib"] and theirs["xla_temp_mib"] else None,
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
