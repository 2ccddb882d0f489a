"""The probability-flow ODE sampler, checked exactly with the analytic IGSO(3) score: IGSO(3) samples at
sigma_T must be transported to IGSO(3) at sigma_0 (the noised marginals of IGSO(3) are IGSO(3))."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jso3


def _transport(sigma_max, sigma_min, num_steps, n, method="heun", orthonormalize=True, seed=0):
    mean = jso3.sample_uniform(jax.random.key(seed))

    def score_fn(R, sigma):
        return jso3.IGSO3.from_sigma(sigma, mean).score(R)

    @functools.partial(jax.jit, static_argnums=(1,))
    def run(key, n):
        R_init = jso3.IGSO3.from_sigma(sigma_max, mean).sample(key, (n,))
        sigmas = jso3.sigma_schedule(sigma_max, sigma_min, num_steps)
        R = jso3.probability_flow_sample(
            score_fn, R_init, sigmas, method=method, orthonormalize=orthonormalize
        )
        angles = jso3.geodesic_distance(jnp.broadcast_to(mean, R.shape), R)
        eye = jnp.broadcast_to(jnp.eye(3, dtype=R.dtype), R.shape)
        return angles, jnp.max(jnp.abs(jnp.swapaxes(R, -1, -2) @ R - eye))

    return run(jax.random.key(seed + 1), n)


@pytest.mark.x64
@pytest.mark.parametrize("method", ["heun", pytest.param("midpoint", marks=pytest.mark.slow)])
def test_ode_maps_igso3_to_igso3_and_stays_on_the_group(method, reference_cdf):
    # no orthonormalisation: the geometric step alone keeps R a rotation (to rounding; the spec
    # asks for 1e-5 after 1000 steps)
    angles, orthogonality = _transport(2.0, 0.3, 1000, 1000, method=method, orthonormalize=False)
    assert orthogonality < 1e-12, orthogonality
    p = scipy.stats.kstest(np.asarray(angles), reference_cdf(0.5 * 0.3**2)).pvalue
    assert p > 0.01, p


@pytest.mark.slow
def test_ode_in_float32():
    # from the same starting rotations, float32 follows the float64 trajectory and, with the
    # Newton-Schulz polish, stays orthogonal
    def transport(R_init, mean):
        def score_fn(R, sigma):
            return jso3.IGSO3.from_sigma(sigma, mean).score(R)

        sigmas = jso3.sigma_schedule(1.5, 0.2, 1000).astype(R_init.dtype)
        return jso3.probability_flow_sample(score_fn, R_init, sigmas)

    with jax.enable_x64(True):
        mean = jso3.sample_uniform(jax.random.key(3))
        R_init = jso3.IGSO3.from_sigma(1.5, mean).sample(jax.random.key(4), (1000,))
        R64 = np.asarray(jax.jit(transport)(R_init, mean))
        R_init, mean = np.asarray(R_init, np.float32), np.asarray(mean, np.float32)
    R32 = jax.jit(transport)(jnp.asarray(R_init), jnp.asarray(mean))
    assert R32.dtype == jnp.float32
    np.testing.assert_allclose(R32, R64, atol=1e-4)
    eye = jnp.broadcast_to(jnp.eye(3), R32.shape)
    assert jnp.max(jnp.abs(jnp.swapaxes(R32, -1, -2) @ R32 - eye)) < 1e-5


@pytest.mark.slow
@pytest.mark.x64
def test_ode_can_fail(reference_cdf):
    # the check has power: too few Euler steps, or the wrong target, are rejected
    angles, _ = _transport(2.0, 0.3, 1000, 2000)
    assert scipy.stats.kstest(np.asarray(angles), reference_cdf(0.5 * 0.33**2)).pvalue < 1e-3
    angles, _ = _transport(2.0, 0.3, 4, 2000, method="euler")
    assert scipy.stats.kstest(np.asarray(angles), reference_cdf(0.5 * 0.3**2)).pvalue < 1e-3


@pytest.mark.slow
@pytest.mark.x64
def test_ode_from_near_uniform(reference_cdf):
    # from sigma = 6 (eps = 18, uniform to ~1e-13) down to a sharp distribution
    angles, orthogonality = _transport(6.0, 0.1, 1000, 4000, orthonormalize=False, seed=5)
    assert orthogonality < 1e-5
    assert scipy.stats.kstest(np.asarray(angles), reference_cdf(0.005)).pvalue > 0.01


def test_schedule_and_bad_inputs():
    sigmas = jso3.sigma_schedule(2.0, 0.1, 10)
    assert sigmas.shape == (11,)
    np.testing.assert_allclose([sigmas[0], sigmas[-1]], [2.0, 0.1], rtol=1e-6)
    np.testing.assert_allclose(sigmas[1:] / sigmas[:-1], (0.1 / 2.0) ** 0.1, rtol=1e-5)
    with pytest.raises(ValueError, match="sigma_min"):
        jso3.sigma_schedule(1.0, 0.0, 10)
    with pytest.raises(ValueError, match="num_steps"):
        jso3.sigma_schedule(1.0, 0.1, 0)

    def score_fn(R, sigma):
        return jnp.zeros(R.shape[:-1])

    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        jso3.probability_flow_sample(score_fn, jnp.zeros((5, 3)), sigmas)
    with pytest.raises(ValueError, match="sigmas"):
        jso3.probability_flow_sample(score_fn, jnp.eye(3), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="method"):
        jso3.probability_flow_sample(score_fn, jnp.eye(3), sigmas, method="rk4")


def _sde_transport(sigma_max, sigma_min, num_steps, n, seed=0, scale=1.0, orthonormalize=False):
    mean = jso3.sample_uniform(jax.random.key(seed))

    def score_fn(R, sigma):
        return scale * jso3.IGSO3.from_sigma(sigma, mean).score(R)

    @functools.partial(jax.jit, static_argnums=(1,))
    def run(key, n):
        key_init, key_sde = jax.random.split(key)
        R_init = jso3.IGSO3.from_sigma(sigma_max, mean).sample(key_init, (n,))
        sigmas = jso3.sigma_schedule(sigma_max, sigma_min, num_steps)
        R = jso3.reverse_sde_sample(
            key_sde, score_fn, R_init, sigmas, orthonormalize=orthonormalize
        )
        angles = jso3.geodesic_distance(jnp.broadcast_to(mean, R.shape), R)
        eye = jnp.broadcast_to(jnp.eye(3, dtype=R.dtype), R.shape)
        return angles, jnp.max(jnp.abs(jnp.swapaxes(R, -1, -2) @ R - eye))

    return run(jax.random.key(seed + 1), n)


@pytest.mark.x64
def test_reverse_sde_maps_igso3_to_igso3_and_stays_on_the_group(reference_cdf):
    # geodesic random walk with the exact score: IGSO3(2) -> IGSO3(0.3) in 1000 steps, no projection
    angles, orthogonality = _sde_transport(2.0, 0.3, 1000, 2000, seed=7)
    assert orthogonality < 1e-12, orthogonality
    p = scipy.stats.kstest(np.asarray(angles), reference_cdf(0.5 * 0.3**2)).pvalue
    assert p > 0.01, p
    # the check has power: a slightly wider target is rejected
    assert scipy.stats.kstest(np.asarray(angles), reference_cdf(0.5 * 0.36**2)).pvalue < 1e-3


@pytest.mark.slow
@pytest.mark.x64
def test_reverse_sde_with_the_ode_drift_fails(reference_cdf):
    # the probability-flow drift (half the SDE drift) with the SDE noise leaves the sample too wide
    wrong, _ = _sde_transport(2.0, 0.3, 1000, 2000, seed=7, scale=0.5)
    assert scipy.stats.kstest(np.asarray(wrong), reference_cdf(0.5 * 0.3**2)).pvalue < 1e-6


@pytest.mark.slow
def test_reverse_sde_in_float32_and_sample_from_score(reference_cdf):
    # float32 with the Newton-Schulz polish stays orthogonal; `sample_from_score(sampler="sde")`
    # from Haar-uniform rotations reaches IGSO3(mean, 0.2)
    mean = jso3.sample_uniform(jax.random.key(11))

    def score_fn(R, sigma):
        return jso3.IGSO3.from_sigma(sigma, mean).score(R)

    R = jax.jit(
        lambda key: jso3.sample_from_score(
            key, score_fn, (3000,), sigma_max=4.0, sigma_min=0.2, num_steps=1000, sampler="sde"
        )
    )(jax.random.key(12))
    assert R.dtype == jnp.float32
    eye = jnp.broadcast_to(jnp.eye(3), R.shape)
    assert jnp.max(jnp.abs(jnp.swapaxes(R, -1, -2) @ R - eye)) < 1e-5
    angles = np.asarray(jso3.geodesic_distance(jnp.broadcast_to(mean, R.shape), R), np.float64)
    assert scipy.stats.kstest(angles, reference_cdf(0.5 * 0.2**2)).pvalue > 0.01


def test_reverse_sde_bad_inputs():
    def score_fn(R, sigma):
        return jnp.zeros(R.shape[:-1])

    sigmas = jso3.sigma_schedule(2.0, 0.1, 10)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        jso3.reverse_sde_sample(key, score_fn, jnp.zeros((5, 3)), sigmas)
    with pytest.raises(ValueError, match="decreasing"):
        jso3.reverse_sde_sample(key, score_fn, jnp.eye(3), sigmas[::-1])
    with pytest.raises(ValueError, match="noise"):
        jso3.reverse_sde_sample(key, score_fn, jnp.eye(3), sigmas, noise="none")
    with pytest.raises(ValueError, match="sampler"):
        jso3.sample_from_score(key, score_fn, (2,), sampler="langevin")
    # the starting rotations are checked: eagerly (ValueError), and under jit (NaN output)
    for sample in (
        lambda R: jso3.reverse_sde_sample(key, score_fn, R, sigmas),
        lambda R: jso3.probability_flow_sample(score_fn, R, sigmas),
    ):
        with pytest.raises(ValueError, match="rotation"):
            sample(jnp.stack([jnp.eye(3), 2.0 * jnp.eye(3)]))
        out = jax.jit(sample)(jnp.stack([jnp.eye(3), 2.0 * jnp.eye(3)]))
        assert np.all(np.isfinite(out[0]))
        assert np.all(np.isnan(out[1]))
    # a zero score is a pure random walk: the result is a rotation of the input's shape
    R = jso3.reverse_sde_sample(key, score_fn, jnp.eye(3), sigmas, noise="but_last")
    assert R.shape == (3, 3)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-5)
