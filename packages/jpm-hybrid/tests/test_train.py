"""Training: gradients of the loss against float64 finite differences, a short run that lowers the
loss and leaves its input alone, and a killed run that resumes bit-for-bit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.test_util import check_grads

import jpm_core as jc
import jpm_hybrid as jh
from jpm_hybrid._src import train as train_module


def _pure(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _assert_trees_identical(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.x64
def test_loss_gradient_matches_float64_finite_differences(helpers):
    domain = jc.Domain(8, 32.0)
    initial = helpers.initial(domain, dtype=jnp.float64)
    # a cheap target: a coarse run with a perturbed filter (so the loss is not at its minimum)
    target_model = jh.SplineFilter(rngs=nnx.Rngs(7))
    target = jh.hybrid_nbody(helpers.cosmo, initial, domain, [1.0], target_model, steps=2)
    truth = jh.TruthData(helpers.cosmo, domain, initial, target.snapshots)
    model = jh.SplineFilter(rngs=nnx.Rngs(1))
    loss, params = jh.make_loss(model, truth, steps=2, power_weight=0.1)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
    assert float(loss(params)) > 0
    check_grads(loss, (params,), order=1, modes=("rev",), eps=1e-5, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.x64
def test_pgd_loss_gradient_matches_float64_finite_differences(helpers):
    domain = jc.Domain(8, 32.0)
    initial = helpers.initial(domain, dtype=jnp.float64)
    target_model = jh.SplineFilter(rngs=nnx.Rngs(7))
    target = jh.hybrid_nbody(helpers.cosmo, initial, domain, [1.0], target_model, steps=2)
    truth = jh.TruthData(helpers.cosmo, domain, initial, target.snapshots)
    pgd = jh.PGDCorrection(0.3, 1.5, alpha=0.05)
    loss_pgd, params_pgd = jh.make_loss(pgd, truth, steps=2)
    params_pgd = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params_pgd)
    check_grads(loss_pgd, (params_pgd,), order=1, modes=("rev",), eps=1e-5, atol=1e-6, rtol=1e-5)


def test_training_lowers_the_loss_and_is_pure(helpers, tiny_truth, capsys):
    truth, _ = tiny_truth
    model = helpers.zero()
    before = jax.tree.map(np.array, _pure(model))
    trained, history = jh.train_hybrid(
        jax.random.key(0), model, truth, num_steps=12, steps=4, progress=True
    )
    assert set(history) == {"loss", "mse", "power"}
    assert history["loss"].shape == (12,)
    assert history["loss"].dtype == np.float32
    np.testing.assert_allclose(history["loss"], history["mse"] + 0.1 * history["power"], rtol=1e-5)
    # the zero filter starts from plain PM; training must lower the loss by a real margin
    assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]
    _assert_trees_identical(_pure(model), before)  # the input model is untouched
    assert trained is not model
    assert isinstance(trained, jh.SplineFilter)
    assert "train_hybrid" in capsys.readouterr().err  # the rich bar went to stderr
    # the trained filter, evaluated by the loss, is better than the starting one
    loss, p0 = jh.make_loss(model, truth, steps=4)
    _, p1 = jh.make_loss(trained, truth, steps=4)
    assert float(loss(p1)) < 0.8 * float(loss(p0))


def test_pgd_trains_behind_the_same_interface(tiny_truth):
    truth, _ = tiny_truth
    pgd = jh.PGDCorrection(0.4, 2.0)
    trained, history = jh.train_hybrid(
        jax.random.key(0), pgd, truth, num_steps=6, steps=4, optimizer=optax.adam(3e-2),
        progress=False,
    )  # fmt: skip
    assert history["loss"][-1] < history["loss"][0]
    assert jh.pgd_parameters(pgd)["alpha"] == 0.0  # untouched
    assert jh.pgd_parameters(trained)["alpha"] != 0.0


def test_killed_run_resumes_bit_for_bit(helpers, tiny_truth, tmp_path, monkeypatch):
    truth, _ = tiny_truth
    key = jax.random.key(3)
    kwargs = {"num_steps": 3, "steps": 2, "progress": False}
    straight, history = jh.train_hybrid(key, helpers.zero(), truth, **kwargs)

    path = tmp_path / "run.ckpt"
    original = train_module._save_run

    def save_then_die(*args, **kw):
        original(*args, **kw)
        raise KeyboardInterrupt("killed after the checkpoint at step 2 of 3")

    monkeypatch.setattr(train_module, "_save_run", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        jh.train_hybrid(key, helpers.zero(), truth, checkpoint=path, checkpoint_every=2, **kwargs)
    monkeypatch.setattr(train_module, "_save_run", original)
    assert path.exists()
    resumed, resumed_history = jh.train_hybrid(
        key, helpers.zero(), truth, checkpoint=path, checkpoint_every=2, **kwargs
    )
    _assert_trees_identical(_pure(resumed), _pure(straight))
    for name in history:
        np.testing.assert_array_equal(resumed_history[name], history[name])
    # a run with other settings refuses the file
    with pytest.raises(ValueError, match="power_weight"):
        jh.train_hybrid(key, helpers.zero(), truth, checkpoint=path, power_weight=0.5, **kwargs)


def test_train_hybrid_checks_its_arguments(helpers, tiny_truth):
    truth, _ = tiny_truth
    with pytest.raises(TypeError, match="TruthData"):
        jh.train_hybrid(jax.random.key(0), helpers.zero(), [1, 2], num_steps=1, steps=2)
    with pytest.raises(ValueError, match="num_steps"):
        jh.train_hybrid(jax.random.key(0), helpers.zero(), truth, num_steps=-1, steps=2)
    with pytest.raises(TypeError, match="SplineFilter"):
        jh.train_hybrid(jax.random.key(0), object(), truth, num_steps=1, steps=2)
