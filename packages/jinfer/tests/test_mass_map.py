"""Mass mapping (jlens shear operator + jscore annealed sampler) against the exact dense posterior."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jinfer
import jlens
import jscore

SHAPE = (16, 16)


def _problem():
    k = jscore.fourier_wavenumber(SHAPE)
    prior = jscore.GaussianFieldPrior(20.0 * (1.0 + (k / 0.3) ** 2) ** -1.5, SHAPE)
    truth = prior.sample(jax.random.key(0))
    mask = np.ones(SHAPE, np.float32)
    mask[3:8, 4:10] = 0.0  # a hole
    std = np.asarray(0.4 + 0.3 * jax.random.uniform(jax.random.key(1), SHAPE), np.float32)
    op = jlens.ShearOperator(jlens.FlatSky(SHAPE[0], field_deg=1.0), mask=mask, noise_std=std)
    shear = op.forward(truth) + std[None] * jax.random.normal(jax.random.key(2), (2, *SHAPE))
    shear = jnp.where(jnp.asarray(mask)[None] > 0, shear, jnp.nan)
    return prior, op, shear, mask, std


def _exact(prior, op, shear, mask, std):
    """The dense posterior: precision C^-1 + A^T Sigma^-1 A, from the operators on a basis."""
    n = SHAPE[0] * SHAPE[1]
    basis = np.eye(n).reshape(n, *SHAPE)
    # (linear maps of a float32 basis: float32-exact matrices, then float64 algebra)
    e = jnp.asarray(basis, jnp.float32)
    a = np.asarray(jax.vmap(op.forward)(e), np.float64).reshape(n, -1).T  # (2n, n)
    c_inv = -np.asarray(jax.vmap(lambda b: prior.score(b, 0.0))(e), np.float64).reshape(n, n)
    w = np.where(
        np.broadcast_to(mask[None] > 0, (2, *SHAPE)),
        1.0 / np.broadcast_to(std**2, (2, *SHAPE)),
        0.0,
    ).ravel()
    precision = c_inv + a.T @ (w[:, None] * a)
    cov = np.linalg.inv(precision)
    y = np.nan_to_num(np.asarray(shear, np.float64)).ravel()
    return (cov @ (a.T @ (w * y))).reshape(SHAPE), cov


def test_mass_map_reaches_the_exact_posterior_and_its_wiener_filter():
    prior, op, shear, mask, std = _problem()
    mean, cov = _exact(prior, op, shear, mask, std)
    sd = np.sqrt(np.diag(cov)).reshape(SHAPE)
    # the noise given per component, as COSMOS's std1/std2 (here both equal the operator's), zero
    # (no galaxies) where masked
    per_component = np.where(mask > 0, std, 0.0)[None].repeat(2, axis=0)
    n_chains = 128
    out = jinfer.mass_map(
        jax.random.key(3), shear, op, prior, num_chains=n_chains, noise_std=per_component
    )
    assert out.samples.shape == (n_chains, *SHAPE)
    np.testing.assert_allclose(out.wiener, mean, atol=1e-3 * np.abs(mean).max())
    z = (np.asarray(out.mean) - mean) / sd
    # the error of the mean of 128 exact draws is 1/sqrt(128) = 0.088 posterior std per pixel
    assert np.sqrt(np.mean(z**2)) < 1.5 / np.sqrt(n_chains), np.sqrt(np.mean(z**2))
    # variances: the map's mean, which shear does not see, is one mode with the largest variance and
    # a relative sampling error of sqrt(2 / 127) = 0.13, so it is checked on its own (3 errors); the
    # rest (each sample minus its mean) spreads over many modes and is checked to 5%
    s = np.asarray(out.samples).reshape(n_chains, -1)
    n = s.shape[1]
    centring = np.eye(n) - 1.0 / n
    centred = s - s.mean(1, keepdims=True)
    ratio = np.mean(centred.var(0) / np.diag(centring @ cov @ centring))
    assert 0.95 < ratio < 1.05, ratio
    mean_mode = s.mean(1).var() / cov.mean()
    assert abs(mean_mode - 1) < 3 * np.sqrt(2 / (n_chains - 1)), mean_mode


def test_mass_map_shows_its_progress(capsys):
    prior, op, shear, _, _ = _problem()
    annealing = jscore.AnnealingConfig(sigma_init=0.5, sigma_min=0.1, num_steps=150)
    jinfer.mass_map(jax.random.key(0), shear, op, prior, num_chains=2, annealing=annealing)
    err = capsys.readouterr().err
    assert "jinfer.mass_map" in err
    assert "150/150" in err


def test_mass_map_checks_its_inputs():
    prior, op, shear, mask, _ = _problem()
    with pytest.raises(ValueError, match=r"shape \(2, 16, 16\)"):
        jinfer.mass_map(jax.random.key(0), shear[0], op, prior)
    bad = shear.at[0, 0, 0].set(jnp.nan)  # an observed pixel
    with pytest.raises(ValueError, match="non-finite values in observed"):
        jinfer.mass_map(jax.random.key(0), bad, op, prior)
    with pytest.raises(ValueError, match="power="):
        jinfer.mass_map(jax.random.key(0), shear, op, prior.score)
    with pytest.raises(ValueError, match="noise_std"):
        jinfer.mass_map(
            jax.random.key(0), shear, jlens.ShearOperator(op.geometry, mask=mask), prior
        )
    with pytest.raises(TypeError, match="ShearOperator"):
        jinfer.mass_map(jax.random.key(0), shear, jscore.IdentityOperator(SHAPE), prior)
