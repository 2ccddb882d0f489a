"""Optional interop: an elementwise smooth mixture as a `distrax.Bijector` (needs `jflows[distrax]`)."""

from __future__ import annotations

import functools

import jax.numpy as jnp

from jflows._src.transforms import MonotoneMixture

__all__ = ["to_distrax"]


@functools.cache
def _bijector_class():
    try:
        import distrax
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "to_distrax needs distrax: pip install 'jflows[distrax]' (or pip install distrax)"
        ) from err

    class MixtureBijector(distrax.Bijector):
        """A [`MonotoneMixture`][jflows.MonotoneMixture] with fixed raw parameters, elementwise."""

        def __init__(self, transform: MonotoneMixture, raw):
            super().__init__(event_ndims_in=0)
            self.transform = transform
            self.raw = raw

        def _broadcast(self, x):
            x = jnp.asarray(x)
            batch = jnp.broadcast_shapes(x.shape, self.raw.shape[:-1])
            raw = jnp.broadcast_to(self.raw, (*batch, self.raw.shape[-1]))
            return jnp.broadcast_to(x, batch), raw

        def forward_and_log_det(self, x):
            x, raw = self._broadcast(x)
            return self.transform.forward_and_log_det(x, raw)

        def inverse_and_log_det(self, y):
            y, raw = self._broadcast(y)
            return self.transform.inverse_and_log_det(y, raw)

    return MixtureBijector


def to_distrax(transform: MonotoneMixture, raw):
    """Wrap an elementwise smooth mixture with fixed parameters as a `distrax.Bijector`.

    distrax's `forward` is the closed-form map `f`, its `inverse` the implicit-gradient numerical
    inverse; wrap the result in `distrax.Inverse` to get closed-form densities from a
    `distrax.Transformed` distribution. distrax is an optional dependency (`jflows[distrax]`).

    **Arguments:**

    - `transform`: e.g. [`SigmoidMixture`][jflows.SigmoidMixture]().
    - `raw`: unconstrained parameters, shape `batch + (transform.num_params,)`; inputs broadcast
      against `batch` (the bijector acts elementwise: `event_ndims_in = 0`).

    **Returns:**

    A `distrax.Bijector`.
    """
    if not isinstance(transform, MonotoneMixture):
        raise TypeError(f"transform must be a MonotoneMixture, got {transform!r}")
    raw = jnp.asarray(raw)
    if raw.ndim < 1 or raw.shape[-1] != transform.num_params:
        raise ValueError(f"raw must have shape batch + ({transform.num_params},), got {raw.shape}")
    return _bijector_class()(transform, raw)
