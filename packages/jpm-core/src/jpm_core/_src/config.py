"""Configuration objects: the force discretisation and the gradient method of `nbody`.

Both are small frozen (hence hashable) dataclasses: they are static configuration under `jax.jit`
and can be closed over freely. Their fields are validated in `__post_init__`, with a `ValueError`
that names the field and the value.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

__all__ = [
    "DEFAULT_FORCES",
    "Adjoint",
    "Checkpointed",
    "Direct",
    "ForceConfig",
    "GradientMethod",
    "check_forces",
    "check_gradient",
]

KernelKind = Literal["spectral", "finite_difference"]
LaplaceKind = Literal["lattice", "spectral", "finite_difference"]
Scheme = Literal["cic", "tsc"]

KERNEL_KINDS = ("spectral", "finite_difference")
LAPLACE_KINDS = ("lattice", "spectral", "finite_difference")
SCHEMES = {"cic": 2, "tsc": 3}  # scheme -> order (nodes per axis; exponent of the window)


@dataclasses.dataclass(frozen=True)
class ForceConfig:
    """How the particle-mesh force is discretised: one object for `pm_forces`, `nbody`, `lpt`, ...

    **Arguments:**

    - `kernel`: the Fourier symbol of the gradient, `"spectral"` (`i k`) or `"finite_difference"`
      (the 4-point, 4th-order central difference `i (8 sin w - sin 2w) / (6 cell)`,
      `w = k cell`); see `jpm_core.gradient_kernel`.
    - `laplace`: the Laplacian inverted in the Poisson solve: `"lattice"` (the default), the
      lattice-consistent symbol of TSC on a mesh of the particle spacing, with which the force of
      a linear growing mode painted and read back by TSC is the continuum one; `"spectral"`
      (`-k^2`); or `"finite_difference"` (the 3-point stencil per axis). See
      `jpm_core.laplace_kernel`.
    - `scheme`: the mass assignment used to paint the particles and read the forces back,
      `"tsc"` (3 nodes per axis) or `"cic"` (2 nodes). Default (`None`): `"tsc"` with
      `laplace="lattice"` (which needs it), `"cic"` otherwise (FastPM's choice with the
      finite-difference kernels on a finer force mesh: within 0.33% of linear growth in the
      three lowest bins, against 1.3% with TSC). The field holds the resolved name.

    The default, `ForceConfig(kernel="spectral", laplace="lattice", scheme="tsc")`, follows linear
    growth within 1% for `k <= k_Nyq / 4` and 3% up to `k_Nyq / 2` with one particle per cell
    (measured in `tests/test_growth_defaults.py`; the curve is in jpm-core's README), at the cost
    of a 3-node stencil. The spectral Laplacian with CIC (jpm-core 0.2's default, JaxPM's choice)
    grows 12% too little at `k_Nyq / 4`.

    `"lattice"` assumes one particle per cell: with a force mesh finer than the particle grid
    (`jpm_core.rescale_state`) `nbody` refuses it; use
    `ForceConfig(kernel="finite_difference", laplace="finite_difference")`, FastPM's choice
    (the spectral gradient aliases the lattice's harmonics into large-scale forces). `lpt` uses
    the spectral Laplacian when given `"lattice"` (the displacement field is a continuum one).

    **Raises:** `ValueError` for an unknown value, naming the field, and for `laplace="lattice"`
    with `scheme="cic"` (the lattice symbol is TSC's).
    """

    kernel: KernelKind = "spectral"
    laplace: LaplaceKind = "lattice"
    scheme: Scheme | None = None

    def __post_init__(self) -> None:
        for name, kinds in (("kernel", KERNEL_KINDS), ("laplace", LAPLACE_KINDS)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in kinds:
                raise ValueError(f"ForceConfig.{name} must be one of {kinds}, got {value!r}")
        if self.scheme is None:
            object.__setattr__(self, "scheme", "tsc" if self.laplace == "lattice" else "cic")
        if not isinstance(self.scheme, str) or self.scheme not in SCHEMES:
            raise ValueError(
                f"ForceConfig.scheme must be one of {tuple(SCHEMES)}, got {self.scheme!r}"
            )
        if self.laplace == "lattice" and self.scheme != "tsc":
            raise ValueError(
                f"ForceConfig(laplace='lattice') is the lattice-consistent Laplacian of TSC and "
                f"needs scheme='tsc', got scheme={self.scheme!r}; with CIC pass "
                "laplace='spectral' or laplace='finite_difference'"
            )

    @property
    def order(self) -> int:
        """Number of mesh nodes per axis of the mass-assignment stencil (2 CIC, 3 TSC)."""
        return SCHEMES[self.scheme]


DEFAULT_FORCES = ForceConfig()
"""The force discretisation every function uses by default (the one place to change it):
`ForceConfig(kernel="spectral", laplace="lattice", scheme="tsc")`."""


def check_forces(name: str, forces: object) -> ForceConfig:
    """`forces` if it is a `ForceConfig`, else a `TypeError` naming the argument."""
    if not isinstance(forces, ForceConfig):
        raise TypeError(
            f"{name} must be a jpm_core.ForceConfig, e.g. ForceConfig(kernel='finite_difference'), "
            f"got {type(forces).__name__}: {forces!r}"
        )
    return forces


class GradientMethod:
    """Base class of the ways `nbody` is differentiated: `Adjoint`, `Checkpointed`, `Direct`."""

    __slots__ = ()


@dataclasses.dataclass(frozen=True)
class Adjoint(GradientMethod):
    """The reverse-time adjoint of pmwd (Li et al. 2022): the default gradient of `nbody`.

    The kick-drift-kick step is time-reversible, so the backward pass runs the steps backwards
    from the final state, reconstructing `(positions, momenta, force)` at every step boundary,
    and applies the VJP of one step at a time: memory and compile time do not depend on the
    number of steps; one force evaluation and one force VJP per step. Reverse mode (`jax.grad`,
    `jax.vjp`, `jax.jacrev`) and forward over reverse (`jax.hessian`); plain forward mode
    (`jax.jvp`, `jax.jacfwd`) raises a `TypeError` pointing to `Direct()` or `Checkpointed()`.
    """


@dataclasses.dataclass(frozen=True)
class Checkpointed(GradientMethod):
    """Per-step checkpointing: each step is wrapped in `jax.checkpoint`.

    The backward pass stores the carried `(positions, momenta, force)` per step
    (`9 * n_particles` floats per step) and recomputes the step's intermediates (painting, FFTs).
    Supports forward mode as well as reverse mode, and observers of any kind.
    """


@dataclasses.dataclass(frozen=True)
class Direct(GradientMethod):
    """Plain JAX autodiff through the `lax.scan` of the steps (every intermediate is stored).

    The most memory per step, and the only method besides `Checkpointed` with forward mode:
    `jax.jvp`, `jax.jacfwd` and `jax.hessian` (e.g. Fisher matrices of a few parameters) work
    through `nbody(..., gradient=Direct())`, as does reverse mode.
    """


_GRADIENT_CLASSES = "jpm_core.Adjoint(), jpm_core.Checkpointed() or jpm_core.Direct()"


def check_gradient(name: str, gradient: object) -> GradientMethod:
    """`gradient` if it is a `GradientMethod` instance, else a `TypeError` naming the classes."""
    if isinstance(gradient, type) and issubclass(gradient, GradientMethod):
        raise TypeError(f"{name} must be an instance, e.g. {gradient.__name__}(), got the class")
    if not isinstance(gradient, GradientMethod):
        raise TypeError(f"{name} must be {_GRADIENT_CLASSES}, got {gradient!r}")
    return gradient
