"""The `Cosmology` PyTree and its eager validation."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jpm_core._src.cosmology import _grid

__all__ = ["A_MAX", "HUBBLE_DISTANCE", "Cosmology", "check_cosmology"]

HUBBLE_DISTANCE = 2997.92458
"""c / H0 in Mpc/h (speed of light in km/s divided by 100 km/s/(Mpc/h))."""

A_MAX = math.exp(_grid.X_MAX)
"""Largest scale factor of the growth and distance tables, e^0.5 = 1.6487 (valid a: (0, A_MAX])."""
A_TOLERANCE = 1e-6
"""Relative slack on A_MAX (a float32 e^0.5 rounds above the float64 one)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Cosmology:
    """Parameters of a flat w0-wa cold-dark-matter cosmology, as an immutable PyTree.

    The universe is spatially flat: the dark-energy density is `1 - Omega_m`. **Radiation and
    neutrinos are neglected** in the background expansion and in the growth of structure (relative
    effects of order `Omega_r / Omega_m a^-1`, i.e. about 1e-4 at a = 1 and 1e-3 at a = 0.1); the
    CMB temperature enters only the Eisenstein & Hu transfer function (fixed at 2.7255 K).

    Every field is a leaf: a `Cosmology` passes through `jax.jit`, `jax.vmap` (stack the fields of
    several, e.g. `jax.tree.map(lambda *v: jnp.array(v), c1, c2)`), `jax.grad`, diffrax and optax
    as it is; the functions of the module expect scalar fields (use `vmap` for batches). Construction does not validate (it must stay cheap and trace-safe); call
    [`check_cosmology`][jpm_core.check_cosmology] or build it with
    [`Cosmology.create`][jpm_core.Cosmology.create], and every public function of the module checks
    concrete (non-traced) parameters eagerly.

    The defaults are Planck 2018 (TT,TE,EE+lowE+lensing+BAO, Table 2 of arXiv:1807.06209):
    `Omega_c h^2 = 0.11933`, `Omega_b h^2 = 0.02242`, `h = 0.6766`, `n_s = 0.9665`,
    `sigma8 = 0.8102`, with a cosmological constant.

    **Arguments:**

    - `Omega_c`: cold-dark-matter density today in units of the critical density (> 0).
    - `Omega_b`: baryon density today (>= 0; > 0 for the `"eisenstein_hu"` transfer function).
    - `h`: Hubble constant in units of 100 km/s/Mpc (> 0).
    - `n_s`: primordial spectral index.
    - `sigma8`: r.m.s. linear density contrast in spheres of 8 Mpc/h at a = 1 (> 0).
    - `w0`, `wa`: dark-energy equation of state `w(a) = w0 + wa (1 - a)` (CPL); `w0 + wa < 0` so
      that dark energy is negligible at early times, where the growth equations start.
    """

    Omega_c: Any = 0.26067
    Omega_b: Any = 0.04897
    h: Any = 0.6766
    n_s: Any = 0.9665
    sigma8: Any = 0.8102
    w0: Any = -1.0
    wa: Any = 0.0

    @property
    def Omega_m(self) -> Any:
        """Total matter density today, `Omega_c + Omega_b`."""
        return self.Omega_c + self.Omega_b

    @property
    def Omega_de(self) -> Any:
        """Dark-energy density today, `1 - Omega_m` (flat universe)."""
        return 1.0 - self.Omega_m

    @classmethod
    def create(cls, **parameters: Any) -> Cosmology:
        """Build a cosmology and validate it eagerly (no-op on traced values).

        **Arguments:**

        - `**parameters`: any of the fields; the others take their Planck 2018 defaults.

        **Returns:**

        The validated `Cosmology`.

        **Raises:**

        `ValueError` naming the offending parameter and value; `TypeError` for unknown names.
        """
        return check_cosmology(cls(**parameters))

    @classmethod
    def planck18(cls) -> Cosmology:
        """The Planck 2018 flat Lambda-CDM cosmology (the defaults of the fields)."""
        return cls.create()


def _concrete_values(cosmo: Cosmology) -> dict[str, np.ndarray] | None:
    values = {}
    for field in dataclasses.fields(cosmo):
        value = getattr(cosmo, field.name)
        if isinstance(value, jax.core.Tracer):
            return None
        try:
            values[field.name] = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"Cosmology.{field.name} must be a real number or array, got {value!r}"
            ) from error
    return values


# Dark energy must be negligible where the growth tables start (a = 6.1e-6, Einstein-de Sitter
# initial conditions): rho_de / rho_m there at most this (Lambda-CDM: 5e-16).
EARLY_DARK_ENERGY_MAX = 1e-6
# Omega_m = 1 (Einstein-de Sitter) is valid: allow the rounding of Omega_c + Omega_b in float32.
OMEGA_M_TOLERANCE = 1e-6


def _requirements(cosmo: Any, xp: Any) -> list[tuple[str, Any, Any, str]]:
    """(name, value, ok, requirement) of every condition on the parameters, NumPy or jax.numpy.

    The one definition of the valid range, shared by the eager check (`xp = np`, values) and
    the traced poison (`xp = jnp`, tracers). Finiteness is checked before these.
    """
    omega_m = cosmo.Omega_c + cosmo.Omega_b
    w_early = cosmo.w0 + cosmo.wa
    # rho_de / rho_m at the first node of the tables (see background.de_to_matter)
    exponent = -3.0 * w_early * _grid.X_MIN - 3.0 * cosmo.wa * (1.0 - math.exp(_grid.X_MIN))
    early_de = (
        (1.0 - omega_m) / xp.where(omega_m > 0, omega_m, 1.0) * xp.exp(xp.minimum(exponent, 80.0))
    )
    return [
        ("Omega_c", cosmo.Omega_c, cosmo.Omega_c > 0, "must be > 0"),
        ("Omega_b", cosmo.Omega_b, cosmo.Omega_b >= 0, "must be >= 0"),
        ("h", cosmo.h, cosmo.h > 0, "must be > 0"),
        ("sigma8", cosmo.sigma8, cosmo.sigma8 > 0, "must be > 0"),
        (
            "Omega_m = Omega_c + Omega_b",
            omega_m,
            omega_m <= 1.0 + OMEGA_M_TOLERANCE,
            "must be <= 1 (flat universe: Omega_de = 1 - Omega_m >= 0)",
        ),
        (
            "w0 + wa",
            w_early,
            w_early < 0,
            "must be < 0 (dark energy must be negligible at early times)",
        ),
        (
            "w0 + wa",
            w_early,
            early_de <= EARLY_DARK_ENERGY_MAX,
            "is too large: rho_de / rho_m must be <= "
            f"{EARLY_DARK_ENERGY_MAX:g} at a = {math.exp(_grid.X_MIN):.2g}, where the growth "
            "equations start from matter domination (about w0 + wa < -0.41 for Omega_m = 0.3)",
        ),
    ]


def check_cosmology(cosmo: Cosmology) -> Cosmology:
    """Check that the parameters of a cosmology are finite and in the supported range.

    The valid range: every field finite, `Omega_c > 0`, `Omega_b >= 0` (`> 0` for the
    `"eisenstein_hu"` transfer function), `h > 0`, `sigma8 > 0`, `Omega_m = Omega_c + Omega_b <= 1`
    (flat universe, no negative dark-energy density), `w0 + wa < 0` with dark energy negligible
    at a = 6.1e-6 where the growth equations start (`rho_de / rho_m <= 1e-6` there, about
    `w0 + wa < -0.41` for `Omega_m = 0.3`); `n_s` is any finite number.

    Eager only: when any field is a JAX tracer (inside `jit`, `vmap`, `grad`, a diffrax vector
    field, ...) nothing is checked and `cosmo` is returned unchanged, so calling it never breaks a
    transformation. The public functions of the module are guarded on the traced path instead:
    outside the valid range they return NaN, and so do their derivatives (forward and reverse
    mode), so that a sampler or an optimiser rejects the point rather than accept a finite wrong
    answer; inside the range values and derivatives are unchanged. Batched (array-valued) fields
    are checked element by element.

    **Arguments:**

    - `cosmo`: the [`Cosmology`][jpm_core.Cosmology] to check.

    **Returns:**

    `cosmo` itself, so that `check_cosmology(Cosmology(...))` can be used inline.

    **Raises:**

    - `TypeError`: `cosmo` is not a `Cosmology`, or a field is not numeric.
    - `ValueError`: a field is outside the valid range above; the message names the parameter
      and its value.
    """
    if not isinstance(cosmo, Cosmology):
        raise TypeError(f"expected a jpm_core.Cosmology, got {type(cosmo).__name__}: {cosmo!r}")
    values = _concrete_values(cosmo)
    if values is None:
        return cosmo
    for name, value in values.items():
        if not np.all(np.isfinite(value)):
            raise ValueError(f"Cosmology.{name} must be finite, got {value}")
    with np.errstate(all="ignore"):
        requirements = _requirements(Cosmology(**values), np)
    for name, value, ok, requirement in requirements:
        if not np.all(ok):
            raise ValueError(f"Cosmology: {name} {requirement}, got {value}")
    return cosmo


def is_valid(cosmo: Cosmology, *, baryons: bool = False) -> jax.Array:
    """Traced-safe: a boolean scalar, True when every parameter is in the valid range.

    `baryons=True` also asks for `Omega_b > 0` (the `"eisenstein_hu"` transfer function).
    """
    leaves = [jnp.asarray(leaf) for leaf in jax.tree.leaves(cosmo)]
    cosmo = jax.tree.unflatten(jax.tree.structure(cosmo), leaves)
    ok = [jnp.all(jnp.isfinite(leaf)) for leaf in leaves]
    ok += [jnp.all(condition) for _, _, condition, _ in _requirements(cosmo, jnp)]
    if baryons:
        ok.append(jnp.all(cosmo.Omega_b > 0))
    return jnp.stack(ok).all()


def poison(value: jax.Array, valid: Any, *inputs: Any) -> jax.Array:
    """`value` where `valid`, NaN elsewhere, with NaN derivatives there with respect to `inputs`.

    The federation's one way to make an invalid traced parameter give NaN in value *and* gradient
    (never a finite wrong answer, never a zero derivative), for functions called inside `jit` by
    samplers and optimisers:

    ```python
    ok = jnp.isfinite(theta).all() & (theta[0] > 0)
    return jpm_core.poison(result, ok, theta)
    ```

    Adds `where(valid, 0, nan) * sum(inputs)`: where `valid` holds, that is an exact 0 whose
    derivatives are exact zeros, so values and gradients of valid points are unchanged bit for
    bit (given finite inputs); elsewhere the value is NaN and so is the derivative with respect to
    every input (even for a zero cotangent), in forward and reverse mode. `valid` broadcasts
    against `value`. Each input is a PyTree (a `Cosmology`, a network's parameters); its
    floating leaves count: scalars and arrays of the shape of `value` elementwise, others by
    their sum.
    """
    value = jnp.asarray(value)
    nan_unless = jnp.where(valid, 0.0, jnp.nan).astype(value.dtype)
    total = jnp.zeros((), value.dtype)
    leaves = [
        leaf
        for leaf in jax.tree.leaves(inputs)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    for leaf in leaves:
        leaf = jnp.asarray(leaf).astype(value.dtype)
        total = total + (leaf if leaf.ndim == 0 or leaf.shape == value.shape else jnp.sum(leaf))
    return value + nan_unless * total


def check_scale_factor(function: str, a: Any, a_max: float | None) -> None:
    """Eager (no-op on tracers): `a` finite, > 0 and, unless `a_max` is None, <= `a_max`."""
    if isinstance(a, jax.core.Tracer):
        return
    values = np.asarray(a, dtype=np.float64)
    upper = np.inf if a_max is None else a_max * (1.0 + A_TOLERANCE)
    bad = ~(np.isfinite(values) & (values > 0) & (values <= upper))
    if np.any(bad):
        interval = "(0, inf)" if a_max is None else f"(0, {a_max:.6g}]"
        detail = "" if a_max is None else " (the tables end at ln a = 0.5)"
        raise ValueError(
            f"{function}: the scale factor a must be finite and in {interval}{detail}, "
            f"got {values[bad] if values.ndim else values}"
        )


def scale_factor_ok(a: jax.Array, a_max: float | None) -> jax.Array:
    """Traced-safe mask of the valid scale factors (see `check_scale_factor`)."""
    ok = jnp.isfinite(a) & (a > 0)
    if a_max is not None:
        ok = ok & (a <= a_max * (1.0 + A_TOLERANCE))
    return ok


def float_dtype(*values: Any) -> jnp.dtype:
    """The floating dtype for computations on these values: float32 unless x64 says otherwise."""
    return jnp.result_type(*values, float)


def as_float(value: Any) -> jax.Array:
    """`value` as a JAX array of a floating dtype (integers become the default float)."""
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.result_type(float))
    return value
