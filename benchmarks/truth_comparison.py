"""P(k) and r(k) of one-particle-per-cell runs against a finer-force-mesh stand-in truth (issue 11).

The same 32^3 particles in 256 Mpc/h (2LPT at a = 0.1, full Planck amplitude, float32) are run to
a = 1 with each force configuration (10 and 40 steps) and, as the truth, on a 4x finer force mesh
with the finite-difference kernels and 40 steps. Every final state is painted (CIC) on the
particle grid; the script prints P / P_truth and r(k) with the truth per k bin (every other bin).
Quoted in packages/jpm-core/README.md ("Beyond the linear regime").

    python benchmarks/truth_comparison.py [amplitude]
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import jpm_core as jc

cosmo = jc.Cosmology()
N, box = 32, 256.0

amp = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
part = jc.Domain(N, box)
delta = amp * jc.linear_field(jax.random.key(0), part, lambda k: jc.linear_power(cosmo, k))
state = jc.lpt(cosmo, delta, part, 0.1, order=2)


def dens(x):
    rho = jc.paint(x, part)
    return rho / rho.mean() - 1


def run(domain, forces, steps):
    s = state if domain is part else jc.rescale_state(state, part, domain)
    out = jax.jit(
        lambda s: jc.nbody(cosmo, s, domain, [1.0], steps=steps, a_init=0.1, forces=forces)
    )(s).snapshots
    fin = jax.tree.map(lambda v: v[0], out)
    if domain is not part:
        fin = jc.rescale_state(fin, domain, part)
    return dens(fin.positions)


fine = jc.Domain(4 * N, box)
truth = run(fine, jc.ForceConfig("finite_difference", "finite_difference"), 40)
pt = jc.power_spectrum(truth, part)
k = np.asarray(pt.k)
kn = np.pi * N / box
print("k/kNyq", np.round(k / kn, 2)[::2])
for name, f in [
    ("default", jc.ForceConfig()),
    ("spectral cic", jc.ForceConfig("spectral", "spectral", "cic")),
    ("fd cic", jc.ForceConfig("finite_difference", "finite_difference", "cic")),
]:
    for steps in (10, 40):
        d = run(part, f, steps)
        p = jc.power_spectrum(d, part)
        x = jc.power_spectrum(d, part, truth)
        ratio = np.asarray(p.power) / np.asarray(pt.power)
        r = np.asarray(x.power) / np.sqrt(np.asarray(p.power) * np.asarray(pt.power))
        print(f"{name:13s} {steps:3d} P/Ptruth", np.round(ratio, 3)[::2])
        print(f"{'':13s} {'':3s} r        ", np.round(r, 3)[::2])
