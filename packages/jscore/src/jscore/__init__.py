"""`jscore`: score-based priors and annealed posterior sampling for linear inverse problems
`y = A x + n` in JAX, with classical baselines (Wiener filter, direct inversion).

See the package README for what it offers.
"""

from ._src._fourier import fourier_wavenumber, rfft_shape
from ._src.baselines import (
    CGInfo,
    conjugate_gradient,
    direct_inversion,
    fourier_wiener_filter,
    wiener_filter_cg,
    wiener_filter_sample,
)
from ._src.config import AnnealingConfig, HMCConfig, ODEConfig
from ._src.hmc import (
    AnnealedHMCInfo,
    AnnealedHMCState,
    annealed_hmc_init,
    annealed_hmc_step,
    score_line_integral,
)
from ._src.networks import HybridScore, ScoreMLP, ScoreUNet, sigma_features
from ._src.noise import AbstractNoise, DiagonalNoise, FourierNoise
from ._src.operators import (
    FourierOperator,
    IdentityOperator,
    MaskOperator,
    ShearOperator,
    adjoint_mismatch,
    shear_multipliers,
)
from ._src.plot import plot_posterior, radial_power_spectrum
from ._src.precondition import FourierPreconditioner
from ._src.prior import GaussianFieldPrior
from ._src.sampler import (
    AnnealedSampleInfo,
    AnnealingWarning,
    annealed_log_likelihood,
    annealed_posterior_sample,
    diagnose_annealing,
    posterior_map,
    probability_flow_ode,
)
from ._src.training import (
    DSMTrainer,
    DSMTrainState,
    MinibatchStream,
    dsm_loss,
    load_checkpoint,
    log_uniform_sigma,
    save_checkpoint,
    train_dsm,
)

__version__ = "0.2.0"

__all__ = [
    "AbstractNoise",
    "AnnealedHMCInfo",
    "AnnealedHMCState",
    "AnnealedSampleInfo",
    "AnnealingConfig",
    "AnnealingWarning",
    "CGInfo",
    "DSMTrainState",
    "DSMTrainer",
    "DiagonalNoise",
    "FourierNoise",
    "FourierOperator",
    "FourierPreconditioner",
    "GaussianFieldPrior",
    "HMCConfig",
    "HybridScore",
    "IdentityOperator",
    "MaskOperator",
    "MinibatchStream",
    "ODEConfig",
    "ScoreMLP",
    "ScoreUNet",
    "ShearOperator",
    "__version__",
    "adjoint_mismatch",
    "annealed_hmc_init",
    "annealed_hmc_step",
    "annealed_log_likelihood",
    "annealed_posterior_sample",
    "conjugate_gradient",
    "diagnose_annealing",
    "direct_inversion",
    "dsm_loss",
    "fourier_wavenumber",
    "fourier_wiener_filter",
    "load_checkpoint",
    "log_uniform_sigma",
    "plot_posterior",
    "posterior_map",
    "probability_flow_ode",
    "radial_power_spectrum",
    "rfft_shape",
    "save_checkpoint",
    "score_line_integral",
    "shear_multipliers",
    "sigma_features",
    "train_dsm",
    "wiener_filter_cg",
    "wiener_filter_sample",
]
