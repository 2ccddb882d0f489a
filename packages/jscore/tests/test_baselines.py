"""Wiener filters (exact and iterative), Wiener posterior samples and the direct inversion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jscore


def _prior(shape, ref):
    power = ref.power_law(np.asarray(jscore.fourier_wavenumber(shape)))
    return jscore.GaussianFieldPrior(jnp.asarray(power), shape), ref.power_law(
        ref.full_wavenumber(shape)
    )


@pytest.mark.x64
def test_fourier_wiener_filter_matches_the_dense_posterior(ref):
    shape = (6, 5)
    prior, power_full = _prior(shape, ref)
    noise_var = 0.3
    y = np.random.default_rng(0).normal(size=shape)
    mean, post_power = jscore.fourier_wiener_filter(jnp.asarray(y), prior.power, noise_var)
    n = y.size
    dense_mean, dense_cov = ref.dense_gaussian_posterior(
        ref.dense_circulant(power_full, shape), np.eye(n), np.full(n, noise_var), y.reshape(-1)
    )
    np.testing.assert_allclose(np.asarray(mean).reshape(-1), dense_mean, rtol=1e-10, atol=1e-12)
    # The posterior covariance is the circulant of the posterior power.
    post_full = power_full * noise_var / (power_full + noise_var)
    np.testing.assert_allclose(
        np.asarray(post_power), post_full[..., : shape[-1] // 2 + 1], rtol=1e-10
    )
    np.testing.assert_allclose(
        ref.dense_circulant(post_full, shape), dense_cov, rtol=1e-8, atol=1e-12
    )


def test_iterative_wiener_filter_without_mask_matches_the_fourier_one():
    shape = (16, 16)
    k = jscore.fourier_wavenumber(shape)
    power = 1.0 / (1.0 + (k / 0.5) ** 2)
    prior = jscore.GaussianFieldPrior(power, shape)
    y = prior.sample(jax.random.key(0)) + 0.3 * jax.random.normal(jax.random.key(1), shape)
    op = jscore.IdentityOperator(shape)
    # White pixel noise (the preconditioner is then exact) and coloured stationary noise (it is not).
    coloured = 0.05 + 0.05 * k
    cases = [
        (jscore.DiagonalNoise(jnp.full(shape, 0.09)), 0.09),
        (jscore.FourierNoise(coloured, shape), coloured),
    ]
    for noise, noise_power in cases:
        expected, _ = jscore.fourier_wiener_filter(y, power, noise_power)
        mean, info = jscore.wiener_filter_cg(y, op.forward, op.adjoint, noise, prior, tol=1e-6)
        assert float(info.residual_norm) < 1e-5
        np.testing.assert_allclose(
            np.asarray(mean), np.asarray(expected), atol=1e-5 * float(jnp.max(jnp.abs(expected)))
        )


@pytest.mark.x64
@pytest.mark.parametrize("masking", ["infinite_variance", "huge_variance", "mask_operator"])
def test_iterative_wiener_filter_with_a_mask_matches_a_dense_solve(masking, ref):
    shape = (8, 8)
    prior, power_full = _prior(shape, ref)
    rng = np.random.default_rng(1)
    mask = rng.random(shape) < 0.7
    mask[2:5, 3:6] = False
    variance = rng.uniform(0.05, 0.2, size=shape)  # non-stationary noise
    y = rng.normal(size=shape) * mask
    dense_var = np.where(mask, variance, np.inf)
    if masking == "mask_operator":
        op = jscore.MaskOperator(jnp.asarray(mask))
        noise = jscore.DiagonalNoise(jnp.asarray(variance))
    else:
        op = jscore.IdentityOperator(shape)
        noise = jscore.DiagonalNoise(
            jnp.asarray(
                np.where(mask, variance, np.inf if masking == "infinite_variance" else 1e12)
            )
        )
    mean, info = jscore.wiener_filter_cg(
        jnp.asarray(y), op.forward, op.adjoint, noise, prior, tol=1e-12
    )
    dense_mean, _ = ref.dense_gaussian_posterior(
        ref.dense_circulant(power_full, shape), np.eye(y.size), dense_var.reshape(-1), y.reshape(-1)
    )
    np.testing.assert_allclose(np.asarray(mean).reshape(-1), dense_mean, rtol=1e-8, atol=1e-10)
    assert int(info.num_iterations) < 64  # preconditioned: fewer iterations than unknowns


@pytest.mark.x64
def test_iterative_wiener_filter_with_fourier_noise_and_a_mask(ref):
    shape = (6, 8)
    prior, power_full = _prior(shape, ref)
    noise_full = 0.1 + 0.05 * ref.full_wavenumber(shape)
    noise = jscore.FourierNoise(jnp.asarray(noise_full[..., : shape[-1] // 2 + 1]), shape)
    mask = np.random.default_rng(2).random(shape) < 0.6
    op = jscore.MaskOperator(jnp.asarray(mask))
    y = np.random.default_rng(3).normal(size=shape)
    mean, _ = jscore.wiener_filter_cg(
        jnp.asarray(y), op.forward, op.adjoint, noise, prior, tol=1e-12
    )
    a = np.diag(mask.reshape(-1).astype(float))
    noise_cov = ref.dense_circulant(noise_full, shape)
    h = np.linalg.inv(ref.dense_circulant(power_full, shape)) + a.T @ np.linalg.solve(noise_cov, a)
    dense_mean = np.linalg.solve(h, a.T @ np.linalg.solve(noise_cov, y.reshape(-1)))
    np.testing.assert_allclose(np.asarray(mean).reshape(-1), dense_mean, rtol=1e-8, atol=1e-10)


@pytest.mark.x64
def test_wiener_samples_have_the_dense_posterior_covariance(ref):
    shape = (4, 4)
    prior, power_full = _prior(shape, ref)
    mask = np.ones(shape, bool)
    mask[1:3, 1:3] = False
    variance = np.where(mask, 0.1, np.inf)
    noise = jscore.DiagonalNoise(jnp.asarray(variance))
    op = jscore.IdentityOperator(shape)
    y = jnp.asarray(np.random.default_rng(4).normal(size=shape) * mask)
    n_samples = 4000
    keys = jax.random.split(jax.random.key(0), n_samples)
    draws = jax.jit(
        jax.vmap(
            lambda k: jscore.wiener_filter_sample(
                k, y, op.forward, op.adjoint, noise, prior, tol=1e-10
            )
        )
    )(keys)
    draws = np.asarray(draws).reshape(n_samples, -1)
    mean, cov = ref.dense_gaussian_posterior(
        ref.dense_circulant(power_full, shape),
        np.eye(16),
        variance.reshape(-1),
        np.asarray(y).reshape(-1),
    )
    sd = np.sqrt(np.diag(cov))
    assert np.max(np.abs(draws.mean(0) - mean) / sd) < 5 / np.sqrt(n_samples)
    emp = np.cov(draws.T)
    assert np.max(np.abs(emp - cov) / np.outer(sd, sd)) < 5 * np.sqrt(2 / n_samples)


def test_direct_inversion():
    shape = (8, 8)
    rng = np.random.default_rng(5)
    y = jnp.asarray(rng.normal(size=shape))
    ident = jscore.IdentityOperator(shape)
    x, _ = jscore.direct_inversion(y, ident.forward, ident.adjoint)
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)
    mask = jnp.asarray(rng.random(shape) < 0.5)
    op = jscore.MaskOperator(mask)
    noise = jscore.DiagonalNoise(jnp.asarray(rng.uniform(0.1, 1.0, size=shape)))
    x, _ = jscore.direct_inversion(op.forward(y), op.forward, op.adjoint, noise)
    np.testing.assert_allclose(
        np.asarray(x), np.asarray(jnp.where(mask, y, 0.0)), rtol=1e-5, atol=1e-6
    )
    # A smoothing operator (Fourier multiplier) is undone where it is invertible.
    k = jscore.fourier_wavenumber(shape)
    transfer = jnp.exp(-0.5 * (k / 2.0) ** 2)

    def smooth(x):
        return jnp.fft.irfftn(jnp.fft.rfftn(x, norm="ortho") * transfer, s=shape, norm="ortho")

    x_true = jnp.asarray(rng.normal(size=shape))
    x, _ = jscore.direct_inversion(smooth(x_true), smooth, smooth, tol=1e-7, maxiter=500)
    np.testing.assert_allclose(np.asarray(x), np.asarray(x_true), atol=1e-2)


def test_conjugate_gradient_on_a_dense_system():
    rng = np.random.default_rng(6)
    m = rng.normal(size=(20, 20))
    a = m @ m.T + 20 * np.eye(20)
    b = rng.normal(size=20)
    x, info = jscore.conjugate_gradient(
        lambda v: jnp.asarray(a, jnp.float32) @ v, jnp.asarray(b, jnp.float32), tol=1e-6
    )
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(a, b), rtol=1e-4, atol=1e-5)
    assert int(info.num_iterations) <= 20
    assert float(info.residual_norm) < 1e-5


def test_baselines_reject_mismatched_inputs():
    shape = (8, 8)
    prior = jscore.GaussianFieldPrior(jnp.ones(jscore.rfft_shape(shape)), shape)
    op = jscore.IdentityOperator(shape)
    with pytest.raises(ValueError, match="shape"):
        jscore.wiener_filter_cg(
            jnp.zeros(shape), op.forward, op.adjoint, jscore.DiagonalNoise(jnp.ones((4, 4))), prior
        )
    small = jscore.GaussianFieldPrior(jnp.ones(jscore.rfft_shape((4, 4))), (4, 4))
    with pytest.raises(ValueError, match="prior"):
        jscore.wiener_filter_cg(
            jnp.zeros(shape), op.forward, op.adjoint, jscore.DiagonalNoise(jnp.ones(shape)), small
        )
    with pytest.raises(ValueError, match="noise_power"):
        jscore.fourier_wiener_filter(jnp.zeros(shape), prior.power, -1.0)
    with pytest.raises(ValueError, match="prior_power"):
        jscore.fourier_wiener_filter(jnp.zeros(shape), jnp.ones(shape), 1.0)
