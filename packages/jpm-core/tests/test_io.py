"""Snapshot files: bit-for-bit round trip, metadata, atomic publication."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

import jpm_core as jpm
from jpm_core import Cosmology, Domain, ParticleState


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
