"""Filter files: bit-for-bit round trip through jflows' format, refusals of another |k| unit, another
shape, another kind and another package."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

import jflows
import jpm_hybrid as jh


def _pure(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("k_unit", ["physical", "grid"])
def test_save_and_load_are_bit_for_bit(tmp_path, k_unit):
    config = jh.FilterConfig(k_unit=k_unit)
    model = jh.SplineFilter(config, rngs=nnx.Rngs(11))
    path = tmp_path / "filter.jpmf"
    jh.save_filter(path, model, metadata={"trained": "test"})
    template = jh.SplineFilter(config, rngs=nnx.Rngs(0))
    before = jax.tree.map(np.array, _pure(template))
    loaded = jh.load_filter(path, template)
    _same(_pure(loaded), _pure(model))
    _same(_pure(template), before)  # pure: the template is untouched
    _same(_pure(jh.load_filter(path, config)), _pure(model))  # from the config alone
    assert loaded.config == config
    x = jax.numpy.linspace(0, 2, 9)
    np.testing.assert_array_equal(loaded(x, 0.5), model(x, 0.5))


def test_refuses_another_k_unit_shape_conditioning_kind_and_package(tmp_path):
    path = tmp_path / "grid.jpmf"
    jh.save_filter(path, jh.SplineFilter(jh.FilterConfig(k_unit="grid"), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"k_unit.*another \|k\| unit"):
        jh.load_filter(path, jh.FilterConfig())
    with pytest.raises(ValueError, match="k_max"):
        jh.load_filter(path, jh.FilterConfig(k_unit="grid", k_max=1.0))
    with pytest.raises(ValueError, match="shape"):
        jh.load_filter(path, jh.FilterConfig(k_unit="grid", width=16))
    with pytest.raises(ValueError, match="shape"):
        jh.load_filter(path, jh.FilterConfig(k_unit="grid", conditioned=True))
    other = tmp_path / "other.ckpt"
    jflows.write_checkpoint(
        other,
        {"x": np.zeros(3)},
        package="jpm-hybrid",
        package_version="0.1.0",
        kind="jpm_hybrid.X",
    )
    with pytest.raises(ValueError, match="kind"):
        jh.load_filter(other, jh.FilterConfig())
    foreign = tmp_path / "foreign.ckpt"
    jflows.write_checkpoint(
        foreign, _pure(jh.SplineFilter(rngs=nnx.Rngs(0))), package="jscore",
        package_version="0.2.0", kind="jpm_hybrid.SplineFilter",
    )  # fmt: skip
    with pytest.raises(ValueError, match="package"):
        jh.load_filter(foreign, jh.FilterConfig())
    with pytest.raises(TypeError, match="template"):
        jh.load_filter(path, "grid")
