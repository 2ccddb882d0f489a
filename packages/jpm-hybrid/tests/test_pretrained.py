"""The filter shipped as package data: it loads by one call, with the architecture and training
record it was made with, and it does not reverse the force on the meshes it was measured on."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

import jpm_core as jc
import jpm_hybrid as jh


def test_default_filter_loads_with_its_record():
    model = jh.pretrained_filter()
    assert isinstance(model, jh.SplineFilter)
    assert model.config.k_unit == "physical"
    assert model.config.k_range == pytest.approx(math.pi / 2)  # Nyquist of 32^3 in 64 Mpc/h
    info = jh.pretrained_info()
    assert info["architecture"]["k_unit"] == "physical"
    training = info["training"]
    assert training["coarse_mesh"] == [32, 32, 32]
    assert training["steps"] == 10
    assert training["loss_last"] < training["loss_first"]
    # two loads are the same parameters, bit for bit
    again = jh.pretrained_filter()
    k = jnp.linspace(0.0, 3.0, 64)
    np.testing.assert_array_equal(np.asarray(model(k, 0.7)), np.asarray(again(k, 0.7)))


@pytest.mark.parametrize(("mesh", "box"), [(32, 64.0), (32, 128.0), (16, 64.0)])
def test_default_filter_keeps_gravity_attractive(mesh, box):
    report = jh.force_reversal(
        jh.pretrained_filter(), jc.Domain(mesh, box), np.linspace(0.1, 1, 10)
    )
    assert not report.reversed
    assert report.min_multiplier > 0


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match="available"):
        jh.pretrained_filter("nope")
