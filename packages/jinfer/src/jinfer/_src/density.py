"""Implicit inference on summaries: the numpyro model of a neural likelihood (NLE) for NUTS.

NPE needs no glue: `jflows.fit_npe(key, flow, theta, summaries)` trains `q(theta | s)` and
`flow.sample(key, s_obs, n)` draws the posterior. NLE trains `q(s | theta)` with `jflows.fit_nle`;
its posterior `p(theta) q(s_obs | theta)` is sampled by MCMC: `nle_model` writes it as a numpyro model
for [`sample_posterior`][jinfer.sample_posterior].
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from jflows import ConditionalFlow

__all__ = ["nle_model"]


def nle_model(flow: ConditionalFlow, prior, observed) -> Callable[[], None]:
    """The numpyro model `theta ~ prior`, `factor(log q(observed | theta))` of a neural likelihood.

    **Arguments:**

    - `flow`: a `jflows.ConditionalFlow` trained as a likelihood `q(s | theta)` (`jflows.fit_nle`):
      `dim` is the number of summaries, `context_dim` the number of parameters.
    - `prior`: a numpyro distribution of `theta` with event shape `(context_dim,)` (e.g.
      `dist.Uniform(low, high).to_event(1)`).
    - `observed`: the observed summaries, shape `(dim,)`.

    **Returns:**

    A model without arguments with the sample site `"theta"` and the factor `"log_likelihood"`:
    `jinfer.sample_posterior(key, nle_model(flow, prior, s_obs))`.
    """
    import numpyro

    if not isinstance(flow, ConditionalFlow):
        raise TypeError(f"flow must be a jflows.ConditionalFlow, got {type(flow).__name__}")
    if flow.context_dim < 1:
        raise ValueError("flow must be conditional (context_dim >= 1): q(summaries | theta)")
    observed = jnp.asarray(observed)
    if observed.shape != (flow.dim,):
        raise ValueError(f"observed must have shape ({flow.dim},), got {observed.shape}")
    if not bool(jnp.all(jnp.isfinite(observed))):
        raise ValueError("observed holds non-finite values")
    event = tuple(getattr(prior, "event_shape", ()))
    if event != (flow.context_dim,):
        raise ValueError(
            f"prior must have event shape ({flow.context_dim},) (the flow's context_dim), got "
            f"{event}; use .to_event(1) on a batch of scalar distributions"
        )

    def model():
        theta = numpyro.sample("theta", prior)
        numpyro.factor("log_likelihood", flow.log_prob(observed, theta))

    return model
