"""Score networks in flax nnx: an MLP for vectors, a small periodic U-Net for 2-D maps, and the hybrid
prior (analytic Gaussian score plus a learned residual).

Every model has the signature `model(x, sigma) -> score` for one field or a batch of fields. The
output is parametrised as `network(c_in x, log sigma) / sigma` with `c_in = 1 / sqrt(data_std^2 +
sigma^2)`: the sigma^2-weighted DSM loss then asks the network for an output of order one at every
noise level (the noise `-u` it has to predict), which keeps the training well conditioned.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import Array

from ._checks import check_int, check_positive
from .prior import GaussianFieldPrior


def _sigma_batch(sigma, batch: int, dtype) -> Array:
    """`sigma` as a `(batch,)` array (scalar broadcast), with an eager positivity check."""
    check_positive("sigma", sigma)
    sigma = jnp.asarray(sigma, dtype)
    if sigma.ndim == 0:
        return jnp.broadcast_to(sigma, (batch,))
    if sigma.shape != (batch,):
        raise ValueError(f"sigma must be a scalar or of shape ({batch},), got shape {sigma.shape}")
    return sigma


def sigma_features(sigma: Array, num_frequencies: int) -> Array:
    """Fourier features of `log sigma`: `[log sigma, sin(w_k log sigma), cos(w_k log sigma)]` with
    `num_frequencies` frequencies `w_k` from 1/8 to 4 (geometric), shape `(*sigma.shape, 1 + 2 K)`."""
    log_s = jnp.log(sigma)[..., None]
    w = jnp.asarray(np.geomspace(0.125, 4.0, num_frequencies), sigma.dtype)
    w = w.reshape((1,) * (log_s.ndim - 1) + (num_frequencies,))
    return jnp.concatenate([log_s, jnp.sin(w * log_s), jnp.cos(w * log_s)], axis=-1)


def _kernel_init(key: Array, shape, dtype=jnp.float32) -> Array:
    """Fan-in scaled normal weights, `N(0, 1 / fan_in)` (LeCun), drawn on the host with NumPy from a
    seed taken from `key` when the key is concrete: initialising through `jax.random` compiles one XLA
    kernel per weight shape, which dominates the construction time of a small network on a CPU."""
    fan_in = int(np.prod(shape[:-1]))
    if isinstance(key, jax.core.Tracer):
        z = jax.random.normal(key, shape, dtype)
    else:
        seed = np.asarray(jax.random.key_data(key)).astype(np.uint32).ravel()
        z = np.random.default_rng(seed).standard_normal(shape)
    return jnp.asarray(z / np.sqrt(fan_in), dtype)


def _zero_linear(din: int, dout: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        din,
        dout,
        kernel_init=nnx.initializers.zeros_init(),
        bias_init=nnx.initializers.zeros_init(),
        rngs=rngs,
    )


class ScoreMLP(nnx.Module):
    """A multilayer perceptron score model for vectors, `s(x, sigma)`, conditioned on `sigma` by
    Fourier features of `log sigma` concatenated with the input.

    `s(x, sigma) = MLP(x / sqrt(data_std^2 + sigma^2), features(sigma)) / sigma`; the last layer is
    initialised to zero, so the untrained model returns a zero score.

    **Arguments:**

    - `dim`: length of the vectors.
    - `hidden_features`: widths of the hidden layers (SiLU activations).
    - `num_frequencies`: Fourier frequencies of the `log sigma` embedding.
    - `data_std`: typical standard deviation of the data (input scaling only).
    - `rngs`: `flax.nnx.Rngs` for the initialisation.

    **Call:** `model(x, sigma)` with `x` of shape `(dim,)` or `(batch, dim)` and `sigma` a positive
    scalar or of shape `(batch,)`; returns the score, shaped like `x`.
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden_features: tuple[int, ...] = (128, 128),
        num_frequencies: int = 8,
        data_std: float = 1.0,
        rngs: nnx.Rngs,
    ):
        self.dim = check_int("dim", dim, minimum=1)
        self.num_frequencies = check_int("num_frequencies", num_frequencies, minimum=1)
        check_positive("data_std", data_std)
        self.data_std = float(data_std)
        widths = [self.dim + 1 + 2 * self.num_frequencies, *hidden_features]
        self.hidden = nnx.List(
            [
                nnx.Linear(a, b, kernel_init=_kernel_init, rngs=rngs)
                for a, b in itertools.pairwise(widths)
            ]
        )
        self.out = _zero_linear(widths[-1], self.dim, rngs)

    def __call__(self, x: Array, sigma: Array | float) -> Array:
        x = jnp.asarray(x)
        if x.ndim not in (1, 2) or x.shape[-1] != self.dim:
            raise ValueError(
                f"ScoreMLP(dim={self.dim}) expects x of shape ({self.dim},) or (batch, {self.dim}), "
                f"got {x.shape}"
            )
        single = x.ndim == 1
        xb = x[None] if single else x
        sigma = _sigma_batch(sigma, xb.shape[0], xb.dtype)
        c_in = jax.lax.rsqrt(self.data_std**2 + sigma**2)
        h = jnp.concatenate([xb * c_in[:, None], sigma_features(sigma, self.num_frequencies)], -1)
        for layer in self.hidden:
            h = nnx.silu(layer(h))
        out = self.out(h) / sigma[:, None]
        return out[0] if single else out


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class _ResBlock(nnx.Module):
    """GroupNorm - SiLU - circular 3x3 conv, plus the sigma embedding, twice, with a skip connection."""

    def __init__(self, cin: int, cout: int, emb_dim: int, rngs: nnx.Rngs):
        self.norm1 = nnx.GroupNorm(cin, num_groups=_groups(cin), rngs=rngs)
        self.conv1 = nnx.Conv(
            cin, cout, (3, 3), padding="CIRCULAR", kernel_init=_kernel_init, rngs=rngs
        )
        self.emb = nnx.Linear(emb_dim, cout, kernel_init=_kernel_init, rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=_groups(cout), rngs=rngs)
        self.conv2 = nnx.Conv(
            cout, cout, (3, 3), padding="CIRCULAR", kernel_init=_kernel_init, rngs=rngs
        )
        self.skip = (
            nnx.Conv(cin, cout, (1, 1), kernel_init=_kernel_init, rngs=rngs)
            if cin != cout
            else None
        )

    def __call__(self, h: Array, emb: Array) -> Array:
        z = self.conv1(nnx.silu(self.norm1(h))) + self.emb(emb)[:, None, None, :]
        z = self.conv2(nnx.silu(self.norm2(z)))
        return (h if self.skip is None else self.skip(h)) + z


def _downsample(h: Array) -> Array:
    b, n0, n1, c = h.shape
    return h.reshape(b, n0 // 2, 2, n1 // 2, 2, c).mean(axis=(2, 4))


def _upsample(h: Array) -> Array:
    return jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)


class ScoreUNet(nnx.Module):
    """A small U-Net score model for periodic 2-D maps, `s(x, sigma)`.

    Residual blocks (GroupNorm, SiLU, 3x3 convolutions with periodic 'wrap' padding) at each
    resolution, 2x2 average-pooling down and nearest-neighbour up-sampling, skip connections between
    the two paths, and a sigma embedding (Fourier features of `log sigma` through a small MLP) added in
    every block. Output: `network(x / sqrt(data_std^2 + sigma^2)) / sigma`, last convolution
    initialised to zero (the untrained model returns a zero score).

    Equivariance: the model commutes exactly with periodic translations by multiples of
    `2^(len(channels) - 1)` pixels (convolutions with wrap padding, pooling on a fixed grid, GroupNorm
    over the whole map); for other shifts it is only approximately equivariant.

    **Arguments:**

    - `channels`: feature channels at each resolution, e.g. `(16, 32)`; the map is down-sampled
      `len(channels) - 1` times, so both sides must be divisible by `2^(len(channels) - 1)`.
    - `num_frequencies`: Fourier frequencies of the `log sigma` embedding.
    - `embedding_dim`: width of the sigma embedding.
    - `data_std`: typical pixel standard deviation of the maps (input scaling only).
    - `rngs`: `flax.nnx.Rngs` for the initialisation.

    **Call:** `model(x, sigma)` with `x` of shape `(n0, n1)` or `(batch, n0, n1)` and `sigma` a
    positive scalar or of shape `(batch,)`; returns the score, shaped like `x`.
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (16, 32),
        *,
        num_frequencies: int = 8,
        embedding_dim: int = 64,
        data_std: float = 1.0,
        rngs: nnx.Rngs,
    ):
        channels = tuple(int(c) for c in channels)
        if not channels or any(c < 1 for c in channels):
            raise ValueError(
                f"channels must be a non-empty tuple of positive ints, got {channels!r}"
            )
        self.channels = channels
        self.num_frequencies = check_int("num_frequencies", num_frequencies, minimum=1)
        embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
        check_positive("data_std", data_std)
        self.data_std = float(data_std)
        self.emb1 = nnx.Linear(
            1 + 2 * self.num_frequencies, embedding_dim, kernel_init=_kernel_init, rngs=rngs
        )
        self.emb2 = nnx.Linear(embedding_dim, embedding_dim, kernel_init=_kernel_init, rngs=rngs)
        self.conv_in = nnx.Conv(
            1, channels[0], (3, 3), padding="CIRCULAR", kernel_init=_kernel_init, rngs=rngs
        )
        levels = len(channels)
        prev = channels[0]
        down = []
        for c in channels:
            down.append(_ResBlock(prev, c, embedding_dim, rngs))
            prev = c
        self.down = nnx.List(down)
        self.mid = _ResBlock(channels[-1], channels[-1], embedding_dim, rngs)
        up = []
        for i in range(levels):
            cin = (channels[i + 1] if i < levels - 1 else channels[-1]) + channels[i]
            up.append(_ResBlock(cin, channels[i], embedding_dim, rngs))
        self.up = nnx.List(up)
        self.norm_out = nnx.GroupNorm(channels[0], num_groups=_groups(channels[0]), rngs=rngs)
        self.conv_out = nnx.Conv(
            channels[0],
            1,
            (3, 3),
            padding="CIRCULAR",
            kernel_init=nnx.initializers.zeros_init(),
            bias_init=nnx.initializers.zeros_init(),
            rngs=rngs,
        )

    def __call__(self, x: Array, sigma: Array | float) -> Array:
        x = jnp.asarray(x)
        factor = 2 ** (len(self.channels) - 1)
        if x.ndim not in (2, 3) or x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"ScoreUNet expects maps of shape (n0, n1) or (batch, n0, n1) with n0, n1 divisible "
                f"by {factor}, got {x.shape}"
            )
        single = x.ndim == 2
        xb = x[None] if single else x
        sigma = _sigma_batch(sigma, xb.shape[0], xb.dtype)
        emb = nnx.silu(self.emb1(sigma_features(sigma, self.num_frequencies)))
        emb = nnx.silu(self.emb2(emb))
        c_in = jax.lax.rsqrt(self.data_std**2 + sigma**2)
        h = self.conv_in((xb * c_in[:, None, None])[..., None])
        skips = []
        levels = len(self.channels)
        for i in range(levels):
            h = self.down[i](h, emb)
            skips.append(h)
            if i < levels - 1:
                h = _downsample(h)
        h = self.mid(h, emb)
        for i in reversed(range(levels)):
            h = self.up[i](jnp.concatenate([h, skips[i]], axis=-1), emb)
            if i > 0:
                h = _upsample(h)
        out = self.conv_out(nnx.silu(self.norm_out(h)))[..., 0] / sigma[:, None, None]
        return out[0] if single else out


class HybridScore(nnx.Module):
    """The hybrid prior: the analytic score of a Gaussian random field with a given power spectrum plus
    a learned residual, `s(x, sigma) = -(C + sigma^2 I)^-1 x + r_theta(x, sigma)`.

    The Gaussian part carries the two-point statistics exactly (and is not trained: its power map is a
    plain `nnx.Variable`, not an `nnx.Param`); the network only learns the non-Gaussian correction. With a
    zero-initialised residual (as `ScoreUNet` and `ScoreMLP` are), the untrained hybrid is exactly the
    Gaussian prior.

    **Arguments:**

    - `prior`: a `jscore.GaussianFieldPrior` (power map and field shape).
    - `residual`: a score model with the signature `residual(x, sigma)` for a field or a batch (e.g.
      `jscore.ScoreUNet`).

    **Call:** `model(x, sigma)` with `x` of shape `prior.shape` or `(batch, *prior.shape)`.
    """

    def __init__(self, prior: GaussianFieldPrior, residual: nnx.Module):
        if not isinstance(prior, GaussianFieldPrior):
            raise TypeError(
                f"prior must be a jscore.GaussianFieldPrior, got {type(prior).__name__}"
            )
        if not callable(residual):
            raise TypeError("residual must be a callable score model residual(x, sigma)")
        self.shape = tuple(prior.shape)
        self.power = nnx.Variable(jnp.asarray(prior.power))
        self.residual = residual

    def gaussian_score(self, x: Array, sigma: Array | float) -> Array:
        """The analytic part alone, for a field or a batch."""
        x = jnp.asarray(x)
        n = len(self.shape)
        if x.shape[-n:] != self.shape or x.ndim not in (n, n + 1):
            raise ValueError(
                f"HybridScore expects x of shape {self.shape} or (batch, *{self.shape}), got {x.shape}"
            )
        prior = GaussianFieldPrior(self.power[...], self.shape)
        if x.ndim == n:
            check_positive("sigma", sigma)
            return prior.score(x, jnp.asarray(sigma, x.dtype))
        sigma = _sigma_batch(sigma, x.shape[0], x.dtype)
        return jax.vmap(prior.score)(x, sigma)

    def __call__(self, x: Array, sigma: Array | float) -> Array:
        return self.gaussian_score(x, sigma) + self.residual(x, sigma)
