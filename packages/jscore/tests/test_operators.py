"""Fourier-diagonal operators and the flat-sky shear (Kaiser-Squires) operator, against analytic plane
waves and an independent full-grid NumPy FFT."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jscore


def _plane_wave(shape, my, mx):
    y, x = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return np.cos(2 * np.pi * (my * y / shape[0] + mx * x / shape[1]))


@pytest.mark.parametrize("shape", [(16, 16), (15, 12)])
def test_shear_of_plane_waves_is_analytic(shape):
    op = jscore.ShearOperator(shape)
    # Wave along x: gamma_1 = kappa, gamma_2 = 0; along y: gamma_1 = -kappa; along the diagonal
    # (|k_x| = |k_y| in cycles per map of equal sizes only, so use k_x / nx = k_y / ny): gamma_2 = kappa.
    along_x = _plane_wave(shape, 0, 3)
    g = np.asarray(op.forward(jnp.asarray(along_x)))
    np.testing.assert_allclose(g[0], along_x, atol=1e-5)
    np.testing.assert_allclose(g[1], 0.0, atol=1e-5)
    along_y = _plane_wave(shape, 2, 0)
    g = np.asarray(op.forward(jnp.asarray(along_y)))
    np.testing.assert_allclose(g[0], -along_y, atol=1e-5)
    np.testing.assert_allclose(g[1], 0.0, atol=1e-5)
    if shape[0] == shape[1]:
        diagonal = _plane_wave(shape, 3, 3)
        g = np.asarray(op.forward(jnp.asarray(diagonal)))
        np.testing.assert_allclose(g[0], 0.0, atol=1e-5)
        np.testing.assert_allclose(g[1], diagonal, atol=1e-5)


@pytest.mark.x64
def test_shear_matches_a_full_grid_numpy_reference_and_inverts():
    shape = (15, 21)  # odd sizes: no Nyquist modes, so A^T A is the identity but for the mean
    kappa = np.random.default_rng(0).normal(size=shape)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.fftfreq(shape[1])[None, :]
    k2 = kx**2 + ky**2
    k2[0, 0] = 1.0
    gamma = np.fft.ifft2(((kx**2 - ky**2) + 2j * kx * ky) / k2 * np.fft.fft2(kappa))
    op = jscore.ShearOperator(shape)
    g = np.asarray(op.forward(jnp.asarray(kappa)))
    np.testing.assert_allclose(g[0], gamma.real, atol=1e-12)
    np.testing.assert_allclose(g[1], gamma.imag, atol=1e-12)
    np.testing.assert_allclose(np.asarray(op.adjoint(g)), kappa - kappa.mean(), atol=1e-12)


@pytest.mark.x64
@pytest.mark.parametrize("shape", [(16, 16), (9, 10), (12, 7)])
def test_shear_and_fourier_operators_pass_the_dot_product_test(shape):
    x = jnp.zeros(shape)
    op = jscore.ShearOperator(shape)
    assert float(jscore.adjoint_mismatch(jax.random.key(0), op.forward, op.adjoint, x)) < 1e-13
    # A random symmetric multiplier pair: symmetrise m(k) = m(-k) on the full grid, then keep the
    # half-complex part.
    rng = np.random.default_rng(1)
    full = rng.normal(size=(2, *shape))
    full = full + np.roll(np.flip(full, axis=(1, 2)), 1, axis=(1, 2))
    mult = full[..., : shape[-1] // 2 + 1]
    fop = jscore.FourierOperator(jnp.asarray(mult), shape)
    assert fop.forward(x).shape == (2, *shape)
    assert float(jscore.adjoint_mismatch(jax.random.key(1), fop.forward, fop.adjoint, x)) < 1e-13
    # Broken symmetry is caught: the adjoint would be wrong.
    bad = mult.copy()
    bad[0, 1, 0] += 1.0
    with pytest.raises(ValueError, match="symmetric"):
        jscore.FourierOperator(jnp.asarray(bad), shape)


def test_shear_operator_is_jit_and_vmap_friendly():
    op = jscore.ShearOperator((8, 8))
    xs = jax.random.normal(jax.random.key(0), (3, 8, 8))
    out = jax.jit(jax.vmap(op.forward))(xs)
    assert out.shape == (3, 2, 8, 8)
    back = jax.jit(jax.vmap(op.adjoint))(out)
    np.testing.assert_allclose(
        np.asarray(back.mean(axis=(1, 2))), 0.0, atol=1e-6
    )  # the mean is lost


def test_operator_input_errors():
    with pytest.raises(ValueError, match="pair of positive ints"):
        jscore.ShearOperator((8, 8, 8))
    with pytest.raises(ValueError, match="pair of positive ints"):
        jscore.shear_multipliers((0, 4))
    with pytest.raises(ValueError, match=r"shape \(m, \*\(8, 5\)\)"):
        jscore.FourierOperator(jnp.ones((8, 5)), (8, 8))
    with pytest.raises(ValueError, match="finite"):
        jscore.FourierOperator(jnp.full((1, 8, 5), jnp.nan), (8, 8))
