"""`jpm_hybrid`: hybrid physical-neural particle-mesh simulations in JAX.

A learned isotropic Fourier correction of the PM potential, `phi_k -> phi_k (1 + f_theta(a, |k|))`
(Lanzieri, Lanusse & Starck 2022), plugged into jpm-core's integrator through its public
`potential_filter` hook, and a PGD baseline (Dai, Pen & Yu 2018):

- **Models**: `FilterConfig`, `SplineFilter` (flax nnx; `|k|` in h/Mpc or grid units; optionally
  conditioned on `Omega_m`, `sigma8`), `PGDCorrection`, `pgd_kernel`, `pgd_parameters`, `bspline`.
- **Plugging in**: `potential_filter` (the `(potential_filter, filter_params)` pair of
  `jpm_core.nbody`), `force_reversal` / `check_force_reversal` (`1 + f < 0` reported).
- **Simulation**: `hybrid_nbody`, `make_truth` / `load_truth` / `TruthData` (the offline truth: a
  finer jpm-core run from the same initial particles), `TRUTH_FORCES`; `hybrid_odeint` (the same
  equations under a diffrax solver and adjoint; the `diffrax` extra).
- **Training**: `make_loss`, `train_hybrid`, `periodic_difference`, `density_power`.
- **Files**: `save_filter` / `load_filter` / `filter_config` (the federation's checkpoint format,
  via jflows).
- **Shipped weights**: `pretrained_filter`, `pretrained_info`, `PRETRAINED`.
- **Command line**: `jpm-hybrid truth | train | evaluate` (`python -m jpm_hybrid`).

Everything exported here is public API; everything under `jpm_hybrid._src` is private.
"""

__version__ = "0.1.0"

from jpm_hybrid._src.checkpoint import filter_config, load_filter, save_filter
from jpm_hybrid._src.filters import (
    FilterConfig,
    ForceReversal,
    SplineFilter,
    bspline,
    check_force_reversal,
    force_reversal,
    potential_filter,
)
from jpm_hybrid._src.odeint import hybrid_odeint
from jpm_hybrid._src.pgd import PGDCorrection, pgd_kernel, pgd_parameters
from jpm_hybrid._src.pretrained import PRETRAINED, pretrained_filter, pretrained_info
from jpm_hybrid._src.simulate import (
    TRUTH_FORCES,
    TruthData,
    hybrid_nbody,
    load_truth,
    make_truth,
    step_grid,
)
from jpm_hybrid._src.train import density_power, make_loss, periodic_difference, train_hybrid

__all__ = [
    "PRETRAINED",
    "TRUTH_FORCES",
    "FilterConfig",
    "ForceReversal",
    "PGDCorrection",
    "SplineFilter",
    "TruthData",
    "__version__",
    "bspline",
    "check_force_reversal",
    "density_power",
    "filter_config",
    "force_reversal",
    "hybrid_nbody",
    "hybrid_odeint",
    "load_filter",
    "load_truth",
    "make_loss",
    "make_truth",
    "periodic_difference",
    "pgd_kernel",
    "pgd_parameters",
    "potential_filter",
    "pretrained_filter",
    "pretrained_info",
    "save_filter",
    "step_grid",
    "train_hybrid",
]
