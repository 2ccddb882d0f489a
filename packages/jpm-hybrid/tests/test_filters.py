"""The spline filter: architecture, f(k = 0) = 0, the B-spline against scipy, |k| units, the
cosmology-conditioned variant, force-reversal reports, configuration checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.interpolate import BSpline

import jpm_core as jc
import jpm_hybrid as jh


def _n_params(model):
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_reference_architecture_has_2176_parameters():
    assert _n_params(jh.SplineFilter(rngs=nnx.Rngs(0))) == 2176
    conditioned = jh.SplineFilter(jh.FilterConfig(conditioned=True), rngs=nnx.Rngs(0))
    assert _n_params(conditioned) == 2176 + 2 * 32


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k_unit", ["physical", "grid"])
def test_filter_is_exactly_zero_at_k_zero(seed, k_unit):
    model = jh.SplineFilter(jh.FilterConfig(k_unit=k_unit), rngs=nnx.Rngs(seed))
    for a in (0.1, 0.5, 1.0):
        f = model(jnp.array([0.0, 1e-5, 0.5]), a)
        assert float(f[0]) == 0.0
        assert abs(float(f[1])) < 1e-2  # continuous at 0
    # through the hook: the multiplier is exactly 1 at k = 0
    domain = jc.Domain(8, 32.0)
    fn, params = jh.potential_filter(model, domain)
    assert float(fn(jc.wavenumbers(domain), jnp.float32(0.7), params)[0, 0, 0]) == 1.0


@pytest.mark.x64
def test_bspline_matches_scipy():
    model = jh.SplineFilter(rngs=nnx.Rngs(3))
    params = jax.tree.map(lambda x: x.astype(jnp.float64), nnx.state(model, nnx.Param))
    nnx.update(model, params)
    knots, coefficients = model.spline(jnp.float64(0.4))
    u = np.linspace(0.0, 1.0 - 1e-4, 301)
    reference = BSpline(np.asarray(knots), np.asarray(coefficients), 3)(u)
    got = jh.bspline(jnp.asarray(u), knots, coefficients)
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-12)
    assert np.all(np.diff(np.asarray(knots)) >= 0)
    assert knots[0] == 0
    assert knots[-1] == 1


def test_grid_and_physical_units():
    """k_unit='grid' reads |k| / k_Nyq; a physical filter reads |k| in h/Mpc: with the same weights
    and k_max_grid = k_max_phys / k_Nyq they agree on that mesh and nowhere else."""
    small, large = jc.Domain(8, 32.0), jc.Domain(8, 64.0)  # k_Nyq = 0.785 and 0.393 h/Mpc
    k_nyq = np.pi / small.cell_size[0]
    physical = jh.SplineFilter(jh.FilterConfig(k_max=1.5), rngs=nnx.Rngs(4))
    grid = jh.SplineFilter(jh.FilterConfig(k_unit="grid", k_max=1.5 / k_nyq), rngs=nnx.Rngs(4))
    a = jnp.float32(0.6)
    fp, pp = jh.potential_filter(physical, small)
    fg, pg = jh.potential_filter(grid, small)
    k = jc.wavenumbers(small)
    np.testing.assert_allclose(fg(k, a, pg), fp(k, a, pp), rtol=1e-6, atol=1e-6)
    # the grid filter as a function of |k| / k_Nyq: its own call on the scaled wavenumbers
    np.testing.assert_allclose(fg(k, a, pg), 1.0 + grid(k / k_nyq, a), rtol=1e-6, atol=1e-6)
    # on a box twice larger the physical filter is the same function of |k|, the grid one is not
    fp2, pp2 = jh.potential_filter(physical, large)
    fg2, pg2 = jh.potential_filter(grid, large)
    k2 = jc.wavenumbers(large)
    np.testing.assert_allclose(fp2(k2, a, pp2), 1.0 + physical(k2, a), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fg2(k2, a, pg2), 1.0 + grid(2 * k2 / k_nyq, a), rtol=1e-6, atol=1e-6)
    assert not np.allclose(fg2(k2, a, pg2), fp2(k2, a, pp2), atol=1e-3)


def test_filter_built_for_one_box_is_right_on_another_box():
    """A `(fn, params)` built on one box but called (under `jit`, as `jpm_core.nbody` does) with the
    wavenumbers of another box of the same mesh shape must not reuse the first box's |k|: the fast
    per-distinct-|k| path checks the grid and falls back to the point-by-point evaluation."""
    built, other = jc.Domain(8, 32.0), jc.Domain(8, 48.0)
    model = jh.SplineFilter(jh.FilterConfig(k_max=1.5), rngs=nnx.Rngs(5))
    fn, params = jh.potential_filter(model, built)
    a = jnp.float32(0.6)
    jitted = jax.jit(fn)
    for domain in (built, other):
        k = jc.wavenumbers(domain)
        np.testing.assert_allclose(jitted(k, a, params), 1.0 + model(k, a), rtol=1e-6, atol=1e-6)
    k_other = jc.wavenumbers(other)
    assert not np.allclose(
        1.0 + model(k_other, a), 1.0 + model(jc.wavenumbers(built), a), atol=1e-3
    )
    # and through the PM force: the filter built on `built`, run on `other`, equals the one built
    # on `other` (a physical-|k| filter is the same function of |k| on every box)
    cosmo = jc.Cosmology()
    delta = jc.linear_field(jax.random.key(1), other, lambda k: jc.linear_power(cosmo, k))
    state = jc.lpt(cosmo, delta, other, 0.1)
    fn_other, params_other = jh.potential_filter(model, other)
    run = jax.jit(
        lambda fn_params, fn_: jc.pm_forces(
            state.positions,
            other,
            potential_filter=fn_,
            filter_params=fn_params,
            a=jnp.float32(0.5),
        ),
        static_argnums=1,
    )
    np.testing.assert_allclose(run(params, fn), run(params_other, fn_other), rtol=1e-5, atol=1e-6)


def test_grid_units_need_cubic_cells():
    model = jh.SplineFilter(jh.FilterConfig(k_unit="grid"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="cubic cells"):
        jh.potential_filter(model, jc.Domain((8, 8, 4), (32.0, 32.0, 32.0)))


def test_conditioned_filter_depends_on_the_cosmology():
    model = jh.SplineFilter(jh.FilterConfig(conditioned=True), rngs=nnx.Rngs(5))
    domain = jc.Domain(8, 32.0)
    k = jc.wavenumbers(domain)
    a = jnp.float32(0.5)
    low = jc.Cosmology.create(Omega_c=0.2)
    high = jc.Cosmology.create(Omega_c=0.3)
    f_low, p_low = jh.potential_filter(model, domain, cosmo=low)
    f_high, p_high = jh.potential_filter(model, domain, cosmo=high)
    assert not np.allclose(f_low(k, a, p_low), f_high(k, a, p_high))
    assert float(f_low(k, a, p_low)[0, 0, 0]) == 1.0
    with pytest.raises(ValueError, match="needs the cosmology"):
        jh.potential_filter(model, domain)
    # gradient with respect to Omega_c flows through filter_params
    g = jax.grad(
        lambda oc: jnp.sum(
            f_low(
                k, a, jh.potential_filter(model, domain, cosmo=jc.Cosmology.create(Omega_c=oc))[1]
            )
        )
    )(0.25)
    assert np.isfinite(g)
    assert g != 0


def _reversing_filter():
    model = jh.SplineFilter(rngs=nnx.Rngs(0))
    model.values.kernel[...] = jnp.zeros_like(model.values.kernel[...])
    model.values.bias[...] = jnp.full_like(model.values.bias[...], -2.0)  # 1 + f = -1 at k > 0
    return model


def test_force_reversal_is_reported_and_refused(helpers):
    domain = jc.Domain(8, 32.0)
    report = jh.force_reversal(_reversing_filter(), domain, [0.1, 1.0])
    assert report.reversed
    assert report.min_multiplier < 0
    assert report.k > 0
    ok = jh.force_reversal(jh.SplineFilter(rngs=nnx.Rngs(0)), domain, 0.5)
    assert not ok.reversed
    with pytest.raises(ValueError, match="reverses gravity"):
        jh.check_force_reversal(_reversing_filter(), domain, [0.5])
    state = helpers.initial(domain)
    with pytest.raises(ValueError, match="force reversal"):
        jh.hybrid_nbody(helpers.cosmo, state, domain, [1.0], _reversing_filter(), steps=2)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("n_knots", 1, ValueError),
        ("width", 0, ValueError),
        ("k_unit", "radians", ValueError),
        ("k_max", -1.0, ValueError),
        ("k_max", float("nan"), ValueError),
        ("conditioned", 1, TypeError),
        ("n_knots", 2.5, TypeError),
    ],
)
def test_filter_config_checks_its_fields(field, value, error):
    with pytest.raises(error, match=field):
        jh.FilterConfig(**{field: value})


def test_filter_config_is_frozen_and_hashable():
    config = jh.FilterConfig()
    assert hash(config) == hash(jh.FilterConfig())
    with pytest.raises(AttributeError):
        config.k_unit = "grid"  # type: ignore[misc]
    assert config.to_dict()["k_max"] == 10.0
    assert jh.FilterConfig(k_unit="grid").k_range == pytest.approx(np.sqrt(3.0))
