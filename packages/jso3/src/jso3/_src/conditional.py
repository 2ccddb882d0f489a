"""A conditional score model `s(R, sigma | neighbourhood)` on SO(3), equivariant by construction.

The `EGNN` turns the neighbourhood into invariant scalars `a`, equivariant vectors `v_c` and traceless
symmetric tensors `T_c`. The score network only sees them in the body frame of `R`,

    R^T v_c,   R^T T_c R,   a,   log sigma (Fourier features),

all invariant under `(R, neighbourhood) -> (Q R, Q neighbourhood)`, and predicts a body-frame vector `u`;
the world-frame score is `R u / sigma`. Hence `s(Q R, sigma | Q nb) = Q s(R, sigma | nb)` exactly: the
modelled density satisfies `p(Q R | Q nb) = p(R | nb)` whatever the weights, which is the symmetry of
orientations in a statistically isotropic universe. (With an isotropic neighbourhood the model can only
be uniform, as it should.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ._checks import check_matrix
from .gnn import EGNN, EGNNOutput, Neighbourhood
from .ode import probability_flow_sample, reverse_sde_sample, sigma_schedule
from .score import _SAMPLERS, _check_sigma_range, _default_num_steps, _mlp_head
from .so3 import sample_uniform

_TRIU = (jnp.array([0, 0, 0, 1, 1, 2]), jnp.array([0, 1, 2, 1, 2, 2]))


class ConditionalScoreNet(nnx.Module):
    """Score model of `p(R | neighbourhood)`: an `EGNN` embedding of the neighbourhood, read in the body
    frame of `R` by an MLP (see the module docstring). Train it with `train_dsm` (pass the
    `Neighbourhood` of every rotation as `context`) and sample with `sample_conditional`.

    **Arguments:**

    - `gnn`: the `EGNN` that embeds the neighbourhood (trained jointly).
    - `hidden`, `depth`: width and number of hidden layers of the score MLP.
    - `num_fourier`: Fourier frequencies of the `log sigma` embedding.
    - `rngs`: `flax.nnx.Rngs`.
    """

    def __init__(
        self,
        gnn: EGNN,
        *,
        hidden: int = 128,
        depth: int = 3,
        num_fourier: int = 4,
        rngs: nnx.Rngs,
    ):
        if not isinstance(gnn, EGNN):
            raise TypeError(f"`gnn` must be a jso3.EGNN, got {type(gnn).__name__}.")
        if hidden < 1 or depth < 1 or num_fourier < 0:
            raise ValueError(
                f"invalid sizes: hidden={hidden}, depth={depth}, num_fourier={num_fourier}."
            )
        self.gnn = gnn
        self.num_fourier = num_fourier
        in_dim = 1 + 2 * num_fourier + gnn.num_scalars + 3 * gnn.num_vectors + 6 * gnn.num_tensors
        self.layers, self.out = _mlp_head(in_dim, hidden, depth, rngs)

    def embed(self, context: Neighbourhood) -> EGNNOutput:
        """The `EGNN` embedding of the neighbourhoods (compute it once to sample many rotations)."""
        return self.gnn(context)

    def score(self, R, sigma, embedding: EGNNOutput):
        """The score given a precomputed embedding.

        **Arguments:**

        - `R`: rotations, shape `(..., 3, 3)`.
        - `sigma`: noise scales > 0, broadcastable to `R.shape[:-2]`.
        - `embedding`: an `EGNNOutput` whose batch shape broadcasts with `R.shape[:-2]`.

        **Returns:**

        World-frame tangent scores of shape `(..., 3)`.
        """
        check_matrix("R", R)
        if not isinstance(embedding, EGNNOutput):
            raise TypeError(f"`embedding` must be an EGNNOutput, got {type(embedding).__name__}.")
        R = jnp.asarray(R)
        batch = jnp.broadcast_shapes(R.shape[:-2], embedding.scalars.shape[:-1])
        R = jnp.broadcast_to(R, (*batch, 3, 3))
        dtype = R.dtype
        sigma = jnp.broadcast_to(jnp.asarray(sigma, dtype), batch)
        log_sigma = jnp.log(sigma)[..., None]
        freqs = 2.0 ** jnp.arange(self.num_fourier, dtype=dtype).reshape((1,) * len(batch) + (-1,))
        Rt = jnp.swapaxes(R, -1, -2)
        scalars = jnp.broadcast_to(embedding.scalars, (*batch, embedding.scalars.shape[-1]))
        vectors = jnp.broadcast_to(embedding.vectors, (*batch, *embedding.vectors.shape[-2:]))
        tensors = jnp.broadcast_to(embedding.tensors, (*batch, *embedding.tensors.shape[-3:]))
        body_vectors = jnp.einsum("...ab,...cb->...ca", Rt, vectors)  # R^T v_c
        body_tensors = Rt[..., None, :, :] @ tensors @ R[..., None, :, :]  # R^T T_c R
        features = [
            log_sigma,
            scalars.astype(dtype),
            body_vectors.reshape(*batch, -1).astype(dtype),
            body_tensors[..., _TRIU[0], _TRIU[1]].reshape(*batch, -1).astype(dtype),
        ]
        if self.num_fourier:
            features += [jnp.sin(freqs * log_sigma), jnp.cos(freqs * log_sigma)]
        h = jnp.concatenate(features, axis=-1)
        for layer in self.layers:
            h = nnx.gelu(layer(h))
        u = self.out(h)  # body frame, times sigma
        return jnp.einsum("...ab,...b->...a", R, u) / sigma[..., None]

    def __call__(self, R, sigma, context: Neighbourhood):
        """`score(R, sigma, embed(context))`: the signature `train_dsm` and `dsm_loss` use."""
        if context is None:
            raise ValueError("ConditionalScoreNet needs a Neighbourhood as context, got None.")
        return self.score(R, sigma, self.embed(context))


def sample_conditional(
    key,
    model: ConditionalScoreNet,
    context: Neighbourhood,
    shape=(),
    *,
    sigma_max=3.0,
    sigma_min=0.01,
    num_steps: int | None = None,
    sampler: str = "sde",
    method: str = "heun",
):
    """Sample `R ~ p(R | context)` for every neighbourhood of `context`: the embedding is computed once,
    then Haar-uniform rotations at `sigma_max` are transported to `sigma_min` by the reverse SDE
    (`sampler="sde"`, the default, as in `sample_from_score`, which says why) or the probability-flow
    ODE (`sampler="ode"`).

    **Arguments:**

    - `key`: a `jax.random` key.
    - `model`: a (trained) `ConditionalScoreNet`.
    - `context`: a `Neighbourhood` with batch shape `B`.
    - `shape`: number of samples per neighbourhood, as a leading batch shape.
    - `sigma_max`, `sigma_min`, `num_steps`, `method`: as in `sample_from_score` (`num_steps`
      defaults to 1000 for the SDE, 200 for the ODE).
    - `sampler`: `"sde"` (default) or `"ode"`.

    **Returns:**

    Rotations of shape `(*shape, *B, 3, 3)`.
    """
    _check_sigma_range(sigma_min, sigma_max)
    if sampler not in _SAMPLERS:
        raise ValueError(f"`sampler` must be 'ode' or 'sde', got {sampler!r}.")
    num_steps = _default_num_steps(sampler, num_steps)
    embedding = model.embed(context)
    batch = embedding.scalars.shape[:-1]
    shape = tuple(shape)
    dtype = jnp.result_type(embedding.scalars, float)
    R_init = sample_uniform(key, (*shape, *batch), dtype=dtype)
    sigmas = sigma_schedule(sigma_max, sigma_min, num_steps).astype(R_init.dtype)

    def score_fn(R, sigma):
        return model.score(R, sigma, embedding)

    if sampler == "sde":
        return reverse_sde_sample(jax.random.fold_in(key, 1), score_fn, R_init, sigmas)
    return probability_flow_sample(score_fn, R_init, sigmas, method=method)
