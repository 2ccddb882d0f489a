"""The equivariant graph network, the neighbour lists and the conditional score model: symmetries in
float64 (rotations, reflections, translations, neighbour order), padding, and a brute-force NumPy
reference for the neighbour lists."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.spatial.transform
from flax import nnx

import jso3


def _random_neighbourhood(seed, batch=5, k=7, f=2, t=1, s=1, scale=3.0):
    rng = np.random.default_rng(seed)
    center = rng.normal(size=(batch, 3)) * 10
    positions = center[:, None, :] + rng.normal(size=(batch, k, 3)) * scale
    features = rng.normal(size=(batch, k, f))
    a = rng.normal(size=(batch, t, 3, 3))
    tensors = a + np.swapaxes(a, -1, -2)
    center_features = rng.normal(size=(batch, s))
    mask = np.ones((batch, k))
    mask[0, -2:] = 0.0  # some padding in the first neighbourhood
    return jso3.Neighbourhood(
        jnp.asarray(center), jnp.asarray(positions), jnp.asarray(features), jnp.asarray(mask),
        jnp.asarray(tensors), jnp.asarray(center_features),
    )  # fmt: skip


def _egnn(seed=0, **kwargs):
    options = {
        "hidden": 16, "num_layers": 2, "num_scalars": 6, "num_vectors": 3, "num_tensors": 3,
        "num_input_tensors": 1, "center_features": 1, "length_scale": 3.0,
    }  # fmt: skip
    options.update(kwargs)
    return jso3.EGNN(2, rngs=nnx.Rngs(seed), **options)


def _jit(model):
    # one compiled call instead of hundreds of eager dispatches (the parameters are constants)
    return jax.jit(lambda nb: model(nb))


def _transform(nb, Q, shift):
    Q, shift = jnp.asarray(Q), jnp.asarray(shift)
    return nb._replace(
        center=nb.center @ Q.T + shift[None, :],
        positions=nb.positions @ Q.T + shift[None, None, :],
        tensors=jnp.einsum("ab,...bc,dc->...ad", Q, nb.tensors, Q),
    )


def _orthogonal(seed, proper=True):
    Q = scipy.spatial.transform.Rotation.random(random_state=seed).as_matrix()
    return Q if proper else Q @ np.diag([1.0, 1.0, -1.0])


@pytest.mark.x64
@pytest.mark.parametrize("proper", [True, False])
def test_egnn_is_e3_equivariant(proper):
    nb = _random_neighbourhood(0)
    model = _jit(_egnn())
    Q = _orthogonal(1, proper)
    shift = np.array([3.0, -7.0, 1.5])
    out = model(nb)
    moved = model(_transform(nb, Q, shift))
    assert out.scalars.dtype == jnp.float64
    # the outputs are not trivially zero or invariant, so the comparisons below have power
    assert np.min(np.linalg.norm(out.vectors, axis=-1)) > 1e-3
    assert np.max(np.abs(moved.vectors - out.vectors)) > 1e-2
    np.testing.assert_allclose(moved.scalars, out.scalars, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(moved.vectors, out.vectors @ Q.T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        moved.tensors, np.einsum("ab,...bc,dc->...ad", Q, out.tensors, Q), rtol=1e-10, atol=1e-12
    )
    # traceless symmetric tensors
    np.testing.assert_allclose(out.tensors, np.swapaxes(out.tensors, -1, -2), atol=1e-12)
    np.testing.assert_allclose(np.trace(out.tensors, axis1=-2, axis2=-1), 0.0, atol=1e-12)


@pytest.mark.x64
def test_egnn_permutation_invariance_and_padding():
    nb = _random_neighbourhood(2)
    module = _egnn(seed=3)
    model = _jit(module)
    out = model(nb)
    perm = np.random.default_rng(4).permutation(nb.positions.shape[1])
    permuted = nb._replace(
        positions=nb.positions[:, perm], features=nb.features[:, perm], mask=nb.mask[:, perm]
    )
    for a, b in zip(model(permuted), out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)

    # padding: the first neighbourhood has 5 real neighbours; dropping the 2 padded slots, or filling
    # them with NaN, or adding 4 more padded slots, changes nothing
    first = jax.tree.map(lambda x: x[:1], nb)
    trimmed = first._replace(
        positions=first.positions[:, :5], features=first.features[:, :5], mask=first.mask[:, :5]
    )
    nan_pad = first._replace(
        positions=first.positions.at[:, 5:].set(jnp.nan),
        features=first.features.at[:, 5:].set(1e30),
    )
    extra = first._replace(
        positions=jnp.concatenate([first.positions, 1e3 * jnp.ones((1, 4, 3))], axis=1),
        features=jnp.concatenate([first.features, -5.0 * jnp.ones((1, 4, 2))], axis=1),
        mask=jnp.concatenate([first.mask, jnp.zeros((1, 4))], axis=1),
    )
    reference = model(trimmed)
    for variant in (first, nan_pad, extra):
        for a, b in zip(model(variant), reference, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # a padded slot is not the same as a real neighbour there
    unmasked = first._replace(mask=jnp.ones_like(first.mask))
    assert np.max(np.abs(model(unmasked).vectors - reference.vectors)) > 1e-4
    # gradients with NaN padding stay finite
    grad = jax.jit(jax.grad(lambda p: jnp.sum(module(nan_pad._replace(positions=p)).vectors ** 2)))(
        nan_pad.positions
    )
    assert np.all(np.isfinite(grad[:, :5]))
    assert np.any(grad[:, :5] != 0)
    # no neighbour at all: finite, zero vectors
    lonely = model(first._replace(mask=jnp.zeros_like(first.mask)))
    assert np.all(np.isfinite(lonely.scalars))
    np.testing.assert_array_equal(lonely.vectors, 0.0)


@pytest.mark.x64
def test_conditional_score_is_equivariant_and_jit_vmap_friendly():
    nb = _random_neighbourhood(5)
    model = jso3.ConditionalScoreNet(_egnn(seed=6), hidden=16, depth=2, rngs=nnx.Rngs(7))
    R = jso3.sample_uniform(jax.random.key(8), (5,))
    sigma = jnp.array([0.1, 0.3, 0.5, 1.0, 2.0])
    score = jax.jit(lambda R, sigma, nb: model(R, sigma, nb))
    s = score(R, sigma, nb)
    assert s.shape == (5, 3)
    assert s.dtype == jnp.float64
    Q = _orthogonal(9)
    moved = score(jnp.asarray(Q) @ R, sigma, _transform(nb, Q, np.array([1.0, 2.0, -3.0])))
    assert np.max(np.abs(moved - s)) > 1e-3
    np.testing.assert_allclose(moved, s @ Q.T, rtol=1e-9, atol=1e-12)
    # many rotations per neighbourhood through a precomputed embedding, and jit
    embedding = jax.jit(lambda nb: model.embed(nb))(nb)
    R_many = jso3.sample_uniform(jax.random.key(10), (4, 5))
    many = jax.jit(lambda R: model.score(R, 0.4, embedding))(R_many)
    np.testing.assert_allclose(many[2], score(R_many[2], jnp.full((5,), 0.4), nb), rtol=1e-12)
    sde = jax.jit(
        lambda key: jso3.sample_conditional(key, model, nb, (2,), num_steps=4, sampler="sde")
    )(jax.random.key(11))
    assert sde.shape == (2, 5, 3, 3)
    np.testing.assert_allclose(
        np.swapaxes(sde, -1, -2) @ sde, np.broadcast_to(np.eye(3), sde.shape), atol=1e-10
    )


def _min_image(d, box):
    return d - box * np.round(d / box)


@pytest.mark.parametrize("box_size", [None, 10.0])
def test_knn_neighbourhoods_against_brute_force(box_size):
    rng = np.random.default_rng(12)
    points = rng.uniform(0.0, 10.0, size=(300, 3)).astype(np.float32)
    features = rng.normal(size=(300, 2)).astype(np.float32)
    centers_idx = np.arange(0, 300, 7)
    nb = jso3.knn_neighbourhoods(
        points[centers_idx], points, features, 6, radius=1.5, box_size=box_size,
        center_indices=centers_idx, batch_size=16,
    )  # fmt: skip
    for row, i in enumerate(centers_idx):
        d = points - points[i]
        if box_size is not None:
            d = _min_image(d, box_size)
        dist = np.linalg.norm(d, axis=-1)
        dist[i] = np.inf
        order = np.argsort(dist)[:6]
        got = np.linalg.norm(np.asarray(nb.positions[row]) - points[i], axis=-1)
        np.testing.assert_allclose(got, dist[order], rtol=1e-5)
        np.testing.assert_allclose(nb.features[row], features[order], rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(nb.mask[row]) > 0, dist[order] <= 1.5)
    if box_size is not None:
        assert np.max(np.abs(np.asarray(nb.positions) - np.asarray(nb.center)[:, None])) <= 5.0


def test_bad_inputs_raise():
    nb = _random_neighbourhood(13)
    nb32 = jax.tree.map(lambda x: x.astype(jnp.float32), nb)
    egnn = _egnn()  # 2 features, 1 input tensor, 1 centre feature
    with pytest.raises(ValueError, match="2 features"):
        egnn(nb32._replace(features=jnp.zeros((*nb32.features.shape[:-1], 3))))
    with pytest.raises(ValueError, match="input tensors"):
        egnn(nb32._replace(tensors=jnp.concatenate([nb32.tensors, nb32.tensors], axis=1)))
    with pytest.raises(ValueError, match="input tensors"):
        egnn(nb32._replace(tensors=None))
    with pytest.raises(ValueError, match="centre features"):
        egnn(nb32._replace(center_features=None))
    with pytest.raises(ValueError, match="positions"):
        egnn(nb32._replace(positions=nb32.positions[:, :, :2]))
    with pytest.raises(ValueError, match="mask"):
        egnn(nb32._replace(mask=nb32.mask[:, :3]))
    with pytest.raises(TypeError, match="Neighbourhood"):
        egnn((nb32.center, nb32.positions))
    with pytest.raises(ValueError, match="hidden"):
        jso3.EGNN(2, hidden=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="length_scale"):
        jso3.EGNN(2, length_scale=-1.0, rngs=nnx.Rngs(0))
    points = jnp.zeros((10, 3))
    with pytest.raises(ValueError, match="`k`"):
        jso3.knn_neighbourhoods(
            points, points, jnp.zeros((10, 1)), 10, center_indices=jnp.arange(10)
        )
    with pytest.raises(ValueError, match="features"):
        jso3.knn_neighbourhoods(points, points, jnp.zeros((9, 1)), 3)
    with pytest.raises(ValueError, match="radius"):
        jso3.knn_neighbourhoods(points, points, jnp.zeros((10, 1)), 3, radius=0.0)
    with pytest.raises(TypeError, match="EGNN"):
        jso3.ConditionalScoreNet(object(), rngs=nnx.Rngs(0))
    model = jso3.ConditionalScoreNet(egnn, hidden=8, depth=1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="context"):
        model(jnp.eye(3), 0.5, None)
    R = jso3.sample_uniform(jax.random.key(0), (5,))
    with pytest.raises(ValueError, match="leading dimension N = 5"):
        jso3.train_dsm(
            jax.random.key(0), model, R, context=jax.tree.map(lambda x: x[:4], nb32),
            sigma_min=0.1, sigma_max=1.0, num_steps=1,
        )  # fmt: skip
