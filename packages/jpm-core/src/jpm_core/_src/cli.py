"""The `jpm-simulate` command line: a particle-mesh run from a few flags.

Gaussian initial conditions (seeded) -> 1LPT/2LPT at `--a-init` -> FastPM `nbody` to the requested
snapshots -> a snapshot file (`snapshots.npz` and/or `snapshots.h5`), the matter power spectrum of
each snapshot with linear theory (`power_spectrum.csv`, and `power_spectrum.png` when matplotlib is
installed), a `manifest.json` and a summary line.

Every input is checked before any computation (argparse errors, exit code 2), the output folder
included: an existing non-empty `--out` is refused unless `--overwrite`. The run is written into a
fresh hidden folder next to `--out` and renamed into place only once complete (manifest last, with
`"complete": true`), so `--out` never holds a half-written run or a mix of two runs.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from jpm_core._src.config import ForceConfig
from jpm_core._src.cosmology.parameters import Cosmology, check_cosmology
from jpm_core._src.domain import Domain
from jpm_core._src.io import MANIFEST_FILE, publish_folder, staged_folder, write_manifest
from jpm_core._src.lpt import A_MAX

__all__ = ["build_parser", "main", "step_grid"]

PROG = "jpm-simulate"
MIN_MESH = 4
# The box sides accepted, in Mpc/h. Below 1 Mpc/h the whole box is non-linear (sigma(R = 1 Mpc/h)
# = 2.4 today for Planck 2018), far from a fair sample of the universe, and at scales where
# collisionless dark-matter-only gravity and the Eisenstein-Hu linear power are not the physics.
# Above 1e5 Mpc/h the box is 33 Hubble distances c/H0 (5 times the diameter of the observable
# universe, ~1.9e4 Mpc/h): its large modes are outside the horizon, where Newtonian gravity does
# not hold. Either is most likely a unit slip (kpc/h, Mpc without h, a typo in the exponent).
MIN_BOX, MAX_BOX = 1.0, 1.0e5
SNAPSHOT_FILE = "snapshots.npz"
SNAPSHOT_H5 = "snapshots.h5"
POWER_CSV = "power_spectrum.csv"
POWER_PNG = "power_spectrum.png"
# what a jpm-simulate 0.1 run (before manifests) wrote: such a folder may be replaced too
_RUN_FILES_0_1 = frozenset({SNAPSHOT_FILE, POWER_CSV, POWER_PNG})
# XLA's compilations (sequential, never nested, unlike JAX's tracing events)
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

_COSMO_FLAGS = {  # flag -> Cosmology field
    "omega_c": "Omega_c",
    "omega_b": "Omega_b",
    "h": "h",
    "n_s": "n_s",
    "sigma8": "sigma8",
    "w0": "w0",
    "wa": "wa",
}


def step_grid(a_init: float, snapshots: Sequence[float], steps: int) -> np.ndarray:
    """Step boundaries from `a_init` to the last snapshot with every snapshot on a boundary.

    The `steps` steps are shared between the segments `[a_init, s1], [s1, s2], ...` in
    proportion to their length in `a` (largest remainders; at least one step each, taken from
    the segment with the most steps), and each
    segment is split uniformly in `a`. With one snapshot this is `linspace(a_init, s1, steps + 1)`,
    the grid of `nbody(..., steps=steps)`. A first snapshot equal to `a_init` takes no step.

    **Arguments:**

    - `a_init`: the initial scale factor.
    - `snapshots`: strictly increasing scale factors, the first `>= a_init`.
    - `steps`: total number of steps, at least the number of segments.

    **Returns:** float64 array of shape `(steps + 1,)`.

    **Raises:** `ValueError` if `steps` is smaller than the number of segments.
    """
    ends = [float(s) for s in snapshots if s > a_init]
    starts = [float(a_init), *ends[:-1]]
    lengths = np.array(ends) - np.array(starts)
    n_seg = len(ends)
    if steps < n_seg:
        raise ValueError(
            f"--steps {steps} is smaller than the {n_seg} intervals between --a-init and the "
            "snapshots (each needs at least one step)"
        )
    share = steps * lengths / lengths.sum()
    counts = np.floor(share).astype(int)
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: steps - counts.sum()]] += 1
    while np.any(counts == 0):  # every interval needs a step: take it from the most refined one
        counts[np.argmax(counts)] -= 1
        counts[np.flatnonzero(counts == 0)[0]] += 1
    pieces = [np.linspace(s, e, n + 1)[:-1] for s, e, n in zip(starts, ends, counts, strict=True)]
    return np.concatenate([*pieces, [ends[-1]]])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `jpm-simulate` (defaults: Planck 2018 from `Cosmology`)."""
    planck = Cosmology()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Run a particle-mesh N-body simulation (2LPT initial conditions + FastPM "
            "kick-drift-kick) of a periodic box and write the snapshots and their power spectra."
        ),
        epilog=(
            f"Writes OUT/{SNAPSHOT_FILE} and/or OUT/{SNAPSHOT_H5} (jpm_core.load_snapshots), "
            f"OUT/{POWER_CSV}, OUT/{POWER_PNG} (needs matplotlib: pip install 'jpm-core[plot]') "
            f"and OUT/{MANIFEST_FILE} (every file with its size and SHA-256, the configuration, "
            "the version, complete: true). The run is written next to OUT and renamed into place "
            "once complete; jpm_core.load_snapshots(OUT) checks it against the manifest."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    box = parser.add_argument_group("box and mesh")
    box.add_argument(
        "--mesh",
        type=int,
        nargs="+",
        default=[64],
        metavar="N",
        help="cells (= particles) per axis: one int for a cube or 3 ints (nx ny nz), each >= 4",
    )
    box.add_argument(
        "--box",
        type=float,
        nargs="+",
        default=[256.0],
        metavar="L",
        help=f"box side in Mpc/h: one number or 3 (Lx Ly Lz), each in [{MIN_BOX:g}, {MAX_BOX:g}]",
    )
    cosmo = parser.add_argument_group("cosmology (flat w0-wa CDM; defaults Planck 2018)")
    for flag, field in _COSMO_FLAGS.items():
        cosmo.add_argument(
            "--" + flag.replace("_", "-"),
            dest=flag,
            type=float,
            default=float(getattr(planck, field)),
            metavar="X",
            help=f"Cosmology.{field}",
        )
    run = parser.add_argument_group("time stepping")
    run.add_argument("--a-init", type=float, default=0.1, help="scale factor of the LPT start")
    run.add_argument(
        "--snapshots",
        type=float,
        nargs="+",
        default=[1.0],
        metavar="A",
        help=f"scale factors of the snapshots, strictly increasing, in [a_init, {A_MAX}]",
    )
    run.add_argument(
        "--steps",
        type=int,
        default=10,
        help="total number of kick-drift-kick steps, shared between the snapshot intervals in "
        "proportion to their length in a (each snapshot is a step boundary)",
    )
    run.add_argument("--lpt-order", type=int, choices=(1, 2), default=2, help="LPT order")
    run.add_argument("--seed", type=int, default=0, help="seed of the initial white noise")
    run.add_argument(
        "--devices",
        type=int,
        nargs="+",
        default=[1],
        metavar="N",
        help="device grid: PX PY, or one number N for a (1, N) grid; default 1 (on CPUs, "
        "XLA_FLAGS=--xla_force_host_platform_device_count=N makes N devices)",
    )
    run.add_argument(
        "--halo",
        type=int,
        default=None,
        help="halo width in cells on a device grid (default: 4, or the local slab width if "
        "smaller); particles may stray this far from their device's slab",
    )
    run.add_argument(
        "--force-mesh-factor",
        type=int,
        default=1,
        metavar="B",
        help="compute forces on a mesh B times finer than the particle grid per axis (FastPM's "
        "boost factor); snapshots and P(k) stay on the particle grid. The default B = 1 with "
        "--kernel lattice already follows linear growth within 1%% up to k_Nyq/4 (see the README)",
    )
    run.add_argument(
        "--kernel",
        choices=("lattice", "spectral", "finite_difference"),
        default=None,
        help="force kernels: 'lattice' (spectral gradient, TSC's lattice-consistent Laplacian; "
        "the default with --force-mesh-factor 1, where it is exact for linear growth), "
        "'spectral' or 'finite_difference' (that gradient and Laplacian; finite_difference is the "
        "default above 1, as the spectral gradient aliases the particle lattice on a finer mesh)",
    )
    run.add_argument(
        "--scheme",
        choices=("tsc", "cic"),
        default=None,
        help="mass assignment of the force (default: tsc with --kernel lattice, which needs it; "
        "cic otherwise)",
    )
    run.add_argument(
        "--fft-backend",
        choices=("rfft", "jax", "cudecomp"),
        default="rfft",
        help="distributed FFT on a device grid: jpm-core's real FFT (default; X and Y divisible "
        "by PX*PY), or jaxdecomp's complex pencil FFT with XLA ('jax') or cuDecomp collectives",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--out",
        type=Path,
        default=Path("jpm_simulation"),
        help="output directory; must be missing or empty unless --overwrite",
    )
    out.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the previous run in --out, atomically and only once the new run is "
        "complete (a folder that is not a jpm-simulate run is never replaced)",
    )
    out.add_argument(
        "--format",
        choices=("npz", "hdf5", "both"),
        default="npz",
        help=f"snapshot file: {SNAPSHOT_FILE} (NumPy), {SNAPSHOT_H5} (HDF5, needs h5py: pip "
        "install 'jpm-core[hdf5]') or both, with the same arrays and metadata",
    )
    out.add_argument("--no-plot", action="store_true", help=f"do not write {POWER_PNG}")
    out.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show nbody's progress bar on stderr (default: when stderr is a terminal)",
    )
    return parser


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Turn every bad input into an argparse error (exit code 2) before any computation."""
    if len(args.mesh) not in (1, 3):
        parser.error(f"--mesh takes 1 or 3 ints, got {len(args.mesh)}: {args.mesh}")
    if any(n < MIN_MESH for n in args.mesh):
        parser.error(f"--mesh must be >= {MIN_MESH} cells per axis, got {args.mesh}")
    if len(args.box) not in (1, 3):
        parser.error(f"--box takes 1 or 3 numbers, got {len(args.box)}: {args.box}")
    if not all(math.isfinite(b) and b > 0 for b in args.box):
        parser.error(f"--box must be positive and finite (Mpc/h), got {args.box}")
    if not all(MIN_BOX <= b <= MAX_BOX for b in args.box):
        parser.error(
            f"--box must lie in [{MIN_BOX:g}, {MAX_BOX:g}] Mpc/h per side, got {args.box}: a box "
            f"below {MIN_BOX:g} Mpc/h is non-linear as a whole, one above {MAX_BOX:g} Mpc/h (33 "
            "Hubble distances) is far beyond the horizon where Newtonian gravity fails (a unit "
            "slip? lengths are comoving Mpc/h)"
        )
    if len(args.devices) not in (1, 2) or any(n < 1 for n in args.devices):
        parser.error(f"--devices takes 1 or 2 ints >= 1, got {args.devices}")
    grid = (1, args.devices[0]) if len(args.devices) == 1 else tuple(args.devices)
    if args.halo is not None and args.halo < 1:
        parser.error(f"--halo must be >= 1 cell, got {args.halo}")
    if not (math.isfinite(args.a_init) and 0 < args.a_init <= A_MAX):
        parser.error(f"--a-init must lie in (0, {A_MAX}], got {args.a_init}")
    snaps = args.snapshots
    bad = [a for a in snaps if not (math.isfinite(a) and 0 < a <= A_MAX)]
    if bad:
        parser.error(f"--snapshots must lie in (0, {A_MAX}], got {bad[0]} in {snaps}")
    for before, after in itertools.pairwise(snaps):
        if after <= before:
            parser.error(f"--snapshots must be strictly increasing, got {after} after {before}")
    if snaps[0] < args.a_init:
        parser.error(f"--snapshots must not start before --a-init {args.a_init}, got {snaps[0]}")
    if snaps[-1] == args.a_init:
        parser.error(f"the last snapshot {snaps[-1]} must be after --a-init {args.a_init}")
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    try:
        args.grid = step_grid(args.a_init, snaps, args.steps)
    except ValueError as error:
        parser.error(str(error))
    try:
        args.cosmo = check_cosmology(
            Cosmology(**{field: getattr(args, flag) for flag, field in _COSMO_FLAGS.items()})
        )
    except ValueError as error:
        parser.error(f"bad cosmology: {error}")
    try:
        domain = Domain(
            mesh_shape=args.mesh[0] if len(args.mesh) == 1 else tuple(args.mesh),
            box_size=args.box[0] if len(args.box) == 1 else tuple(args.box),
            device_grid=grid,
            fft_backend=args.fft_backend,
        )
        if domain.is_distributed:
            lx, ly, _ = domain.local_mesh_shape
            widths = [w for w, p in zip((lx, ly), grid, strict=True) if p > 1]
            halo = min(4, *widths) if args.halo is None else args.halo
            domain = Domain(
                domain.mesh_shape,
                domain.box_size,
                device_grid=grid,
                halo=halo,
                fft_backend=args.fft_backend,
            )
        args.domain = domain
    except (TypeError, ValueError) as error:
        parser.error(f"--mesh/--devices/--halo/--fft-backend: {error}")
    if args.force_mesh_factor < 1:
        parser.error(f"--force-mesh-factor must be >= 1, got {args.force_mesh_factor}")
    if args.kernel is None:
        args.kernel = "lattice" if args.force_mesh_factor == 1 else "finite_difference"
    if args.kernel == "lattice" and args.force_mesh_factor != 1:
        parser.error(
            "--kernel lattice is the lattice-consistent kernel for one particle per cell: use it "
            f"with --force-mesh-factor 1 (got {args.force_mesh_factor}), or pass "
            "--kernel finite_difference"
        )
    if args.scheme is None:
        args.scheme = "tsc" if args.kernel == "lattice" else "cic"
    try:
        args.forces = ForceConfig(
            kernel="spectral" if args.kernel == "lattice" else args.kernel,
            laplace=args.kernel,
            scheme=args.scheme,
        )
    except ValueError as error:
        parser.error(f"--kernel/--scheme: {error}")
    b = args.force_mesh_factor
    try:
        d = args.domain
        args.force_domain = (
            d
            if b == 1
            else Domain(
                tuple(n * b for n in d.mesh_shape),
                d.box_size,
                device_grid=d.device_grid,
                halo=d.halo * b,
                fft_backend=d.fft_backend,
            )
        )
    except (TypeError, ValueError) as error:
        parser.error(f"--force-mesh-factor: {error}")
    _validate_output(parser, args)
    if args.domain.is_distributed:
        import jax

        visible = len(jax.devices())
        if visible < args.domain.n_devices:
            parser.error(
                f"--devices {' '.join(map(str, args.devices))} needs {args.domain.n_devices} "
                f"devices but {visible} are visible (on CPUs set "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={args.domain.n_devices})"
            )


def _validate_output(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`--out`, `--overwrite`, `--format`: refuse what would fail or destroy data after the run."""
    if args.format in ("hdf5", "both"):
        try:
            import h5py  # noqa: F401
        except ImportError:
            parser.error(
                f"--format {args.format} needs h5py, which is not installed: "
                "pip install 'jpm-core[hdf5]' (or use --format npz)"
            )
    out = Path(os.path.abspath(args.out))
    if out.parent == out:
        parser.error(f"--out {args.out} is a file system root, not a run folder")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            parser.error(f"--out {args.out} exists and is not a directory")
        if out.is_symlink():
            parser.error(f"--out {args.out} is a symbolic link: give the folder it points to")
        entries = sorted(entry.name for entry in out.iterdir())
        if entries and not args.overwrite:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            parser.error(
                f"--out {args.out} is not empty ({shown}): pass --overwrite to replace the "
                "previous run once the new one is complete, or choose another folder"
            )
        if entries and MANIFEST_FILE not in entries and not set(entries) <= _RUN_FILES_0_1:
            parser.error(
                f"--out {args.out} holds files but no {MANIFEST_FILE}: not a jpm-simulate run, "
                "so it is not replaced even with --overwrite; choose another folder"
            )
    existing = out.parent
    while not existing.exists():  # the run's parent folder is created if missing
        existing = existing.parent
    if not existing.is_dir():
        parser.error(f"--out {args.out}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"--out {args.out}: cannot write in {existing} (permission denied)")
    args.out_path = out


@contextlib.contextmanager
def _compile_clock() -> Iterator[list[float]]:
    """Sum the seconds XLA spends compiling inside the block (`jax.monitoring` events)."""
    import jax.monitoring

    seconds = [0.0]

    def listen(event: str, duration: float, **_: object) -> None:
        if event == _COMPILE_EVENT:
            seconds[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield seconds
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def _status(message: str) -> None:
    """One status line on stderr, through a rich console (plain text when redirected)."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"{PROG}: {message}", markup=False)


def _mesh_text(domain: Domain) -> str:
    nx, ny, nz = domain.mesh_shape
    return f"{nx}^3" if nx == ny == nz else f"{nx}x{ny}x{nz}"


def _box_text(domain: Domain) -> str:
    lx, ly, lz = domain.box_size
    return f"{lx:g}^3" if lx == ly == lz else f"{lx:g}x{ly:g}x{lz:g}"


def _power_spectra(result, args):
    """`(k, n_modes, [P(a)], [P_lin(a)])` of every snapshot (NumPy, non-empty bins only)."""
    import jpm_core as jpm

    domain, cosmo = args.domain, args.cosmo
    k, n_modes, measured, linear = None, None, [], []
    for positions, a in zip(result.snapshots.positions, result.snapshots.a, strict=True):
        rho = jpm.paint(positions, domain, scheme="cic")
        spectrum = jpm.power_spectrum(rho / rho.mean() - 1.0, domain, deconvolve="cic")
        keep = np.asarray(spectrum.n_modes) > 0
        k = np.asarray(spectrum.k, dtype=np.float64)[keep]
        n_modes = np.asarray(spectrum.n_modes)[keep]
        measured.append(np.asarray(spectrum.power, dtype=np.float64)[keep])
        linear.append(np.asarray(jpm.linear_power(cosmo, k, float(a)), dtype=np.float64))
    return k, n_modes, measured, linear


def _write_csv(path: Path, k, n_modes, measured, linear, scale_factors) -> None:
    columns = ["k_h_per_Mpc", "n_modes"]
    for a in scale_factors:
        columns += [f"pk_a{a:.4f}", f"pk_linear_a{a:.4f}"]
    table = np.column_stack(
        [k, n_modes, *[c for pair in zip(measured, linear, strict=True) for c in pair]]
    )
    np.savetxt(path, table, delimiter=",", header=",".join(columns), comments="", fmt="%.8e")


def _plot(path: Path, k, measured, linear, scale_factors, args) -> bool:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print(
            f"{PROG}: matplotlib is not installed, skipping {path.name} "
            "(pip install 'jpm-core[plot]')"
        )
        return False
    fig = Figure(figsize=(6.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for i, (a, pk, pk_lin) in enumerate(zip(scale_factors, measured, linear, strict=True)):
        color = f"C{i % 10}"
        ax.loglog(k, pk, color=color, label=f"a = {a:g}")
        ax.loglog(k, pk_lin, color=color, linestyle="--", linewidth=1)
    ax.plot([], [], color="gray", linestyle="--", label="linear theory $D_1(a)^2 P_{lin}$")
    ax.set_xlabel("k [h/Mpc]")
    ax.set_ylabel("P(k) [(Mpc/h)$^3$]")
    ax.set_title(
        f"{_mesh_text(args.domain)} particles, box {_box_text(args.domain)} Mpc/h, "
        f"{args.steps} steps",
        fontsize="medium",
    )
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    return True


def _configuration(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    """The run's configuration, as the manifest records it (JSON-able)."""
    import dataclasses

    options = {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in vars(args).items()
        if key not in ("grid", "cosmo", "domain", "force_domain", "out_path", "forces")
    }
    d, f = args.domain, args.force_domain
    return {
        "command_line": shlex.join([PROG, *argv]),
        "options": options,
        "cosmology": {
            field.name: float(getattr(args.cosmo, field.name))
            for field in dataclasses.fields(args.cosmo)
        },
        "domain": {
            "mesh_shape": list(d.mesh_shape),
            "box_size": list(d.box_size),
            "device_grid": list(d.device_grid),
            "halo": d.halo,
            "fft_backend": d.fft_backend,
        },
        "force_mesh_shape": list(f.mesh_shape),
        "forces": dataclasses.asdict(args.forces),
        "step_boundaries": [float(a) for a in args.grid],
        "dtype": "float32",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run `jpm-simulate` (the console script and `python -m jpm_core`).

    **Arguments:**

    - `argv`: the arguments without the program name; default `sys.argv[1:]`.

    **Returns:** 0 on success. Bad input exits through argparse (`SystemExit(2)`) before any
    computation; a failure while writing leaves `--out` as it was.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    progress = sys.stderr.isatty() if args.progress is None else args.progress

    import jax

    import jpm_core as jpm

    start = time.perf_counter()
    domain, cosmo, grid = args.domain, args.cosmo, args.grid
    force_domain = args.force_domain
    _status(
        f"compiling and running {_mesh_text(domain)} particles, forces on "
        f"{_mesh_text(force_domain)}, {args.steps} steps (XLA compilation comes first and is "
        "most of a short run) ..."
    )
    with _compile_clock() as compile_seconds:
        delta = jpm.linear_field(
            jax.random.key(args.seed), domain, lambda k: jpm.linear_power(cosmo, k)
        )
        state = jpm.lpt(cosmo, delta, domain, args.a_init, order=args.lpt_order)
        result = jpm.nbody(
            cosmo,
            jpm.rescale_state(state, domain, force_domain),
            force_domain,
            args.snapshots,
            steps=[float(a) for a in grid],
            forces=args.forces,
            progress=progress,
        )
        # snapshots in the cells of the particle grid, the domain the file records
        snapshots = jpm.rescale_state(result.snapshots, force_domain, domain)
        result = jax.block_until_ready(result._replace(snapshots=snapshots))
        simulated = time.perf_counter()
        compiled = min(compile_seconds[0], simulated - start)
        k, n_modes, measured, linear = _power_spectra(result, args)
    compiled_all = compile_seconds[0]
    _status(
        f"simulation done in {simulated - start:.1f} s: {compiled:.1f} s XLA compilation, "
        f"{simulated - start - compiled:.1f} s tracing and running"
    )

    configuration = _configuration(args, argv)
    metadata = {
        "seed": args.seed,
        "lpt_order": args.lpt_order,
        "a_init": args.a_init,
        "step_boundaries": configuration["step_boundaries"],
        "initial_conditions": (
            "linear_field(jax.random.key(seed), domain, linear_power(cosmo, k)) at a = 1, "
            "Eisenstein-Hu transfer function, then lpt(order) at a_init"
        ),
        "command_line": configuration["command_line"],
        "options": configuration["options"],
    }
    snapshot_files = {"npz": [SNAPSHOT_FILE], "hdf5": [SNAPSHOT_H5]}.get(
        args.format, [SNAPSHOT_FILE, SNAPSHOT_H5]
    )
    scale_factors = [float(a) for a in np.asarray(result.snapshots.a)]
    out = args.out_path
    with staged_folder(out) as staging:
        # a manifest saying "incomplete" first: a folder left by a killed run says what it is
        write_manifest(staging, configuration=configuration, snapshot_files=[], complete=False)
        for name in snapshot_files:
            jpm.save_snapshots(
                staging / name, result, domain=domain, cosmo=cosmo, metadata=metadata
            )
        _write_csv(staging / POWER_CSV, k, n_modes, measured, linear, scale_factors)
        written = [*snapshot_files, POWER_CSV]
        if not args.no_plot and _plot(
            staging / POWER_PNG, k, measured, linear, scale_factors, args
        ):
            written.append(POWER_PNG)
        write_manifest(
            staging, configuration=configuration, snapshot_files=snapshot_files, complete=True
        )
        written.append(MANIFEST_FILE)
        publish_folder(staging, out, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    ratio = measured[-1][0] / linear[-1][0]
    print(
        f"{PROG}: {_mesh_text(domain)} particles, forces on {_mesh_text(force_domain)}, "
        f"box {_box_text(domain)} Mpc/h, "
        f"{args.lpt_order}LPT at "
        f"a={args.a_init:g}, {args.steps} steps, snapshots at a={','.join(map(str, scale_factors))}"
        f"; P/P_lin at k={k[0]:.3g} h/Mpc, a={scale_factors[-1]:g}: {ratio:.3f}; "
        f"wrote {', '.join(written)} to {args.out} in {elapsed:.1f} s "
        f"({compiled_all:.1f} s XLA compilation)"
    )
    return 0
