"""Fixtures of the jpm-hybrid tests: a tiny coarse box (8^3 particles, 32 Mpc/h) and its truth, a
PM run from the same 2LPT particles on a force mesh twice finer with 20 steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import jpm_core as jc
import jpm_hybrid as jh

COSMO = jc.Cosmology()
A_INIT = 0.1
A_SNAPSHOTS = [0.5, 1.0]


def tiny_initial(domain, seed=0, cosmo=COSMO, dtype=None):
    delta = jc.linear_field(jax.random.key(seed), domain, lambda k: jc.linear_power(cosmo, k))
    if dtype is not None:
        delta = delta.astype(dtype)
    return jc.lpt(cosmo, delta, domain, A_INIT)


def zero_filter(config=None, seed=0):
    """A SplineFilter whose value head outputs 0: f = 0 everywhere (plain PM)."""
    model = jh.SplineFilter(config, rngs=nnx.Rngs(seed), zero_output=True)
    assert float(jnp.abs(model(jnp.linspace(0.0, 20.0, 50), 0.5)).max()) == 0.0
    return model


@pytest.fixture(scope="session")
def helpers():
    """The module's helpers for the tests (conftest is not importable by name from them)."""

    class Helpers:
        cosmo = COSMO
        a_snapshots = A_SNAPSHOTS
        initial = staticmethod(tiny_initial)
        zero = staticmethod(zero_filter)

    return Helpers


@pytest.fixture(scope="session")
def coarse_domain():
    return jc.Domain(8, 32.0)


@pytest.fixture(scope="session")
def tiny_truth(coarse_domain, tmp_path_factory):
    path = tmp_path_factory.mktemp("truth") / "truth.npz"
    initial = tiny_initial(coarse_domain)
    truth = jh.make_truth(COSMO, initial, coarse_domain, A_SNAPSHOTS, boost=2, steps=20, path=path)
    return truth, path
