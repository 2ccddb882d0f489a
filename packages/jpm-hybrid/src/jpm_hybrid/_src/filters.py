"""The learned isotropic Fourier filter of the PM potential (Lanzieri, Lanusse & Starck 2022).

`phi_k -> phi_k (1 + f_theta(a, |k|))`, with `f_theta` a clamped cubic B-spline in `|k|` whose
coefficients and knot positions are the outputs of a small network of the scale factor (and, in the
cosmology-conditioned variant, of `Omega_m` and `sigma8`).

The reference architecture (the paper's, JaxPM's `NeuralSplineFourierFilter`): `a -> Dense(32) -> sin
-> Dense(32) -> sin -> two heads`, 17 spline coefficients (an 18th, the first, fixed at 0 so that
`f(k = 0) = 0`) and 15 knot spacings (softmax, then cumulative sum: 16 knots from 0 to 1), 2176
parameters. The reference feeds `|k|` in units of the mesh's Nyquist frequency, which ties a trained
filter to one mesh and box; here `|k|` is in h/Mpc by default (`k_unit="physical"`), with the grid
unit as an option (`k_unit="grid"`: `|k| / k_Nyq`, `k_Nyq = pi / cell`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import Array

import jpm_core

from ._checks import check_choice, check_int, check_positive_float, is_concrete

KUnit = Literal["physical", "grid"]

#: default top of the spline's `|k|` range: h/Mpc for `k_unit="physical"`, `k_Nyq` units for "grid"
DEFAULT_K_MAX = {"physical": 10.0, "grid": float(np.sqrt(3.0))}

# the spline coordinate u = k / k_max is clipped to [0, 1 - _U_MARGIN] (constant beyond k_max)
_U_MARGIN = 1e-4


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """The architecture of a `SplineFilter` (frozen, hashable; recorded in its checkpoints).

    **Arguments:**

    - `n_knots`: knots of the cubic B-spline in `[0, k_max]`, ends included (16, the reference);
      the spline has `n_knots + 2` coefficients, the first fixed at 0.
    - `width`: width of the two hidden `sin` layers (32, the reference).
    - `k_unit`: `"physical"` (default): `|k|` in h/Mpc, so that one filter applies at any box and
      mesh; `"grid"`: `|k|` in units of the mesh's Nyquist frequency `pi / cell` (the reference's
      choice; the filter is then tied to the resolution it was trained at).
    - `k_max`: the top of the spline's range in the unit of `k_unit` (default 10 h/Mpc, or
      `sqrt(3)` in grid units, the corner of the Fourier cube); beyond it the correction is
      constant (its value at `k_max`).
    - `conditioned`: if True the network's inputs are `(a, Omega_m, sigma8)` instead of `a` alone
      (the cosmology-conditioned variant).

    **Raises:** `ValueError`/`TypeError` naming the field for a bad value.
    """

    n_knots: int = 16
    width: int = 32
    k_unit: KUnit = "physical"
    k_max: float | None = None
    conditioned: bool = False

    def __post_init__(self):
        check_int("n_knots", self.n_knots, minimum=2)
        check_int("width", self.width, minimum=1)
        check_choice("k_unit", self.k_unit, ("physical", "grid"))
        if self.k_max is not None:
            object.__setattr__(self, "k_max", check_positive_float("k_max", self.k_max))
        if not isinstance(self.conditioned, bool):
            raise TypeError(f"conditioned must be a bool, got {self.conditioned!r}")

    @property
    def k_range(self) -> float:
        """`k_max`, or its default for `k_unit`."""
        return DEFAULT_K_MAX[self.k_unit] if self.k_max is None else self.k_max

    @property
    def n_inputs(self) -> int:
        """Inputs of the network: 1 (`a`) or 3 (`a, Omega_m, sigma8`)."""
        return 3 if self.conditioned else 1

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-like dict (what checkpoints record)."""
        return {
            "n_knots": self.n_knots,
            "width": self.width,
            "k_unit": self.k_unit,
            "k_max": self.k_range,
            "conditioned": self.conditioned,
        }


@jax.jit
def bspline(u: Array, knots: Array, coefficients: Array) -> Array:
    """A cubic B-spline at `u` by de Boor's algorithm, vectorised over `u`.

    **Arguments:**

    - `u`: points, any shape, inside `[knots[3], knots[-4])`.
    - `knots`: the non-decreasing knot vector, clamped (four equal knots at each end), shape
      `(n + 4,)`.
    - `coefficients`: the `n` control values.

    **Returns:** the spline at `u`, shaped like `u`; NaN where a knot or coefficient it depends on
    is NaN (a NaN knot is never skipped as an empty span).
    """
    n = coefficients.shape[0]
    i = jnp.clip(jnp.searchsorted(knots, u, side="right") - 1, 3, n - 1)
    d = [coefficients[i - 3 + j] for j in range(4)]
    for r in range(1, 4):
        for j in range(3, r - 1, -1):
            left = knots[i + j - 3]
            right = knots[i + j + 1 - r]
            span = right - left
            positive = span > 0
            # a repeated knot (span 0) gives 0; a NaN knot gives NaN (0 * span), value and gradient
            alpha = jnp.where(positive, (u - left) / jnp.where(positive, span, 1.0), 0.0 * span)
            d[j] = (1.0 - alpha) * d[j - 1] + alpha * d[j]
    return d[3]


class SplineFilter(nnx.Module):
    """The learned correction `f_theta(k, a)` of the PM potential: `phi_k -> phi_k (1 + f)`.

    A flax nnx module with the reference architecture (see the module docstring and
    `FilterConfig`). Call it as `model(k, a)` (or `model(k, a, cosmology)` for the conditioned
    variant) with `k` in the model's unit (`config.k_unit`); `jpm_hybrid.potential_filter` makes
    the `(potential_filter, filter_params)` pair that `jpm_core.nbody` takes, converting from h/Mpc.

    `f(k = 0) = 0` exactly (the first spline coefficient is fixed at 0), so the largest scales
    follow the PM force.

    **Arguments:**

    - `config`: a `FilterConfig` (default: the reference architecture, physical `|k|`).
    - `rngs`: `flax.nnx.Rngs` for the initial weights (flax's default initialisers).
    - `zero_output`: if True the value head starts at zero weights and biases, so `f = 0`
      everywhere and the hybrid run starts as plain PM (bit-for-bit); the other layers are random,
      so training moves away from it. Default False (the reference's random start).
    """

    def __init__(
        self, config: FilterConfig | None = None, *, rngs: nnx.Rngs, zero_output: bool = False
    ):
        config = FilterConfig() if config is None else config
        if not isinstance(config, FilterConfig):
            raise TypeError(f"config must be a FilterConfig, got {type(config).__name__}")
        self.config = config
        w = config.width
        self.hidden1 = nnx.Linear(config.n_inputs, w, rngs=rngs)
        self.hidden2 = nnx.Linear(w, w, rngs=rngs)
        self.values = nnx.Linear(w, config.n_knots + 1, rngs=rngs)
        self.spacings = nnx.Linear(w, config.n_knots - 1, rngs=rngs)
        if zero_output:
            self.values.kernel[...] = jnp.zeros_like(self.values.kernel[...])
            self.values.bias[...] = jnp.zeros_like(self.values.bias[...])

    def spline(self, a: Array, cosmology: Array | None = None) -> tuple[Array, Array]:
        """The clamped knot vector `(n_knots + 6,)` on `[0, 1]` and the `n_knots + 2` coefficients
        at scale factor `a` (and `cosmology = (Omega_m, sigma8)` for the conditioned variant)."""
        inputs = jnp.atleast_1d(jnp.asarray(a))
        if self.config.conditioned:
            if cosmology is None:
                raise ValueError(
                    "a conditioned SplineFilter needs cosmology = (Omega_m, sigma8); got None"
                )
            inputs = jnp.concatenate([inputs, jnp.asarray(cosmology, inputs.dtype).reshape(2)])
        elif cosmology is not None:
            raise ValueError("this SplineFilter is not conditioned on the cosmology; pass None")
        h = jnp.sin(self.hidden1(inputs))
        h = jnp.sin(self.hidden2(h))
        values = self.values(h)
        spacings = jax.nn.softmax(self.spacings(h))
        dtype = values.dtype
        zero = jnp.zeros((1,), dtype)
        inner = jnp.concatenate([zero, jnp.cumsum(spacings)])
        inner = inner.at[-1].set(1.0)  # the cumulative sum is 1 up to round-off
        knots = jnp.concatenate([jnp.zeros((3,), dtype), inner, jnp.ones((3,), dtype)])
        coefficients = jnp.concatenate([zero, values])
        return knots, coefficients

    def __call__(self, k: Array, a: Array, cosmology: Array | None = None) -> Array:
        """`f(k, a)` for `k` (any shape) in the model's unit; shaped like `k`."""
        knots, coefficients = self.spline(a, cosmology)
        k = jnp.asarray(k)
        u = jnp.clip(k / jnp.asarray(self.config.k_range, k.dtype), 0.0, 1.0 - _U_MARGIN)
        return bspline(u.astype(coefficients.dtype), knots, coefficients)


def _k_scale(config: FilterConfig, domain: jpm_core.Domain) -> float:
    """The factor turning `|k|` in h/Mpc into the model's unit on `domain`."""
    if config.k_unit == "physical":
        return 1.0
    cells = np.asarray(domain.cell_size, float)
    if not np.allclose(cells, cells[0], rtol=1e-12, atol=0):
        raise ValueError(
            f"k_unit='grid' needs cubic cells (|k| / k_Nyq is not a function of |k| otherwise); "
            f"domain has cell_size {tuple(cells)}"
        )
    return float(cells[0] / np.pi)  # |k| / k_Nyq, k_Nyq = pi / cell


def _cosmology_inputs(config: FilterConfig, cosmo: jpm_core.Cosmology | None) -> Array | None:
    if not config.conditioned:
        return None
    if cosmo is None:
        raise ValueError("a conditioned SplineFilter needs the cosmology: pass cosmo=")
    return jnp.stack([jnp.asarray(cosmo.Omega_m), jnp.asarray(cosmo.sigma8)])


def filter_function(
    graphdef: Any, config: FilterConfig, domain: jpm_core.Domain
) -> Callable[[Array, Array, Any], Array]:
    """The `potential_filter(k, a, params)` of a split `SplineFilter`: `params` is
    `{"model": pure dict of its parameters, "cosmology": (Omega_m, sigma8) or None}`."""
    scale = _k_scale(config, domain)
    # The filter is isotropic: on the mesh's Fourier grid it is evaluated once per distinct |k|
    # (about 3 N^2 values instead of N^3 / 2 at N^3) and gathered back, which keeps a hybrid step
    # within a few percent of a plain PM step. `jpm_core` calls the filter with exactly
    # `jpm_core.wavenumbers(domain)`; any other `k` is evaluated point by point.
    grid = None
    if not domain.is_distributed:
        with jax.ensure_compile_time_eval():  # a constant, also when built under a jit trace
            grid = np.asarray(jax.device_get(jpm_core.wavenumbers(domain)))
    if grid is not None:
        unique, inverse = np.unique(grid, return_inverse=True)
        inverse = inverse.reshape(grid.shape).astype(np.int32)

    def evaluate(model, k, a, cosmology):
        return model(k * jnp.asarray(scale, k.dtype), a, cosmology).astype(k.dtype)

    def potential_filter(k, a, params):
        model = nnx.merge(graphdef, nnx.State(params["model"]))
        cosmology = params.get("cosmology")
        k = jnp.asarray(k)
        if grid is None or k.shape != grid.shape:
            return 1.0 + evaluate(model, k, a, cosmology)
        if is_concrete(k):
            if np.array_equal(np.asarray(k), grid.astype(np.asarray(k).dtype)):
                return 1.0 + evaluate(model, jnp.asarray(unique, k.dtype), a, cosmology)[inverse]
            return 1.0 + evaluate(model, k, a, cosmology)
        # A traced `k` of the grid's shape is usually this domain's grid, but a filter built for
        # one box may be run on another box with the same mesh: check, and fall back to the
        # point-by-point evaluation (the check costs one comparison per mode).
        return 1.0 + jax.lax.cond(
            jnp.all(k == jnp.asarray(grid, k.dtype)),
            lambda k: evaluate(model, jnp.asarray(unique, k.dtype), a, cosmology)[inverse],
            lambda k: evaluate(model, k, a, cosmology),
            k,
        )

    return potential_filter


def potential_filter(
    model: SplineFilter,
    domain: jpm_core.Domain,
    *,
    cosmo: jpm_core.Cosmology | None = None,
) -> tuple[Callable[[Array, Array, Any], Array], dict[str, Any]]:
    """The `(potential_filter, filter_params)` pair that plugs a `SplineFilter` into
    `jpm_core.nbody` (or `jpm_core.pm_forces`, or as diffrax `args` of `jpm_core.nbody_vector_field`).

    The multiplier is `1 + f(k, a)` with `|k|` converted from h/Mpc to the model's unit (grid
    units need cubic cells). The model's graph is static (closed over); its parameters travel as
    `filter_params`, a PyTree `{"model": nnx.to_pure_dict(params), "cosmology": ...}`, so that every
    gradient method of `nbody` (and diffrax's adjoints) differentiates with respect to them.

    **Arguments:**

    - `model`: a `SplineFilter` (not modified).
    - `domain`: the `jpm_core.Domain` of the force mesh.
    - `cosmo`: the `jpm_core.Cosmology` of the run, required by (and only by) a conditioned model;
      its `(Omega_m, sigma8)` enter `filter_params` (traced and differentiable if `cosmo` is).

    **Returns:** `(potential_filter, filter_params)`.
    """
    if not isinstance(model, SplineFilter):
        raise TypeError(f"model must be a jpm_hybrid.SplineFilter, got {type(model).__name__}")
    if not isinstance(domain, jpm_core.Domain):
        raise TypeError(f"domain must be a jpm_core.Domain, got {type(domain).__name__}")
    graphdef, params = nnx.split(model, nnx.Param)
    fn = filter_function(graphdef, model.config, domain)
    return fn, {
        "model": nnx.to_pure_dict(params),
        "cosmology": _cosmology_inputs(model.config, cosmo),
    }


class ForceReversal(NamedTuple):
    """What `force_reversal` found: the smallest multiplier `1 + f` over the `|k|` of the mesh and
    the scale factors examined, where it is reached (`a`, `k` in h/Mpc), and `reversed = min < 0`.
    A NaN multiplier anywhere makes `min_multiplier` NaN (at the first such `a`, `k`) and
    `reversed` False: `check_force_reversal` refuses it as not finite."""

    min_multiplier: float
    a: float
    k: float
    reversed: bool


def force_reversal(
    model: SplineFilter,
    domain: jpm_core.Domain,
    a: Any,
    *,
    cosmo: jpm_core.Cosmology | None = None,
) -> ForceReversal:
    """Evaluate `1 + f` of a `SplineFilter` on every distinct `|k|` of `domain`'s Fourier grid at the
    scale factors `a` (eager; concrete parameters) and report its minimum.

    `1 + f < 0` reverses gravity at that scale (repulsive short-range forces, which blow up a run);
    `jpm_hybrid.hybrid_nbody` refuses such a filter before running (`check_reversal=True`).

    **Arguments:** `model`, `domain`, `cosmo` as in `jpm_hybrid.potential_filter`; `a` a scale factor
    or a sequence of them (e.g. the step boundaries of a run, where the forces are evaluated).

    **Returns:** a `ForceReversal`.
    """
    fn, params = potential_filter(model, domain, cosmo=cosmo)
    if not is_concrete(params):
        raise ValueError("force_reversal needs concrete filter parameters (call it outside jit)")
    a_values = np.atleast_1d(np.asarray(a, float))
    if a_values.ndim != 1 or a_values.size == 0 or not np.all(np.isfinite(a_values)):
        raise ValueError(f"a must be a finite scale factor or a 1-D sequence of them, got {a!r}")
    # concrete parameters evaluate now, also when called while a jitted function is traced (e.g.
    # hybrid_nbody under jit with a closed-over model and a traced cosmology)
    with jax.ensure_compile_time_eval():
        k_mesh = np.asarray(
            jax.device_get(
                jpm_core.wavenumbers(jpm_core.Domain(domain.mesh_shape, domain.box_size))
            )
        )
        k = np.unique(k_mesh.ravel())
        evaluate = jax.jit(jax.vmap(fn, in_axes=(None, 0, None)))
        values = np.asarray(evaluate(jnp.asarray(k), jnp.asarray(a_values, k.dtype), params))
    i, j = np.unravel_index(int(np.argmin(values)), values.shape)
    low = float(values[i, j])
    return ForceReversal(min_multiplier=low, a=float(a_values[i]), k=float(k[j]), reversed=low < 0)


def check_force_reversal(
    model: SplineFilter,
    domain: jpm_core.Domain,
    a: Any,
    *,
    cosmo: jpm_core.Cosmology | None = None,
) -> ForceReversal:
    """`force_reversal`, raising a `ValueError` (with where it happens) if `1 + f < 0` anywhere,
    or if `1 + f` is not finite somewhere (NaN or infinite parameters)."""
    report = force_reversal(model, domain, a, cosmo=cosmo)
    if not np.isfinite(report.min_multiplier):
        raise ValueError(
            f"the filter is not finite: 1 + f = {report.min_multiplier!r} at "
            f"k = {report.k:.4g} h/Mpc, a = {report.a:.4g} (NaN or infinite parameters); "
            "refusing to use it"
        )
    if report.reversed:
        raise ValueError(
            f"the filter reverses gravity: 1 + f = {report.min_multiplier:.4g} < 0 at "
            f"k = {report.k:.4g} h/Mpc, a = {report.a:.4g} (force reversal); refusing to use it"
        )
    return report
