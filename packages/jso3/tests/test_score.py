"""Denoising score matching: the target, a trained network against the analytic IGSO(3) score,
purity and checkpoint/resume of the trainer, checkpoints in the federation format, and sampling with a
score through the probability-flow ODE."""

import os

import flax.serialization
import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
import scipy.stats
from flax import nnx

import jflows
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
                jax.random.key(2), fn, R0, sigma_min=0.05, sigma_max=2.0, num_grid=256
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
    initial = jso3.ScoreNet(hidden=64, depth=2, rngs=nnx.Rngs(0))
    before = [np.array(x) for x in jax.tree.leaves(nnx.state(initial))]
    model, history = jso3.train_dsm(
        jax.random.key(1), initial, data, sigma_min=0.05, sigma_max=3.0, num_steps=400,
        batch_size=128, learning_rate=5e-3, steps_per_call=400, num_grid=128,
    )  # fmt: skip
    err = capsys.readouterr().err  # the rich progress bar, with the step count and the loss
    for text in ("train_dsm", "400/400", "loss"):
        assert text in err, err
    losses = history["loss"]
    assert isinstance(losses, np.ndarray)
    assert losses.shape == (400,)
    assert np.all(np.isfinite(losses))
    # pure: the model passed in is unchanged, bit for bit, and the result is another module
    assert model is not initial
    after = jax.tree.leaves(nnx.state(initial))
    assert all(a.tobytes() == np.asarray(b).tobytes() for a, b in zip(before, after, strict=True))
    assert any(
        not np.array_equal(a, np.asarray(b))
        for a, b in zip(before, jax.tree.leaves(nnx.state(model)), strict=True)
    )
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
    before = [np.array(x) for x in jax.tree.leaves(nnx.state(other))]
    restored = jso3.load_checkpoint(path, other)
    assert restored is not other
    # pure: the template keeps its own values
    for b, c in zip(before, jax.tree.leaves(nnx.state(other)), strict=True):
        assert b.tobytes() == np.asarray(c).tobytes()
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


def test_checkpoint_records_its_origin_and_refuses_a_foreign_file(tmp_path):
    model = jso3.ScoreNet(hidden=8, depth=1, rngs=nnx.Rngs(0))
    path = jso3.save_checkpoint(tmp_path / "score.ckpt", model, metadata={"note": "test"})
    header = flax.serialization.msgpack_restore(path.read_bytes())
    assert header["format"] == "jpm-federation/checkpoint"
    assert header["package"] == "jso3"
    assert header["package_version"] == jso3.__version__
    assert header["kind"] == "jso3.ScoreNet"
    assert header["metadata"] == {"note": "test"}
    # another package's file, another kind of module, another minor version, a bare msgpack state
    # (the 0.1 format) and a random file: all refused, naming the field
    state = nnx.state(model)
    foreign = tmp_path / "foreign.ckpt"
    jflows.write_checkpoint(foreign, state, package="jscore", package_version="0.2.0",
                            kind="jso3.ScoreNet")  # fmt: skip
    with pytest.raises(ValueError, match="'package'"):
        jso3.load_checkpoint(foreign, model)
    conditional = jso3.ConditionalScoreNet(
        jso3.EGNN(1, hidden=4, num_layers=1, rngs=nnx.Rngs(0)), hidden=8, depth=1,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    with pytest.raises(ValueError, match="'kind'"):
        jso3.load_checkpoint(path, conditional)
    old = tmp_path / "old.ckpt"
    jflows.write_checkpoint(old, state, package="jso3", package_version="0.1.0",
                            kind="jso3.ScoreNet")  # fmt: skip
    with pytest.raises(ValueError, match="'package_version'"):
        jso3.load_checkpoint(old, model)
    bare = tmp_path / "bare.msgpack"
    bare.write_bytes(
        flax.serialization.msgpack_serialize(
            jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
        )
    )
    with pytest.raises(ValueError, match="format"):
        jso3.load_checkpoint(bare, model)
    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(ValueError, match="not a jpm-federation/checkpoint file"):
        jso3.load_checkpoint(noise, model)


def _tiny_training(key, model, data, **kwargs):
    return jso3.train_dsm(
        key, model, data, sigma_min=0.1, sigma_max=2.0, num_steps=12, batch_size=16,
        learning_rate=1e-2, steps_per_call=4, num_grid=64, progress=False, **kwargs,
    )  # fmt: skip


def test_train_dsm_resumes_from_its_checkpoint_bit_for_bit(tmp_path, monkeypatch):
    from jso3._src import score as score_module

    data = jso3.IGSO3.from_sigma(0.4).sample(jax.random.key(0), (64,))
    model = jso3.ScoreNet(hidden=8, depth=1, rngs=nnx.Rngs(0))
    key = jax.random.key(1)
    reference, reference_history = _tiny_training(key, model, data)

    # a run that dies after its first chunk (4 of 12 steps) has written a checkpoint ...
    path = tmp_path / "train.ckpt"
    write = score_module._write_training_checkpoint
    calls = []

    def write_then_die(*args):
        write(*args)
        calls.append(args[1]["step"])
        raise KeyboardInterrupt

    monkeypatch.setattr(score_module, "_write_training_checkpoint", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        _tiny_training(key, model, data, checkpoint=path)
    assert calls == [4]
    # ... and the rerun resumes there (two more chunks) and ends exactly where the uninterrupted run
    # ends: parameters and loss history bit for bit
    monkeypatch.setattr(
        score_module,
        "_write_training_checkpoint",
        lambda *a: calls.append(a[1]["step"]) or write(*a),
    )
    resumed, history = _tiny_training(key, model, data, checkpoint=path)
    assert calls == [4, 8, 12]
    for a, b in zip(
        jax.tree.leaves(nnx.state(reference)), jax.tree.leaves(nnx.state(resumed)), strict=True
    ):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    np.testing.assert_array_equal(history["loss"], reference_history["loss"])
    # a finished checkpoint: the rerun trains nothing and returns the same model
    again, _ = _tiny_training(key, model, data, checkpoint=path)
    assert calls == [4, 8, 12]
    for a, b in zip(
        jax.tree.leaves(nnx.state(reference)), jax.tree.leaves(nnx.state(again)), strict=True
    ):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    # another run's file is refused: other key, other data
    with pytest.raises(ValueError, match="another run"):
        _tiny_training(jax.random.key(2), model, data, checkpoint=path)
    with pytest.raises(ValueError, match="another run"):
        _tiny_training(key, model, data[::-1], checkpoint=path)


def test_train_dsm_refuses_data_that_are_not_rotations():
    model = jso3.ScoreNet(hidden=8, depth=1, rngs=nnx.Rngs(0))
    data = np.array(jso3.sample_uniform(jax.random.key(0), (8,)))
    for bad, match in [
        (np.zeros((0, 3, 3), np.float32), "empty"),
        (
            np.concatenate([data[:3], np.full((1, 3, 3), np.nan, np.float32), data[3:]]),
            "non-finite",
        ),
        (data * 2.0, "not orthogonal"),
        (-data, "determinant"),
    ]:
        with pytest.raises(ValueError, match=match):
            _tiny_training(jax.random.key(1), model, bad)


@pytest.mark.x64
def test_dsm_loss_gradient_matches_finite_differences():
    # float64 parameters (the nnx layers promote), a fixed key: the loss is a smooth function of
    # the network parameters
    model = jso3.ScoreNet(hidden=6, depth=1, num_fourier=1, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
    R0 = jso3.IGSO3.from_sigma(0.5).sample(jax.random.key(1), (16,))

    def loss(params):
        net = nnx.merge(graphdef, params)
        return jso3.dsm_loss(
            jax.random.key(2), lambda R, s, c: net(R, s, c), R0, sigma_min=0.1, sigma_max=1.0,
            num_grid=64,
        )  # fmt: skip

    jax.test_util.check_grads(jax.jit(loss), (params,), order=1, modes=("rev",), eps=1e-6)


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
        jso3.dsm_loss(jax.random.key(0), score, R, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="sigma_min"):
        jso3.dsm_loss(jax.random.key(0), score, R, sigma_min=-1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="num_steps"):
        jso3.train_dsm(jax.random.key(0), model, R, sigma_min=0.1, sigma_max=1.0, num_steps=0)
    with pytest.raises(ValueError, match="context"):
        jso3.train_dsm(
            jax.random.key(0), model, R, context=jnp.zeros((3, 2)), sigma_min=0.1,
            sigma_max=1.0, num_steps=1,
        )  # fmt: skip
    # under jit the range is not concrete: no eager check, the loss still works
    traced = jax.jit(
        lambda lo, hi: jso3.dsm_loss(jax.random.key(0), score, R, sigma_min=lo, sigma_max=hi)
    )
    assert np.isfinite(float(traced(0.1, 1.0)))
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        jso3.sample_from_score(
            jax.random.key(0), lambda R, s: s, (2,), sigma_max=0.1, sigma_min=1.0
        )
    # rotations: eagerly refused; under jit a non-rotation poisons the loss and its gradient
    with pytest.raises(ValueError, match="not orthogonal"):
        jso3.dsm_loss(jax.random.key(0), score, 2.0 * R, sigma_min=0.1, sigma_max=1.0)
    jitted = jax.jit(
        jax.value_and_grad(
            lambda R0, c: jso3.dsm_loss(
                jax.random.key(0), lambda R, s, ctx: score(R, s) + c[None], R0, sigma_min=0.1,
                sigma_max=1.0,
            ),
            argnums=1,
        )
    )  # fmt: skip
    value, grad = jitted(R, jnp.zeros(3))
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad))
    value, grad = jitted(R.at[1].multiply(2.0), jnp.zeros(3))
    assert np.isnan(float(value))
    assert np.all(np.isnan(grad))


def test_sampling_with_the_exact_mixture_score(reference_cdf):
    # the four-blob mixture noised by IGSO3(s) is the mixture with sigma -> sqrt(0.2^2 + s^2), so its
    # score is exact: the ODE from the uniform distribution must give four IGSO(3)(0.2) blobs
    mixture = jso3.four_blobs()
    sigma_min = 0.01

    def score_fn(R, sigma):
        return mixture.noised(sigma).score(R)

    sample = jax.jit(
        lambda key: jso3.sample_from_score(
            key, score_fn, (2000,), sigma_max=3.0, sigma_min=sigma_min, num_steps=100,
            sampler="ode",
        )
    )  # fmt: skip
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
