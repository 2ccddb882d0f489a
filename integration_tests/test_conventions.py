"""The federation's conventions (docs/contributing.md), checked by machine over every public API.

Each test walks the `__all__` of every installed package, so a new public name that breaks a
convention fails here without anyone having to remember to write a test for it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest

MODULES = ["jpm_core", "jflows", "jscore", "jso3", "jpm_hybrid", "jlens", "jinfer"]
KEY_NAMES = {"key", "rng_key", "prng_key", "rng"}


def _public(module_name):
    mod = importlib.import_module(module_name)
    for name in mod.__all__:
        yield name, getattr(mod, name)


def _callables(module_name):
    """(qualified name, callable) for every public function, class constructor and public method."""
    for name, obj in _public(module_name):
        if inspect.isclass(obj):
            yield f"{module_name}.{name}", obj
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if inspect.isfunction(member):
                    yield f"{module_name}.{name}.{attr}", member
        elif callable(obj):
            yield f"{module_name}.{name}", obj


def _positional(fn):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    return params


@pytest.mark.parametrize("module_name", MODULES)
def test_prng_key_comes_first(module_name):
    """A public callable that takes a PRNG key takes it first, positionally (blackjax, numpyro)."""
    offenders = []
    for qualname, fn in _callables(module_name):
        params = _positional(fn)
        if not params:
            continue
        names = [p.name for p in params]
        keys = [n for n in names if n in KEY_NAMES]
        if not keys:
            continue
        first = params[0]
        if first.name not in KEY_NAMES or first.kind == first.KEYWORD_ONLY:
            offenders.append(f"{qualname}({', '.join(names)})")
    assert not offenders, "the PRNG key must be the first positional argument:\n" + "\n".join(
        offenders
    )


@pytest.mark.parametrize("module_name", MODULES)
def test_configuration_objects_are_frozen_dataclasses(module_name):
    """Every public `*Config` is a frozen (hence hashable, jit-static) dataclass."""
    configs = [
        (n, o) for n, o in _public(module_name) if inspect.isclass(o) and n.endswith("Config")
    ]
    for name, cls in configs:
        assert dataclasses.is_dataclass(cls), f"{module_name}.{name} is not a dataclass"
        assert cls.__dataclass_params__.frozen, f"{module_name}.{name} is not frozen"
        try:
            default = cls()
        except TypeError:
            continue  # no defaults for every field: nothing more to check without arguments
        hash(default)  # static under jit


def test_one_c2st_in_the_federation():
    """The two-sample classifier test lives in jflows only; others call it."""
    owners = [m for m in MODULES if "c2st" in importlib.import_module(m).__all__]
    assert owners == ["jflows"], f"c2st is exported by {owners}; it must be jflows' alone"


# ------------------------------------------------------------------------------------ checkpoints
# Every checkpoint writer of the federation writes the one format of `jflows.write_checkpoint` and
# records what wrote it; every reader refuses a file that another package, or another kind of
# object, wrote. The writers and readers are listed here by hand: a new one belongs in these tables
# (find them with `grep -rn write_checkpoint packages/*/src`).

FORMAT = "jpm-federation/checkpoint"


def _tiny_models():
    """Fresh, tiny instances of every checkpointed kind of object (and the data to train them)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import jflows
    import jinfer
    import jpm_hybrid
    import jscore
    import jso3

    rng = np.random.default_rng(0)
    return {
        "flow": jflows.ConditionalFlow(2, rngs=nnx.Rngs(0), num_layers=2, hidden=(8,)),
        "flow_data": rng.uniform(0.05, 0.95, (64, 2)).astype(np.float32),
        "linear": nnx.Linear(2, 1, rngs=nnx.Rngs(0)),
        "linear_data": {
            "x": rng.normal(size=(64, 2)).astype(np.float32),
            "y": rng.normal(size=(64, 1)).astype(np.float32),
        },
        "score_mlp": jscore.ScoreMLP(2, hidden_features=(8,), num_frequencies=2, rngs=nnx.Rngs(0)),
        "score_data": rng.normal(size=(64, 2)).astype(np.float32),
        "so3_net": jso3.ScoreNet(hidden=8, depth=1, num_fourier=2, rngs=nnx.Rngs(0)),
        "so3_data": jso3.sample_uniform(jax.random.key(0), (32,)),
        "tree": {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.asarray(3)},
        "spline_filter": jpm_hybrid.SplineFilter(
            jpm_hybrid.FilterConfig(n_knots=4, width=4), rngs=nnx.Rngs(0)
        ),
        "hybrid_truth": _tiny_truth(),
        "compressor": jinfer.MapCompressor(1, 2, rngs=nnx.Rngs(0), widths=(4,), hidden=4),
        "compressor_data": (
            rng.normal(size=(32, 2)).astype(np.float32),
            rng.normal(size=(32, 1, 4, 4)).astype(np.float32),
        ),
    }


def _tiny_truth():
    """A 4^3 truth run (force mesh 2x finer, 8 steps) for train_hybrid."""
    import jax

    import jpm_core as jc
    import jpm_hybrid

    cosmo, domain = jc.Cosmology(), jc.Domain(4, 32.0)
    delta = jc.linear_field(jax.random.key(0), domain, lambda k: jc.linear_power(cosmo, k))
    initial = jc.lpt(cosmo, delta, domain, 0.2)
    return jpm_hybrid.make_truth(cosmo, initial, domain, [0.6, 1.0], boost=2, steps=8)


def _mse(model, batch):
    import jax.numpy as jnp

    return jnp.mean((model(batch["x"]) - batch["y"]) ** 2)


def _train_flow(key, m, **kw):
    import jflows

    return jflows.fit(
        key, m["flow"], m["flow_data"], batch_size=32, max_epochs=2, progress=False, **kw
    )


def _train_linear(key, m, **kw):
    import jflows

    return jflows.train(
        key, m["linear"], _mse, m["linear_data"], batch_size=32, max_epochs=2, progress=False, **kw
    )


def _train_jscore(key, m, **kw):
    import jscore

    return jscore.train_dsm(
        key, m["score_mlp"], m["score_data"], num_steps=3, batch_size=16, sigma_min=0.05,
        sigma_max=1.0, progress=False, **kw,
    )  # fmt: skip


def _train_hybrid(key, m, **kw):
    import jpm_hybrid

    return jpm_hybrid.train_hybrid(
        key, m["spline_filter"], m["hybrid_truth"], num_steps=2, steps=4, progress=False, **kw
    )


def _train_compressor(key, m, **kw):
    import jinfer

    theta, maps = m["compressor_data"]
    return jinfer.train_compressor(
        key, m["compressor"], theta, maps, loss="mse", batch_size=16, max_epochs=2,
        progress=False, **kw,
    )  # fmt: skip


def _train_jso3(key, m, **kw):
    import jso3

    return jso3.train_dsm(
        key, m["so3_net"], m["so3_data"], sigma_min=0.1, sigma_max=1.0, num_steps=3, batch_size=8,
        steps_per_call=3, num_grid=64, progress=False, **kw,
    )  # fmt: skip


def _jscore_state(m):
    import jscore

    return jscore.DSMTrainer(m["score_mlp"], sigma_min=0.05, sigma_max=1.0).init()


# writer name -> (write(path, models), expected package, expected kind)
def _write_generic(path, m):
    import jflows

    jflows.write_checkpoint(
        path, m["tree"], package="jflows", package_version=jflows.__version__, kind="tests.tree"
    )


def _write_flow(path, m):
    import jflows

    jflows.save_checkpoint(path, m["flow"])


def _write_jscore_state(path, m):
    import jscore

    jscore.save_checkpoint(path, _jscore_state(m))


def _write_jso3_model(path, m):
    import jso3

    jso3.save_checkpoint(path, m["so3_net"])


def _write_spline_filter(path, m):
    import jpm_hybrid

    jpm_hybrid.save_filter(path, m["spline_filter"])


def _tiny_nuts_model(y):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def _sample_posterior(path, m):
    import jax

    import jinfer

    return jinfer.sample_posterior(
        jax.random.key(0), _tiny_nuts_model, 0.5, num_chains=2, num_warmup=4, num_samples=4,
        checkpoint=path, progress=False,
    )  # fmt: skip


def _write_compressor(path, m):
    import jinfer

    jinfer.save_compressor(path, m["compressor"])


def _key():
    import jax

    return jax.random.key(0)


WRITERS = {
    "jflows.write_checkpoint": (_write_generic, "jflows", "tests.tree"),
    "jflows.save_checkpoint": (_write_flow, "jflows", "jflows.ConditionalFlow"),
    "jflows.train(checkpoint=)": (
        lambda p, m: _train_linear(_key(), m, checkpoint=p),
        "jflows",
        "jflows.train_state",
    ),
    "jscore.save_checkpoint": (_write_jscore_state, "jscore", "jscore.DSMTrainState"),
    "jscore.train_dsm(checkpoint=)": (
        lambda p, m: _train_jscore(_key(), m, checkpoint=p),
        "jscore",
        "jscore.train_dsm",
    ),
    "jso3.save_checkpoint": (_write_jso3_model, "jso3", "jso3.ScoreNet"),
    "jso3.train_dsm(checkpoint=)": (
        lambda p, m: _train_jso3(_key(), m, checkpoint=p),
        "jso3",
        "jso3.train_dsm",
    ),
    "jpm_hybrid.save_filter": (_write_spline_filter, "jpm-hybrid", "jpm_hybrid.SplineFilter"),
    "jpm_hybrid.train_hybrid(checkpoint=)": (
        lambda p, m: _train_hybrid(_key(), m, checkpoint=p),
        "jpm-hybrid",
        "jpm_hybrid.train_hybrid",
    ),
    # (train_compressor's checkpoint= is jflows.train's, listed above)
    "jinfer.save_compressor": (_write_compressor, "jinfer", "jinfer.compressor"),
    "jinfer.sample_posterior(checkpoint=)": (
        _sample_posterior,
        "jinfer",
        "jinfer.sample_posterior",
    ),
}
MODULE_OF = {"jpm-hybrid": "jpm_hybrid"}  # distribution name -> import name, where they differ


def _read_generic(path, m):
    import jflows

    return jflows.read_checkpoint(
        path, m["tree"], package="jflows", package_version=jflows.__version__, kind="tests.tree"
    )


def _read_flow(path, m):
    import jflows

    return jflows.load_checkpoint(path, m["flow"])


def _read_jscore_state(path, m):
    import jscore

    return jscore.load_checkpoint(path, _jscore_state(m))


def _read_jso3_model(path, m):
    import jso3

    return jso3.load_checkpoint(path, m["so3_net"])


def _read_spline_filter(path, m):
    import jpm_hybrid

    return jpm_hybrid.load_filter(path, m["spline_filter"])


def _read_compressor(path, m):
    import jinfer

    return jinfer.load_compressor(path, m["compressor"])


# reader name -> (read(path, models), the writer whose files it reads)
READERS = {
    "jflows.read_checkpoint": (_read_generic, "jflows.write_checkpoint"),
    "jflows.load_checkpoint": (_read_flow, "jflows.save_checkpoint"),
    "jflows.train(checkpoint=)": (
        lambda p, m: _train_linear(_key(), m, checkpoint=p),
        "jflows.train(checkpoint=)",
    ),
    "jscore.load_checkpoint": (_read_jscore_state, "jscore.save_checkpoint"),
    "jscore.train_dsm(checkpoint=)": (
        lambda p, m: _train_jscore(_key(), m, checkpoint=p),
        "jscore.train_dsm(checkpoint=)",
    ),
    "jso3.load_checkpoint": (_read_jso3_model, "jso3.save_checkpoint"),
    "jso3.train_dsm(checkpoint=)": (
        lambda p, m: _train_jso3(_key(), m, checkpoint=p),
        "jso3.train_dsm(checkpoint=)",
    ),
    "jpm_hybrid.load_filter": (_read_spline_filter, "jpm_hybrid.save_filter"),
    "jpm_hybrid.train_hybrid(checkpoint=)": (
        lambda p, m: _train_hybrid(_key(), m, checkpoint=p),
        "jpm_hybrid.train_hybrid(checkpoint=)",
    ),
    "jinfer.load_compressor": (_read_compressor, "jinfer.save_compressor"),
    "jinfer.sample_posterior(checkpoint=)": (
        _sample_posterior,
        "jinfer.sample_posterior(checkpoint=)",
    ),
}


@pytest.fixture(scope="module")
def tiny_models():
    return _tiny_models()


@pytest.fixture(scope="module")
def checkpoint_files(tiny_models, tmp_path_factory):
    """One file per writer, written once for the module."""
    folder = tmp_path_factory.mktemp("checkpoints")
    files = {}
    for i, (name, (write, _, _)) in enumerate(WRITERS.items()):
        files[name] = folder / f"writer{i}.msgpack"
        write(files[name], tiny_models)
    return files


def _raw_header(path):
    from flax import serialization

    blob = serialization.msgpack_restore(path.read_bytes())
    return {
        k: blob.get(k) for k in ("format", "format_version", "package", "package_version", "kind")
    }


@pytest.mark.parametrize("writer", WRITERS)
def test_checkpoint_writers_record_format_and_version(writer, checkpoint_files):
    """Every writer's file is a federation checkpoint naming its format, version, package and kind."""
    _, package, kind = WRITERS[writer]
    header = _raw_header(checkpoint_files[writer])
    version = importlib.import_module(MODULE_OF.get(package, package)).__version__
    assert header == {
        "format": FORMAT,
        "format_version": header["format_version"],
        "package": package,
        "package_version": version,
        "kind": kind,
    }, f"{writer} wrote the header {header}"
    fv = header["format_version"]
    assert isinstance(fv, int), (writer, fv)
    assert not isinstance(fv, bool), (writer, fv)
    assert fv >= 1, (writer, fv)


@pytest.mark.parametrize("reader", READERS)
def test_checkpoint_readers_read_their_own_files(reader, tiny_models, checkpoint_files):
    read, own = READERS[reader]
    read(checkpoint_files[own], tiny_models)  # no error


@pytest.mark.parametrize(
    ("reader", "writer"),
    [(r, w) for r in READERS for w in WRITERS if w != READERS[r][1]],
)
def test_checkpoint_readers_refuse_other_writers_files(
    reader, writer, tiny_models, checkpoint_files
):
    """A file of another package, or of another kind of the same package, is refused with a
    `ValueError` naming the file and the field that differs."""
    read, _ = READERS[reader]
    path = checkpoint_files[writer]
    with pytest.raises(ValueError, match=r"field '(package|kind)'") as err:
        read(path, tiny_models)
    assert str(path) in str(err.value), f"{reader}'s error does not name the file: {err.value}"


@pytest.mark.parametrize("reader", READERS)
def test_checkpoint_readers_refuse_foreign_formats(reader, tiny_models, tmp_path):
    """A msgpack file that is not a federation checkpoint, and random bytes, are refused clearly."""
    from flax import serialization

    read, _ = READERS[reader]
    foreign = tmp_path / "foreign.msgpack"
    foreign.write_bytes(serialization.msgpack_serialize({"format": "other/format", "leaves": {}}))
    with pytest.raises(ValueError, match="field 'format'"):
        read(foreign, tiny_models)
    garbage = tmp_path / "garbage.msgpack"
    garbage.write_bytes(b"\xc1 not msgpack at all")
    with pytest.raises(ValueError, match="not a jpm-federation/checkpoint file"):
        read(garbage, tiny_models)


# -------------------------------------------------------------------------------- trainer purity
# `train_*(key, model, data, ...) -> (model, history)` is a pure function: the same key and inputs
# give bit-for-bit the same trained model and history, and the model passed in is left unchanged.

TRAINERS = {
    "jflows.fit": (_train_flow, "flow"),
    "jflows.train": (_train_linear, "linear"),
    "jscore.train_dsm": (_train_jscore, "score_mlp"),
    "jso3.train_dsm": (_train_jso3, "so3_net"),
    "jpm_hybrid.train_hybrid": (_train_hybrid, "spline_filter"),
    "jinfer.train_compressor": (_train_compressor, "compressor"),
}


def _leaves(module):
    import jax
    import numpy as np
    from flax import nnx

    return [np.array(leaf) for leaf in jax.tree.leaves(nnx.state(module))]


def _same(a, b):
    import numpy as np

    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True)
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("trainer", TRAINERS)
def test_trainers_are_pure(trainer):
    import jax
    import numpy as np

    train, model_name = TRAINERS[trainer]
    models = _tiny_models()
    model = models[model_name]
    before = _leaves(model)

    first, history_1 = train(jax.random.key(7), models)
    assert _same(_leaves(model), before), f"{trainer} modified the model passed in"
    second, history_2 = train(jax.random.key(7), models)
    assert _same(_leaves(model), before), f"{trainer} modified the model passed in"

    assert first is not model, f"{trainer} returned its input model"
    assert second is not model, f"{trainer} returned its input model"
    assert type(first) is type(model), f"{trainer} returned a {type(first).__name__}"
    assert _same(_leaves(first), _leaves(second)), (
        f"{trainer} is not deterministic: two calls with the same key and inputs differ"
    )
    assert not _same(_leaves(first), before), f"{trainer} returned the untrained parameters"
    assert history_1.keys() == history_2.keys(), (sorted(history_1), sorted(history_2))
    assert "loss" in history_1, sorted(history_1)
    for name in history_1:
        np.testing.assert_array_equal(
            np.asarray(history_1[name]), np.asarray(history_2[name]), err_msg=f"{trainer}: {name}"
        )
