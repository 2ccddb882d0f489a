"""`jinfer`: see the package README for what it offers."""

from jinfer._src.fisher import (
    conditional_errors,
    fisher_ellipse,
    fisher_from_log_likelihood,
    gaussian_fisher,
    marginal_errors,
    plot_fisher_ellipses,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "conditional_errors",
    "fisher_ellipse",
    "fisher_from_log_likelihood",
    "gaussian_fisher",
    "marginal_errors",
    "plot_fisher_ellipses",
]
