"""`jpm-simulate`'s output folder: checked before the run, written whole or not at all, with a
manifest; `--overwrite` replaces a previous run only once the new one is complete; `--format`."""

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import time

import numpy as np
import pytest

import jpm_core as jpm
from jpm_core._src import cli
from jpm_core._src.cli import main

# the configuration of test_cli.py: compiled once per test process
ARGV = [
    "--mesh", "16", "--box", "100.0", "--a-init", "0.1", "--snapshots", "0.5", "1.0",
    "--steps", "4", "--seed", "3", "--omega-c", "0.25", "--sigma8", "0.9", "--no-plot",
]  # fmt: skip


def _quiet_main(argv):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


def _digests(folder):
    """Every entry under `folder` (recursively, links not followed) -> its content's SHA-256."""
    digests = {}
    for path in sorted(folder.rglob("*")):
        name = os.fspath(path.relative_to(folder))
        if path.is_symlink():
            digests[name] = "link to " + os.readlink(path)
        elif path.is_dir():
            digests[name] = "folder"
        else:
            digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory):
    """A finished run (seed 3), to be copied by the tests that replace it."""
    out = tmp_path_factory.mktemp("previous") / "run"
    assert _quiet_main([*ARGV, "--out", str(out)]) == 0
    return out


@pytest.fixture
def old_run(previous_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(previous_run, out)
    return out, _digests(out)


def test_the_run_folder_has_a_manifest_that_says_complete(previous_run):
    manifest = json.loads((previous_run / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["jpm_core_version"] == jpm.__version__
    assert manifest["snapshot_files"] == ["snapshots.npz"]
    files = sorted(p.name for p in previous_run.iterdir() if p.name != "manifest.json")
    assert sorted(manifest["files"]) == files == ["power_spectrum.csv", "snapshots.npz"]
    for name, entry in manifest["files"].items():
        data = (previous_run / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    config = manifest["configuration"]
    assert config["command_line"].startswith("jpm-simulate --mesh 16 --box 100.0")
    assert config["options"]["seed"] == 3
    assert config["cosmology"]["Omega_c"] == 0.25
    assert config["domain"]["box_size"] == [100.0, 100.0, 100.0]
    assert config["step_boundaries"] == pytest.approx([0.1, 0.3, 0.5, 0.75, 1.0], abs=1e-12)
    # the folder loads as a whole, checked against the manifest
    run = jpm.load_snapshots(previous_run)
    single = jpm.load_snapshots(previous_run / "snapshots.npz")
    assert run.snapshots.positions.tobytes() == single.snapshots.positions.tobytes()
    assert run.metadata["seed"] == 3


def _error_before_compute(argv, monkeypatch, capsys):
    def no_compute(*args, **kwargs):
        raise AssertionError("computation started despite bad input")

    monkeypatch.setattr(jpm, "linear_field", no_compute)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_a_previous_run_is_refused_before_compute_without_overwrite(old_run, monkeypatch, capsys):
    out, before = old_run
    err = _error_before_compute([*ARGV, "--out", str(out)], monkeypatch, capsys)
    assert f"--out {out} is not empty (manifest.json, power_spectrum.csv, snapshots.npz)" in err
    assert "pass --overwrite" in err
    assert _digests(out) == before


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda p: p.write_text("x"), [], "exists and is not a directory"),
        (lambda p: p.with_name("file").write_text("x"), ["sub"], "file is not a directory"),
        (
            lambda p: (p.mkdir(), (p / "thesis.tex").write_text("x")),
            ["--overwrite"],
            "holds files but no manifest.json: not a jpm-simulate run, so it is not replaced",
        ),
        (lambda p: p.symlink_to(p.parent), [], "is a symbolic link"),
    ],
    ids=["a-file", "parent-is-a-file", "foreign-folder", "symlink"],
)
def test_bad_output_folders_are_refused_before_compute(
    make, extra, message, tmp_path, monkeypatch, capsys
):
    target = tmp_path / "out"
    make(target)
    out = tmp_path / "file" / "sub" if extra == ["sub"] else target
    flags = [f for f in extra if f != "sub"]
    before = _digests(tmp_path)
    err = _error_before_compute([*ARGV, *flags, "--out", str(out)], monkeypatch, capsys)
    assert message in err
    assert _digests(tmp_path) == before


def test_an_unwritable_parent_is_refused_before_compute(tmp_path, monkeypatch, capsys):
    # (the tests may run as root, for whom every folder is writable: fake the permission check)
    monkeypatch.setattr(cli.os, "access", lambda path, mode: os.fspath(path) != os.fspath(tmp_path))
    err = _error_before_compute([*ARGV, "--out", str(tmp_path / "a" / "run")], monkeypatch, capsys)
    assert f"cannot write in {tmp_path} (permission denied)" in err
    assert list(tmp_path.iterdir()) == []


def test_hdf5_without_h5py_is_refused_before_compute(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "h5py", None)
    for fmt in ("hdf5", "both"):
        argv = [*ARGV, "--format", fmt, "--out", str(tmp_path / "run")]
        err = _error_before_compute(argv, monkeypatch, capsys)
        assert f"--format {fmt} needs h5py" in err
        assert "pip install 'jpm-core[hdf5]'" in err
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_fails_midway_leaves_the_previous_run_untouched(old_run, monkeypatch):
    """Killed after the new snapshots are written: the old run stays whole, nothing is mixed in."""
    out, before = old_run
    seen = {}

    def fail_after_the_snapshots(path, *args, **kwargs):
        staging = path.parent
        seen["staging"] = staging
        seen["files"] = sorted(p.name for p in staging.iterdir())
        seen["manifest"] = json.loads((staging / "manifest.json").read_text())
        raise KeyboardInterrupt  # as a Ctrl-C while writing

    monkeypatch.setattr(cli, "_write_csv", fail_after_the_snapshots)
    with pytest.raises(KeyboardInterrupt):
        _quiet_main([*ARGV, "--seed", "4", "--overwrite", "--out", str(out)])
    # it had got midway: the new snapshots written next to the old run, marked incomplete
    assert seen["staging"].parent == out.parent
    assert seen["staging"] != out
    assert seen["files"] == ["manifest.json", "snapshots.npz"]
    assert seen["manifest"]["complete"] is False
    # the old run is intact, and no half-written folder is left beside it
    assert _digests(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]
    assert jpm.load_snapshots(out).metadata["seed"] == 3


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_overwrite_replaces_the_previous_run_whole(exchange, old_run, monkeypatch):
    from jpm_core._src import io as io_module

    if not exchange:
        monkeypatch.setattr(io_module, "_exchange", lambda a, b: False)
    out, before = old_run
    (out / "power_spectrum.png").write_bytes(b"a plot of the old run")  # not in the new one
    assert _quiet_main([*ARGV, "--seed", "4", "--overwrite", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]  # no staging, no old copy
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "power_spectrum.csv",
        "snapshots.npz",
    ]
    after = _digests(out)
    assert after["snapshots.npz"] != before["snapshots.npz"]
    assert after["power_spectrum.csv"] != before["power_spectrum.csv"]
    run = jpm.load_snapshots(out)  # checks every file against the new manifest
    assert run.metadata["seed"] == 4


def test_format_both_writes_the_same_snapshots_and_metadata_twice(tmp_path):
    pytest.importorskip("h5py")
    out = tmp_path / "run"
    assert _quiet_main([*ARGV, "--format", "both", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json", "power_spectrum.csv", "snapshots.h5", "snapshots.npz"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["snapshot_files"] == ["snapshots.npz", "snapshots.h5"]
    npz, h5 = jpm.load_snapshots(out / "snapshots.npz"), jpm.load_snapshots(out / "snapshots.h5")
    for name in ("positions", "momenta", "a"):
        a, b = getattr(npz.snapshots, name), getattr(h5.snapshots, name)
        assert a.dtype == b.dtype == np.float32
        assert a.tobytes() == b.tobytes()
    assert npz.metadata == h5.metadata
    assert h5.metadata["seed"] == 3
    hdf5_only = tmp_path / "h5"
    assert _quiet_main([*ARGV, "--format", "hdf5", "--out", str(hdf5_only)]) == 0
    assert "snapshots.npz" not in os.listdir(hdf5_only)
    loaded = jpm.load_snapshots(hdf5_only)  # the folder: its HDF5 file
    assert loaded.snapshots.positions.tobytes() == npz.snapshots.positions.tobytes()


@pytest.mark.slow
def test_the_default_run_is_small_and_fast(tmp_path):
    """`jpm-simulate` with every default (64^3 particles, 10 steps) on two CPU cores."""
    start = time.perf_counter()
    assert _quiet_main(["--no-plot", "--out", str(tmp_path / "run")]) == 0
    elapsed = time.perf_counter() - start
    run = jpm.load_snapshots(tmp_path / "run")
    assert run.domain.mesh_shape == (64, 64, 64)
    assert elapsed < 180.0, f"the default run took {elapsed:.0f} s"
