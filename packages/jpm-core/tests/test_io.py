"""Snapshot files (npz and HDF5): bit-for-bit round trip, metadata, atomic publication; run
folders: manifest checks and atomic replacement."""

import hashlib
import json
import os
import re
import shutil
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import jpm_core as jpm
from jpm_core import Cosmology, Domain, ParticleState
from jpm_core._src import io as io_module
from jpm_core._src.io import publish_folder, staged_folder, verify_run, write_manifest


def _states(n_snap=2, shape=(4, 5, 6)):
    rng = np.random.default_rng(1)
    positions = rng.normal(size=(n_snap, *shape, 3)).astype(np.float32) * 10
    momenta = rng.normal(size=(n_snap, *shape, 3)).astype(np.float32)
    a = np.linspace(0.5, 1.0, n_snap).astype(np.float32)
    return ParticleState(jnp.asarray(positions), jnp.asarray(momenta), jnp.asarray(a))


def test_round_trip_is_bit_for_bit(tmp_path):
    states = _states()
    domain = Domain(mesh_shape=(4, 5, 6), box_size=(40.0, 50.0, 61.5))
    cosmo = Cosmology(Omega_c=0.3, Omega_b=0.05, h=0.7, n_s=0.95, sigma8=0.83, w0=-0.9, wa=-0.2)
    user = {"seed": 7, "command_line": "jpm-simulate --seed 7", "nested": {"x": [1, 2.5]}}
    result = jpm.NBodyResult(snapshots=states, observer_carry=None)
    path = jpm.save_snapshots(
        tmp_path / "snap.npz", result, domain=domain, cosmo=cosmo, metadata=user
    )
    assert path == tmp_path / "snap.npz"
    loaded = jpm.load_snapshots(path)
    for name in ("positions", "momenta", "a"):
        saved, back = np.asarray(getattr(states, name)), getattr(loaded.snapshots, name)
        assert back.dtype == saved.dtype
        assert np.array_equal(back, saved)
    assert loaded.cosmo == cosmo
    assert loaded.domain == domain
    assert {key: loaded.metadata[key] for key in user} == user
    assert loaded.metadata["scale_factors"] == [0.5, 1.0]
    assert loaded.metadata["jpm_core_version"] == jpm.__version__
    assert loaded.metadata["units"]["cell_size_mpc_h"] == [10.0, 10.0, 61.5 / 6]
    assert "a^3 E(a) dx/da" in loaded.metadata["units"]["momenta"]
    # saving what was loaded gives the same metadata and arrays again
    again = jpm.load_snapshots(
        jpm.save_snapshots(
            tmp_path / "again.npz",
            loaded.snapshots,
            domain=loaded.domain,
            cosmo=loaded.cosmo,
            metadata=user,
        )
    )
    assert again.metadata == loaded.metadata
    assert np.array_equal(again.snapshots.positions, loaded.snapshots.positions)


def test_single_state_and_list_of_states(tmp_path):
    states = _states(n_snap=2)
    domain, cosmo = Domain((4, 5, 6), 10.0), Cosmology()
    singles = [ParticleState(states.positions[i], states.momenta[i], states.a[i]) for i in range(2)]
    jpm.save_snapshots(tmp_path / "list.npz", singles, domain=domain, cosmo=cosmo)
    jpm.save_snapshots(tmp_path / "one.npz", singles[1], domain=domain, cosmo=cosmo)
    from_list = jpm.load_snapshots(tmp_path / "list.npz").snapshots
    one = jpm.load_snapshots(tmp_path / "one.npz").snapshots
    assert np.array_equal(from_list.positions, np.asarray(states.positions))
    assert one.positions.shape == (1, 4, 5, 6, 3)
    assert np.array_equal(one.momenta[0], np.asarray(states.momenta[1]))


def test_bad_inputs(tmp_path):
    states, domain, cosmo = _states(), Domain((4, 5, 6), 10.0), Cosmology()
    with pytest.raises(ValueError, match="reserved"):
        jpm.save_snapshots(
            tmp_path / "x.npz", states, domain=domain, cosmo=cosmo, metadata={"cosmology": 1}
        )
    with pytest.raises(ValueError, match="Omega_c"):
        jpm.save_snapshots(tmp_path / "x.npz", states, domain=domain, cosmo=Cosmology(Omega_c=-1.0))
    with pytest.raises(TypeError, match="result_or_states"):
        jpm.save_snapshots(tmp_path / "x.npz", np.zeros(3), domain=domain, cosmo=cosmo)
    with pytest.raises(TypeError, match="JSON"):
        jpm.save_snapshots(
            tmp_path / "x.npz", states, domain=domain, cosmo=cosmo, metadata={"f": object()}
        )
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left behind
    np.savez(tmp_path / "other.npz", positions=np.zeros(3))
    with pytest.raises(ValueError, match="not a jpm-core snapshot file"):
        jpm.load_snapshots(tmp_path / "other.npz")


def test_only_os_replace_publishes_the_file(tmp_path, monkeypatch):
    """An interrupted write (here: os.replace never happens) leaves nothing under the final name."""
    states, domain, cosmo = _states(), Domain((4, 5, 6), 10.0), Cosmology()
    final = tmp_path / "snap.npz"
    seen = {}

    def interrupted_replace(src, dst):
        seen["src"], seen["dst"] = os.fspath(src), os.fspath(dst)
        assert not os.path.exists(dst)  # the full file exists only under its temporary name
        with np.load(src) as archive:
            assert json.loads(str(archive["metadata"][()]))["format"] == "jpm-core-snapshots"
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        jpm.save_snapshots(final, states, domain=domain, cosmo=cosmo)
    assert seen["dst"] == os.fspath(final)
    assert os.path.dirname(seen["src"]) == os.fspath(tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the final file nor the temporary one
    monkeypatch.undo()
    # an existing file is replaced whole only when the new one is complete
    jpm.save_snapshots(final, states, domain=domain, cosmo=cosmo, metadata={"run": 1})
    monkeypatch.setattr(os, "replace", _raise)
    with pytest.raises(OSError, match="disk full"):
        jpm.save_snapshots(final, states, domain=domain, cosmo=cosmo, metadata={"run": 2})
    assert jpm.load_snapshots(final).metadata["run"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["snap.npz"]


def _raise(src, dst):
    raise OSError("disk full")


# ------------------------------------------------------------------------------------------- HDF5
def _cosmo_domain():
    domain = Domain(mesh_shape=(4, 5, 6), box_size=(40.0, 50.0, 61.5))
    cosmo = Cosmology(Omega_c=0.3, Omega_b=0.05, h=0.7, n_s=0.95, sigma8=0.83, w0=-0.9, wa=-0.2)
    return domain, cosmo


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hdf5_round_trip_is_bit_for_bit_with_the_metadata_of_npz(dtype, tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(2)
    states = ParticleState(
        positions=(rng.normal(size=(3, 4, 5, 6, 3)) * 10).astype(dtype),
        momenta=rng.normal(size=(3, 4, 5, 6, 3)).astype(dtype),
        a=np.array([0.25, 0.5, 1.0], dtype),
    )
    domain, cosmo = _cosmo_domain()
    user = {"seed": 7, "command_line": "jpm-simulate --seed 7", "nested": {"x": [1, 2.5]}}
    npz = jpm.save_snapshots(tmp_path / "s.npz", states, domain=domain, cosmo=cosmo, metadata=user)
    h5 = jpm.save_snapshots(tmp_path / "s.h5", states, domain=domain, cosmo=cosmo, metadata=user)
    with open(h5, "rb") as handle:
        assert handle.read(8) == b"\x89HDF\r\n\x1a\n"  # the suffix chose HDF5
    from_npz, from_h5 = jpm.load_snapshots(npz), jpm.load_snapshots(h5)
    for name in ("positions", "momenta", "a"):
        saved, back = getattr(states, name), getattr(from_h5.snapshots, name)
        assert back.dtype == saved.dtype
        assert back.tobytes() == saved.tobytes()
    assert from_h5.metadata == from_npz.metadata
    assert from_h5.cosmo == cosmo
    assert from_h5.domain == domain
    # readable as plain HDF5, without jpm_core: attributes for the cosmology, domain and units
    with h5py.File(h5, "r") as handle:
        assert handle.attrs["format"] == "jpm-core-snapshots"
        assert handle.attrs["jpm_core_version"] == jpm.__version__
        assert handle["cosmology"].attrs["Omega_c"] == 0.3
        assert handle["cosmology"].attrs["wa"] == -0.2
        np.testing.assert_array_equal(handle["domain"].attrs["box_size"], [40.0, 50.0, 61.5])
        np.testing.assert_array_equal(handle["domain"].attrs["mesh_shape"], [4, 5, 6])
        np.testing.assert_array_equal(
            handle["units"].attrs["cell_size_mpc_h"], [10.0, 10.0, 61.5 / 6]
        )
        assert "a^3 E(a) dx/da" in handle["momenta"].attrs["units"]
        assert handle["run"].attrs["seed"] == 7
        assert handle["positions"].compression == "gzip"  # lossless: bit for bit above
    # the content decides, not the name; an explicit format overrides the suffix
    odd = jpm.save_snapshots(
        tmp_path / "s.dat", states, domain=domain, cosmo=cosmo, file_format="hdf5"
    )
    assert jpm.load_snapshots(odd).snapshots.positions.tobytes() == states.positions.tobytes()
    with pytest.raises(ValueError, match="file_format must be"):
        jpm.save_snapshots(tmp_path / "t", states, domain=domain, cosmo=cosmo, file_format="fits")


def test_hdf5_without_h5py_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py raises ImportError
    states = _states()
    domain, cosmo = _cosmo_domain()
    with pytest.raises(ImportError, match=r"pip install 'jpm-core\[hdf5\]'"):
        jpm.save_snapshots(tmp_path / "s.h5", states, domain=domain, cosmo=cosmo)
    assert list(tmp_path.iterdir()) == []
    jpm.save_snapshots(tmp_path / "s.npz", states, domain=domain, cosmo=cosmo)  # npz needs nothing
    assert jpm.load_snapshots(tmp_path / "s.npz").snapshots.positions.shape == (2, 4, 5, 6, 3)


def test_a_foreign_hdf5_file_is_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle["positions"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a jpm-core snapshot file"):
        jpm.load_snapshots(tmp_path / "other.h5")
    with h5py.File(tmp_path / "old.h5", "w") as handle:
        for name in ("positions", "momenta", "a"):
            handle[name] = np.zeros(3)
        handle.attrs["metadata"] = json.dumps({"format": "jpm-core-snapshots", "format_version": 9})
    with pytest.raises(ValueError, match="version 9"):
        jpm.load_snapshots(tmp_path / "old.h5")


# ------------------------------------------------------------------------------------ run folders
def _run_folder(folder):
    """A run folder as jpm-simulate writes one: snapshots, a table, the manifest last."""
    folder.mkdir()
    states = _states()
    domain, cosmo = _cosmo_domain()
    jpm.save_snapshots(folder / "snapshots.npz", states, domain=domain, cosmo=cosmo)
    (folder / "power_spectrum.csv").write_text("k,pk\n0.1,1000.0\n")
    write_manifest(
        folder, configuration={"seed": 1}, snapshot_files=["snapshots.npz"], complete=True
    )
    return states


def test_a_run_folder_loads_only_when_complete_and_matching_its_manifest(tmp_path):
    states = _run_folder(tmp_path / "run")
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["format"] == "jpm-simulate-run"
    assert manifest["jpm_core_version"] == jpm.__version__
    assert manifest["configuration"] == {"seed": 1}
    csv_bytes = b"k,pk\n0.1,1000.0\n"
    assert manifest["files"]["power_spectrum.csv"] == {
        "size": len(csv_bytes),
        "sha256": hashlib.sha256(csv_bytes).hexdigest(),  # the checksum, independently
    }
    assert sorted(manifest["files"]) == ["power_spectrum.csv", "snapshots.npz"]
    loaded = jpm.load_snapshots(run)  # the folder: its snapshot file
    assert loaded.snapshots.positions.tobytes() == np.asarray(states.positions).tobytes()
    assert verify_run(run) == manifest
    (run / "notes.txt").write_text("added by hand")  # files the manifest does not list are fine
    jpm.load_snapshots(run)

    def broken(name, edit):
        copy = tmp_path / name
        shutil.copytree(run, copy)
        edit(copy)
        return copy

    def flip_a_byte(folder):  # same size, other content
        data = bytearray((folder / "power_spectrum.csv").read_bytes())
        data[-3] ^= 1
        (folder / "power_spectrum.csv").write_bytes(bytes(data))

    def mark_incomplete(folder):
        text = (
            (folder / "manifest.json").read_text().replace('"complete": true', '"complete": false')
        )
        (folder / "manifest.json").write_text(text)

    cases = [
        (flip_a_byte, "SHA-256 checksum of 'power_spectrum.csv' does not match"),
        (lambda f: (f / "power_spectrum.csv").write_text("k,pk\n"), "has 5 bytes"),
        (lambda f: (f / "power_spectrum.csv").unlink(), "'power_spectrum.csv' is missing"),
        (lambda f: (f / "manifest.json").unlink(), "has no manifest.json"),
        (mark_incomplete, "is not complete"),
        (lambda f: (f / "manifest.json").write_text("{"), "not valid JSON"),
        (lambda f: (f / "manifest.json").write_text('{"format": "x"}'), "unknown run format 'x'"),
    ]
    for i, (edit, message) in enumerate(cases):
        folder = broken(f"broken{i}", edit)
        with pytest.raises(ValueError, match=re.escape(message)):
            jpm.load_snapshots(folder)
        if (folder / "manifest.json").exists() and (folder / "snapshots.npz").exists():
            # the snapshot file of a run is checked against the run's manifest too
            with pytest.raises(ValueError, match=re.escape(message)):
                jpm.load_snapshots(folder / "snapshots.npz")
    tampered = broken("tampered_snapshots", lambda f: None)
    data = bytearray((tampered / "snapshots.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / "snapshots.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape("SHA-256 checksum of 'snapshots.npz'")):
        jpm.load_snapshots(tampered / "snapshots.npz")


def _old_and_new(tmp_path):
    old, new = tmp_path / "out", tmp_path / "staging"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / "a.txt").write_text(text)
    (old / "only_old.txt").write_text("old")
    return old, new


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_publish_folder_replaces_the_previous_folder_whole(exchange, tmp_path, monkeypatch):
    real_exchange, exchanged = io_module._exchange, []

    def record(a, b):
        exchanged.append(real_exchange(a, b) if exchange else False)
        return exchanged[-1]

    monkeypatch.setattr(io_module, "_exchange", record)
    old, new = _old_and_new(tmp_path)
    with pytest.raises(FileExistsError, match="not empty"):
        publish_folder(new, old)  # overwrite is off by default
    assert (old / "only_old.txt").exists()
    publish_folder(new, old, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left beside it
    assert sorted(p.name for p in old.iterdir()) == ["a.txt"]  # not a mix of the two
    assert (old / "a.txt").read_text() == "new"
    # a missing or empty target is a plain rename
    new.mkdir()
    publish_folder(new, tmp_path / "fresh")
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    publish_folder(tmp_path / "other", tmp_path / "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "fresh", "out"]
    assert len(exchanged) == 1  # only the non-empty target needed the exchange
    if exchange and exchanged != [True]:
        pytest.skip("this file system cannot exchange two folders (renameat2): fallback tested")


def test_publish_folder_puts_the_previous_folder_back_when_the_move_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(io_module, "_exchange", lambda a, b: False)
    old, new = _old_and_new(tmp_path)
    real_replace = os.replace

    def failing_replace(src, dst):
        if os.fspath(src) == os.fspath(new):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        publish_folder(new, old, overwrite=True)
    assert sorted(p.name for p in old.iterdir()) == ["a.txt", "only_old.txt"]
    assert (old / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "staging"]


def test_staged_folder_is_removed_when_writing_fails(tmp_path):
    final = tmp_path / "parent" / "run"
    seen = []

    def write_midway():
        with staged_folder(final) as staging:
            seen.append(staging)
            (staging / "snapshots.npz").write_bytes(b"partial")
            raise RuntimeError("midway")

    with pytest.raises(RuntimeError, match="midway"):
        write_midway()
    assert seen[0].parent == final.parent
    assert seen[0].name.startswith(".run.")
    assert list((tmp_path / "parent").iterdir()) == []
