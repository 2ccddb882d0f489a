"""The SO(3) toolkit against independent references (scipy's expm and Rotation, numpy's cross)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from jax.test_util import check_grads
from scipy.spatial.transform import Rotation

import jso3

# Jitted once per module: op-by-op dispatch would dominate the run time.
exp = jax.jit(jso3.exp)
log = jax.jit(jso3.log)
hat = jax.jit(jso3.hat)
vee = jax.jit(jso3.vee)
rotation_angle = jax.jit(jso3.rotation_angle)
geodesic_distance = jax.jit(jso3.geodesic_distance)
matrix_to_quaternion = jax.jit(jso3.matrix_to_quaternion)
quaternion_to_matrix = jax.jit(jso3.quaternion_to_matrix)
axis_angle_to_matrix = jax.jit(jso3.axis_angle_to_matrix)
matrix_to_axis_angle = jax.jit(jso3.matrix_to_axis_angle)
sample_uniform = jax.jit(jso3.sample_uniform, static_argnums=1)


def _random_vectors(seed, n, max_angle=np.pi):
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    return axis * rng.uniform(0, max_angle, size=(n, 1))


# angles that stress the branches: 0, tiny, the Taylor switch, generic, and next to pi
_EDGE_ANGLES = [0.0, 1e-12, 1e-7, 0.0999, 0.1001, 1.0, 2.5, np.pi - 1e-3, np.pi - 1e-7]


def _edge_vectors():
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(len(_EDGE_ANGLES), 3))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    return axes * np.asarray(_EDGE_ANGLES)[:, None]


@pytest.mark.x64
def test_hat_is_the_cross_product_and_vee_inverts_it():
    rng = np.random.default_rng(1)
    v, u = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    np.testing.assert_allclose(hat(v) @ u[..., None], np.cross(v, u)[..., None], atol=1e-14)
    np.testing.assert_allclose(vee(hat(v)), v, atol=1e-15)
    np.testing.assert_allclose(hat(v), -np.swapaxes(hat(v), -1, -2), atol=0)


@pytest.mark.x64
def test_exp_matches_matrix_exponential_and_scipy():
    v = np.concatenate([_edge_vectors(), _random_vectors(2, 20)])
    R = np.asarray(exp(v))
    expected = np.stack([scipy.linalg.expm(np.asarray(hat(x))) for x in v])
    np.testing.assert_allclose(R, expected, atol=1e-13)
    np.testing.assert_allclose(R, Rotation.from_rotvec(v).as_matrix(), atol=1e-13)
    eye = np.broadcast_to(np.eye(3), R.shape)
    np.testing.assert_allclose(np.swapaxes(R, -1, -2) @ R, eye, atol=1e-14)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-14)


@pytest.mark.x64
def test_log_inverts_exp_at_every_angle():
    v = np.concatenate([_edge_vectors(), _random_vectors(3, 50)])
    np.testing.assert_allclose(log(exp(v)), v, atol=1e-12, rtol=1e-7)
    # Relative accuracy at tiny angles (the rtol above would hide an O(1) error there).
    tiny = _edge_vectors()[1:3]
    np.testing.assert_allclose(log(exp(tiny)), tiny, rtol=1e-9, atol=0)


@pytest.mark.x64
def test_exp_of_log_is_identity_including_half_turns():
    R = np.concatenate(
        [
            np.asarray(sample_uniform(jax.random.key(0), (50,))),
            np.stack([np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])]),
            Rotation.from_rotvec([[np.pi / np.sqrt(3)] * 3, [0, np.pi, 0]]).as_matrix(),
        ]
    )
    np.testing.assert_allclose(exp(log(R)), R, atol=1e-12)
    np.testing.assert_allclose(rotation_angle(R[-5:]), np.pi, atol=1e-12)
    assert np.all(np.linalg.norm(log(R), axis=-1) <= np.pi + 1e-12)


@pytest.mark.x64
def test_quaternions_match_scipy_and_round_trip():
    R = np.asarray(sample_uniform(jax.random.key(1), (40,)))
    R = np.concatenate([R, np.eye(3)[None], np.diag([1.0, -1, -1])[None]])
    q = np.asarray(matrix_to_quaternion(R))
    xyzw = Rotation.from_matrix(R).as_quat()
    expected = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=-1)
    expected *= np.where(expected[:, :1] < 0, -1.0, 1.0)
    np.testing.assert_allclose(q, expected, atol=1e-12)
    assert np.all(q[:, 0] >= 0)
    np.testing.assert_allclose(quaternion_to_matrix(q), R, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(-3.0 * q), R, atol=1e-12)


@pytest.mark.x64
def test_axis_angle_round_trip_and_angle_functions():
    v = _random_vectors(4, 30)
    angle = np.linalg.norm(v, axis=-1)
    axis = v / angle[:, None]
    R = axis_angle_to_matrix(axis, angle)
    np.testing.assert_allclose(R, Rotation.from_rotvec(v).as_matrix(), atol=1e-13)
    axis2, angle2 = matrix_to_axis_angle(R)
    np.testing.assert_allclose(axis2, axis, atol=1e-10)
    np.testing.assert_allclose(angle2, angle, atol=1e-12)
    np.testing.assert_allclose(rotation_angle(R), angle, atol=1e-12)
    R2 = np.asarray(sample_uniform(jax.random.key(5), (30,)))
    d = geodesic_distance(R, R2)
    np.testing.assert_allclose(d, geodesic_distance(R2, R), atol=1e-12)
    expected = Rotation.from_matrix(np.swapaxes(R, -1, -2) @ R2).magnitude()
    np.testing.assert_allclose(d, expected, atol=1e-10)
    axis0, angle0 = matrix_to_axis_angle(np.eye(3))
    np.testing.assert_allclose(axis0, [0.0, 0.0, 1.0])
    assert angle0 == 0.0


def _fd_jacobian(f, x, h=1e-6):
    """Central finite differences of a jitted function, in one batched call."""
    x = np.asarray(x, dtype=np.float64)
    steps = h * np.eye(x.size).reshape((x.size, *x.shape))
    plus, minus = np.asarray(f(x + steps)), np.asarray(f(x - steps))
    return np.moveaxis((plus - minus) / (2 * h), 0, -1).reshape((*plus.shape[1:], *x.shape))


@pytest.mark.x64
def test_gradients_at_and_away_from_the_identity():
    @jax.jit
    @jax.vmap
    def derivatives(v):
        return (
            jax.jacfwd(jso3.exp)(v),
            jax.hessian(jso3.exp)(v),
            jax.jacfwd(lambda v: jso3.log(jso3.exp(v)))(v),
        )

    points = np.array([[0.0, 0.0, 0.0], [1e-9, 0.0, 0.0], [0.03, -0.02, 0.05], [0.3, -0.2, 0.9]])
    jacobians, hessians, round_trips = derivatives(points)
    for v, jac in zip(points, jacobians, strict=True):
        np.testing.assert_allclose(jac, _fd_jacobian(exp, v), atol=1e-8)
    # at 0: d exp = hat(dv), d2 exp = (hat(e_i) hat(e_j) + hat(e_j) hat(e_i)) / 2
    basis = np.asarray(hat(np.eye(3)))
    np.testing.assert_allclose(jacobians[0], np.moveaxis(basis, 0, -1), atol=1e-14)
    second = 0.5 * (basis[:, None] @ basis[None, :] + basis[None, :] @ basis[:, None])
    np.testing.assert_allclose(hessians[0], np.moveaxis(second, (0, 1), (-2, -1)), atol=1e-12)
    np.testing.assert_allclose(hessians[1], hessians[0], atol=1e-8)
    assert np.all(np.isfinite(hessians))
    # d log(exp(v)) / dv = identity, at 0 and elsewhere
    np.testing.assert_allclose(round_trips, np.broadcast_to(np.eye(3), (4, 3, 3)), atol=1e-10)
    # log as a function of a 3x3 matrix: at a generic rotation against finite differences, and at
    # the identity, where d log(I + E) = vee(E)
    jac_log = jax.jit(jax.vmap(jax.jacrev(jso3.log)))
    R = np.stack([np.eye(3), np.asarray(exp(np.array([0.4, 0.1, -1.2])))])
    jac = np.asarray(jac_log(R))
    np.testing.assert_allclose(jac[1], _fd_jacobian(log, R[1]), atol=1e-8)
    expected = np.zeros((3, 3, 3))
    for k, (i, j) in enumerate([(2, 1), (0, 2), (1, 0)]):
        expected[k, i, j], expected[k, j, i] = 0.5, -0.5
    np.testing.assert_allclose(jac[0], expected, atol=1e-12)
    g = jax.jit(jax.grad(jso3.rotation_angle))(jnp.eye(3))
    assert np.all(np.isfinite(g))


def test_haar_samples_have_the_haar_angle_law():
    R = sample_uniform(jax.random.key(2), (4000,))
    assert R.shape == (4000, 3, 3)
    assert R.dtype == jnp.float32
    angle = np.asarray(rotation_angle(R), dtype=np.float64)
    p = scipy.stats.kstest(angle, lambda w: (w - np.sin(w)) / np.pi).pvalue
    assert p > 0.01, p
    # the image of a fixed vector is uniform on the sphere: each coordinate is uniform on [-1, 1]
    z = np.asarray(R[:, :, 2], dtype=np.float64)
    for i in range(3):
        assert scipy.stats.kstest(z[:, i], scipy.stats.uniform(-1, 2).cdf).pvalue > 0.01


def test_float32_round_trips():
    v = jnp.asarray(_random_vectors(6, 100, max_angle=3.1), dtype=jnp.float32)
    R = exp(v)
    assert R.dtype == jnp.float32
    np.testing.assert_allclose(log(R), v, atol=2e-5)
    np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=2e-6)
    eye = jnp.broadcast_to(jnp.eye(3), R.shape)
    np.testing.assert_allclose(jnp.swapaxes(R, -1, -2) @ R, eye, atol=2e-6)


@pytest.mark.slow
def test_jit_and_vmap():
    v = jnp.asarray(_random_vectors(7, 8), dtype=jnp.float32)
    np.testing.assert_allclose(jax.jit(jso3.exp)(v), jax.vmap(jso3.exp)(v), atol=1e-6)
    R = exp(v)
    np.testing.assert_allclose(jax.jit(jso3.log)(R), jax.vmap(jso3.log)(R), atol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        jso3.log(jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        jso3.rotation_angle(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        jso3.exp(jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        jso3.quaternion_to_matrix(jnp.zeros(3))
    with pytest.raises(ValueError, match="same shape"):
        jso3.geodesic_distance(jnp.eye(3), jnp.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="angle"):
        jso3.axis_angle_to_matrix(jnp.zeros((2, 3)), jnp.zeros(3))


def _batch_with(bad):
    good = np.asarray(jso3.sample_uniform(jax.random.key(20), (3,)), dtype=np.float64)
    return np.stack([good[0], bad, good[2]])


_NON_ROTATIONS = {
    "non-finite": np.full((3, 3), np.nan),
    "not orthogonal": 2.0 * np.eye(3),
    "determinant": np.diag([1.0, 1.0, -1.0]),  # orthogonal, a reflection
}


@pytest.mark.x64
@pytest.mark.parametrize(
    "fn",
    [
        jso3.log,
        jso3.rotation_angle,
        jso3.matrix_to_quaternion,
        lambda R: jso3.matrix_to_axis_angle(R)[1],
        lambda R: jso3.geodesic_distance(R, jnp.broadcast_to(jnp.eye(3), R.shape)),
        lambda R: jso3.geodesic_distance(jnp.broadcast_to(jnp.eye(3), R.shape), R),
    ],
    ids=["log", "rotation_angle", "matrix_to_quaternion", "matrix_to_axis_angle", "R1", "R2"],
)
def test_non_rotations_raise_eagerly_and_give_nan_under_jit(fn):
    for reason, bad in _NON_ROTATIONS.items():
        with pytest.raises(ValueError, match=reason):
            fn(_batch_with(bad))
    # under jit: NaN in value and gradient for exactly the bad matrices (one compilation each)
    R = np.stack([_batch_with(bad) for bad in _NON_ROTATIONS.values()])  # (3, 3, 3, 3)
    out, grad = jax.jit(
        jax.vmap(lambda R: (fn(R), jax.grad(lambda R: jnp.sum(fn(R)))(R)))
    )(R)  # fmt: skip
    out, grad = np.asarray(out), np.asarray(grad)
    assert np.all(np.isfinite(out[:, [0, 2]]))
    assert np.all(np.isnan(out[:, 1]))
    assert np.all(np.isfinite(grad[:, [0, 2]]))
    assert np.all(np.isnan(grad[:, 1]))


@pytest.mark.x64
def test_log_of_twice_the_identity_is_refused():
    # used to return the zero vector (the identity's logarithm)
    with pytest.raises(ValueError, match="not orthogonal"):
        jso3.log(2.0 * np.eye(3))
    assert np.all(np.isnan(log(2.0 * jnp.eye(3))))


def test_rotation_tolerance_depends_on_the_dtype():
    R32 = np.asarray(jso3.sample_uniform(jax.random.key(21), (50,)), dtype=np.float32)
    # float32 rotations pass as float32 and, rounded as they are, cast to float64
    assert np.all(np.isfinite(np.asarray(jso3.log(R32))))
    with jax.enable_x64(True):
        assert np.all(np.isfinite(np.asarray(jso3.log(R32.astype(np.float64)))))
        # an error of 1e-3 is refused in both precisions, 3e-5 only in float64
        for size in (1e-3, 3e-5):
            with pytest.raises(ValueError, match="not orthogonal"):
                jso3.log(R32.astype(np.float64) + size * np.eye(3))
    assert np.all(
        np.isfinite(np.asarray(jso3.log(R32 + np.float32(3e-5) * np.eye(3, dtype=np.float32))))
    )
    with pytest.raises(ValueError, match="not orthogonal"):
        jso3.log(R32 + np.float32(1e-3) * np.eye(3, dtype=np.float32))


@pytest.mark.x64
def test_check_grads_of_the_maps():
    # float64 finite differences against forward and reverse mode (second order for exp)
    rng = np.random.default_rng(22)
    R0 = np.asarray(exp(np.array([0.4, -1.1, 0.7])))
    R1 = np.asarray(exp(np.array([-0.9, 0.2, 0.5])))
    log_at_R0 = jax.jit(lambda w: jso3.log(jso3.exp(w) @ R0))  # perturbations stay rotations
    for v in [np.zeros(3), rng.normal(size=3)]:  # at the identity (the Taylor branch) and away
        check_grads(exp, (v,), order=2, modes=("rev",))
        check_grads(log_at_R0, (0.3 * v,), order=1, modes=("fwd", "rev"))
    check_grads(hat, (rng.normal(size=(4, 3)),), order=1, modes=("fwd", "rev"))
    check_grads(vee, (rng.normal(size=(4, 3, 3)),), order=1, modes=("fwd", "rev"))
    # geodesic distance away from 0 and pi, where it is smooth
    check_grads(
        jax.jit(lambda a, b: jso3.geodesic_distance(jso3.exp(a) @ R0, jso3.exp(b) @ R1)),
        (rng.normal(size=3) * 0.2, rng.normal(size=3) * 0.2),
        order=1,
        modes=("fwd", "rev"),
    )
