"""Linear forward operators `A`, each given as a pair of functions `forward(x) = A x` and
`adjoint(y) = A^T y`.

Any pair of functions works with jscore (that is the contract: lensing operators live in jlens); the
classes here cover the cases used by tests and baselines. Their bound methods `op.forward` and
`op.adjoint` are the functions to pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._checks import check_field_shape, concrete
from ._fourier import irfftn, is_hermitian_symmetric, rfft_shape, rfftn


@dataclasses.dataclass(frozen=True)
class IdentityOperator:
    """`A = I` on fields of the given shape (denoising).

    **Arguments:**

    - `shape`: shape of one field (static).
    """

    shape: tuple[int, ...] = dataclasses.field(metadata={"static": True})

    def forward(self, x: Array) -> Array:
        return x

    def adjoint(self, y: Array) -> Array:
        return y


@dataclasses.dataclass(frozen=True)
class MaskOperator:
    """`A = diag(mask)`: keeps the observed pixels and zeroes the others (shape-preserving).

    `A A^T = diag(mask)` is not the identity, but the data are identically zero where `mask = 0`, so
    the annealed likelihood `N(y; A x, Sigma + sigma^2 I)` has the same `x`-dependence as the exact
    `N(y; A x, Sigma + sigma^2 A A^T)` for diagonal noise (see `jscore.annealed_log_likelihood`),
    whatever variance `Sigma` gives the masked pixels.

    **Arguments:**

    - `mask`: 1 (or True) on observed pixels, 0 (False) on masked ones; exactly the shape of one
      field (no broadcasting: a `(32, 1)` mask on `(32, 32)` fields raises `ValueError`).
    """

    mask: Array

    def __post_init__(self):
        value = concrete(self.mask)
        if value is not None and not np.all((value == 0) | (value == 1)):
            raise ValueError("MaskOperator.mask must contain only 0/1 (or booleans)")

    def forward(self, x: Array) -> Array:
        check_field_shape("x", x, jnp.shape(self.mask), "MaskOperator (the shape of its mask)")
        return x * jnp.asarray(self.mask, dtype=x.dtype)

    def adjoint(self, y: Array) -> Array:
        check_field_shape("y", y, jnp.shape(self.mask), "MaskOperator (the shape of its mask)")
        return y * jnp.asarray(self.mask, dtype=y.dtype)


@dataclasses.dataclass(frozen=True)
class FourierOperator:
    """A Fourier-diagonal map from one field to a stack of `m` fields on the same periodic grid,
    `(A x)_i = F^-1 diag(multipliers_i) F x`, with its adjoint `A^T y = sum_i F^-1 diag(multipliers_i) F y_i`.

    `F` is the unitary real FFT over every axis. The multipliers are real and symmetric
    (`m(-k) = m(k)`), so every block is a real, self-adjoint convolution.

    **Arguments:**

    - `multipliers`: shape `(m, *rfft_shape(shape))`, real, finite and symmetric on the self-conjugate
      modes.
    - `shape`: shape of one input field (static); the output has shape `(m, *shape)`.
    """

    multipliers: Array
    shape: tuple[int, ...] = dataclasses.field(metadata={"static": True})

    def __post_init__(self):
        if (
            not isinstance(self.shape, tuple)
            or not self.shape
            or not all(isinstance(n, int) and n > 0 for n in self.shape)
        ):
            raise ValueError(
                f"FourierOperator.shape must be a non-empty tuple of positive ints, got {self.shape!r}"
            )
        value = concrete(self.multipliers)
        if value is None:
            return
        grid = rfft_shape(self.shape)
        if value.ndim != len(grid) + 1 or value.shape[1:] != grid:
            raise ValueError(
                f"FourierOperator.multipliers must have shape (m, *{grid}) for fields of shape "
                f"{self.shape}, got {value.shape}"
            )
        if not np.all(np.isfinite(value)) or np.iscomplexobj(value):
            raise ValueError("FourierOperator.multipliers must be real and finite")
        for i, m in enumerate(value):
            if not is_hermitian_symmetric(m, self.shape):
                raise ValueError(
                    f"FourierOperator.multipliers[{i}] must be symmetric, m(-k) = m(k), on the "
                    "self-conjugate modes"
                )

    def forward(self, x: Array) -> Array:
        check_field_shape("x", x, self.shape, "FourierOperator")
        x_hat = rfftn(x)
        mult = jnp.asarray(self.multipliers, dtype=x.dtype)
        return jax.vmap(lambda m: irfftn(x_hat * m, self.shape))(mult)

    def adjoint(self, y: Array) -> Array:
        expected = (jnp.shape(self.multipliers)[0], *self.shape)
        if tuple(jnp.shape(y)) != expected:
            raise ValueError(
                f"FourierOperator.adjoint expects data of shape (m, *shape) = {expected}, got "
                f"{tuple(jnp.shape(y))}"
            )
        mult = jnp.asarray(self.multipliers, dtype=y.dtype)
        y_hat = jax.vmap(rfftn)(y)
        return irfftn(jnp.sum(y_hat * mult, axis=0), self.shape)


def shear_multipliers(shape: tuple[int, int]) -> np.ndarray:
    """The flat-sky Kaiser-Squires multipliers `D_1 = (k_x^2 - k_y^2) / k^2`, `D_2 = 2 k_x k_y / k^2` on
    the half-complex grid of a 2-D map of the given shape (`y` along axis 0, `x` along axis 1), zero at
    `k = 0`; `D_2` is also zero on the Nyquist column (`k_x = 1/2`) of an even `nx`, a self-conjugate
    column of the half-complex grid on which `D_2` is odd under `k -> -k` (a real field cannot carry it).

    **Returns:**

    A float64 array of shape `(2, *rfft_shape(shape))`.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be a pair of positive ints (ny, nx), got {shape!r}")
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    k2 = kx**2 + ky**2
    safe = np.where(k2 > 0, k2, 1.0)
    d1 = np.where(k2 > 0, (kx**2 - ky**2) / safe, 0.0)
    d2 = np.where(k2 > 0, 2.0 * kx * ky / safe, 0.0)
    if shape[1] % 2 == 0:
        d2[:, -1] = 0.0
    return np.stack([d1, d2])


@dataclasses.dataclass(frozen=True)
class ShearOperator:
    """Weak-lensing shear from convergence on a periodic flat-sky map, `kappa -> (gamma_1, gamma_2)`:
    `gamma_hat = (D_1, D_2) kappa_hat` with `D_1 = (k_x^2 - k_y^2) / k^2`, `D_2 = 2 k_x k_y / k^2`
    (Kaiser & Squires 1993; `y` along axis 0, `x` along axis 1; see `jscore.shear_multipliers`).

    A generic `FourierOperator`, named for convenience (no lensing physics beyond this map). Since
    `D_1^2 + D_2^2 = 1` for `k != 0`, `A^T A` is the identity except on the mean and on the
    Nyquist column's `D_2` part: the adjoint is the Kaiser-Squires inversion, `kappa_KS = A^T gamma` (E mode; set
    masked shear to zero first, as the classical method does).

    `A A^T` is **not** the identity: it is the orthogonal projector onto E-mode shear fields (rank
    about half of the `2 ny nx` data dimensions; `|A A^T g - g| / |g| ~ 0.71` for white-noise `g`,
    whose B-mode half it removes). The annealed likelihood `N(y; A x, Sigma + sigma^2 I)` therefore
    has the exact `x`-dependence only when `Sigma` does not couple E and B modes (white or other
    isotropic stationary noise on the full periodic map); with a mask or non-stationary noise it is
    the approximation described in `jscore.annealed_log_likelihood`, exact only as `sigma -> 0`.

    **Arguments:**

    - `shape`: `(ny, nx)` of the convergence map (static); the shear has shape `(2, ny, nx)`, the
      component axis first (FITS files often store `(ny, nx, 2)`: move the axis with
      `jnp.moveaxis(gamma, -1, 0)`; the other layout raises `ValueError`).
    """

    shape: tuple[int, int] = dataclasses.field(metadata={"static": True})

    def __post_init__(self):
        if (
            not isinstance(self.shape, tuple)
            or len(self.shape) != 2
            or not all(isinstance(n, int) and n > 0 for n in self.shape)
        ):
            raise ValueError(
                f"ShearOperator.shape must be a pair of positive ints (ny, nx), got {self.shape!r}"
            )

    def _operator(self) -> FourierOperator:
        return FourierOperator(shear_multipliers(self.shape), self.shape)

    def forward(self, kappa: Array) -> Array:
        check_field_shape("kappa", kappa, self.shape, "ShearOperator")
        return self._operator().forward(kappa)

    def adjoint(self, gamma: Array) -> Array:
        got = tuple(jnp.shape(gamma))
        if got != (2, *self.shape):
            hint = (
                "; this looks like the FITS layout (ny, nx, 2): use jnp.moveaxis(gamma, -1, 0)"
                if got == (*self.shape, 2)
                else ""
            )
            raise ValueError(
                f"ShearOperator{self.shape} expects shear in the layout (2, ny, nx) = "
                f"{(2, *self.shape)}, got shape {got}{hint}"
            )
        return self._operator().adjoint(gamma)


jax.tree_util.register_dataclass(IdentityOperator)
jax.tree_util.register_dataclass(MaskOperator)
jax.tree_util.register_dataclass(FourierOperator)
jax.tree_util.register_dataclass(ShearOperator)


def adjoint_mismatch(
    key: Array,
    forward_op: Callable[[Array], Array],
    adjoint_op: Callable[[Array], Array],
    x: Array,
) -> Array:
    """Dot-product test of an operator pair: `|<A u, v> - <u, A^T v>| / (|A u| |v|)` for random
    `u` (shaped like `x`) and `v = A u + w` with random `w`; round-off level when `adjoint_op` is the
    adjoint, of order one when it is not.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `forward_op`, `adjoint_op`: the pair to test.
    - `x`: an example field (only its shape and dtype are used).

    **Returns:**

    The relative mismatch, a scalar.
    """
    y_struct = jax.eval_shape(forward_op, x)
    k1, k2 = jax.random.split(key)
    u = jax.random.normal(k1, jnp.shape(x), jnp.result_type(x))
    au = forward_op(u)
    # v correlated with A u, so that <A u, v> is of order |A u| |v| rather than a random sum.
    v = au + jax.random.normal(k2, y_struct.shape, y_struct.dtype)
    lhs = jnp.vdot(au, v)
    rhs = jnp.vdot(u, adjoint_op(v))
    return jnp.abs(lhs - rhs) / (jnp.linalg.norm(au) * jnp.linalg.norm(v))
