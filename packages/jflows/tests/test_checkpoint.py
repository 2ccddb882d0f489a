"""The federation checkpoint format: round trips bit-for-bit, every refusal, atomic writes."""

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import optax
import pytest
from flax import nnx, serialization

import jflows
from jflows import (
    ConditionalFlow,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    write_checkpoint,
)

IDS = {"package": "jscore", "package_version": "0.2.1", "kind": "jscore.ScoreNet"}


class Pair(NamedTuple):
    a: jax.Array
    b: dict


def _tree(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
        "half": jnp.asarray(rng.normal(size=(5,)), jnp.bfloat16),
        "count": jnp.asarray(7 + seed, jnp.int32),
        "flag": jnp.asarray([True, False]),
        "nested": Pair(
            jnp.asarray(rng.normal(size=(2,)), jnp.float16), {"u8": jnp.arange(4, dtype=jnp.uint8)}
        ),
        "list": [jnp.asarray(rng.normal(size=(1, 2)), jnp.float32)],
    }


def _same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert isinstance(v, jax.Array)
        assert u.dtype == v.dtype
        assert u.shape == v.shape
        # bit-for-bit, NaN payloads included
        assert np.asarray(u).tobytes() == np.asarray(v).tobytes()


def test_round_trip_is_bit_for_bit_with_metadata(tmp_path):
    tree = _tree(0)
    tree["w"] = tree["w"].at[0, 0].set(jnp.nan).at[0, 1].set(-jnp.inf).at[0, 2].set(-0.0)
    meta = {
        "epoch": 3,
        "lr": 1e-3,
        "name": "run",
        "shape": (2, 3),
        "none": None,
        "d": {"x": [True]},
    }
    out = write_checkpoint(tmp_path / "c.msgpack", tree, metadata=meta, **IDS)
    assert out == tmp_path / "c.msgpack"
    assert [p.name for p in tmp_path.iterdir()] == ["c.msgpack"]  # no temporary file left
    restored, meta2 = read_checkpoint(out, _tree(1), **IDS)  # a template with other values
    _same(tree, restored)
    assert meta2 == {**meta, "shape": [2, 3]}  # JSON-like: tuples come back as lists
    # the file is the documented msgpack map, readable without jflows
    with open(out, "rb") as f:
        raw = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
    assert raw["format"] == "jpm-federation/checkpoint"
    assert raw["format_version"] == 1
    assert (raw["package"], raw["package_version"], raw["kind"]) == (
        "jscore",
        "0.2.1",
        "jscore.ScoreNet",
    )
    assert list(raw["leaves"]) == [
        jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def test_checkpoint_info_reads_the_header_without_a_template(tmp_path):
    tree = _tree(0)
    out = write_checkpoint(tmp_path / "c.msgpack", tree, metadata={"arch": {"width": 3}}, **IDS)
    info = jflows.checkpoint_info(out)
    assert (info["package"], info["package_version"], info["kind"]) == tuple(IDS.values())
    assert info["format_version"] == 1
    assert info["metadata"] == {"arch": {"width": 3}}
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    assert info["leaves"] == {
        jax.tree_util.keystr(p): (tuple(np.shape(v)), str(np.asarray(v).dtype)) for p, v in flat
    }
    (tmp_path / "junk").write_bytes(b"not msgpack at all")
    with pytest.raises(ValueError, match="junk"):
        jflows.checkpoint_info(tmp_path / "junk")


def test_optax_state_prng_keys_numpy_and_scalar_leaves(tmp_path):
    params = {"w": jnp.ones((3,)), "b": jnp.zeros(())}
    opt = optax.adam(1e-2)
    state = opt.init(params)
    _, state = opt.update(jax.tree.map(lambda p: p + 0.5, params), state, params)
    tree = {
        "opt": state,
        "key": jax.random.split(jax.random.key(3), 2),
        "np": np.arange(3.0),
        "n": 5,
    }
    path = write_checkpoint(tmp_path / "s", tree, **IDS)
    template = {"opt": opt.init(params), "key": jax.random.split(jax.random.key(0), 2)}
    template |= {"np": np.zeros(3), "n": 0}
    restored, meta = read_checkpoint(path, template, **IDS)
    assert meta == {}
    assert int(restored["opt"][0].count) == 1
    for u, v in zip(jax.tree.leaves(state), jax.tree.leaves(restored["opt"]), strict=True):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(
        jax.random.key_data(restored["key"]), jax.random.key_data(tree["key"])
    )
    assert isinstance(restored["np"], np.ndarray)
    assert restored["np"].flags.writeable
    np.testing.assert_array_equal(restored["np"], tree["np"])
    assert restored["n"] == 5
    assert type(restored["n"]) is int
    # a ShapeDtypeStruct template (no values at all)
    abstract = jax.eval_shape(lambda: template)
    again, _ = read_checkpoint(path, {**abstract, "np": np.zeros(3), "n": 0}, **IDS)
    np.testing.assert_array_equal(again["opt"][0].mu["w"], state[0].mu["w"])


def test_sharded_template_gets_the_sharding(tmp_path):
    mesh = jax.make_mesh((8,), ("d",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
    tree = {"x": jnp.arange(16.0)}
    path = write_checkpoint(tmp_path / "s", tree, **IDS)
    template = {"x": jax.device_put(jnp.zeros(16), sharding)}
    restored, _ = read_checkpoint(path, template, **IDS)
    assert restored["x"].sharding == sharding
    np.testing.assert_array_equal(restored["x"], tree["x"])


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "nope", _tree(), **IDS)


def _raw(path, **changes):
    blob = {
        "format": "jpm-federation/checkpoint",
        "format_version": 1,
        **IDS,
        "metadata": {},
        "leaves": {"['a']": np.zeros(2, np.float32)},
        "prng_keys": {},
    }
    blob.update(changes)
    blob = {k: v for k, v in blob.items() if v is not None}
    path.write_bytes(serialization.msgpack_serialize(blob))
    return path


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"format": "something-else"}, "field 'format' is 'something-else'"),
        ({"format": None}, "no 'format' field"),
        ({"format_version": 2}, "'format_version' is 2, newer than the supported 1"),
        ({"format_version": "1"}, "'format_version'"),
        ({"package": "jso3"}, "written by jso3, expected jscore"),
        ({"kind": "jscore.Other"}, "field 'kind' is 'jscore.Other', expected 'jscore.ScoreNet'"),
        (
            {"package_version": "0.3.0"},
            "'package_version' is '0.3.0', incompatible with jscore 0.2.1",
        ),
        ({"package_version": "0.1.9"}, "'package_version' is '0.1.9', incompatible"),
        ({"package_version": "1.2.1"}, "'package_version' is '1.2.1', incompatible"),
        ({"package_version": "garbage"}, "'package_version' is 'garbage', not a version"),
        ({"leaves": {}}, r"lacks the template's leaf \['a'\]"),
        (
            {"leaves": {"['a']": np.zeros(2, np.float32), "['z']": np.zeros(1)}},
            r"has \['z'\], which the template lacks",
        ),
        (
            {"leaves": {"['a']": np.zeros(3, np.float32)}},
            r"leaf \['a'\] is float32\[3\] in the file, float32\[2\]",
        ),
        (
            {"leaves": {"['a']": np.zeros(2, np.int32)}},
            r"leaf \['a'\] is int32\[2\] in the file, float32\[2\]",
        ),
        ({"leaves": None}, "field 'leaves' is missing"),
    ],
)
def test_refusals_name_the_file_and_the_field(tmp_path, changes, match):
    path = _raw(tmp_path / "bad.msgpack", **changes)
    with pytest.raises(ValueError, match=match) as info:
        read_checkpoint(path, {"a": jnp.zeros(2, jnp.float32)}, **IDS)
    assert "bad.msgpack" in str(info.value)
    ok = _raw(tmp_path / "ok.msgpack")  # and the unchanged file reads
    restored, _ = read_checkpoint(ok, {"a": jnp.ones(2, jnp.float32)}, **IDS)
    np.testing.assert_array_equal(restored["a"], np.zeros(2, np.float32))


def test_compatible_versions_are_read(tmp_path):
    for written, reader in [
        ("0.2.0", "0.2.7"),
        ("0.2.3.dev1", "0.2.0"),
        ("1.4.0", "1.0.2"),
        ("2.0", "2.1.0rc1"),
    ]:
        path = _raw(tmp_path / "v", package_version=written)
        read_checkpoint(
            path, {"a": jnp.zeros(2, jnp.float32)}, **{**IDS, "package_version": reader}
        )


def test_random_corrupt_and_old_jflows_files_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    template = {"a": jnp.zeros(2, jnp.float32)}
    for i in range(20):
        path = tmp_path / f"random{i}"
        path.write_bytes(rng.bytes(int(rng.integers(0, 200))))
        with pytest.raises(ValueError, match=f"random{i}"):
            read_checkpoint(path, template, **IDS)
    good = write_checkpoint(tmp_path / "good", {"a": jnp.arange(2.0)}, **IDS)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"truncated.*does not decode as msgpack"):
        read_checkpoint(truncated, template, **IDS)
    old = tmp_path / "old.msgpack"  # what jflows 0.1's `save` wrote
    old.write_bytes(
        serialization.msgpack_serialize(
            {"format": "jflows-state-v1", "version": "0.1.0", "arrays": {}}
        )
    )
    with pytest.raises(ValueError, match=r"'jflows-state-v1', the format of jflows 0\.1"):
        read_checkpoint(old, template, **IDS)
    with pytest.raises(ValueError, match="jflows-state-v1"):
        load_checkpoint(old, _flow())


def test_write_checks_its_arguments(tmp_path):
    tree = {"a": jnp.zeros(2)}
    with pytest.raises(ValueError, match="package must be a non-empty string"):
        write_checkpoint(tmp_path / "x", tree, **{**IDS, "package": ""})
    with pytest.raises(ValueError, match="package_version must be a version string"):
        write_checkpoint(tmp_path / "x", tree, **{**IDS, "package_version": "latest"})
    with pytest.raises(
        ValueError, match=r"metadata\['f'\]: builtin_function_or_method is not JSON-like"
    ):
        write_checkpoint(tmp_path / "x", tree, metadata={"f": print}, **IDS)
    with pytest.raises(TypeError, match=r"tree leaf \['s'\]"):
        write_checkpoint(tmp_path / "x", {"s": "text"}, **IDS)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "c", {"a": jnp.arange(3.0)}, **IDS)
    before = path.read_bytes()
    # a bad leaf: refused before any file is opened
    with pytest.raises(TypeError):
        write_checkpoint(path, {"a": jnp.arange(3.0), "s": np.array(["x"], object)}, **IDS)
    assert path.read_bytes() == before

    # a failure after the temporary file was written (a full disk at fsync, a kill before the rename)
    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(path, {"a": jnp.arange(3.0) + 1}, **IDS)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # the temporary file was removed
    restored, _ = read_checkpoint(path, {"a": jnp.zeros(3)}, **IDS)
    np.testing.assert_array_equal(restored["a"], jnp.arange(3.0))


def _flow(seed=0, **kwargs):
    kwargs = {"hidden": (8,), "num_layers": 2, "init_scale": 1.0, **kwargs}
    return ConditionalFlow(
        2,
        1,
        rngs=nnx.Rngs(seed),
        loc_scale=(jnp.array([0.5, -1.0]), jnp.array([2.0, 0.3])),
        **kwargs,
    )


def test_flow_checkpoint_round_trip_and_the_template_is_not_modified(tmp_path):
    flow = _flow(1)
    path = save_checkpoint(tmp_path / "flow.msgpack", flow, metadata={"sims": 100})
    template = _flow(2)
    before = [np.array(a) for a in jax.tree.leaves(nnx.state(template))]
    restored = load_checkpoint(path, template)
    after = jax.tree.leaves(nnx.state(template))
    for u, v in zip(before, after, strict=True):
        np.testing.assert_array_equal(u, v)  # pure: the template keeps its own values
    assert restored is not template
    _same(nnx.state(flow), nnx.state(restored))
    theta = jnp.array([[0.1, -0.9], [1.0, -1.2]])
    x = jnp.array([[0.3], [-0.2]])
    np.testing.assert_array_equal(flow.log_prob(theta, x), restored.log_prob(theta, x))
    # the file is a federation checkpoint of kind jflows.ConditionalFlow, with the metadata
    pure = nnx.to_pure_dict(nnx.state(template))
    _, meta = read_checkpoint(
        path,
        pure,
        package="jflows",
        package_version=jflows.__version__,
        kind="jflows.ConditionalFlow",
    )
    assert meta == {"sims": 100}
    with pytest.raises(ValueError, match="written by jflows, expected jscore"):
        read_checkpoint(path, pure, **IDS)
    with pytest.raises(ValueError, match="the template lacks"):
        load_checkpoint(path, _flow(0, num_layers=1))
    with pytest.raises(
        ValueError, match=r"bias'\] is float32\[8\] in the file, float32\[6\] in the template"
    ):
        load_checkpoint(path, _flow(0, hidden=(6,)))
    foreign = write_checkpoint(tmp_path / "net", {"a": jnp.zeros(2)}, **IDS)
    with pytest.raises(ValueError, match="written by jscore, expected jflows"):
        load_checkpoint(foreign, template)
