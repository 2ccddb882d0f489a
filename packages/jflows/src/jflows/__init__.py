"""`jflows`: smooth (C-infinity) normalizing flows with implicit-gradient inverses.

See the package README for what it offers. Everything listed in `__all__` is public API; everything
under `jflows._src` is private.
"""

from jflows._src.distrax_adapter import to_distrax
from jflows._src.flow import ConditionalFlow
from jflows._src.layers import BoxScaling, Coupling, LogisticScaling, Permutation, standardisation
from jflows._src.transforms import MonotoneMixture, RampMixture, SigmoidMixture

__version__ = "0.1.0"

__all__ = [
    "BoxScaling",
    "ConditionalFlow",
    "Coupling",
    "LogisticScaling",
    "MonotoneMixture",
    "Permutation",
    "RampMixture",
    "SigmoidMixture",
    "__version__",
    "standardisation",
    "to_distrax",
]
