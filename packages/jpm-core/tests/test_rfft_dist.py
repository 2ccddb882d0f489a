"""The distributed real-to-complex FFT (`jpm_core._src.rfft_dist`) on 8 fake CPU devices.

References are NumPy's `rfftn`/`irfftn` (the layout is the one-device layout, only the sharding
differs). float64 is switched on with the global config, as in `test_distributed.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jpm_core import Domain
from jpm_core._src.device_mesh import pencil_sharding
from jpm_core._src.rfft_dist import (
    check_rfft_layout,
    fourier_sharding,
    hermitian_weights,
    pirfft3d,
    prfft3d,
    real_sharding,
    rfft_wavevectors,
)

GRIDS = [(1, 8), (8, 1), (2, 4), (4, 2)]
SHAPES = [(16, 16, 16), (16, 8, 32), (8, 16, 7)]  # cubic, non-cubic, odd nz


@pytest.fixture(autouse=True)
def _eight_devices(n_devices):
    if n_devices < 8:
        pytest.skip("needs 8 (fake) devices")


@pytest.fixture
def float64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_numpy_rfftn_and_round_trips(shape, grid):
    f = np.random.default_rng(0).normal(size=shape)
    fk = prfft3d(f, grid)
    assert fk.shape == (shape[0], shape[1], shape[2] // 2 + 1)
    assert fk.dtype == jnp.complex128
    assert fk.sharding.is_equivalent_to(fourier_sharding(grid), 3)
    assert len(fk.sharding.device_set) == 8
    ref = np.fft.rfftn(f)
    np.testing.assert_allclose(np.asarray(fk), ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    back = pirfft3d(fk, grid, shape)
    assert back.dtype == jnp.float64
    assert back.sharding.is_equivalent_to(real_sharding(grid), 3)
    np.testing.assert_allclose(np.asarray(back), f, rtol=0, atol=1e-13)
    # the inverse alone is numpy's irfftn (on a spectrum that is not exactly hermitian too)
    rng = np.random.default_rng(1)
    gk = rng.normal(size=fk.shape) + 1j * rng.normal(size=fk.shape)
    np.testing.assert_allclose(
        np.asarray(pirfft3d(gk, grid, shape)),
        np.fft.irfftn(gk, s=shape, axes=(0, 1, 2)),
        rtol=0,
        atol=1e-13,
    )


def test_float32_under_jit():
    shape, grid = (16, 8, 12), (2, 4)
    f = jax.random.normal(jax.random.key(0), shape)
    fk = jax.jit(prfft3d, static_argnums=1)(f, grid)
    assert fk.dtype == jnp.complex64
    ref = np.fft.rfftn(np.asarray(f, np.float64))
    np.testing.assert_allclose(np.asarray(fk), ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    back = jax.jit(pirfft3d, static_argnums=(1, 2))(fk, grid, shape)
    assert back.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(back), f, rtol=0, atol=1e-5)


@pytest.mark.usefixtures("float64")
def test_same_mesh_as_the_domainpencil_sharding():
    # a field laid out by jpm_core (Domain, P("x", "y")) goes in without resharding
    for grid in GRIDS:
        domain = Domain((16, 16, 16), 1.0, device_grid=grid)
        assert real_sharding(grid) == pencil_sharding(domain)
    domain = Domain((16, 16, 16), 1.0, device_grid=(2, 4))
    f = jax.device_put(np.random.default_rng(2).normal(size=(16, 16, 16)), pencil_sharding(domain))
    np.testing.assert_allclose(np.asarray(prfft3d(f, (2, 4))), np.fft.rfftn(f), atol=1e-11)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("grid", [(2, 4), (1, 8)])
def test_gradients(grid):
    shape = (8, 8, 6)
    rng = np.random.default_rng(3)
    f = rng.normal(size=shape)
    c = rng.normal(size=(8, 8, 4)) + 1j * rng.normal(size=(8, 8, 4))

    def loss(x):  # a real, non-linear function of the complex output
        fk = prfft3d(x, grid)
        return jnp.sum(jnp.abs(fk) ** 2 * jnp.abs(c)) + jnp.sum(jnp.real(fk * c) ** 3)

    check_grads(loss, (f,), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
    check_grads(lambda x: prfft3d(x, grid), (f,), order=1, modes=("fwd", "rev"))
    check_grads(
        lambda k: jnp.sum(jnp.sin(pirfft3d(k, grid, shape))), (c,), order=1, modes=("fwd", "rev")
    )
    # and they equal the one-device gradients
    g_dist = jax.jit(jax.grad(loss))(f)
    g_one = jax.grad(
        lambda x: (
            jnp.sum(jnp.abs(jnp.fft.rfftn(x)) ** 2 * jnp.abs(c))
            + jnp.sum(jnp.real(jnp.fft.rfftn(x) * c) ** 3)
        )
    )(f)
    np.testing.assert_allclose(g_dist, g_one, rtol=1e-12, atol=1e-12 * np.abs(g_one).max())


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("shape", [(16, 8, 32), (8, 16, 7)])
def test_wavevectors_parseval_and_a_poisson_solve(shape):
    grid, box = (4, 2), (20.0, 10.0, 30.0)
    kx, ky, kz = rfft_wavevectors(shape, box)
    assert (kx.shape, ky.shape, kz.shape) == (
        (shape[0], 1, 1),
        (1, shape[1], 1),
        (1, 1, shape[2] // 2 + 1),
    )
    # the one-device wavevectors of jpm_core are the same arrays
    for mine, theirs in zip((kx, ky, kz), Domain(shape, box).kvec(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    mx, my, mz = rfft_wavevectors(shape)
    np.testing.assert_array_equal(mz.ravel(), np.arange(shape[2] // 2 + 1))
    assert mx.ravel()[-1] == -1
    assert my.ravel()[-1] == -1
    # a plane wave peaks where the wavevectors say
    m = np.array([3, -2, 3])
    x = np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij")
    wave = np.cos(2 * np.pi * sum(mi * xi for mi, xi in zip(m, x, strict=True)))
    power = np.abs(np.asarray(prfft3d(wave, grid)))
    peak = np.unravel_index(np.argmax(power), power.shape)
    assert (mx[peak[0], 0, 0], my[0, peak[1], 0], mz[0, 0, peak[2]]) == tuple(m)
    assert np.sum(power > 1e-8) == 1
    # Parseval with the hermitian weights (sums over the full spectrum from the half one)
    f = np.random.default_rng(4).normal(size=shape)
    w = hermitian_weights(shape)
    fk = prfft3d(f, grid)
    n_cells = np.prod(shape)
    np.testing.assert_allclose(jnp.sum(w * jnp.abs(fk) ** 2) / n_cells, np.sum(f**2), rtol=1e-12)
    assert np.sum(np.broadcast_to(w, fk.shape)) == n_cells
    # a jitted Poisson solve on the sharded output against numpy's
    k2 = kx**2 + ky**2 + kz**2
    green = np.where(k2 > 0, -1.0 / np.where(k2 > 0, k2, 1.0), 0.0)

    @jax.jit
    def solve(field):
        return pirfft3d(prfft3d(field, grid) * green, grid, shape)

    ref = np.fft.irfftn(np.fft.rfftn(f) * green, s=shape, axes=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(solve(f)), ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_errors():
    with pytest.raises(ValueError, match=r"mesh_shape\[0\]=12 is not divisible by px \* py = 8"):
        prfft3d(jnp.zeros((12, 16, 16)), (2, 4))
    with pytest.raises(ValueError, match=r"mesh_shape\[1\]=4 is not divisible"):
        prfft3d(jnp.zeros((8, 4, 16)), (4, 2))
    with pytest.raises(ValueError, match="not divisible"):  # also when traced: shapes are static
        jax.jit(prfft3d, static_argnums=1)(jnp.zeros((12, 16, 16)), (2, 4))
    with pytest.raises(ValueError, match="needs 16 devices"):
        check_rfft_layout((16, 16, 16), (4, 4))
    with pytest.raises(ValueError, match=r"field_k must have shape \(8, 8, 5\)"):
        pirfft3d(jnp.zeros((8, 8, 4), jnp.complex64), (2, 4), (8, 8, 8))
    with pytest.raises(ValueError, match="3-D"):
        prfft3d(jnp.zeros((8, 8)), (2, 4))
    with pytest.raises(TypeError, match="real field"):
        prfft3d(jnp.zeros((8, 8, 8), jnp.complex64), (2, 4))
    with pytest.raises(ValueError, match="pair"):
        prfft3d(jnp.zeros((8, 8, 8)), (8,))
    with pytest.raises(TypeError, match="ints"):
        prfft3d(jnp.zeros((8, 8, 8)), (2.0, 4))


@pytest.mark.x64
def test_thread_local_x64_and_vmap():
    # plain JAX collectives: float64 works under the `jax.enable_x64` context manager too
    # (unlike jaxdecomp 0.3.1's pfft3d), and a batch of fields can be vmapped
    shape, grid = (8, 16, 6), (4, 2)
    fs = np.random.default_rng(5).normal(size=(2, *shape))
    fk = jax.vmap(lambda f: prfft3d(f, grid))(fs)
    assert fk.dtype == jnp.complex128
    np.testing.assert_allclose(np.asarray(fk), np.fft.rfftn(fs, axes=(1, 2, 3)), atol=1e-12)
    back = jax.vmap(lambda k: pirfft3d(k, grid, shape))(fk)
    np.testing.assert_allclose(np.asarray(back), fs, atol=1e-13)
