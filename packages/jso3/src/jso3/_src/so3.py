"""The SO(3) toolkit: hat/vee, exponential and logarithm, axis-angle, quaternions, Haar sampling,
rotation angle and geodesic distance.

Conventions (stated once, used everywhere in the package):

* rotations are 3x3 matrices acting on column vectors, batched as `(..., 3, 3)`;
* a tangent vector `v` (shape `(..., 3)`) at `R` is in the *world* (spatial, left) frame: it moves `R`
  to `exp(hat(v)) @ R`. The body (right) frame vector of the same displacement is `R.T @ v`, since
  `R @ exp(hat(R.T @ v)) = exp(hat(v)) @ R`;
* the metric is the bi-invariant one in which `|v|` is the rotation angle of `exp(hat(v))`, so the
  geodesic distance between `R1` and `R2` is the rotation angle of `R1.T @ R2`, in `[0, pi]`;
* quaternions are Hamilton, scalar first `(w, x, y, z)`; `q` and `-q` are the same rotation and the
  conversions return the representative with `w >= 0`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_matrix, check_rotation, check_vector, poison

# Below this value of theta^2 the coefficient functions use their Taylor series (exact to float64 there)
# so that they, and their derivatives of every order, are smooth at the identity.
_TAYLOR_T = 1e-2


def _exp_coefficients(t):
    """`(sin(theta)/theta, (1 - cos(theta))/theta^2)` as smooth functions of `t = theta^2`."""
    small = t < _TAYLOR_T
    t_safe = jnp.where(small, 1.0, t)
    theta = jnp.sqrt(t_safe)
    a_exact = jnp.sin(theta) / theta
    b_exact = 2.0 * (jnp.sin(0.5 * theta) / theta) ** 2
    a_taylor = 1.0 - t / 6.0 * (1.0 - t / 20.0 * (1.0 - t / 42.0 * (1.0 - t / 72.0)))
    b_taylor = 0.5 - t / 24.0 * (1.0 - t / 30.0 * (1.0 - t / 56.0 * (1.0 - t / 90.0)))
    return jnp.where(small, a_taylor, a_exact), jnp.where(small, b_taylor, b_exact)


def _safe_norm(v, axis=-1):
    """Euclidean norm with gradient 0 (not NaN) at the origin."""
    sq = jnp.sum(v * v, axis=axis)
    nonzero = sq > 0
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def hat(v):
    """The skew-symmetric matrix of a vector: `hat(v) @ u == cross(v, u)`.

    **Arguments:**

    - `v`: array of shape `(..., 3)`.

    **Returns:**

    Array of shape `(..., 3, 3)`.
    """
    check_vector("v", v, 3)
    v = jnp.asarray(v)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = jnp.zeros_like(x)
    return jnp.stack(
        [
            jnp.stack([zero, -z, y], axis=-1),
            jnp.stack([z, zero, -x], axis=-1),
            jnp.stack([-y, x, zero], axis=-1),
        ],
        axis=-2,
    )


def vee(m):
    """The vector of the skew-symmetric part of a matrix: the inverse of `hat` on so(3).

    For a general matrix this returns `vee((m - m.T) / 2)`, the projection onto so(3).

    **Arguments:**

    - `m`: array of shape `(..., 3, 3)`.

    **Returns:**

    Array of shape `(..., 3)`.
    """
    check_matrix("m", m)
    m = jnp.asarray(m)
    return 0.5 * jnp.stack(
        [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]],
        axis=-1,
    )


def exp(v):
    """Exponential map so(3) -> SO(3) (Rodrigues' formula): `expm(hat(v))`.

    Smooth everywhere, including at `v = 0`, where all its derivatives are those of the series.

    **Arguments:**

    - `v`: rotation vectors (axis times angle), shape `(..., 3)`.

    **Returns:**

    Rotation matrices of shape `(..., 3, 3)`.
    """
    check_vector("v", v, 3)
    v = jnp.asarray(v)
    if not jnp.issubdtype(v.dtype, jnp.floating):
        v = v.astype(jnp.result_type(float))
    return _exp(v)


@jax.jit
def _exp(v):
    t = jnp.sum(v * v, axis=-1)
    a, b = _exp_coefficients(t)
    eye = jnp.broadcast_to(jnp.eye(3, dtype=v.dtype), (*v.shape[:-1], 3, 3))
    outer = v[..., :, None] * v[..., None, :]
    return (
        (1.0 - b * t)[..., None, None] * eye
        + a[..., None, None] * hat(v)
        + b[..., None, None] * outer
    )


def matrix_to_quaternion(R):
    """Unit quaternion `(w, x, y, z)` of a rotation matrix, with `w >= 0`.

    Uses Shepperd's method (pivot on the largest of `w^2, x^2, y^2, z^2`), accurate for every angle.

    **Arguments:**

    - `R`: rotation matrices, shape `(..., 3, 3)`.

    **Returns:**

    Quaternions of shape `(..., 4)`, scalar first, unit norm, `w >= 0`.

    **Raises:**

    `ValueError` if `R` is not a batch of rotations (see `log`); traced non-rotations give NaN.
    """
    R, valid = check_rotation("R", R)
    return poison(_matrix_to_quaternion(R), valid)


@jax.jit
def _matrix_to_quaternion(R):
    r00, r01, r02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    r10, r11, r12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    r20, r21, r22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4 q_i^2 for each component; they sum to 4, so the largest is >= 1.
    four_sq = jnp.stack(
        [1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22],
        axis=-1,
    )
    # Clipping only affects candidates that are not selected (their pivot is < 1), keeping them finite.
    pivot = 0.5 * jnp.sqrt(jnp.maximum(four_sq, 0.25))
    d = 4.0 * pivot
    cand_w = jnp.stack([pivot[..., 0], (r21 - r12) / d[..., 0], (r02 - r20) / d[..., 0],
                        (r10 - r01) / d[..., 0]], axis=-1)  # fmt: skip
    cand_x = jnp.stack([(r21 - r12) / d[..., 1], pivot[..., 1], (r01 + r10) / d[..., 1],
                        (r02 + r20) / d[..., 1]], axis=-1)  # fmt: skip
    cand_y = jnp.stack([(r02 - r20) / d[..., 2], (r01 + r10) / d[..., 2], pivot[..., 2],
                        (r12 + r21) / d[..., 2]], axis=-1)  # fmt: skip
    cand_z = jnp.stack([(r10 - r01) / d[..., 3], (r02 + r20) / d[..., 3], (r12 + r21) / d[..., 3],
                        pivot[..., 3]], axis=-1)  # fmt: skip
    which = jnp.argmax(four_sq, axis=-1)[..., None]
    q = jnp.where(
        which == 0, cand_w, jnp.where(which == 1, cand_x, jnp.where(which == 2, cand_y, cand_z))
    )
    q = jnp.where(q[..., :1] < 0, -q, q)
    return q / jnp.linalg.norm(q, axis=-1, keepdims=True)


def quaternion_to_matrix(q):
    """Rotation matrix of a quaternion `(w, x, y, z)`; `q` is normalised first.

    **Arguments:**

    - `q`: quaternions, shape `(..., 4)`, scalar first, nonzero.

    **Returns:**

    Rotation matrices of shape `(..., 3, 3)`.
    """
    check_vector("q", q, 4)
    return _quaternion_to_matrix(jnp.asarray(q))


@jax.jit
def _quaternion_to_matrix(q):
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return jnp.stack([jnp.stack(row, axis=-1) for row in rows], axis=-2)


@jax.jit
def _quaternion_log(q):
    """Rotation vector of a unit quaternion with `w >= 0`."""
    w, u = q[..., 0], q[..., 1:]
    s2 = jnp.sum(u * u, axis=-1)
    z2 = s2 / jnp.maximum(w * w, 1e-30)
    small = z2 < _TAYLOR_T
    # 2 atan(z) / (z w) with z = s / w, as a series in z^2 near the identity.
    atan_ratio = 1.0 - z2 * (1 / 3 - z2 * (1 / 5 - z2 * (1 / 7 - z2 * (1 / 9))))
    phi_taylor = 2.0 * atan_ratio / jnp.where(small, w, 1.0)
    s_safe = jnp.sqrt(jnp.where(small, 1.0, s2))
    phi_exact = 2.0 * jnp.arctan2(s_safe, w) / s_safe
    phi = jnp.where(small, phi_taylor, phi_exact)
    return phi[..., None] * u


def log(R):
    """Logarithm map SO(3) -> so(3): the rotation vector `v` with `exp(v) == R` and `|v| <= pi`.

    Computed through the quaternion, so it is accurate at every angle, including near `pi` (where the
    axis sign is chosen arbitrarily at exactly `pi`). Smooth at the identity, where its derivative is
    `vee` of the perturbation.

    **Arguments:**

    - `R`: rotation matrices, shape `(..., 3, 3)`.

    **Returns:**

    Rotation vectors of shape `(..., 3)`.

    **Raises:**

    `ValueError` if `R` is concrete and not a batch of rotations: shape other than `(..., 3, 3)`, a
    non-finite entry, `max |R^T R - I|` above `max(1e-5, 1000 eps)` of its dtype, or determinant -1.
    Under a trace (`jit`, `vmap`, `grad`) it cannot raise: the result (value and gradient) is NaN
    for every matrix that is not a rotation.
    """
    R, valid = check_rotation("R", R)
    return poison(_quaternion_log(_matrix_to_quaternion(R)), valid)


def axis_angle_to_matrix(axis, angle):
    """Rotation by `angle` (radians, right-handed) about the unit vector `axis`.

    **Arguments:**

    - `axis`: unit vectors of shape `(..., 3)`.
    - `angle`: angles of shape `(...)` (the same batch shape as `axis`).

    **Returns:**

    Rotation matrices of shape `(..., 3, 3)`.
    """
    check_vector("axis", axis, 3)
    axis, angle = jnp.asarray(axis), jnp.asarray(angle)
    if angle.shape != axis.shape[:-1]:
        raise ValueError(
            f"`angle` must have shape {axis.shape[:-1]} (the batch shape of `axis`), "
            f"got {angle.shape}."
        )
    return exp(axis * angle[..., None])


def matrix_to_axis_angle(R):
    """Unit axis and angle in `[0, pi]` of a rotation (axis `(0, 0, 1)` for the identity).

    **Arguments:**

    - `R`: rotation matrices, shape `(..., 3, 3)`.

    **Returns:**

    `(axis, angle)` of shapes `(..., 3)` and `(...)`.

    **Raises:**

    `ValueError` if `R` is not a batch of rotations (see `log`); traced non-rotations give NaN.
    """
    R, valid = check_rotation("R", R)
    v = _quaternion_log(_matrix_to_quaternion(R))
    angle = _safe_norm(v)
    default = jnp.zeros_like(v).at[..., 2].set(1.0)
    nonzero = (angle > 0)[..., None]
    axis = jnp.where(nonzero, v / jnp.where(nonzero, angle[..., None], 1.0), default)
    return poison(axis, valid), poison(angle, valid)


def rotation_angle(R):
    """Rotation angle in `[0, pi]`: `atan2(|vee(R)|, (tr(R) - 1) / 2)`, accurate at every angle.

    Its gradient at the identity (where the angle is not differentiable) is defined as 0.

    **Arguments:**

    - `R`: rotation matrices, shape `(..., 3, 3)`.

    **Returns:**

    Angles of shape `(...)`.

    **Raises:**

    `ValueError` if `R` is not a batch of rotations (see `log`); traced non-rotations give NaN.
    """
    R, valid = check_rotation("R", R)
    return poison(_rotation_angle(R), valid)


@jax.jit
def _rotation_angle(R):
    sin_angle = _safe_norm(vee(R))
    cos_angle = 0.5 * (jnp.trace(R, axis1=-2, axis2=-1) - 1.0)
    return jnp.arctan2(sin_angle, cos_angle)


def geodesic_distance(R1, R2):
    """Geodesic distance on SO(3): the rotation angle of `R1.T @ R2`, in `[0, pi]`.

    **Arguments:**

    - `R1`, `R2`: rotation matrices of the same shape `(..., 3, 3)`.

    **Returns:**

    Distances of shape `(...)`.

    **Raises:**

    `ValueError` if `R1` or `R2` is not a batch of rotations (see `log`) or their shapes differ;
    traced non-rotations give NaN.
    """
    check_matrix("R1", R1)
    check_matrix("R2", R2)
    if np.shape(R1) != np.shape(R2):
        raise ValueError(
            f"`R1` and `R2` must have the same shape, got {np.shape(R1)} and {np.shape(R2)}."
        )
    R1, valid1 = check_rotation("R1", R1)
    R2, valid2 = check_rotation("R2", R2)
    return poison(_rotation_angle(jnp.swapaxes(R1, -1, -2) @ R2), valid1, valid2)


def sample_uniform(key, shape=(), dtype=None):
    """Haar-uniform random rotations (normalised Gaussian quaternions).

    **Arguments:**

    - `key`: a `jax.random` key.
    - `shape`: batch shape of the sample (a tuple of ints).
    - `dtype`: floating dtype; JAX's default float if `None`.

    **Returns:**

    Rotation matrices of shape `(*shape, 3, 3)`.
    """
    shape = tuple(shape)
    dtype = jnp.result_type(float) if dtype is None else dtype
    q = jax.random.normal(key, (*shape, 4), dtype=dtype)
    return quaternion_to_matrix(q)
