"""`paint_grid`/`read_grid`: 2-D and 3-D grids, periodic or not.

References: a direct NumPy deposit that evaluates the kernels' definitions node by node (not the
stencil code), `paint`/`read` on a `Domain` for 3-D grids, the adjoint identity, and float64
finite differences (`check_grads`)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jpm_core as jc


def _kernel(d, scheme):
    d = np.abs(d)
    if scheme == "cic":
        return np.maximum(0.0, 1.0 - d)
    return np.where(d < 0.5, 0.75 - d**2, np.where(d < 1.5, 0.5 * (1.5 - d) ** 2, 0.0))


def _numpy_paint(x, w, shape, scheme, periodic):
    out = np.zeros(shape)
    for xp, wp in zip(x, w, strict=True):
        ranges = [range(int(np.floor(c)) - 2, int(np.floor(c)) + 3) for c in xp]
        for node in itertools.product(*ranges):
            k = np.prod([_kernel(c - i, scheme) for c, i in zip(xp, node, strict=True)])
            if k == 0:
                continue
            if periodic:
                out[tuple(i % n for i, n in zip(node, shape, strict=True))] += wp * k
            elif all(0 <= i < n for i, n in zip(node, shape, strict=True)):
                out[node] += wp * k
    return out


@pytest.mark.x64
@pytest.mark.parametrize("scheme", ["cic", "tsc"])
@pytest.mark.parametrize("periodic", [True, False])
def test_2d_paint_equals_the_kernel_definition(scheme, periodic):
    rng = np.random.default_rng(0)
    shape = (7, 5)
    # inside, across the edges, and far away (must never wrap in when not periodic)
    x = np.concatenate(
        [rng.uniform(-2.5, 8.5, (40, 2)), [[-50.0, 2.0], [3.0, 1e6], [6.9, 4.9], [-0.4, -0.6]]]
    )
    w = rng.uniform(0.5, 2.0, len(x))
    got = jc.paint_grid(x, shape, w, scheme, periodic=periodic)
    np.testing.assert_allclose(got, _numpy_paint(x, w, shape, scheme, periodic), atol=1e-12)
    if periodic:
        np.testing.assert_allclose(got.sum(), w.sum(), rtol=1e-12)


@pytest.mark.parametrize("scheme", ["cic", "tsc"])
def test_3d_grid_equals_paint_and_read_on_a_domain(scheme):
    domain = jc.Domain((6, 4, 5), 10.0)
    x = jax.random.uniform(jax.random.key(0), (50, 3)) * jnp.asarray([6.0, 4.0, 5.0])[None, :]
    w = jax.random.uniform(jax.random.key(1), (50,))
    np.testing.assert_allclose(
        jc.paint_grid(x, domain.mesh_shape, w, scheme), jc.paint(x, domain, w, scheme), atol=1e-6
    )
    f = jax.random.normal(jax.random.key(2), domain.mesh_shape)
    np.testing.assert_allclose(jc.read_grid(f, x, scheme), jc.read(f, x, domain, scheme), atol=1e-6)


@pytest.mark.x64
@pytest.mark.parametrize("scheme", ["cic", "tsc"])
@pytest.mark.parametrize("periodic", [True, False])
def test_read_is_the_adjoint_of_paint(scheme, periodic):
    rng = np.random.default_rng(1)
    shape = (8, 6)
    x = rng.uniform(-3.0, 10.0, (30, 2))
    w = rng.normal(size=30)
    f = rng.normal(size=shape)
    lhs = jnp.vdot(jc.paint_grid(x, shape, w, scheme, periodic=periodic), f)
    rhs = jnp.vdot(w, jc.read_grid(f, x, scheme, periodic=periodic))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


@pytest.mark.x64
@pytest.mark.parametrize("periodic", [True, False])
def test_gradients_match_finite_differences(periodic):
    # TSC is C1; positions away from the kernel's kinks and inside / across the edges
    x = jnp.asarray([[0.3, 4.2], [6.6, 0.9], [3.3, 3.8], [-0.8, 2.1]])
    w = jnp.asarray([1.0, 0.5, 2.0, 1.5])
    f = jax.random.normal(jax.random.key(3), (7, 5), jnp.float64)

    def paint(x, w):
        return jc.paint_grid(x, (7, 5), w, "tsc", periodic=periodic)

    def read(f, x):
        return jc.read_grid(f, x, "tsc", periodic=periodic)

    check_grads(paint, (x, w), order=1, modes=("fwd", "rev"), eps=1e-6)
    check_grads(read, (f, x), order=1, modes=("fwd", "rev"), eps=1e-6)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        jc.paint_grid(jnp.zeros((4, 3)), (8, 8))
    with pytest.raises(ValueError, match="2 or 3"):
        jc.paint_grid(jnp.zeros((4, 1)), (8,))
    with pytest.raises(ValueError, match="weights"):
        jc.paint_grid(jnp.zeros((4, 2)), (8, 8), jnp.ones(3))
    with pytest.raises(ValueError, match="scheme"):
        jc.read_grid(jnp.zeros((8, 8)), jnp.zeros((4, 2)), "ngp")
