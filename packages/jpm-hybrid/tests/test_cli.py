"""The `jpm-hybrid` command line: every argument checked before any compute, outputs written whole
or not at all, and truth -> train -> evaluate end to end on a tiny box."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jpm_hybrid as jh
from jpm_hybrid._src import cli

TINY = ["--mesh", "8", "--box", "32", "--boost", "2", "--truth-steps", "12", "--no-progress"]
SNAPS = ["--snapshots", "0.5", "1.0"]


def _run(argv):
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def truths(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    _run(["truth", root / "train", "--seeds", "0", "1", *TINY, *SNAPS])
    _run(["truth", root / "test", "--seeds", "7", *TINY, *SNAPS])
    return root


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--box", "1e-3"], "--box"),
        (["--box", "1e9"], "--box"),
        (["--mesh", "7"], "--mesh"),
        (["--omega-m", "1.5"], "--omega-m"),
        (["--snapshots", "0.5", "0.4"], "--snapshots"),
        (["--snapshots", "0.05", "1.0"], "--snapshots"),
        (["--seeds", "1", "1"], "--seeds"),
        (["--boost", "0"], "--boost"),
    ],
)
def test_truth_refuses_bad_arguments_before_compute(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        _run(["truth", tmp_path / "out", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind either


def test_outputs_are_not_overwritten_unless_asked(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    with pytest.raises(SystemExit):
        _run(["truth", tmp_path / "out", *TINY])
    assert "--overwrite" in capsys.readouterr().err


def test_train_refuses_a_folder_that_is_not_a_truth(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    with pytest.raises(SystemExit):
        _run(["train", tmp_path / "junk", "--out", tmp_path / "f.msgpack"])
    assert "jpm-hybrid truth" in capsys.readouterr().err
    assert not (tmp_path / "f.msgpack").exists()


def test_train_refuses_truths_of_different_boxes(tmp_path, truths, capsys):
    _run(["truth", tmp_path / "other", "--seeds", "3", *TINY[:2], "--box", "48", *TINY[4:], *SNAPS])
    with pytest.raises(SystemExit):
        _run(["train", truths / "train", tmp_path / "other", "--out", tmp_path / "f.msgpack"])
    assert "box differs" in capsys.readouterr().err


def test_truth_folder_holds_what_make_truth_returns(truths):
    manifest = json.loads((truths / "train" / cli.MANIFEST).read_text())
    assert manifest["complete"]
    assert manifest["seeds"] == [0, 1]
    loaded = cli.read_truths(truths / "train")
    assert len(loaded) == 2
    # the same initial particles as the library's path from the same seed
    cosmo = cli.cosmology(0.3, 0.8)
    again = cli.initial_state(1, cosmo, loaded[1].domain, 0.1)
    np.testing.assert_allclose(
        np.asarray(loaded[1].initial.positions), np.asarray(again.positions), atol=1e-5
    )
    assert loaded[0].snapshots.positions.shape[0] == 2


def test_train_and_evaluate_end_to_end(tmp_path, truths):
    filt, out = tmp_path / "f.msgpack", tmp_path / "eval"
    _run(["train", truths / "train", "--out", filt, "--learning-rate", "3e-2", "--iterations",
          "10", "--steps", "4", "--no-progress"])  # fmt: skip
    model = jh.load_filter(filt)
    assert isinstance(model, jh.SplineFilter)
    # the spline spans the training mesh's Nyquist frequency, pi / (32 / 8) h/Mpc
    assert model.config.k_range == pytest.approx(np.pi / 4.0)
    _run(["evaluate", truths / "test", "--out", out, "--filter", filt, "--steps", 4])
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"pm", "hybrid"}
    for name in ("metrics.csv", "power_ratio.png", "cross_correlation.png"):
        assert (out / name).is_file()
    pm, hybrid = metrics["models"]["pm"], metrics["models"]["hybrid"]
    assert np.all(np.isfinite(hybrid["power_ratio"]))
    # 10 steps on two tiny boxes already move the held-out power towards the truth
    assert hybrid["power_error_quarter_to_half_nyquist"] < pm["power_error_quarter_to_half_nyquist"]


def _foreign_checkpoint(tmp_path):
    import jflows

    path = tmp_path / "foreign.msgpack"
    jflows.write_checkpoint(
        path, {"w": np.zeros(3)}, package="jscore", package_version="0.1.0", kind="jscore.ScoreNet"
    )
    return path


def test_filter_files_of_either_unit_and_pgd_files_round_trip(tmp_path):
    from flax import nnx

    grid = tmp_path / "grid.msgpack"
    jh.save_filter(grid, jh.SplineFilter(jh.FilterConfig(k_unit="grid"), rngs=nnx.Rngs(3)))
    assert cli.load_any_filter(grid).config.k_unit == "grid"
    assert jh.filter_config(grid).to_dict() == jh.FilterConfig(k_unit="grid").to_dict()
    assert jh.load_filter(grid).config.to_dict() == jh.FilterConfig(k_unit="grid").to_dict()
    with pytest.raises(ValueError, match="k_unit"):
        jh.load_filter(grid, jh.FilterConfig())
    with pytest.raises(ValueError, match="kind"):
        jh.filter_config(_foreign_checkpoint(tmp_path))
    pgd = jh.PGDCorrection(0.3, 1.2, alpha=0.05, mu=0.5)
    cli.save_pgd(tmp_path / "pgd.json", pgd, {"test": True})
    again = jh.pgd_parameters(cli.load_pgd(tmp_path / "pgd.json"))
    for name, value in jh.pgd_parameters(pgd).items():
        assert again[name] == pytest.approx(value, rel=1e-6)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format"):
        cli.load_pgd(tmp_path / "bad.json")


@pytest.mark.slow
def test_pgd_training_and_three_way_evaluation(tmp_path, truths):
    pgd, out = tmp_path / "pgd.json", tmp_path / "eval"
    _run(["train", truths / "train", "--out", pgd, "--model", "pgd", "--iterations", "15",
          "--steps", "4", "--no-progress"])  # fmt: skip
    _run(["evaluate", truths / "test", "--out", out, "--pgd", pgd, "--steps", 4, "--no-plots"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"pm", "pgd"}
    assert not (out / "power_ratio.png").exists()
