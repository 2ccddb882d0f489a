import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jpm_core import Domain, fft, ifft, wavenumbers, wavevectors


@pytest.mark.x64
@pytest.mark.parametrize("shape", [(8, 8, 8), (6, 10, 7), (4, 5, 12)])
def test_round_trip_and_agreement_with_complex_fft(shape):
    domain = Domain(shape, (10.0, 20.0, 30.0))
    f = np.random.default_rng(0).normal(size=shape)
    fk = fft(f, domain)
    assert fk.shape == domain.fourier_shape
    # independent reference: the full complex DFT of numpy, restricted to the stored half
    full = np.fft.fftn(f)
    np.testing.assert_allclose(np.asarray(fk), full[..., : shape[2] // 2 + 1], atol=1e-10)
    np.testing.assert_allclose(np.asarray(ifft(fk, domain)), f, atol=1e-12)


def test_float32_by_default_and_jit():
    domain = Domain(8, 1.0)
    f = jax.random.normal(jax.random.key(0), domain.mesh_shape)
    fk = jax.jit(fft, static_argnums=1)(f, domain)
    assert fk.dtype == jnp.complex64
    back = jax.jit(ifft, static_argnums=1)(fk, domain)
    assert back.dtype == jnp.float32
    np.testing.assert_allclose(back, f, atol=1e-5)
    assert wavenumbers(domain).dtype == jnp.float32


@pytest.mark.x64
def test_wavevectors_locate_a_plane_wave():
    # a plane wave exp(i k0.x) on an anisotropic box must show up exactly where wavevectors == k0
    domain = Domain((8, 6, 10), (16.0, 3.0, 25.0))
    m = (3, -2, 4)
    k0 = [2 * np.pi * mi / L for mi, L in zip(m, domain.box_size, strict=True)]
    grid = np.meshgrid(
        *[np.arange(n) * c for n, c in zip(domain.mesh_shape, domain.cell_size, strict=True)],
        indexing="ij",
    )
    f = np.cos(k0[0] * grid[0] + k0[1] * grid[1] + k0[2] * grid[2])
    fk = np.abs(np.asarray(fft(f, domain)))
    kx, ky, kz = (np.asarray(k) for k in wavevectors(domain))
    peak = np.unravel_index(np.argmax(fk), fk.shape)
    np.testing.assert_allclose(
        [kx[peak[0], 0, 0], ky[0, peak[1], 0], kz[0, 0, peak[2]]], k0, atol=1e-12
    )
    assert fk[peak] == pytest.approx(domain.n_cells / 2)
    assert np.sum(fk > 1e-8) == 1  # the conjugate partner lives in the unstored half
    kmag = np.asarray(wavenumbers(domain))
    assert kmag[0, 0, 0] == 0
    assert kmag[peak] == pytest.approx(np.linalg.norm(k0))


def test_errors():
    domain = Domain(8, 1.0)
    with pytest.raises(ValueError, match=r"\(8, 8, 4\)"):
        fft(jnp.zeros((8, 8, 4)), domain)
    with pytest.raises(ValueError, match=r"\(8, 8, 8\)"):
        ifft(jnp.zeros((8, 8, 8), jnp.complex64), domain)
    with pytest.raises(TypeError, match="complex"):
        fft(jnp.zeros((8, 8, 8), jnp.complex64), domain)
    with pytest.raises(TypeError, match="Domain"):
        fft(jnp.zeros((8, 8, 8)), (8, 8, 8))
    if jax.device_count() < 16:
        with pytest.raises(ValueError, match="needs 16 devices"):
            fft(jnp.zeros((16, 16, 16)), Domain(16, 1.0, device_grid=(4, 4)))


# ------------------------------------------------------------------ distributed (8 fake devices)
GRIDS = [
    (2, 4),
    pytest.param((8, 1), marks=pytest.mark.slow),
    pytest.param((4, 2), marks=pytest.mark.slow),
    pytest.param((1, 8), marks=pytest.mark.slow),
]


@pytest.fixture
def eight_devices(n_devices):
    if n_devices < 8:
        pytest.skip("needs 8 (fake) devices")


@pytest.mark.usefixtures("eight_devices")
@pytest.mark.parametrize("grid", GRIDS)
def test_distributed_fft_matches_the_complex_transform(grid):
    # jaxdecomp's complex pencil transform (fft_backend="jax")
    shape = (16, 8, 24)
    domain = Domain(shape, (32.0, 16.0, 24.0), device_grid=grid, fft_backend="jax")
    assert domain.fourier_shape == (8, 24, 16)
    f = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    fk = jax.jit(fft, static_argnums=1)(f, domain)
    assert fk.shape == domain.fourier_shape
    assert len(fk.sharding.device_set) == 8
    # independent reference: numpy's complex DFT, in jaxdecomp's transposed (Y, Z, X) layout
    ref = np.fft.fftn(f.astype(np.float64)).transpose(1, 2, 0)
    np.testing.assert_allclose(np.asarray(fk), ref, atol=1e-5 * np.abs(ref).max())
    back = ifft(fk, domain)
    assert back.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(back), f, atol=1e-5)
    # wavevectors follow the layout: the power of a plane wave sits where they say
    kx, ky, kz = (np.asarray(k) for k in wavevectors(domain))
    assert (kx.shape, ky.shape, kz.shape) == ((1, 1, 16), (8, 1, 1), (1, 24, 1))
    m = np.array([3, -2, 5])
    x = np.meshgrid(
        *[np.arange(n) * c for n, c in zip(shape, domain.cell_size, strict=True)], indexing="ij"
    )
    k0 = 2 * np.pi * m / np.array(domain.box_size)
    wave = np.cos(sum(k * xi for k, xi in zip(k0, x, strict=True))).astype(np.float32)
    power = np.abs(np.asarray(fft(wave, domain)))
    peaks = np.argwhere(power > 0.25 * domain.n_cells)
    found = {(kx[0, 0, c], ky[a, 0, 0], kz[0, b, 0]) for a, b, c in peaks}
    assert len(found) == 2
    for kvec in found:
        np.testing.assert_allclose(np.abs(kvec), np.abs(k0), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(wavenumbers(domain))[tuple(peaks[0])], np.linalg.norm(k0), rtol=1e-6
    )


@pytest.mark.usefixtures("eight_devices")
@pytest.mark.parametrize("grid", GRIDS)
def test_distributed_real_fft_has_the_one_device_layout(grid):
    # the default distributed transform (fft_backend="rfft"): numpy's rfftn, whatever the grid
    shape = (16, 8, 24)
    domain = Domain(shape, (32.0, 16.0, 24.0), device_grid=grid)
    single = Domain(shape, (32.0, 16.0, 24.0))
    assert domain.fourier_shape == single.fourier_shape == (16, 8, 13)
    f = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    fk = jax.jit(fft, static_argnums=1)(f, domain)
    assert len(fk.sharding.device_set) == 8
    ref = np.fft.rfftn(f.astype(np.float64))
    np.testing.assert_allclose(np.asarray(fk), ref, atol=1e-5 * np.abs(ref).max())
    back = jax.jit(ifft, static_argnums=1)(fk, domain)
    assert back.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(back), f, atol=1e-5)
    for k_dist, k_one in zip(wavevectors(domain), wavevectors(single), strict=True):
        np.testing.assert_array_equal(np.asarray(k_dist), np.asarray(k_one))
