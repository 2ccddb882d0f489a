"""The single door from jlens into jpm-core: every jlens module imports jpm-core names from here.

Only public `jpm_core` names are used (the layering law forbids private imports).
"""

from jpm_core import (
    HUBBLE_DISTANCE,
    Cosmology,
    check_cosmology,
    comoving_distance,
    efunc,
    growth_factor,
    linear_power,
    nonlinear_power,
    paint,
    paint_grid,
    read,
    scale_factor_of_chi,
)

__all__ = [
    "HUBBLE_DISTANCE",
    "Cosmology",
    "check_cosmology",
    "comoving_distance",
    "efunc",
    "growth_factor",
    "linear_power",
    "nonlinear_power",
    "paint",
    "paint_grid",
    "read",
    "scale_factor_of_chi",
]
