"""Simulation campaigns: sharded over 8 fake devices equal to one device; resumable after a kill."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jinfer


def simulate(key):
    k_theta, k_x = jax.random.split(key)
    theta = jax.random.uniform(k_theta, (2,))
    noise = jax.random.normal(k_x, (4, 4))
    x = theta[0] + jnp.exp(theta[1]) * noise
    # the joint score d/dtheta log p(x | theta) of this Gaussian pixel model
    r = (x - theta[0]) / jnp.exp(theta[1])
    score = jnp.stack([jnp.sum(r) / jnp.exp(theta[1]), jnp.sum(r**2) - x.size])
    return {"theta": theta, "x": x, "score": score}


def test_a_sharded_campaign_equals_one_device_and_the_direct_simulation(tmp_path):
    assert len(jax.devices()) == 8
    many = jinfer.run_campaign(jax.random.key(0), simulate, 100, tmp_path / "eight", chunk_size=32, progress=False)  # fmt: skip
    one = jinfer.run_campaign(
        jax.random.key(0), simulate, 100, tmp_path / "one", chunk_size=32,
        devices=jax.devices()[:1], progress=False,
    )  # fmt: skip
    a, b = jinfer.load_campaign(many), jinfer.load_campaign(one)
    assert {k: v.shape for k, v in a.items()} == {
        "theta": (100, 2),
        "x": (100, 4, 4),
        "score": (100, 2),
    }
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-5)  # float32 sums, reordered
    # simulation i of chunk c uses split(fold_in(key, c), chunk_size)[i]
    keys = jax.random.split(jax.random.fold_in(jax.random.key(0), 3), 32)[:4]  # rows 96..99
    direct = jax.vmap(simulate)(keys)
    np.testing.assert_allclose(a["x"][96:], direct["x"], rtol=1e-6)
    assert sorted(p.name for p in many.iterdir()) == [
        "campaign.json", "chunk_000000.h5", "chunk_000001.h5", "chunk_000002.h5", "chunk_000003.h5",
    ]  # fmt: skip


def test_a_killed_campaign_resumes_and_counts_no_half_written_chunk(tmp_path, monkeypatch):
    import jinfer._src.campaign as campaign

    ref = jinfer.load_campaign(jinfer.run_campaign(jax.random.key(1), simulate, 64, tmp_path / "ref", chunk_size=16, progress=False))  # fmt: skip
    path = tmp_path / "run"
    real, calls = campaign._write_chunk, []

    def killed_in_the_third(folder, c, arrays):
        calls.append(c)
        if len(calls) == 3:  # dies while writing: a temporary file is left behind
            (folder / f".{campaign._chunk_name(c)}.dead.tmp").write_bytes(b"half")
            raise KeyboardInterrupt
        real(folder, c, arrays)

    monkeypatch.setattr(campaign, "_write_chunk", killed_in_the_third)
    with pytest.raises(KeyboardInterrupt):
        jinfer.run_campaign(jax.random.key(1), simulate, 64, path, chunk_size=16, progress=False)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="chunk 2 of 4 is missing"):
        jinfer.load_campaign(path)
    part = jinfer.load_campaign(path, partial=True)
    np.testing.assert_array_equal(part["x"], ref["x"][:32])
    jinfer.run_campaign(jax.random.key(1), simulate, 64, path, chunk_size=16, progress=False)
    got = jinfer.load_campaign(path)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    assert not list(path.glob(".*"))  # the half-written file is gone
    # another campaign in the same folder is refused
    with pytest.raises(ValueError, match=r"another campaign .*'key'"):
        jinfer.run_campaign(jax.random.key(2), simulate, 64, path, chunk_size=16, progress=False)
    with pytest.raises(ValueError, match=r"another campaign .*'chunk_size'"):
        jinfer.run_campaign(jax.random.key(1), simulate, 64, path, chunk_size=32, progress=False)


def test_bad_campaigns_are_errors_before_any_simulation(tmp_path):
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="multiple of the 8 devices"):
        jinfer.run_campaign(key, simulate, 10, tmp_path / "a", chunk_size=12)
    with pytest.raises(TypeError, match="dict of arrays"):
        jinfer.run_campaign(key, lambda k: jax.random.normal(k, (3,)), 10, tmp_path / "b", chunk_size=8)  # fmt: skip
    with pytest.raises(ValueError, match="n must be a positive integer"):
        jinfer.run_campaign(key, simulate, 0, tmp_path / "c")
    assert not (tmp_path / "a").exists()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "campaign.json").write_text("{}")
    with pytest.raises(ValueError, match="field 'format'"):
        jinfer.load_campaign(tmp_path / "d")
