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
