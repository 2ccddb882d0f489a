"""The one entry point for every task of the monorepo.

    python -m nox -s demo            # end-to-end run on CPU with defaults (no data download)
    python -m nox -s tests           # every package from its built wheel, then integration_tests/
    python -m nox -s "tests(jflows)" # one package alone (also: tests(integration))
    python -m nox -s lint            # ruff + the layering law (import-linter) + its self-test
    python -m nox -s docs            # strict documentation build into site/
    python -m nox -s slow            # tests marked `slow`
    python -m nox -s bench           # benchmarks (never run by CI); writes results under .bench/

`tests` tests each package the way a user gets it: it builds the package's wheel and those of the
siblings it declares, installs them into a fresh virtual environment with only the declared
dependencies (plus the package's `test` dependency group), copies the package's `tests/` folder and the
shared `conftest.py` into a scratch directory, and runs pytest there, outside the source tree.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES_DIR = ROOT / "packages"

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "tests"]
nox.options.error_on_external_run = True

# uv must never try to download an interpreter (none can be fetched here, and a user's machine should
# use the Python it has); JAX runs on the CPU with 8 fake devices for the distributed tests.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
TEST_ENV = {
    "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
    "JAX_PLATFORMS": "cpu",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def _pyproject(dist: str) -> dict:
    return tomllib.loads((PACKAGES_DIR / dist / "pyproject.toml").read_text())


PACKAGES = sorted(p.name for p in PACKAGES_DIR.iterdir() if (p / "pyproject.toml").is_file())
# Bottom layer first: the order in which `tests` runs them, so a broken foundation fails early.
LAYER_ORDER = ["jpm-core", "jflows", "jscore", "jso3", "jpm-hybrid", "jlens", "jinfer"]
PACKAGES = [p for p in LAYER_ORDER if p in PACKAGES] + [p for p in PACKAGES if p not in LAYER_ORDER]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def sibling_closure(dist: str) -> list[str]:
    """`dist` and every sibling it declares, transitively, bottom layer first."""
    seen: list[str] = []

    def visit(name: str) -> None:
        for req in _pyproject(name)["project"].get("dependencies", []):
            dep = _name(req)
            if dep in PACKAGES and dep not in seen:
                visit(dep)
        if name not in seen:
            seen.append(name)

    visit(dist)
    return seen


def test_group(dist: str) -> list[str]:
    return list(_pyproject(dist).get("dependency-groups", {}).get("test", []))


def build_wheels(session: nox.Session, dists: list[str], out: Path) -> list[str]:
    """Build one wheel per distribution with `uv build` (isolated build envs, hatchling)."""
    wheels = []
    for dist in dists:
        session.run(
            "uv",
            "build",
            "--quiet",
            "--wheel",
            "--out-dir",
            str(out),
            str(PACKAGES_DIR / dist),
            external=True,
        )
        stem = dist.replace("-", "_")
        version = _version(dist)
        wheels.append(str(out / f"{stem}-{version}-py3-none-any.whl"))
    return wheels


def _version(dist: str) -> str:
    import_name = dist.replace("-", "_")
    init = (PACKAGES_DIR / dist / "src" / import_name / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', init, flags=re.M)
    if match is None:
        raise RuntimeError(f"no __version__ in packages/{dist}/src/{import_name}/__init__.py")
    return match.group(1)


def run_pytest(
    session: nox.Session,
    test_dirs: list[Path],
    marker: str,
    extra: list[str],
    env: dict | None = None,
) -> None:
    """Copy test folders and the shared conftest into a scratch dir and run pytest there."""
    scratch = Path(tempfile.mkdtemp(prefix="jpm-tests-"))
    shutil.copy(ROOT / "conftest.py", scratch / "conftest.py")
    for src in test_dirs:
        # a folder name that can never shadow an installed package (no `jinfer/` next to the tests)
        shutil.copytree(src, scratch / "-".join(src.relative_to(ROOT).parts))
    session.chdir(scratch)
    args = ["-p", "no:cacheprovider", "-ra", "--strict-markers", "--import-mode=importlib"]
    # pytest-xdist: one worker per core (at most 4; JPM_TEST_WORKERS overrides, 0 runs in-process).
    # Most of a JAX test's time is single-threaded compilation, so two workers on CI's two cores
    # cut the wall time by about 1.4x; work stealing keeps the long tests from queueing at the end.
    workers = os.environ.get("JPM_TEST_WORKERS", str(min(4, os.cpu_count() or 1)))
    if workers != "0":
        args += ["-n", workers, "--dist", "worksteal"]
    args += ["-m", marker, *extra, *session.posargs]
    try:
        session.run("pytest", *args, env={**TEST_ENV, **(env or {})})
    finally:
        session.chdir(ROOT)
        shutil.rmtree(scratch, ignore_errors=True)


def _install_for(session: nox.Session, dists: list[str], extra: list[str] = ()) -> None:
    closure: list[str] = []
    for dist in dists:
        closure += [d for d in sibling_closure(dist) if d not in closure]
    wheel_dir = Path(session.create_tmp()) / "wheels"
    shutil.rmtree(wheel_dir, ignore_errors=True)
    wheels = build_wheels(session, closure, wheel_dir)
    groups = [req for dist in dists for req in test_group(dist)]
    session.install(*wheels, *groups, *extra)
    _check_no_undeclared_siblings(session, closure)


def _check_no_undeclared_siblings(session: nox.Session, closure: list[str]) -> None:
    """Fail if the venv holds a sibling that the tested package does not (transitively) declare."""
    out = session.run(
        "python",
        "-c",
        "import importlib.metadata as m; print(' '.join(d.metadata['Name'] for d in m.distributions()))",
        silent=True,
    )
    installed = {name.lower().replace("_", "-") for name in out.split()}
    extra = sorted((installed & set(PACKAGES)) - set(closure))
    if extra:
        session.error(f"undeclared siblings installed: {extra} (declared closure: {closure})")
    session.log(f"federation packages in this venv: {sorted(installed & set(PACKAGES))}")


TEST_TARGETS = [*PACKAGES, "integration"]
# test runners every test venv gets on top of the package's own `test` dependency group
PYTEST = ["pytest>=8", "pytest-xdist>=3.6"]


# Suites that are compile-bound: XLA's CPU backend at LLVM optimisation level 0 compiles faster and
# their programs are small, so the suite is shorter (measured on 2 cores, 2026-12-03: jpm-core
# 471 -> 426 s, jpm-hybrid 237 -> 182 s, every test passing). Not applied where long runs dominate
# (NUTS, training), whose programs run slower unoptimised; the numerics stay IEEE either way.
FAST_COMPILE = ("jpm-core", "jpm-hybrid")
FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"


def _tests(session: nox.Session, target: str, marker: str) -> None:
    if target in FAST_COMPILE:
        env = {"XLA_FLAGS": f"{TEST_ENV['XLA_FLAGS']} {FAST_COMPILE_FLAG}"}
        _install_for(session, [target], extra=PYTEST)
        run_pytest(session, [PACKAGES_DIR / target / "tests"], marker, [], env=env)
        return
    if target == "integration":
        _install_for(session, PACKAGES, extra=[*PYTEST, "packaging"])
        # the docs-examples test reads Markdown from the checkout (it imports nothing from it)
        run_pytest(
            session, [ROOT / "integration_tests"], marker, [], env={"JPM_REPO_ROOT": str(ROOT)}
        )
    else:
        _install_for(session, [target], extra=PYTEST)
        run_pytest(session, [PACKAGES_DIR / target / "tests"], marker, [])


@nox.session
@nox.parametrize("target", TEST_TARGETS, ids=TEST_TARGETS)
def tests(session: nox.Session, target: str) -> None:
    """Each package from its wheel in a fresh venv (default tests), then the integration tests."""
    _tests(session, target, "not slow")


@nox.session
@nox.parametrize("target", TEST_TARGETS, ids=TEST_TARGETS)
def slow(session: nox.Session, target: str) -> None:
    """The tests marked `slow`, package by package (never part of the default suite)."""
    _tests(session, target, "slow")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format check), the layering law, and the self-test that the law can fail."""
    session.install("ruff>=0.9", "import-linter>=2.1", "pytest>=8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    src_paths = os.pathsep.join(str(PACKAGES_DIR / d / "src") for d in PACKAGES)
    session.run("lint-imports", "--config", "pyproject.toml", env={"PYTHONPATH": src_paths})
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tools/tests",
        env={"PYTHONPATH": src_paths},
    )


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site strictly (every warning is an error) into site/.

    The examples gallery (docs/examples/) is executed during the build by markdown-exec, so the
    packages are installed from their wheels first, as a user gets them.
    """
    _install_for(session, PACKAGES, extra=["matplotlib>=3.8"])
    session.install("-r", "docs/requirements.txt")
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job on CPU with defaults: `jinfer-demo` (explicit vs implicit inference, report in
    demo/output/inference/report.html), then demo/run_demo.py (the PM and score-prior tour).

    Arguments after `--` go to `jinfer-demo` (e.g. `nox -s demo -- --npix 64 --simulations 2000`).
    """
    _install_for(session, PACKAGES, extra=["matplotlib>=3.8"])
    out = ROOT / "demo" / "output"
    session.run("jinfer-demo", "--out", str(out / "inference"), *session.posargs)
    # the report renders completely; with the defaults, explicit and implicit inference agree
    acceptance = [] if session.posargs else ["--acceptance"]
    session.run("python", "demo/check_report.py", str(out / "inference"), *acceptance)
    session.run("python", "demo/run_demo.py", "--out", str(out / "pm_score"))


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against peers (never run by CI); see BENCHMARKS.md for the recorded numbers."""
    _install_for(session, PACKAGES)
    session.run("python", "benchmarks/run.py", *session.posargs, env={"JAX_PLATFORMS": ""})


@nox.session(venv_backend="none")
def dev(session: nox.Session) -> None:
    """Create/refresh the editable development environment .venv over all seven packages."""
    session.run("uv", "sync", "--all-packages", "--all-groups", "--inexact", external=True)


@nox.session
def build(session: nox.Session) -> None:
    """Build every package's sdist and wheel (hatchling), check their metadata with twine and our rules.

    Rules: the wheel's version is the package's `__version__`; every sibling requirement has a lower
    bound and a cap (`>=0.1,<0.2`); the wheel ships `py.typed` and the licence.
    """
    session.install("twine>=5", "packaging")
    out = ROOT / "dist"
    shutil.rmtree(out, ignore_errors=True)
    for dist in PACKAGES:
        session.run(
            "uv", "build", "--quiet", "--out-dir", str(out), str(PACKAGES_DIR / dist), external=True
        )
    session.run(
        "twine",
        "check",
        "--strict",
        *sorted(str(p) for p in out.glob("*.*") if p.suffix in {".whl", ".gz"}),
    )
    session.run("python", "tools/check_dists.py", str(out), *PACKAGES)
