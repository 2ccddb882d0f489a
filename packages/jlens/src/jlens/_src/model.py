"""A numpyro model of noisy log-normal convergence maps for full-field inference (HMC/NUTS)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from jlens._src._jpm_core_api import Cosmology
from jlens._src.geometry import FlatSky, check_geometry
from jlens._src.lognormal import LognormalConfig, lognormal_maps_from_noise
from jlens._src.redshift import RedshiftDistribution, as_bins

__all__ = ["lognormal_model"]

_FIELDS = tuple(f.name for f in dataclasses.fields(Cosmology))


def lognormal_model(
    geometry: FlatSky,
    bins: RedshiftDistribution | Sequence[RedshiftDistribution],
    shifts: Any,
    noise_std: Any,
    *,
    priors: Mapping[str, Any],
    fiducial: Cosmology | None = None,
    observed: Any = None,
    config: LognormalConfig | None = None,
) -> Any:
    """numpyro model: cosmology -> log-normal maps from a non-centred latent field -> noisy maps.

    Sample sites (documented names):

    - one site per entry of `priors`, named after the `jpm_core.Cosmology` field it sets
      (`"Omega_c"`, `"Omega_b"`, `"h"`, `"n_s"`, `"sigma8"`, `"w0"`, `"wa"`); the other fields
      stay at `fiducial`;
    - `"z"`: the latent white noise, `Normal(0, 1)` of shape `(n_bins, npix, npix)` (non-centred:
      the maps are a deterministic function of `z` and the parameters);
    - `"kappa"`: deterministic site, the noiseless maps;
    - `"y"`: the observation `Normal(kappa, noise_std)`, conditioned on `observed` if given.

    **Arguments:**

    - `geometry`, `bins`, `shifts`, `config` (None: the default): as [`lognormal_maps`][jlens.lognormal_maps].
    - `noise_std`: per-pixel noise std, scalar or `(n_bins, 1, 1)`
      ([`shape_noise_std`][jlens.shape_noise_std]).
    - `priors`: mapping from Cosmology field names to numpyro distributions.
    - `fiducial`: the cosmology for the fields without a prior (default `Cosmology()`).
    - `observed`: observed maps `(n_bins, npix, npix)`, or None to simulate.

    **Returns:**

    The (noisy) maps `y`.
    """
    check_geometry("geometry", geometry)
    bins = as_bins(bins)
    unknown = sorted(set(priors) - set(_FIELDS))
    if unknown:
        raise ValueError(f"priors names must be Cosmology fields {_FIELDS}, got {unknown}")
    values = {name: numpyro.sample(name, prior) for name, prior in priors.items()}
    cosmo = dataclasses.replace(fiducial or Cosmology(), **values)
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand((len(bins), *geometry.shape)).to_event(3))
    kappa = numpyro.deterministic(
        "kappa",
        lognormal_maps_from_noise(
            z, cosmo, bins, geometry, shifts, config=config or LognormalConfig()
        ),
    )
    std = jnp.broadcast_to(jnp.asarray(noise_std, kappa.dtype), kappa.shape)
    return numpyro.sample("y", dist.Normal(kappa, std).to_event(3), obs=observed)
