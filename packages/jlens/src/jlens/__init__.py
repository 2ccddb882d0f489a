"""`jlens`: weak lensing in JAX, validated against pyccl; see the package README.

What it offers so far (the theory layer):

- **Redshift distributions**: `RedshiftDistribution`, `Smail`, `Tabulated`, `PhotoZBin`,
  `tomographic_bins`.
- **Limber theory**: `lensing_efficiency`, `angular_cl` (halofit or linear power, optional NLA
  intrinsic alignment `NLA`, optional square-pixel window `pixel_window_square`), `C1_RHO_CRIT`.
- **Maps**: `FlatSky` geometry; log-normal maps `lognormal_maps`, `lognormal_maps_from_noise`, `lognormal_field`,
  `LognormalConfig`, `grid_cl`, `gaussian_spectra`, the numpyro `lognormal_model`, and the shift
  parameter `ShiftTable` (sbi_lens's tables, with `compat="sbi_lens"`).
- **Operators**: `kappa_to_shear`, `kaiser_squires`, `shear_multipliers`, `ShearOperator`,
  `ConvergenceOperator`, `shape_noise_std`, `add_noise`.
- **Statistics**: `map_power_spectrum`, `binned_theory_cl`, `mode_counts`, `find_peaks`,
  `peak_counts`, `starlet_transform`, `starlet_peak_counts`, `one_point_pdf`.
- **Lightcones**: `BornLightcone` (Born convergence painted from a running `jpm_core.nbody`
  through its `observer` hook; source planes or n(z) bins in one pass).
- **Plots**: `plot_cl`, `plot_map`.

Everything exported here is public API; everything under `jlens._src` is private.
"""

__version__ = "0.2.0"

from jlens._src.born import BornLightcone
from jlens._src.geometry import FlatSky
from jlens._src.limber import (
    C1_RHO_CRIT,
    NLA,
    angular_cl,
    lensing_efficiency,
    pixel_window_square,
)
from jlens._src.lognormal import (
    LognormalConfig,
    gaussian_spectra,
    grid_cl,
    lognormal_field,
    lognormal_maps,
    lognormal_maps_from_noise,
)
from jlens._src.model import lognormal_model
from jlens._src.operators import (
    ConvergenceOperator,
    ShearOperator,
    add_noise,
    kaiser_squires,
    kappa_to_shear,
    shape_noise_std,
    shear_multipliers,
)
from jlens._src.plots import plot_cl, plot_map
from jlens._src.redshift import (
    PhotoZBin,
    RedshiftDistribution,
    Smail,
    Tabulated,
    tomographic_bins,
)
from jlens._src.shift import ShiftTable
from jlens._src.statistics import (
    binned_theory_cl,
    find_peaks,
    map_power_spectrum,
    mode_counts,
    one_point_pdf,
    peak_counts,
    starlet_peak_counts,
    starlet_transform,
)

__all__ = [
    "C1_RHO_CRIT",
    "NLA",
    "BornLightcone",
    "ConvergenceOperator",
    "FlatSky",
    "LognormalConfig",
    "PhotoZBin",
    "RedshiftDistribution",
    "ShearOperator",
    "ShiftTable",
    "Smail",
    "Tabulated",
    "__version__",
    "add_noise",
    "angular_cl",
    "binned_theory_cl",
    "find_peaks",
    "gaussian_spectra",
    "grid_cl",
    "kaiser_squires",
    "kappa_to_shear",
    "lensing_efficiency",
    "lognormal_field",
    "lognormal_maps",
    "lognormal_maps_from_noise",
    "lognormal_model",
    "map_power_spectrum",
    "mode_counts",
    "one_point_pdf",
    "peak_counts",
    "pixel_window_square",
    "plot_cl",
    "plot_map",
    "shape_noise_std",
    "shear_multipliers",
    "starlet_peak_counts",
    "starlet_transform",
    "tomographic_bins",
]
