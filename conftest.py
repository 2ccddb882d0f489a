"""Test configuration shared by every package of the federation.

This one file serves two ways of running tests:

* in the development workspace (`pytest packages/jflows/tests`), pytest finds it at the repo root;
* `nox -s tests` copies it next to a package's `tests/` folder in a scratch directory, so that the
  package is tested from its installed wheel, outside the source tree, with the same configuration.

What it provides:

* 8 fake CPU devices (`--xla_force_host_platform_device_count=8`), set before JAX is imported, so that
  distributed code can be compared with the single-device result on any machine;
* float64 on demand: mark a test `@pytest.mark.x64` (or use the `x64` fixture) to run it with
  `jax_enable_x64`; everything else runs in JAX's default float32;
* `jax_numpy_rank_promotion="raise"`, so that silent broadcasting bugs fail loudly;
* markers `slow` (deselected by default, run by `nox -s slow`) and `x64`;
* warnings raised as errors, except third-party ones listed below.
"""

from __future__ import annotations

import os

_DEVICE_FLAG = "--xla_force_host_platform_device_count"
if _DEVICE_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICE_FLAG}=8".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

try:  # the lint session tests the repository tooling without JAX installed
    import jax
except ImportError:  # pragma: no cover
    jax = None

# Third-party warnings we cannot act on; our own code must stay warning-free.
_IGNORED_WARNINGS = [
    # matplotlib and friends may warn about missing fonts/caches on a fresh machine
    "ignore::UserWarning:matplotlib.*",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: heavy test, deselected by default (run: nox -s slow)")
    config.addinivalue_line("markers", "x64: run the test with jax_enable_x64 (float64)")
    config.addinivalue_line("filterwarnings", "error")
    for line in _IGNORED_WARNINGS:
        config.addinivalue_line("filterwarnings", line)
    if jax is not None:
        jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `slow` tests run only when asked for with -m (nox -s slow passes `-m slow`).
    if config.getoption("-m"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with `nox -s slow` or `pytest -m slow`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture
def x64():
    """Run the test body with float64 enabled; restores the previous setting afterwards."""
    if jax is None:
        pytest.skip("JAX is not installed")
    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True)
def _x64_marker(request: pytest.FixtureRequest):
    if request.node.get_closest_marker("x64") is None:
        yield
        return
    if jax is None:
        pytest.skip("JAX is not installed")
    with jax.enable_x64(True):
        yield


@pytest.fixture
def n_devices() -> int:
    """Number of (fake) devices JAX sees; distributed tests skip when fewer than 8."""
    if jax is None:
        pytest.skip("JAX is not installed")
    return jax.device_count()
