"""Toy distributions (exact samplers, densities, scores), the federation's C2ST (`jflows.c2st`) on
rotations, and the plots."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

import jflows
import jso3


def _angles_to_means(R, means):
    shape = (R.shape[0], means.shape[0], 3, 3)
    return jso3.geodesic_distance(
        jnp.broadcast_to(R[:, None], shape), jnp.broadcast_to(means[None], shape)
    )


def test_four_blobs_sampler(reference_cdf):
    mixture = jso3.four_blobs()
    R = mixture.sample(jax.random.key(0), (2000,))
    angles = _angles_to_means(R, mixture.means)
    counts = np.bincount(np.asarray(jnp.argmin(angles, -1)), minlength=4)
    assert scipy.stats.chisquare(counts).pvalue > 1e-3, counts
    nearest = np.asarray(jnp.min(angles, -1))
    assert scipy.stats.kstest(nearest, reference_cdf(0.5 * 0.2**2)).pvalue > 1e-3


@pytest.mark.x64
def test_mixture_density_and_score(reference_f):
    mixture = jso3.four_blobs(sigma=0.5).noised(0.3)
    np.testing.assert_allclose(float(mixture.eps), 0.5 * (0.5**2 + 0.3**2), rtol=1e-12)
    R = jso3.sample_uniform(jax.random.key(1), (50,))
    # density: the weighted sum of the brute-force series at the angle to each mean
    angles = np.asarray(_angles_to_means(R, mixture.means))
    f = reference_f(angles.ravel(), float(mixture.eps)).reshape(angles.shape)
    expected = f @ np.full(4, 0.25)
    np.testing.assert_allclose(np.exp(np.asarray(mixture.log_prob(R))), expected, rtol=1e-9)
    # score: the world-frame derivative d/dt log p(exp(t u) R) by central differences
    h = 1e-5
    for u in np.eye(3):
        plus = mixture.log_prob(jso3.exp(jnp.asarray(h * u))[None] @ R)
        minus = mixture.log_prob(jso3.exp(jnp.asarray(-h * u))[None] @ R)
        np.testing.assert_allclose(
            mixture.score(R) @ u, (plus - minus) / (2 * h), rtol=1e-5, atol=1e-6
        )


def test_checkerboard_sampler():
    board = jso3.Checkerboard()
    R = board.sample(jax.random.key(0), (8000,))
    np.testing.assert_allclose(
        jnp.swapaxes(R, -1, -2) @ R, np.broadcast_to(np.eye(3), R.shape), atol=1e-5
    )
    np.testing.assert_allclose(jnp.linalg.det(R), 1.0, atol=1e-5)
    # independent recomputation of the cells from the rotated z-axis
    axis = np.asarray(R[:, :, 2], dtype=np.float64)
    phi = np.mod(np.arctan2(axis[:, 1], axis[:, 0]), 2 * np.pi)
    i = np.floor(phi / (2 * np.pi) * 8).astype(int)
    j = np.floor((axis[:, 2] + 1) / 2 * 4).astype(int)
    assert np.all((i + j) % 2 == 0)
    counts = np.bincount(4 * i + j, minlength=32)
    black = [4 * a + b for a in range(8) for b in range(4) if (a + b) % 2 == 0]
    assert scipy.stats.chisquare(counts[black]).pvalue > 1e-3
    # uniform within cells (equal area: uniform in longitude and in z) and in the third Euler angle
    u_phi = phi / (2 * np.pi) * 8 - i
    u_z = (axis[:, 2] + 1) / 2 * 4 - j
    psi = np.mod(np.arctan2(R[:, 2, 1], -R[:, 2, 0]), 2 * np.pi) / (2 * np.pi)
    for u in (u_phi, u_z, psi):
        assert scipy.stats.kstest(u, "uniform").pvalue > 1e-3
    np.testing.assert_allclose(board.log_prob(R), np.log(2.0), rtol=1e-6)
    # half of the Haar measure is black
    uniform = jso3.sample_uniform(jax.random.key(1), (8000,))
    inside = np.isfinite(np.asarray(board.log_prob(uniform)))
    assert abs(inside.mean() - 0.5) < 4 * 0.5 / np.sqrt(8000)
    with pytest.raises(ValueError, match="n_lon"):
        jso3.Checkerboard(n_lon=3)


def _features(R):
    """Rotations as Euclidean features for `jflows.c2st`: the flattened matrix (9 numbers, a
    continuous and injective map of SO(3), unlike quaternions with their sign ambiguity)."""
    return jnp.reshape(R, (-1, 9))


# a budget for the default suite (measured: 0.563 +- 0.008 for the real difference below, 0.495 for
# the null; the defaults, 5 folds of 10000 steps, are for real comparisons)
C2ST_OPTIONS = {"steps": 600, "batch_size": 256, "eval_every": 200, "folds": 3}


def test_jflows_c2st_on_rotations_detects_a_real_difference_and_not_a_null(reference_f):
    # IGSO3(eps = 0.3) against IGSO3(eps = 0.45), both at the identity: the Bayes accuracy
    # E[max(p, q) / (p + q)] = (1/2) int max(f_0.3, f_0.45) dHaar, from the brute-force series
    omega = np.linspace(0.0, np.pi, 20001)
    haar = (1.0 - np.cos(omega)) / np.pi
    bayes = 0.5 * scipy.integrate.simpson(
        np.maximum(reference_f(omega, 0.3), reference_f(omega, 0.45)) * haar, x=omega
    )
    assert 0.58 < bayes < 0.59  # 0.587
    n = 2000
    p = jso3.IGSO3(0.3).sample(jax.random.key(0), (n,))
    q = jso3.IGSO3(0.45).sample(jax.random.key(1), (n,))
    p_again = jso3.IGSO3(0.3).sample(jax.random.key(2), (n,))
    # jflows' classifier broadcasts its biases (`x @ w + b`), which the test suite's
    # rank_promotion="raise" refuses; allowed for this call only
    with jax.numpy_rank_promotion("allow"):
        different = jflows.c2st(jax.random.key(3), _features(p), _features(q), **C2ST_OPTIONS)
        same = jflows.c2st(jax.random.key(3), _features(p), _features(p_again), **C2ST_OPTIONS)
    # detected: well above chance, and not above the Bayes accuracy beyond its error
    assert different.accuracy > 0.5 + 3 * different.std_error, different
    assert different.accuracy < bayes + 3 * different.std_error, (different, bayes)
    # not detected: at chance (the binomial error is 0.5 / sqrt(2 n) = 0.008)
    assert abs(same.accuracy - 0.5) < 4 * same.std_error, same


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    eps = 0.5 * 0.5**2
    R = jso3.IGSO3.from_sigma(0.5).sample(jax.random.key(1), (2000,))
    path = tmp_path / "igso3.png"
    fig = jso3.plot_rotations(
        R,
        path,
        angle_density=lambda w: np.exp(np.asarray(jso3.igso3_angle_log_prob(w, eps))),
        title="IGSO(3), sigma = 0.5",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000
    assert len(fig.axes) >= 2
