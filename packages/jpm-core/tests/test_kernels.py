import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jpm_core import (
    Domain,
    fft,
    gaussian_filter_kernel,
    gradient_kernel,
    ifft,
    inverse_laplace_kernel,
    laplace_kernel,
    wavenumbers,
)

DOMAIN = Domain((8, 12, 10), (16.0, 18.0, 25.0))


def _coords(domain):
    return np.meshgrid(
        *[np.arange(n) * c for n, c in zip(domain.mesh_shape, domain.cell_size, strict=True)],
        indexing="ij",
    )


def _apply(kernel, f, domain):
    return np.asarray(ifft(kernel * fft(f, domain), domain))


@pytest.mark.x64
def test_spectral_gradient_of_a_plane_wave_is_analytic():
    m = (1, -3, 2)
    k0 = [2 * np.pi * mi / L for mi, L in zip(m, DOMAIN.box_size, strict=True)]
    x = _coords(DOMAIN)
    phase = sum(k * xi for k, xi in zip(k0, x, strict=True)) + 0.3
    f = np.sin(phase)
    for axis in range(3):
        df = _apply(gradient_kernel(DOMAIN, axis), f, DOMAIN)
        np.testing.assert_allclose(df, k0[axis] * np.cos(phase), atol=1e-12)
    lap = _apply(laplace_kernel(DOMAIN), f, DOMAIN)
    np.testing.assert_allclose(lap, -np.dot(k0, k0) * f, atol=1e-12)


def _fd_gradient(f, axis, h):
    r = lambda s: np.roll(f, -s, axis=axis)  # noqa: E731  f(x + s h)
    return (8 * (r(1) - r(-1)) - (r(2) - r(-2))) / (12 * h)


def _fd_laplacian(f, cells):
    return sum(
        (np.roll(f, -1, axis=a) - 2 * f + np.roll(f, 1, axis=a)) / cells[a] ** 2 for a in range(3)
    )


@pytest.mark.x64
def test_finite_difference_kernels_match_real_space_stencils():
    f = np.random.default_rng(1).normal(size=DOMAIN.mesh_shape)
    for axis in range(3):
        got = _apply(gradient_kernel(DOMAIN, axis, "finite_difference"), f, DOMAIN)
        np.testing.assert_allclose(got, _fd_gradient(f, axis, DOMAIN.cell_size[axis]), atol=1e-10)
    got = _apply(laplace_kernel(DOMAIN, "finite_difference"), f, DOMAIN)
    np.testing.assert_allclose(got, _fd_laplacian(f, DOMAIN.cell_size), atol=1e-10)


@pytest.mark.x64
@pytest.mark.parametrize("kind", ["spectral", "finite_difference"])
def test_inverse_laplacian_solves_poisson(kind):
    rng = np.random.default_rng(2)
    delta = rng.normal(size=DOMAIN.mesh_shape)
    phi = _apply(inverse_laplace_kernel(DOMAIN, kind), delta, DOMAIN)
    assert abs(phi.mean()) < 1e-12  # k=0 set to 0
    back = _apply(laplace_kernel(DOMAIN, kind), phi, DOMAIN)
    np.testing.assert_allclose(back, delta - delta.mean(), atol=1e-10)
    if kind == "finite_difference":
        np.testing.assert_allclose(
            _fd_laplacian(phi, DOMAIN.cell_size), delta - delta.mean(), atol=1e-10
        )
    assert inverse_laplace_kernel(DOMAIN, kind)[0, 0, 0] == 0


@pytest.mark.x64
def test_spectral_gradient_kills_the_nyquist_mode_and_stays_real():
    domain = Domain(8, 8.0)
    x = np.arange(8)
    f = np.broadcast_to(((-1.0) ** x)[:, None, None], domain.mesh_shape)  # the x Nyquist mode
    for axis in range(3):
        k = gradient_kernel(domain, axis)
        np.testing.assert_allclose(_apply(k, f, domain), 0.0, atol=1e-12)
        fd = gradient_kernel(domain, axis, "finite_difference")
        np.testing.assert_allclose(_apply(fd, f, domain), 0.0, atol=1e-12)


def test_gaussian_filter_and_dtype():
    k = wavenumbers(DOMAIN)
    g = gaussian_filter_kernel(DOMAIN, 1.5)
    assert g.dtype == jnp.float32
    assert g.shape == DOMAIN.fourier_shape
    np.testing.assert_allclose(g, np.exp(-(np.asarray(k) ** 2) * 2.25), rtol=1e-5)
    # differentiable in the smoothing scale
    d = jax.grad(lambda r: gaussian_filter_kernel(DOMAIN, r).sum())(1.5)
    expected = np.sum(-2 * 1.5 * np.asarray(k) ** 2 * np.exp(-(np.asarray(k) ** 2) * 2.25))
    np.testing.assert_allclose(d, expected, rtol=1e-4)


def test_kernel_errors():
    with pytest.raises(ValueError, match="'bogus'"):
        laplace_kernel(DOMAIN, "bogus")
    with pytest.raises(ValueError, match="3"):
        gradient_kernel(DOMAIN, 3)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        gaussian_filter_kernel(DOMAIN, jnp.ones(2))


@pytest.mark.parametrize("backend", ["rfft", "jax"])
@pytest.mark.parametrize("kind", ["spectral", "finite_difference"])
def test_kernels_follow_the_distributed_layout(kind, backend, n_devices):
    # the same kernels in the layout of each distributed transform (jaxdecomp's is transposed,
    # (Y, Z, X)): the gradient and inverse Laplacian of a field agree with the single-device ones
    if n_devices < 8:
        pytest.skip("needs 8 (fake) devices")
    from jpm_core import mass_assignment_window

    single = Domain((8, 16, 8), (16.0, 18.0, 25.0))
    dist = Domain((8, 16, 8), (16.0, 18.0, 25.0), device_grid=(2, 4), fft_backend=backend)
    f = np.random.default_rng(3).normal(size=single.mesh_shape).astype(np.float32)

    def ops(f, d):
        fk = fft(f, d) * inverse_laplace_kernel(d, kind)
        return jnp.stack([ifft(gradient_kernel(d, a, kind) * fk, d) for a in range(3)])

    # two separate programs: one single-device, one sharded
    g1 = jax.jit(ops, static_argnums=1)(f, single)
    g8 = jax.jit(ops, static_argnums=1)(f, dist)
    np.testing.assert_allclose(np.asarray(g8), np.asarray(g1), atol=1e-5 * float(jnp.abs(g1).max()))
    w1 = np.asarray(mass_assignment_window(single, "tsc"))
    w8 = np.asarray(mass_assignment_window(dist, "tsc"))
    if dist.transposed_fourier:  # jaxdecomp's (Y, Z, X) complex layout
        w8 = w8.transpose(2, 0, 1)[..., : w1.shape[2]]
    np.testing.assert_allclose(w8, w1, rtol=1e-6)
