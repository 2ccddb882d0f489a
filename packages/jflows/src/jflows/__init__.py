"""`jflows`: smooth (C-infinity) normalizing flows with implicit-gradient inverses.

See the package README for what it offers. Everything listed in `__all__` is public API; everything
under `jflows._src` is private.
"""

from jflows._src.checkpoint import checkpoint_info, read_checkpoint, write_checkpoint
from jflows._src.distrax_adapter import to_distrax
from jflows._src.flow import ConditionalFlow
from jflows._src.layers import BoxScaling, Coupling, LogisticScaling, Permutation, standardisation
from jflows._src.metrics import C2STResult, c2st
from jflows._src.progress import ProgressBar, progress_bar
from jflows._src.simulators import (
    lotka_volterra_model,
    lotka_volterra_simulate,
    simulate_with_score,
)
from jflows._src.train import (
    fit,
    fit_nle,
    fit_npe,
    held_out_nll,
    load_checkpoint,
    save_checkpoint,
    train,
)
from jflows._src.transforms import MonotoneMixture, RampMixture, SigmoidMixture
from jflows._src.two_moons import (
    TWO_MOONS_X_OBS,
    two_moons_log_likelihood,
    two_moons_reference_posterior,
    two_moons_simulate,
)

__version__ = "0.2.0"

__all__ = [
    "TWO_MOONS_X_OBS",
    "BoxScaling",
    "C2STResult",
    "ConditionalFlow",
    "Coupling",
    "LogisticScaling",
    "MonotoneMixture",
    "Permutation",
    "ProgressBar",
    "RampMixture",
    "SigmoidMixture",
    "__version__",
    "c2st",
    "checkpoint_info",
    "fit",
    "fit_nle",
    "fit_npe",
    "held_out_nll",
    "load_checkpoint",
    "lotka_volterra_model",
    "lotka_volterra_simulate",
    "progress_bar",
    "read_checkpoint",
    "save_checkpoint",
    "simulate_with_score",
    "standardisation",
    "to_distrax",
    "train",
    "two_moons_log_likelihood",
    "two_moons_reference_posterior",
    "two_moons_simulate",
    "write_checkpoint",
]
