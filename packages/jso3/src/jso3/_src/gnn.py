"""An E(3)-equivariant graph network (EGNN, Satorras, Hoogeboom & Welling 2021) over the neighbourhood
of an object, written in flax nnx, and the fixed-size neighbour lists it reads.

A neighbourhood is a small point cloud: the object itself (the *centre*) and `K` neighbours, padded to a
fixed `K` with a mask so that everything jits and batches. Node features are invariant scalars (the
neighbours' properties); positions are 3-vectors. An EGNN layer updates, for every valid pair `i != j`,

    m_ij = phi_e(h_i, h_j, |x_i - x_j|^2 / ell^2)
    x_i <- x_i + ell / n_i sum_j (x_i - x_j) / sqrt(|x_i - x_j|^2 + ell^2) * phi_x(m_ij)
    h_i <- h_i + phi_h(h_i, 1/n_i sum_j m_ij)

with `n_i` the number of valid partners and `ell` a length scale. The optional input tensors `T_t` of
the object enter the initial node features through invariants only: `tr T_t^n` (n = 1, 2, 3) for the
centre and `r_j^T T_t r_j / (|r_j|^2 + ell^2)` for neighbour `j`. Only differences and norms of
positions enter, so the `h` are invariant and the `x` equivariant under rotations, reflections and
translations of all positions (E(3)), and sums over `j` make the network invariant to the order of the
neighbours. Padded neighbours are replaced by the
centre (position) and zeros (features) before anything else and are masked out of every sum, so their
values (even NaN) never matter.

Readout, relative to the centre node `0`, with `r_j = x_j - x_0` after the last layer:

- `scalars = psi_s(h_0, mean_j h_j)`: invariant features;
- `vectors_c = 1/(n ell) sum_j w_c(h_j) r_j`: equivariant vectors (`Q v` when positions are rotated by
  `Q`);
- `tensors_c = 1/(n ell^2) sum_j w'_c(h_j) (r_j r_j^T - |r_j|^2 I / 3) + sum_t b_ct(h_0) T_t^0`:
  equivariant traceless symmetric tensors (`Q T Q^T`), where `T_t^0` are the traceless parts of the
  optional input tensors of the centre (e.g. the local tidal tensor).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ._checks import check_positive


class Neighbourhood(NamedTuple):
    """Fixed-size, padded neighbourhoods of a batch of objects (a PyTree; index it with
    `jax.tree.map(lambda x: x[idx], nb)`).

    **Fields:**

    - `center`: `(..., 3)` position of each object.
    - `positions`: `(..., K, 3)` positions of its neighbours (in the frame of `center`; for a periodic
      box, `center` plus the minimum-image offsets, as `knn_neighbourhoods` returns them).
    - `features`: `(..., K, F)` invariant properties of the neighbours (e.g. mass or density).
    - `mask`: `(..., K)`, nonzero for real neighbours, zero for padding.
    - `tensors`: `(..., T, 3, 3)` symmetric tensors attached to the object (e.g. the local tidal
      tensor), or `None`. They rotate as `Q T Q^T`.
    - `center_features`: `(..., S)` invariant properties of the object itself, or `None`.
    """

    center: jax.Array
    positions: jax.Array
    features: jax.Array
    mask: jax.Array
    tensors: jax.Array | None = None
    center_features: jax.Array | None = None


class EGNNOutput(NamedTuple):
    """What `EGNN` returns for every neighbourhood.

    **Fields:**

    - `scalars`: `(..., num_scalars)` invariant features.
    - `vectors`: `(..., num_vectors, 3)` equivariant vectors.
    - `tensors`: `(..., num_tensors, 3, 3)` equivariant traceless symmetric tensors.
    """

    scalars: jax.Array
    vectors: jax.Array
    tensors: jax.Array


def _check_neighbourhood(nb: Neighbourhood) -> tuple[tuple[int, ...], int, int]:
    if not isinstance(nb, Neighbourhood):
        raise TypeError(f"expected a jso3.Neighbourhood, got {type(nb).__name__}.")
    center, positions = np.shape(nb.center), np.shape(nb.positions)
    features, mask = np.shape(nb.features), np.shape(nb.mask)
    if len(center) < 1 or center[-1] != 3:
        raise ValueError(f"`center` must have shape (..., 3), got {center}.")
    batch = center[:-1]
    if len(positions) != len(batch) + 2 or positions[-1] != 3:
        raise ValueError(
            f"`positions` must have shape (..., K, 3) with batch {batch}, got {positions}."
        )
    k = positions[-2]
    if tuple(positions[:-2]) != tuple(batch) or tuple(mask) != (*batch, k):
        raise ValueError(
            f"`positions` {positions} and `mask` {mask} do not match `center` {center} "
            f"(expected (..., K, 3) and (..., K))."
        )
    if len(features) != len(batch) + 2 or tuple(features[:-1]) != (*batch, k):
        raise ValueError(f"`features` must have shape {(*batch, k)} + (F,), got {features}.")
    if nb.tensors is not None:
        t = np.shape(nb.tensors)
        if len(t) != len(batch) + 3 or tuple(t[-2:]) != (3, 3) or tuple(t[:-3]) != tuple(batch):
            raise ValueError(f"`tensors` must have shape {batch} + (T, 3, 3), got {t}.")
    if nb.center_features is not None:
        s = np.shape(nb.center_features)
        if len(s) != len(batch) + 1 or tuple(s[:-1]) != tuple(batch):
            raise ValueError(f"`center_features` must have shape {batch} + (S,), got {s}.")
    return tuple(batch), k, features[-1]


def _traceless(t):
    eye = jnp.broadcast_to(jnp.eye(3, dtype=t.dtype), t.shape)
    return t - jnp.trace(t, axis1=-2, axis2=-1)[..., None, None] * eye / 3.0


def knn_neighbourhoods(
    centers,
    points,
    features,
    k: int,
    *,
    radius=None,
    box_size=None,
    center_indices=None,
    tensors=None,
    center_features=None,
    batch_size: int = 256,
) -> Neighbourhood:
    """Fixed-size neighbour lists: the `k` nearest `points` of every centre, padded and masked.

    Brute force (all distances of a block of `batch_size` centres at a time, then `lax.top_k`), so the
    cost is `O(N M)` for `N` centres and `M` points: meant for thousands, not millions.

    **Arguments:**

    - `centers`: `(N, 3)` positions of the objects.
    - `points`: `(M, 3)` candidate neighbours.
    - `features`: `(M, F)` their invariant properties.
    - `k`: number of neighbours per object (static, `k <= M`, minus one with `center_indices`).
    - `radius`: if given, neighbours farther than `radius` are masked out (the list keeps size `k`).
    - `box_size`: if given (scalar or `(3,)`), positions are periodic with this period and offsets
      are minimum images; the returned neighbour positions are `center + offset`.
    - `center_indices`: `(N,)` integer index of each centre in `points`, excluded from its own list
      (when the objects are among the points).
    - `tensors`, `center_features`: passed through to the `Neighbourhood`.
    - `batch_size`: centres per block of the distance computation.

    **Returns:**

    A `Neighbourhood` with neighbours sorted by distance.
    """
    centers, points, features = jnp.asarray(centers), jnp.asarray(points), jnp.asarray(features)
    if centers.ndim != 2 or centers.shape[-1] != 3:
        raise ValueError(f"`centers` must have shape (N, 3), got {centers.shape}.")
    if points.ndim != 2 or points.shape[-1] != 3:
        raise ValueError(f"`points` must have shape (M, 3), got {points.shape}.")
    if features.ndim != 2 or features.shape[0] != points.shape[0]:
        raise ValueError(
            f"`features` must have shape (M, F) with M = {points.shape[0]}, got {features.shape}."
        )
    available = points.shape[0] - (center_indices is not None)
    if not isinstance(k, int | np.integer) or not 1 <= k <= available:
        raise ValueError(f"`k` must be an int in [1, {available}], got {k!r}.")
    if radius is not None:
        check_positive("radius", radius)
    if box_size is not None:
        check_positive("box_size", box_size)
        box = jnp.broadcast_to(jnp.asarray(box_size, points.dtype), (1, 3))
    n = centers.shape[0]
    if center_indices is None:
        idx_self = jnp.full((n,), -1, jnp.int32)
    else:
        idx_self = jnp.asarray(center_indices, jnp.int32)
        if idx_self.shape != (n,):
            raise ValueError(f"`center_indices` must have shape ({n},), got {idx_self.shape}.")

    def one(args):
        c, i_self = args
        d = points - c[None, :]
        if box_size is not None:
            d = d - box * jnp.round(d / box)
        d2 = jnp.sum(d * d, axis=-1)
        d2 = jnp.where(jnp.arange(points.shape[0]) == i_self, jnp.inf, d2)
        neg, idx = jax.lax.top_k(-d2, k)
        return c[None, :] + d[idx], idx, -neg

    pos, idx, d2 = jax.lax.map(one, (centers, idx_self), batch_size=min(batch_size, n))
    mask = jnp.ones(idx.shape, points.dtype)
    if radius is not None:
        mask = (d2 <= jnp.asarray(radius, points.dtype) ** 2).astype(points.dtype)
    return Neighbourhood(centers, pos, features[idx], mask, tensors, center_features)


def _mlp(dims: Sequence[int], rngs, param_dtype, final_scale=None):
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        kwargs = {}
        if final_scale is not None and i == len(dims) - 2:
            kwargs["kernel_init"] = nnx.initializers.variance_scaling(
                final_scale, "fan_in", "normal"
            )
        layers.append(nnx.Linear(a, b, param_dtype=param_dtype, rngs=rngs, **kwargs))
    return nnx.List(layers)


def _apply(layers, x):
    for i, layer in enumerate(layers):
        x = layer(x)
        if i < len(layers) - 1:
            x = nnx.silu(x)
    return x


class EGNN(nnx.Module):
    """E(3)-equivariant graph network over a `Neighbourhood` (see the module docstring for the
    equations): invariant scalars, equivariant vectors and traceless symmetric tensors per object.

    **Arguments:**

    - `node_features`: `F`, the number of neighbour features.
    - `hidden`: width of the node and message features.
    - `num_layers`: number of EGNN layers.
    - `num_scalars`, `num_vectors`, `num_tensors`: sizes of the outputs.
    - `num_input_tensors`: `T`, the number of tensors attached to each object (0: none).
    - `center_features`: `S`, the number of invariant properties of the object itself (0: none).
    - `length_scale`: `ell`, the typical neighbour distance (positions are compared with it).
    - `param_dtype`: dtype of the parameters.
    - `rngs`: `flax.nnx.Rngs`.
    """

    def __init__(
        self,
        node_features: int,
        *,
        hidden: int = 32,
        num_layers: int = 2,
        num_scalars: int = 16,
        num_vectors: int = 4,
        num_tensors: int = 4,
        num_input_tensors: int = 0,
        center_features: int = 0,
        length_scale: float = 1.0,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        sizes = {
            "node_features": node_features,
            "hidden": hidden,
            "num_layers": num_layers,
            "num_scalars": num_scalars,
            "num_vectors": num_vectors,
            "num_tensors": num_tensors,
            "num_input_tensors": num_input_tensors,
            "center_features": center_features,
        }
        minimum = {"hidden": 1, "num_layers": 1}
        for name, value in sizes.items():
            if not isinstance(value, int | np.integer) or value < minimum.get(name, 0):
                raise ValueError(
                    f"`{name}` must be an int >= {minimum.get(name, 0)}, got {value!r}."
                )
        check_positive("length_scale", length_scale)
        self.node_features = node_features
        self.num_scalars, self.num_vectors, self.num_tensors = num_scalars, num_vectors, num_tensors
        self.num_input_tensors = num_input_tensors
        self.center_features = center_features
        self.length_scale = float(length_scale)
        t = num_input_tensors
        # node input: features, centre flag, centre block (S + 3 T trace invariants), and the T
        # invariants r^T T r / (|r|^2 + ell^2) of the neighbour direction against each input tensor
        in_dim = node_features + 1 + center_features + 3 * t + t
        self.embed = nnx.Linear(in_dim, hidden, param_dtype=param_dtype, rngs=rngs)
        self.phi_e = nnx.List(
            [_mlp([2 * hidden + 1, hidden, hidden], rngs, param_dtype) for _ in range(num_layers)]
        )
        self.phi_x = nnx.List(
            [_mlp([hidden, hidden, 1], rngs, param_dtype, 0.01) for _ in range(num_layers)]
        )
        self.phi_h = nnx.List(
            [_mlp([2 * hidden, hidden, hidden], rngs, param_dtype) for _ in range(num_layers)]
        )
        self.readout_scalars = _mlp([2 * hidden, hidden, max(num_scalars, 1)], rngs, param_dtype)
        self.readout_weights = nnx.Linear(
            hidden, max(num_vectors + num_tensors, 1), param_dtype=param_dtype, rngs=rngs
        )
        self.readout_input_tensors = nnx.Linear(
            hidden, max(num_tensors * t, 1), param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, nb: Neighbourhood) -> EGNNOutput:
        """Evaluate the network.

        **Arguments:**

        - `nb`: a `Neighbourhood` with batch shape `(...)`, `K` neighbours, `F = node_features`
          features, `T = num_input_tensors` tensors (or `None` when 0) and `S = center_features`
          centre features (or `None` when 0).

        **Returns:**

        An `EGNNOutput` with batch shape `(...)`.
        """
        batch, k, f = _check_neighbourhood(nb)
        if f != self.node_features:
            raise ValueError(f"this EGNN expects {self.node_features} features per node, got {f}.")
        t, s = self.num_input_tensors, self.center_features
        if (nb.tensors is None) != (t == 0) or (t and np.shape(nb.tensors)[-3] != t):
            got = None if nb.tensors is None else np.shape(nb.tensors)
            raise ValueError(f"this EGNN expects {t} input tensors per object, got {got}.")
        if (nb.center_features is None) != (s == 0) or (
            s and np.shape(nb.center_features)[-1] != s
        ):
            got = None if nb.center_features is None else np.shape(nb.center_features)
            raise ValueError(f"this EGNN expects {s} centre features per object, got {got}.")

        dtype = jnp.result_type(nb.center, nb.positions, nb.features, float)
        ell = jnp.asarray(self.length_scale, dtype)
        center = jnp.asarray(nb.center, dtype)
        mask = jnp.asarray(nb.mask) != 0
        # padding never matters: replaced by the centre / zeros, and masked out of every sum
        positions = jnp.where(
            mask[..., None], jnp.asarray(nb.positions, dtype), center[..., None, :]
        )
        features = jnp.where(mask[..., None], jnp.asarray(nb.features, dtype), 0.0)
        offsets = positions - center[..., None, :]

        # node inputs (node 0 is the centre)
        zeros_k = jnp.zeros((*batch, k, 1), dtype)
        nb_in = [features, zeros_k]
        ct_in = [jnp.zeros((*batch, 1, f), dtype), jnp.ones((*batch, 1, 1), dtype)]
        center_block = []
        if s:
            center_block.append(jnp.asarray(nb.center_features, dtype))
        if t:
            tensors = jnp.asarray(nb.tensors, dtype)
            tensors = 0.5 * (tensors + jnp.swapaxes(tensors, -1, -2))
            t2 = tensors @ tensors
            center_block += [
                jnp.trace(tensors, axis1=-2, axis2=-1),
                jnp.trace(t2, axis1=-2, axis2=-1),
                jnp.trace(t2 @ tensors, axis1=-2, axis2=-1),
            ]
            # (..., K, T): direction of each neighbour against each tensor
            rtr = jnp.einsum("...ka,...tab,...kb->...kt", offsets, tensors, offsets)
            rtr = rtr / (jnp.sum(offsets**2, axis=-1, keepdims=True) + ell**2)
            nb_in.append(rtr)
            ct_in.append(jnp.zeros((*batch, 1, t), dtype))
        if center_block:
            cb = jnp.concatenate(center_block, axis=-1)
            nb_in.insert(2, jnp.zeros((*batch, k, cb.shape[-1]), dtype))
            ct_in.insert(2, cb[..., None, :])
        h = jnp.concatenate(
            [jnp.concatenate(ct_in, axis=-1), jnp.concatenate(nb_in, axis=-1)], axis=-2
        )
        h = self.embed(h)
        x = jnp.concatenate([center[..., None, :], positions], axis=-2)  # (..., M, 3)
        node_mask = jnp.concatenate([jnp.ones((*batch, 1), bool), mask], axis=-1)
        m = k + 1
        not_self = jnp.broadcast_to(~jnp.eye(m, dtype=bool), (*batch, m, m))
        pair = node_mask[..., :, None] & node_mask[..., None, :] & not_self
        pair = pair.astype(dtype)
        n_partners = jnp.maximum(jnp.sum(pair, axis=-1, keepdims=True), 1.0)  # (..., M, 1)

        for phi_e, phi_x, phi_h in zip(self.phi_e, self.phi_x, self.phi_h, strict=True):
            diff = x[..., :, None, :] - x[..., None, :, :]  # (..., M, M, 3)
            d2 = jnp.sum(diff**2, axis=-1, keepdims=True)
            hi = jnp.broadcast_to(h[..., :, None, :], (*batch, m, m, h.shape[-1]))
            hj = jnp.broadcast_to(h[..., None, :, :], (*batch, m, m, h.shape[-1]))
            msg = nnx.silu(_apply(phi_e, jnp.concatenate([hi, hj, d2 / ell**2], axis=-1)))
            msg = msg * pair[..., None]
            coef = jnp.tanh(_apply(phi_x, msg)) * pair[..., None]  # (..., M, M, 1)
            x = x + ell * jnp.sum(diff / jnp.sqrt(d2 + ell**2) * coef, axis=-2) / n_partners
            h = h + _apply(phi_h, jnp.concatenate([h, jnp.sum(msg, axis=-2) / n_partners], axis=-1))

        h0, hn = h[..., 0, :], h[..., 1:, :]
        maskf = mask.astype(dtype)
        n_nb = jnp.maximum(jnp.sum(maskf, axis=-1), 1.0)  # (...)
        mean_h = jnp.sum(hn * maskf[..., None], axis=-2) / n_nb[..., None]
        scalars = _apply(self.readout_scalars, jnp.concatenate([h0, mean_h], axis=-1))
        scalars = scalars[..., : self.num_scalars]
        r = (x[..., 1:, :] - x[..., :1, :]) / ell  # (..., K, 3)
        w = self.readout_weights(hn) * maskf[..., None] / n_nb[..., None, None]  # (..., K, V + T)
        nv, nt = self.num_vectors, self.num_tensors
        vectors = jnp.einsum("...kc,...ka->...ca", w[..., :nv], r)
        quad = _traceless(r[..., :, None] * r[..., None, :])  # (..., K, 3, 3)
        tensors_out = jnp.einsum("...kc,...kab->...cab", w[..., nv : nv + nt], quad)
        if t and nt:
            b = self.readout_input_tensors(h0).reshape(*batch, nt, t)
            tensors_out = tensors_out + jnp.einsum("...ct,...tab->...cab", b, _traceless(tensors))
        return EGNNOutput(scalars, vectors, tensors_out)
