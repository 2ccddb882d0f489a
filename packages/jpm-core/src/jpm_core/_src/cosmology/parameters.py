"""The `Cosmology` PyTree and its eager validation."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["HUBBLE_DISTANCE", "Cosmology", "check_cosmology"]

HUBBLE_DISTANCE = 2997.92458
"""c / H0 in Mpc/h (speed of light in km/s divided by 100 km/s/(Mpc/h))."""


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


def check_cosmology(cosmo: Cosmology) -> Cosmology:
    """Check that the parameters of a cosmology are finite and physical.

    Eager only: when any field is a JAX tracer (inside `jit`, `vmap`, `grad`, a diffrax vector
    field, ...) nothing is checked and `cosmo` is returned unchanged, so calling it never breaks a
    transformation. Batched (array-valued) fields are checked element by element.

    **Arguments:**

    - `cosmo`: the [`Cosmology`][jpm_core.Cosmology] to check.

    **Returns:**

    `cosmo` itself, so that `check_cosmology(Cosmology(...))` can be used inline.

    **Raises:**

    - `TypeError`: `cosmo` is not a `Cosmology`, or a field is not numeric.
    - `ValueError`: a field is not finite, or `Omega_c <= 0`, `Omega_b < 0`, `h <= 0`,
      `sigma8 <= 0`, `Omega_m > 1` (negative dark-energy density) or `w0 + wa >= 0` (dark energy
      not negligible at early times); the message names the parameter and its value.
    """
    if not isinstance(cosmo, Cosmology):
        raise TypeError(f"expected a jpm_core.Cosmology, got {type(cosmo).__name__}: {cosmo!r}")
    values = _concrete_values(cosmo)
    if values is None:
        return cosmo
    for name, value in values.items():
        if not np.all(np.isfinite(value)):
            raise ValueError(f"Cosmology.{name} must be finite, got {value}")
    omega_m = values["Omega_c"] + values["Omega_b"]
    w_early = values["w0"] + values["wa"]
    checks = [
        ("Omega_c", values["Omega_c"], values["Omega_c"] > 0, "must be > 0"),
        ("Omega_b", values["Omega_b"], values["Omega_b"] >= 0, "must be >= 0"),
        ("h", values["h"], values["h"] > 0, "must be > 0"),
        ("sigma8", values["sigma8"], values["sigma8"] > 0, "must be > 0"),
        (
            "Omega_m = Omega_c + Omega_b",
            omega_m,
            omega_m <= 1,
            "must be <= 1 (flat universe: Omega_de = 1 - Omega_m >= 0)",
        ),
        (
            "w0 + wa",
            w_early,
            w_early < 0,
            "must be < 0 (dark energy must be negligible at early times)",
        ),
    ]
    for name, value, ok, requirement in checks:
        if not np.all(ok):
            raise ValueError(f"Cosmology: {name} {requirement}, got {value}")
    return cosmo


def float_dtype(*values: Any) -> jnp.dtype:
    """The floating dtype for computations on these values: float32 unless x64 says otherwise."""
    return jnp.result_type(*values, float)


def as_float(value: Any) -> jax.Array:
    """`value` as a JAX array of a floating dtype (integers become the default float)."""
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.result_type(float))
    return value
