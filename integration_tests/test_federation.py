"""The seven packages installed side by side, as a downstream pipeline gets them.

Composition tests of several packages live next to this file (one file per pipeline); this one checks
the federation itself: every wheel's declared sibling ranges are met by the siblings installed with it,
and every public name of every package resolves.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md

import pytest
from packaging.requirements import Requirement

FEDERATION = {
    "jpm-core": "jpm_core",
    "jflows": "jflows",
    "jscore": "jscore",
    "jso3": "jso3",
    "jpm-hybrid": "jpm_hybrid",
    "jlens": "jlens",
    "jinfer": "jinfer",
}


@pytest.mark.parametrize("dist", FEDERATION)
def test_declared_sibling_ranges_are_met(dist):
    for line in md.requires(dist) or []:
        req = Requirement(line)
        if req.name in FEDERATION:
            installed = md.version(req.name)
            assert req.specifier.contains(installed), (
                f"{dist} declares {req}, but {req.name} {installed} is installed beside it"
            )


@pytest.mark.parametrize(("dist", "module"), FEDERATION.items())
def test_public_api_resolves(dist, module):
    mod = importlib.import_module(module)
    assert mod.__version__ == md.version(dist)
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert not missing, f"{module}.__all__ names {missing}, which it does not define"
