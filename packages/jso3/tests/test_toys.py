"""Toy distributions (exact samplers, densities, scores), the C2ST metric and the plots."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

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


def test_c2st_same_and_different():
    mixture = jso3.four_blobs()
    a = mixture.sample(jax.random.key(0), (2000,))
    b = mixture.sample(jax.random.key(1), (2000,))
    same = float(jso3.c2st(jax.random.key(2), a, b, num_steps=300))
    # held-out accuracy under the null: mean 0.5, sd 0.5 / sqrt(2000) = 0.011
    assert abs(same - 0.5) < 0.05, same
    uniform = jso3.sample_uniform(jax.random.key(3), (2000,))
    different = float(jso3.c2st(jax.random.key(2), a, uniform, num_steps=300))
    assert different > 0.9, different  # measured 0.96 (an MLP on 1000 points per class)
    with pytest.raises(ValueError, match="at least 4"):
        jso3.c2st(jax.random.key(0), a[:3], b)
    with pytest.raises(ValueError, match="shape"):
        jso3.c2st(jax.random.key(0), a[None], b)


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
