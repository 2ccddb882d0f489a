"""`jpm-hybrid`: make the truth, train a correction, evaluate it against plain PM (and PGD).

Three subcommands, each validating every argument before it computes anything and writing its
output atomically (a temporary name renamed into place once complete; an existing output is
refused unless `--overwrite`):

- `jpm-hybrid truth OUT`: initial conditions from seeds (2LPT at `--a-init`), each integrated on a
  force mesh `--boost` times finer with `--truth-steps` steps (`jpm_hybrid.make_truth`), written as
  `OUT/truth_seed<seed>.npz` with `OUT/jpm-hybrid-truth.json`.
- `jpm-hybrid train TRUTH... --out FILTER`: trains a `SplineFilter` (`--k-unit physical|grid`) or
  the PGD baseline (`--model pgd`) on one or more truth folders (`jpm_hybrid.train_hybrid`, a
  progress bar with the loss), and writes the filter (`jpm_hybrid.save_filter`; PGD: a JSON file of
  its three parameters) with how it was trained in its metadata.
- `jpm-hybrid evaluate TRUTH --out DIR [--filter F] [--pgd P]`: runs plain PM, PGD and the hybrid
  on every truth of the folder and writes `metrics.json`, `metrics.csv` and two plots (P(k) ratio
  and r(k) against the truth at the last snapshot; `--no-plots` to skip).

Progress goes to stderr; the last line on stdout is a one-line summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

import jpm_core

from .checkpoint import load_filter, save_filter
from .filters import FilterConfig, SplineFilter, check_force_reversal
from .pgd import PGDCorrection, pgd_parameters
from .simulate import hybrid_nbody, load_truth, make_truth
from .train import train_hybrid

MANIFEST = "jpm-hybrid-truth.json"  # not manifest.json: jpm_core.load_snapshots reads that one
PGD_KIND = "jpm_hybrid.PGDCorrection"
BOX_RANGE = (1.0, 1.0e5)  # Mpc/h: outside it a run is surely a units mistake


def _version() -> str:
    from .. import __version__

    return __version__


# ----------------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jpm-hybrid",
        description="Hybrid physical-neural PM: make the truth, train a correction, evaluate it.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    truth = sub.add_parser("truth", help="initial conditions and their finer-mesh truth runs")
    truth.add_argument("out", type=Path, help="folder to write (refused if it exists)")
    truth.add_argument("--mesh", type=int, default=32, help="particles and coarse mesh per side")
    truth.add_argument("--box", type=float, default=64.0, help="box side in Mpc/h")
    truth.add_argument("--seeds", type=int, nargs="+", default=[0])
    truth.add_argument("--omega-m", type=float, default=0.3, help="Omega_m (Omega_b fixed)")
    truth.add_argument("--sigma8", type=float, default=0.8)
    truth.add_argument("--a-init", type=float, default=0.1, help="2LPT initial scale factor")
    truth.add_argument(
        "--snapshots", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0], help="targets"
    )
    truth.add_argument("--boost", type=int, default=4, help="force-mesh refinement per side")
    truth.add_argument("--truth-steps", type=int, default=100)
    truth.add_argument("--overwrite", action="store_true")
    truth.add_argument("--no-progress", action="store_true")

    train = sub.add_parser("train", help="train a SplineFilter (or PGD) on truth folders")
    train.add_argument("truth", type=Path, nargs="+", help="folders written by `truth`")
    train.add_argument("--out", type=Path, required=True, help="filter file to write")
    train.add_argument("--model", choices=("spline", "pgd"), default="spline")
    train.add_argument("--k-unit", choices=("physical", "grid"), default="physical")
    train.add_argument(
        "--k-max",
        type=float,
        default=None,
        help="top of the spline's |k| range (the correction is constant beyond it); default the "
        "training mesh's Nyquist frequency (pi / cell in h/Mpc, or 1 in grid units), the largest "
        "|k| the loss's power term constrains",
    )
    train.add_argument("--steps", type=int, default=10, help="time steps of the hybrid run")
    train.add_argument("--iterations", type=int, default=300, help="optimisation steps")
    train.add_argument("--learning-rate", type=float, default=1e-2)
    train.add_argument("--power-weight", type=float, default=0.1)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint", type=Path, default=None, help="resumable run state")
    train.add_argument("--overwrite", action="store_true")
    train.add_argument("--no-progress", action="store_true")

    evaluate = sub.add_parser("evaluate", help="PM / PGD / hybrid against the truth")
    evaluate.add_argument("truth", type=Path, help="a folder written by `truth` (held-out seeds)")
    evaluate.add_argument("--out", type=Path, required=True, help="folder to write")
    evaluate.add_argument("--filter", type=Path, default=None, help="a SplineFilter file")
    evaluate.add_argument("--pgd", type=Path, default=None, help="a PGD parameter file")
    evaluate.add_argument("--steps", type=int, default=10)
    evaluate.add_argument("--overwrite", action="store_true")
    evaluate.add_argument("--no-plots", action="store_true")
    return parser


def _fail(parser: argparse.ArgumentParser, message: str) -> None:
    parser.error(message)


def _check_out(parser, path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        _fail(parser, f"{path} exists: pass --overwrite to replace it")
    if not path.parent.exists():
        _fail(parser, f"the folder of {path} does not exist")


def _check_truth_folder(parser, path: Path) -> dict:
    manifest = path / MANIFEST
    if not manifest.is_file():
        _fail(parser, f"{path} is not a folder written by `jpm-hybrid truth` (no {MANIFEST})")
    info = json.loads(manifest.read_text())
    if info.get("what") != "jpm-hybrid truth" or not info.get("complete"):
        _fail(parser, f"{manifest} does not describe a complete `jpm-hybrid truth` folder")
    for name in info["files"]:
        if not (path / name).is_file():
            _fail(parser, f"{path / name} listed in {manifest} is missing")
    return info


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command == "truth":
        if args.mesh < 4 or args.mesh % 2:
            _fail(parser, f"--mesh must be an even integer >= 4, got {args.mesh}")
        if not (math.isfinite(args.box) and BOX_RANGE[0] <= args.box <= BOX_RANGE[1]):
            _fail(
                parser, f"--box must be in [{BOX_RANGE[0]}, {BOX_RANGE[1]}] Mpc/h, got {args.box}"
            )
        if not 0.05 < args.omega_m < 1.0:
            _fail(parser, f"--omega-m must be in (0.05, 1), got {args.omega_m}")
        if not 0.0 < args.sigma8 < 3.0:
            _fail(parser, f"--sigma8 must be in (0, 3), got {args.sigma8}")
        if not 0.0 < args.a_init < 1.0:
            _fail(parser, f"--a-init must be in (0, 1), got {args.a_init}")
        snaps = np.asarray(args.snapshots)
        if np.any(np.diff(snaps) <= 0) or snaps[0] <= args.a_init or not np.all(np.isfinite(snaps)):
            _fail(parser, "--snapshots must be increasing and after --a-init")
        if not 1 <= args.boost <= 8:
            _fail(parser, f"--boost must be in [1, 8], got {args.boost}")
        if args.truth_steps < len(args.snapshots):
            _fail(parser, "--truth-steps must be at least the number of snapshots")
        if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
            _fail(parser, "--seeds must be distinct non-negative integers")
        _check_out(parser, args.out, args.overwrite)
    elif args.command == "train":
        infos = [_check_truth_folder(parser, p) for p in args.truth]
        first = infos[0]
        for p, info in zip(args.truth[1:], infos[1:], strict=True):
            for field in ("mesh", "box", "a_init", "snapshots"):
                if info[field] != first[field]:
                    _fail(parser, f"{p}: {field} differs from {args.truth[0]}'s")
        if args.iterations < 1 or args.steps < 1:
            _fail(parser, "--iterations and --steps must be positive")
        if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
            _fail(parser, f"--learning-rate must be positive, got {args.learning_rate}")
        if not (math.isfinite(args.power_weight) and args.power_weight >= 0):
            _fail(parser, f"--power-weight must be >= 0, got {args.power_weight}")
        if args.model == "pgd" and (args.k_unit != "physical" or args.k_max is not None):
            _fail(parser, "--k-unit and --k-max apply to the spline filter only")
        if args.k_max is not None and not (math.isfinite(args.k_max) and args.k_max > 0):
            _fail(parser, f"--k-max must be positive, got {args.k_max}")
        _check_out(parser, args.out, args.overwrite)
    else:
        _check_truth_folder(parser, args.truth)
        for flag, path in (("--filter", args.filter), ("--pgd", args.pgd)):
            if path is not None and not path.is_file():
                _fail(parser, f"{flag} {path}: no such file")
        if args.steps < 1:
            _fail(parser, "--steps must be positive")
        _check_out(parser, args.out, args.overwrite)


# ----------------------------------------------------------------------------------- helpers


def cosmology(omega_m: float, sigma8: float) -> jpm_core.Cosmology:
    """The CLI's cosmology: jpm-core's defaults (Planck 2018) with `Omega_m` and `sigma8` set
    (`Omega_b` fixed, `Omega_c = Omega_m - Omega_b`)."""
    base = jpm_core.Cosmology()
    return jpm_core.Cosmology(
        Omega_c=omega_m - float(base.Omega_b), Omega_b=base.Omega_b, sigma8=sigma8
    )


def initial_state(seed: int, cosmo, domain, a_init: float) -> jpm_core.ParticleState:
    """The 2LPT initial particles of a seed (the same for every code path of this CLI)."""
    delta = jpm_core.linear_field(
        jax.random.key(seed), domain, lambda k: jpm_core.linear_power(cosmo, k)
    )
    return jpm_core.lpt(cosmo, delta, domain, a_init, order=2)


def _staging(target: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))


def _publish(staging: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


def _status(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_truths(folder: Path) -> list:
    info = json.loads((folder / MANIFEST).read_text())
    return [load_truth(folder / name) for name in info["files"]]


def save_pgd(path: Path, model: PGDCorrection, metadata: dict) -> None:
    """PGD's parameters as JSON (atomic): three numbers need no binary format."""
    record = {
        "format": PGD_KIND,
        "package_version": _version(),
        "parameters": pgd_parameters(model),
        "metadata": metadata,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)


def load_pgd(path: Path) -> PGDCorrection:
    record = json.loads(Path(path).read_text())
    if record.get("format") != PGD_KIND:
        raise ValueError(f"{os.fspath(path)!r}: field 'format' is not {PGD_KIND!r}")
    p = record["parameters"]
    return PGDCorrection(p["k_l"], p["k_s"], alpha=p["alpha"], mu=p["mu"])


def load_any_filter(path: Path) -> SplineFilter:
    """A filter file of either `|k|` unit and any range (the architecture is read from the file)."""
    return load_filter(path)


# ----------------------------------------------------------------------------------- commands


def _cmd_truth(args) -> str:
    cosmo = cosmology(args.omega_m, args.sigma8)
    domain = jpm_core.Domain(args.mesh, args.box)
    staging = _staging(args.out)
    files = []
    try:
        for seed in args.seeds:
            _status(f"jpm-hybrid truth: seed {seed} ({args.mesh}^3 on a {args.boost}x mesh)")
            initial = initial_state(seed, cosmo, domain, args.a_init)
            name = f"truth_seed{seed}.npz"
            make_truth(
                cosmo,
                initial,
                domain,
                args.snapshots,
                boost=args.boost,
                steps=args.truth_steps,
                path=staging / name,
                metadata={"seed": seed},
                progress=not args.no_progress,
            )
            files.append(name)
        manifest = {
            "what": "jpm-hybrid truth",
            "version": _version(),
            "complete": True,
            "files": files,
            "seeds": list(args.seeds),
            "mesh": args.mesh,
            "box": args.box,
            "omega_m": args.omega_m,
            "sigma8": args.sigma8,
            "a_init": args.a_init,
            "snapshots": list(args.snapshots),
            "boost": args.boost,
            "truth_steps": args.truth_steps,
            "command": ["jpm-hybrid", *sys.argv[1:]],
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _publish(staging, args.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return f"wrote {len(files)} truth runs to {args.out}"


def _cmd_train(args) -> str:
    import optax
    from flax import nnx

    data = [t for folder in args.truth for t in read_truths(folder)]
    if args.model == "pgd":
        cell = data[0].domain.box_size[0] / data[0].domain.mesh_shape[0]
        k_nyq = math.pi / cell
        model = PGDCorrection(k_l=0.25 * k_nyq, k_s=k_nyq, alpha=0.0)
    else:
        k_max = args.k_max
        if k_max is None:
            cell = data[0].domain.box_size[0] / data[0].domain.mesh_shape[0]
            k_max = math.pi / cell if args.k_unit == "physical" else 1.0
        config = FilterConfig(k_unit=args.k_unit, k_max=k_max)
        model = SplineFilter(config, rngs=nnx.Rngs(args.seed), zero_output=True)
    schedule = optax.cosine_decay_schedule(args.learning_rate, args.iterations, alpha=0.05)
    trained, history = train_hybrid(
        jax.random.key(args.seed),
        model,
        data,
        num_steps=args.iterations,
        steps=args.steps,
        optimizer=optax.adam(schedule),
        power_weight=args.power_weight,
        checkpoint=args.checkpoint,
        progress=not args.no_progress,
    )
    meta = {
        "trained_on": [os.fspath(p) for p in args.truth],
        "n_simulations": len(data),
        "steps": args.steps,
        "iterations": args.iterations,
        "learning_rate": args.learning_rate,
        "schedule": "cosine decay to 5%",
        "power_weight": args.power_weight,
        "seed": args.seed,
        "loss_first": float(history["loss"][0]),
        "loss_last": float(history["loss"][-1]),
        "coarse_mesh": list(data[0].domain.mesh_shape),
        "box": list(data[0].domain.box_size),
    }
    if args.model == "pgd":
        save_pgd(args.out, trained, meta)
    else:
        grid = np.linspace(float(data[0].initial.a), 1.0, 16)
        check_force_reversal(trained, data[0].domain, grid)
        save_filter(args.out, trained, metadata=meta)
    return (
        f"trained {args.model} for {args.iterations} steps: loss {history['loss'][0]:.4g} -> "
        f"{history['loss'][-1]:.4g}; wrote {args.out}"
    )


def evaluate_truths(truths: Sequence, models: dict[str, Any], steps: int) -> dict:
    """P(k) ratio and r(k) of each model's last snapshot against each truth's (CIC densities,
    deconvolved, binned in `k_f` up to the coarse Nyquist frequency); per-model means over truths
    and the issue's summary numbers (`|P/P_ref - 1|` at `k_Nyq/2` and averaged over
    `[k_Nyq/4, k_Nyq/2]`, `1 - r` there)."""
    domain = truths[0].domain
    cell = domain.box_size[0] / domain.mesh_shape[0]
    k_nyq = math.pi / cell
    edges = jpm_core.default_k_edges(domain)
    ratios = {name: [] for name in models}
    corr = {name: [] for name in models}
    k = None
    for truth in truths:
        ref = jpm_core.paint(truth.snapshots.positions[-1], domain)
        ref = ref / ref.mean() - 1
        p_ref = jpm_core.power_spectrum(ref, domain, k_edges=edges, deconvolve="cic")
        k = np.asarray(p_ref.k)
        for name, model in models.items():
            run = hybrid_nbody(
                truth.cosmo,
                truth.initial,
                domain,
                np.asarray(truth.snapshots.a).tolist(),
                model,
                steps=steps,
            ).snapshots
            d = jpm_core.paint(run.positions[-1], domain)
            d = d / d.mean() - 1
            p = jpm_core.power_spectrum(d, domain, k_edges=edges, deconvolve="cic")
            r = jpm_core.cross_correlation(d, ref, domain, k_edges=edges)
            ratios[name].append(np.asarray(p.power) / np.asarray(p_ref.power))
            corr[name].append(np.asarray(r.power))
    band = (k >= k_nyq / 4) & (k <= k_nyq / 2)
    at_half = int(np.argmin(np.abs(k - k_nyq / 2)))
    out = {"k": k.tolist(), "k_nyq": k_nyq, "models": {}}
    for name in models:
        ratio = np.mean(ratios[name], axis=0)
        r = np.mean(corr[name], axis=0)
        out["models"][name] = {
            "power_ratio": ratio.tolist(),
            "power_ratio_std": np.std(ratios[name], axis=0).tolist(),
            "r": r.tolist(),
            "power_error_at_half_nyquist": float(abs(ratio[at_half] - 1)),
            "power_error_quarter_to_half_nyquist": float(np.mean(np.abs(ratio[band] - 1))),
            "one_minus_r_at_half_nyquist": float(1 - r[at_half]),
            "one_minus_r_quarter_to_half_nyquist": float(np.mean(1 - r[band])),
        }
    return out


def _plot(metrics: dict, folder: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _status("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    k = np.asarray(metrics["k"])
    written = []
    for key, label, name in (
        ("power_ratio", "P(k) / P_truth(k)", "power_ratio.png"),
        ("r", "r(k) with the truth", "cross_correlation.png"),
    ):
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for model, values in metrics["models"].items():
            ax.plot(k, values[key], label=model)
        ax.axhline(1.0, color="0.5", lw=0.8)
        for frac in (0.25, 0.5):
            ax.axvline(frac * metrics["k_nyq"], color="0.8", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("k [h/Mpc]")
        ax.set_ylabel(label)
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / name, dpi=120)
        plt.close(fig)
        written.append(name)
    return written


def _cmd_evaluate(args) -> str:
    truths = read_truths(args.truth)
    models: dict[str, Any] = {"pm": None}
    if args.pgd is not None:
        models["pgd"] = load_pgd(args.pgd)
    if args.filter is not None:
        models["hybrid"] = load_any_filter(args.filter)
    metrics = evaluate_truths(truths, models, args.steps)
    metrics["truth"] = os.fspath(args.truth)
    metrics["steps"] = args.steps
    metrics["version"] = _version()
    staging = _staging(args.out)
    try:
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        with open(staging / "metrics.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["k", *(f"{m}_{q}" for m in models for q in ("power_ratio", "r"))])
            for i, kk in enumerate(metrics["k"]):
                row = [kk]
                for m in models:
                    row += [metrics["models"][m]["power_ratio"][i], metrics["models"][m]["r"][i]]
                writer.writerow(row)
        if not args.no_plots:
            _plot(metrics, staging)
        _publish(staging, args.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    summary = ", ".join(
        f"{m}: |P/P_ref - 1| {v['power_error_quarter_to_half_nyquist']:.3f}"
        for m, v in metrics["models"].items()
    )
    return f"{summary} (mean over [k_Nyq/4, k_Nyq/2]); wrote {args.out}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    command = {"truth": _cmd_truth, "train": _cmd_train, "evaluate": _cmd_evaluate}[args.command]
    print(command(args))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
