"""The layering law is only worth something if its check can fail: plant forbidden imports in a copy
of the packages and see `lint-imports` (with the repository's own contracts) reject each of them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
ROOT_PACKAGES = CONFIG["root_packages"]


def _copy_sources(dst: Path) -> Path:
    src_root = dst / "src"
    src_root.mkdir()
    for pkg_dir in (ROOT / "packages").iterdir():
        for module in (pkg_dir / "src").iterdir():
            if module.is_dir() and (module / "__init__.py").exists():
                shutil.copytree(module, src_root / module.name)
    # the contracts, verbatim, in a config file of their own
    config = (ROOT / "pyproject.toml").read_text()
    start = config.index("[tool.importlinter]")
    (dst / "pyproject.toml").write_text(config[start:])
    return src_root


def _lint_imports(workdir: Path, src_root: Path) -> subprocess.CompletedProcess[str]:
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    env = {**os.environ, "PYTHONPATH": str(src_root)}
    return subprocess.run(
        [lint, "--config", "pyproject.toml", "--no-cache"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_config_lists_every_package():
    on_disk = {
        m.name
        for p in (ROOT / "packages").iterdir()
        for m in (p / "src").iterdir()
        if (m / "__init__.py").exists()
    }
    assert set(ROOT_PACKAGES) == on_disk


def test_clean_tree_passes(tmp_path):
    result = _lint_imports(tmp_path, _copy_sources(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("where", "planted", "broken_contract"),
    [
        # upward: the bottom layer reaches for the top
        ("jpm_core/_src/planted.py", "import jinfer\n", "Layering law"),
        # upward from the middle
        ("jlens/_src/planted.py", "from jinfer import __version__\n", "Layering law"),
        # sideways: peers in one layer must stay independent
        ("jscore/_src/planted.py", "import jso3\n", "Layering law"),
        ("jflows/_src/planted.py", "import jpm_core\n", "Layering law"),
        # downward is allowed, but never into a private module
        ("jlens/_src/planted.py", "from jpm_core._src import planted_target\n", "private _src"),
    ],
)
def test_planted_forbidden_import_is_rejected(tmp_path, where, planted, broken_contract):
    src_root = _copy_sources(tmp_path)
    (src_root / "jpm_core/_src/planted_target.py").write_text("X = 1\n")
    (src_root / where).write_text(planted)
    result = _lint_imports(tmp_path, src_root)
    assert result.returncode != 0, f"the check accepted {planted!r} in {where}"
    assert "BROKEN" in result.stdout
    broken = [line for line in result.stdout.splitlines() if "BROKEN" in line]
    assert any(broken_contract in line for line in broken), result.stdout


def test_downward_public_import_is_allowed(tmp_path):
    src_root = _copy_sources(tmp_path)
    (src_root / "jlens/_src/planted.py").write_text("import jpm_core\n")
    (src_root / "jinfer/_src/planted.py").write_text("import jlens\nimport jflows\n")
    result = _lint_imports(tmp_path, src_root)
    assert result.returncode == 0, result.stdout + result.stderr
