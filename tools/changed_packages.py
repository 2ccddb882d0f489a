"""Which packages a change touches, and everything above them (their dependents), for CI lanes.

    python tools/changed_packages.py BASE_REF      # prints a JSON list of nox test targets

A file under packages/<name>/ selects <name> and every package that declares it, transitively; a change
to shared files (noxfile.py, conftest.py, the root pyproject.toml, .github/, tools/) selects everything.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("noxfile.py", "conftest.py", "pyproject.toml", ".github/", "tools/", ".ci/")


def declared_siblings() -> dict[str, set[str]]:
    names = {p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file()}
    deps = {}
    for name in names:
        meta = tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())["project"]
        reqs = {re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0] for r in meta.get("dependencies", [])}
        deps[name] = reqs & names
    return deps


def affected(changed: list[str]) -> list[str]:
    deps = declared_siblings()
    if any(path.startswith(SHARED) for path in changed):
        return [*sorted(deps), "integration"]
    selected = {p.split("/")[1] for p in changed if p.startswith("packages/") and p.count("/") >= 2}
    grew = True
    while grew:  # add dependents until nothing changes
        above = {name for name, sibs in deps.items() if sibs & selected}
        grew = not above <= selected
        selected |= above
    targets = sorted(selected & set(deps))
    if targets or any(p.startswith("integration_tests/") for p in changed):
        targets.append("integration")
    return targets


def main() -> None:
    base = sys.argv[1] if len(sys.argv) > 1 else "origin/main"
    out = subprocess.run(
        ["git", "diff", "--name-only", f"{base}...HEAD"], capture_output=True, text=True, check=True
    ).stdout.split()
    print(json.dumps(affected(out)))


if __name__ == "__main__":
    main()
