"""Tests of the reverse-time adjoint of `nbody` (`gradient=jc.Adjoint()`, the default).

The reference is plain autodiff through the scan (`gradient=jc.Direct()`), an independent
differentiation of the same forward program, and finite differences (`check_grads`).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jpm_core as jc

COSMO = jc.Cosmology()
SMALL = jc.Domain(8, 100.0)
A_INIT = 0.2


def _initial_state(key, a=A_INIT):
    delta = 0.5 * jax.random.normal(key, SMALL.mesh_shape)
    return jc.lpt(COSMO, delta, SMALL, a, order=2)


def _periodic_bump(d, period=8.0):
    """A smooth bump of width ~1 cell, periodic with the box (infinitely differentiable)."""
    return jnp.exp(4.0 * (jnp.cos(2 * jnp.pi * d / period) - 1.0))


def _paint_plane(positions_yz, weights):
    """Smooth periodic painting of particles onto an 8 x 8 (y, z) plane (a periodic kernel)."""
    nodes = jnp.arange(8.0)[None, None, :]
    kernel = _periodic_bump(positions_yz[:, :, None] - nodes)  # (n, 2, 8)
    return jnp.einsum("n,ni,nj->ij", weights, kernel[:, 0], kernel[:, 1])


def _observer(cosmo):
    """A lightcone-like observer: particles in a smooth shell of x around a distance that moves
    with the step are painted (TSC) into the 2-D (y, z) plane slot given by an integer counter of
    the carry; the weight closes over the traced cosmology."""

    def observer(state, a_start, a_end, carry):
        planes, index = carry
        a_mid = 0.5 * (a_start + a_end)
        centre = jc.comoving_distance(cosmo, a_mid) / SMALL.cell_size[0]
        shell = _periodic_bump(state.positions[..., 0] - centre)
        weight = (shell * (a_end - a_start) * cosmo.Omega_m).reshape(-1)
        plane = _paint_plane(state.positions.reshape(-1, 3)[:, 1:], weight)
        return planes.at[index].add(plane), index + 1

    return observer


def _crossing_observer(cosmo):
    """A lightcone-like observer that places each particle where it was when a moving surface
    crossed it: on the segment from its start-of-step to its end-of-step position, at a fraction
    that depends on the particle (so the gradient flows through both ends of the step)."""

    def observer(state, a_start, a_end, carry, positions_start):
        planes, index = carry
        x0, x1 = positions_start, state.positions
        centre = jc.comoving_distance(cosmo, a_end) / SMALL.cell_size[0]
        t = jax.nn.sigmoid(x1[..., 0] - centre)[..., None]  # in (0, 1), per particle
        x = x0 + t * (x1 - x0)
        shell = _periodic_bump(x[..., 0] - centre)
        weight = (shell * (a_end - a_start) * cosmo.Omega_m).reshape(-1)
        plane = _paint_plane(x.reshape(-1, 3)[:, 1:], weight)
        return planes.at[index].add(plane), index + 1

    return observer


def _loss(
    gradient,
    n_steps=4,
    observer=True,
    snapshots=(A_INIT, 0.6, 1.0),
    progress=False,
    start_positions=False,
):
    """A scalar of the snapshots (at the start, in the middle, at the end) and of the lightcone
    planes, as a function of the initial state, a filter parameter and two cosmological
    parameters."""
    weights = jax.random.normal(jax.random.key(5), (*SMALL.mesh_shape, 3))
    plane_weights = jax.random.normal(jax.random.key(6), (n_steps, 8, 8))

    def loss(positions, momenta, b, omega_c, w0):
        cosmo = jc.Cosmology(Omega_c=omega_c, w0=w0)

        def potential_filter(k, a, b):
            return 1.0 + b * a * jnp.exp(-((k / 0.2) ** 2))

        kwargs = {}
        if observer:
            kwargs = {
                "observer": (_crossing_observer if start_positions else _observer)(cosmo),
                "observer_init": (jnp.zeros((n_steps, 8, 8), positions.dtype), 0),
                "observer_start_positions": start_positions,
            }
        result = jc.nbody(
            cosmo,
            jc.ParticleState(positions, momenta, A_INIT),
            SMALL,
            snapshots,
            steps=n_steps,
            potential_filter=potential_filter,
            filter_params=b,
            gradient=gradient,
            forces=jc.ForceConfig(scheme="tsc"),
            progress=progress,
            **kwargs,
        )
        snaps = result.snapshots
        value = jnp.sum(weights * snaps.positions[-1]) + jnp.sum(weights * snaps.momenta[-2] ** 2)
        value = value + 0.1 * jnp.sum(weights * snaps.positions[0])
        if observer:
            value = value + 10.0 * jnp.sum(plane_weights * result.observer_carry[0])
        return value

    return loss


def _relative_errors(gradients, reference):
    return [
        float(jnp.abs(g - r).max() / jnp.abs(r).max())
        for g, r in zip(gradients, reference, strict=True)
    ]


@pytest.mark.x64
def test_adjoint_equals_autodiff_float64():
    # w.r.t. the initial positions and momenta, a potential-filter parameter (filter_params),
    # and Omega_c and w0 (kick/drift factors, Omega_m of the force, and the observer's
    # closure); snapshots at the start, in the middle and at the end; a lightcone observer.
    state = _initial_state(jax.random.key(1))
    args = (state.positions, state.momenta, 0.3, 0.26, -0.9)
    grads = {
        mode: jax.jit(jax.grad(_loss(mode), argnums=range(5)))(*args)
        for mode in (jc.Adjoint(), jc.Direct())
    }
    errors = _relative_errors(grads[jc.Adjoint()], grads[jc.Direct()])
    assert max(errors) < 1e-10, errors
    # every input matters (no gradient is trivially zero)
    assert all(float(jnp.abs(g).max()) > 1e-3 for g in grads[jc.Direct()])


@pytest.mark.x64
def test_adjoint_of_an_observer_of_both_ends_of_the_step_equals_autodiff_float64():
    # the observer reads the positions at the start of each step too: under the adjoint they are
    # reconstructed from the end of the step, and their cotangent reaches the state, the force,
    # the step's drift and kick factors (cosmology) and the observer's closure
    state = _initial_state(jax.random.key(3))
    args = (state.positions, state.momenta, 0.3, 0.26, -0.9)
    grads = {
        mode: jax.jit(jax.grad(_loss(mode, start_positions=True), argnums=range(5)))(*args)
        for mode in (jc.Adjoint(), jc.Direct())
    }
    errors = _relative_errors(grads[jc.Adjoint()], grads[jc.Direct()])
    assert max(errors) < 1e-10, errors
    assert all(float(jnp.abs(g).max()) > 1e-3 for g in grads[jc.Direct()])
    # and the start positions matter: the same loss with end positions only differs
    plain = jax.jit(jax.grad(_loss(jc.Direct()), argnums=range(5)))(*args)
    assert max(_relative_errors(plain, grads[jc.Direct()])) > 1e-3


def test_observer_sees_the_positions_at_the_start_of_each_step():
    # positions_start of step i is the end state of step i - 1 (the initial state for step 0)
    state = _initial_state(jax.random.key(4))
    grid = [A_INIT, 0.4, 0.7, 1.0]

    def observer(end, a_start, a_end, carry, positions_start):
        starts, ends, index = carry
        return starts.at[index].set(positions_start), ends.at[index].set(end.positions), index + 1

    zeros = jnp.zeros((3, *state.positions.shape), state.positions.dtype)
    result = jc.nbody(
        COSMO,
        state,
        SMALL,
        grid[1:],
        steps=grid,
        observer=observer,
        observer_init=(zeros, zeros, 0),
        observer_start_positions=True,
    )
    starts, ends, count = result.observer_carry
    assert int(count) == 3
    np.testing.assert_array_equal(starts[0], state.positions)
    np.testing.assert_array_equal(starts[1:], ends[:-1])
    np.testing.assert_array_equal(ends, result.snapshots.positions)
    with pytest.raises(TypeError, match="observer_start_positions"):
        jc.nbody(
            COSMO,
            state,
            SMALL,
            1.0,
            steps=2,
            observer=observer,
            observer_init=(zeros, zeros, 0),
            observer_start_positions="yes",
        )


@pytest.mark.x64
@pytest.mark.slow
def test_adjoint_matches_finite_differences():
    # a small eps: TSC painting is only C1, so central differences lose their second order
    state = _initial_state(jax.random.key(2))
    loss = jax.jit(_loss(jc.Adjoint(), n_steps=2, snapshots=(0.6, 1.0)))
    args = (state.positions, state.momenta, 0.3, 0.26, -0.9)
    check_grads(loss, args, order=1, modes=("rev",), eps=1e-6)


@pytest.mark.x64
@pytest.mark.slow
def test_adjoint_under_vmap_over_cosmologies():
    state = _initial_state(jax.random.key(7))
    omega_c, b = jnp.array([0.22, 0.26, 0.3]), jnp.array([0.1, 0.2, 0.3])

    def loss(gradient):
        def f(omega_c, b):
            return _loss(gradient, 2, True, (0.6, 1.0))(
                state.positions, state.momenta, b, omega_c, -0.9
            )

        return jax.grad(f, argnums=(0, 1))

    batched = jax.jit(jax.vmap(loss(jc.Adjoint())))(omega_c, b)
    one_by_one = [loss(jc.Direct())(o, c) for o, c in zip(omega_c, b, strict=True)]
    for got, want in zip(batched, zip(*one_by_one, strict=True), strict=True):
        np.testing.assert_allclose(got, jnp.stack(want), rtol=1e-10)


def test_adjoint_float32_and_progress(capsys):
    # float32: the reconstructed trajectory differs from the forward one by round-off only. A
    # fixed cosmology (its gradient is compared in float64 above) keeps the compilation short.
    state = _initial_state(jax.random.key(3))
    args = (state.positions, state.momenta, 0.3)

    def grad(gradient, progress):
        loss = _loss(gradient, 4, False, progress=progress)
        return jax.jit(jax.grad(lambda x, p, b: loss(x, p, b, 0.26, -1.0), argnums=range(3)))

    reference = grad(jc.Direct(), False)(*args)
    grads = jax.block_until_ready(grad(jc.Adjoint(), True)(*args))
    assert max(_relative_errors(grads, reference)) < 1e-3
    jax.effects_barrier()
    err = capsys.readouterr().err
    assert re.search(r"nbody\b.*4/4", err), err  # the rich bars: step i/n
    assert re.search(r"nbody adjoint\b.*4/4", err), err


def test_adjoint_gradient_memory_is_flat_in_the_number_of_steps():
    domain = jc.Domain(16, 200.0)
    state = jc.lpt(
        COSMO, 0.3 * jax.random.normal(jax.random.key(4), domain.mesh_shape), domain, 0.1
    )

    def temp_bytes(n_steps, gradient):
        def loss(positions, momenta):
            s = jc.ParticleState(positions, momenta, 0.1)
            snaps = jc.nbody(COSMO, s, domain, 1.0, steps=n_steps, gradient=gradient, a_init=0.1)
            return jnp.sum(snaps.snapshots.positions**2)

        compiled = jax.jit(jax.grad(loss)).lower(state.positions, state.momenta).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    adjoint_10, adjoint_40 = temp_bytes(10, jc.Adjoint()), temp_bytes(40, jc.Adjoint())
    assert abs(adjoint_40 / adjoint_10 - 1) < 0.1
    # per-step checkpointing stores 3 particle arrays per step: 30 more steps cost 4.4 MiB
    assert temp_bytes(40, jc.Checkpointed()) > adjoint_40 + 30 * 3 * state.positions.nbytes // 2


def test_observer_that_the_adjoint_cannot_linearise_raises():
    state = _initial_state(jax.random.key(5))

    def loss(positions, observer):
        result = jc.nbody(
            COSMO,
            jc.ParticleState(positions, state.momenta, A_INIT),
            SMALL,
            1.0,
            steps=2,
            observer=observer,
            observer_init=jnp.ones(SMALL.mesh_shape[:2]),
        )
        return jnp.sum(result.observer_carry)

    def product(s, a_start, a_end, carry):  # its derivative reads the carry
        return carry * jnp.sum(s.positions[..., 0], axis=-1)

    with pytest.raises(ValueError, match=r"gradient=jpm_core.Checkpointed\(\)"):
        jax.grad(loss)(state.positions, product)
    # the forward pass of the same observer runs (only the gradient needs the linearisation)
    assert jnp.isfinite(loss(state.positions, product))


def test_bad_gradient_value_raises():
    state = _initial_state(jax.random.key(6))
    # a string (the 0.1 API) is a TypeError naming the three classes
    for bad in ("adjoint", "checkpoint", "checkpointed", True):
        with pytest.raises(TypeError, match=r"Adjoint\(\), .*Checkpointed\(\) or .*Direct\(\)"):
            jc.nbody(COSMO, state, SMALL, 1.0, steps=2, gradient=bad)
    with pytest.raises(TypeError, match=r"an instance, e.g. Direct\(\)"):
        jc.nbody(COSMO, state, SMALL, 1.0, steps=2, gradient=jc.Direct)
