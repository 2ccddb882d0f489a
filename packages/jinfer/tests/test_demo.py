"""The main job (`run_demo`, `jinfer-demo`): the report renders with every figure; a rerun resumes
to the same results; bad input is refused before any compute and overwrites nothing.

The demo's numerics stand on the pieces tested elsewhere (NUTS against an exact posterior, VMIM on a
toy with an exact posterior, the Fisher matrices against analytic ones, the C2ST in jflows); here a
tiny configuration runs it end to end (a slow test: in CI, `nox -s demo` runs the default
configuration and demo/check_report.py checks its report).
"""

from __future__ import annotations

import dataclasses
import html.parser
import json

import matplotlib.image
import numpy as np
import pytest

import jinfer
from jinfer._src import demo

TINY = jinfer.DemoConfig(
    npix=16, chains=2, warmup=20, samples=20, simulations=64, vmim_epochs=1, npe_epochs=3,
    implicit_samples=100, fisher_simulations=24, ell_bins=4, c2st_steps=60, widths=(4, 8),
)  # fmt: skip


class _Report(html.parser.HTMLParser):
    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self):
        super().__init__()
        self.images, self.stack, self.errors, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _without_timings(results):
    results = {k: v for k, v in results.items() if k != "timings_s"}
    results["nuts"] = {k: v for k, v in results["nuts"].items() if k != "ess_per_second"}
    return results


@pytest.mark.slow  # CI renders the real report instead: `nox -s demo` runs demo/check_report.py
def test_the_report_opens_with_every_figure(tmp_path):
    out = tmp_path / "run"
    results = jinfer.run_demo(TINY, out, progress=False)
    parser = _Report()
    parser.feed((out / "report.html").read_text(encoding="utf-8"))
    parser.close()
    assert parser.errors == [], parser.errors
    assert parser.stack == [], parser.stack
    assert sorted(parser.images) == sorted(f"figures/{name}" for name in demo.FIGURES)
    for src in parser.images:
        image = matplotlib.image.imread(out / src)  # a PNG that decodes
        assert image.ndim == 3, src
        assert image.shape[0] > 100, src
        assert float(image.std()) > 0.01, src
    text = " ".join(parser.text)
    # 20 warmup steps do not converge: the report says so
    for needle in (
        "C2ST",
        "Timings",
        "Configuration",
        "Omega_c",
        "sigma8",
        '"npix": 16',
        "Warning: R-hat",
    ):
        assert needle in text, needle

    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert json.loads((out / "config.json").read_text())["config"]["npix"] == 16
    for side in ("explicit", "implicit"):
        for name, (low, high) in zip(
            demo.NAMES, zip(TINY.prior_low, TINY.prior_high, strict=False), strict=False
        ):
            assert low < results[side]["mean"][name] < high
            assert 0 < results[side]["std"][name] < high - low
    assert 0.0 <= results["c2st"]["accuracy"] <= 1.0
    assert results["c2st"]["std_error"] > 0
    assert all(np.isfinite(list(results["fisher_errors"].values())))
    assert results["timings_s"]["total"] > 0
    assert results["c2st_budget"] == []
    cov = results["coverage"]
    assert (cov["simulations"], cov["samples"]) == (
        TINY.coverage_simulations,
        TINY.coverage_samples,
    )
    assert 0 <= cov["tarp_p_value"] <= 1
    assert 0 < cov["tarp_max_deviation"] < 1


@pytest.mark.slow
def test_budgets_add_their_figure_and_a_rerun_resumes_to_the_same_results(tmp_path):
    out = tmp_path / "run"
    config = dataclasses.replace(TINY, budgets=(32,))
    results = jinfer.run_demo(config, out, progress=False)
    assert [c["simulations"] for c in results["c2st_budget"]] == [32, 64]
    assert results["c2st_budget"][-1]["accuracy"] == results["c2st"]["accuracy"]
    assert "figures/c2st_budget.png" in (out / "report.html").read_text(encoding="utf-8")
    assert matplotlib.image.imread(out / "figures" / "c2st_budget.png").ndim == 3
    # the same configuration again: every stage resumes from its files, the results are the same
    again = jinfer.run_demo(config, out, progress=False)
    assert _without_timings(again) == _without_timings(results)


def test_bad_input_is_refused_before_any_compute_and_nothing_is_overwritten(tmp_path, monkeypatch):
    def no_compute(*args, **kwargs):
        raise AssertionError("computed before the input was checked")

    monkeypatch.setattr(demo, "sample_posterior", no_compute)
    monkeypatch.setattr(demo._Setup, "kappa", no_compute)
    with pytest.raises(ValueError, match="outside the prior box"):
        jinfer.DemoConfig(truth=(0.6, 0.8))
    with pytest.raises(ValueError, match="npix"):
        jinfer.DemoConfig(npix=15)
    with pytest.raises(ValueError, match="fisher_simulations"):
        jinfer.DemoConfig(fisher_simulations=5)
    with pytest.raises(ValueError, match="budgets"):
        jinfer.DemoConfig(simulations=100, budgets=(200,))
    with pytest.raises(ValueError, match="budgets"):
        jinfer.DemoConfig(budgets=(500, 200))
    with pytest.raises(ValueError, match="low < high"):
        jinfer.DemoConfig(prior_low=(0.3, 0.5), prior_high=(0.2, 1.1))
    with pytest.raises(ValueError, match="fewer ell_bins"):
        jinfer.run_demo(jinfer.DemoConfig(npix=8, ell_bins=12), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match=r"shape \(1, 16, 16\)"):
        jinfer.run_demo(TINY, tmp_path / "b", observed=np.zeros((1, 32, 32)), progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        jinfer.run_demo(TINY, tmp_path / "c", observed=np.full((1, 16, 16), np.nan))
    with pytest.raises(TypeError, match="DemoConfig"):
        jinfer.run_demo({"npix": 16}, tmp_path / "d")

    # a folder of another configuration, or one that is not a demo's, is left as it was
    other = tmp_path / "other"
    other.mkdir()
    manifest = json.dumps(jinfer.DemoConfig(npix=32).to_json())
    (other / "config.json").write_text(manifest)
    with pytest.raises(ValueError, match="another configuration"):
        jinfer.run_demo(TINY, other, progress=False)
    assert (other / "config.json").read_text() == manifest
    assert sorted(p.name for p in other.iterdir()) == ["config.json"]
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a jinfer demo folder"):
        jinfer.run_demo(TINY, stranger, progress=False)
    assert sorted(p.name for p in stranger.iterdir()) == ["notes.txt"]


def test_the_command_line_reports_bad_flags_as_errors(tmp_path, capsys):
    assert jinfer.demo_main(["--out", str(tmp_path / "x"), "--npix", "15", "--quiet"]) == 2
    assert "npix" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        jinfer.demo_main(["--no-such-flag"])
    parsed = demo._parser().parse_args(["--widths", "4", "8", "16", "--truth", "0.3", "0.9"])
    assert parsed.widths == [4, 8, 16]
    assert parsed.truth == [0.3, 0.9]
