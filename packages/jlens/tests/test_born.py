"""Born convergence from a running `jpm_core.nbody` (`BornLightcone`).

References, none from the code under test: uniformly random particles (no structure) must give
a zero-mean map whose pixel variance is the analytic shot noise of CIC-weighted Poisson points,
`(4/9) (V_p / dOmega) int q^2 / chi^2 dchi`; the single-source-plane efficiency against
`lensing_efficiency` of a narrow n(z) (an independent path); the observer's gradient under
jpm-core's default adjoint against plain autodiff (`Direct()`)."""

from __future__ import annotations

import dataclasses
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlens
import jpm_core as jc

COSMO = jc.Cosmology()
N_MAPS = int(os.environ.get("JLENS_BORN_MAPS", "100"))


def _sweep(cone, state, a_edges):
    """The observer called as `nbody` calls it, on a fixed state (no dynamics)."""
    observer = jax.jit(cone.observer)
    carry = cone.init()
    for a0, a1 in itertools.pairwise(a_edges):
        carry = observer(state, jnp.float32(a0), jnp.float32(a1), carry, state.positions)
    return cone.convergence(carry)


def _zeldovich_sweep(cone, delta, domain, a_edges, cosmo=COSMO):
    """The observer fed 1LPT states at both ends of every step (`x = q + D(a) psi`: a particle
    moves on a straight line, linearly in D, as in a kick-drift-kick step)."""
    pairs = jnp.stack([a_edges[:-1], a_edges[1:]], axis=-1)

    def step(carry, interval):
        start = jc.lpt(cosmo, delta, domain, interval[0], order=1)
        end = jc.lpt(cosmo, delta, domain, interval[1], order=1)
        return cone.observer(end, interval[0], interval[1], carry, start.positions), None

    carry, _ = jax.lax.scan(step, cone.init(), pairs)
    return cone.convergence(carry)


@pytest.mark.parametrize("method", ["particles", "mesh"])
def test_random_particles_give_zero_mean_and_the_shot_noise_variance(method):
    mesh, box = (16, 16, 128), (240.0, 240.0, 2400.0)
    domain = jc.Domain(mesh, box)
    geometry = jlens.FlatSky(16, field_deg=5.0)
    cone = jlens.BornLightcone(
        COSMO, domain, geometry, sources=[0.5, 1.0], a_init=0.5, method=method
    )
    n = int(np.prod(mesh))
    chi, q = (np.asarray(t, np.float64) for t in cone._table(jnp.float32))
    far = chi > 0
    v_p, d_omega = float(np.prod(box)) / n, geometry.pixel_rad**2
    predicted_std = np.sqrt(
        4.0 / 9.0 * v_p / d_omega * np.trapezoid(q[:, far] ** 2 / chi[far] ** 2, chi[far], axis=-1)
    )
    means, stds = [], []
    for seed in range(6):
        x = (
            jax.random.uniform(jax.random.key(seed), (n, 3))
            * jnp.asarray(mesh, jnp.float32)[None, :]
        )
        state = jc.ParticleState(x, jnp.zeros_like(x), jnp.float32(0.5))
        kappa = np.asarray(_sweep(cone, state, np.linspace(0.5, 1.0, 21)))
        assert kappa.shape == (2, 16, 16)
        means.append(kappa.mean(axis=(1, 2)))
        stds.append(kappa.std(axis=(1, 2)))
    means, stds = np.asarray(means), np.asarray(stds)
    # zero mean: the analytic mean subtraction matches the particles' weights (6 x 256 pixels)
    error_of_mean = predicted_std / np.sqrt(6 * 256)
    assert np.all(np.abs(means.mean(0)) < 4 * error_of_mean), (means.mean(0), error_of_mean)
    assert np.all(np.abs(means.mean(0)) < 0.05 * np.asarray(cone.mean()))
    if method == "particles":
        # the amplitude of the weights: the shot-noise variance (about 4% sampling error per seed)
        np.testing.assert_allclose(stds.mean(0), predicted_std, rtol=0.05)
    else:  # the mesh smooths the shot noise over a cell: well below the particles' pixel noise
        assert np.all(stds.mean(0) < predicted_std)


def test_source_plane_efficiency_matches_a_narrow_redshift_distribution():
    domain = jc.Domain((8, 8, 64), (240.0, 240.0, 2400.0))
    geometry = jlens.FlatSky(8, field_deg=5.0)
    plane = jlens.BornLightcone(COSMO, domain, geometry, sources=1.0, a_init=0.4)
    nz = jlens.Tabulated(z=(0.99, 1.0, 1.01), values=jnp.asarray([0.0, 1.0, 0.0]))
    narrow = jlens.BornLightcone(COSMO, domain, geometry, sources=nz, a_init=0.4)
    _chi, q_plane = plane._table(jnp.float32)
    _, q_nz = narrow._table(jnp.float32)
    scale = float(jnp.max(q_plane))
    np.testing.assert_allclose(q_nz, q_plane, atol=1e-2 * scale)
    np.testing.assert_allclose(narrow.mean(), plane.mean(), rtol=1e-2)


@pytest.mark.parametrize("method", ["particles", "mesh"])
def test_crossing_interpolation_converges_faster_than_end_of_step_positions(method):
    """With few steps, particles placed where the cone crossed them give a map far closer to
    the many-step limit than particles taken at the end of the step (1LPT motion, whose path in
    a step is the straight line the interpolation assumes)."""
    domain = jc.Domain((16, 16, 96), (160.0, 160.0, 960.0))
    geometry = jlens.FlatSky(16, field_deg=6.0)
    delta = 3.0 * jc.linear_field(
        jax.random.key(3), domain, lambda k: jc.linear_power(COSMO, k)
    )  # large displacements (3x linear): the end-of-step error is visible at 6 steps

    def kappa(crossing, n_steps):
        cone = jlens.BornLightcone(
            COSMO, domain, geometry, sources=0.3, a_init=0.75, method=method, crossing=crossing
        )
        edges = jnp.asarray(np.linspace(0.75, 1.0, n_steps + 1), jnp.float32)
        return np.asarray(jax.jit(lambda d: _zeldovich_sweep(cone, d, domain, edges))(delta))

    reference = kappa("interpolate", 96)
    scale = np.std(reference)
    err = {c: np.std(kappa(c, 6) - reference) / scale for c in ("interpolate", "end")}
    assert err["end"] > 0.02, err  # the test can see the difference
    assert err["interpolate"] < 0.25 * err["end"], err


@pytest.mark.parametrize(
    ("crossing", "replicated"),
    [
        pytest.param("interpolate", True, marks=pytest.mark.slow),
        ("interpolate", False),
        pytest.param("end", False, marks=pytest.mark.slow),
    ],
)
def test_map_is_differentiated_exactly_by_the_default_adjoint(crossing, replicated):
    """`carry + g(state)` is affine in the carry: jpm-core's reverse-time adjoint gives the
    gradient of plain autodiff through the run (with crossing interpolation the observer also
    reads the start of each step, which the adjoint reconstructs; with replication it picks the
    step's replicas with a `lax.cond`)."""
    if replicated:  # 3 replicas of a 128 Mpc/h cube, 5 steps of < 70 Mpc/h
        domain, a_init, source, steps = jc.Domain(16, 128.0), 0.9, 0.1, 5
        key = jax.random.key(2)
    else:
        domain, a_init, source, steps = jc.Domain((8, 8, 16), (64.0, 64.0, 768.0)), 0.8, 0.2, 3
        key = None
    geometry = jlens.FlatSky(8, field_deg=4.0)
    noise = jc.white_noise(jax.random.key(0), domain)

    def loss(omega_c, gradient):
        cosmo = dataclasses.replace(COSMO, Omega_c=omega_c)
        delta = jc.linear_field_from_noise(noise, domain, lambda k: jc.linear_power(cosmo, k))
        state = jc.lpt(cosmo, delta, domain, a_init)
        cone = jlens.BornLightcone(
            cosmo, domain, geometry, sources=source, a_init=a_init, crossing=crossing,
            replication_key=key,
        )  # fmt: skip
        run = jc.nbody(
            cosmo, state, domain, [1.0], steps=steps, gradient=gradient, **cone.nbody_kwargs()
        )
        return jnp.sum(cone.convergence(run.observer_carry) ** 2)

    omega_c = jnp.float32(0.25)
    grad = jax.jit(jax.grad(loss), static_argnums=1)
    adjoint = grad(omega_c, jc.Adjoint())
    direct = grad(omega_c, jc.Direct())
    assert np.isfinite(adjoint)
    assert abs(float(adjoint)) > 0
    np.testing.assert_allclose(adjoint, direct, rtol=2e-3)


def test_a_nan_traced_cosmology_gives_a_nan_map_and_gradient():
    domain = jc.Domain((8, 8, 16), (64.0, 64.0, 768.0))
    geometry = jlens.FlatSky(8, field_deg=4.0)
    noise = jc.white_noise(jax.random.key(0), domain)

    def loss(omega_c):
        cosmo = dataclasses.replace(COSMO, Omega_c=omega_c)
        delta = jc.linear_field_from_noise(noise, domain, lambda k: jc.linear_power(cosmo, k))
        state = jc.lpt(cosmo, delta, domain, 0.8)
        cone = jlens.BornLightcone(cosmo, domain, geometry, sources=0.2, a_init=0.8)
        run = jc.nbody(cosmo, state, domain, [1.0], steps=3, **cone.nbody_kwargs())
        return cone.convergence(run.observer_carry)

    def value_and_statistic(omega_c):
        kappa = loss(omega_c)
        return jnp.sum(kappa**2), kappa

    (_, kappa), grad = jax.jit(jax.value_and_grad(value_and_statistic, has_aux=True))(
        jnp.float32(jnp.nan)
    )
    assert np.all(np.isnan(kappa))
    assert np.isnan(grad)


def test_interpolated_crossing_without_the_start_positions_is_a_clear_error():
    domain = jc.Domain((8, 8, 16), (64.0, 64.0, 768.0))
    cone = jlens.BornLightcone(COSMO, domain, jlens.FlatSky(8, field_deg=4.0), 0.2, a_init=0.8)
    state = jc.lpt(COSMO, jnp.zeros(domain.mesh_shape), domain, 0.8)
    with pytest.raises(TypeError, match="observer_start_positions=True"):
        jc.nbody(COSMO, state, domain, [1.0], steps=2, observer=cone.observer,
                 observer_init=cone.init())  # fmt: skip
    with pytest.raises(ValueError, match="crossing"):
        jlens.BornLightcone(COSMO, domain, jlens.FlatSky(8, field_deg=4.0), 0.2, 0.8,
                            crossing="nearest")  # fmt: skip


@pytest.mark.parametrize("method", ["particles", "mesh"])
def test_replicated_box_equals_the_elongated_box_tiled_with_the_same_transforms(method):
    """A cube replicated along the line of sight is the elongated box made of the cube's
    particles permuted, shifted and stacked along z as the replicas are: the maps agree to
    round-off (moving 1LPT particles, crossing interpolation; shells and particles crossing
    replica boundaries). The shifts are rounded to whole cells so that CIC painting, which is
    not invariant under sub-cell shifts, paints the same mesh."""
    n, side, copies = 16, 200.0, 6
    cube = jc.Domain(n, side)
    tiled = jc.Domain((n, n, copies * n), (side, side, copies * side))
    geometry = jlens.FlatSky(16, field_deg=5.0)
    kwargs = {"sources": 0.35, "a_init": 0.72, "method": method}
    replicated = jlens.BornLightcone(
        COSMO, cube, geometry, replication_key=jax.random.key(3), **kwargs
    )
    perms = np.asarray(replicated._perms)
    assert perms.shape[0] == copies  # chi(a_init) ~ 1056 Mpc/h: 6 boxes of 200
    assert len({tuple(p.ravel()) for p in perms}) > 1  # the permutations are exercised
    shifts = jnp.round(replicated._shifts / (side / n)) * (side / n)
    object.__setattr__(replicated, "_shifts", shifts)
    elongated = jlens.BornLightcone(COSMO, tiled, geometry, **kwargs)
    delta = 2.0 * jc.linear_field(jax.random.key(1), cube, lambda k: jc.linear_power(COSMO, k))
    edges = np.linspace(0.72, 1.0, 9)

    def tile(x):  # mesh units: replica r's copy at (P_r x + s_r) mod n, then + r n along z
        x = x.reshape(-1, 3)
        return jnp.concatenate(
            [
                jnp.mod(x @ jnp.asarray(perms[r]).T + shifts[r][None, :] * n / side, n)
                + jnp.asarray([0.0, 0.0, r * n])[None, :]
                for r in range(copies)
            ]
        )

    maps = {}
    for name, cone in (("replicated", replicated), ("elongated", elongated)):
        carry = cone.init()
        observer = jax.jit(cone.observer)
        for a0, a1 in itertools.pairwise(edges):
            start, end = (jc.lpt(COSMO, delta, cube, a, order=1).positions for a in (a0, a1))
            if cone is elongated:  # keep the step's true displacement across the wrap
                start, end = (
                    tile(start),
                    tile(start) + (tile(end) - tile(start) + n / 2) % n - n / 2,
                )
            state = jc.ParticleState(end, jnp.zeros_like(end), jnp.float32(a1))
            carry = observer(state, jnp.float32(a0), jnp.float32(a1), carry, start)
        maps[name] = np.asarray(cone.convergence(carry))
    scale = np.std(maps["elongated"])
    assert scale > 0
    # one particle more or less would move a pixel by ~5% of the rms: far above this bound
    np.testing.assert_allclose(maps["replicated"], maps["elongated"], atol=1e-3 * scale)


def test_random_replicas_keep_zero_mean_and_near_poisson_noise():
    # uniformly random particles in a replicated cube: zero mean, and a pixel noise near that of
    # independent Poisson points; the replicas repeat the same 4096 particles, so it is not
    # exactly that (measured 0.90-0.94 of it for two keys, 1.0-1.1 without the random transforms)
    n, side = 16, 240.0
    cube = jc.Domain(n, side)
    geometry = jlens.FlatSky(16, field_deg=5.0)
    cone = jlens.BornLightcone(
        COSMO, cube, geometry, sources=[0.5, 1.0], a_init=0.5, method="particles",
        replication_key=jax.random.key(7),
    )  # fmt: skip
    assert not np.allclose(cone._perms, np.eye(3)[None])
    chi, q = (np.asarray(t, np.float64) for t in cone._table(jnp.float32))
    far = chi > 0
    v_p, d_omega = side**3 / n**3, geometry.pixel_rad**2
    predicted_std = np.sqrt(
        4.0 / 9.0 * v_p / d_omega * np.trapezoid(q[:, far] ** 2 / chi[far] ** 2, chi[far], axis=-1)
    )
    means, stds = [], []
    for seed in range(6):
        x = jax.random.uniform(jax.random.key(seed), (n**3, 3)) * n
        state = jc.ParticleState(x, jnp.zeros_like(x), jnp.float32(0.5))
        kappa = np.asarray(_sweep(cone, state, np.linspace(0.5, 1.0, 41)))
        means.append(kappa.mean(axis=(1, 2)))
        stds.append(kappa.std(axis=(1, 2)))
    means, stds = np.asarray(means), np.asarray(stds)
    error_of_mean = predicted_std / np.sqrt(6 * 256)
    assert np.all(np.abs(means.mean(0)) < 4 * error_of_mean), (means.mean(0), error_of_mean)
    assert np.all(np.abs(stds.mean(0) / predicted_std - 1.0) < 0.15), stds.mean(0) / predicted_std


def test_bad_configurations_are_refused_before_compute():
    long_box = jc.Domain((8, 8, 64), (240.0, 240.0, 2400.0))
    geometry = jlens.FlatSky(8, field_deg=5.0)
    with pytest.raises(ValueError, match="beyond the light cone"):
        jlens.BornLightcone(COSMO, long_box, geometry, sources=1.0, a_init=0.6)
    with pytest.raises(ValueError, match="beyond the light cone"):
        jlens.BornLightcone(
            COSMO, long_box, geometry, sources=jlens.Smail(z0=1.0, alpha=0.5, beta=2.0, z_max=4.0),
            a_init=0.4,
        )  # fmt: skip
    with pytest.raises(ValueError, match="cubic box"):
        jlens.BornLightcone(
            COSMO, long_box, geometry, sources=1.0, a_init=0.4, replication_key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="elongated box"):
        jlens.BornLightcone(COSMO, jc.Domain(8, 240.0), geometry, sources=1.0, a_init=0.4)
    with pytest.raises(ValueError, match="field of view"):
        jlens.BornLightcone(
            COSMO, long_box, jlens.FlatSky(8, field_deg=10.0), sources=1.0, a_init=0.4
        )
    with pytest.raises(ValueError, match="source redshifts"):
        jlens.BornLightcone(COSMO, long_box, geometry, sources=[-1.0], a_init=0.4)
    with pytest.raises(TypeError, match="sources"):
        jlens.BornLightcone(COSMO, long_box, geometry, sources="z=1", a_init=0.4)
    with pytest.raises(ValueError, match="a_init"):
        jlens.BornLightcone(COSMO, long_box, geometry, sources=1.0, a_init=1.2)
    with pytest.raises(ValueError, match="method"):
        jlens.BornLightcone(COSMO, long_box, geometry, sources=1.0, a_init=0.4, method="rays")
    with pytest.raises(ValueError, match="nodes_per_step"):
        jlens.BornLightcone(COSMO, long_box, geometry, sources=1.0, a_init=0.4, nodes_per_step=0)
    with pytest.raises(TypeError, match="FlatSky"):
        jlens.BornLightcone(COSMO, long_box, (8, 5.0), sources=1.0, a_init=0.4)


@pytest.mark.slow
def test_1lpt_lightcone_matches_linear_limber_at_low_ell():
    """Acceptance (issue 14): the mean C_ell of Born maps of 1LPT lightcones (no PM forces: the
    particles at `x = q + D(a) psi` at every step) against linear Limber, within 5% over
    ell = 100-200 where the maps' statistical error allows (with the default 100 maps it is
    about 5%: the test then asks for agreement within 2.5 standard errors; set
    `JLENS_BORN_MAPS=400` for a 2.5% error). Configuration: 32 x 32 x 384 particles in
    200 x 200 x 2400 (Mpc/h)^3, source plane at z = 1, 60 steps uniform in a from a = 0.49,
    64^2 pixels over 4.8 deg, `N_MAPS` maps, `method="mesh"`."""
    cosmo = COSMO
    domain = jc.Domain((32, 32, 384), (200.0, 200.0, 2400.0))
    geometry = jlens.FlatSky(64, field_deg=4.8)
    cone = jlens.BornLightcone(cosmo, domain, geometry, sources=1.0, a_init=0.49)
    a_edges = jnp.asarray(np.linspace(0.49, 1.0, 61), jnp.float32)

    @jax.jit
    def one_map(key):
        delta = jc.linear_field(key, domain, lambda k: jc.linear_power(cosmo, k))
        return _zeldovich_sweep(cone, delta, domain, a_edges, cosmo)

    edges = np.array([100.0, 141.0, 200.0])
    spectra = []
    for seed in range(N_MAPS):
        ell, cl = jlens.map_power_spectrum(one_map(jax.random.key(seed)), geometry, edges)[:2]
        spectra.append(np.asarray(cl)[0, 0])
    spectra = np.asarray(spectra)
    nz = jlens.Tabulated(z=(0.995, 1.0, 1.005), values=jnp.asarray([0.0, 1.0, 0.0]))
    theory = np.asarray(jlens.angular_cl(cosmo, nz, jnp.asarray(ell), power="linear"))[0, 0]
    ratio = spectra.mean(0).sum() / theory.sum()
    error = np.sqrt(np.sum(spectra.var(0) / len(spectra))) / theory.sum()
    assert error < 0.07
    assert abs(ratio - 1.0) < max(0.05, 2.5 * error), (ratio, error)


def test_particles_method_on_a_device_grid_equals_one_device():
    """The observer on jpm-core's distributed run (8 fake CPU devices, device grid (2, 4), a
    replicated cube): the particles method gives the one-device map; the mesh method is refused
    there."""
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    geometry = jlens.FlatSky(16, field_deg=6.0)
    one = jc.Domain(16, 160.0)
    grid = jc.Domain(16, 160.0, device_grid=(2, 4), halo=4)
    noise = np.random.default_rng(5).normal(size=one.mesh_shape).astype(np.float32)
    kwargs = {"sources": 0.1, "a_init": 0.9, "replication_key": jax.random.key(1)}

    def kappa(domain):
        delta = jc.linear_field_from_noise(noise, domain, lambda k: jc.linear_power(COSMO, k))
        state = jc.lpt(COSMO, delta, domain, 0.9)
        cone = jlens.BornLightcone(COSMO, domain, geometry, method="particles", **kwargs)
        run = jc.nbody(COSMO, state, domain, [1.0], steps=4, **cone.nbody_kwargs())
        return np.asarray(cone.convergence(run.observer_carry))

    reference = kappa(one)
    assert np.std(reference) > 0
    np.testing.assert_allclose(kappa(grid), reference, atol=1e-4 * np.std(reference))
    with pytest.raises(ValueError, match="single-device"):
        jlens.BornLightcone(COSMO, grid, geometry, **kwargs)


def test_shear_is_the_padded_kaiser_squires_pair_of_the_convergence():
    domain = jc.Domain((8, 8, 16), (64.0, 64.0, 768.0))
    cone = jlens.BornLightcone(
        COSMO, domain, jlens.FlatSky(16, field_deg=4.0), sources=[0.2, 0.25], a_init=0.8
    )
    carry = cone.init() + 0.01 * jax.random.normal(jax.random.key(1), (2, 16, 16))
    kappa = cone.convergence(carry)
    gamma = cone.shear(carry)
    assert gamma.shape == (2, 2, 16, 16)
    np.testing.assert_allclose(gamma, jlens.kappa_to_shear(kappa, padding=8), atol=1e-7)
    periodic = cone.shear(carry, padding=0)
    np.testing.assert_allclose(periodic, jlens.kappa_to_shear(kappa), atol=1e-7)
    assert float(jnp.max(jnp.abs(periodic - gamma))) > 1e-4  # the padding does something
    # on the periodic map, Kaiser-Squires gives the convergence back (up to its mean)
    back = jlens.kaiser_squires(periodic)
    centred = kappa - kappa.mean(axis=(-2, -1), keepdims=True)
    np.testing.assert_allclose(back, centred, atol=2e-6)
    with pytest.raises(ValueError, match="padding"):
        cone.shear(carry, padding=-1)
