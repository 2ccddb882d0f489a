"""Neural compression: VMIM against the exact posterior of a field-level toy, symmetries, checkpoints.

The toy is a field-level problem with a known answer: a map of iid pixels `x ~ N(mu, exp(s)^2)`,
`theta = (mu, s)` with Gaussian priors. Its exact posterior follows from the pixels' mean and variance
(computed on a fine grid here, independently of the code), so the expected log posterior density
of the truth bounds what any compressor + flow can reach; VMIM must come close to it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jflows
import jinfer

N_PIX = 8
PRIOR_MU, PRIOR_S = (0.0, 0.5), (-0.5, 0.3)


def _simulate(seed, n):
    rng = np.random.default_rng(seed)
    mu = rng.normal(*PRIOR_MU, n)
    s = rng.normal(*PRIOR_S, n)
    noise = rng.normal(size=(n, 1, N_PIX, N_PIX))
    x = mu[:, None, None, None] + np.exp(s)[:, None, None, None] * noise
    return np.stack([mu, s], 1).astype(np.float32), x.astype(np.float32)


def _grid_posterior(x, m=161):
    """The toy's exact log posterior of one map on a grid of +-8 posterior std around the MLE."""
    x = np.asarray(x, np.float64).ravel()
    n, mean, var = x.size, x.mean(), x.var()
    sd = np.sqrt(var)
    mus = np.linspace(mean - 8 * sd / np.sqrt(n), mean + 8 * sd / np.sqrt(n), m)
    ss = np.linspace(np.log(sd) - 8 / np.sqrt(2 * n), np.log(sd) + 8 / np.sqrt(2 * n), m)

    def log_joint(mu, s):
        like = -n * s - n * (var + (mean - mu) ** 2) / (2 * np.exp(2 * s))
        prior = -0.5 * ((mu - PRIOR_MU[0]) / PRIOR_MU[1]) ** 2
        return like + prior - 0.5 * ((s - PRIOR_S[0]) / PRIOR_S[1]) ** 2

    grid = log_joint(*np.meshgrid(mus, ss, indexing="ij"))
    top = grid.max()
    log_z = top + np.log(np.exp(grid - top).sum() * (mus[1] - mus[0]) * (ss[1] - ss[0]))
    return mus, ss, grid - log_z, lambda t: log_joint(*t) - log_z


def _exact_log_posterior(theta, maps):
    return np.asarray([_grid_posterior(x)[3](t) for t, x in zip(theta, maps, strict=True)])


def _exact_std(x):
    mus, ss, log_p, _ = _grid_posterior(x)
    p = np.exp(log_p)
    p /= p.sum()
    return np.asarray(
        [
            np.sqrt(np.sum(p * g**2) - np.sum(p * g) ** 2)
            for g in np.meshgrid(mus, ss, indexing="ij")
        ]
    )


def _compressor(summary_dim=2, seed=0, **kwargs):
    kwargs = {"widths": (8, 16), "hidden": 32, **kwargs}
    return jinfer.MapCompressor(1, summary_dim, rngs=nnx.Rngs(seed), **kwargs)


def _vmim(theta, seed=0):
    flow = jflows.ConditionalFlow(
        2, 2, rngs=nnx.Rngs(seed + 1), loc_scale=jflows.standardisation(theta),
        hidden=(32, 32), num_layers=4,
    )  # fmt: skip
    return jinfer.VMIM(_compressor(seed=seed), flow)


TRAIN = {"batch_size": 128, "patience": 20, "progress": False}


def test_vmim_reaches_the_exact_posterior_of_a_field_level_toy():
    theta, maps = _simulate(0, 4000)
    test_theta, test_maps = _simulate(1, 500)
    exact = _exact_log_posterior(test_theta, test_maps)
    trained, hist = jinfer.train_compressor(
        jax.random.key(0), _vmim(theta), theta, maps, learning_rate=3e-3, max_epochs=40,
        translations=True, **TRAIN,
    )  # fmt: skip
    learned = np.asarray(trained.log_prob(jnp.asarray(test_theta), jnp.asarray(test_maps)))
    # the expected KL(exact || q) on held-out simulations, plus noise: 0.10 +- 0.02 measured; a
    # summary blind to the pixel variance would lose ~0.8 nats (prior std of s 0.3, posterior 0.09)
    gap = exact - learned
    assert np.mean(gap) < 0.2, (np.mean(gap), np.std(gap) / np.sqrt(gap.size))
    # the information is in the summaries: the posterior widths are the exact ones (8 maps)
    got = [
        trained.sample(jax.random.key(i), jnp.asarray(test_maps[i]), 1000).std(0) for i in range(8)
    ]
    want = [_exact_std(test_maps[i]) for i in range(8)]
    np.testing.assert_allclose(np.mean(got, 0), np.mean(want, 0), rtol=0.25)
    assert hist["epochs"] >= 1


@pytest.mark.parametrize("loss", ["mse", "mae", "gnll"])
def test_regression_baselines_learn_the_posterior_mean(loss):
    theta, maps = _simulate(2, 2000)
    test_theta, test_maps = _simulate(3, 300)
    model = _compressor(4 if loss == "gnll" else 2)
    trained, _ = jinfer.train_compressor(
        jax.random.key(1), model, theta, maps, loss=loss, learning_rate=3e-3, max_epochs=25, **TRAIN
    )
    s = np.asarray(trained(jnp.asarray(test_maps)))
    # the exact posterior means correlate with the truth at r = 0.989 (mu) and 0.956 (s): the
    # summaries must come close (a summary blind to the variance would give r = 0 for s)
    for i, r_min in ((0, 0.95), (1, 0.85)):
        r = np.corrcoef(s[:, i], test_theta[:, i])[0, 1]
        assert r > r_min, (loss, i, r)
    if loss == "gnll":  # its predicted std is the posterior std of s (about 1 / sqrt(2 n))
        np.testing.assert_allclose(np.median(np.exp(s[:, 3])), 1 / np.sqrt(2 * N_PIX**2), rtol=0.5)


def test_augmentations_are_elements_of_the_map_symmetry_group():
    maps = jax.random.normal(jax.random.key(0), (64, 2, 8, 8))
    out = np.asarray(jinfer.augment_maps(jax.random.key(1), maps))
    group = []
    for m in np.asarray(maps):
        images = [np.rot90(f, k, axes=(1, 2)) for f in (m, m[:, :, ::-1]) for k in range(4)]
        group.append(images)
    hits = [
        [np.array_equal(o, g) for g in imgs].index(True) for o, imgs in zip(out, group, strict=True)
    ]
    assert len(set(hits)) == 8  # every element is drawn (64 draws)
    rect = jax.random.normal(jax.random.key(2), (32, 1, 8, 6))
    out = np.asarray(jinfer.augment_maps(jax.random.key(3), rect))
    for o, m in zip(out, np.asarray(rect), strict=True):
        assert any(np.array_equal(o, f) for f in (m, m[:, ::-1], m[:, :, ::-1], m[:, ::-1, ::-1]))
    # translations: a periodic shift of the D4 image (the map's values are a permutation)
    shifted = np.asarray(jinfer.augment_maps(jax.random.key(4), maps, translations=True))
    np.testing.assert_array_equal(
        np.sort(shifted.reshape(64, -1)), np.sort(np.asarray(maps).reshape(64, -1))
    )
    assert not np.array_equal(shifted, out)


def test_a_periodic_compressor_is_invariant_to_translations_by_its_stride():
    model = _compressor(widths=(4, 8, 8))  # total stride 4
    maps = jax.random.normal(jax.random.key(0), (3, 1, 16, 16))
    s = model(maps)
    np.testing.assert_allclose(model(jnp.roll(maps, (4, -8), axis=(2, 3))), s, atol=1e-5)
    assert not np.allclose(model(jnp.roll(maps, 1, axis=2)), s, atol=1e-5)  # not by one pixel
    zero_padded = _compressor(widths=(4, 8, 8), periodic=False)
    assert not np.allclose(zero_padded(jnp.roll(maps, 4, axis=2)), zero_padded(maps), atol=1e-5)
    # one map or a batch; standardisation is applied per channel
    np.testing.assert_allclose(model(maps[0]), s[0], atol=1e-6)
    shifted = _compressor(widths=(4, 8, 8), loc=2.0, scale=3.0)
    np.testing.assert_allclose(shifted(2.0 + 3.0 * maps), s, atol=1e-5)


def test_save_and_load_are_bit_for_bit_and_refuse_another_architecture(tmp_path):
    theta, maps = _simulate(4, 64)
    model = _vmim(theta, seed=5)
    path = jinfer.save_compressor(tmp_path / "vmim.msgpack", model, metadata={"note": "toy"})
    loaded = jinfer.load_compressor(path, _vmim(theta, seed=9))
    for u, v in zip(
        jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(loaded)), strict=True
    ):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(loaded.summaries(maps), model.summaries(maps))
    with pytest.raises(ValueError, match=r"vmim\.msgpack"):
        jinfer.load_compressor(path, _compressor())  # another class
    other = jinfer.save_compressor(tmp_path / "c.msgpack", _compressor())
    with pytest.raises(ValueError, match=r"c\.msgpack"):
        jinfer.load_compressor(other, _compressor(widths=(8, 32)))  # another architecture
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.msgpack", "vmim.msgpack"]


def test_training_resumes_from_its_checkpoint(tmp_path):
    theta, maps = _simulate(5, 256)
    kwargs = {"learning_rate": 1e-3, "max_epochs": 3, "batch_size": 64, "progress": False}
    path = tmp_path / "run.msgpack"
    ref, ref_hist = jinfer.train_compressor(jax.random.key(0), _vmim(theta), theta, maps, **kwargs)
    first, _ = jinfer.train_compressor(
        jax.random.key(0), _vmim(theta), theta, maps, checkpoint=path, **kwargs
    )
    again, hist = jinfer.train_compressor(
        jax.random.key(0), _vmim(theta), theta, maps, checkpoint=path, **kwargs
    )
    for u, v, w in zip(
        *(jax.tree.leaves(nnx.state(m, nnx.Param)) for m in (ref, first, again)), strict=True
    ):
        np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(u, w)
    np.testing.assert_array_equal(hist["loss"], ref_hist["loss"])


def test_bad_inputs_are_clear_errors_before_training():
    theta, maps = _simulate(6, 32)
    model = _vmim(theta)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="channels=1"):
        model.summaries(np.zeros((4, 2, 16, 16), np.float32))
    with pytest.raises(ValueError, match="total stride"):
        _compressor(widths=(4, 8, 8, 8, 8))(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="31 rows"):
        jinfer.train_compressor(key, model, theta[:31], maps)
    bad = maps.copy()
    bad[3, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match="maps holds non-finite"):
        jinfer.train_compressor(key, model, theta, bad)
    with pytest.raises(ValueError, match="loss must be one of"):
        jinfer.train_compressor(key, model, theta, maps, loss="l2")
    with pytest.raises(TypeError, match=r"trains a jinfer\.VMIM"):
        jinfer.train_compressor(key, _compressor(), theta, maps)
    with pytest.raises(ValueError, match="needs 4 summaries"):
        jinfer.train_compressor(key, _compressor(2), theta, maps, loss="gnll")
    with pytest.raises(ValueError, match="context_dim=2"):
        jinfer.VMIM(_compressor(3), model.flow)
    with pytest.raises(ValueError, match="scale"):
        _compressor(scale=0.0)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        _compressor(kernel_size=4)


# ------------------------------------------------------------- VMIM against MSE where MSE must fail
#
# The symmetric toy: pixels `x ~ N(mu, exp(-0.5 + t^2)^2)`, priors mu ~ N(0, 0.5), t ~ N(0, 0.4).
# The likelihood and the prior are both even in t, so the posterior is too: E[t | x] = 0 for every
# map, and the MSE-optimal summary of t is a constant. MSE compression therefore throws away all
# that the map says about |t| (provably; any regression to the posterior mean does), while VMIM
# keeps it: the posterior of |t| is narrow (about 0.09 at |t| = 0.5 with 64 pixels) where the prior's
# is 0.24. A trained MSE network is not exactly at that optimum: its t output is nearly constant
# (std 0.03) but still correlated with |t|, and an NPE on standardised summaries recovers part of
# the information from it; MSE + NPE still loses 0.38 nats more than VMIM and its |t| posteriors are
# 1.5x as wide.

PRIOR_T = 0.4


def _simulate_symmetric(seed, n):
    rng = np.random.default_rng(seed)
    mu = rng.normal(*PRIOR_MU, n)
    t = rng.normal(0.0, PRIOR_T, n)
    noise = rng.normal(size=(n, 1, N_PIX, N_PIX))
    x = mu[:, None, None, None] + np.exp(-0.5 + t**2)[:, None, None, None] * noise
    return np.stack([mu, t], 1).astype(np.float32), x.astype(np.float32)


def _symmetric_posterior(x, m=241):
    """Exact log posterior of one map of the symmetric toy on a grid (mu, t), and its density."""
    x = np.asarray(x, np.float64).ravel()
    n, mean, var = x.size, x.mean(), x.var()
    sd = np.sqrt(var)
    mus = np.linspace(mean - 8 * sd / np.sqrt(n), mean + 8 * sd / np.sqrt(n), m)
    ts = np.linspace(-2.5, 2.5, 4 * m + 1)

    def log_joint(mu, t):
        s = -0.5 + t**2
        like = -n * s - n * (var + (mean - mu) ** 2) / (2 * np.exp(2 * s))
        prior = -0.5 * ((mu - PRIOR_MU[0]) / PRIOR_MU[1]) ** 2 - 0.5 * (t / PRIOR_T) ** 2
        return like + prior

    grid = log_joint(*np.meshgrid(mus, ts, indexing="ij"))
    top = grid.max()
    log_z = top + np.log(np.exp(grid - top).sum() * (mus[1] - mus[0]) * (ts[1] - ts[0]))
    p = np.exp(grid - log_z)
    p_abs_t = p.sum(0) / p.sum()  # marginal of t on the grid
    abs_mean = np.sum(p_abs_t * np.abs(ts))
    abs_std = np.sqrt(np.sum(p_abs_t * ts**2) - abs_mean**2)
    return (lambda th: log_joint(*th) - log_z), abs_std


def test_vmim_keeps_the_information_that_mse_compression_provably_loses():
    theta, maps = _simulate_symmetric(10, 4000)
    test_theta, test_maps = _simulate_symmetric(11, 400)
    exact = [_symmetric_posterior(x) for x in test_maps]
    exact_log_p = np.asarray([f(t) for (f, _), t in zip(exact, test_theta, strict=True)])
    key = jax.random.key(5)
    scale = float(maps.std())
    flow = jflows.ConditionalFlow(
        2, 2, rngs=nnx.Rngs(3), loc_scale=jflows.standardisation(theta), hidden=(32, 32),
        num_layers=4,
    )  # fmt: skip
    vmim, _ = jinfer.train_compressor(
        key, jinfer.VMIM(_compressor(seed=3, scale=scale), flow), theta, maps,
        learning_rate=1e-3, max_epochs=40, **TRAIN,
    )  # fmt: skip
    vmim_log_q = np.asarray(vmim.log_prob(jnp.asarray(test_theta), jnp.asarray(test_maps)))

    mse, _ = jinfer.train_compressor(
        key, _compressor(seed=4, scale=scale), theta, maps, loss="mse", learning_rate=2e-3,
        max_epochs=40, **TRAIN,
    )  # fmt: skip
    s_train, s_test = (np.asarray(mse(jnp.asarray(m))) for m in (maps, test_maps))
    # the MSE summary of t is the posterior mean of t, 0 for every map: it carries nothing
    # the summary of t is nearly constant (std 0.03, prior 0.4): the posterior mean it regresses is 0
    assert s_test[:, 1].std() < 0.15 * PRIOR_T
    loc, scale = s_train.mean(0), s_train.std(0) + 1e-6
    npe = jflows.ConditionalFlow(
        2, 2, rngs=nnx.Rngs(6), loc_scale=jflows.standardisation(theta), hidden=(32, 32),
        num_layers=4,
    )  # fmt: skip
    npe, _ = jflows.fit_npe(
        jax.random.key(7), npe, theta, (s_train - loc) / scale, max_epochs=200, patience=20,
        learning_rate=1e-3, progress=False,
    )  # fmt: skip
    mse_log_q = np.asarray(
        npe.log_prob(jnp.asarray(test_theta), jnp.asarray((s_test - loc) / scale))
    )

    # information: VMIM within 0.3 nats of the exact posterior (0.12 measured); MSE + NPE 0.50
    vmim_gap, mse_gap = np.mean(exact_log_p - vmim_log_q), np.mean(exact_log_p - mse_log_q)
    assert vmim_gap < 0.3, vmim_gap
    assert mse_gap > vmim_gap + 0.25, (mse_gap, vmim_gap)
    # width: the posterior std of |t| (the identifiable quantity) on maps with |t| > 0.4
    chosen = np.flatnonzero(np.abs(test_theta[:, 1]) > 0.4)[:8]
    width = {"vmim": [], "mse": [], "exact": []}
    for k, i in enumerate(chosen):
        draw = jax.random.key(100 + k)
        width["vmim"].append(np.abs(vmim.sample(draw, jnp.asarray(test_maps[i]), 2000)[:, 1]).std())
        context = jnp.asarray((s_test[i] - loc) / scale)
        width["mse"].append(np.abs(npe.sample(draw, context, 2000)[:, 1]).std())
        width["exact"].append(exact[i][1])
    vmim_w, mse_w, exact_w = (float(np.mean(width[k])) for k in ("vmim", "mse", "exact"))
    # measured: VMIM 0.111, MSE 0.170, exact 0.089 (prior 0.24)
    assert vmim_w < 0.8 * mse_w, width
    assert vmim_w < 1.4 * exact_w, width
    assert mse_w > 1.5 * exact_w, width
