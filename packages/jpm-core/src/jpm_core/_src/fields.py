"""Random fields on a mesh: white noise and Gaussian (linear) density fields of a given power spectrum.

Normalisation: with `w` white noise of unit variance per cell and `W = fft(w)`,
`<|W_k|^2> = n_cells`; the linear field is `delta = ifft(W * sqrt(P(k) n_cells / V))`, so that the
estimator `P_hat(k) = V / n_cells^2 |fft(delta)_k|^2` used by `power_spectrum` has mean `P(k)`.
The k=0 mode is set to 0 (the field has zero mean).

Reproducibility across device layouts: the noise is drawn as one full-shape array from the key,
`jax.random.normal(key, mesh_shape)`. For a distributed `Domain` the same full-shape draw is
constrained to the pencil sharding `P("x", "y")` over the first `px * py` devices: with
`jax_threefry_partitionable` (the default since jax 0.5) each device generates its own block and the
values are bit-identical to the single-device draw (checked on 8 CPU devices with layouts (2, 4),
(4, 2), (1, 8), (8, 1)). So the same key gives the same noise, hence the same field, whatever
`device_grid` is (up to the round-off of the distributed FFT).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

from jpm_core._src._checks import check_domain, check_shape, float_dtype
from jpm_core._src.device_mesh import domain_mesh, fourier_sharding, pencil_sharding
from jpm_core._src.domain import Domain
from jpm_core._src.fft import (
    fft,
    ifft,
    wavenumbers,
)

__all__ = ["linear_field", "linear_field_from_noise", "white_noise"]

PowerFn = Callable[[Array], Array]


def white_noise(key: Array, domain: Domain, dtype: jnp.dtype | None = None) -> Array:
    """Gaussian white noise with unit variance per cell.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `domain`: the `Domain`.
    - `dtype`: floating dtype; default float32 (float64 under `jax_enable_x64`).

    **Returns:** array of shape `domain.mesh_shape`, i.i.d. standard normal values; the same for a
    given key whatever `domain.device_grid` is (sharded as `P("x", "y")` when distributed).
    """
    check_domain("domain", domain)
    dtype = float_dtype() if dtype is None else dtype
    sharding = pencil_sharding(domain) if domain.is_distributed else None  # checks eagerly
    noise = jax.random.normal(key, domain.mesh_shape, dtype=dtype)
    if sharding is not None:
        noise = jax.lax.with_sharding_constraint(noise, sharding)
    return noise


def linear_field_from_noise(noise: Array, domain: Domain, power_fn: PowerFn) -> Array:
    """Colour a white-noise field with the power spectrum `power_fn` (non-centred parametrisation).

    **Arguments:**

    - `noise`: real array of shape `domain.mesh_shape`, unit variance per cell (e.g. `white_noise`);
      it is the natural latent variable for HMC or optimisation.
    - `domain`: the `Domain`.
    - `power_fn`: callable `k -> P(k)`, `k` in h/Mpc (an array of shape `domain.fourier_shape`),
      `P` in (Mpc/h)^3, same shape back. It is never evaluated at k=0 (it sees the fundamental
      frequency there, and that mode is zeroed afterwards). It may close over traced parameters
      (e.g. a cosmology); gradients flow through it. It must be elementwise: on a device grid
      it is evaluated on each device's block of the Fourier grid. `P = 0` gives a zero mode;
      a NaN or negative `P` at any `k > 0` makes the whole field NaN (never a finite field
      with holes), so that a sampler rejects the point.

    **Returns:** the density contrast, real array of shape `domain.mesh_shape` with power `P(k)`.
    """
    check_domain("domain", domain)
    noise = jnp.asarray(noise)
    check_shape("noise", noise, domain.mesh_shape)
    kmag = wavenumbers(domain)
    is_zero = kmag == 0
    k_safe = jnp.where(is_zero, min(domain.fundamental_frequency), kmag)
    if domain.is_distributed:
        power = _blockwise(power_fn, k_safe, domain)
    else:
        power = jnp.asarray(power_fn(k_safe))
    if power.shape != kmag.shape:
        raise ValueError(
            f"power_fn must return an array of the shape of its input {kmag.shape}, "
            f"got {power.shape}"
        )
    # sqrt with a gradient-safe branch: P = 0 (e.g. beyond a cutoff) gives amplitude 0, gradient 0;
    # a NaN or negative P (e.g. an invalid traced cosmology) poisons the field with NaN
    positive = (power > 0) & ~is_zero
    invalid = ~((power >= 0) | is_zero)
    amplitude = jnp.sqrt(jnp.where(positive, power, 1.0) * (domain.n_cells / domain.volume))
    amplitude = jnp.where(positive, amplitude, jnp.where(invalid, jnp.nan, 0.0))
    return ifft(fft(noise, domain) * amplitude, domain)


def _blockwise(power_fn: PowerFn, kmag: Array, domain: Domain) -> Array:
    """Evaluate an elementwise `power_fn` on each device's block of the Fourier grid.

    Besides sparing every device the full grid, this works around an XLA CPU bug: evaluated on the
    global sharded array, the gradient of some power functions with respect to the cosmology
    (e.g. Omega_c through the Eisenstein-Hu transfer function) gets a layout that XLA's FFT thunk
    rejects (`RET_CHECK ... fft_thunk.cc IsMonotonicWithDim0Major`) and the process aborts.
    """

    if domain.transposed_fourier:
        import jaxdecomp

        # the layout of jaxdecomp's FFT output: any other would be resharded into the transform,
        # which its custom partitioner rejects ("Mismatch in result shapes")
        spec = jaxdecomp.get_fft_output_sharding(pencil_sharding(domain)).spec
    else:
        spec = fourier_sharding(domain.device_grid).spec

    def local(k):
        out = jnp.asarray(power_fn(k))
        if out.shape != k.shape:
            raise ValueError(
                f"power_fn must return an array of the shape of its input (elementwise), got "
                f"{out.shape} for a block of shape {k.shape}"
            )
        return out

    return jax.shard_map(local, mesh=domain_mesh(domain), in_specs=spec, out_specs=spec)(kmag)


def linear_field(key: Array, domain: Domain, power_fn: PowerFn) -> Array:
    """A Gaussian random field with power spectrum `power_fn`, reproducible from a key.

    Equivalent to `linear_field_from_noise(white_noise(key, domain), domain, power_fn)`.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `domain`: the `Domain`.
    - `power_fn`: callable `k [h/Mpc] -> P(k) [(Mpc/h)^3]`, elementwise on an array of shape
      `domain.fourier_shape` (see `linear_field_from_noise`).

    **Returns:** the density contrast, real array of shape `domain.mesh_shape`, zero mean.
    """
    return linear_field_from_noise(white_noise(key, domain), domain, power_fn)
