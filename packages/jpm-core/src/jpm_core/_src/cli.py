"""The `jpm-simulate` command line: a particle-mesh run from a few flags.

Gaussian initial conditions (seeded) -> 1LPT/2LPT at `--a-init` -> FastPM `nbody` to the requested
snapshots -> a snapshot file (`snapshots.npz`), the matter power spectrum of each snapshot with
linear theory (`power_spectrum.csv`, and `power_spectrum.png` when matplotlib is installed) and a
summary line. Every input is checked before any computation (argparse errors, exit code 2).
"""

from __future__ import annotations

import argparse
import itertools
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jpm_core._src.cosmology.parameters import Cosmology, check_cosmology
from jpm_core._src.domain import Domain
from jpm_core._src.lpt import A_MAX

__all__ = ["build_parser", "main", "step_grid"]

PROG = "jpm-simulate"
MIN_MESH = 4
SNAPSHOT_FILE = "snapshots.npz"
POWER_CSV = "power_spectrum.csv"
POWER_PNG = "power_spectrum.png"

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
            f"Writes OUT/{SNAPSHOT_FILE} (jpm_core.load_snapshots), OUT/{POWER_CSV} and "
            f"OUT/{POWER_PNG} (needs matplotlib: pip install 'jpm-core[plot]')."
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
        help="box side in Mpc/h: one number or 3 (Lx Ly Lz)",
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
        "boost factor; B = 2 brings the large-scale growth within 1%% of linear theory, see the "
        "README); snapshots and P(k) stay on the particle grid",
    )
    run.add_argument(
        "--kernel",
        choices=("spectral", "finite_difference"),
        default=None,
        help="gradient and Laplacian kernels of the force (default: spectral with "
        "--force-mesh-factor 1, finite_difference above, as the spectral kernel aliases the "
        "particle lattice on a finer mesh)",
    )
    run.add_argument(
        "--fft-backend",
        choices=("rfft", "jax", "cudecomp"),
        default="rfft",
        help="distributed FFT on a device grid: jpm-core's real FFT (default; X and Y divisible "
        "by PX*PY), or jaxdecomp's complex pencil FFT with XLA ('jax') or cuDecomp collectives",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("jpm_simulation"), help="output directory")
    out.add_argument("--no-plot", action="store_true", help=f"do not write {POWER_PNG}")
    out.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print the steps to stderr as they run (default: when stderr is a terminal)",
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
        args.kernel = "spectral" if args.force_mesh_factor == 1 else "finite_difference"
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
    if args.domain.is_distributed:
        import jax

        visible = len(jax.devices())
        if visible < args.domain.n_devices:
            parser.error(
                f"--devices {' '.join(map(str, args.devices))} needs {args.domain.n_devices} "
                f"devices but {visible} are visible (on CPUs set "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={args.domain.n_devices})"
            )


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run `jpm-simulate` (the console script and `python -m jpm_core`).

    **Arguments:**

    - `argv`: the arguments without the program name; default `sys.argv[1:]`.

    **Returns:** 0 on success. Bad input exits through argparse (`SystemExit(2)`).
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
    delta = jpm.linear_field(
        jax.random.key(args.seed), domain, lambda k: jpm.linear_power(cosmo, k)
    )
    state = jpm.lpt(cosmo, delta, domain, args.a_init, order=args.lpt_order)
    force_domain = args.force_domain
    result = jpm.nbody(
        cosmo,
        jpm.rescale_state(state, domain, force_domain),
        force_domain,
        args.snapshots,
        steps=[float(a) for a in grid],
        progress=progress,
        kernel=args.kernel,
        laplace=args.kernel,
    )
    # snapshots in the cells of the particle grid, the domain the file records
    snapshots = jpm.rescale_state(result.snapshots, force_domain, domain)
    result = jax.block_until_ready(result._replace(snapshots=snapshots))

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    options = {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in vars(args).items()
        if key not in ("grid", "cosmo", "domain", "force_domain")
    }
    snapshot_path = jpm.save_snapshots(
        out / SNAPSHOT_FILE,
        result,
        domain=domain,
        cosmo=cosmo,
        metadata={
            "seed": args.seed,
            "lpt_order": args.lpt_order,
            "a_init": args.a_init,
            "step_boundaries": [float(a) for a in grid],
            "initial_conditions": (
                "linear_field(jax.random.key(seed), domain, linear_power(cosmo, k)) at a = 1, "
                "Eisenstein-Hu transfer function, then lpt(order) at a_init"
            ),
            "command_line": shlex.join([PROG, *argv]),
            "options": options,
        },
    )
    scale_factors = [float(a) for a in np.asarray(result.snapshots.a)]
    k, n_modes, measured, linear = _power_spectra(result, args)
    _write_csv(out / POWER_CSV, k, n_modes, measured, linear, scale_factors)
    written = [snapshot_path.name, POWER_CSV]
    if not args.no_plot and _plot(out / POWER_PNG, k, measured, linear, scale_factors, args):
        written.append(POWER_PNG)
    elapsed = time.perf_counter() - start
    ratio = measured[-1][0] / linear[-1][0]
    print(
        f"{PROG}: {_mesh_text(domain)} particles, forces on {_mesh_text(force_domain)}, "
        f"box {_box_text(domain)} Mpc/h, "
        f"{args.lpt_order}LPT at "
        f"a={args.a_init:g}, {args.steps} steps, snapshots at a={','.join(map(str, scale_factors))}"
        f"; P/P_lin at k={k[0]:.3g} h/Mpc, a={scale_factors[-1]:g}: {ratio:.3f}; "
        f"wrote {', '.join(written)} to {out} in {elapsed:.1f} s"
    )
    return 0
