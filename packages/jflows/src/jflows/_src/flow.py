"""The conditional flow distribution: `log_prob`, `sample`, `score`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jflows._src.layers import BoxScaling, Coupling, LogisticScaling, Permutation, _float_dtype
from jflows._src.transforms import MonotoneMixture, SigmoidMixture

__all__ = ["ConditionalFlow"]


class ConditionalFlow(nnx.Module):
    r"""A conditional density `q(theta | context)` on `R^dim` (or on a box) built from smooth couplings.

    From the data side to the base side the flow applies: an optional scaling of the physical
    parameter space onto the unit box (`box=(low, high)`: affine; `loc_scale=(loc, scale)`: sigmoid of
    the standardised value; neither: `theta` already lives in `[0, 1]^dim`), then `num_layers`
    couplings with a permutation between consecutive ones. The base distribution is uniform on the unit
    box, so `log q(theta | c)` is the sum of the layers' log-determinants, all in closed form: densities,
    scores and their parameter gradients never run a root finder. Sampling inverts the couplings
    numerically (with implicit gradients, see [`SigmoidMixture.inverse`][jflows.SigmoidMixture]).

    The module is a PyTree (flax nnx): it passes through `jax.jit`, `jax.vmap` and `jax.grad`; the
    trainable leaves are the `nnx.Param`s of the conditioners, the scaling constants are
    `nnx.Variable`s.

    **Arguments:**

    - `dim`: dimension of `theta`.
    - `context_dim`: dimension of the conditioning vector (0: an unconditional flow).
    - `rngs`: `flax.nnx.Rngs` for initialisation (and random permutations).
    - `num_layers`: number of couplings.
    - `transform`: elementwise family of the couplings (default `SigmoidMixture()`; or `RampMixture()`).
    - `hidden`: hidden widths of each conditioner MLP.
    - `activation`: conditioner activation (smooth; default `jax.nn.silu`).
    - `permutation`: `"reverse"` (fixed reversals) or `"random"` (drawn from `rngs` at construction).
    - `box`: `(low, high)`, finite bounds (scalars or shape `(dim,)`) of the support.
    - `loc_scale`: `(loc, scale)` for an unbounded support, e.g. from
      [`standardisation`][jflows.standardisation] of training samples.
    - `init_scale`: scale of the conditioners' last layer at initialisation (0.1: close to a fixed
      smooth map; 1: a visibly random density).
    - `param_dtype`: parameter dtype (`None`: float64 under `jax_enable_x64`, else float32).
    """

    def __init__(
        self,
        dim: int,
        context_dim: int = 0,
        *,
        rngs: nnx.Rngs,
        num_layers: int = 4,
        transform: MonotoneMixture | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: Callable = jax.nn.silu,
        permutation: str = "reverse",
        box: tuple | None = None,
        loc_scale: tuple | None = None,
        init_scale: float = 0.1,
        param_dtype=None,
    ):
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if not isinstance(context_dim, int) or context_dim < 0:
            raise ValueError(f"context_dim must be a non-negative int, got {context_dim!r}")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if permutation not in ("reverse", "random"):
            raise ValueError(f"permutation must be 'reverse' or 'random', got {permutation!r}")
        if box is not None and loc_scale is not None:
            raise ValueError("give at most one of box=(low, high) and loc_scale=(loc, scale)")
        transform = SigmoidMixture() if transform is None else transform
        if not isinstance(transform, MonotoneMixture):
            raise TypeError(f"transform must be a MonotoneMixture, got {transform!r}")
        dtype = _float_dtype(param_dtype)
        self.dim = dim
        self.context_dim = context_dim
        if box is not None:
            self.scaling = BoxScaling(*_pair("box", box), dim=dim, dtype=dtype)
        elif loc_scale is not None:
            self.scaling = LogisticScaling(*_pair("loc_scale", loc_scale), dim=dim, dtype=dtype)
        else:
            self.scaling = None
        layers = []
        for i in range(num_layers):
            if i > 0 and dim > 1:
                if permutation == "reverse":
                    perm = tuple(range(dim - 1, -1, -1))
                else:
                    perm = tuple(
                        int(j) for j in np.asarray(jax.random.permutation(rngs.params(), dim))
                    )
                layers.append(Permutation(perm))
            layers.append(
                Coupling(
                    dim,
                    context_dim,
                    transform,
                    hidden=hidden,
                    activation=activation,
                    init_scale=init_scale,
                    param_dtype=dtype,
                    rngs=rngs,
                )
            )
        self.layers = nnx.List(layers)

    # ------------------------------------------------------------------ single-sample maps
    def _to_base(self, theta, context):
        """Data side -> base side for one sample: `(z, log_det, inside_support)`."""
        log_det = jnp.zeros((), theta.dtype)
        inside = jnp.array(True)
        u = theta
        if self.scaling is not None:
            u, log_det = self.scaling.forward(theta, context)
        if isinstance(self.scaling, BoxScaling):
            inside = jnp.all((u >= 0) & (u <= 1))
            u = jnp.clip(u, 0.0, 1.0)
        for layer in self.layers:
            u, ld = layer.forward(u, context)
            log_det = log_det + ld
        return u, log_det, inside

    def _from_base(self, z, context):
        """Base side -> data side for one sample: `(theta, log_det)`."""
        log_det = jnp.zeros((), z.dtype)
        for layer in reversed(self.layers):
            z, ld = layer.inverse(z, context)
            log_det = log_det + ld
        if self.scaling is not None:
            z, ld = self.scaling.inverse(z, context)
            log_det = log_det + ld
        return z, log_det

    def _log_prob_one(self, theta, context):
        _, log_det, inside = self._to_base(theta, context)
        return jnp.where(inside, log_det, -jnp.inf)

    # ------------------------------------------------------------------ public API
    def log_prob(self, theta, context=None) -> jax.Array:
        """Log-density `log q(theta | context)`.

        **Arguments:**

        - `theta`: shape `(dim,)` or `(n, dim)`.
        - `context`: `None` for an unconditional flow, else shape `(context_dim,)` (shared by the
          batch) or `(n, context_dim)`.

        **Returns:**

        Shape `()` or `(n,)`; `-inf` outside a `box` support.
        """
        theta, context, batched, ctx_batched = self._check(theta, context)
        if not batched:
            return self._log_prob_one(theta, context)
        return jax.vmap(self._log_prob_one, in_axes=(0, 0 if ctx_batched else None))(theta, context)

    def score(self, theta, context=None) -> jax.Array:
        """Score `∇_theta log q(theta | context)`, same shapes as `log_prob`'s `theta`.

        **Arguments:**

        - `theta`, `context`: as in `log_prob`.

        **Returns:**

        Shape `(dim,)` or `(n, dim)` (zero outside a `box` support).
        """
        theta, context, batched, ctx_batched = self._check(theta, context)
        return _score(self, theta, context, batched, ctx_batched)

    def sample_and_log_prob(self, key, context=None, n: int = 1) -> tuple[jax.Array, jax.Array]:
        """`n` samples of `q(· | context)` and their log-densities (computed along the inverse pass).

        **Arguments:**

        - `key`: a `jax.random` key.
        - `context`: `None` or shape `(context_dim,)`; vmap over contexts for several.
        - `n`: number of samples (a Python int: it sets the output shape).

        **Returns:**

        `(theta, log_prob)` of shapes `(n, dim)` and `(n,)`.
        """
        if not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if context is not None and jnp.ndim(context) != 1:
            raise ValueError(
                f"sample takes one context of shape ({self.context_dim},), got "
                f"{jnp.shape(context)}; vmap over several"
            )
        dtype = self._dtype()
        _, context, _, _ = self._check(jnp.zeros((self.dim,), dtype), context)
        return _sample(self, key, context, int(n), dtype)

    def sample(self, key, context=None, n: int = 1) -> jax.Array:
        """`n` samples of `q(· | context)`; see `sample_and_log_prob`.

        **Returns:**

        Shape `(n, dim)`.
        """
        return self.sample_and_log_prob(key, context, n)[0]

    # ------------------------------------------------------------------ helpers
    def _dtype(self):
        leaves = [x for x in jax.tree_util.tree_leaves(nnx.state(self)) if hasattr(x, "dtype")]
        floats = [x.dtype for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)]
        return floats[0] if floats else jnp.dtype(jnp.result_type(float))

    def _check(self, theta, context):
        theta = jnp.asarray(theta)
        if not jnp.issubdtype(theta.dtype, jnp.floating):
            theta = theta.astype(jnp.result_type(float))
        if theta.ndim not in (1, 2) or theta.shape[-1] != self.dim:
            raise ValueError(
                f"theta must have shape ({self.dim},) or (n, {self.dim}), got {theta.shape}"
            )
        batched = theta.ndim == 2
        if self.context_dim == 0:
            if context is not None:
                raise ValueError(
                    f"this flow is unconditional (context_dim=0) but got a context of shape "
                    f"{jnp.shape(context)}"
                )
            return theta, None, batched, False
        if context is None:
            raise ValueError(f"this flow needs a context of shape ({self.context_dim},)")
        context = jnp.asarray(context)
        if not jnp.issubdtype(context.dtype, jnp.floating):
            context = context.astype(theta.dtype)
        if context.ndim not in (1, 2) or context.shape[-1] != self.context_dim:
            raise ValueError(
                f"context must have shape ({self.context_dim},) or (n, {self.context_dim}), "
                f"got {context.shape}"
            )
        ctx_batched = context.ndim == 2
        if ctx_batched and (not batched or context.shape[0] != theta.shape[0]):
            raise ValueError(
                f"a batch of contexts {context.shape} needs theta of shape "
                f"({context.shape[0]}, {self.dim}), got {theta.shape}"
            )
        return theta, context, batched, ctx_batched


# The public methods check their inputs eagerly, then run these compiled kernels (nested inside a
# user's own jit they are simply inlined).
@functools.partial(jax.jit, static_argnums=(3, 4))
def _log_prob(flow, theta, context, batched, ctx_batched):
    if not batched:
        return flow._log_prob_one(theta, context)
    return jax.vmap(flow._log_prob_one, in_axes=(0, 0 if ctx_batched else None))(theta, context)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _score(flow, theta, context, batched, ctx_batched):
    grad = jax.grad(flow._log_prob_one)
    if not batched:
        return grad(theta, context)
    return jax.vmap(grad, in_axes=(0, 0 if ctx_batched else None))(theta, context)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _sample(flow, key, context, n, dtype):
    # jax.random.uniform draws from the grid k eps, k = 0 .. 1/eps - 1; shifting by eps/2 to the cell
    # centres keeps z strictly inside (0, 1), so an unbounded support never yields +-inf.
    z = jax.random.uniform(key, (n, flow.dim), dtype) + 0.5 * jnp.finfo(dtype).eps
    theta, log_det = jax.vmap(flow._from_base, in_axes=(0, None))(z, context)
    # NaN parameters (a diverged fit) make the log-density NaN while the bracketed inverse still
    # lands on the box's corner: poison the sample instead of returning a finite wrong answer
    theta = jnp.where(jnp.isnan(log_det)[:, None], jnp.nan, theta)
    return theta, -log_det


def _pair(name, value):
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"{name} must be a pair of arrays, got {value!r}")
    return value
