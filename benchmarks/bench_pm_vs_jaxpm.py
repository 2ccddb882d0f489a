"""jpm-core against JaxPM 0.1.6 on the configuration of `shared/peers/jaxpm_bench.py`, in one run.

N^3 particles on an N^3 mesh, 256 Mpc/h, 1LPT at a = 0.1, fixed steps to a = 1, final CIC density,
float32, one device (JAX's default: a GPU when one is visible; the peer always runs on the CPU, so
on a GPU run it with `--no-peer`; each row names the device). Forward time, and the gradient of
sum(density^2) with respect to (Omega_c, sigma8, initial field): wall time (median of repeats,
after compilation), compile time, and the compiled program's XLA temp memory (`memory_analysis()`),
at 10 and 40 steps. Our gradient is measured for each `nbody(..., gradient=...)` method asked for
(`--gradients`: `adjoint` = `jc.Adjoint()`, the default, `checkpoint` = `jc.Checkpointed()`,
`autodiff` = `jc.Direct()`; default `adjoint checkpoint`); JaxPM has one gradient, compared with
each. Each of our rows is measured for each force configuration asked for (`--forces`: `default` =
`jc.ForceConfig()`, the lattice TSC configuration; `spectral-cic` = `ForceConfig(kernel="spectral",
laplace="spectral", scheme="cic")`, jpm-core 0.2's default, JaxPM-like; `fd-cic` = JaxPM's kernels
`ForceConfig(kernel="finite_difference", laplace="spectral", scheme="cic")`), default `default
spectral-cic`. The 1LPT initial state uses the same `forces`, and the final density is CIC painted
whatever the configuration, as JaxPM's.

`--reversibility` also measures the round-off of the time reversal the adjoint relies on: the
initial state reconstructed by running the steps backwards from the final one, in float32 and
float64, relative to the RMS displacement and momentum.

The peer runs in its own virtual environment (`.peers/jaxpm`, built by `shared/peers/setup_jaxpm.sh`
from PyPI when absent), through its own script; both codes are measured in the same run on the same
machine, and ratios (ours / JaxPM) are printed last.

    python benchmarks/bench_pm_vs_jaxpm.py [--mesh 64] [--steps 10 40] [--repeat 3] [--no-peer]
        [--gradients adjoint checkpoint autodiff] [--forces default spectral-cic fd-cic]
        [--reversibility]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _jaxpm_peer import SHARED, peer_env, peer_python

import jpm_core as jc

GRADIENTS = {"adjoint": jc.Adjoint(), "checkpoint": jc.Checkpointed(), "autodiff": jc.Direct()}
FORCES = {
    "default": jc.ForceConfig(),
    "spectral-cic": jc.ForceConfig(kernel="spectral", laplace="spectral", scheme="cic"),
    "fd-cic": jc.ForceConfig(kernel="finite_difference", laplace="spectral", scheme="cic"),
}


def cosmology(omega_c, sigma8):
    # jax_cosmo's Planck15 with (Omega_c, sigma8) free, as the peer script uses
    return jc.Cosmology(Omega_c=omega_c, Omega_b=0.0486, h=0.6774, n_s=0.9667, sigma8=sigma8)


def make_simulate(
    domain: jc.Domain,
    steps: int,
    a_init: float = 0.1,
    gradient: str = "adjoint",
    forces: str = "default",
):
    config = FORCES[forces]

    def simulate(omega_c, sigma8, init):
        cosmo = cosmology(omega_c, sigma8)
        state = jc.lpt(cosmo, init, domain, a_init, order=1, forces=config)
        snaps = jc.nbody(
            cosmo, state, domain, (1.0,), steps=steps, forces=config,
            gradient=GRADIENTS[gradient],
        ).snapshots  # fmt: skip
        return jc.paint(snaps.positions[-1].reshape(-1, 3), domain)  # CIC, as JaxPM

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


def ours(
    mesh: int,
    steps: int,
    mode: str,
    repeat: int,
    gradient: str = "adjoint",
    forces: str = "default",
) -> dict:
    domain = jc.Domain(mesh_shape=mesh, box_size=256.0)
    cosmo0 = cosmology(0.25, 0.8)
    init = jc.linear_field(jax.random.key(0), domain, lambda k: jc.linear_power(cosmo0, k))
    simulate = make_simulate(domain, steps, gradient=gradient, forces=forces)
    if mode == "fwd":
        fn = simulate
    else:
        fn = jax.grad(lambda oc, s8, i: jnp.sum(simulate(oc, s8, i) ** 2), argnums=(0, 1, 2))
    result = measure(fn, (0.25, 0.8, init), repeat)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if mode != "fwd":
        mode = f"grad-{gradient}"
    return {"code": f"jpm-core-{jc.__version__}", "forces": forces, "mesh": mesh, "steps": steps,
            "mode": mode, **result, "peak_rss_mib_so_far": round(peak, 1),
            "device": jax.devices()[0].device_kind}  # fmt: skip


def step_factors(cosmo: jc.Cosmology, grid: np.ndarray, dtype) -> dict:
    """FastPM kick and drift factors of every step, from the public growth functions.

    `G_p = a^2 E f1 D1`, `G_f = (3/2) Omega_m D1`; `Dr = (D1(a1) - D1(a0)) / G_p(ah)`,
    `K(a0, a1; ac) = (G_p(a1) - G_p(a0)) / G_f(ac)` (the formulas of `nbody`'s docstring).
    """
    a0, a1 = grid[:-1], grid[1:]
    ah = 0.5 * (a0 + a1)

    def growth(a):
        a = jnp.asarray(a, dtype)
        d1 = jc.growth_factor(cosmo, a).astype(dtype)
        g_p = a * a * jc.efunc(cosmo, a).astype(dtype) * jc.growth_rate(cosmo, a).astype(dtype)
        return d1, g_p * d1, 1.5 * jnp.asarray(cosmo.Omega_m, dtype) * d1

    (d_0, gp_0, gf_0), (d_1, gp_1, gf_1), (_, gp_h, _) = growth(a0), growth(a1), growth(ah)
    return {
        "kick_first": (gp_h - gp_0) / gf_0,
        "drift": (d_1 - d_0) / gp_h,
        "kick_second": (gp_1 - gp_h) / gf_1,
    }


def reversibility(
    mesh: int, steps: int, x64: bool, a_init: float = 0.1, forces: str = "default"
) -> dict:
    """Run the FastPM steps forwards, then backwards as the adjoint does; compare the start.

    Built from the public API (`jc.pm_forces`, the growth functions); the same steps as `nbody`.
    """
    config = FORCES[forces]
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        domain = jc.Domain(mesh_shape=mesh, box_size=256.0)
        cosmo = cosmology(0.25, 0.8)
        init = jc.linear_field(jax.random.key(0), domain, lambda k: jc.linear_power(cosmo, k))
        state = jc.lpt(cosmo, init.astype(dtype), domain, a_init, order=1, forces=config)
        grid = np.linspace(a_init, 1.0, steps + 1)
        fac = step_factors(cosmo, grid, dtype)
        scale = 1.5 * jnp.asarray(cosmo.Omega_m, dtype)

        def force(x):
            return scale * jc.pm_forces(x, domain, forces=config).astype(dtype)

        @jax.jit
        def round_trip(x, p):
            def forward(carry, i):
                x, p, f = carry
                p = p + fac["kick_first"][i] * f
                x = x + fac["drift"][i] * p
                f = force(x)
                return (x, p + fac["kick_second"][i] * f, f), None

            def backward(carry, i):
                x, p, f = carry
                p = p - fac["kick_second"][i] * f
                x = x - fac["drift"][i] * p
                f = force(x)
                return (x, p - fac["kick_first"][i] * f, f), None

            carry = (x, p, force(x))
            carry, _ = jax.lax.scan(forward, carry, jnp.arange(steps))
            (x_back, p_back, _), _ = jax.lax.scan(backward, carry, jnp.arange(steps), reverse=True)
            return carry[0], x_back, p_back

        x0, p0 = state.positions.astype(dtype), state.momenta.astype(dtype)
        x_end, x_back, p_back = round_trip(x0, p0)
        q = jc.lagrangian_grid(domain, dtype)
        rms = lambda v: float(np.sqrt(np.mean(np.asarray(v, np.float64) ** 2)))  # noqa: E731
        return {
            "reversibility": "float64" if x64 else "float32", "forces": forces, "mesh": mesh,
            "steps": steps,
            "x_max_abs_err_cells": float(jnp.abs(x_back - x0).max()),
            "x_rms_err_over_rms_disp": rms(x_back - x0) / rms(x0 - q),
            "p_rms_err_over_rms_p": rms(p_back - p0) / rms(p0),
            "rms_disp_final_cells": rms(x_end - q),
        }  # fmt: skip


def peer(mesh: int, steps: int, mode: str, repeat: int) -> dict | None:
    python = peer_python()
    if python is None:
        return None
    env = peer_env()
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
    ap.add_argument(
        "--gradients", nargs="+", default=["adjoint", "checkpoint"],
        choices=["adjoint", "checkpoint", "autodiff"],
    )  # fmt: skip
    ap.add_argument(
        "--forces", nargs="+", default=["default", "spectral-cic"], choices=list(FORCES)
    )
    ap.add_argument("--reversibility", action="store_true")
    args = ap.parse_args()
    if args.reversibility:
        for steps in args.steps:
            for x64 in (False, True):
                for forces in args.forces:
                    row = reversibility(args.mesh, steps, x64, forces=forces)
                    print(json.dumps(row), flush=True)
    rows = []
    for steps in args.steps:
        for mode in ("fwd", "grad"):
            theirs = None if args.no_peer else peer(args.mesh, steps, mode, args.repeat)
            if theirs is not None:
                print(json.dumps(theirs), flush=True)
            for gradient in ["adjoint"] if mode == "fwd" else args.gradients:
                for forces in args.forces:
                    mine = ours(args.mesh, steps, mode, args.repeat, gradient, forces)
                    print(json.dumps(mine), flush=True)
                    if theirs is not None:
                        rows.append((steps, mine["mode"], mine, theirs))
    for steps, mode, mine, theirs in rows:
        print(json.dumps({
            "ratio": "jpm-core / jaxpm", "forces": mine["forces"], "mesh": args.mesh,
            "steps": steps, "mode": mode,
            "time": round(mine["run_s_median"] / theirs["run_s_median"], 3),
            "xla_temp_memory": round(mine["xla_temp_mib"] / theirs["xla_temp_mib"], 3)
            if mine["xla_temp_mib"] and theirs["xla_temp_mib"] else None,
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
