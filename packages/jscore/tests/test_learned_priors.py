"""Learned score priors: the networks' shapes and symmetries, denoising score matching against analytic
Gaussian scores, the data pipeline, and checkpoint/resume.

References are independent of the code under test: scores of N(0, C + sigma^2 I) from dense NumPy
linear algebra, the closed-form minimum of the DSM loss for a Gaussian, and the exact Wiener filter.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jflows
import jscore

COV = np.array([[1.0, 0.6], [0.6, 0.5]])


def _gaussian_data(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 2)) @ np.linalg.cholesky(COV).T).astype(np.float32)


def _randomise(module, seed=0):
    """Replace every parameter by a random one (the output layers are zero at initialisation)."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    leaves, treedef = jax.tree.flatten(nnx.to_pure_dict(params))
    rng = np.random.default_rng(seed)  # host draws: no XLA compilation per shape
    leaves = [jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype) for x in leaves]
    return nnx.merge(graphdef, nnx.State(jax.tree.unflatten(treedef, leaves)), rest)


# ---------------------------------------------------------------------------------------------------
# Networks


def test_mlp_shapes_and_checks():
    model = _randomise(jscore.ScoreMLP(3, hidden_features=(16, 16), rngs=nnx.Rngs(0)))
    call = jax.jit(lambda x, s: model(x, s))
    x = jax.random.normal(jax.random.key(1), (5, 3))
    sigma = jnp.linspace(0.1, 1.0, 5)
    out = call(x, sigma)
    assert out.shape == (5, 3)
    # A batch is the stack of single calls (vmapped here); a scalar sigma is broadcast.
    np.testing.assert_allclose(out, jax.vmap(call)(x, sigma), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(call(x, 0.5), call(x, jnp.full((5,), 0.5)), rtol=1e-6)
    # Untrained (zero output layer): zero score.
    fresh = jscore.ScoreMLP(3, rngs=nnx.Rngs(0))
    assert np.all(np.asarray(fresh(x, sigma)) == 0.0)
    with pytest.raises(ValueError, match="ScoreMLP"):
        model(jnp.zeros((5, 4)), 0.5)
    with pytest.raises(ValueError, match="sigma must be positive"):
        model(x, 0.0)
    with pytest.raises(ValueError, match="shape"):
        model(x, jnp.ones((4,)))


def test_unet_shapes_batch_and_periodic_equivariance():
    model = _randomise(jscore.ScoreUNet((8, 16), embedding_dim=16, rngs=nnx.Rngs(0)))
    call = jax.jit(lambda x, s: model(x, s))
    x = jax.random.normal(jax.random.key(1), (3, 16, 16))
    sigma = jnp.array([0.05, 0.3, 1.0])
    out = call(x, sigma)
    assert out.shape == x.shape
    assert float(jnp.std(out)) > 0.0
    np.testing.assert_allclose(jax.jit(model)(x[1], sigma[1]), out[1], rtol=1e-4, atol=1e-5)
    # Exactly equivariant to periodic shifts by multiples of 2^(levels - 1) = 2 pixels, including
    # across the boundary (wrap padding) ...
    atol = 1e-4 * float(jnp.abs(out).max())
    for shift in [(2, 0), (0, 8), (6, -10)]:
        shifted = call(jnp.roll(x, shift, axis=(1, 2)), sigma)
        np.testing.assert_allclose(shifted, jnp.roll(out, shift, axis=(1, 2)), rtol=1e-4, atol=atol)
    # ... but not to odd shifts (pooling on a fixed grid): the test above can fail.
    odd = call(jnp.roll(x, 1, axis=1), sigma)
    assert float(jnp.abs(odd - jnp.roll(out, 1, axis=1)).max()) > 100 * atol
    with pytest.raises(ValueError, match="divisible"):
        model(jnp.zeros((15, 16)), 0.5)
    with pytest.raises(ValueError, match="sigma must be positive"):
        model(x, -1.0)


def test_hybrid_score_is_the_gaussian_score_plus_residual(ref):
    shape = (8, 8)
    k = jscore.fourier_wavenumber(shape)
    power = ref.power_law(k)
    prior = jscore.GaussianFieldPrior(power, shape)
    unet = jscore.ScoreUNet((8, 8), embedding_dim=8, rngs=nnx.Rngs(0))
    hybrid = jscore.HybridScore(prior, unet)
    x = jax.random.normal(jax.random.key(0), (2, *shape))
    sigma = jnp.array([0.1, 0.7])
    # Dense reference: -(C + sigma^2 I)^-1 x.
    full_power = ref.power_law(ref.full_wavenumber(shape))
    cov = ref.dense_circulant(full_power, shape)
    expected = [
        -np.linalg.solve(cov + s**2 * np.eye(64), np.asarray(xi, np.float64).ravel()).reshape(shape)
        for xi, s in zip(x, np.asarray(sigma), strict=True)
    ]
    np.testing.assert_allclose(jax.jit(hybrid)(x, sigma), np.stack(expected), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(jax.jit(hybrid)(x[0], sigma[0]), expected[0], rtol=1e-4, atol=1e-4)
    # With a non-zero residual, the sum; the power map is not a trainable parameter.
    hybrid = jscore.HybridScore(prior, _randomise(unet))
    total, residual = jax.jit(lambda x, s: (hybrid(x, s), hybrid.residual(x, s)))(x, sigma)
    assert float(jnp.abs(residual).max()) > 0.01
    np.testing.assert_allclose(total, np.stack(expected) + residual, rtol=1e-4, atol=1e-4)
    params = nnx.to_pure_dict(nnx.state(hybrid, nnx.Param))
    assert set(params) == {"residual"}
    with pytest.raises(ValueError, match="HybridScore"):
        hybrid(jnp.zeros((4, 4)), 0.5)


# ---------------------------------------------------------------------------------------------------
# Loss and training


def test_log_uniform_sigma_and_checks():
    s = jscore.log_uniform_sigma(jax.random.key(0), 20000, 0.01, 10.0)
    assert s.shape == (20000,)
    assert float(s.min()) >= 0.01
    assert float(s.max()) <= 10.0
    logs = np.log(np.asarray(s, np.float64))
    # Uniform in log: mean and variance of log sigma.
    np.testing.assert_allclose(logs.mean(), 0.5 * (np.log(0.01) + np.log(10.0)), atol=0.05)
    np.testing.assert_allclose(logs.var(), np.log(1000.0) ** 2 / 12, rtol=0.03)
    with pytest.raises(ValueError, match="sigma_min"):
        jscore.log_uniform_sigma(jax.random.key(0), 4, 0.0, 1.0)
    with pytest.raises(ValueError, match="sigma_min <= sigma_max"):
        jscore.log_uniform_sigma(jax.random.key(0), 4, 2.0, 1.0)
    with pytest.raises(ValueError, match="sigma_max"):
        jscore.DSMTrainer(jscore.ScoreMLP(2, rngs=nnx.Rngs(0)), sigma_min=0.1, sigma_max=-1.0)


def test_dsm_loss_minimum_is_the_analytic_one():
    """At the exact score of N(0, C + sigma^2 I) the loss is sum_k c_k / (c_k + sigma^2)."""
    n = 200_000
    x = jnp.asarray(_gaussian_data(n, seed=1))
    sigma = jnp.asarray(np.repeat([0.1, 0.5, 2.0], [n // 4, n // 4, n - n // 2]), jnp.float32)
    noise = jax.random.normal(jax.random.key(3), x.shape)
    eig = np.linalg.eigvalsh(COV)

    def exact(xs, s):
        prec = np.stack([np.linalg.inv(COV + v**2 * np.eye(2)) for v in (0.1, 0.5, 2.0)])
        which = jnp.searchsorted(jnp.asarray([0.1, 0.5, 2.0], jnp.float32), s)
        return -jnp.einsum("nij,nj->ni", jnp.asarray(prec, jnp.float32)[which], xs)

    minimum = np.mean(
        [np.sum(eig / (eig + v**2)) for v in np.asarray(sigma, np.float64)], dtype=np.float64
    )
    loss = float(jscore.dsm_loss(exact, x, sigma, noise))
    np.testing.assert_allclose(loss, minimum, rtol=0.01)
    # Any other score does worse (here: the score of the wrong covariance).
    worse = float(jscore.dsm_loss(lambda xs, s: -xs / (1.0 + s[:, None] ** 2), x, sigma, noise))
    assert worse > 1.05 * minimum
    with pytest.raises(ValueError, match="dsm_loss"):
        jscore.dsm_loss(exact, x, sigma[:10], noise)


def test_dsm_trained_mlp_matches_the_analytic_gaussian_score():
    data = _gaussian_data(4096)
    trainer = jscore.DSMTrainer(
        jscore.ScoreMLP(2, hidden_features=(64, 64), rngs=nnx.Rngs(0)),
        sigma_min=0.05,
        sigma_max=3.0,
        learning_rate=3e-3,
        ema_decay=0.99,
    )
    stream = jscore.MinibatchStream(jax.random.key(1), data, 256)
    state, history = trainer.train(jax.random.key(2), trainer.init(), stream, 500, progress=False)
    losses = history["loss"]
    assert losses.shape == (500,)
    assert int(state.step) == 500
    model = trainer.model(state.ema_params)
    rng = np.random.default_rng(5)
    for sigma in [0.3, 0.5, 1.0]:
        cov = COV + sigma**2 * np.eye(2)
        xs = rng.standard_normal((4000, 2)) @ np.linalg.cholesky(cov).T
        exact = -xs @ np.linalg.inv(cov)
        learned = np.asarray(model(jnp.asarray(xs, jnp.float32), sigma), np.float64)
        rel = np.sqrt(np.sum((learned - exact) ** 2) / np.sum(exact**2))
        assert rel < 0.1, (sigma, rel)
    # The final loss is close to its analytic minimum averaged over log-uniform sigma.
    eig = np.linalg.eigvalsh(COV)
    grid = np.exp(np.linspace(np.log(0.05), np.log(3.0), 10001))
    minimum = np.mean(np.sum(eig / (eig + grid[:, None] ** 2), axis=1))
    assert abs(np.mean(losses[-200:]) / minimum - 1.0) < 0.05


# ---------------------------------------------------------------------------------------------------
# Data pipeline


def test_memory_mapped_stream_yields_each_sample_once_per_epoch(tmp_path):
    n, batch = 103, 16
    data = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    path = tmp_path / "samples.npy"
    np.save(path, data)
    stream = jscore.MinibatchStream(jax.random.key(0), path, batch, drop_remainder=False)
    assert isinstance(stream.data, np.memmap)
    assert stream.steps_per_epoch == 7
    orders = []
    for epoch in range(3):
        rows = np.concatenate(list(stream.epoch(epoch)))
        assert rows.shape == (n, 3)
        np.testing.assert_array_equal(rows[:, 0], rows[:, 2])  # rows stay whole
        ids = rows[:, 0].astype(int)
        np.testing.assert_array_equal(np.sort(ids), np.arange(n))
        orders.append(ids)
    assert not np.array_equal(orders[0], orders[1])  # reshuffled
    # Dropping the remainder: full batches only, no repeats; same order as without dropping.
    dropped = jscore.MinibatchStream(jax.random.key(0), path, batch)
    assert dropped.steps_per_epoch == 6
    ids = np.concatenate([b[:, 0] for b in dropped.epoch(1)]).astype(int)
    assert len(ids) == 96
    assert len(set(ids)) == 96
    np.testing.assert_array_equal(ids, orders[1][:96])
    # In memory, the same stream.
    in_memory = jscore.MinibatchStream(jax.random.key(0), jnp.asarray(data), batch)
    np.testing.assert_array_equal(in_memory.batch(9), dropped.batch(9))
    with pytest.raises(ValueError, match="batch_size"):
        jscore.MinibatchStream(jax.random.key(0), data, 200)


# ---------------------------------------------------------------------------------------------------
# Checkpoints and resume


def _small_trainer():
    return jscore.DSMTrainer(
        jscore.ScoreMLP(2, hidden_features=(16,), rngs=nnx.Rngs(0)),
        sigma_min=0.05,
        sigma_max=2.0,
        learning_rate=1e-2,
        ema_decay=0.9,
    )


def _assert_trees_identical(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for u, v in zip(la, lb, strict=True):
        assert np.asarray(u).dtype == np.asarray(v).dtype
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_checkpoint_round_trip_is_bit_for_bit(tmp_path):
    trainer = _small_trainer()
    stream = jscore.MinibatchStream(jax.random.key(0), _gaussian_data(50), 8)
    state, _ = trainer.train(jax.random.key(1), trainer.init(), stream, 7, progress=False)
    path = tmp_path / "ckpt.msgpack"
    jscore.save_checkpoint(path, state)
    assert os.listdir(tmp_path) == ["ckpt.msgpack"]  # the temporary file was renamed
    assert path.read_bytes()[:1] != b"\x80"  # msgpack, not a pickle
    restored = jscore.load_checkpoint(path, _small_trainer().init())
    assert int(restored.step) == 7
    _assert_trees_identical(restored, state)
    # The EMA differs from the raw parameters, and both were saved.
    assert not np.array_equal(
        np.asarray(restored.params["out"]["kernel"]),
        np.asarray(restored.ema_params["out"]["kernel"]),
    )


def test_resume_is_bit_for_bit_identical_to_an_uninterrupted_run(tmp_path):
    data = _gaussian_data(50)  # 6 full batches of 8 per epoch: the run crosses epochs
    key = jax.random.key(1)
    trainer = _small_trainer()
    stream = jscore.MinibatchStream(jax.random.key(0), data, 8)
    full, full_history = trainer.train(key, trainer.init(), stream, 20, progress=False)

    path = tmp_path / "ckpt.msgpack"
    first = _small_trainer()
    _half, history_a = first.train(
        key, first.init(), stream, 10, progress=False, checkpoint=path, checkpoint_every=5
    )
    # A new process would rebuild everything: a fresh trainer, a fresh stream, the checkpoint.
    second = _small_trainer()
    template = second.init()
    resumed = jscore.load_checkpoint(path, template)
    assert int(template.step) == 0  # the template is not modified
    stream2 = jscore.MinibatchStream(jax.random.key(0), data, 8)
    resumed, history_b = second.train(key, resumed, stream2, 10, progress=False)
    assert int(resumed.step) == 20
    _assert_trees_identical(resumed, full)
    np.testing.assert_array_equal(
        np.concatenate([history_a["loss"], history_b["loss"]]), full_history["loss"]
    )


def test_checkpoints_refuse_foreign_files_and_other_architectures(tmp_path):
    trainer = _small_trainer()
    state = trainer.init()
    path = tmp_path / "ckpt.msgpack"
    jscore.save_checkpoint(path, state)
    tree = {"w": np.zeros(3, np.float32)}
    foreign = [  # (package, package_version, kind) of the file, and the field that refuses it
        ("jso3", "0.2.0", "jso3.ScoreNet", "package"),
        ("jflows", "0.2.0", "jflows.Flow", "package"),
        ("jscore", jscore.__version__, "jscore.Other", "kind"),
        ("jscore", "0.1.0", "jscore.DSMTrainState", "package_version"),
    ]
    for i, (package, version, kind, field) in enumerate(foreign):
        other = tmp_path / f"foreign{i}.msgpack"
        jflows.write_checkpoint(other, tree, package=package, package_version=version, kind=kind)
        with pytest.raises(ValueError, match=f"field '{field}'"):
            jscore.load_checkpoint(other, state)
    junk = tmp_path / "junk.msgpack"
    junk.write_bytes(b"\x00\x01 not a checkpoint")
    with pytest.raises(ValueError, match="not a jpm-federation/checkpoint"):
        jscore.load_checkpoint(junk, state)
    # A state of another architecture (wider hidden layer) is refused when loading, naming a leaf.
    wider = jscore.DSMTrainer(
        jscore.ScoreMLP(2, hidden_features=(32,), rngs=nnx.Rngs(0)), sigma_min=0.05, sigma_max=2.0
    )
    with pytest.raises(
        ValueError, match=r"leaf .*float32\[16\] in the file, float32\[32\] in the template"
    ):
        jscore.load_checkpoint(path, wider.init())
    deeper = jscore.DSMTrainer(
        jscore.ScoreMLP(2, hidden_features=(16, 16), rngs=nnx.Rngs(0)),
        sigma_min=0.05,
        sigma_max=2.0,
    )
    with pytest.raises(ValueError, match="another structure"):
        jscore.load_checkpoint(path, deeper.init())


class _CountingArray(np.ndarray):
    """Samples whose row reads are counted; raises after `limit` reads (a run killed mid-way)."""

    reads = 0
    limit = None

    def __getitem__(self, index):
        if isinstance(index, np.ndarray):
            type(self).reads += 1
            if self.limit is not None and type(self).reads > self.limit:
                raise KeyboardInterrupt("simulated interruption")
        return super().__getitem__(index)


def _pure_params(model):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def test_train_dsm_learns_the_score_is_pure_shows_progress_and_resumes(tmp_path, capsys):
    """train_dsm(key, model, data): a brief run on a 2-D Gaussian from a .npy file learns the analytic
    score of N(0, C + sigma^2 I); the model passed in is unchanged; a rich progress bar with the loss;
    a run interrupted after its checkpoint at step 100 resumes to the uninterrupted result bit-for-bit."""
    path = tmp_path / "data.npy"
    np.save(path, _gaussian_data(4096))
    model = jscore.ScoreMLP(2, hidden_features=(32, 32), rngs=nnx.Rngs(0))
    before = _pure_params(model)
    settings = {
        "num_steps": 250,
        "batch_size": 128,
        "sigma_min": 0.05,
        "sigma_max": 3.0,
        "learning_rate": 3e-3,
        "ema_decay": 0.99,
    }
    trained, history = jscore.train_dsm(jax.random.key(0), model, path, **settings)
    assert set(history) >= {"loss"}
    assert isinstance(history["loss"], np.ndarray)
    assert history["loss"].shape == (250,)
    err = capsys.readouterr().err
    assert "250/250" in err
    assert "loss" in err
    _assert_trees_identical(_pure_params(model), before)  # pure: the argument is untouched
    # The answer: the learned score against the exact one at moderate sigma.
    rng = np.random.default_rng(5)
    for sigma in [0.5, 1.0]:
        cov = COV + sigma**2 * np.eye(2)
        xs = rng.standard_normal((4000, 2)) @ np.linalg.cholesky(cov).T
        exact = -xs @ np.linalg.inv(cov)
        learned = np.asarray(trained(jnp.asarray(xs, jnp.float32), sigma), np.float64)
        rel = np.sqrt(np.sum((learned - exact) ** 2) / np.sum(exact**2))
        assert rel < 0.15, (sigma, rel)

    # Checkpoint and resume: interrupted after 130 batch reads (checkpoint at step 100).
    data = np.load(path).view(_CountingArray)
    ckpt = tmp_path / "run.msgpack"
    _CountingArray.reads, _CountingArray.limit = 0, 130
    with pytest.raises(KeyboardInterrupt):
        jscore.train_dsm(
            jax.random.key(0), model, data, checkpoint=ckpt, checkpoint_every=50, progress=False,
            **settings,
        )  # fmt: skip
    _CountingArray.reads, _CountingArray.limit = 0, None
    resumed, resumed_history = jscore.train_dsm(
        jax.random.key(0), model, data, checkpoint=ckpt, progress=False, **settings
    )
    assert _CountingArray.reads == 150  # resumed at step 100, not restarted
    _assert_trees_identical(_pure_params(resumed), _pure_params(trained))
    np.testing.assert_array_equal(resumed_history["loss"], history["loss"])
    # A rerun with other settings does not silently continue that run.
    with pytest.raises(ValueError, match="other settings"):
        jscore.train_dsm(
            jax.random.key(0), model, data, checkpoint=ckpt, progress=False,
            **(settings | {"learning_rate": 1e-3}),
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Acceptance: a U-Net trained on Gaussian random field maps


@pytest.mark.slow
def test_unet_trained_on_grf_matches_the_analytic_score_and_the_wiener_posterior():
    """Train a U-Net by DSM on 16x16 GRF maps (P(k) = 1 / (1 + (k / 0.5)^2)); compare its score with the
    exact sigma-convolved score, and the annealed posterior it gives (white noise, variance 0.1) with
    the exact Wiener posterior. A few minutes on a CPU."""
    shape, noise_var, num_chains = (16, 16), 0.1, 128
    power = 1.0 / (1.0 + (jscore.fourier_wavenumber(shape) / 0.5) ** 2)
    prior = jscore.GaussianFieldPrior(power, shape)
    data = np.asarray(jax.vmap(prior.sample)(jax.random.split(jax.random.key(10), 8192)))
    model = jscore.ScoreUNet((16, 32), data_std=float(data.std()), rngs=nnx.Rngs(0))
    trainer = jscore.DSMTrainer(
        model, sigma_min=0.005, sigma_max=2.0, learning_rate=2e-3, ema_decay=0.995
    )
    stream = jscore.MinibatchStream(jax.random.key(1), data, 32)
    state, _ = trainer.train(jax.random.key(2), trainer.init(), stream, 1200, progress=False)
    trained = trainer.model(state.ema_params)
    score = jax.jit(lambda x, s: trained(x, s))
    for sigma in [0.03, 0.1, 0.3, 1.0]:
        xs = jax.vmap(lambda k, s=sigma: prior.sample(k, s))(
            jax.random.split(jax.random.key(5), 256)
        )
        exact = jax.vmap(lambda x, s=sigma: prior.score(x, s))(xs)
        rel = float(jnp.sqrt(jnp.sum((score(xs, sigma) - exact) ** 2) / jnp.sum(exact**2)))
        print(f"sigma {sigma}: relative score error {rel:.3f}")
        assert rel < 0.1, (sigma, rel)

    y = prior.sample(jax.random.key(1)) + jnp.sqrt(noise_var) * jax.random.normal(
        jax.random.key(2), shape
    )
    op = jscore.IdentityOperator(shape)
    noise = jscore.DiagonalNoise(jnp.full(shape, noise_var))
    settings = {
        "num_chains": num_chains,
        "annealing": jscore.AnnealingConfig(0.5, 0.01, 0.98, num_steps=250),
        "hmc": jscore.HMCConfig(step_size=0.1),
        # The network is trained down to sigma = 0.005: stop the ODE there.
        "ode": jscore.ODEConfig(sigma_end=0.005),
    }

    def sample(y, key):
        return jscore.annealed_posterior_sample(
            key, lambda x, s: trained(x, s), op.forward, op.adjoint, noise, y, **settings
        )

    samples, info = jax.jit(sample)(y, jax.random.key(0))
    np.testing.assert_allclose(np.asarray(info.sigma), 0.01, rtol=1e-5)
    mean, post_power = jscore.fourier_wiener_filter(y, power, noise_var)
    xh = np.fft.rfftn(np.asarray(samples, np.float64), axes=(1, 2), norm="ortho")
    mh = np.fft.rfftn(np.asarray(mean, np.float64), norm="ortho")
    mean_error = np.abs(xh.mean(0) - mh) / np.sqrt(np.asarray(post_power, np.float64))
    variance = np.sum(np.abs(xh - xh.mean(0)) ** 2, axis=0) / (num_chains - 1)
    variance_error = variance / np.asarray(post_power, np.float64) - 1.0
    print(
        f"mean error {np.mean(mean_error):.3f} posterior std; variance error "
        f"{np.mean(variance_error):+.3f} (signed), {np.mean(np.abs(variance_error)):.3f} (abs)"
    )
    # Sampling noise alone: 0.886 / sqrt(128) = 0.078 posterior std per complex mode.
    assert np.mean(mean_error) < 0.2
