"""The hybrid run on 8 fake CPU devices against one device (float64, MSE < 1e-12), with a learned
filter, in two layouts; and its gradient w.r.t. the filter parameters.

float64 is switched on with the global config (as jpm-core's distributed tests do): jaxdecomp's
partitioner ignores the thread-local `jax.enable_x64` context."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jpm_core as jc
import jpm_hybrid as jh


@pytest.fixture
def _float64_eight_devices(n_devices):
    if n_devices < 8:
        pytest.skip("needs 8 (fake) devices")
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def _run(domain, model, noise, cosmo):
    delta = jc.linear_field_from_noise(noise, domain, lambda k: jc.linear_power(cosmo, k))
    state = jc.lpt(cosmo, delta, domain, 0.2)
    return jh.hybrid_nbody(cosmo, state, domain, [0.6, 1.0], model, steps=3).snapshots


@pytest.mark.slow  # about 75 s on a 2-core machine
@pytest.mark.usefixtures("_float64_eight_devices")
def test_hybrid_nbody_on_a_device_grid_matches_one_device():
    shape, box = (16, 16, 8), (256.0, 256.0, 128.0)
    cosmo = jc.Cosmology()
    model = jh.SplineFilter(rngs=nnx.Rngs(2))
    nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float64), nnx.state(model, nnx.Param)))
    noise = np.random.default_rng(0).normal(size=shape)
    one = _run(jc.Domain(shape, box), model, noise, cosmo)
    for grid in [(2, 4), (4, 2)]:
        dist = _run(jc.Domain(shape, box, device_grid=grid, halo=3), model, noise, cosmo)
        assert len(dist.positions.sharding.device_set) == 8
        mse = float(np.mean((np.asarray(dist.positions) - np.asarray(one.positions)) ** 2))
        assert mse < 1e-12, (grid, mse)
    # the filter did something
    plain = _run(jc.Domain(shape, box), None, noise, cosmo)
    assert np.abs(np.asarray(plain.positions) - np.asarray(one.positions)).max() > 1e-3

    # gradient w.r.t. the filter parameters through the adjoint, on the grid and on one device
    def grad_on(domain):
        delta = jc.linear_field_from_noise(noise, domain, lambda k: jc.linear_power(cosmo, k))
        state = jc.lpt(cosmo, delta, domain, 0.2)
        fn, params = jh.potential_filter(model, domain)

        def loss(p):
            x = jc.nbody(
                cosmo, state, domain, [1.0], steps=2, potential_filter=fn, filter_params=p
            ).snapshots.positions[-1]
            return jnp.sum(jc.paint(x, domain) ** 2)

        return jax.grad(loss)(params)

    g1 = grad_on(jc.Domain(shape, box))
    gd = grad_on(jc.Domain(shape, box, device_grid=(2, 4), halo=3))
    for a, b in zip(jax.tree.leaves(gd), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * float(np.abs(b).max() + 1e-300))
