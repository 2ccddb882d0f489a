import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jpm_core import Domain, compensate_window, fft, mass_assignment_window, paint, read

SCHEMES = ["cic", "tsc"]


def _kernel_1d(d, scheme):
    """Reference mass-assignment kernels written from their textbook definitions."""
    d = np.abs(d)
    if scheme == "cic":
        return np.maximum(0.0, 1.0 - d)
    return np.where(d < 0.5, 0.75 - d**2, np.where(d < 1.5, 0.5 * (1.5 - d) ** 2, 0.0))


def _brute_force_paint(pos, weights, shape, scheme):
    """O(N * cells) periodic painting: every node gets W(minimal periodic distance)."""
    out = np.zeros(shape)
    nodes = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    for p, w in zip(pos, weights, strict=True):
        total = np.ones(shape)
        for a in range(3):
            d = (nodes[a] - p[a] + shape[a] / 2) % shape[a] - shape[a] / 2
            total = total * _kernel_1d(d, scheme)
        out += w * total
    return out


def _positions(rng, n, shape, margin=0.05):
    """Random positions kept `margin` away from integers and half-integers (kernel kinks)."""
    pos = rng.uniform(0, 1, size=(n, 3)) * np.array(shape)
    frac = pos % 0.5
    return pos + np.where(frac < margin, margin, 0) - np.where(frac > 0.5 - margin, margin, 0)


@pytest.mark.x64
@pytest.mark.parametrize("scheme", SCHEMES)
def test_paint_matches_brute_force_and_conserves_mass(scheme):
    shape = (8, 6, 10)
    domain = Domain(shape, (8.0, 6.0, 10.0))
    rng = np.random.default_rng(0)
    pos = rng.uniform(-12, 20, size=(40, 3))  # far outside the box: periodic wrapping
    w = rng.uniform(0.5, 2.0, size=40)
    mesh = np.asarray(paint(pos, domain, w, scheme=scheme))
    np.testing.assert_allclose(mesh, _brute_force_paint(pos, w, shape, scheme), atol=1e-12)
    assert mesh.sum() == pytest.approx(w.sum(), rel=1e-14)
    assert mesh.min() >= 0


@pytest.mark.parametrize("scheme", SCHEMES)
def test_mass_conservation_float32(scheme):
    domain = Domain(16, 100.0)
    pos = jax.random.uniform(jax.random.key(1), (4096, 3), maxval=16.0)
    mesh = paint(pos, domain, scheme=scheme)
    assert mesh.dtype == jnp.float32
    np.testing.assert_allclose(mesh.sum(), 4096.0, rtol=1e-6)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_uniform_lattice_paints_a_uniform_mesh(scheme):
    domain = Domain((4, 6, 8), 1.0)
    grid = jnp.stack(
        jnp.meshgrid(*[jnp.arange(n, dtype=jnp.float32) for n in (4, 6, 8)], indexing="ij"),
        axis=-1,
    )
    shifted = grid + jnp.array([0.25, 0.5, 0.75]).reshape(
        1, 1, 1, 3
    )  # same offset for every particle
    for pos in (grid, shifted):
        mesh = paint(pos, domain, scheme=scheme)  # (nx, ny, nz, 3) positions accepted
        np.testing.assert_allclose(mesh, 1.0, atol=1e-6)
        np.testing.assert_allclose(read(mesh, pos, domain, scheme=scheme), 1.0, atol=1e-6)
        assert read(mesh, pos, domain, scheme=scheme).shape == (4, 6, 8)


@pytest.mark.x64
@pytest.mark.parametrize("scheme", SCHEMES)
def test_paint_and_read_are_adjoint(scheme):
    domain = Domain((8, 8, 12), 1.0)
    rng = np.random.default_rng(3)
    pos = rng.uniform(0, 12, size=(5, 7, 3))
    w = rng.normal(size=(5, 7))
    f = rng.normal(size=domain.mesh_shape)
    lhs = np.sum(np.asarray(paint(pos, domain, w, scheme=scheme)) * f)
    rhs = np.sum(w * np.asarray(read(f, pos, domain, scheme=scheme)))
    assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.x64
@pytest.mark.parametrize("scheme", SCHEMES)
def test_read_is_exact_for_constant_and_linear_fields(scheme):
    shape = (8, 10, 12)
    domain = Domain(shape, 1.0)
    nodes = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    coef = np.array([0.3, -1.2, 0.7])
    linear = 2.0 + sum(c * x for c, x in zip(coef, nodes, strict=True))
    rng = np.random.default_rng(4)
    # keep away from the periodic seam, where a linear field is not linear
    pos = 2.0 + rng.uniform(0, 1, size=(50, 3)) * (np.array(shape) - 4.0)
    np.testing.assert_allclose(
        read(np.full(shape, 3.5), pos, domain, scheme=scheme), 3.5, atol=1e-13
    )
    np.testing.assert_allclose(
        read(linear, pos, domain, scheme=scheme), 2.0 + pos @ coef, atol=1e-12
    )


@pytest.mark.x64
@pytest.mark.parametrize("scheme", SCHEMES)
def test_read_at_nodes(scheme):
    domain = Domain(8, 1.0)
    f = np.random.default_rng(5).normal(size=domain.mesh_shape)
    idx = np.array([[0, 0, 0], [7, 3, 1], [2, 5, 6]])
    got = np.asarray(read(f, idx.astype(float), domain, scheme=scheme))
    if scheme == "cic":
        np.testing.assert_allclose(got, f[tuple(idx.T)], atol=1e-14)
    else:  # TSC at a node: 3/4 on the node and 1/8 on each neighbour along each axis
        for i, (a, b, c) in enumerate(idx):
            ref = 0.0
            for da, db, dc in itertools.product((-1, 0, 1), repeat=3):
                wt = np.prod([0.75 if o == 0 else 0.125 for o in (da, db, dc)])
                ref += wt * f[(a + da) % 8, (b + db) % 8, (c + dc) % 8]
            assert got[i] == pytest.approx(ref, abs=1e-13)


@pytest.mark.x64
@pytest.mark.parametrize(("scheme", "shape"), [("cic", (8, 8, 8)), ("tsc", (16, 12, 10))])
def test_check_grads_paint_and_read(scheme, shape):
    domain = Domain(shape, 1.0)
    rng = np.random.default_rng(6)
    pos = jnp.asarray(_positions(rng, 6, shape))
    w = jnp.asarray(rng.uniform(0.5, 1.5, size=6))
    f = jnp.asarray(rng.normal(size=shape))

    # one function of (positions, weights, field) covers the four derivatives in one compilation
    @jax.jit
    def both(p, v, g):
        return paint(p, domain, v, scheme=scheme), read(g, p, domain, scheme=scheme)

    check_grads(both, (pos, w, f), order=1, modes=("fwd", "rev"))


def test_read_of_a_multi_component_field_matches_component_reads():
    domain = Domain((8, 6, 4), 1.0)
    rng = np.random.default_rng(8)
    f = jnp.asarray(rng.normal(size=(*domain.mesh_shape, 3)), dtype=jnp.float32)
    pos = jnp.asarray(rng.uniform(0, 6, size=(2, 5, 3)), dtype=jnp.float32)
    got = read(f, pos, domain, scheme="tsc")
    assert got.shape == (2, 5, 3)
    for c in range(3):
        np.testing.assert_allclose(
            got[..., c], read(f[..., c], pos, domain, "tsc"), rtol=1e-6, atol=1e-6
        )
    with pytest.raises(ValueError, match=r"\(8, 6, 5, 3\)"):
        read(jnp.zeros((8, 6, 5, 3)), pos, domain)


def test_jit_and_vmap():
    domain = Domain(8, 1.0)
    pos = jax.random.uniform(jax.random.key(2), (3, 10, 3), maxval=8.0)
    batched = jax.jit(jax.vmap(lambda p: paint(p, domain, scheme="tsc")))(pos)
    assert batched.shape == (3, 8, 8, 8)
    np.testing.assert_allclose(batched[1], paint(pos[1], domain, scheme="tsc"), atol=1e-6)


@pytest.mark.x64
@pytest.mark.parametrize("scheme", SCHEMES)
def test_window_is_the_fourier_transform_of_the_painting_kernel(scheme):
    # sample the 1-D kernel through `paint` (one particle at distance d from node 0), integrate
    # W(d) exp(-i k d) numerically, compare with the analytic window along that axis
    domain = Domain((16, 4, 4), (32.0, 4.0, 4.0))  # cell size 2 Mpc/h along x
    d = np.linspace(-2.0, 2.0, 4001)
    pos = np.stack([np.mod(d, 16.0), np.zeros_like(d), np.zeros_like(d)], axis=-1)
    w_of_d = np.asarray(jax.vmap(lambda p: paint(p[None, :], domain, scheme=scheme)[0, 0, 0])(pos))
    kx = np.asarray(domain.kvec()[0]).ravel()  # h/Mpc; kernel variable in cells -> k * cell
    ft = np.array([np.trapezoid(w_of_d * np.cos(k * domain.cell_size[0] * d), d) for k in kx])
    # with TSC a particle on a node along y and z leaves 3/4 per axis on that node
    ft = ft / (0.75**2 if scheme == "tsc" else 1.0)
    window = np.asarray(mass_assignment_window(domain, scheme))[:, 0, 0]
    np.testing.assert_allclose(window, ft, atol=1e-6)
    # compensation divides by it
    fk = fft(np.random.default_rng(7).normal(size=domain.mesh_shape), domain)
    np.testing.assert_allclose(
        compensate_window(fk, domain, scheme) * mass_assignment_window(domain, scheme),
        fk,
        atol=1e-12,
    )


def test_eager_shape_errors():
    domain = Domain(8, 1.0)
    with pytest.raises(ValueError, match=r"\(10, 2\)"):
        paint(jnp.zeros((10, 2)), domain)
    with pytest.raises(ValueError, match=r"\(\)"):
        paint(jnp.zeros(()), domain)
    with pytest.raises(ValueError, match=r"\(9,\)"):
        paint(jnp.zeros((10, 3)), domain, weights=jnp.ones(9))
    with pytest.raises(ValueError, match=r"\(4, 4, 4\)"):
        read(jnp.zeros((4, 4, 4)), jnp.zeros((10, 3)), domain)
    with pytest.raises(ValueError, match=r"\(10, 4\)"):
        read(jnp.zeros((8, 8, 8)), jnp.zeros((10, 4)), domain)
    with pytest.raises(ValueError, match="'ngp'"):
        paint(jnp.zeros((10, 3)), domain, scheme="ngp")
    with pytest.raises(ValueError, match=r"halo=0 is too small on device_grid=\(2, 2\)"):
        paint(jnp.zeros((10, 3)), Domain(8, 1.0, device_grid=(2, 2)))
