"""The floor of one PM step on this machine: one forward rFFT, three inverse rFFTs, one CIC paint and one
CIC read of N^3 particles on an N^3 mesh, float32, one device (jpm_core's public primitives).

Any PM step must do at least this much work, so per-step times of full simulations are quoted against
it (BENCHMARKS.md). Prints one JSON line per mesh size.

    python benchmarks/bench_pm_floor.py [N ...]      (default: 64 128)
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp

import jpm_core as jc


def floor_step(positions, domain):
    rho = jc.paint(positions, domain)
    rho_k = jc.fft(rho, domain)
    grads = [jc.ifft(rho_k * (1j * k), domain) for k in jc.wavevectors(domain)]
    return jc.read(grads[0] + grads[1] + grads[2], positions, domain)


def measure(n: int, repeat: int = 5) -> dict:
    domain = jc.Domain(mesh_shape=n, box_size=256.0)
    grid = jnp.stack(jnp.meshgrid(*[jnp.arange(n, dtype=jnp.float32)] * 3, indexing="ij"), axis=-1)
    key = jax.random.key(0)
    positions = (grid + jax.random.uniform(key, grid.shape, minval=-0.5, maxval=0.5)).reshape(-1, 3)
    fn = jax.jit(floor_step, static_argnums=1)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(positions, domain))
    compile_s = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(positions, domain))
        runs.append(time.perf_counter() - t0)
    return {
        "code": "jpm-core",
        "what": "floor: rfft + 3 irfft + cic paint + cic read",
        "mesh": n,
        "device": str(jax.devices()[0].device_kind),
        "first_call_s": round(compile_s, 3),
        "run_s_median": round(sorted(runs)[len(runs) // 2], 4),
        "run_s_min": round(min(runs), 4),
    }


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [64, 128]
    for n in sizes:
        print(json.dumps(measure(n)), flush=True)
