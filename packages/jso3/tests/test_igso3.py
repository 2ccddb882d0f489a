"""IGSO(3) against the defining character series, summed independently in NumPy (conftest.py)."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

import jso3
from jso3._src import igso3 as _igso3

log_density = jax.jit(jso3.igso3_log_density)
angle_log_prob = jax.jit(jso3.igso3_angle_log_prob)
log_prob = jax.jit(lambda dist, R: dist.log_prob(R))
score = jax.jit(lambda dist, R: dist.score(R))
N_SAMPLES = 4000  # one sample size everywhere: one compilation of the sampler
sample = jax.jit(lambda dist, key: dist.sample(key, (N_SAMPLES,)))
branches = jax.jit(lambda omega, eps: (_igso3._series(omega, eps), _igso3._images(omega, eps)))
geodesic_distance = jax.jit(jso3.geodesic_distance)
exp = jax.jit(jso3.exp)
tangent_score = jax.jit(jso3.igso3_tangent_score)


def random_rotation(seed):
    return jso3.sample_uniform(jax.random.key(seed), ())


@pytest.mark.x64
@pytest.mark.parametrize("eps", [1e-3, 1e-2, 0.1, 0.5, 0.999, 1.0, 1.5, 10.0])
def test_density_matches_the_defining_series(eps, reference_f):
    omega = np.concatenate([[0.0, 1e-6, 1e-3], np.linspace(0.01, np.pi, 400)])
    f = np.exp(np.asarray(log_density(omega, eps)))
    expected = reference_f(omega, eps)
    # the reference itself cancels to ~1e-14 absolute in the far tail: relative check where it is
    # well above that, absolute check everywhere
    big = expected > 1e-5 * expected.max()
    np.testing.assert_allclose(f[big], expected[big], rtol=1e-9)
    np.testing.assert_allclose(f, expected, rtol=0, atol=1e-12 * expected.max())


@pytest.mark.x64
def test_normalised_against_the_haar_measure():
    omega = np.linspace(0.0, np.pi, 40001)
    errors = []
    for eps in np.logspace(-3, 1, 13):
        density = np.exp(np.asarray(angle_log_prob(omega, eps)))
        errors.append(abs(scipy.integrate.simpson(density, x=omega) - 1.0))
    assert max(errors) < 1e-4, errors


@pytest.mark.x64
def test_branches_agree_at_the_switch():
    omega = jnp.concatenate(
        [jnp.array([0.0, 1e-9, 1e-4, 0.1999, 0.2001]), jnp.linspace(0.3, jnp.pi, 50)]
    )
    eps = jnp.full(omega.shape, _igso3.EPS_SWITCH)
    (log_f_series, coefficient_series), (log_f_images, coefficient_images) = branches(omega, eps)
    np.testing.assert_allclose(log_f_series, log_f_images, rtol=0, atol=1e-13)
    np.testing.assert_allclose(coefficient_series, coefficient_images, rtol=0, atol=1e-13)
    # the public functions are continuous across the switch (value and score)
    below, above = _igso3.EPS_SWITCH * (1 - 1e-12), _igso3.EPS_SWITCH * (1 + 1e-12)
    np.testing.assert_allclose(log_density(omega, below), log_density(omega, above), atol=1e-11)
    v = omega[:, None] * jnp.array([[0.6, 0.0, 0.8]])
    np.testing.assert_allclose(tangent_score(v, below), tangent_score(v, above), atol=1e-11)


def test_switch_is_continuous_in_float32():
    omega = jnp.linspace(0.0, jnp.pi, 64, dtype=jnp.float32)
    switch = np.float32(_igso3.EPS_SWITCH)
    below, above = np.nextafter(switch, np.float32(0)), np.nextafter(switch, np.float32(2))
    np.testing.assert_allclose(log_density(omega, below), log_density(omega, above), atol=1e-5)
    v = omega[:, None] * jnp.array([[0.0, 1.0, 0.0]])
    np.testing.assert_allclose(tangent_score(v, below), tangent_score(v, above), atol=1e-5)


@pytest.mark.x64
@pytest.mark.parametrize("eps", [1e-3, 0.05, 0.7, 1.0, 3.0])
def test_score_is_the_tangent_gradient_of_log_prob(eps):
    dist = jso3.IGSO3(eps, mean=random_rotation(0))
    R = sample(dist, jax.random.key(1))[:8]
    extra = [dist.mean, exp(jnp.array([1e-4, 0.0, 0.0])) @ dist.mean]
    extra.append(exp(jnp.array([0.0, 3.1, 0.0])) @ dist.mean)  # near the antipode
    R = jnp.concatenate([R, jnp.stack(extra)])
    s = score(dist, R)
    h = 1e-5 * min(1.0, np.sqrt(eps))
    for u in np.eye(3):
        shift = exp(h * jnp.asarray(u))
        fd = (log_prob(dist, shift @ R) - log_prob(dist, shift.T @ R)) / (2 * h)
        np.testing.assert_allclose(s @ u, fd, rtol=1e-6, atol=1e-6 / np.sqrt(eps))
    np.testing.assert_allclose(s[-3], 0.0, atol=0)  # at the mean


@pytest.mark.x64
def test_score_in_the_body_frame():
    # the body-frame gradient (perturbation R @ exp(hat(u))) is R.T @ (world-frame score)
    dist = jso3.IGSO3(0.4, mean=random_rotation(2))
    R = sample(dist, jax.random.key(3))[:4]
    body = (jnp.swapaxes(R, -1, -2) @ score(dist, R)[..., None])[..., 0]
    h = 1e-5
    for u in np.eye(3):
        shift = exp(h * jnp.asarray(u))
        fd = (log_prob(dist, R @ shift) - log_prob(dist, R @ shift.T)) / (2 * h)
        np.testing.assert_allclose(body @ u, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.x64
@pytest.mark.parametrize("eps", [1e-3, 0.05, 0.5, 2.0, 8.0])
def test_sampled_angles_follow_the_density(eps, reference_cdf):
    dist = jso3.IGSO3(eps, mean=random_rotation(4))
    R = sample(dist, jax.random.key(int(eps * 1000) + 5))  # a different key per eps
    np.testing.assert_allclose(
        jnp.swapaxes(R, -1, -2) @ R, jnp.broadcast_to(jnp.eye(3), R.shape), atol=1e-12
    )
    angles = np.asarray(geodesic_distance(jnp.broadcast_to(dist.mean, R.shape), R))
    p = scipy.stats.kstest(angles, reference_cdf(eps)).pvalue
    assert p > 0.01, p


def test_sampler_in_float32(reference_cdf):
    dist = jso3.IGSO3(0.02)
    R = sample(dist, jax.random.key(6))
    assert R.dtype == jnp.float32
    angles = np.asarray(jso3.rotation_angle(R), dtype=np.float64)
    assert scipy.stats.kstest(angles, reference_cdf(0.02)).pvalue > 0.01


@pytest.mark.x64
@pytest.mark.parametrize(("eps0", "eps1"), [(0.1, 0.3), (0.6, 0.9)])
def test_convolution_adds_eps(eps0, eps1, reference_cdf):
    mean = random_rotation(7)
    R0 = sample(jso3.IGSO3(eps0), jax.random.key(8))
    R1 = sample(jso3.IGSO3(eps1, mean=mean), jax.random.key(9))
    angles = np.asarray(geodesic_distance(jnp.broadcast_to(mean, R1.shape), R0 @ R1))
    p = scipy.stats.kstest(angles, reference_cdf(eps0 + eps1)).pvalue
    assert p > 0.01, p


def test_float32_agrees_with_float64():
    omega = np.concatenate([[0.0, 1e-4], np.linspace(0.01, np.pi, 100)])
    for eps in [1e-3, 0.3, 0.99, 1.0, 5.0]:
        with jax.enable_x64(True):
            v = jnp.asarray(omega[:, None] * np.array([[0.0, 0.6, 0.8]]))
            ref_log_f = np.asarray(log_density(jnp.asarray(omega), eps))
            ref_score = np.asarray(tangent_score(v, eps))
        log_f = log_density(jnp.asarray(omega, jnp.float32), jnp.float32(eps))
        s = tangent_score(jnp.asarray(v, jnp.float32), jnp.float32(eps))
        assert log_f.dtype == jnp.float32
        keep = ref_log_f > ref_log_f.max() - 30  # where the density is not negligible
        np.testing.assert_allclose(log_f[keep], ref_log_f[keep], rtol=1e-5, atol=2e-5)
        scale = np.abs(ref_score).max()
        np.testing.assert_allclose(s[keep], ref_score[keep], rtol=1e-4, atol=1e-5 * scale)
    tiny = tangent_score(jnp.ones((1, 3), jnp.float32), jnp.float32(1e-6))
    assert np.all(np.isfinite(tiny))
    assert np.all(np.isfinite(log_density(jnp.array([0.0, jnp.pi]), jnp.float32(1e-6))))


@pytest.mark.x64
def test_gradient_with_respect_to_eps():
    R = exp(jnp.array([0.3, -0.5, 0.2]))
    grad = jax.jit(jax.grad(lambda eps: jso3.IGSO3(eps).log_prob(R)))
    for eps in [0.2, 0.999, 1.0, 2.5]:
        h = 1e-6
        fd = (log_prob(jso3.IGSO3(eps + h), R) - log_prob(jso3.IGSO3(eps - h), R)) / (2 * h)
        np.testing.assert_allclose(grad(eps), fd, rtol=1e-6)


def test_distribution_is_a_pytree():
    dist = jso3.IGSO3.from_sigma(0.5, mean=random_rotation(10))
    np.testing.assert_allclose(dist.eps, 0.125)
    np.testing.assert_allclose(dist.sigma, 0.5)
    leaves, treedef = jax.tree_util.tree_flatten(dist)
    assert len(leaves) == 2
    again = jax.tree_util.tree_unflatten(treedef, leaves)
    # the jitted functions take the distribution as an argument; same key -> same sample
    R = sample(dist, jax.random.key(11))
    assert R.shape == (N_SAMPLES, 3, 3)
    np.testing.assert_array_equal(R, sample(again, jax.random.key(11)))
    R = R[:3]
    np.testing.assert_array_equal(log_prob(again, R), log_prob(dist, R))
    # vmap over a batch of distributions built inside the mapped function (eps traced)
    eps = jnp.array([0.1, 0.5, 2.0])
    batched = jax.jit(jax.vmap(lambda e: jso3.IGSO3(e).log_prob(R)))(eps)
    for i, e in enumerate([0.1, 0.5, 2.0]):
        np.testing.assert_allclose(batched[i], log_prob(jso3.IGSO3(e), R), rtol=1e-5)


def test_bad_inputs_raise():
    for bad in [0.0, -1.0, float("nan")]:
        with pytest.raises(ValueError, match="eps"):
            jso3.IGSO3(bad)
        with pytest.raises(ValueError, match="eps"):
            jso3.igso3_log_density(1.0, bad)
    with pytest.raises(ValueError, match="sigma"):
        jso3.IGSO3.from_sigma(-0.1)
    with pytest.raises(ValueError, match="scalar"):
        jso3.IGSO3(jnp.ones(2))
    with pytest.raises(ValueError, match="mean"):
        jso3.IGSO3(1.0, mean=jnp.eye(2))
    dist = jso3.IGSO3(1.0)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        dist.log_prob(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        dist.score(jnp.zeros((4, 3, 2)))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        jso3.igso3_tangent_score(jnp.zeros(2), 1.0)
    with pytest.raises(ValueError, match="scalar"):
        jso3.igso3_sample_angle(jax.random.key(0), jnp.ones(2))


@pytest.mark.x64
def test_log_prob_and_score_of_non_rotations():
    # used to return the density at the mean (NaN matrix, 2 I); now refused eagerly, NaN under jit
    dist = jso3.IGSO3(0.3, mean=random_rotation(12))
    good = np.asarray(sample(dist, jax.random.key(13))[:2])
    for reason, bad in [("non-finite", np.full((3, 3), np.nan)), ("not orthogonal", 2 * np.eye(3))]:
        R = np.stack([good[0], bad, good[1]])
        for method in (dist.log_prob, dist.score):
            with pytest.raises(ValueError, match=reason):
                method(R)
        lp, sc = np.asarray(log_prob(dist, R)), np.asarray(score(dist, R))
        assert np.all(np.isfinite(lp[[0, 2]]))
        assert np.isnan(lp[1])
        assert np.all(np.isnan(sc[1]))
    with pytest.raises(ValueError, match="determinant"):
        jso3.IGSO3(0.3, mean=-np.eye(3))
    # a traced mean that is not a rotation poisons the result too
    assert np.all(np.isnan(jax.jit(lambda m: jso3.IGSO3(0.3, m).log_prob(good))(2 * np.eye(3))))


@pytest.mark.x64
def test_check_grads_of_the_density_and_score():
    # float64 finite differences, on both sides of the series/images switch (eps = 1)
    check = jax.test_util.check_grads
    omega = jnp.array([0.05, 0.7, 1.9, 3.0])
    v = jnp.array([[0.3, -0.2, 0.1], [1e-3, 2e-3, -1e-3], [1.2, 0.4, -0.9]])
    for eps in (0.05, 2.0):
        check(log_density, (omega, jnp.full(omega.shape, eps)), order=2, modes=("rev",), eps=1e-5)
        check(tangent_score, (v, jnp.full(v.shape[:1], eps)), order=1, modes=("fwd", "rev"))
