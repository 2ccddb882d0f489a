"""`jlens`: weak lensing in JAX, validated against pyccl; see the package README.

What it offers so far (the theory layer):

- **Redshift distributions**: `RedshiftDistribution`, `Smail`, `Tabulated`, `PhotoZBin`,
  `tomographic_bins`.
- **Limber theory**: `lensing_efficiency`, `angular_cl` (halofit or linear power, optional NLA
  intrinsic alignment `NLA`, optional square-pixel window `pixel_window_square`), `C1_RHO_CRIT`.
- **Plots**: `plot_cl`.

Everything exported here is public API; everything under `jlens._src` is private.
"""

__version__ = "0.2.0"

from jlens._src.limber import (
    C1_RHO_CRIT,
    NLA,
    angular_cl,
    lensing_efficiency,
    pixel_window_square,
)
from jlens._src.plots import plot_cl
from jlens._src.redshift import (
    PhotoZBin,
    RedshiftDistribution,
    Smail,
    Tabulated,
    tomographic_bins,
)

__all__ = [
    "C1_RHO_CRIT",
    "NLA",
    "PhotoZBin",
    "RedshiftDistribution",
    "Smail",
    "Tabulated",
    "__version__",
    "angular_cl",
    "lensing_efficiency",
    "pixel_window_square",
    "plot_cl",
    "tomographic_bins",
]
