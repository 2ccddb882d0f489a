"""Redshift distributions of lensing sources: Smail, tabulated/histogram, photo-z tomographic bins.

Every distribution is a small frozen PyTree dataclass whose array fields are leaves (so `jit`,
`vmap` and `grad` see through it) and whose `z_max` (the redshift beyond which it is zero) is
static. `nz.pdf(z)` is the distribution normalised to unit integral over [0, z_max], zero outside.
The normalisation is numerical (exact for tabulated distributions); a distribution that does not
integrate to a positive finite number is an eager `ValueError` when its parameters are concrete,
and makes the result NaN when they are traced.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special as jss
import numpy as np

from jlens._src._checks import check_finite_positive, check_static_positive, is_concrete

__all__ = ["N_GRID", "PhotoZBin", "RedshiftDistribution", "Smail", "Tabulated", "tomographic_bins"]

N_GRID = 2049
"""Number of nodes of the uniform redshift grid on [0, z_max] used for normalisations and the
lensing-efficiency integrals."""

_FAR = 1e3  # photo-z edge standing for +-infinity (finite: keeps every derivative finite)


def _dtype(*values: Any) -> jnp.dtype:
    return jnp.result_type(*values, float)


def z_grid(z_max: float, dtype: jnp.dtype) -> jax.Array:
    """The uniform grid of `N_GRID` redshifts on [0, z_max]."""
    return jnp.linspace(0.0, z_max, N_GRID, dtype=dtype)


def _simpson(values: jax.Array, step: float) -> jax.Array:
    """Simpson's rule over the last axis of values on `N_GRID` (odd) uniform nodes."""
    weights = np.ones(N_GRID)
    weights[1:-1:2] = 4.0
    weights[2:-1:2] = 2.0
    weights = jnp.asarray(weights * step / 3.0, values.dtype)
    return jnp.sum(values * weights.reshape((1,) * (values.ndim - 1) + (-1,)), axis=-1)


def _checked_norm(norm: jax.Array) -> jax.Array:
    """`norm` where it is positive and finite, NaN elsewhere (poisons the traced path)."""
    return jnp.where(jnp.isfinite(norm) & (norm > 0), norm, jnp.nan)


class RedshiftDistribution(abc.ABC):
    """A redshift distribution n(z) on [0, z_max]: subclass, implement `_unnormalised`, `z_max`."""

    z_max: float

    @abc.abstractmethod
    def _unnormalised(self, z: jax.Array) -> jax.Array:
        """n(z) up to a constant, for z in [0, z_max]."""

    @abc.abstractmethod
    def _check_parameters(self) -> None:
        """Eager checks of the concrete parameters (cheap, NumPy only)."""

    def normalisation(self) -> jax.Array:
        """The integral of the unnormalised n(z) over [0, z_max] (Simpson's rule on `N_GRID` nodes).

        **Returns:**

        A scalar; `pdf` divides by it. NaN if it is not positive and finite (see `check`).
        """
        dtype = _dtype(*jax.tree.leaves(self))
        z = z_grid(self.z_max, dtype)
        return _checked_norm(_simpson(self._unnormalised(z), self.z_max / (N_GRID - 1)))

    def check(self) -> RedshiftDistribution:
        """Eager validation: the parameters, and a positive finite normalisation.

        Skipped for traced parameters (the traced path gives NaN instead). The public functions of
        jlens call it on every distribution they are given.

        **Returns:**

        The distribution itself.

        **Raises:**

        `ValueError` naming the distribution and the offending value.
        """
        self._check_parameters()
        if is_concrete(self):
            with jax.ensure_compile_time_eval():  # concrete even inside someone else's jit
                norm = float(np.asarray(_normalisation(self), dtype=np.float64))
            if not np.isfinite(norm):  # NaN: the integral was not positive and finite
                raise ValueError(
                    f"{type(self).__name__} does not integrate to a positive finite number over "
                    f"[0, z_max = {self.z_max}]: {self!r}"
                )
        return self

    def pdf(self, z: Any) -> jax.Array:
        """The normalised n(z): integral 1 over [0, z_max], 0 outside.

        **Arguments:**

        - `z`: redshift, scalar or array.

        **Returns:**

        n(z), shape of `z`.
        """
        z = jnp.asarray(z, _dtype(z, *jax.tree.leaves(self)))
        inside = (z >= 0) & (z <= self.z_max)
        value = self._unnormalised(jnp.clip(z, 0.0, self.z_max)) / self.normalisation()
        return jnp.where(inside, value, 0.0)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Smail(RedshiftDistribution):
    """The Smail et al. (1994) distribution n(z) ∝ z^alpha exp(-(z / z0)^beta), cut at `z_max`.

    The LSST DESC Science Requirements Document (arXiv:1809.01669) uses `alpha = 2`, `beta = 0.68`,
    `z0 = 0.11` (Y10) or `z0 = 0.13` (Y1). The tail beyond `z_max` is dropped (the distribution is
    renormalised on [0, z_max]); choose `z_max` where it is negligible (4 is ample for the SRD
    values).

    **Arguments:**

    - `z0`: scale redshift (> 0).
    - `alpha`: power-law index at low redshift (> -1).
    - `beta`: exponent of the exponential cut-off (> 0).
    - `z_max`: largest redshift (static Python float, default 4).
    """

    z0: Any
    alpha: Any = 2.0
    beta: Any = 1.5
    z_max: float = dataclasses.field(default=4.0, metadata={"static": True})

    def _unnormalised(self, z: jax.Array) -> jax.Array:
        positive = z > 0
        zs = jnp.where(positive, z, 1.0)
        value = jnp.exp(self.alpha * jnp.log(zs) - (zs / self.z0) ** self.beta)
        return jnp.where(positive, value, jnp.where(self.alpha == 0, 1.0, 0.0))

    def _check_parameters(self) -> None:
        check_static_positive("Smail.z_max", self.z_max)
        check_finite_positive("Smail.z0", self.z0)
        check_finite_positive("Smail.beta", self.beta)
        if is_concrete(self.alpha) and not np.all(np.asarray(self.alpha, np.float64) > -1):
            raise ValueError(f"Smail.alpha must be > -1 (integrable at z = 0), got {self.alpha!r}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Tabulated(RedshiftDistribution):
    """A tabulated n(z): linear interpolation between nodes, or a histogram.

    With `len(values) == len(z)`, n(z) is the linear interpolation of `values` at the nodes `z`;
    with `len(values) == len(z) - 1`, `z` are bin edges and n(z) is piecewise constant (a histogram).
    It is zero outside [z[0], z[-1]]; `z_max = z[-1]`. The normalisation is exact (trapezoid on the
    nodes, or the sum of the bin areas).

    **Arguments:**

    - `z`: increasing redshifts >= 0 (static: converted to a tuple of floats).
    - `values`: n at the nodes, or per bin (>= 0, not all zero); a JAX leaf (differentiable).
    """

    z: tuple[float, ...] = dataclasses.field(metadata={"static": True})
    values: Any

    def __post_init__(self) -> None:
        if isinstance(self.z, jax.core.Tracer):
            raise TypeError("Tabulated.z must be concrete (it is static); differentiate values")
        z = np.asarray(self.z, dtype=np.float64)
        if z.ndim != 1 or z.size < 2:
            raise ValueError(
                f"Tabulated.z must be a 1-d array of >= 2 redshifts, got shape {z.shape}"
            )
        if not (np.all(np.isfinite(z)) and z[0] >= 0 and np.all(np.diff(z) > 0)):
            raise ValueError(f"Tabulated.z must be finite, >= 0 and increasing, got {z}")
        object.__setattr__(self, "z", tuple(float(v) for v in z))
        if isinstance(self.values, list | tuple):  # one array leaf, not a PyTree of numbers
            object.__setattr__(self, "values", np.asarray(self.values, dtype=np.float64))

    @property
    def z_max(self) -> float:  # type: ignore[override]
        """The last node or edge."""
        return self.z[-1]

    @property
    def is_histogram(self) -> bool:
        """Whether `values` are per bin (one fewer than the edges `z`)."""
        return np.shape(self.values)[-1] == len(self.z) - 1

    def _check_parameters(self) -> None:
        n = np.shape(self.values)
        if len(n) != 1 or n[0] not in (len(self.z), len(self.z) - 1):
            raise ValueError(
                f"Tabulated.values must have len(z) = {len(self.z)} (nodes) or len(z) - 1 "
                f"(histogram) entries, got shape {n}"
            )
        check_finite_positive("Tabulated.values", self.values, allow_zero=True)

    def _unnormalised(self, z: jax.Array) -> jax.Array:
        values = jnp.asarray(self.values, z.dtype)
        nodes = jnp.asarray(self.z, z.dtype)
        if self.is_histogram:
            index = jnp.clip(jnp.searchsorted(nodes, z, side="right") - 1, 0, len(self.z) - 2)
            inside = (z >= nodes[0]) & (z <= nodes[-1])
            return jnp.where(inside, values[index], 0.0)
        return jnp.interp(z, nodes, values, left=0.0, right=0.0)

    def normalisation(self) -> jax.Array:
        values = jnp.asarray(self.values, _dtype(self.values))
        widths = jnp.asarray(np.diff(self.z), values.dtype)
        if self.is_histogram:
            norm = jnp.sum(values * widths)
        else:
            norm = jnp.sum(0.5 * (values[1:] + values[:-1]) * widths)
        return _checked_norm(norm)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PhotoZBin(RedshiftDistribution):
    """The true-redshift distribution of a photometric-redshift bin of a parent n(z).

    Galaxies of true redshift z have Gaussian photometric redshifts of mean z and standard deviation
    `sigma_z (1 + z)`; the bin selects photo-z in [z_lo, z_hi), so
    `n_bin(z) ∝ n(z) [erf((z_hi - z) / (sqrt(2) s)) - erf((z_lo - z) / (sqrt(2) s))] / 2` with
    `s = sigma_z (1 + z)`, renormalised to 1. `z_max` is the parent's. Use
    [`tomographic_bins`][jlens.tomographic_bins] to cut a parent into equal-number bins.

    **Arguments:**

    - `parent`: the parent [`RedshiftDistribution`][jlens.RedshiftDistribution].
    - `z_lo`, `z_hi`: photo-z edges of the bin (z_lo < z_hi; +-1e3 stand for +-infinity).
    - `sigma_z`: photo-z scatter at z = 0 (> 0).
    """

    parent: RedshiftDistribution
    z_lo: Any
    z_hi: Any
    sigma_z: Any = 0.05

    @property
    def z_max(self) -> float:  # type: ignore[override]
        """The parent's `z_max`."""
        return self.parent.z_max

    def _selection(self, z: jax.Array) -> jax.Array:
        scale = math.sqrt(2.0) * self.sigma_z * (1.0 + z)
        return 0.5 * (jss.erf((self.z_hi - z) / scale) - jss.erf((self.z_lo - z) / scale))

    def _unnormalised(self, z: jax.Array) -> jax.Array:
        return self.parent.pdf(z) * self._selection(z)

    def _check_parameters(self) -> None:
        if not isinstance(self.parent, RedshiftDistribution):
            raise TypeError(f"PhotoZBin.parent must be a RedshiftDistribution, got {self.parent!r}")
        self.parent._check_parameters()
        check_finite_positive("PhotoZBin.sigma_z", self.sigma_z)
        if is_concrete((self.z_lo, self.z_hi)) and not np.all(
            np.asarray(self.z_hi, np.float64) > np.asarray(self.z_lo, np.float64)
        ):
            raise ValueError(f"PhotoZBin needs z_lo < z_hi, got {self.z_lo!r} and {self.z_hi!r}")


def tomographic_bins(
    parent: RedshiftDistribution, n_bins: int, *, sigma_z: Any = 0.05
) -> tuple[PhotoZBin, ...]:
    """Cut `parent` into `n_bins` photometric-redshift bins holding equal numbers of galaxies.

    The edges are the quantiles j / n_bins of the photometric-redshift distribution (the parent
    convolved with the Gaussian scatter `sigma_z (1 + z)`), computed on the `N_GRID` redshift grid
    and inverted by linear interpolation; the first bin starts at photo-z -infinity and the last
    ends at +infinity, so that the bins' distributions, weighted by 1 / n_bins each, add up to the
    parent. Differentiable with respect to the parent's parameters and `sigma_z`.

    **Arguments:**

    - `parent`: the [`RedshiftDistribution`][jlens.RedshiftDistribution] of all sources.
    - `n_bins`: number of bins (static int >= 1).
    - `sigma_z`: photo-z scatter at z = 0 (> 0).

    **Returns:**

    A tuple of `n_bins` [`PhotoZBin`][jlens.PhotoZBin], in increasing redshift.
    """
    if not isinstance(parent, RedshiftDistribution):
        raise TypeError(f"parent must be a RedshiftDistribution, got {type(parent).__name__}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
    parent.check()
    check_finite_positive("sigma_z", sigma_z)
    sigma_z = jnp.asarray(sigma_z, _dtype(sigma_z, *jax.tree.leaves(parent)))
    edges = _equal_number_edges(parent, n_bins, sigma_z)
    return tuple(PhotoZBin(parent, edges[i], edges[i + 1], sigma_z) for i in range(n_bins))


@jax.jit
def _normalisation(nz: RedshiftDistribution) -> jax.Array:
    return nz.normalisation()


@functools.partial(jax.jit, static_argnames="n_bins")
def _equal_number_edges(parent: RedshiftDistribution, n_bins: int, sigma_z: jax.Array) -> jax.Array:
    """The n_bins + 1 photo-z edges of equal-number bins (outer ones at -+_FAR)."""
    dtype = sigma_z.dtype
    z = z_grid(parent.z_max, dtype)
    n = parent.pdf(z)
    # Photo-z CDF at the grid nodes: int dz n(z) Phi((zp - z) / (sigma_z (1 + z))).
    zp = z_grid(parent.z_max, dtype)
    scale = math.sqrt(2.0) * sigma_z * (1.0 + z)
    cdf_given_z = 0.5 * (1.0 + jss.erf((zp[:, None] - z[None, :]) / scale[None, :]))
    cdf = _simpson(cdf_given_z * n[None, :], parent.z_max / (N_GRID - 1))
    quantiles = jnp.arange(1, n_bins, dtype=dtype) / n_bins
    inner = jnp.interp(quantiles, cdf, zp)
    far = jnp.full((1,), _FAR, dtype)
    return jnp.concatenate([-far, inner, far])


def as_bins(
    bins: RedshiftDistribution | Sequence[RedshiftDistribution],
) -> tuple[RedshiftDistribution, ...]:
    """`bins` as a non-empty tuple of distributions (one distribution becomes a 1-tuple)."""
    if isinstance(bins, RedshiftDistribution):
        return (bins,)
    bins = tuple(bins)
    if not bins or not all(isinstance(b, RedshiftDistribution) for b in bins):
        raise TypeError(
            "bins must be a RedshiftDistribution or a non-empty sequence of them, got "
            f"{[type(b).__name__ for b in bins]}"
        )
    return bins
