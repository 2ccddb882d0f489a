r"""numpyro models as differentiable simulators: `(theta, x, joint score)` training triples.

A numpyro model that samples parameters (the `theta` sites), latent variables (every other sample
site) and data (the `x` site) is a simulator whose joint density `p(theta, z, x)` is known. Running it
forward under `handlers.seed`/`handlers.trace` gives a draw `(theta, z, x)`; substituting every sample
site with that draw and differentiating the log joint with respect to the `theta` sites only gives
the joint score (Zeghal et al. 2022)

    t = ∇_theta log p(theta, z, x),

an unbiased estimate of the posterior score `∇_theta log p(theta | x)` (its expectation over
`z | theta, x`), i.e. the target of [`fit`][jflows.fit]'s score-matching term. numpyro and diffrax
are optional dependencies (`pip install 'jflows[simulators]'`), imported only when called.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

__all__ = ["lotka_volterra_model", "lotka_volterra_simulate", "simulate_with_score"]


def _numpyro():
    try:
        import numpyro
        import numpyro.infer.util
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("this function needs numpyro: pip install 'jflows[simulators]'") from err
    return numpyro


def _sample_sites(trace):
    return {
        name: site
        for name, site in trace.items()
        if site["type"] == "sample" and not site.get("is_observed", False)
    }


def simulate_with_score(
    key,
    model: Callable,
    n: int,
    *,
    theta_sites: Sequence[str],
    x_site: str,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Draw `n` triples `(theta, x, score)` from any numpyro model, with its joint score.

    Each draw runs `model(*model_args, **model_kwargs)` under `numpyro.handlers.seed` and `trace`;
    the values of all (unobserved) sample sites are then substituted back (`handlers.substitute`,
    through `numpyro.infer.util.log_density`) and

        score = ∇_theta [ Σ_sites log p(site value | parents) ]

    is taken by `jax.grad` with respect to the `theta_sites` only, every other site (latents `z` and
    the data `x`) held at its simulated value; deterministic sites (e.g. an ODE solution) are
    recomputed from the substituted parameters, so gradients flow through them. The score is with
    respect to the sites' values as the model samples them (constrained space: for a `LogNormal`
    prior, the derivative with respect to the positive parameter itself). Draws are `vmap`ped.

    **Arguments:**

    - `model`: a numpyro model (a callable with `numpyro.sample` statements, no observed data).
    - `key`: a `jax.random` key.
    - `n`: number of draws.
    - `theta_sites`: names of the parameter sites (continuous); their values are flattened and
      concatenated in this order.
    - `x_site`: name of the data site (flattened).
    - `model_args`, `model_kwargs`: arguments of the model.

    **Returns:**

    `theta` `(n, d)`, `x` `(n, k)` and the joint score `(n, d)` (`d` = total size of the
    `theta_sites`, `k` = size of the `x_site`).
    """
    numpyro = _numpyro()
    from numpyro import handlers

    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(theta_sites, str):
        raise TypeError(
            f"theta_sites must be a sequence of site names, got the string {theta_sites!r}"
        )
    theta_sites = tuple(theta_sites)
    if not theta_sites:
        raise ValueError("theta_sites must name at least one sample site")
    if x_site in theta_sites:
        raise ValueError(f"x_site {x_site!r} is also one of theta_sites {theta_sites}")
    model_kwargs = {} if model_kwargs is None else dict(model_kwargs)

    # one eager trace to validate the site names (and learn their shapes)
    probe = handlers.trace(handlers.seed(model, rng_seed=0)).get_trace(*model_args, **model_kwargs)
    sites = _sample_sites(probe)
    for name in (*theta_sites, x_site):
        if name not in sites:
            raise ValueError(
                f"{name!r} is not an unobserved sample site of the model; its sample sites are "
                f"{sorted(sites)}"
            )
    for name in theta_sites:
        if not jnp.issubdtype(jnp.asarray(sites[name]["value"]).dtype, jnp.floating):
            raise ValueError(
                f"theta site {name!r} is not continuous (dtype {sites[name]['value'].dtype})"
            )

    def one(key):
        trace = handlers.trace(handlers.seed(model, rng_seed=key)).get_trace(
            *model_args, **model_kwargs
        )
        values = {name: site["value"] for name, site in _sample_sites(trace).items()}
        theta = {name: values[name] for name in theta_sites}

        def log_joint(theta):
            log_p, _ = numpyro.infer.util.log_density(
                model, model_args, model_kwargs, {**values, **theta}
            )
            return log_p

        score = jax.grad(log_joint)(theta)
        flat = lambda tree: jnp.concatenate([jnp.ravel(tree[name]) for name in theta_sites])  # noqa: E731
        return flat(theta), jnp.ravel(values[x_site]), flat(score)

    return jax.vmap(one)(jax.random.split(key, n))


#: sbibm-like Lotka-Volterra defaults: prey/predator initial populations and observation times.
_LV_X0 = (30.0, 1.0)
_LV_TIMES = tuple(2.0 * (i + 1) for i in range(10))  # t = 2, 4, ..., 20
_LV_PRIOR_LOC = (math.log(1.0) - 0.125, math.log(0.05), math.log(1.0) - 0.125, math.log(0.05))
LV_SITES = ("alpha", "beta", "gamma", "delta")


def _lv_solve(params, times, x0):
    import diffrax

    alpha, beta, gamma, delta = params

    def vector_field(t, y, args):
        prey, pred = y[0], y[1]
        return jnp.stack([alpha * prey - beta * prey * pred, delta * prey * pred - gamma * pred])

    times = jnp.asarray(times, params.dtype)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        diffrax.Tsit5(),
        t0=0.0,
        t1=times[-1],
        dt0=0.01,
        y0=jnp.asarray(x0, params.dtype),
        saveat=diffrax.SaveAt(ts=times),
        stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
        max_steps=16384,
        throw=False,
    )
    return sol.ys  # (len(times), 2)


def lotka_volterra_model(times=_LV_TIMES, x0=_LV_X0, noise: float = 0.1):
    r"""The Lotka-Volterra predator-prey simulator as a numpyro model (sbibm-like setup).

    Parameters (sites `"alpha"`, `"beta"`, `"gamma"`, `"delta"`) have log-normal priors
    `log alpha, log gamma ~ N(-0.125, 0.5^2)`, `log beta, log delta ~ N(log 0.05, 0.5^2)`; the ODE

        d prey / dt = alpha prey - beta prey pred,    d pred / dt = delta prey pred - gamma pred,

    starts from `x0` at `t = 0` and is solved by diffrax (Tsit5, adaptive steps, rtol = atol = 1e-6;
    deterministic site `"populations"`, shape `(len(times), 2)`); the data (site `"x"`, same shape)
    are log-normal around the populations with log-scale `noise`. Use with
    [`simulate_with_score`][jflows.simulate_with_score] (or
    [`lotka_volterra_simulate`][jflows.lotka_volterra_simulate]). Needs numpyro and diffrax.

    **Arguments:**

    - `times`: increasing positive observation times.
    - `x0`: initial (prey, predator) populations.
    - `noise`: log-normal observation scale.
    """
    numpyro = _numpyro()
    import numpyro.distributions as dist

    params = []
    for name, loc in zip(LV_SITES, _LV_PRIOR_LOC, strict=True):
        params.append(numpyro.sample(name, dist.LogNormal(loc, 0.5)))
    params = jnp.stack(params)
    populations = numpyro.deterministic("populations", _lv_solve(params, times, x0))
    # floor: a (rare) extinct or failed solve gives a finite log-normal location
    loc = jnp.log(jnp.clip(populations, 1e-6, None))
    numpyro.sample("x", dist.LogNormal(loc, noise).to_event(2))


def lotka_volterra_simulate(
    key, n: int, *, times=_LV_TIMES, x0=_LV_X0, noise: float = 0.1
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`(theta, x, score)` triples of [`lotka_volterra_model`][jflows.lotka_volterra_model].

    **Arguments:**

    - `key`: a `jax.random` key.
    - `n`: number of simulations.
    - `times`, `x0`, `noise`: as in `lotka_volterra_model`.

    **Returns:**

    `theta` `(n, 4)` = `(alpha, beta, gamma, delta)`, `x` `(n, 2 len(times))` (the observed
    (prey, predator) pairs, time-major, flattened), and the joint score `(n, 4)`
    `∇_theta log p(theta, x)` (no other latents).
    """
    times = tuple(float(t) for t in times)
    if not times or any(t <= 0 for t in times) or any(b <= a for a, b in itertools.pairwise(times)):
        raise ValueError(f"times must be increasing and positive, got {times}")
    if not noise > 0:
        raise ValueError(f"noise must be positive, got {noise!r}")
    return simulate_with_score(
        key,
        lotka_volterra_model,
        n,
        theta_sites=LV_SITES,
        x_site="x",
        model_kwargs={"times": times, "x0": tuple(float(v) for v in x0), "noise": float(noise)},
    )
