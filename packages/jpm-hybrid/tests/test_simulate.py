"""The hybrid run and the truth: a zero network output reproduces plain PM bit-for-bit, PGD with
alpha = 0 too, step grids, the truth file round trip, and the truth's extra small-scale power."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jpm_core as jc
import jpm_hybrid as jh


def test_zero_network_output_reproduces_plain_nbody_exactly(helpers, coarse_domain):
    state = helpers.initial(coarse_domain)
    grid = jh.step_grid(state.a, [0.5, 1.0], 3).tolist()
    plain = jc.nbody(helpers.cosmo, state, coarse_domain, [0.5, 1.0], steps=grid)
    hybrid = jh.hybrid_nbody(
        helpers.cosmo, state, coarse_domain, [0.5, 1.0], helpers.zero(), steps=3
    )
    np.testing.assert_array_equal(hybrid.snapshots.positions, plain.snapshots.positions)
    np.testing.assert_array_equal(hybrid.snapshots.momenta, plain.snapshots.momenta)
    # PGD with alpha = 0 (a plain run, then a zero displacement): the same run
    pgd = jh.hybrid_nbody(
        helpers.cosmo, state, coarse_domain, [0.5, 1.0], jh.PGDCorrection(0.2, 2.0), steps=3
    )
    np.testing.assert_array_equal(pgd.snapshots.positions, plain.snapshots.positions)


def test_step_grid_puts_every_snapshot_on_a_boundary():
    grid = jh.step_grid(0.1, [0.3, 1.0], 10)
    assert grid[0] == 0.1
    assert grid[-1] == 1.0
    assert np.any(np.isclose(grid, 0.3, rtol=0, atol=1e-15))
    assert len(grid) - 1 == 10
    assert np.all(np.diff(grid) > 0)
    assert jh.step_grid(0.1, [1.0], [0.1, 0.5, 1.0]).tolist() == [0.1, 0.5, 1.0]
    with pytest.raises(ValueError, match="steps"):
        jh.step_grid(0.1, [1.0], 0)


def test_pgd_kernel_is_a_band_pass():
    k = jnp.array([0.0, 0.01, 0.5, 50.0])
    w = jh.pgd_kernel(k, 0.1, 2.0)
    assert float(w[0]) == 0.0
    assert float(w[1]) < 1e-40
    assert float(w[-1]) < 1e-30
    np.testing.assert_allclose(w[2], np.exp(-(0.2**2) - 0.25**4), rtol=1e-6)
    with pytest.raises(ValueError, match="k_s"):
        jh.PGDCorrection(0.1, -1.0)


def test_truth_round_trips_and_differs_from_coarse_pm_on_small_scales(
    helpers, coarse_domain, tiny_truth
):
    truth, path = tiny_truth
    loaded = jh.load_truth(path)
    assert loaded.domain == coarse_domain
    np.testing.assert_array_equal(loaded.snapshots.positions, truth.snapshots.positions)
    np.testing.assert_array_equal(loaded.initial.positions, truth.initial.positions)
    np.testing.assert_allclose(loaded.snapshots.a, helpers.a_snapshots, rtol=1e-6)
    meta = jc.load_snapshots(path).metadata["jpm_hybrid"]
    assert meta["boost"] == 2
    assert meta["coarse_mesh_shape"] == [8, 8, 8]
    # the same initial particles ...
    state = helpers.initial(coarse_domain)
    np.testing.assert_allclose(truth.initial.positions, state.positions, rtol=0, atol=1e-5)
    # ... and a finer force: another small-scale power than the coarse PM run (in this 8^3 box the
    # coarse run, with jpm-core's lattice-consistent TSC forces, differs by 5-15% in some bin)
    pm = jh.hybrid_nbody(helpers.cosmo, state, coarse_domain, [1.0], steps=5).snapshots
    edges = jc.default_k_edges(coarse_domain)
    p_pm = jh.density_power(pm.positions[-1], coarse_domain, edges)
    p_truth = jh.density_power(truth.snapshots.positions[-1], coarse_domain, edges)
    ratio = np.asarray(p_pm) / np.asarray(p_truth)
    assert np.abs(ratio - 1).max() > 0.05, ratio
    d = jh.periodic_difference(pm.positions[-1], truth.snapshots.positions[-1], (8, 8, 8))
    assert float(jnp.sqrt(jnp.mean(jnp.sum(d**2, axis=-1)))) > 0.05  # cells


def test_load_truth_refuses_a_plain_snapshot_file(helpers, coarse_domain, tmp_path):
    state = helpers.initial(coarse_domain)
    path = jc.save_snapshots(
        tmp_path / "plain.npz", state, domain=coarse_domain, cosmo=helpers.cosmo
    )
    with pytest.raises(ValueError, match="not a truth"):
        jh.load_truth(path)


def test_periodic_difference_takes_the_minimum_image():
    d = jh.periodic_difference(
        jnp.array([[7.9, 0.0, 3.0]]), jnp.array([[0.1, 4.1, 11.0]]), (8, 8, 8)
    )
    np.testing.assert_allclose(d, [[-0.2, -4.1 + 8.0, 0.0]], atol=1e-6)
