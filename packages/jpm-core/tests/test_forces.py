import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jpm_core import Domain, ForceConfig, pm_forces

DOMAIN = Domain((16, 12, 20), (32.0, 18.0, 50.0))  # anisotropic cells: 2, 1.5, 2.5 Mpc/h
TSC_FD = ForceConfig(kernel="finite_difference", laplace="spectral", scheme="tsc")


def _lattice(domain):
    grid = np.meshgrid(*[np.arange(n, dtype=float) for n in domain.mesh_shape], indexing="ij")
    return np.stack(grid, axis=-1)  # (nx, ny, nz, 3) particles on the nodes, mesh units


def _plane_wave_setup(domain, m, amp):
    k0 = np.array([2 * np.pi * mi / L for mi, L in zip(m, domain.box_size, strict=True)])
    pos = _lattice(domain)
    phys = pos * np.array(domain.cell_size)
    phase = phys @ k0
    weights = 1.0 + amp * np.cos(phase)  # CIC/TSC painting at nodes: delta = amp cos(k0.x)
    return k0, pos, weights, phase


@pytest.mark.x64
@pytest.mark.parametrize("kernel", ["spectral", "finite_difference"])
def test_plane_wave_force_is_analytic(kernel):
    # delta = A cos(k0.x) -> phi = -A cos(k0.x) / k0^2 -> F = -grad(phi) = -A k0 sin(k0.x) / k0^2
    # (physical units); in mesh units each component is divided by the cell size along its axis.
    # With the finite-difference gradient, k0_i in the derivative becomes (8 sin w - sin 2w)/(6 h).
    amp = 0.3
    k0, pos, weights, phase = _plane_wave_setup(DOMAIN, (2, -1, 3), amp)
    cells = np.array(DOMAIN.cell_size)
    if kernel == "spectral":
        k_grad = k0
    else:
        w = k0 * cells
        k_grad = (8 * np.sin(w) - np.sin(2 * w)) / (6 * cells)
    expected = -amp * np.sin(phase)[..., None] * (k_grad / (k0 @ k0) / cells)
    for scheme in ("cic", "tsc"):
        if scheme == "tsc":
            # TSC smooths the nodal density: painted delta = amp * prod_i (3/4 + cos(w_i)/4) cos,
            # and reading back smooths once more
            s = np.prod(0.75 + 0.25 * np.cos(k0 * cells))
            exp_s = expected * s**2
        else:
            exp_s = expected
        got = pm_forces(
            pos,
            DOMAIN,
            weights,
            forces=ForceConfig(kernel=kernel, laplace="spectral", scheme=scheme),
        )
        assert got.shape == pos.shape
        np.testing.assert_allclose(got, exp_s, atol=1e-10 * np.abs(expected).max())


@pytest.mark.x64
def test_gaussian_filter_and_potential_filter_hooks():
    amp = 0.2
    k0, pos, weights, _ = _plane_wave_setup(DOMAIN, (1, 2, -2), amp)
    base = pm_forces(pos, DOMAIN, weights)
    r_s = 1.7
    smoothed = pm_forces(pos, DOMAIN, weights, smoothing_scale=r_s)
    np.testing.assert_allclose(smoothed, base * np.exp(-(k0 @ k0) * r_s**2), atol=1e-12)
    zero = pm_forces(
        pos, DOMAIN, weights, potential_filter=lambda k, a, p: jnp.zeros_like(k), a=1.0
    )
    np.testing.assert_array_equal(zero, 0.0)
    c = pm_forces(pos, DOMAIN, weights, potential_filter=lambda k, a, p: 2.5, a=1.0)
    np.testing.assert_allclose(c, 2.5 * base, rtol=1e-12, atol=1e-15)
    # an isotropic filter evaluated at |k0| (h/Mpc), at the scale factor a and with the explicit
    # parameters, scales the single-mode force by its value
    f = lambda k, a, p: 1.0 + p["c"] * a * jnp.tanh(k)  # noqa: E731
    shaped = pm_forces(pos, DOMAIN, weights, potential_filter=f, filter_params={"c": 1.0}, a=0.5)
    np.testing.assert_allclose(shaped, base * (1 + 0.5 * np.tanh(np.linalg.norm(k0))), atol=1e-12)


@pytest.mark.x64
def test_gradient_through_a_filter_parameter_matches_finite_differences():
    rng = np.random.default_rng(0)
    domain = Domain(8, 40.0)
    pos = jnp.asarray(rng.uniform(0, 8, size=(12, 3)))

    def loss(theta):
        def filt(k, a, theta):
            return 1.0 + theta[0] * a * jnp.exp(-((k * theta[1]) ** 2))

        forces = pm_forces(
            pos,
            domain,
            potential_filter=filt,
            filter_params=theta,
            a=0.7,
            forces=ForceConfig(scheme="tsc"),
        )
        return jnp.sum(forces * forces)

    theta = jnp.array([0.3, 4.0])
    check_grads(jax.jit(loss), (theta,), order=1, modes=("fwd", "rev"))


@pytest.mark.x64
def test_check_grads_wrt_positions_and_weights():
    rng = np.random.default_rng(1)
    domain = Domain(8, 40.0)
    pos = rng.uniform(0, 8, size=(6, 3))
    pos = jnp.asarray(
        pos + np.where(pos % 0.5 < 0.05, 0.05, 0) - np.where(pos % 0.5 > 0.45, 0.05, 0)
    )
    w = jnp.asarray(rng.uniform(0.5, 1.5, size=6))
    fn = jax.jit(lambda p, v: pm_forces(p, domain, v, forces=TSC_FD))
    check_grads(fn, (pos, w), order=1, modes=("fwd", "rev"))


@pytest.mark.x64
def test_two_particles_attract_along_their_separation_like_newton():
    # two unit particles 5 cells apart in a 64^3 box (cell 1 Mpc/h), random orientation and
    # sub-cell offset: each force points at the other particle, forces are equal and opposite,
    # and the magnitude is Newton's for laplacian(phi) = delta: |F| = (1 / nbar) / (4 pi r^2)
    # with nbar = 2 / N_cells. Budget: TSC + 4-point gradient softening < 1% at 5 cells, periodic
    # images (r / L)^2 < 1%; we allow 3%.
    domain = Domain(64, 64.0)
    rng = np.random.default_rng(3)
    r = 5.0
    newton = (domain.n_cells / 2) / (4 * np.pi * r**2)
    for _ in range(3):
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        a = rng.uniform(20, 40, size=3)
        pos = jnp.asarray(np.stack([a, a + r * u]))
        f = np.asarray(pm_forces(pos, domain, forces=TSC_FD))
        np.testing.assert_allclose(f[0], -f[1], rtol=1e-8, atol=1e-10 * newton)
        along = f[0] @ u
        transverse = np.linalg.norm(f[0] - along * u)
        assert along == pytest.approx(newton, rel=0.03)
        assert transverse < 0.03 * newton


@pytest.mark.parametrize(("scheme", "kernel"), [("cic", "spectral"), ("tsc", "finite_difference")])
def test_momentum_conservation(scheme, kernel):
    # same kernel for paint and read + antisymmetric gradient: the total force vanishes
    domain = Domain(16, 64.0)
    key1, key2 = jax.random.split(jax.random.key(0))
    pos = jax.random.uniform(key1, (200, 3), maxval=16.0)
    w = jax.random.uniform(key2, (200,), minval=0.5, maxval=1.5)
    f = pm_forces(
        pos, domain, w, forces=ForceConfig(kernel=kernel, laplace="spectral", scheme=scheme)
    )
    total = jnp.sum(f * w[:, None], axis=0)
    assert float(jnp.max(jnp.abs(total))) < 1e-4 * float(jnp.sum(jnp.abs(f) * w[:, None]))


def test_jit_vmap_and_errors():
    domain = Domain(8, 40.0)
    pos = jax.random.uniform(jax.random.key(3), (2, 20, 3), maxval=8.0)
    f = jax.jit(jax.vmap(lambda p: pm_forces(p, domain)))(pos)
    assert f.shape == (2, 20, 3)
    assert f.dtype == jnp.float32
    with pytest.raises(ValueError, match=r"\(20, 2\)"):
        pm_forces(jnp.zeros((20, 2)), domain)
    with pytest.raises(ValueError, match=r"ForceConfig.kernel .*'fourier'"):
        pm_forces(pos[0], domain, forces=ForceConfig(kernel="fourier"))
    with pytest.raises(ValueError, match=r"ForceConfig.scheme .*'ngp'"):
        ForceConfig(scheme="ngp")
    with pytest.raises(ValueError, match=r"lattice.*tsc"):
        ForceConfig(scheme="cic")  # the default laplace="lattice" is TSC's symbol
    with pytest.raises(TypeError, match="ForceConfig"):
        pm_forces(pos[0], domain, forces="spectral")
    with pytest.raises(ValueError, match=r"\(3,\)"):
        pm_forces(pos[0], domain, potential_filter=lambda k, a, p: jnp.ones(3), a=1.0)
    with pytest.raises(ValueError, match=r"a=\.\.\."):
        pm_forces(pos[0], domain, potential_filter=lambda k, a, p: 1.0)
