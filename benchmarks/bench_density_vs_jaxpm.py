"""Cross-check of the final density against JaxPM 0.1.6: the SAME initial linear field, evolved by both.

jpm-core draws the linear density field (a = 1, Eisenstein-Hu power) in the cosmology of the peer
script, jax_cosmo's `Planck15(Omega_c, sigma8)` (Omega_b = 0.0486, h = 0.6774, n_s = 0.9667, flat
LCDM, no radiation: jpm-core's `Cosmology` with the same five numbers), saves it as .npy, and
`shared/peers/jaxpm_bench.py --ic ... --out ...` evolves it in the peer's own venv (1LPT at a_init,
diffrax LeapfrogMidpoint with fixed steps in a, CIC paint). jpm-core evolves the same field (1LPT at
a_init, `nbody` with FastPM kick-drift-kick steps, final CIC paint) with three force
configurations (`forces=` of `lpt` and `nbody`), each at every number of steps asked for (default
10 and 100):

- `jpm[default]`: `jc.ForceConfig()`, spectral gradient, lattice-consistent TSC Poisson kernel, TSC
  mass assignment (lpt uses the spectral Laplacian with it);
- `jpm[spectral]`: `ForceConfig(kernel="spectral", laplace="spectral", scheme="cic")`, jpm-core
  0.2's default;
- `jpm[fd]`: JaxPM's kernels, `ForceConfig(kernel="finite_difference", laplace="spectral",
  scheme="cic")` (4-point finite-difference gradient `i (8 sin w - sin 2w) / 6`, spectral inverse
  Laplacian).

Compared, on the density contrasts `delta = rho / mean - 1`: the cross-correlation coefficient r(k),
the power ratio P_a / P_b per k bin (shells of width k_f up to the Nyquist frequency; the CIC window
is common and cancels), and the pixel RMS difference relative to the RMS of delta. Pairs: jpm-core
against JaxPM at equal steps, and each code against itself at few and many steps (its integrator's
convergence). A third block compares the growth functions of the two codes (jax_cosmo's Esqr,
jaxpm.growth's D1 and f1 against jpm-core's `efunc`, `growth_factor`, `growth_rate`) at a_init and 1.
The per-bin arrays go in the JSON lines; a summary table follows them on stdout.

    nice -n 10 python benchmarks/bench_density_vs_jaxpm.py [--mesh 32] [--steps 10 100] [--no-peer]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _jaxpm_peer import SHARED, peer_env, peer_python

import jpm_core as jc

BOX = 256.0
# jax_cosmo 0.1.x `Planck15` (jax_cosmo/parameters.py), Omega_c and sigma8 overridden by the peer
# script's defaults; flat, w0 = -1, wa = 0 as in jpm-core's defaults
PLANCK15 = {"Omega_b": 0.0486, "h": 0.6774, "n_s": 0.9667}

CONFIGS = {
    "default": jc.ForceConfig(),
    "spectral": jc.ForceConfig(kernel="spectral", laplace="spectral", scheme="cic"),
    "finite_difference": jc.ForceConfig(
        kernel="finite_difference", laplace="spectral", scheme="cic"
    ),
}

# run in the peer venv: the growth functions JaxPM's `lpt` and ODE use (jax_cosmo background,
# jaxpm.growth ODE tables), printed as one JSON line
PEER_GROWTH = """
import json, sys
import jax.numpy as jnp, jax_cosmo as jc
from jaxpm.growth import growth_factor, growth_rate
oc, s8 = float(sys.argv[1]), float(sys.argv[2])
a = jnp.array([float(x) for x in sys.argv[3:]])
cosmo = jc.Planck15(Omega_c=oc, sigma8=s8)
print(json.dumps({"a": a.tolist(), "D1": growth_factor(cosmo, a).tolist(),
                  "f1": growth_rate(cosmo, a).tolist(),
                  "E": jnp.sqrt(jc.background.Esqr(cosmo, a)).tolist()}))
"""


def cosmology(omega_c: float, sigma8: float) -> jc.Cosmology:
    return jc.Cosmology(Omega_c=omega_c, sigma8=sigma8, **PLANCK15)


def run_peer(python: Path, ic: Path, out: Path, args, steps: int) -> np.ndarray:
    subprocess.run(
        [str(python), str(SHARED / "jaxpm_bench.py"), "--mesh", str(args.mesh), "--box", str(BOX),
         "--steps", str(steps), "--a-init", str(args.a_init), "--omega-c", str(args.omega_c),
         "--sigma8", str(args.sigma8), "--mode", "fwd", "--repeat", "1", "--ic", str(ic),
         "--out", str(out)],
        capture_output=True, text=True, env=peer_env(), check=True,
    )  # fmt: skip
    return np.load(out)


def peer_growth(python: Path, args) -> dict:
    a = [str(args.a_init), "0.5", "1.0"]
    out = subprocess.run(
        [str(python), "-c", PEER_GROWTH, str(args.omega_c), str(args.sigma8), *a],
        capture_output=True, text=True, env=peer_env(), check=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def run_ours(init, domain, cosmo, a_init: float, steps: int, config: str) -> np.ndarray:
    forces = CONFIGS[config]

    @jax.jit
    def simulate(delta):
        state = jc.lpt(cosmo, delta, domain, a_init, order=1, forces=forces)
        snaps = jc.nbody(cosmo, state, domain, (1.0,), steps=steps, forces=forces).snapshots
        return jc.paint(snaps.positions[-1], domain)  # CIC, as JaxPM

    return np.asarray(simulate(init))


def compare(name: str, rho_a: np.ndarray, rho_b: np.ndarray, domain: jc.Domain) -> dict:
    """r(k), P_a / P_b and pixel RMS difference of the density contrasts of two CIC densities."""
    da = rho_a / rho_a.mean() - 1.0
    db = rho_b / rho_b.mean() - 1.0
    r = jc.cross_correlation(da, db, domain)
    pa = jc.power_spectrum(da, domain)
    pb = jc.power_spectrum(db, domain)
    k_nyq = float(min(domain.nyquist_frequency))
    k = np.asarray(r.k)
    half = int(np.argmin(np.abs(k - k_nyq / 2)))
    ratio = np.asarray(pa.power) / np.asarray(pb.power)
    rr = np.asarray(r.power)
    return {
        "compare": name, "mesh": domain.mesh_shape[0], "box": BOX,
        "pixel_rms_diff_over_rms_delta": float(np.sqrt(np.mean((da - db) ** 2) / np.mean(db**2))),
        "r_kmin": float(rr[0]), "r_half_nyq": float(rr[half]), "r_nyq": float(rr[-1]),
        "one_minus_r_max_below_half_nyq": float(np.max(1.0 - rr[: half + 1])),
        "pratio_kmin": float(ratio[0]), "pratio_half_nyq": float(ratio[half]),
        "pratio_nyq": float(ratio[-1]),
        "k": [round(float(x), 5) for x in k],
        "r": [float(x) for x in rr],
        "p_ratio": [float(x) for x in ratio],
    }  # fmt: skip


def growth_rows(args, peer: dict | None) -> list[dict]:
    cosmo = cosmology(args.omega_c, args.sigma8)
    with jax.enable_x64(True):
        c64 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), cosmo)
        a = jnp.asarray([args.a_init, 0.5, 1.0], jnp.float64)
        ours = {
            "D1": np.asarray(jc.growth_factor(c64, a)),
            "f1": np.asarray(jc.growth_rate(c64, a)),
            "E": np.asarray(jc.efunc(c64, a)),
        }
    rows = []
    for i, ai in enumerate([args.a_init, 0.5, 1.0]):
        row = {"growth": "jpm-core vs jaxpm(jax_cosmo)", "a": ai}
        for q in ("D1", "f1", "E"):
            row[f"{q}_jpm"] = float(ours[q][i])
            if peer is not None:
                row[f"{q}_jaxpm"] = float(peer[q][i])
                row[f"{q}_rel_diff"] = float(ours[q][i] / peer[q][i] - 1.0)
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mesh", type=int, default=32)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--a-init", type=float, default=0.1)
    ap.add_argument("--omega-c", type=float, default=0.25)
    ap.add_argument("--sigma8", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args()

    domain = jc.Domain(mesh_shape=args.mesh, box_size=BOX)
    cosmo = cosmology(args.omega_c, args.sigma8)
    init = jc.linear_field(
        jax.random.key(args.seed), domain, lambda k: jc.linear_power(cosmo, k)
    ).astype(jnp.float32)
    python = None if args.no_peer else peer_python()

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)

    rho: dict[tuple[str, int], np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ic = Path(tmp) / "ic.npy"
        np.save(ic, np.asarray(init))
        for steps in args.steps:
            if python is not None:
                rho["jaxpm", steps] = run_peer(
                    python, ic, Path(tmp) / f"out{steps}.npy", args, steps
                )
            for config in CONFIGS:
                rho[config, steps] = run_ours(init, domain, cosmo, args.a_init, steps, config)

    short = {
        "default": "jpm[default]",
        "spectral": "jpm[spectral]",
        "finite_difference": "jpm[fd]",
        "jaxpm": "jaxpm",
    }
    rows = []
    for steps in args.steps:
        if python is not None:
            for config in CONFIGS:
                name = f"{short[config]} vs jaxpm, {steps} steps"
                rows.append(compare(name, rho[config, steps], rho["jaxpm", steps], domain))
        for a, b in (("spectral", "finite_difference"), ("default", "spectral")):
            name = f"{short[a]} vs {short[b]}, {steps} steps"
            rows.append(compare(name, rho[a, steps], rho[b, steps], domain))
    hi = max(args.steps)
    for code in ("finite_difference", "spectral", "default", "jaxpm"):
        for lo in sorted(set(args.steps) - {hi}):
            if (code, lo) in rho:  # each code's convergence towards its own most-steps run
                name = f"{short[code]} {lo} vs {hi} steps"
                rows.append(compare(name, rho[code, lo], rho[code, hi], domain))
    for row in rows:
        emit(row)
    peer = peer_growth(python, args) if python is not None else None
    growth = growth_rows(args, peer)
    for row in growth:
        emit(row)

    head = f"{'comparison':40s} {'pix rms':>8s} {'r(kmin)':>8s} {'1-r<kN/2':>9s} {'r(kN)':>7s}"
    head += f" {'P(kmin)':>8s} {'P(kN/2)':>8s} {'P(kN)':>7s}"
    print(f"mesh {args.mesh}^3, {BOX:g} Mpc/h, 1LPT at a={args.a_init}; P = P_a/P_b")
    print(head)
    for r in rows:
        print(
            f"{r['compare']:40s} {r['pixel_rms_diff_over_rms_delta']:8.4f} {r['r_kmin']:8.6f}"
            f" {r['one_minus_r_max_below_half_nyq']:9.2e} {r['r_nyq']:7.4f} {r['pratio_kmin']:8.5f}"
            f" {r['pratio_half_nyq']:8.5f} {r['pratio_nyq']:7.4f}",
        )
    for g in growth:
        parts = [f"a={g['a']:<5g}"]
        for q in ("D1", "f1", "E"):
            if f"{q}_rel_diff" in g:
                parts.append(f"{q}: jpm/jaxpm-1 = {g[f'{q}_rel_diff']:+.2e}")
            else:
                parts.append(f"{q} = {g[f'{q}_jpm']:.6f}")
        print("  ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
