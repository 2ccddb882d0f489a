"""The small simulation that the distributed tests run on every device layout and process count."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import jpm_core as jc

SHAPE = (16, 16, 16)
BOX = 256.0


def simulate(device_grid=(1, 1), steps=3, fft_backend="rfft"):
    """2LPT at a = 0.1, `steps` PM steps to a = 1; returns (2LPT positions, final positions,
    final CIC density, P(k) of the final density). `fft_backend` picks the distributed FFT."""
    halo = 2 if device_grid != (1, 1) else 0
    domain = jc.Domain(SHAPE, BOX, device_grid=device_grid, halo=halo, fft_backend=fft_backend)
    cosmo = jc.Cosmology.create()

    @jax.jit
    def run(key):
        delta = jc.linear_field(key, domain, lambda k: jc.linear_power(cosmo, k, 1.0))
        state = jc.lpt(cosmo, delta, domain, 0.1, order=2)
        snaps = jc.nbody(cosmo, state, domain, [1.0], steps=steps).snapshots
        rho = jc.paint(snaps.positions[-1], domain)
        power = jc.power_spectrum(rho / rho.mean() - 1.0, domain).power
        return state.positions, snaps.positions[-1], rho, power

    return run(jax.random.key(7))


def as_numpy(results):
    import numpy as np

    return [np.asarray(jnp.asarray(r)) for r in results]
