"""Every ```python example in the package READMEs and the docs runs, against the installed wheels.

Blocks of one file run in order in one namespace, so a later block may use an earlier one's names. A
block directly preceded by the line `<!-- not-run -->` is shown but not executed (use it sparingly: for
code that needs a GPU or a cluster).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(os.environ.get("JPM_REPO_ROOT", Path(__file__).resolve().parents[1]))
SOURCES = sorted(
    [*REPO.glob("packages/*/README.md"), *REPO.glob("docs/**/*.md"), REPO / "README.md"]
)
BLOCK = re.compile(r"(?P<skip><!-- not-run -->\n)?```python\n(?P<code>.*?)```", re.S)


def _examples(path: Path) -> list[str]:
    return [m["code"] for m in BLOCK.finditer(path.read_text()) if not m["skip"]]


@pytest.mark.parametrize(
    "path", [p for p in SOURCES if _examples(p)], ids=lambda p: str(p.relative_to(REPO))
)
def test_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    namespace: dict = {"__name__": "__example__"}
    for i, code in enumerate(_examples(path)):
        try:
            exec(compile(code, f"{path.name}[example {i}]", "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"example {i} of {path} failed:\n{code}") from err


def test_examples_are_found():
    assert SOURCES, f"no Markdown sources under {REPO}"
