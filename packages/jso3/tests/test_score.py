"""Denoising score matching: the target, a trained network against the analytic IGSO(3) score,
checkpoints, and sampling with a score through the probability-flow ODE."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

import jso3


def _noised_igso3_score(mean, sigma0):
    """The exact score of IGSO3(mean, sigma0) noised by IGSO3(sigma): IGSO3(mean, sqrt(s0^2 + s^2))."""

    def score_fn(R, sigma, context=None):
        del context
        v = jso3.log(R @ mean.T)
        return jso3.igso3_tangent_score(v, 0.5 * (sigma0**2 + sigma**2))

    return score_fn


@pytest.mark.x64
def test_dsm_loss_is_minimised_by_the_analytic_score():
    mean = jso3.sample_uniform(jax.random.key(0))
    sigma0 = 0.4
    R0 = jso3.IGSO3.from_sigma(sigma0, mean).sample(jax.random.key(1), (3000,))
    exact = _noised_igso3_score(mean, sigma0)
    c = jnp.array([0.6, -0.3, 0.5])

    candidates = {
        "exact": exact,
        "scaled up": lambda R, s, ctx: 1.1 * exact(R, s),
        "scaled down": lambda R, s, ctx: 0.9 * exact(R, s),
        "shifted": lambda R, s, ctx: exact(R, s) + c[None],
        # a score in the body instead of the world frame
        "body frame": lambda R, s, ctx: jnp.einsum("...ji,...j->...i", R, exact(R, s)),
    }

    @jax.jit
    def losses(R0):  # same key: the same noise for every candidate
        return {
            name: jso3.dsm_loss(
                fn, jax.random.key(2), R0, sigma_min=0.05, sigma_max=2.0, num_grid=256
            )
            for name, fn in candidates.items()
        }

    loss = {name: float(value) for name, value in losses(R0).items()}
    base = loss["exact"]
    assert base < min(loss["scaled up"], loss["scaled down"], loss["body frame"]), loss
    shifted = loss["shifted"]
    # loss(s + c) - loss(s) = E[sigma^2] |c|^2 + (a zero-mean cross term) when s is the true score;
    # E[sigma^2] for log-uniform sigma in [a, b] is (b^2 - a^2) / (2 log(b / a)).
    expected = (2.0**2 - 0.05**2) / (2 * np.log(2.0 / 0.05)) * float(c @ c)
    np.testing.assert_allclose(shifted - base, expected, rtol=0.05)


def test_network_learns_the_score_of_one_blob(capsys):
    mean = jso3.exp(jnp.array([0.3, -0.2, 1.0]))
    sigma0 = 0.3
    # one sample shape (2000,) across the tests: the jitted angle sampler compiles once per shape
    data = jso3.IGSO3.from_sigma(sigma0, mean).sample(jax.random.key(0), (2000,))
    model = jso3.ScoreNet(hidden=64, depth=2, rngs=nnx.Rngs(0))
    model, losses = jso3.train_dsm(
        model, jax.random.key(1), data, sigma_min=0.05, sigma_max=3.0, num_steps=400,
        batch_size=128, learning_rate=5e-3, steps_per_call=400, num_grid=128,
    )  # fmt: skip
    assert "train_dsm: step 400/400" in capsys.readouterr().err  # the progress line
    assert losses.shape == (400,)
    assert np.all(np.isfinite(losses))
    exact = _noised_igso3_score(mean, sigma0)
    for sigma in (0.3, 0.6):
        noised = jso3.IGSO3.from_sigma(np.sqrt(sigma0**2 + sigma**2), mean)
        R = noised.sample(jax.random.key(2), (2000,))
        truth = exact(R, sigma)
        error = jnp.mean(jnp.sum((model(R, sigma) - truth) ** 2, -1))
        relative = float(jnp.sqrt(error / jnp.mean(jnp.sum(truth**2, -1))))
        assert relative < 0.2, (sigma, relative)


def test_checkpoint_round_trip_is_bit_for_bit(tmp_path):
    model = jso3.ScoreNet(context_dim=2, hidden=16, depth=2, rngs=nnx.Rngs(0))
    ctx = jax.random.normal(jax.random.key(1), (10, 2))
    path = tmp_path / "score.msgpack"
    jso3.save_checkpoint(path, model)
    jso3.save_checkpoint(path, model)  # overwriting goes through os.replace as well
    assert os.listdir(tmp_path) == ["score.msgpack"]  # no temporary file left behind
    assert path.read_bytes()[:1] != b"\x80"  # not a pickle

    other = jso3.ScoreNet(context_dim=2, hidden=16, depth=2, rngs=nnx.Rngs(7))
    before = jax.tree.leaves(nnx.state(other))
    restored = jso3.load_checkpoint(path, other)
    saved_leaves = jax.tree.leaves(nnx.state(model))
    restored_leaves = jax.tree.leaves(nnx.state(restored))
    assert len(saved_leaves) == len(restored_leaves) > 0
    for a, b, c in zip(saved_leaves, restored_leaves, before, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype
        assert a.shape == b.shape
        assert a.tobytes() == b.tobytes()
        assert not np.array_equal(a, np.asarray(c)) or not a.any()
    R = jso3.sample_uniform(jax.random.key(3), (10,))
    np.testing.assert_array_equal(model(R, 0.5, ctx), restored(R, 0.5, ctx))

    wrong = jso3.ScoreNet(context_dim=2, hidden=16, depth=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="structure"):
        jso3.load_checkpoint(path, wrong)


def test_bad_inputs_raise():
    model = jso3.ScoreNet(hidden=8, depth=1, rngs=nnx.Rngs(0))
    R = jso3.sample_uniform(jax.random.key(0), (4,))
    assert model(R, jnp.full((4,), 0.5)).shape == (4, 3)
    with pytest.raises(ValueError, match="shape"):
        model(jnp.zeros((4, 3)), 0.5)
    with pytest.raises(ValueError, match="context"):
        model(R, 0.5, jnp.zeros((4, 2)))
    conditional = jso3.ScoreNet(context_dim=2, hidden=8, depth=1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="context"):
        conditional(R, 0.5)
    with pytest.raises(ValueError, match="context"):
        conditional(R, 0.5, jnp.zeros((4, 3)))
    score = _noised_igso3_score(jnp.eye(3), 0.3)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        jso3.dsm_loss(score, jax.random.key(0), R, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="sigma_min"):
        jso3.dsm_loss(score, jax.random.key(0), R, sigma_min=-1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="num_steps"):
        jso3.train_dsm(model, jax.random.key(0), R, sigma_min=0.1, sigma_max=1.0, num_steps=0)
    with pytest.raises(ValueError, match="context"):
        jso3.train_dsm(
            model, jax.random.key(0), R, context=jnp.zeros((3, 2)), sigma_min=0.1,
            sigma_max=1.0, num_steps=1,
        )  # fmt: skip
    # under jit the range is not concrete: no eager check, the loss still works
    traced = jax.jit(
        lambda lo, hi: jso3.dsm_loss(score, jax.random.key(0), R, sigma_min=lo, sigma_max=hi)
    )
    assert np.isfinite(float(traced(0.1, 1.0)))
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        jso3.sample_from_score(
            lambda R, s: s, jax.random.key(0), (2,), sigma_max=0.1, sigma_min=1.0
        )


def test_sampling_with_the_exact_mixture_score(reference_cdf):
    # the four-blob mixture noised by IGSO3(s) is the mixture with sigma -> sqrt(0.2^2 + s^2), so its
    # score is exact: the ODE from the uniform distribution must give four IGSO(3)(0.2) blobs
    mixture = jso3.four_blobs()
    sigma_min = 0.01

    def score_fn(R, sigma):
        return mixture.noised(sigma).score(R)

    sample = jax.jit(
        lambda key: jso3.sample_from_score(
            score_fn, key, (2000,), sigma_max=3.0, sigma_min=sigma_min, num_steps=100
        )
    )
    R = sample(jax.random.key(0))
    shape = (R.shape[0], 4, 3, 3)
    angles = jso3.geodesic_distance(
        jnp.broadcast_to(R[:, None], shape), jnp.broadcast_to(mixture.means[None], shape)
    )  # (n, 4)
    nearest = np.asarray(jnp.argmin(angles, -1))
    counts = np.bincount(nearest, minlength=4)
    assert scipy.stats.chisquare(counts).pvalue > 1e-3, counts
    eps = float(mixture.eps) + 0.5 * sigma_min**2
    p = scipy.stats.kstest(np.asarray(jnp.min(angles, -1)), reference_cdf(eps)).pvalue
    assert p > 1e-3, p
