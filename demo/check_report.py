"""Check a `jinfer-demo` output folder: the report renders, and (with `--acceptance`) the defaults'
explicit and implicit posteriors agree.

`python -m nox -s demo` runs it after the demo, so CI checks the main job's report at its real size
(the test suite renders it only in a slow test):

- `report.html` is balanced HTML whose every `<img>` is a PNG of `figures/` that decodes and is not
  blank, and every figure in `figures/` is shown;
- `results.json` holds finite numbers, posterior means inside the prior box;
- `--acceptance` (the default configuration only): NUTS converged (R-hat < 1.05, bulk ESS > 100, no
  divergences), the two posterior means agree within half a posterior standard deviation, the C2ST
  is below 0.7 and the implicit posterior's TARP coverage is not rejected (KS p > 1e-3).

Exit status 1 with one line per failed check.
"""

from __future__ import annotations

import argparse
import html.parser
import json
import math
import sys
from pathlib import Path

import matplotlib.image


class _Report(html.parser.HTMLParser):
    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self):
        super().__init__()
        self.images, self.stack, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def _numbers(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _numbers(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _numbers(value)
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        yield float(tree)


def check(out: Path, acceptance: bool) -> list[str]:
    problems = []
    parser = _Report()
    parser.feed((out / "report.html").read_text(encoding="utf-8"))
    parser.close()
    if parser.errors or parser.stack:
        problems.append(f"unbalanced HTML: closed {parser.errors}, left open {parser.stack}")
    figures = sorted(f"figures/{p.name}" for p in (out / "figures").glob("*.png"))
    if sorted(parser.images) != figures:
        problems.append(f"the report shows {sorted(parser.images)}, figures/ holds {figures}")
    for src in parser.images:
        image = matplotlib.image.imread(out / src)
        if image.ndim != 3 or image.shape[0] < 100 or float(image.std()) < 0.01:
            problems.append(f"{src} is blank or tiny: shape {image.shape}")

    results = json.loads((out / "results.json").read_text())
    config = json.loads((out / "config.json").read_text())["config"]
    # R-hat is infinite for chains that never move (a tiny run); everything else must be finite
    finite = {k: v for k, v in results.items() if k != "nuts"}
    finite["nuts"] = {k: v for k, v in results["nuts"].items() if k != "r_hat"}
    if not all(math.isfinite(x) for x in _numbers(finite)):
        problems.append("results.json holds non-finite numbers")
    names = list(results["truth"])
    for side in ("explicit", "implicit"):
        for i, name in enumerate(names):
            if not config["prior_low"][i] < results[side]["mean"][name] < config["prior_high"][i]:
                problems.append(f"the {side} mean of {name} is outside the prior")
    if acceptance:
        nuts = results["nuts"]
        if max(nuts["r_hat"].values()) >= 1.05 or min(nuts["ess_bulk"].values()) <= 100:
            problems.append(f"NUTS did not converge: R-hat {nuts['r_hat']}, ESS {nuts['ess_bulk']}")
        if nuts["divergences"]:
            problems.append(f"NUTS had {nuts['divergences']} divergences")
        for name in names:
            gap = abs(results["explicit"]["mean"][name] - results["implicit"]["mean"][name])
            if gap > 0.5 * results["explicit"]["std"][name]:
                problems.append(f"the posterior means of {name} differ by {gap:.3g}")
        if results["c2st"]["accuracy"] >= 0.7:
            problems.append(f"C2ST {results['c2st']['accuracy']:.3f} >= 0.7")
        tarp = results.get("coverage", {}).get("tarp_p_value")
        if tarp is None or tarp <= 1e-3:
            problems.append(f"the implicit posterior's TARP coverage is rejected (p = {tarp})")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the demo's output folder")
    parser.add_argument("--acceptance", action="store_true", help="the defaults' numeric checks")
    args = parser.parse_args(argv)
    problems = check(args.out, args.acceptance)
    for problem in problems:
        print(f"check_report: {problem}", file=sys.stderr)
    if not problems:
        print(
            f"check_report: {args.out / 'report.html'} is complete"
            + (", acceptance passed" if args.acceptance else "")
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
