"""`hybrid_odeint`: the hybrid equations of motion under a diffrax solver.

References, none taken from the code under test: `jpm_core.nbody` / `hybrid_nbody` (FastPM
kick-drift-kick, a different integrator) converging to the adaptive solution at second order as its
steps are halved; float64 finite differences of fixed-step runs; the gradient of a fine fixed-step
run for the adaptive adjoints (finite differences of an adaptive run jump with the step sizes the
controller picks, so they are no reference there)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import jpm_core as jc
import jpm_hybrid as jh

diffrax = pytest.importorskip("diffrax")

DOMAIN = jc.Domain(8, 32.0)


def _initial(helpers):
    return helpers.initial(DOMAIN, dtype=jnp.float64)


def _split_model(seed=1):
    graphdef, params = nnx.split(jh.SplineFilter(rngs=nnx.Rngs(seed)))
    return graphdef, jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


@pytest.mark.x64
def test_nbody_converges_to_the_adaptive_solution_at_second_order(helpers):
    """Halving `hybrid_nbody`'s step divides its distance to the tight-tolerance Dopri5 solution
    by about 4 (the kick-drift-kick scheme is second order), with a filter (the plain run is the
    zero-output case of the next test)."""
    initial = _initial(helpers)
    for m in (jh.SplineFilter(rngs=nnx.Rngs(1)),):
        reference = jh.hybrid_odeint(
            helpers.cosmo, initial, DOMAIN, [0.5, 1.0], m, rtol=1e-9, atol=1e-9
        )
        assert reference.snapshots.positions.shape == (2, 8, 8, 8, 3)
        np.testing.assert_array_equal(reference.snapshots.a, [0.5, 1.0])
        errors = []
        for steps in (10, 20, 40):
            run = jh.hybrid_nbody(helpers.cosmo, initial, DOMAIN, [0.5, 1.0], m, steps=steps)
            diff = run.snapshots.positions - reference.snapshots.positions
            errors.append(float(jnp.abs(diff).max()))
        ratios = np.array(errors[:-1]) / np.array(errors[1:])
        assert np.all((ratios > 3.3) & (ratios < 4.8)), (errors, ratios)
        assert errors[-1] < 2e-2  # mesh cells, after 40 steps


@pytest.mark.slow
@pytest.mark.x64
def test_filter_changes_the_solution_and_zero_output_does_not(helpers):
    initial = _initial(helpers)
    plain = jh.hybrid_odeint(helpers.cosmo, initial, DOMAIN, [1.0], None, rtol=1e-8, atol=1e-8)
    zero = jh.hybrid_odeint(
        helpers.cosmo, initial, DOMAIN, [1.0], helpers.zero(), rtol=1e-8, atol=1e-8
    )
    np.testing.assert_allclose(zero.snapshots.positions, plain.snapshots.positions, atol=1e-12)
    hybrid = jh.hybrid_odeint(
        helpers.cosmo,
        initial,
        DOMAIN,
        [1.0],
        jh.SplineFilter(rngs=nnx.Rngs(1)),
        rtol=1e-8,
        atol=1e-8,
    )
    assert float(jnp.abs(hybrid.snapshots.positions - plain.snapshots.positions).max()) > 1e-3
    # PGD displaces the snapshots of the plain run
    pgd = jh.PGDCorrection(0.3, 1.5, alpha=0.05)
    corrected = jh.hybrid_odeint(helpers.cosmo, initial, DOMAIN, [1.0], pgd, rtol=1e-8, atol=1e-8)
    expected = pgd.correct(plain.snapshots, DOMAIN)
    np.testing.assert_allclose(corrected.snapshots.positions, expected.positions, atol=1e-12)


@pytest.mark.x64
def test_fixed_step_gradient_matches_float64_finite_differences(helpers):
    initial = _initial(helpers)
    graphdef, params = _split_model()

    def loss(p):
        run = jh.hybrid_odeint(
            helpers.cosmo,
            initial,
            DOMAIN,
            [1.0],
            nnx.merge(graphdef, p),
            stepsize_controller=diffrax.ConstantStepSize(),
            dt0=0.3,
        )
        return jnp.sum(jnp.sin(run.snapshots.positions))

    check_grads(jax.jit(loss), (params,), order=1, modes=("rev",), eps=1e-5, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.x64
def test_adaptive_adjoints_match_the_gradient_of_a_fine_fixed_step_run(helpers):
    """Measured (8^3, loss sum(sin(x)) at a = 1): the default `RecursiveCheckpointAdjoint` is within
    3.3e-4 (rtol = atol = 1e-5) and 2.0e-5 (1e-7) of the converged gradient, relative to its largest
    entry; `BacksolveAdjoint` 1.2e-3 and 8.1e-5."""
    initial = _initial(helpers)
    graphdef, params = _split_model()

    def grad(**kwargs):
        def loss(p):
            run = jh.hybrid_odeint(
                helpers.cosmo, initial, DOMAIN, [1.0], nnx.merge(graphdef, p), **kwargs
            )
            return jnp.sum(jnp.sin(run.snapshots.positions))

        return _flat(jax.jit(jax.grad(loss))(params))

    fine = grad(stepsize_controller=diffrax.ConstantStepSize(), dt0=0.9 / 256)
    coarser = grad(stepsize_controller=diffrax.ConstantStepSize(), dt0=0.9 / 128)
    scale = np.abs(fine).max()
    assert np.abs(fine - coarser).max() / scale < 1e-6  # the reference has converged
    for tol, bound in ((1e-5, 1e-3), (1e-7, 1e-4)):
        default = grad(rtol=tol, atol=tol)
        assert np.abs(default - fine).max() / scale < bound
        backsolve = grad(
            rtol=tol,
            atol=tol,
            adjoint=diffrax.BacksolveAdjoint(
                stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol)
            ),
        )
        assert np.abs(backsolve - fine).max() / scale < 5 * bound


@pytest.mark.x64
def test_nan_parameter_gives_nan_under_jit_and_an_error_eagerly(helpers):
    initial = _initial(helpers)
    graphdef, params = _split_model()
    leaves, treedef = jax.tree.flatten(params)
    leaves[0] = leaves[0].at[0].set(jnp.nan)
    bad = jax.tree.unflatten(treedef, leaves)

    def loss(p):
        run = jh.hybrid_odeint(
            helpers.cosmo, initial, DOMAIN, [1.0], nnx.merge(graphdef, p), max_steps=64
        )
        return jnp.sum(run.snapshots.positions)

    value, grad = jax.jit(jax.value_and_grad(loss))(bad)
    assert np.isnan(float(value))
    assert np.all(np.isnan(_flat(grad)))

    # a non-finite cosmological parameter, traced
    def loss_cosmo(omega_c):
        cosmo = dataclasses.replace(helpers.cosmo, Omega_c=omega_c)
        run = jh.hybrid_odeint(cosmo, initial, DOMAIN, [1.0], None, max_steps=64)
        return jnp.sum(run.snapshots.positions)

    value, grad = jax.jit(jax.value_and_grad(loss_cosmo))(jnp.float64(jnp.nan))
    assert np.isnan(float(value))
    assert np.isnan(float(grad))
    with pytest.raises(ValueError, match=r"finite|negative|1 \+ f"):
        jh.hybrid_odeint(helpers.cosmo, initial, DOMAIN, [1.0], nnx.merge(graphdef, bad))


def test_solver_failure_is_an_error_eagerly(helpers):
    initial = helpers.initial(DOMAIN)
    with pytest.raises(RuntimeError, match=r"max_steps|diffrax stopped"):
        jh.hybrid_odeint(helpers.cosmo, initial, DOMAIN, [1.0], None, max_steps=2)


def test_bad_arguments_are_refused_before_compute(helpers):
    initial = helpers.initial(DOMAIN)
    cosmo = helpers.cosmo
    cases = [
        ({"rtol": -1.0}, ValueError, "rtol"),
        ({"atol": float("nan")}, ValueError, "atol"),
        ({"rtol": "1e-5"}, TypeError, "rtol"),
        ({"stepsize_controller": diffrax.ConstantStepSize()}, ValueError, "dt0"),
        ({"stepsize_controller": "pid"}, TypeError, "step-size controller"),
        ({"solver": "dopri5"}, TypeError, "solver"),
        ({"adjoint": "backsolve"}, TypeError, "adjoint"),
        ({"max_steps": 0}, ValueError, "max_steps"),
        ({"forces": "tsc"}, TypeError, "ForceConfig"),
        ({"a_init": 0.2}, ValueError, "differs"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            jh.hybrid_odeint(cosmo, initial, DOMAIN, [1.0], None, **kwargs)
    for snapshots in ([1.0, 0.5], [0.05, 1.0], [float("nan")], [0.1]):
        with pytest.raises(ValueError, match="a_snapshots"):
            jh.hybrid_odeint(cosmo, initial, DOMAIN, snapshots, None)
    with pytest.raises(TypeError, match="model"):
        jh.hybrid_odeint(cosmo, initial, DOMAIN, [1.0], object())
    with pytest.raises(TypeError, match="Domain"):
        jh.hybrid_odeint(cosmo, initial, 8, [1.0], None)
    with pytest.raises(TypeError, match="ParticleState"):
        jh.hybrid_odeint(cosmo, initial.positions, DOMAIN, [1.0], None)
    # a traced initial scale factor needs a_init
    traced = jax.jit(lambda s: jh.hybrid_odeint(cosmo, s, DOMAIN, [1.0], None).snapshots.positions)
    with pytest.raises(ValueError, match="a_init"):
        traced(initial)
