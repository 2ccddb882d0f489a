import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jpm_core import Domain


def test_scalars_expand_to_triples_and_derived_quantities():
    d = Domain(8, 100.0)
    assert d.mesh_shape == (8, 8, 8)
    assert d.box_size == (100.0, 100.0, 100.0)
    assert d.device_grid == (1, 1)
    assert d.halo == 0
    assert d.n_cells == 512
    assert d.volume == pytest.approx(1e6)
    assert d.cell_size == pytest.approx((12.5, 12.5, 12.5))
    assert d.cell_volume == pytest.approx(12.5**3)
    assert d.fourier_shape == (8, 8, 5)
    assert d.fundamental_frequency == pytest.approx((2 * math.pi / 100,) * 3)
    assert d.nyquist_frequency == pytest.approx((math.pi / 12.5,) * 3)
    assert not d.is_distributed


def test_anisotropic_domain_and_local_shape():
    d = Domain((12, 12, 6), (120.0, 60, 30.0), device_grid=(2, 3), halo=2)
    assert d.box_size == (120.0, 60.0, 30.0)
    assert d.cell_size == pytest.approx((10.0, 5.0, 5.0))
    assert d.local_mesh_shape == (6, 4, 6)
    assert d.fourier_shape == (12, 12, 4)  # the distributed real FFT: the one-device layout
    assert not d.transposed_fourier
    j = Domain((12, 12, 6), (120.0, 60, 30.0), device_grid=(2, 3), halo=2, fft_backend="jax")
    assert j.fourier_shape == (12, 6, 12)  # jaxdecomp's complex transform is transposed (Y, Z, X)
    assert j.transposed_fourier
    # z is never split by the real FFT: any nz, odd included
    assert Domain((12, 12, 7), 1.0, device_grid=(2, 3)).fourier_shape == (12, 12, 4)
    assert d.n_devices == 6
    assert d.is_distributed


def test_hashable_and_static_under_jit():
    d1 = Domain([8, 8, 8], [50.0, 50.0, 50.0])
    d2 = Domain(8, 50)
    assert d1 == d2
    assert hash(d1) == hash(d2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d1.halo = 3  # type: ignore[misc]
    f = jax.jit(lambda x, domain: x * domain.n_cells, static_argnums=1)
    assert f(jnp.ones(()), d1) == 512


def test_kvec_layout():
    d = Domain((4, 6, 8), (4.0, 12.0, 8.0))
    kx, ky, kz = d.kvec()
    assert kx.shape == (4, 1, 1)
    assert ky.shape == (1, 6, 1)
    assert kz.shape == (1, 1, 5)
    # independent reference: k = 2 pi m / L with m the signed DFT index
    np.testing.assert_allclose(kx.ravel(), 2 * np.pi * np.array([0, 1, -2, -1]) / 4.0)
    np.testing.assert_allclose(ky.ravel(), 2 * np.pi * np.array([0, 1, 2, -3, -2, -1]) / 12.0)
    np.testing.assert_allclose(kz.ravel(), 2 * np.pi * np.arange(5) / 8.0)


@pytest.mark.parametrize(
    ("kwargs", "exc", "fragment"),
    [
        ({"mesh_shape": (8, 8), "box_size": 1.0}, ValueError, "(8, 8)"),
        ({"mesh_shape": (8, 8, 1), "box_size": 1.0}, ValueError, "(8, 8, 1)"),
        ({"mesh_shape": (8, 8, 8.0), "box_size": 1.0}, TypeError, "8.0"),
        ({"mesh_shape": 8, "box_size": -1.0}, ValueError, "-1.0"),
        ({"mesh_shape": 8, "box_size": (1.0, 0.0, 1.0)}, ValueError, "0.0"),
        ({"mesh_shape": 8, "box_size": float("inf")}, ValueError, "inf"),
        ({"mesh_shape": 8, "box_size": 1.0, "device_grid": (3, 1)}, ValueError, "=3"),
        ({"mesh_shape": (8, 10, 8), "box_size": 1.0, "device_grid": (2, 4)}, ValueError, "10"),
        (
            {
                "mesh_shape": (8, 8, 12),
                "box_size": 1.0,
                "device_grid": (8, 1),
                "fft_backend": "jax",
            },
            ValueError,
            "=12",
        ),
        (
            {"mesh_shape": (8, 8, 6), "box_size": 1.0, "device_grid": (2, 4), "fft_backend": "jax"},
            ValueError,
            "=6",
        ),
        # the distributed real FFT splits x and y over all px * py devices (z is free)
        ({"mesh_shape": (8, 12, 8), "box_size": 1.0, "device_grid": (2, 4)}, ValueError, "= 8"),
        ({"mesh_shape": 8, "box_size": 1.0, "fft_backend": "fftw"}, ValueError, "fftw"),
        ({"mesh_shape": 8, "box_size": 1.0, "device_grid": (0, 1)}, ValueError, "(0, 1)"),
        ({"mesh_shape": 8, "box_size": 1.0, "device_grid": (2,)}, ValueError, "(2,)"),
        ({"mesh_shape": 8, "box_size": 1.0, "halo": -1}, ValueError, "-1"),
        ({"mesh_shape": 8, "box_size": 1.0, "halo": 1.5}, TypeError, "1.5"),
        ({"mesh_shape": 8, "box_size": 1.0, "device_grid": (4, 2), "halo": 3}, ValueError, "3"),
    ],
)
def test_errors_name_the_offending_value(kwargs, exc, fragment):
    with pytest.raises(exc) as info:
        Domain(**kwargs)
    assert fragment in str(info.value)


def test_halo_allowed_on_single_device_and_up_to_slab():
    assert Domain(8, 1.0, halo=16).halo == 16  # unused on one device
    assert Domain(8, 1.0, device_grid=(4, 2), halo=2).halo == 2
