"""Mass mapping: jlens's shear operator composed with jscore's score prior and annealed sampler.

`mass_map` takes an observed shear map `(2, ny, nx)` (NaN allowed where masked, the survey
convention), a `jlens.ShearOperator` carrying the mask and the per-pixel shape-noise standard
deviation, and a prior on the convergence known by its score (`jscore.GaussianFieldPrior`, or a
trained `jscore` score network with the power spectrum of its training maps); it returns posterior
samples of the convergence from `jscore.annealed_posterior_sample` with the Fourier preconditioner
built for the shear operator (without it the large scales do not converge, jscore's README), and the
Wiener filter by conjugate gradients when the prior is Gaussian (or a Gaussian `wiener_prior` is
given): the baseline a learned prior must beat.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jlens
import jscore

__all__ = ["MassMap", "mass_map"]


@dataclasses.dataclass(frozen=True)
class MassMap:
    """What [`mass_map`][jinfer.mass_map] returns.

    - `samples`: posterior samples of the convergence, `(num_chains, ny, nx)`.
    - `mean`, `std`: their mean and standard deviation per pixel.
    - `wiener`: the Wiener filter (the exact posterior mean for a Gaussian prior), or `None`.
    - `info`: jscore's `AnnealedSampleInfo` (acceptance, final sigmas).
    """

    samples: jax.Array
    mean: jax.Array
    std: jax.Array
    wiener: jax.Array | None
    info: jscore.AnnealedSampleInfo


def _noise(operator: jlens.ShearOperator, shape, noise_std) -> jscore.DiagonalNoise:
    std = operator.noise_std if noise_std is None else noise_std
    if std is None:
        raise ValueError(
            "no noise: give the ShearOperator a noise_std or pass noise_std= (the per-pixel "
            "shape-noise std)"
        )
    std = jnp.asarray(std, jnp.result_type(float))
    if (std.ndim == 3 and std.shape != (2, *shape)) or std.ndim not in (0, 2, 3):
        raise ValueError(
            f"noise_std must be a scalar, ({shape[0]}, {shape[1]}) or (2, {shape[0]}, {shape[1]}), "
            f"got shape {std.shape}"
        )
    variance = jnp.broadcast_to(std**2, (2, *shape))
    seen = jnp.ones((2, *shape), bool)
    if operator.mask is not None:
        seen = jnp.broadcast_to(jnp.asarray(operator.mask)[None] > 0, (2, *shape))
    observed_std = np.asarray(jnp.broadcast_to(std, (2, *shape)))[np.asarray(seen)]
    if not (np.all(np.isfinite(observed_std)) and np.all(observed_std > 0)):
        raise ValueError("noise_std must be finite and > 0 on the observed (unmasked) pixels")
    return jscore.DiagonalNoise(jnp.where(seen, variance, jnp.inf))  # masked: no information


def mass_map(
    key,
    shear,
    operator: jlens.ShearOperator,
    prior: jscore.GaussianFieldPrior | Callable,
    *,
    power=None,
    noise_std=None,
    wiener_prior: jscore.GaussianFieldPrior | None = None,
    num_chains: int = 16,
    annealing: jscore.AnnealingConfig | None = None,
    hmc: jscore.HMCConfig | None = None,
    ode: jscore.ODEConfig | None = None,
    progress: bool = True,
) -> MassMap:
    """Posterior convergence maps from a shear map: annealed HMC with a score prior, and the Wiener filter.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `shear`: the observed shear `(2, ny, nx)` (components `gamma_1, gamma_2`; NaN allowed where
      the operator's mask is 0).
    - `operator`: a `jlens.ShearOperator` with the mask and the per-pixel `noise_std` (scalar or
      `(ny, nx)`); masked pixels get infinite noise variance.
    - `prior`: a `jscore.GaussianFieldPrior`, or a score function `s(kappa, sigma)` (a trained jscore
      network), which then needs `power`.
    - `power`: the prior's power map on the half-complex grid (for the preconditioner; default
      `prior.power` for a Gaussian prior).
    - `noise_std`: the shape-noise std per pixel, overriding the operator's: a scalar, `(ny, nx)`,
      or `(2, ny, nx)` for components with their own noise (as COSMOS's `std1`, `std2`); it may be
      0 or NaN where the mask is 0.
    - `wiener_prior`: the Gaussian prior of the Wiener baseline (default: `prior` when Gaussian).
    - `num_chains`: posterior samples (independent chains).
    - `annealing`, `hmc`, `ode`: jscore's configurations (defaults: 400 steps from `sigma = 0.5`
      to `0.01` with preconditioned steps of 0.25, jscore's measured settings).
    - `progress`: show a progress bar (rich, on stderr) over the annealing steps, with the chains'
      median `sigma` and their acceptance so far.

    **Returns:**

    A [`MassMap`][jinfer.MassMap].
    """
    if not isinstance(operator, jlens.ShearOperator):
        raise TypeError(f"operator must be a jlens.ShearOperator, got {type(operator).__name__}")
    shape = operator.geometry.shape
    shear = jnp.asarray(shear)
    if shear.shape != (2, *shape):
        raise ValueError(f"shear must have shape (2, {shape[0]}, {shape[1]}), got {shear.shape}")
    noise = _noise(operator, shape, noise_std)
    observed = np.isfinite(np.asarray(noise.variance))
    if not np.all(np.isfinite(np.asarray(shear))[observed]):
        raise ValueError("shear holds non-finite values in observed (unmasked) pixels")
    if isinstance(prior, jscore.GaussianFieldPrior):
        score_fn, power = prior.score, prior.power if power is None else power
        wiener_prior = prior if wiener_prior is None else wiener_prior
    elif callable(prior):
        if power is None:
            raise ValueError("a learned prior needs power= (its training maps' power map)")
        score_fn = prior
    else:
        raise TypeError(
            f"prior must be a jscore.GaussianFieldPrior or a score function, got {prior!r}"
        )
    d1, d2 = jlens.shear_multipliers(shape)
    precision = (
        float(noise.total_precision()) / shear.size * (np.asarray(d1) ** 2 + np.asarray(d2) ** 2)
    )
    preconditioner = jscore.FourierPreconditioner(power, shape, precision)
    annealing = annealing or jscore.AnnealingConfig(sigma_init=0.5, sigma_min=0.01, num_steps=400)
    hmc = hmc or jscore.HMCConfig(step_size=0.25, step_size_exponent=0.0)
    ode = ode or jscore.ODEConfig()
    from jflows import progress_bar

    with progress_bar(
        "jinfer.mass_map", annealing.num_steps, enabled=progress, fields=("sigma", "accept")
    ) as bar:

        def report(step, sigma, accepted):
            step = int(step)
            bar.update(
                step, sigma=float(np.median(sigma)), accept=float(np.mean(accepted)) / max(step, 1)
            )

        samples, info = jscore.annealed_posterior_sample(
            key, score_fn, operator.forward, operator.adjoint, noise, shear, num_chains=num_chains,
            annealing=annealing, hmc=hmc, ode=ode, preconditioner=preconditioner,
            progress_fn=report if progress else None,
            progress_every=max(1, annealing.num_steps // 50),
        )  # fmt: skip
    wiener = None
    if wiener_prior is not None:
        wiener, _ = jscore.wiener_filter_cg(
            shear, operator.forward, operator.adjoint, noise, wiener_prior
        )
    return MassMap(samples, samples.mean(0), samples.std(0), wiener, info)
