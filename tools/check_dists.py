"""Check built wheels against the federation's packaging rules (used by `nox -s build`).

python tools/check_dists.py DIST_DIR PACKAGE [PACKAGE ...]
"""

from __future__ import annotations

import re
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def check(dist_dir: Path, dist: str, federation: set[str]) -> list[str]:
    import_name = dist.replace("-", "_")
    init = (ROOT / "packages" / dist / "src" / import_name / "__init__.py").read_text()
    version = re.search(r'^__version__ = "([^"]+)"', init, flags=re.M).group(1)
    wheel = dist_dir / f"{import_name}-{version}-py3-none-any.whl"
    sdist = dist_dir / f"{import_name}-{version}.tar.gz"
    problems = [f"missing {p.name}" for p in (wheel, sdist) if not p.exists()]
    if problems:
        return problems
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = Parser().parsestr(zf.read(f"{import_name}-{version}.dist-info/METADATA").decode())
    if meta["Name"] != dist or meta["Version"] != version:
        problems.append(f"metadata says {meta['Name']} {meta['Version']}")
    if f"{import_name}/py.typed" not in names:
        problems.append("no py.typed in the wheel")
    if not any(n.endswith("licenses/LICENSE") for n in names):
        problems.append("no LICENSE in the wheel")
    if any(n.startswith(("tests/", f"{import_name}/tests")) for n in names):
        problems.append("tests leaked into the wheel")
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.name in federation:
            ops = {spec.operator for spec in req.specifier}
            if not {">=", "<"} <= ops:
                problems.append(f"sibling requirement {line!r} needs a lower bound and a cap")
    return problems


def main() -> int:
    dist_dir, packages = Path(sys.argv[1]), sys.argv[2:]
    failed = False
    for dist in packages:
        problems = check(dist_dir, dist, set(packages))
        print(f"{dist}: {'ok' if not problems else '; '.join(problems)}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
