"""`jpm_core`: distributed, differentiable particle-mesh N-body simulations in JAX.

The bottom layer of the jpm federation. What it offers, grouped as in the README:

- **Cosmology**: `Cosmology`, `check_cosmology`, `poison` (NaN value and gradient for invalid
  traced parameters), `efunc`, `comoving_distance`,
  `scale_factor_of_chi`, `growth_factor`, `growth_rate`, `growth_factor_second`,
  `growth_rate_second`, `linear_power`, `nonlinear_power` (halofit, Takahashi et al. 2012), `sigma_r`.
- **Mesh**: `Domain`, `fft`, `ifft`, `wavevectors`, `wavenumbers`, the Fourier kernels,
  `white_noise`, `linear_field`, `paint`, `read`, `paint_grid`/`read_grid` (2-D or 3-D grids,
  periodic or not), `stray_particles`, `pm_forces`, `power_spectrum`,
  `cross_correlation`.
- **Configuration**: `ForceConfig` (kernel, Laplacian, mass assignment), the gradient methods
  `Adjoint`, `Checkpointed`, `Direct`.
- **Dynamics**: `ParticleState`, `rescale_state`, `lagrangian_grid`, `lpt`, `nbody` (with the
  `potential_filter(k, a, params)` and `observer` hooks), `nbody_vector_field`.
- **Files and command line**: `save_snapshots`, `load_snapshots`, `SnapshotFile`; the
  `jpm-simulate` console script (`python -m jpm_core`).

Everything exported here is public API; everything under `jpm_core._src` is private.
"""

__version__ = "0.2.0"

from jpm_core._src.config import Adjoint, Checkpointed, Direct, ForceConfig, GradientMethod
from jpm_core._src.cosmology.background import comoving_distance, efunc, scale_factor_of_chi
from jpm_core._src.cosmology.growth import (
    growth_factor,
    growth_factor_second,
    growth_rate,
    growth_rate_second,
)
from jpm_core._src.cosmology.halofit import nonlinear_power
from jpm_core._src.cosmology.parameters import (
    HUBBLE_DISTANCE,
    Cosmology,
    check_cosmology,
    poison,
)
from jpm_core._src.cosmology.power import T_CMB, linear_power, sigma_r
from jpm_core._src.domain import Domain
from jpm_core._src.fft import fft, ifft, wavenumbers, wavevectors
from jpm_core._src.fields import linear_field, linear_field_from_noise, white_noise
from jpm_core._src.forces import PotentialFilter, pm_forces, potential_k
from jpm_core._src.grid import paint_grid, read_grid
from jpm_core._src.io import SnapshotFile, load_snapshots, save_snapshots
from jpm_core._src.kernels import (
    gaussian_filter_kernel,
    gradient_kernel,
    inverse_laplace_kernel,
    laplace_kernel,
)
from jpm_core._src.lpt import lagrangian_grid, lpt, lpt_displacements
from jpm_core._src.nbody import NBodyResult, Observer, nbody, nbody_vector_field
from jpm_core._src.painting import (
    compensate_window,
    mass_assignment_window,
    paint,
    read,
    stray_particles,
)
from jpm_core._src.power import PowerSpectrum, cross_correlation, default_k_edges, power_spectrum
from jpm_core._src.state import ParticleState, rescale_state

__all__ = [
    "HUBBLE_DISTANCE",
    "T_CMB",
    "Adjoint",
    "Checkpointed",
    "Cosmology",
    "Direct",
    "Domain",
    "ForceConfig",
    "GradientMethod",
    "NBodyResult",
    "Observer",
    "ParticleState",
    "PotentialFilter",
    "PowerSpectrum",
    "SnapshotFile",
    "__version__",
    "check_cosmology",
    "comoving_distance",
    "compensate_window",
    "cross_correlation",
    "default_k_edges",
    "efunc",
    "fft",
    "gaussian_filter_kernel",
    "gradient_kernel",
    "growth_factor",
    "growth_factor_second",
    "growth_rate",
    "growth_rate_second",
    "ifft",
    "inverse_laplace_kernel",
    "lagrangian_grid",
    "laplace_kernel",
    "linear_field",
    "linear_field_from_noise",
    "linear_power",
    "load_snapshots",
    "lpt",
    "lpt_displacements",
    "mass_assignment_window",
    "nbody",
    "nbody_vector_field",
    "nonlinear_power",
    "paint",
    "paint_grid",
    "pm_forces",
    "poison",
    "potential_k",
    "power_spectrum",
    "read",
    "read_grid",
    "rescale_state",
    "save_snapshots",
    "scale_factor_of_chi",
    "sigma_r",
    "stray_particles",
    "wavenumbers",
    "wavevectors",
    "white_noise",
]
