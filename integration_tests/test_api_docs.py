"""The curated API reference (docs/api/<package>.md) lists every public name once, and only those.

Each page groups a package's `__all__` under concept headings, one mkdocstrings block
`::: <module>.<Name>` per name. These tests parse those lines, so a name added to `__all__` without
a place on its page, a name listed twice, or a name that is no longer public fails here rather than
silently dropping out of (or lingering in) the reference.
"""

from __future__ import annotations

import importlib
import os
import re
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(os.environ.get("JPM_REPO_ROOT", Path(__file__).resolve().parents[1]))
API = REPO / "docs" / "api"
FEDERATION = {
    "jpm-core": "jpm_core",
    "jflows": "jflows",
    "jscore": "jscore",
    "jso3": "jso3",
    "jpm-hybrid": "jpm_hybrid",
    "jlens": "jlens",
    "jinfer": "jinfer",
}
# `::: identifier` at the start of a line (mkdocstrings' autodoc syntax), outside fenced code.
DIRECTIVE = re.compile(r"^:::\s+(?P<ident>[A-Za-z_][\w.]*)\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def _directives(page: Path) -> list[str]:
    """The identifiers of the page's `::: ...` blocks, in order (fenced code blocks skipped)."""
    out, fenced = [], False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced and (m := DIRECTIVE.match(line)):
            out.append(m["ident"])
    return out


def _listed(dist: str) -> list[str]:
    """The names a package's page documents (`::: module.Name` -> `Name`); other modules refused."""
    module = FEDERATION[dist]
    idents = _directives(API / f"{dist}.md")
    foreign = [i for i in idents if not i.startswith(f"{module}.")]
    assert not foreign, (
        f"docs/api/{dist}.md documents {foreign}: its blocks must be `::: {module}.<name>` for the "
        f"names of {module}.__all__ (document other packages' names on their own pages)"
    )
    return [i[len(module) + 1 :] for i in idents]


@pytest.mark.parametrize("dist", FEDERATION)
def test_api_page_exists(dist):
    page = API / f"{dist}.md"
    assert page.is_file(), f"no API reference page {page.relative_to(REPO)} for {dist}"


@pytest.mark.parametrize("dist", FEDERATION)
def test_every_public_name_is_on_its_api_page(dist):
    public = importlib.import_module(FEDERATION[dist]).__all__
    listed = set(_listed(dist))
    missing = [n for n in public if n not in listed]
    assert not missing, (
        f"docs/api/{dist}.md lacks {missing} of {FEDERATION[dist]}.__all__: add a "
        f"`::: {FEDERATION[dist]}.<name>` block under the concept heading it belongs to"
    )


@pytest.mark.parametrize("dist", FEDERATION)
def test_no_name_is_listed_twice(dist):
    twice = sorted(n for n, c in Counter(_listed(dist)).items() if c > 1)
    assert not twice, f"docs/api/{dist}.md lists {twice} more than once: keep one place per name"


@pytest.mark.parametrize("dist", FEDERATION)
def test_only_public_names_are_listed(dist):
    public = set(importlib.import_module(FEDERATION[dist]).__all__)
    stale = [n for n in _listed(dist) if n not in public]
    assert not stale, (
        f"docs/api/{dist}.md lists {stale}, not in {FEDERATION[dist]}.__all__: remove them (or "
        "export them, if they are meant to be public)"
    )


def test_api_pages_are_in_the_nav():
    nav = (REPO / "mkdocs.yml").read_text()
    missing = [d for d in FEDERATION if f"api/{d}.md" not in nav]
    assert not missing, f"mkdocs.yml's nav lacks the API pages of {missing}"
    strays = sorted(p.stem for p in API.glob("*.md") if p.stem not in FEDERATION)
    assert not strays, f"docs/api/ has pages of no federation package: {strays}"


def test_the_parser_sees_the_blocks(tmp_path):
    """The parser itself: blocks counted, options lines and fenced examples ignored."""
    page = tmp_path / "p.md"
    page.write_text(
        "# p\n\n::: jflows.fit\n    options:\n      heading_level: 3\n\n"
        "```md\n::: jflows.train\n```\n\n::: jflows.fit\n"
    )
    assert _directives(page) == ["jflows.fit", "jflows.fit"]
