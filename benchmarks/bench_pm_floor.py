"""The floor of one PM step on this machine, and where a real step stands against it.

The floor, as the jpm-core issue defines it: one forward rFFT, three inverse rFFTs, one CIC paint
and one CIC read of N^3 particles on an N^3 mesh, float32, one device. Every PM step must do at
least this much work. Measured in the same run, on the same particles (a 1LPT lattice at a = 1 with
the Planck power spectrum in 256 Mpc/h, so that memory access follows a realistic displacement
field, not a random permutation):

- each primitive alone (`paint`, `fft`, `ifft`, `read` of a 3-component mesh, as the force uses);
- `floor_fused`: the five primitives chained (with the gradient symbols), per application inside
  a `lax.scan` whose steps feed each other, as in a run: (40 applications - 10) / 30;
- `pm_forces`: the full force (adds the density contrast, the Poisson kernel and the force scale),
  measured the same way;
- `nbody_step`: per-step time of `nbody`, (40 steps - 10 steps) / 30, so start-up and the final
  copy cancel.

`pm_forces` and `nbody_step` are measured for each force configuration: `default`
(`jc.ForceConfig()`: spectral gradient, lattice TSC Poisson kernel, TSC paint and read, a 27-node
stencil) and `spectral-cic` (`ForceConfig(kernel="spectral", laplace="spectral", scheme="cic")`,
jpm-core 0.2's default, the floor's own mass assignment). Wall time (median of repeats) and process
CPU time (both cores together) are printed; the ratios `nbody_step / floor_fused` are the overhead
of a real step over the (CIC) floor.

    python benchmarks/bench_pm_floor.py [N ...]      (default: 64 128)
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jpm_core as jc

FORCES = {
    "default": jc.ForceConfig(),
    "spectral-cic": jc.ForceConfig(kernel="spectral", laplace="spectral", scheme="cic"),
}


def _time(fn, *args, repeat: int = 7) -> tuple[float, float]:
    jax.block_until_ready(fn(*args))  # compile
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def measure(n: int) -> list[dict]:
    domain = jc.Domain(n, 256.0)
    cosmo = jc.Cosmology()
    delta = jc.linear_field(jax.random.key(0), domain, lambda k: jc.linear_power(cosmo, k))
    state = jc.lpt(cosmo, delta, domain, 1.0, order=1)
    x = state.positions
    rho = jc.paint(x, domain)
    rho_k = jc.fft(rho, domain)
    mesh3 = jnp.stack(
        [jc.ifft(rho_k * jc.gradient_kernel(domain, i), domain) for i in range(3)], -1
    )

    def floor(x):
        rk = jc.fft(jc.paint(x, domain), domain)
        g = [jc.ifft(rk * jc.gradient_kernel(domain, i), domain) for i in range(3)]
        return jc.read(jnp.stack(g, axis=-1), x, domain)

    def looped(step, k):
        # k applications inside one lax.scan, each feeding the next (nothing can be hoisted):
        # per-step costs are differences of two loop lengths, like a real run
        def body(x, _):
            return x + 1e-6 * step(x), None

        return jax.jit(lambda x: jax.lax.scan(body, x, length=k)[0])

    def nbody_run(k, forces):
        return jax.jit(
            lambda s: (
                jc.nbody(
                    cosmo, s, domain, [1.0], steps=k, a_init=0.1, forces=forces
                ).snapshots.positions
            )
        )

    cases = {
        "paint": (jax.jit(lambda x: jc.paint(x, domain)), (x,)),
        "rfft": (jax.jit(lambda r: jc.fft(r, domain)), (rho,)),
        "irfft": (jax.jit(lambda r: jc.ifft(r, domain)), (rho_k,)),
        "read3": (jax.jit(lambda m, x: jc.read(m, x, domain)), (mesh3, x)),
    }
    out = {}
    for name, (fn, args) in cases.items():
        out[name] = _time(fn, *args)
    start = jc.lpt(cosmo, delta, domain, 0.1, order=1)
    per_step = {"floor_fused": (lambda k: looped(floor, k), x)}
    for label, forces in FORCES.items():

        def force(x, forces=forces):
            return jc.pm_forces(x, domain, forces=forces)

        per_step[f"pm_forces[{label}]"] = (lambda k, f=force: looped(f, k), x)
        per_step[f"nbody_step[{label}]"] = (lambda k, f=forces: nbody_run(k, f), start)
    for name, (make, arg) in per_step.items():
        short, long = _time(make(10), arg, repeat=5), _time(make(40), arg, repeat=5)
        out[name] = ((long[0] - short[0]) / 30, (long[1] - short[1]) / 30)
    parts = out["paint"][0] + out["rfft"][0] + 3 * out["irfft"][0] + out["read3"][0]
    rows = [
        {
            "code": "jpm-core",
            "what": name,
            "mesh": n,
            "wall_s": round(wall, 5),
            "cpu_s": round(cpu, 5),
        }
        for name, (wall, cpu) in out.items()
    ]
    floor_s = out["floor_fused"][0]
    for label in FORCES:
        rows.append(
            {
                "ratio": "per-step overhead over the floor",
                "forces": label,
                "mesh": n,
                "floor_sum_of_parts_s": round(parts, 5),
                "nbody_step_over_floor_fused": round(out[f"nbody_step[{label}]"][0] / floor_s, 2),
                "pm_forces_over_floor_fused": round(out[f"pm_forces[{label}]"][0] / floor_s, 2),
                "device": str(jax.devices()[0].device_kind),
            }
        )
    return rows


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [64, 128]
    for n in sizes:
        for row in measure(n):
            print(json.dumps(row), flush=True)
