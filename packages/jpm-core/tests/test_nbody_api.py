"""The 0.2 API of `nbody`: configuration objects, explicit filter parameters, forward mode, checks.

References are float64 finite differences (`check_grads`), reverse mode against forward mode, and
exact statements (a wrong lattice spacing raises, a NaN filter output gives NaN).
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jpm_core as jc

COSMO = jc.Cosmology()
SMALL = jc.Domain(4, 50.0)
A_INIT = 0.2
TSC = jc.ForceConfig(scheme="tsc")  # TSC keeps the trajectory C1: finite differences hold


def _state(key=0, domain=SMALL, a=A_INIT):
    delta = 0.5 * jax.random.normal(jax.random.key(key), domain.mesh_shape)
    return jc.lpt(COSMO, delta, domain, a, order=1)


def _filter(k, a, params):
    """A learned-filter stand-in: `1 + b a exp(-(k / k_s)^2)` with `params = {"b", "k_s"}`."""
    return 1.0 + params["b"] * a * jnp.exp(-((k / params["k_s"]) ** 2))


PARAMS = {"b": 0.4, "k_s": 0.15}  # Python floats: float64 under the x64 marker


def _loss(gradient, state):
    weights = jax.random.normal(jax.random.key(9), state.positions.shape)

    def loss(params):
        snaps = jc.nbody(
            COSMO,
            state,
            SMALL,
            [0.6, 1.0],
            steps=[A_INIT, 0.6, 1.0],
            forces=TSC,
            gradient=gradient,
            potential_filter=_filter,
            filter_params=params,
        ).snapshots
        return jnp.sum(weights * snaps.positions[1]) + jnp.sum(weights * snaps.momenta[0] ** 2)

    return loss


# ---------------------------------------------------------------------------- configuration
def test_configuration_objects_are_frozen_hashable_and_validated():
    forces = jc.ForceConfig(kernel="finite_difference", laplace="finite_difference")
    assert hash(forces) == hash(
        jc.ForceConfig(kernel="finite_difference", laplace="finite_difference")
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        forces.kernel = "spectral"  # type: ignore[misc]
    for field, value in (("kernel", "fourier"), ("laplace", 3), ("scheme", "ngp")):
        with pytest.raises(ValueError, match=rf"ForceConfig\.{field} .*{value!r}"):
            jc.ForceConfig(**{field: value})
    assert {jc.Adjoint(), jc.Adjoint(), jc.Direct(), jc.Checkpointed()} == {
        jc.Adjoint(),
        jc.Direct(),
        jc.Checkpointed(),
    }
    state = _state()
    with pytest.raises(TypeError, match="ForceConfig"):
        jc.nbody(COSMO, state, SMALL, 1.0, steps=1, forces="spectral")
    with pytest.raises(TypeError, match="ForceConfig"):
        jc.lpt(COSMO, jnp.zeros(SMALL.mesh_shape), SMALL, 0.5, forces=("spectral",))


# ---------------------------------------------------------------------- filter_params gradients
@pytest.mark.x64
@pytest.mark.parametrize(
    "gradient",
    [jc.Adjoint(), pytest.param(jc.Direct(), marks=pytest.mark.slow)],
    ids=["adjoint", "direct"],
)
def test_gradient_wrt_filter_params_through_nbody_matches_finite_differences(gradient):
    loss = jax.jit(_loss(gradient, _state()))
    modes = ("rev",) if isinstance(gradient, jc.Adjoint) else ("fwd", "rev")
    check_grads(loss, (PARAMS,), order=1, modes=modes, eps=1e-5)
    # the parameters matter (their derivative is not trivially zero)
    grads = jax.grad(loss)(PARAMS)
    assert all(abs(float(g)) > 1e-4 for g in jax.tree.leaves(grads))


@pytest.mark.x64
def test_adjoint_and_direct_agree_on_the_filter_params_gradient():
    state = _state(1)
    adjoint = jax.jit(jax.grad(_loss(jc.Adjoint(), state)))(PARAMS)
    direct = jax.jit(jax.grad(_loss(jc.Direct(), state)))(PARAMS)
    for name in PARAMS:
        np.testing.assert_allclose(adjoint[name], direct[name], rtol=1e-10)


@pytest.mark.x64
@pytest.mark.parametrize(
    "adjoint", [pytest.param("backsolve", marks=pytest.mark.slow), "recursive"]
)
def test_vector_field_differentiates_filter_params_through_diffrax_args(adjoint):
    diffrax = pytest.importorskip("diffrax")
    state = _state(2)
    weights = jax.random.normal(jax.random.key(3), state.positions.shape)
    term = diffrax.ODETerm(
        jc.nbody_vector_field(COSMO, SMALL, forces=TSC, potential_filter=_filter)
    )
    method = (
        diffrax.BacksolveAdjoint()  # solves the adjoint ODE backwards with the same Tsit5 steps
        if adjoint == "backsolve"
        else diffrax.RecursiveCheckpointAdjoint()
    )

    @jax.jit
    def loss(params):
        solution = diffrax.diffeqsolve(
            term,
            diffrax.Tsit5(),
            t0=A_INIT,
            t1=0.5,
            dt0=0.025,
            y0=(state.positions, state.momenta),
            args=params,
            stepsize_controller=diffrax.ConstantStepSize(),
            adjoint=method,
            saveat=diffrax.SaveAt(t1=True),
        )
        x, p = solution.ys
        return jnp.sum(weights * x[-1]) + jnp.sum(weights * p[-1])

    check_grads(loss, (PARAMS,), order=1, modes=("rev",), eps=1e-5, atol=1e-6, rtol=1e-5)
    assert all(abs(float(g)) > 1e-4 for g in jax.tree.leaves(jax.grad(loss)(PARAMS)))


# ------------------------------------------------------------------------------- forward mode
@pytest.mark.x64
def test_forward_mode_under_the_adjoint_raises_a_clear_error():
    loss = _loss(jc.Adjoint(), _state())
    with pytest.raises(TypeError, match=r"gradient=jpm_core\.Direct\(\)"):
        jax.jvp(loss, (PARAMS,), (PARAMS,))
    with pytest.raises(TypeError, match=r"gradient=jpm_core\.Direct\(\)"):
        jax.jacfwd(loss)(PARAMS)


@pytest.mark.slow
def test_forward_over_reverse_under_the_adjoint_equals_the_direct_hessian():
    loss = _loss(jc.Adjoint(), _state())
    # forward over reverse (jax.hessian) differentiates the adjoint's own backward pass: it runs
    # and agrees with the Hessian of plain autodiff
    direct = _loss(jc.Direct(), _state())
    hessians = [jax.jit(jax.hessian(f))(PARAMS) for f in (loss, direct)]
    for got, want in zip(*(jax.tree.leaves(h) for h in hessians), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-8)


@pytest.mark.x64
def test_direct_gives_forward_mode_derivatives_equal_to_reverse_mode_and_fd():
    state = _state(4)

    def f(theta):  # a vector of two parameters: a Fisher-like jacfwd/hessian use
        return _loss(jc.Direct(), state)({"b": theta[0], "k_s": theta[1]})

    theta = jnp.asarray([0.4, 0.15])
    forward = jax.jit(jax.jacfwd(f))(theta)
    reverse = jax.jit(jax.jacrev(f))(theta)
    np.testing.assert_allclose(forward, reverse, rtol=1e-10)
    # forward mode against central differences (check_grads, float64)
    check_grads(jax.jit(f), (theta,), order=1, modes=("fwd",), eps=1e-5)


@pytest.mark.x64
@pytest.mark.slow
def test_direct_hessian_equals_finite_differences_of_the_gradient():
    state = _state(4)

    def f(theta):
        return _loss(jc.Direct(), state)({"b": theta[0], "k_s": theta[1]})

    theta = jnp.asarray([0.4, 0.15])
    # the Hessian (forward over reverse) against central differences of the reverse gradient
    hess = np.asarray(jax.jit(jax.hessian(f))(theta))
    grad = jax.jit(jax.grad(f))
    eps = 1e-5
    fd = np.stack(
        [
            (np.asarray(grad(theta + eps * e)) - np.asarray(grad(theta - eps * e))) / (2 * eps)
            for e in np.eye(2)
        ],
        axis=1,
    )
    np.testing.assert_allclose(hess, fd, rtol=1e-5, atol=1e-8 * np.abs(fd).max())
    np.testing.assert_allclose(hess, hess.T, rtol=1e-8, atol=1e-12 * np.abs(hess).max())


# --------------------------------------------------------------------------------- wrong units
def test_a_state_in_the_cells_of_another_domain_raises():
    particles = jc.Domain(4, 50.0)
    mesh = jc.Domain(8, 50.0)
    state = _state(5, particles, a=0.5)
    fd = jc.ForceConfig(kernel="finite_difference", laplace="finite_difference")
    # forgotten rescale_state: the 4^3 lattice in cells of the particle grid fills 1/8 of the box
    with pytest.raises(ValueError, match="rescale_state"):
        jc.nbody(COSMO, state, mesh, 1.0, steps=1, forces=fd)
    # rescaled for the 8^3 mesh but run on the 4^3 one
    rescaled = jc.rescale_state(state, particles, mesh)
    with pytest.raises(ValueError, match=r"spaced by 2 cells .* by 1 cells"):
        jc.nbody(COSMO, rescaled, particles, 1.0, steps=1)
    # the right units run
    result = jc.nbody(COSMO, rescaled, mesh, 1.0, steps=1, forces=fd)
    assert bool(jnp.all(jnp.isfinite(result.snapshots.positions)))


# ------------------------------------------------------------------------------- traced NaN
def test_a_nan_filter_output_poisons_the_run_inside_jit():
    state = _state(6)

    @jax.jit
    def run(c):
        return jc.nbody(
            COSMO,
            state,
            SMALL,
            1.0,
            steps=2,
            potential_filter=lambda k, a, c: c * jnp.ones_like(k),
            filter_params=c,
        ).snapshots.positions

    assert bool(jnp.all(jnp.isfinite(run(1.0))))
    assert bool(jnp.all(jnp.isnan(run(jnp.nan))))


# ----------------------------------------------------------------------------------- progress
def test_one_progress_bar_per_call_under_jit_and_vmap(capsys):
    state = _state(7)

    def run(omega_c):
        cosmo = jc.Cosmology(Omega_c=omega_c)
        return jc.nbody(cosmo, state, SMALL, 1.0, steps=3, progress=True).snapshots.positions

    out = jax.block_until_ready(jax.jit(jax.vmap(run))(jnp.asarray([0.24, 0.26, 0.28])))
    jax.effects_barrier()
    assert out.shape == (3, 1, *state.positions.shape)
    err = capsys.readouterr().err
    assert len(re.findall(r"nbody\b.*3/3", err)) == 1, err
