"""Per-step wall time of `nbody` on 8 fake CPU devices, as an overhead ratio over one device.

N^3 particles on an N^3 mesh, 256 Mpc/h, 2LPT at a = 0.1 then `steps` FastPM steps to a = 1,
float32, the default forces (`jc.ForceConfig()`: spectral gradient, lattice TSC Poisson kernel, TSC
mass assignment), the same initial field on every layout. Timed: the jitted `nbody` call alone
(the 2LPT state is computed once per layout by a jitted function, so it already lives on the
layout's devices), forward, and its gradient (default reverse-time adjoint) of sum(final CIC
density^2) with respect to the initial positions and momenta; per-step time = median wall time /
steps, and the process CPU time per step (all threads; less sensitive to other jobs on a shared
machine).
Layouts: one device, then device grids (px, py) = (2, 4), (1, 8), (8, 1), (4, 2) with a halo
chosen from `stray_particles` on the final positions of the one-device run (halo >= 1 + the
largest excursion, and <= the local slab width).

The 8 devices are XLA's fake host devices (`--xla_force_host_platform_device_count=8`): they share
the machine's CPU cores, so the ratio measures what the decomposition adds (halo exchange for
paint/read, the distributed FFT's transposes, the smaller per-device kernels), not a speed-up. Each
grid is run with each `--fft-backends` (jpm-core's distributed real FFT `rfft`, jaxdecomp's complex
pencil FFT `jax`).

    nice -n 10 python benchmarks/bench_pm_distributed.py [--mesh 64] [--steps 10] [--no-grad]
        [--grids 2x4 1x8 8x1 4x2] [--halo H] [--fft-backends rfft jax]
"""

from __future__ import annotations

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):  # before jax is imported
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jpm_core as jc  # noqa: E402

BOX = 256.0
A_INIT = 0.1


def timed(fn, args, repeat: int) -> dict:
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = jax.block_until_ready(compiled(*args))
    runs, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"compile_s": compile_s, "runs": runs, "cpu": cpu, "out": out}


def layout(
    mesh: int,
    grid: tuple[int, int],
    halo: int,
    steps: int,
    modes,
    repeat: int,
    on_stray,
    fft_backend: str = "rfft",
):
    distributed = grid != (1, 1)
    domain = jc.Domain(
        mesh,
        BOX,
        device_grid=grid,
        halo=halo if distributed else 0,
        on_stray=on_stray,
        fft_backend=fft_backend,
    )
    cosmo = jc.Cosmology()

    @jax.jit
    def initial():
        delta = jc.linear_field(jax.random.key(0), domain, lambda k: jc.linear_power(cosmo, k))
        state = jc.lpt(cosmo, delta, domain, A_INIT, order=2)
        return state.positions, state.momenta

    x0, p0 = jax.block_until_ready(initial())

    def final_positions(x, p):
        state = jc.ParticleState(x, p, jnp.asarray(A_INIT, x.dtype))
        snaps = jc.nbody(cosmo, state, domain, (1.0,), steps=steps, a_init=A_INIT).snapshots
        return snaps.positions[-1]

    def loss(x, p):
        return jnp.sum(jc.paint(final_positions(x, p), domain) ** 2)

    rows = []
    final = None
    for mode in modes:
        fn = final_positions if mode == "fwd" else jax.grad(loss, argnums=(0, 1))
        t = timed(fn, (x0, p0), repeat)
        if mode == "fwd":
            final = t["out"]
            finite = bool(jnp.isfinite(jc.paint(final, domain)).all())
        else:
            finite = bool(all(jnp.isfinite(g).all() for g in t["out"]))
        median = sorted(t["runs"])[len(t["runs"]) // 2]
        rows.append({
            "code": f"jpm-core-{jc.__version__}", "mesh": mesh, "steps": steps, "mode": mode,
            "device_grid": list(grid), "halo": domain.halo, "on_stray": on_stray,
            "compile_s": round(t["compile_s"], 3), "run_s_median": round(median, 4),
            "run_s_min": round(min(t["runs"]), 4),
            "per_step_s": round(median / steps, 5),
            "cpu_per_step_s": round(sorted(t["cpu"])[len(t["cpu"]) // 2] / steps, 5),
            "finite": finite,
        })  # fmt: skip
    return rows, final


def choose_halo(final: jax.Array, mesh: int, grids) -> int:
    """The smallest halo with no stray particle on every grid, checked on the final state, for the
    mass assignment of the default forces (`nbody` runs with `jc.ForceConfig()`: TSC)."""
    scheme = jc.ForceConfig().scheme
    x = np.asarray(final)
    for halo in range(1, mesh // 8 + 1):
        if all(
            int(jc.stray_particles(x, jc.Domain(mesh, BOX, device_grid=g, halo=halo), scheme)) == 0
            for g in grids
        ):
            return halo
    raise ValueError(f"no halo <= {mesh // 8} cells holds every particle at mesh {mesh}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mesh", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--grids", nargs="+", default=["2x4", "1x8", "8x1", "4x2"])
    ap.add_argument("--halo", type=int, default=None, help="default: from stray_particles, + 1")
    ap.add_argument("--no-grad", action="store_true")
    ap.add_argument("--on-stray", choices=["warn", "nan"], default="warn")
    ap.add_argument(
        "--fft-backends", nargs="+", default=["rfft", "jax"], choices=["rfft", "jax", "cudecomp"]
    )
    args = ap.parse_args()
    if jax.device_count() < 8:
        raise SystemExit(
            f"needs 8 devices, got {jax.devices()} (XLA_FLAGS={os.environ['XLA_FLAGS']})"
        )
    grids = [tuple(int(v) for v in g.split("x")) for g in args.grids]
    modes = ["fwd"] if args.no_grad else ["fwd", "grad"]

    rows, final = layout(args.mesh, (1, 1), 0, args.steps, modes, args.repeat, args.on_stray)
    halo_needed = choose_halo(final, args.mesh, grids)
    halo = args.halo if args.halo is not None else halo_needed + 1  # a cell of margin
    print(json.dumps({"halo_needed_final_state": halo_needed, "halo_used": halo}), flush=True)
    for row in rows:
        print(json.dumps(row), flush=True)
    base = {row["mode"]: row["per_step_s"] for row in rows}
    cpu_base = {row["mode"]: row["cpu_per_step_s"] for row in rows}
    for grid, backend in [(g, b) for b in args.fft_backends for g in grids]:
        more, _ = layout(
            args.mesh, grid, halo, args.steps, modes, args.repeat, args.on_stray, backend
        )
        for row in more:
            row["fft_backend"] = backend
            row["overhead_vs_1_device"] = round(row["per_step_s"] / base[row["mode"]], 3)
            row["cpu_overhead_vs_1_device"] = round(
                row["cpu_per_step_s"] / cpu_base[row["mode"]], 3
            )
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(
        f"mesh {args.mesh}^3, {args.steps} steps, halo {halo}, 8 fake CPU devices sharing the cores"
    )
    print(
        f"{'mode':5s} {'grid':>6s} {'fft':>5s} {'per step s':>10s} {'overhead':>8s} {'cpu s/step':>10s}"
        f" {'cpu overhead':>12s} {'compile s':>9s}"
    )
    for row in rows:
        grid = "x".join(map(str, row["device_grid"]))
        over = row.get("overhead_vs_1_device", 1.0)
        cpu_over = row.get("cpu_overhead_vs_1_device", 1.0)
        print(
            f"{row['mode']:5s} {grid:>6s} {row.get('fft_backend', '-'):>5s}"
            f" {row['per_step_s']:10.4f} {over:8.2f}"
            f" {row['cpu_per_step_s']:10.4f} {cpu_over:12.2f} {row['compile_s']:9.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
