"""Issue 11: the linear growth of the default force configuration, over two box sizes.

The goal: in the near-linear regime, with one particle per cell, 10 steps from a = 0.1 and float32,
the power of the evolved field grows as `D1^2` (from the cosmology module, itself validated against
pyccl) within 1% for k <= k_Nyq / 4 of the particle grid and within 3% up to k_Nyq / 2.

Measurement: one Planck realisation at 1% of its amplitude (at 10% the evolution itself is not
linear enough: the nonlinear damping of the propagator already costs ~1% at k_Nyq / 4 and ~3% at
k_Nyq / 2 in the 256 Mpc/h box), 2LPT at a = 0.1, `nbody` to a = 1; both states are painted (CIC)
on the particle grid and the growth of each k bin is the cross spectrum with the initial field over
the initial power, `T(k) = P_01 / P_00`: the same modes are compared, so there is no cosmic variance
and the painting window cancels. `T^2` is compared with `(D1(1) / D1(0.1))^2`.

`benchmarks/linear_growth.py` draws the same curves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jpm_core as jc
from jpm_core import Cosmology, growth_factor, linear_power

COSMO = Cosmology()
N = 32
A_INIT = 0.1
STEPS = 10
AMPLITUDE = 0.01
BOXES = [256.0, 1000.0]


def lattice_tsc_multiplier(domain: jc.Domain) -> jax.Array:
    """Potential multiplier that turns the spectral Poisson kernel into the lattice-consistent one.

    For one particle per cell on a mesh of the particle spacing `H`, TSC paints a particle near
    its node `q` with the weights `3/4, 1/8, 1/8` per axis and a displacement `psi` with the
    derivative weights `-1/2, 0, 1/2`: the painted density is `-sum_a D_a psi_a` with
    `D_a = i sin(w_a) / H * prod_{b != a} s(w_b)`, `w = k H`, `s(w) = (3 + cos w) / 4`, and
    reading the force at the nodes multiplies it by `R = prod_b s(w_b)`. With the spectral
    gradient `i k`, the force of a linear growing mode (`psi` along `k`) is exact when the
    Laplacian is `L = -R sum_a k_a sin(w_a) / H * prod_{b != a} s(w_b)`; this returns `-k^2 / L`
    (0 where `L` vanishes: k = 0 and the axis Nyquist points, where the lattice paints nothing).
    """
    ks = jc.wavevectors(domain)
    cells = domain.cell_size
    s = [(3.0 + jnp.cos(k * c)) / 4.0 for k, c in zip(ks, cells, strict=True)]
    read = s[0] * s[1] * s[2]
    paint = sum(
        k * jnp.sin(k * c) / c * (s[(i + 1) % 3] * s[(i + 2) % 3])
        for i, (k, c) in enumerate(zip(ks, cells, strict=True))
    )
    denominator = read * paint
    k2 = ks[0] ** 2 + ks[1] ** 2 + ks[2] ** 2
    tiny = 1e-6 * jnp.maximum(k2, jnp.finfo(k2.dtype).tiny)
    safe = jnp.abs(denominator) > tiny
    return jnp.where(safe, k2 / jnp.where(safe, denominator, 1.0), 0.0)


def growth_deviation(box: float, **nbody_options) -> tuple[np.ndarray, np.ndarray, float]:
    """(k, T(k)^2 / (D1(1) / D1(a_init))^2 - 1, k_Nyq) of a 32^3 float32 run in `box`."""
    domain = jc.Domain(N, box)
    delta = AMPLITUDE * jc.linear_field(jax.random.key(0), domain, lambda k: linear_power(COSMO, k))
    state = jc.lpt(COSMO, delta, domain, A_INIT, order=2)
    run = jax.jit(
        lambda s: jc.nbody(COSMO, s, domain, [1.0], steps=STEPS, a_init=A_INIT, **nbody_options)
    )
    final = run(state).snapshots.positions[0]

    def density(positions):
        rho = jc.paint(positions, domain)
        return rho / rho.mean() - 1.0

    initial, evolved = density(state.positions), density(final)
    p00 = jc.power_spectrum(initial, domain)
    p01 = jc.power_spectrum(evolved, domain, initial)
    want = float(growth_factor(COSMO, 1.0) / growth_factor(COSMO, A_INIT)) ** 2
    deviation = (np.asarray(p01.power) / np.asarray(p00.power)) ** 2 / want - 1.0
    assert np.all(np.isfinite(deviation))
    return np.asarray(p00.k), deviation, np.pi * N / box


def assert_linear_growth(box: float, **nbody_options) -> None:
    k, deviation, k_nyq = growth_deviation(box, **nbody_options)
    quarter, half = k <= k_nyq / 4, k <= k_nyq / 2
    assert quarter.sum() >= 2
    worst_quarter = float(np.max(np.abs(deviation[quarter])))
    worst_half = float(np.max(np.abs(deviation[half])))
    assert worst_quarter < 0.01, f"k <= k_Nyq/4: max |T^2/D1^2 - 1| = {worst_quarter:.4f}"
    assert worst_half < 0.03, f"k <= k_Nyq/2: max |T^2/D1^2 - 1| = {worst_half:.4f}"


@pytest.mark.xfail(
    strict=True,
    reason="issue 11: the default ForceConfig (CIC, spectral Poisson kernel) grows 12-13% too "
    "little at k_Nyq/4 and 37-39% at k_Nyq/2; remove this marker when the default becomes "
    "the lattice-consistent TSC kernel",
)
@pytest.mark.parametrize("box", BOXES)
def test_default_configuration_follows_linear_growth(box):
    assert_linear_growth(box)


@pytest.mark.parametrize("box", BOXES)
def test_lattice_consistent_tsc_kernel_follows_linear_growth(box):
    # The configuration proposed as the default, built from the public hooks: TSC, spectral
    # gradient, and the lattice-consistent Poisson kernel as a potential multiplier.
    domain = jc.Domain(N, box)
    multiplier = lattice_tsc_multiplier(domain)
    assert_linear_growth(
        box,
        forces=jc.ForceConfig(kernel="spectral", laplace="spectral", scheme="tsc"),
        potential_filter=lambda k, a, params: params,
        filter_params=multiplier,
    )


def test_lattice_tsc_multiplier_is_the_ratio_of_the_lattice_and_spectral_responses():
    # Independent of the simulation: along an axis (k_y = k_z = 0), s = 1 for the other axes,
    # so L = -s(w) k sin(w) / H and the multiplier is k H / (s(w) sin(w)); 1 + O(w^2) at small k.
    domain = jc.Domain(16, 160.0)  # H = 10 Mpc/h
    multiplier = np.asarray(lattice_tsc_multiplier(domain))
    for j in (1, 3, 5, 7):
        w = 2 * np.pi * j / 16
        expected = w / ((3 + np.cos(w)) / 4 * np.sin(w))
        np.testing.assert_allclose(multiplier[j, 0, 0], expected, rtol=1e-5)
    assert multiplier[0, 0, 0] == 0.0
    assert multiplier[8, 0, 0] == 0.0  # the axis Nyquist point: the lattice paints nothing there
    np.testing.assert_allclose(multiplier[1, 0, 0], 1.0, atol=0.05)
