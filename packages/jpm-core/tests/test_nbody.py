"""Tests of the FastPM kick-drift-kick integrator `nbody` and its vector field."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jpm_core as jc
from jpm_core import Cosmology, efunc, growth_factor, growth_rate, linear_power

COSMO = Cosmology()
SMALL = jc.Domain(8, 100.0)


def _initial_state(key, order=2, a=0.2):
    delta = 0.5 * jax.random.normal(key, SMALL.mesh_shape)
    return jc.lpt(COSMO, delta, SMALL, a, order=order)


def _plane_wave(domain, amplitude):
    """A density contrast varying as cos(2 pi x / L) along x only."""
    x = np.arange(domain.mesh_shape[0])
    profile = amplitude * np.cos(2 * np.pi * x / domain.mesh_shape[0])
    return jnp.broadcast_to(jnp.asarray(profile)[:, None, None], domain.mesh_shape)


# ------------------------------------------------------------------------------- linear growth
@pytest.mark.x64
def test_linear_growth_is_reproduced_with_few_steps():
    # A tiny plane wave at the fundamental of a long, thin 1000 Mpc/h box (64 cells along x):
    # the PM run from a = 0.1 must grow the 1LPT displacement by D1(a) / D1(0.1) (computed by the
    # cosmology module), whatever the number of steps (FastPM factors are exact for linear
    # growth). With CIC and the spectral Laplacian the residual is ~0.2% (the lattice discreteness
    # of the PM force at k L = 2 pi); the default lattice-consistent forces remove it.
    domain = jc.Domain((64, 4, 4), (1000.0, 62.5, 62.5))
    delta = _plane_wave(domain, 1e-3)
    state = jc.lpt(COSMO, delta, domain, 0.1, order=1)
    q = jc.lagrangian_grid(domain)
    psi0 = state.positions - q

    def growth(snapshots, i):
        disp = snapshots.positions[i] - q
        return float(jnp.sum(disp * psi0) / jnp.sum(psi0 * psi0))

    def momentum_growth(snapshots, i):
        return float(jnp.sum(snapshots.momenta[i] * state.momenta) / jnp.sum(state.momenta**2))

    run = jax.jit(lambda s: jc.nbody(COSMO, s, domain, [0.4, 1.0], steps=3, a_init=0.1))
    coarse = run(state).snapshots
    d_init = growth_factor(COSMO, 0.1)
    g_p = lambda a: a**2 * efunc(COSMO, a) * growth_rate(COSMO, a) * growth_factor(COSMO, a)  # noqa: E731
    for i, a in enumerate((0.4, 1.0)):
        # 3 steps of 0.3 from a = 0.1: a plain leapfrog in a would be off by tens of percent
        want = float(growth_factor(COSMO, a) / d_init)
        assert abs(growth(coarse, i) / want - 1) < 5e-3
        want_p = float(g_p(a) / g_p(0.1))
        assert abs(momentum_growth(coarse, i) / want_p - 1) < 5e-3


@pytest.mark.slow
def test_large_scale_power_grows_as_growth_factor_squared():
    # 32^3 particles in a 1000 Mpc/h box with the Planck power spectrum, one particle per cell:
    # the lowest k bins are linear and their power grows as D1(a)^2 (same realisation: no cosmic
    # variance). With the default forces (TSC, lattice-consistent Laplacian) within 1% at full
    # amplitude (`test_growth_defaults.py` covers all of k <= k_Nyq / 2 at 1% amplitude); with
    # CIC and the spectral Laplacian the lattice's force deficit, about (k cell)^2 / 6, costs
    # ~1.5-2% in the first bin and ~5-6% in the second at a = 0.5-1.
    domain = jc.Domain(32, 1000.0)
    delta = jc.linear_field(jax.random.key(0), domain, lambda k: linear_power(COSMO, k))
    state = jc.lpt(COSMO, delta, domain, 0.1, order=2)
    snaps = jax.jit(lambda s: jc.nbody(COSMO, s, domain, [0.5, 1.0], steps=9, a_init=0.1))(state)
    snaps = snaps.snapshots

    def low_k_power(positions):
        rho = jc.paint(positions, domain)
        return np.asarray(jc.power_spectrum(rho / rho.mean() - 1.0, domain).power[:2])

    p_init = low_k_power(state.positions)
    for i, a in enumerate((0.5, 1.0)):
        ratio = low_k_power(snaps.positions[i]) / p_init
        want = float(growth_factor(COSMO, a) / growth_factor(COSMO, 0.1)) ** 2
        np.testing.assert_array_less(np.abs(ratio / want - 1), 0.01)


@pytest.mark.x64
def test_large_scale_power_grows_as_growth_factor_squared_on_a_finer_force_mesh():
    # The 1% criterion. 64^3 particles in 1000 Mpc/h with 2LPT at a = 0.1, forces on a
    # 128^3 mesh (FastPM's boost factor 2) with the finite-difference kernels, 9 steps: the power
    # of the three lowest k bins (k < 0.023 h/Mpc) grows as D1(a)^2 within 1% (measured:
    # +0.07/+0.16/+0.33% at a = 1). Same realisation, so no cosmic variance; both spectra are
    # painted on the particle grid, so the CIC window cancels in the ratio.
    particles = jc.Domain(64, 1000.0)
    mesh = jc.Domain(128, 1000.0)
    delta = jc.linear_field(jax.random.key(0), particles, lambda k: linear_power(COSMO, k))
    state = jc.lpt(COSMO, delta, particles, 0.1, order=2)
    fine = jc.rescale_state(state, particles, mesh)
    run = jax.jit(
        lambda s: jc.nbody(
            COSMO,
            s,
            mesh,
            [0.5, 1.0],
            steps=9,
            a_init=0.1,
            forces=jc.ForceConfig(kernel="finite_difference", laplace="finite_difference"),
        )
    )
    snaps = run(fine).snapshots

    def low_k_power(positions):
        rho = jc.paint(positions, particles)
        return np.asarray(jc.power_spectrum(rho / rho.mean() - 1.0, particles).power[:3])

    p_init = low_k_power(state.positions)
    for i, a in enumerate((0.5, 1.0)):
        back = jc.rescale_state(
            jc.ParticleState(snaps.positions[i], snaps.momenta[i], snaps.a[i]), mesh, particles
        )
        ratio = low_k_power(back.positions) / p_init
        want = float(growth_factor(COSMO, a) / growth_factor(COSMO, 0.1)) ** 2
        np.testing.assert_array_less(np.abs(ratio / want - 1), 0.01)


@pytest.mark.x64
@pytest.mark.parametrize("boost", [2, 3])
def test_plane_wave_growth_on_a_finer_force_mesh(boost):
    # The fundamental plane wave of the growth test above, particles on the coarse lattice and
    # forces on a mesh `boost` times finer with the finite-difference kernels: the growth is
    # within 0.5% of D1 (CIC window deficit and FD error shrink as boost^-2).
    particles = jc.Domain((64, 4, 4), (1000.0, 62.5, 62.5))
    mesh = jc.Domain((64 * boost, 4 * boost, 4 * boost), particles.box_size)
    state = jc.lpt(COSMO, _plane_wave(particles, 1e-3), particles, 0.1, order=1)
    q = jc.lagrangian_grid(particles)
    psi0 = state.positions - q
    forces = jc.ForceConfig(kernel="finite_difference", laplace="finite_difference")
    fine = jc.rescale_state(state, particles, mesh)
    final = jc.nbody(COSMO, fine, mesh, [1.0], steps=3, forces=forces).snapshots
    back = jc.rescale_state(
        jc.ParticleState(final.positions[0], final.momenta[0], final.a[0]), mesh, particles
    )
    growth = float(jnp.sum((back.positions - q) * psi0) / jnp.sum(psi0 * psi0))
    want = float(growth_factor(COSMO, 1.0) / growth_factor(COSMO, 0.1))
    assert abs(growth / want - 1) < 5e-3


@pytest.mark.x64
def test_spectral_kernel_on_a_finer_force_mesh_aliases_the_lattice():
    # the measurement behind nbody's warning: with the spectral gradient, the fundamental plane
    # wave of a lattice on a 2x finer mesh grows about 15% too little (FD kernels: < 0.5%, above)
    particles = jc.Domain((64, 4, 4), (1000.0, 62.5, 62.5))
    mesh = jc.Domain((128, 8, 8), particles.box_size)
    state = jc.lpt(COSMO, _plane_wave(particles, 1e-3), particles, 0.1, order=1)
    q = jc.lagrangian_grid(particles)
    psi0 = state.positions - q
    spectral = jc.ForceConfig(kernel="spectral", laplace="spectral", scheme="cic")
    with pytest.warns(UserWarning, match="alias"):
        final = jc.nbody(
            COSMO, jc.rescale_state(state, particles, mesh), mesh, [1.0], steps=3, forces=spectral
        )
    back = jc.rescale_state(jax.tree.map(lambda v: v[0], final.snapshots), mesh, particles)
    growth = float(jnp.sum((back.positions - q) * psi0) / jnp.sum(psi0 * psi0))
    want = float(growth_factor(COSMO, 1.0) / growth_factor(COSMO, 0.1))
    assert -0.2 < growth / want - 1 < -0.1


def test_spectral_kernel_on_a_finer_force_mesh_warns():
    particles = jc.Domain(4, 100.0)
    mesh = jc.Domain(8, 100.0)
    state = jc.rescale_state(
        jc.lpt(COSMO, jnp.zeros(particles.mesh_shape), particles, 0.5, order=1), particles, mesh
    )
    spectral = jc.ForceConfig(kernel="spectral", laplace="spectral", scheme="cic")
    with pytest.warns(UserWarning, match="finite_difference"):
        jc.nbody(COSMO, state, mesh, [1.0], steps=1, forces=spectral)
    # the default lattice Laplacian assumes one particle per cell: refused on a finer mesh
    with pytest.raises(ValueError, match=r"lattice.*finite_difference"):
        jc.nbody(COSMO, state, mesh, [1.0], steps=1)
    with pytest.raises(ValueError, match="does not divide"):
        jc.nbody(COSMO, state, jc.Domain(10, 100.0), [1.0], steps=1)


def test_rescale_state_round_trip_and_errors():
    coarse = jc.Domain((4, 8, 2), (100.0, 100.0, 50.0))
    fine = jc.Domain((8, 16, 8), (100.0, 100.0, 50.0))
    x = jax.random.uniform(jax.random.key(1), (*coarse.mesh_shape, 3))
    state = jc.ParticleState(x, 2 * x, jnp.asarray(0.5))
    out = jc.rescale_state(state, coarse, fine)
    np.testing.assert_allclose(out.positions, x * jnp.asarray([[[[2.0, 2.0, 4.0]]]]), rtol=1e-6)
    np.testing.assert_allclose(out.momenta, 2 * x * jnp.asarray([[[[2.0, 2.0, 4.0]]]]), rtol=1e-6)
    back = jc.rescale_state(out, fine, coarse)
    np.testing.assert_allclose(back.positions, x, rtol=1e-6)
    with pytest.raises(ValueError, match="same box"):
        jc.rescale_state(state, coarse, jc.Domain(8, 100.0))
    with pytest.raises(TypeError, match="Domain"):
        jc.rescale_state(state, coarse, (8, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        jc.rescale_state(jc.ParticleState(x, x[..., :2], 0.5), coarse, fine)


# ----------------------------------------------------------------------------------- hooks
@pytest.mark.x64
def test_observer_sees_contiguous_intervals_and_end_states():
    domain = SMALL
    state = _initial_state(jax.random.key(1))
    n_steps = 8

    def observer(s, a_start, a_end, carry):
        i, starts, ends, state_a, first = carry
        starts = starts.at[i].set(a_start)
        ends = ends.at[i].set(a_end)
        state_a = state_a.at[i].set(s.a)
        first = first.at[i].set(s.positions[0, 0, 0])
        return i + 1, starts, ends, state_a, first

    zeros = jnp.zeros(n_steps)
    init = (jnp.asarray(0), zeros, zeros, zeros, jnp.zeros((n_steps, 3)))
    result = jax.jit(
        lambda s: jc.nbody(
            COSMO,
            s,
            domain,
            [0.6, 1.0],
            steps=n_steps,
            a_init=0.2,
            observer=observer,
            observer_init=init,
        )
    )(state)
    count, starts, ends, state_a, first = result.observer_carry
    assert int(count) == n_steps
    np.testing.assert_allclose(starts, np.linspace(0.2, 1.0, n_steps + 1)[:-1], rtol=1e-6)
    np.testing.assert_allclose(ends, np.linspace(0.2, 1.0, n_steps + 1)[1:], rtol=1e-6)
    np.testing.assert_array_equal(starts[1:], ends[:-1])
    np.testing.assert_array_equal(state_a, ends)
    # the observed state is the end-of-step state: it matches the snapshots at a = 0.6 and 1.0
    np.testing.assert_array_equal(first[3], result.snapshots.positions[0, 0, 0, 0])
    np.testing.assert_array_equal(first[7], result.snapshots.positions[1, 0, 0, 0])
    np.testing.assert_allclose(result.snapshots.a, [0.6, 1.0])


@pytest.mark.x64
@pytest.mark.slow
def test_traced_and_fixed_cosmology_give_the_same_run():
    # a concrete cosmology is evaluated at trace time, a traced one inside the program
    delta = 0.5 * jax.random.normal(jax.random.key(14), SMALL.mesh_shape)

    def run(cosmo):
        state = jc.lpt(cosmo, delta, SMALL, 0.2, order=2)
        return jc.nbody(cosmo, state, SMALL, 1.0, steps=2).snapshots

    traced = jax.jit(run)(COSMO)
    fixed = jax.jit(lambda: run(COSMO))()
    np.testing.assert_allclose(traced.positions, fixed.positions, rtol=0, atol=1e-12)
    np.testing.assert_allclose(traced.momenta, fixed.momenta, rtol=0, atol=1e-12)


@pytest.mark.x64
def test_zero_potential_filter_drifts_at_constant_momentum():
    # Without gravity p is constant and x moves by p times the sum of the FastPM drift factors
    # (D1(a1) - D1(a0)) / G_p(ah), G_p = a^2 E f1 D1; that sum approximates int da / (a^3 E)
    # (to a few % with 10 steps from a = 0.1, where da / a is large).
    domain = SMALL
    state = _initial_state(jax.random.key(2), a=0.1)
    result = jax.jit(
        lambda s: jc.nbody(
            COSMO,
            s,
            domain,
            1.0,
            steps=10,
            a_init=0.1,
            potential_filter=lambda k, a, params: jnp.zeros_like(k),
        )
    )(state)
    np.testing.assert_array_equal(result.snapshots.momenta[0], state.momenta)
    moved = result.snapshots.positions[0] - state.positions
    grid = np.linspace(0.1, 1.0, 11)
    mid = 0.5 * (grid[1:] + grid[:-1])
    g_p = mid**2 * efunc(COSMO, mid) * growth_rate(COSMO, mid) * growth_factor(COSMO, mid)
    drift = float(jnp.sum(jnp.diff(growth_factor(COSMO, grid)) / g_p))
    np.testing.assert_allclose(moved, drift * state.momenta, rtol=0, atol=1e-12)
    a = np.linspace(0.1, 1.0, 20001)
    integrand = np.asarray(1.0 / (a**3 * efunc(COSMO, a)))
    exact = np.sum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(a))
    np.testing.assert_allclose(drift, exact, rtol=0.05)


# ------------------------------------------------------------------------------- gradients
def _pm_loss(n_steps, gradient, scheme="tsc", cosmo=COSMO):
    """A scalar of the snapshots at a = 0.6 and 1.0 of a run from a = 0.2 (n_steps even), with a
    potential filter `1 + b a exp(-(k / 0.2)^2)` of parameter `b`."""
    weights = jax.random.normal(jax.random.key(5), (*SMALL.mesh_shape, 3))

    def loss(positions, momenta, b):
        def potential_filter(k, a, b):
            return 1.0 + b * a * jnp.exp(-((k / 0.2) ** 2))

        state = jc.ParticleState(positions, momenta, 0.2)
        snaps = jc.nbody(
            cosmo,
            state,
            SMALL,
            [0.6, 1.0],
            steps=n_steps,
            potential_filter=potential_filter,
            filter_params=b,
            gradient=gradient,
            forces=jc.ForceConfig(laplace="spectral", scheme=scheme),
        ).snapshots
        return jnp.sum(weights * snaps.positions[1]) + jnp.sum(weights * snaps.momenta[0] ** 2)

    return loss


@pytest.mark.x64
def test_nbody_gradients_wrt_the_initial_state_and_a_filter_parameter():
    # finite differences against forward and reverse mode, w.r.t. the initial positions and
    # momenta and the parameter b of the potential filter. TSC keeps the trajectory continuously
    # differentiable (CIC has kinks at mesh nodes, where finite differences are not derivatives).
    state = _initial_state(jax.random.key(6))
    args = (state.positions, state.momenta, 0.3)
    loss = jax.jit(_pm_loss(2, jc.Checkpointed()))
    check_grads(loss, args, order=1, modes=("fwd", "rev"))
    # the filter parameter matters (its derivative is not trivially zero)
    assert abs(float(loss(*args[:2], 0.8) - loss(*args))) > 1e-3


@pytest.mark.x64
@pytest.mark.slow
def test_nbody_gradients_wrt_cosmology():
    state = _initial_state(jax.random.key(7))

    @jax.jit
    def f(omega_c, w0):
        cosmo = Cosmology(Omega_c=omega_c, w0=w0)
        return _pm_loss(2, jc.Checkpointed(), cosmo=cosmo)(state.positions, state.momenta, 0.3)

    check_grads(f, (0.26, -0.9), order=1, modes=("fwd", "rev"), eps=1e-5)


@pytest.mark.slow
@pytest.mark.x64
def test_gradient_through_lpt_and_nbody_wrt_the_linear_field():
    delta = 0.5 * jax.random.normal(jax.random.key(11), SMALL.mesh_shape)
    loss = _pm_loss(2, jc.Checkpointed())

    @jax.jit
    def f(delta):
        state = jc.lpt(COSMO, delta, SMALL, 0.2, order=2)
        return loss(state.positions, state.momenta, 0.3)

    check_grads(f, (delta,), order=1, modes=("fwd", "rev"))


def _checkpoint_vs_plain(x64):
    with jax.enable_x64(x64):
        state = _initial_state(jax.random.key(8))
        args = (state.positions, state.momenta, 0.3)
        grads = [
            jax.jit(jax.grad(_pm_loss(4, mode, "cic"), argnums=(0, 1, 2)))(*args)
            for mode in (jc.Checkpointed(), jc.Direct())
        ]
        errors = [
            float(jnp.abs(with_ckpt - plain).max() / jnp.abs(plain).max())
            for with_ckpt, plain in zip(*grads, strict=True)
        ]
        return max(errors)


def test_checkpointed_gradient_equals_plain_gradient_float64():
    assert _checkpoint_vs_plain(True) < 1e-10


@pytest.mark.slow
def test_checkpointed_gradient_equals_plain_gradient_float32():
    assert _checkpoint_vs_plain(False) < 1e-3


@pytest.mark.slow
def test_checkpointed_gradient_memory_does_not_grow_with_intermediates():
    # XLA's temporary buffers of the jitted gradient: with checkpointing, 30 more steps cost only
    # the carried (positions, momenta, force) per step; without it, all the step's intermediates.
    domain = jc.Domain(16, 200.0)
    delta = jc.linear_field(jax.random.key(9), domain, lambda k: linear_power(COSMO, k))
    state_bytes = domain.n_cells * 3 * 4

    def temp_bytes(n_steps, gradient):
        def loss(d):
            state = jc.lpt(COSMO, d, domain, 0.1, order=2)
            snaps = jc.nbody(COSMO, state, domain, 1.0, steps=n_steps, gradient=gradient)
            return jnp.sum(snaps.snapshots.positions**2)

        compiled = jax.jit(jax.grad(loss)).lower(delta).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    growth = (temp_bytes(40, jc.Checkpointed()) - temp_bytes(10, jc.Checkpointed())) / 30
    assert growth <= 3.5 * state_bytes
    plain_growth = (temp_bytes(40, jc.Direct()) - temp_bytes(10, jc.Direct())) / 30
    assert plain_growth > 5 * growth


# ---------------------------------------------------------------------------- vector field
@pytest.mark.x64
def test_vector_field_matches_the_linear_trajectory():
    # At a 1LPT state of a tiny plane wave, dx/da = p / (a^3 E) and dp/da equals the derivative
    # of the linear-theory momentum (finite differences of lpt), up to the PM discreteness.
    domain = jc.Domain((64, 4, 4), (1000.0, 62.5, 62.5))
    delta = _plane_wave(domain, 1e-3)
    a, h = 0.5, 1e-4
    state = jc.lpt(COSMO, delta, domain, a, order=1)
    vf = jc.nbody_vector_field(COSMO, domain)
    dx, dp = vf(a, (state.positions, state.momenta), None)
    p_plus = jc.lpt(COSMO, delta, domain, a + h, order=1).momenta
    p_minus = jc.lpt(COSMO, delta, domain, a - h, order=1).momenta
    x_plus = jc.lpt(COSMO, delta, domain, a + h, order=1).positions
    x_minus = jc.lpt(COSMO, delta, domain, a - h, order=1).positions
    dp_fd = (p_plus - p_minus) / (2 * h)
    dx_fd = (x_plus - x_minus) / (2 * h)
    np.testing.assert_allclose(dx, dx_fd, rtol=0, atol=1e-6 * np.abs(dx_fd).max())
    ratio = float(jnp.sum(dp * dp_fd) / jnp.sum(dp_fd**2))
    assert abs(ratio - 1) < 5e-3


# ----------------------------------------------------------------------------------- errors
@pytest.mark.x64
def test_eager_errors():
    domain = SMALL
    state = _initial_state(jax.random.key(13), a=0.5)
    run = lambda *args, **kw: jc.nbody(COSMO, *args, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="strictly increasing"):
        run(state, domain, [0.8, 0.7], steps=3)
    with pytest.raises(ValueError, match="strictly increasing"):
        run(state, domain, [0.75, 0.75], steps=2)
    with pytest.raises(ValueError, match=r"must lie in \(0, 1.5\]"):
        run(state, domain, [1.0, 2.0], steps=3)
    with pytest.raises(ValueError, match=r"must lie in \(0, 1.5\]"):
        run(state, domain, 1.0, steps=[0.5, 0.0, 1.0])
    with pytest.raises(ValueError, match=">= 1"):
        run(state, domain, 1.0, steps=0)
    with pytest.raises(TypeError, match="steps"):
        run(state, domain, 1.0, steps=True)
    with pytest.raises(ValueError, match="not a step boundary"):
        run(state, domain, [0.8, 1.0], steps=3)
    with pytest.raises(ValueError, match=r"state\.a"):
        run(state, domain, 1.0, steps=2, a_init=0.4)
    with pytest.raises(ValueError, match="after the initial"):
        run(state, domain, 0.5, steps=2)
    with pytest.raises(ValueError, match="start before"):
        run(state, domain, [0.4, 1.0], steps=[0.5, 1.0])
    with pytest.raises(ValueError, match="mesh_shape"):
        run(state, jc.Domain(4, 100.0), 1.0, steps=2)
    bad = jc.ParticleState(state.positions, state.momenta[..., :2], state.a)
    with pytest.raises(ValueError, match="momenta"):
        run(bad, domain, 1.0, steps=2)
    with pytest.raises(TypeError, match="ParticleState"):
        run((state.positions, state.momenta), domain, 1.0, steps=2)

    @jax.jit
    def traced(s):
        return jc.nbody(COSMO, s, domain, 1.0, steps=2)

    with pytest.raises(ValueError, match="a_init"):
        traced(state)


@pytest.mark.x64
def test_snapshot_at_the_start_particle_lists_and_progress(capsys):
    domain = SMALL
    state = _initial_state(jax.random.key(10), a=0.5)
    flat = jc.ParticleState(state.positions.reshape(-1, 3), state.momenta.reshape(-1, 3), state.a)
    grid_run = jc.nbody(COSMO, state, domain, [0.5, 1.0], steps=[0.5, 0.75, 1.0])
    flat_run = jc.nbody(COSMO, flat, domain, [0.5, 1.0], steps=2, progress=True)
    jax.block_until_ready(flat_run)
    jax.effects_barrier()
    err = capsys.readouterr().err
    assert re.search(r"nbody\b.*2/2", err), err  # the rich bar: step i/n
    np.testing.assert_array_equal(grid_run.snapshots.positions[0], state.positions)
    np.testing.assert_allclose(
        flat_run.snapshots.positions.reshape(grid_run.snapshots.positions.shape),
        grid_run.snapshots.positions,
        rtol=1e-6,
    )
