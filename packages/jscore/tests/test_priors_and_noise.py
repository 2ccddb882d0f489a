"""The Gaussian field prior, the noise models and the operators against dense float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jscore

SHAPES = [(6, 5), (5, 6), (4, 3, 4)]


def _half(full, shape):
    return full[..., : shape[-1] // 2 + 1]


@pytest.mark.parametrize("shape", SHAPES)
def test_fourier_wavenumber_matches_the_full_grid(shape, ref):
    k = jscore.fourier_wavenumber(shape, spacing=0.3)
    assert k.shape == jscore.rfft_shape(shape)
    np.testing.assert_allclose(
        np.asarray(k), _half(ref.full_wavenumber(shape, 0.3), shape), rtol=1e-6
    )


@pytest.mark.x64
@pytest.mark.parametrize("shape", SHAPES)
def test_prior_score_and_log_prob_match_the_dense_gaussian(shape, ref):
    power_full = ref.power_law(ref.full_wavenumber(shape))
    prior = jscore.GaussianFieldPrior(jnp.asarray(_half(power_full, shape)), shape)
    n = int(np.prod(shape))
    sigma = 0.3
    cov = ref.dense_circulant(power_full, shape) + sigma**2 * np.eye(n)
    x = np.random.default_rng(0).normal(size=shape)
    expected_score = -np.linalg.solve(cov, x.reshape(-1))
    np.testing.assert_allclose(
        np.asarray(prior.score(jnp.asarray(x), sigma)).reshape(-1), expected_score, rtol=1e-10
    )
    _, logdet = np.linalg.slogdet(2 * np.pi * cov)
    expected_logp = -0.5 * (x.reshape(-1) @ np.linalg.solve(cov, x.reshape(-1)) + logdet)
    np.testing.assert_allclose(
        float(prior.log_prob(jnp.asarray(x), sigma)), expected_logp, rtol=1e-10
    )


@pytest.mark.x64
def test_prior_samples_have_the_dense_covariance(ref):
    shape = (4, 5)
    power_full = ref.power_law(ref.full_wavenumber(shape))
    prior = jscore.GaussianFieldPrior(jnp.asarray(_half(power_full, shape)), shape)
    sigma = 0.2
    keys = jax.random.split(jax.random.key(0), 20000)
    xs = np.asarray(jax.vmap(lambda k: prior.sample(k, sigma))(keys)).reshape(len(keys), -1)
    cov = ref.dense_circulant(power_full, shape) + sigma**2 * np.eye(xs.shape[1])
    emp = xs.T @ xs / len(keys)
    # Each entry's standard error is at most sqrt(2/n) * max variance ~ 0.01 * 1.1.
    assert np.max(np.abs(emp - cov)) < 5 * np.sqrt(2 / len(keys)) * np.max(np.diag(cov))


@pytest.mark.x64
def test_noise_models_match_dense_precisions(ref):
    shape = (6, 4)
    rng = np.random.default_rng(1)
    r = rng.normal(size=shape)
    variance = rng.uniform(0.5, 2.0, size=shape)
    variance[0, 1] = np.inf
    diag = jscore.DiagonalNoise(jnp.asarray(variance))
    expected = r / (variance + 0.25)
    np.testing.assert_allclose(
        np.asarray(diag.apply_precision(jnp.asarray(r), 0.25)), expected, rtol=1e-12
    )
    np.testing.assert_allclose(float(diag.total_precision()), np.sum(1 / variance), rtol=1e-12)

    power_full = 0.5 + ref.power_law(ref.full_wavenumber(shape))
    fourier = jscore.FourierNoise(jnp.asarray(_half(power_full, shape)), shape)
    cov = ref.dense_circulant(power_full, shape) + 0.25 * np.eye(r.size)
    np.testing.assert_allclose(
        np.asarray(fourier.apply_precision(jnp.asarray(r), 0.25)).reshape(-1),
        np.linalg.solve(cov, r.reshape(-1)),
        rtol=1e-10,
    )
    np.testing.assert_allclose(float(fourier.total_precision()), np.sum(1 / power_full), rtol=1e-10)
    # Sigma^-1/2 applied twice is Sigma^-1.
    twice = fourier.apply_sqrt_precision(fourier.apply_sqrt_precision(jnp.asarray(r)))
    np.testing.assert_allclose(
        np.asarray(twice), np.asarray(fourier.apply_precision(jnp.asarray(r))), rtol=1e-10
    )


def test_operators_are_adjoint_pairs():
    shape = (8, 6)
    mask = np.random.default_rng(2).random(shape) < 0.7
    for op in (jscore.IdentityOperator(shape), jscore.MaskOperator(jnp.asarray(mask))):
        mismatch = jscore.adjoint_mismatch(
            jax.random.key(0), op.forward, op.adjoint, jnp.zeros(shape)
        )
        assert float(mismatch) < 1e-6
    # A wrong adjoint is caught.
    op = jscore.MaskOperator(jnp.asarray(mask))
    assert (
        float(
            jscore.adjoint_mismatch(
                jax.random.key(0), op.forward, lambda y: 2.0 * y, jnp.zeros(shape)
            )
        )
        > 0.1
    )


def test_invalid_inputs_raise_eagerly():
    shape = (6, 6)
    power = jnp.ones(jscore.rfft_shape(shape))
    with pytest.raises(ValueError, match="half-complex grid"):
        jscore.GaussianFieldPrior(jnp.ones(shape), shape)
    with pytest.raises(ValueError, match="positive"):
        jscore.GaussianFieldPrior(power.at[1, 1].set(-1.0), shape)
    with pytest.raises(ValueError, match="symmetric"):
        jscore.GaussianFieldPrior(power.at[1, 0].set(2.0), shape)
    with pytest.raises(ValueError, match="positive"):
        jscore.DiagonalNoise(jnp.zeros(shape))
    with pytest.raises(ValueError, match="positive"):
        jscore.DiagonalNoise(jnp.full(shape, jnp.nan))
    with pytest.raises(ValueError, match="positive"):
        jscore.FourierNoise(power.at[0, 0].set(0.0), shape)
    with pytest.raises(ValueError, match="0/1"):
        jscore.MaskOperator(jnp.full(shape, 0.5))
    with pytest.raises(ValueError, match="spacing"):
        jscore.fourier_wavenumber(shape, spacing=0.0)


def test_pytrees_pass_through_jit_and_vmap():
    shape = (8, 8)
    prior = jscore.GaussianFieldPrior(jnp.ones(jscore.rfft_shape(shape)), shape)
    noise = jscore.DiagonalNoise(jnp.ones(shape))

    @jax.jit
    def f(prior, noise, x):
        return prior.score(x, 0.1) + noise.apply_precision(x, 0.5)

    x = jnp.ones((3, *shape))
    out = jax.vmap(f, (None, None, 0))(prior, noise, x)
    np.testing.assert_allclose(np.asarray(out), -np.ones((3, *shape)) / 1.01 + 1 / 1.5, rtol=1e-5)
