"""3-D Fourier transforms of mesh fields (real-to-complex on one device) and wavevector grids.

Layout and normalisation (the contract every kernel in `jpm_core` relies on):

- On one device `fft(field, domain)` is the unnormalised forward DFT restricted to the non-negative
  half of the last axis, `F[k] = sum_x f[x] exp(-i k.x)`, with shape
  `domain.fourier_shape = (nx, ny, nz//2+1)`; `ifft` is its inverse (carrying the `1 / n_cells`).
  This is `numpy.fft.rfftn` / `irfftn`.
- Arrays in Fourier space must only be combined with arrays from `wavevectors`/`wavenumbers` (or the
  kernels built from them): the distributed transform returns a transposed layout, these functions
  follow it, so code written against them needs no change.

On one device this is `jnp.fft.rfftn`, which does half the work and memory of the complex transform.
With a distributed `Domain` (`device_grid = (px, py) != (1, 1)`) the field is sharded as
`P("x", "y")` over a `(px, py)` mesh of the first `px * py` devices and, with the default
`fft_backend="rfft"`, transformed by jpm-core's distributed real-to-complex FFT (`_src/rfft_dist.py`;
jaxdecomp 0.3.1's `prfft3d` raises): a local real FFT along z, an all-to-all over the y device axis
and a complex FFT along y, an all-to-all over all devices and a complex FFT along x. Its output is
`numpy.fft.rfftn`'s, `(nx, ny, nz//2+1)`, the one-device layout, sharded over ky; it needs `nx` and
`ny` divisible by `px * py`. `fft_backend="jax"`/`"cudecomp"` use jaxdecomp's complex pencil
transform (`jaxdecomp.fft.pfft3d`) instead, whose output is transposed to `(ny, nz, nx)`;
`domain.fourier_shape` and `wavevectors` follow that layout.

Known limitation (jaxdecomp 0.3.1, jax 0.10): jaxdecomp's distributed transform fails in float64 when x64 is
enabled with the thread-local context manager `jax.enable_x64(True)` ("Mismatch in result shapes",
complex64 vs complex128: the custom partitioner runs outside that context); enabling it globally,
`jax.config.update("jax_enable_x64", True)`, works.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jpm_core._src._checks import check_domain, check_shape, float_dtype
from jpm_core._src.device_mesh import pencil_sharding
from jpm_core._src.domain import Domain
from jpm_core._src.rfft_dist import pirfft3d, prfft3d

__all__ = ["fft", "ifft", "wavenumbers", "wavevectors"]


def fft(field: ArrayLike, domain: Domain) -> Array:
    """Forward real-to-complex Fourier transform of a mesh field.

    **Arguments:**

    - `field`: real array of shape `domain.mesh_shape`.
    - `domain`: the `Domain` the field lives on.

    **Returns:** complex array of shape `domain.fourier_shape`, unnormalised
    (`F[0, 0, 0] = field.sum()`), in the layout of `wavevectors(domain)`: `(nx, ny, nz//2+1)` on
    one device and with the distributed real FFT (`fft_backend="rfft"`, sharded over ky), the
    full transposed `(ny, nz, nx)` grid with jaxdecomp's backends.
    """
    check_domain("domain", domain)
    field = jnp.asarray(field)
    check_shape("field", field, domain.mesh_shape)
    if jnp.iscomplexobj(field):
        raise TypeError(f"fft expects a real field, got dtype {field.dtype}")
    if domain.is_distributed:
        field = jax.lax.with_sharding_constraint(field, pencil_sharding(domain))
        if not domain.transposed_fourier:
            return prfft3d(field, domain.device_grid)
        import jaxdecomp  # deferred: only the jaxdecomp backends need it

        return jaxdecomp.fft.pfft3d(field, backend=domain.fft_backend)
    return jnp.fft.rfftn(field, axes=(0, 1, 2))


def ifft(field_k: ArrayLike, domain: Domain) -> Array:
    """Inverse of `fft`: complex Fourier coefficients back to a real mesh field.

    **Arguments:**

    - `field_k`: complex array of shape `domain.fourier_shape`, in the layout of `fft`.
    - `domain`: the `Domain` the field lives on.

    **Returns:** real array of shape `domain.mesh_shape` (the `1 / n_cells` normalisation is applied
    here, so `ifft(fft(f)) == f`).
    """
    check_domain("domain", domain)
    field_k = jnp.asarray(field_k)
    check_shape("field_k", field_k, domain.fourier_shape)
    if domain.is_distributed:
        if not domain.transposed_fourier:
            field = pirfft3d(field_k, domain.device_grid, domain.mesh_shape)
        else:
            import jaxdecomp

            field = jnp.real(jaxdecomp.fft.pifft3d(field_k, backend=domain.fft_backend))
        return jax.lax.with_sharding_constraint(field, pencil_sharding(domain))
    return jnp.fft.irfftn(field_k, s=domain.mesh_shape, axes=(0, 1, 2))


def wavevectors(domain: Domain) -> tuple[Array, Array, Array]:
    """Wavevector components matching the layout of `fft(field, domain)`.

    **Arguments:**

    - `domain`: the `Domain`.

    **Returns:** `(kx, ky, kz)` in h/Mpc, in the default float dtype, with shapes `(nx, 1, 1)`,
    `(1, ny, 1)`, `(1, 1, nz // 2 + 1)`; they broadcast against `fft` output. `k_i = 2 pi m / L_i`
    with `m` the signed frequency index.
    """
    check_domain("domain", domain)
    dtype = float_dtype()
    kx, ky, kz = domain.kvec()
    return jnp.asarray(kx, dtype), jnp.asarray(ky, dtype), jnp.asarray(kz, dtype)


def wavenumbers(domain: Domain) -> Array:
    """Modulus `|k|` of the wavevector on the Fourier grid of `fft(field, domain)`.

    **Arguments:**

    - `domain`: the `Domain`.

    **Returns:** array of shape `domain.fourier_shape` in h/Mpc (0 at the origin).
    """
    check_domain("domain", domain)
    return _wavenumbers(domain)


@functools.partial(jax.jit, static_argnums=0)
def _wavenumbers(domain: Domain) -> Array:
    kx, ky, kz = wavevectors(domain)
    return jnp.sqrt(kx**2 + ky**2 + kz**2)
