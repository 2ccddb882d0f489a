"""Bijective layers of a flow, as `flax.nnx` modules acting on one sample.

Every layer maps the data side to the base side with `forward(x, context) -> (y, log_det)` (the
closed-form direction, used for densities) and back with `inverse(y, context) -> (x, log_det)`,
where `log_det` is the log absolute Jacobian determinant of the map that was applied. `x` has shape
`(dim,)` and `context` shape `(context_dim,)` (or `None`); batches are handled by `jax.vmap` in
[`ConditionalFlow`][jflows.ConditionalFlow].
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jflows._src.transforms import MonotoneMixture

__all__ = ["BoxScaling", "Coupling", "LogisticScaling", "Permutation", "standardisation"]


def _float_dtype(dtype):
    return jnp.dtype(jnp.result_type(float)) if dtype is None else jnp.dtype(dtype)


class _MLP(nnx.Module):
    """Smooth MLP (C-infinity activation) whose last layer starts small: the flow starts near a fixed map."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int],
        activation: Callable,
        init_scale: float,
        param_dtype,
        rngs: nnx.Rngs,
    ):
        self.activation = activation
        sizes = [in_features, *hidden]
        self.hidden = nnx.List(
            [
                nnx.Linear(m, n, param_dtype=param_dtype, rngs=rngs)
                for m, n in itertools.pairwise(sizes)
            ]
        )
        self.out = nnx.Linear(
            sizes[-1],
            out_features,
            kernel_init=nnx.initializers.variance_scaling(init_scale**2, "fan_in", "normal"),
            bias_init=nnx.initializers.normal(init_scale),
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, h):
        for layer in self.hidden:
            h = self.activation(layer(h))
        return self.out(h)


class Coupling(nnx.Module):
    """Coupling layer: the last `dim - dim // 2` coordinates go through an elementwise smooth map
    whose parameters an MLP computes from the first `dim // 2` coordinates and the context.

    When there is nothing to condition on (`dim == 1` and no context) the parameters are free.

    **Arguments:**

    - `dim`: number of coordinates.
    - `context_dim`: size of the context vector (0 for an unconditional layer).
    - `transform`: the elementwise family, e.g. [`SigmoidMixture`][jflows.SigmoidMixture]().
    - `hidden`: widths of the conditioner's hidden layers.
    - `activation`: the conditioner's activation; keep it smooth (the default is `jax.nn.silu`) when
      the flow will be trained on scores, which differentiate through it.
    - `init_scale`: standard deviation scale of the conditioner's last layer at initialisation.
    - `param_dtype`: dtype of the parameters (`None`: float64 under `jax_enable_x64`, else float32).
    - `rngs`: `flax.nnx.Rngs` for the initialisation.
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        transform: MonotoneMixture,
        *,
        hidden: Sequence[int] = (64, 64),
        activation: Callable = jax.nn.silu,
        init_scale: float = 0.1,
        param_dtype=None,
        rngs: nnx.Rngs,
    ):
        self.dim = dim
        self.context_dim = context_dim
        self.transform = transform
        self.n_cond = dim // 2
        self.n_out = dim - self.n_cond
        n_in = self.n_cond + context_dim
        n_params = self.n_out * transform.num_params
        param_dtype = _float_dtype(param_dtype)
        if n_in == 0:
            self.conditioner = None
            self.free = nnx.Param(
                init_scale * jax.random.normal(rngs.params(), (n_params,), param_dtype)
            )
        else:
            self.conditioner = _MLP(
                n_in, n_params, tuple(hidden), activation, init_scale, param_dtype, rngs
            )
            self.free = None

    def _raw(self, x_cond, context):
        if self.conditioner is None:
            raw = self.free[...]
        else:
            parts = [x_cond] + ([] if context is None else [context])
            raw = self.conditioner(jnp.concatenate(parts, axis=-1))
        return raw.reshape(self.n_out, self.transform.num_params)

    def forward(self, x, context=None):
        x_cond, x_tr = x[: self.n_cond], x[self.n_cond :]
        y_tr, log_det = self.transform.forward_and_log_det(x_tr, self._raw(x_cond, context))
        return jnp.concatenate([x_cond, y_tr.astype(x.dtype)]), jnp.sum(log_det)

    def inverse(self, y, context=None):
        y_cond, y_tr = y[: self.n_cond], y[self.n_cond :]
        x_tr, log_det = self.transform.inverse_and_log_det(y_tr, self._raw(y_cond, context))
        return jnp.concatenate([y_cond, x_tr.astype(y.dtype)]), jnp.sum(log_det)


class Permutation(nnx.Module):
    """Fixed permutation of the coordinates (`forward` returns `x[permutation]`); log-det 0.

    **Arguments:**

    - `permutation`: a permutation of `range(dim)` (kept as a static tuple).
    """

    def __init__(self, permutation: Sequence[int]):
        perm = tuple(int(i) for i in permutation)
        if sorted(perm) != list(range(len(perm))):
            raise ValueError(f"not a permutation of range({len(perm)}): {perm}")
        self.permutation = perm
        self.inverse_permutation = tuple(int(i) for i in np.argsort(perm))

    def forward(self, x, context=None):
        return x[np.asarray(self.permutation)], jnp.zeros((), x.dtype)

    def inverse(self, y, context=None):
        return y[np.asarray(self.inverse_permutation)], jnp.zeros((), y.dtype)


def _vector(name, value, dim, dtype):
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        array = np.full((dim,), float(array))
    if array.shape != (dim,):
        raise ValueError(f"{name} must be a scalar or have shape ({dim},), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array}")
    return jnp.asarray(array, dtype=dtype)


class BoxScaling(nnx.Module):
    """Affine map of the box `[low, high]^dim` onto the unit box: `u = (x - low) / (high - low)`.

    Points outside the box have no preimage in the base; the flow gives them log-density `-inf`.
    The bounds are `nnx.Variable`s (not `nnx.Param`s): an optimiser filtering on `nnx.Param` leaves
    them alone.

    **Arguments:**

    - `low`, `high`: finite bounds, scalars or shape `(dim,)`, with `low < high`.
    - `dim`: number of coordinates.
    - `dtype`: dtype of the stored bounds (`None`: the default float dtype).
    """

    def __init__(self, low, high, dim: int, dtype=None):
        dtype = _float_dtype(dtype)
        low_, high_ = _vector("low", low, dim, dtype), _vector("high", high, dim, dtype)
        if not np.all(np.asarray(low_) < np.asarray(high_)):
            raise ValueError(f"need low < high elementwise, got low={low!r}, high={high!r}")
        self.low = nnx.Variable(low_)
        self.high = nnx.Variable(high_)

    def forward(self, x, context=None):
        width = self.high[...] - self.low[...]
        return (x - self.low[...]) / width, -jnp.sum(jnp.log(width))

    def inverse(self, y, context=None):
        width = self.high[...] - self.low[...]
        return self.low[...] + y * width, jnp.sum(jnp.log(width))

    def contains(self, x):
        return jnp.all((x >= self.low[...]) & (x <= self.high[...]))


class LogisticScaling(nnx.Module):
    """Map of the real line onto the unit interval: `u = sigmoid((x - loc) / scale)`.

    With `loc`, `scale` the data mean and standard deviation this standardises an unbounded
    parameter; the base (uniform) then pulls back to a logistic distribution.

    **Arguments:**

    - `loc`: finite, scalar or shape `(dim,)`.
    - `scale`: finite and positive, scalar or shape `(dim,)`.
    - `dim`: number of coordinates.
    - `dtype`: dtype of the stored values (`None`: the default float dtype).
    """

    def __init__(self, loc, scale, dim: int, dtype=None):
        dtype = _float_dtype(dtype)
        loc_, scale_ = _vector("loc", loc, dim, dtype), _vector("scale", scale, dim, dtype)
        if not np.all(np.asarray(scale_) > 0):
            raise ValueError(f"scale must be positive, got {scale!r}")
        self.loc = nnx.Variable(loc_)
        self.scale = nnx.Variable(scale_)

    def forward(self, x, context=None):
        z = (x - self.loc[...]) / self.scale[...]
        log_det = -jax.nn.softplus(-z) - jax.nn.softplus(z) - jnp.log(self.scale[...])
        return jax.nn.sigmoid(z), jnp.sum(log_det)

    def inverse(self, y, context=None):
        y = jnp.clip(y, 0.0, 1.0)
        z = jnp.log(y) - jnp.log1p(-y)
        log_det = jax.nn.softplus(-z) + jax.nn.softplus(z) + jnp.log(self.scale[...])
        return self.loc[...] + self.scale[...] * z, jnp.sum(log_det)


def standardisation(theta) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of samples `theta` of shape `(n, dim)`, for `LogisticScaling`.

    **Arguments:**

    - `theta`: samples, shape `(n, dim)` with `n >= 2`.

    **Returns:**

    `(loc, scale)`, each of shape `(dim,)`; a zero standard deviation is replaced by 1.
    """
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim != 2 or theta.shape[0] < 2:
        raise ValueError(f"theta must have shape (n >= 2, dim), got {theta.shape}")
    loc, scale = theta.mean(axis=0), theta.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return loc, scale
