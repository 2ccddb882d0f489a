"""The `jpm-simulate` command line: a tiny run in-process, its files, and its input errors."""

import contextlib
import csv
import io
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

import jpm_core as jpm
from jpm_core._src.cli import main, step_grid

MESH, BOX, A_INIT, SNAPSHOTS, STEPS, SEED = 16, 100.0, 0.1, (0.5, 1.0), 4, 3
ARGV = [
    "--mesh", str(MESH), "--box", str(BOX), "--a-init", str(A_INIT),
    "--snapshots", *map(str, SNAPSHOTS), "--steps", str(STEPS), "--seed", str(SEED),
    "--omega-c", "0.25", "--sigma8", "0.9", "--lpt-order", "2", "--progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([*ARGV, "--out", str(out)])
    return code, out, stdout.getvalue(), stderr.getvalue()


def test_run_writes_its_files(run):
    code, out, stdout, stderr = run
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "power_spectrum.csv",
        "power_spectrum.png",
        "snapshots.npz",
    ]
    assert (out / "power_spectrum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a status line before the first call says compilation is coming, one after times it
    assert "jpm-simulate: compiling and running 16^3 particles" in stderr
    assert stderr.index("compiling and running") < stderr.index("4/4")  # nbody's progress bar
    assert re.search(r"simulation done in [\d.]+ s: [\d.]+ s XLA compilation", stderr)
    summary = stdout.strip().splitlines()[-1]
    assert summary.startswith("jpm-simulate: 16^3 particles")
    assert "snapshots.npz" in summary

    with open(out / "power_spectrum.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    header, table = rows[0], np.array(rows[1:], dtype=float)
    assert header == [
        "k_h_per_Mpc", "n_modes",
        "pk_a0.5000", "pk_linear_a0.5000", "pk_a1.0000", "pk_linear_a1.0000",
    ]  # fmt: skip
    k = table[:, 0]
    # first shell [k_f / 2, 3 k_f / 2): 6 modes at k_f and 12 at sqrt(2) k_f
    k_f = 2 * np.pi / BOX
    assert k[0] == pytest.approx(k_f * (6 + 12 * np.sqrt(2)) / 18, rel=1e-6)
    assert table[0, 1] == 18
    assert np.all(np.diff(k) > 0)
    cosmo = jpm.Cosmology(Omega_c=0.25, sigma8=0.9)
    for column, a in ((3, 0.5), (5, 1.0)):  # linear theory D1(a)^2 P_lin(k), independently
        expected = (
            np.asarray(jpm.linear_power(cosmo, k, 1.0)) * float(jpm.growth_factor(cosmo, a)) ** 2
        )
        np.testing.assert_allclose(table[:, column], expected, rtol=1e-4)
    # the simulated power on the largest scales follows linear growth (16^3: 18 modes, ~33%)
    ratio = table[0, 4] / table[0, 2]
    expected_growth = float(jpm.growth_factor(cosmo, 1.0) / jpm.growth_factor(cosmo, 0.5)) ** 2
    assert ratio == pytest.approx(expected_growth, rel=0.1)


def test_snapshots_equal_a_direct_run(run):
    _, out, _, _ = run
    loaded = jpm.load_snapshots(out / "snapshots.npz")
    cosmo = jpm.Cosmology(Omega_c=0.25, sigma8=0.9)
    domain = jpm.Domain(MESH, BOX)
    assert loaded.cosmo == cosmo
    assert loaded.domain == domain
    meta = loaded.metadata
    assert meta["seed"] == SEED
    assert meta["lpt_order"] == 2
    assert meta["command_line"].startswith("jpm-simulate --mesh 16 --box 100.0")
    assert meta["step_boundaries"] == pytest.approx([0.1, 0.3, 0.5, 0.75, 1.0], abs=1e-12)

    delta = jpm.linear_field(jax.random.key(SEED), domain, lambda k: jpm.linear_power(cosmo, k))
    state = jpm.lpt(cosmo, delta, domain, A_INIT, order=2)
    direct = jpm.nbody(cosmo, state, domain, SNAPSHOTS, steps=[0.1, 0.3, 0.5, 0.75, 1.0])
    # same functions, same float32 inputs (the grids differ by 1 ulp in float64 at 0.3): bit for bit
    np.testing.assert_array_equal(loaded.snapshots.a, np.asarray(direct.snapshots.a))
    np.testing.assert_array_equal(
        loaded.snapshots.positions, np.asarray(direct.snapshots.positions)
    )
    np.testing.assert_array_equal(loaded.snapshots.momenta, np.asarray(direct.snapshots.momenta))
    assert loaded.snapshots.positions.dtype == np.float32


def test_a_finer_force_mesh_run_equals_a_direct_run(tmp_path, capsys):
    """`--force-mesh-factor 2`: forces on 32^3 with the finite-difference kernels, snapshots in
    the cells of the 16^3 particle grid."""
    argv = [*ARGV, "--force-mesh-factor", "2", "--no-plot", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "16^3 particles, forces on 32^3" in capsys.readouterr().out
    loaded = jpm.load_snapshots(tmp_path / "snapshots.npz")
    particles, mesh = jpm.Domain(MESH, BOX), jpm.Domain(2 * MESH, BOX)
    assert loaded.domain == particles
    assert loaded.metadata["options"]["kernel"] == "finite_difference"
    cosmo = jpm.Cosmology(Omega_c=0.25, sigma8=0.9)
    delta = jpm.linear_field(jax.random.key(SEED), particles, lambda k: jpm.linear_power(cosmo, k))
    state = jpm.rescale_state(jpm.lpt(cosmo, delta, particles, A_INIT, order=2), particles, mesh)
    forces = jpm.ForceConfig(kernel="finite_difference", laplace="finite_difference")
    steps = [0.1, 0.3, 0.5, 0.75, 1.0]
    direct = jpm.nbody(cosmo, state, mesh, SNAPSHOTS, steps=steps, forces=forces).snapshots
    direct = jpm.rescale_state(direct, mesh, particles)
    np.testing.assert_allclose(loaded.snapshots.positions, direct.positions, rtol=0, atol=1e-5)
    np.testing.assert_allclose(loaded.snapshots.momenta, direct.momenta, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", ["rfft", "jax"])
def test_a_device_grid_run_equals_the_one_device_run(backend, run, tmp_path, capsys):
    """`--devices 2 4` on the 8 fake CPU devices: same snapshots as the one-device run."""
    _, out, _, _ = run
    argv = [*ARGV, "--devices", "2", "4", "--fft-backend", backend, "--no-plot"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    one = jpm.load_snapshots(out / "snapshots.npz")
    grid = jpm.load_snapshots(tmp_path / "snapshots.npz")
    assert grid.domain == jpm.Domain(MESH, BOX, device_grid=(2, 4), halo=4, fft_backend=backend)
    np.testing.assert_allclose(grid.snapshots.positions, one.snapshots.positions, atol=2e-4)
    np.testing.assert_allclose(grid.snapshots.momenta, one.snapshots.momenta, rtol=1e-3, atol=2e-4)


def test_plot_is_skipped_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main([*ARGV, "--out", str(tmp_path)]) == 0  # the run of `run`: compiled already
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert "matplotlib is not installed" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "power_spectrum.csv",
        "snapshots.npz",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--box", "-5"], "--box must be positive"),
        (["--box", "0"], "got [0.0]"),
        (["--box", "1e-3"], "--box must lie in [1, 100000] Mpc/h per side, got [0.001]"),
        (["--box", "1e9"], "--box must lie in [1, 100000] Mpc/h per side, got [1000000000.0]"),
        (["--box", "100", "100", "2e5"], "got [100.0, 100.0, 200000.0]"),
        (["--format", "fits"], "invalid choice: 'fits'"),
        (["--mesh", "2"], "--mesh must be >= 4"),
        (["--mesh", "8", "8"], "--mesh takes 1 or 3 ints"),
        (["--snapshots", "0.5", "0.4"], "got 0.4 after 0.5"),
        (["--snapshots", "0.05"], "must not start before --a-init"),
        (["--snapshots", "2.0"], "got 2.0"),
        (["--snapshots", "0.5", "1.0", "--steps", "1"], "--steps 1 is smaller than the 2"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--omega-c", "-0.1"], "Omega_c must be > 0, got -0.1"),
        (["--sigma8", "nan"], "sigma8 must be finite"),
        (["--w0", "0.5"], "w0 + wa must be < 0"),
        (["--devices", "0"], "--devices takes 1 or 2 ints >= 1, got [0]"),
        (["--devices", "2", "2", "2"], "--devices takes 1 or 2 ints"),
        (["--devices", "3", "--mesh", "8"], "not divisible by device_grid[1]=3"),
        (["--devices", "16"], "needs 16 devices but 8 are visible"),
        (["--devices", "2", "--halo", "0"], "--halo must be >= 1 cell, got 0"),
        (["--devices", "2", "4", "--mesh", "12"], "divisible by px * py = 8"),
        (["--fft-backend", "fftw"], "invalid choice: 'fftw'"),
        (["--force-mesh-factor", "0"], "--force-mesh-factor must be >= 1, got 0"),
        (["--kernel", "fd"], "invalid choice: 'fd'"),
        (["--lpt-order", "3"], "invalid choice: 3"),
        (["--a-init", "0"], "--a-init must lie in (0, 1.5], got 0.0"),
    ],
)
def test_bad_input_is_an_argparse_error_before_any_compute(
    argv, message, tmp_path, monkeypatch, capsys
):
    def no_compute(*args, **kwargs):
        raise AssertionError("computation started despite bad input")

    monkeypatch.setattr(jpm, "linear_field", no_compute)
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "never")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_step_grid_puts_every_snapshot_on_a_boundary():
    grid = step_grid(0.1, [0.5, 1.0], 4)
    np.testing.assert_allclose(grid, [0.1, 0.3, 0.5, 0.75, 1.0], rtol=1e-15)
    np.testing.assert_array_equal(step_grid(0.2, [1.0], 7), np.linspace(0.2, 1.0, 8))
    grid = step_grid(0.1, [0.1, 0.2, 0.9, 1.0], 10)  # a snapshot at a_init takes no step
    assert grid.size == 11
    assert np.all(np.diff(grid) > 0)
    for a in (0.1, 0.2, 0.9, 1.0):
        assert np.any(grid == a)
    # 10 steps shared as 1 : 7 : 1 + remainder over lengths 0.1 : 0.7 : 0.1
    counts = [np.sum((grid > lo) & (grid <= hi)) for lo, hi in ((0.1, 0.2), (0.2, 0.9), (0.9, 1.0))]
    assert counts == [1, 8, 1]
    # a short interval still gets one step, taken from the longest
    grid = step_grid(0.1, [0.101, 1.0], 3)
    np.testing.assert_allclose(grid, [0.1, 0.101, 0.5505, 1.0], rtol=1e-12)


def test_python_m_help():
    completed = subprocess.run(
        [sys.executable, "-m", "jpm_core", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    for flag in ("--mesh", "--box", "--omega-c", "--snapshots", "--steps", "--devices", "--out"):
        assert flag in completed.stdout
    assert completed.stdout.startswith("usage: jpm-simulate")
