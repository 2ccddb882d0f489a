"""Mean C_ell of Born maps of 1LPT lightcones against linear Limber (the jlens README's tables).

    python packages/jlens/benchmarks/born_cl.py mesh 120 interpolate            # elongated box
    python packages/jlens/benchmarks/born_cl.py mesh 120 interpolate replicate  # 200 Mpc/h cube

Elongated: 32 x 32 x 384 particles in 200 x 200 x 2400 (Mpc/h)^3; replicated: 32^3 in a 200 Mpc/h
cube with random permutations and shifts (key 11). Source plane at z = 1, 60 steps from
a = 0.49, 64^2 pixels over 4.8 deg, 1LPT positions at both ends of every step (no PM forces).
Prints the band centres, the ratio of the mean simulated C_ell to linear Limber (`sim/full`), to
Limber with the power cut at the mesh's Nyquist wavenumber (`sim/cut`), and the error of the mean.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

import jlens
import jpm_core as jc


def main(method: str, n_maps: int, crossing: str, box: str) -> None:
    cosmo = jc.Cosmology()
    if box == "replicate":
        domain, key = jc.Domain(32, 200.0), jax.random.key(11)
    else:
        domain, key = jc.Domain((32, 32, 384), (200.0, 200.0, 2400.0)), None
    geometry = jlens.FlatSky(64, field_deg=4.8)
    a_init = 1 / 2.0 - 0.01
    cone = jlens.BornLightcone(
        cosmo, domain, geometry, sources=1.0, a_init=a_init, method=method, crossing=crossing,
        replication_key=key,
    )  # fmt: skip
    edges_a = np.linspace(a_init, 1.0, 61)
    pairs = jnp.stack([edges_a[:-1], edges_a[1:]], -1).astype(jnp.float32)

    @jax.jit
    def one(key):
        delta = jc.linear_field(key, domain, lambda k: jc.linear_power(cosmo, k))

        def body(carry, a01):
            start = jc.lpt(cosmo, delta, domain, a01[0], order=1)
            end = jc.lpt(cosmo, delta, domain, a01[1], order=1)
            return cone.observer(end, a01[0], a01[1], carry, start.positions), None

        carry, _ = jax.lax.scan(body, cone.init(), pairs)
        return cone.convergence(carry)

    bands = np.geomspace(80, 320, 5)
    spectra = []
    for seed in range(n_maps):
        ell, cl = jlens.map_power_spectrum(one(jax.random.key(seed)), geometry, bands)[:2]
        spectra.append(np.asarray(cl)[0, 0])
    spectra, ell = np.asarray(spectra), np.asarray(ell)
    chi, q = (np.asarray(t, np.float64) for t in cone._table(jnp.float32))
    keep = chi > 1.0
    chi, q = chi[keep], q[0, keep]
    a = np.asarray(jc.scale_factor_of_chi(cosmo, jnp.asarray(chi, jnp.float32)))
    k_nyquist = np.pi / float(domain.cell_size[0])

    def limber(kcut):
        out = []
        for l in ell:
            k = (l + 0.5) / chi
            p = np.asarray(
                jc.linear_power(cosmo, jnp.asarray(k, jnp.float32), jnp.asarray(a, jnp.float32))
            )
            out.append(np.trapezoid(q**2 / chi**2 * np.where(k < kcut, p, 0.0), chi))
        return np.asarray(out)

    full, cut = limber(np.inf), limber(k_nyquist)
    error = spectra.std(0) / np.sqrt(len(spectra))
    print("ell     ", ell.round(0))
    print("sim/full", (spectra.mean(0) / full).round(3), "+-", (error / full).round(3))
    print("sim/cut ", (spectra.mean(0) / cut).round(3), "+-", (error / cut).round(3))


if __name__ == "__main__":
    args = sys.argv[1:] + ["mesh", "120", "interpolate", "elongated"][len(sys.argv) - 1 :]
    main(args[0], int(args[1]), args[2], args[3])
