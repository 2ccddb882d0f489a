"""`jinfer`: see the package README for what it offers."""

from jinfer._src.campaign import load_campaign, run_campaign
from jinfer._src.compression import (
    VMIM,
    MapCompressor,
    augment_maps,
    compression_loss,
    load_compressor,
    save_compressor,
    train_compressor,
)
from jinfer._src.coverage import Coverage, coverage, plot_coverage
from jinfer._src.demo import DemoConfig, demo_main, run_demo
from jinfer._src.density import nle_model
from jinfer._src.fisher import (
    conditional_errors,
    fisher_ellipse,
    fisher_from_log_likelihood,
    gaussian_fisher,
    marginal_errors,
    plot_fisher_ellipses,
)
from jinfer._src.hmc import PosteriorSamples, mcmc_diagnostics, sample_posterior
from jinfer._src.mass_map import MassMap, mass_map
from jinfer._src.plots import plot_corner

__version__ = "0.1.0"

__all__ = [
    "VMIM",
    "Coverage",
    "DemoConfig",
    "MapCompressor",
    "MassMap",
    "PosteriorSamples",
    "__version__",
    "augment_maps",
    "compression_loss",
    "conditional_errors",
    "coverage",
    "demo_main",
    "fisher_ellipse",
    "fisher_from_log_likelihood",
    "gaussian_fisher",
    "load_campaign",
    "load_compressor",
    "marginal_errors",
    "mass_map",
    "mcmc_diagnostics",
    "nle_model",
    "plot_corner",
    "plot_coverage",
    "plot_fisher_ellipses",
    "run_campaign",
    "run_demo",
    "sample_posterior",
    "save_compressor",
    "train_compressor",
]
