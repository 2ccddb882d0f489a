"""Cost of jlens's Born lightcone on a jpm-core run: `nbody` with `BornLightcone` as its observer
over the same `nbody` without one (same process, interleaved, median of repeats).

    python benchmarks/run.py born_overhead

Configuration (the jlens README's): 32 x 32 x 384 particles and mesh in 200 x 200 x 2400 (Mpc/h)^3,
PM forces (jpm-core's default `ForceConfig`), 30 steps from a = 0.49 to 1, a source plane at
z = 1 on 64^2 pixels over 4.8 deg; forward run and reverse-mode gradient (the default adjoint) of a
map statistic with respect to the initial field. One JSON line per configuration.
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import jlens
import jpm_core as jc

REPEATS = 7


def main() -> None:
    cosmo = jc.Cosmology()
    domain = jc.Domain((32, 32, 384), (200.0, 200.0, 2400.0))
    geometry = jlens.FlatSky(64, field_deg=4.8)
    a_init, steps = 0.49, 30
    delta = jc.linear_field(jax.random.key(0), domain, lambda k: jc.linear_power(cosmo, k))

    def run(delta, cone):
        state = jc.lpt(cosmo, delta, domain, a_init)
        if cone is None:
            result = jc.nbody(cosmo, state, domain, [1.0], steps=steps)
            return jnp.sum(result.snapshots.positions[-1] ** 2) * 1e-9
        result = jc.nbody(cosmo, state, domain, [1.0], steps=steps, **cone.nbody_kwargs())
        return jnp.sum(cone.convergence(result.observer_carry) ** 2)

    for method in ("mesh", "particles"):
        cone = jlens.BornLightcone(
            cosmo, domain, geometry, sources=1.0, a_init=a_init, method=method
        )
        for mode in ("forward", "gradient"):
            make = (lambda f: jax.jit(f)) if mode == "forward" else (lambda f: jax.jit(jax.grad(f)))
            plain = make(lambda d: run(d, None))
            with_cone = make(lambda d, cone=cone: run(d, cone))
            jax.block_until_ready(plain(delta))
            jax.block_until_ready(with_cone(delta))
            times = {"plain": [], "cone": []}
            for _ in range(REPEATS):
                for name, fn in (("plain", plain), ("cone", with_cone)):
                    start = time.perf_counter()
                    jax.block_until_ready(fn(delta))
                    times[name].append(time.perf_counter() - start)
            t_plain, t_cone = (float(np.median(times[k])) for k in ("plain", "cone"))
            print(
                json.dumps(
                    {
                        "config": f"born_{method}_{mode}",
                        "mesh": [32, 32, 384],
                        "steps": steps,
                        "npix": 64,
                        "seconds_nbody": round(t_plain, 4),
                        "seconds_nbody_with_lightcone": round(t_cone, 4),
                        "ratio": round(t_cone / t_plain, 3),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
