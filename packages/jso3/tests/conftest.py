"""Independent references for the jso3 tests: the IGSO(3) character series summed by brute force in
NumPy, straight from its definition (no code shared with the package)."""

import numpy as np
import pytest
import scipy.integrate


def _reference_f(omega, eps):
    """f_eps(omega) = sum_l (2l+1) exp(-l(l+1) eps) sin((l+1/2) omega) / sin(omega/2), brute force."""
    omega = np.asarray(omega, dtype=np.float64)
    n_terms = int(np.sqrt(800.0 / eps)) + 10
    out = np.zeros_like(omega)
    for start in range(0, n_terms, 256):
        l = np.arange(start, min(start + 256, n_terms))[:, None]
        weight = (2 * l + 1) * np.exp(-l * (l + 1) * eps)
        # sin((2l+1) x) / sin(x) with its limit 2l+1 at x = 0
        x = omega[None, :] / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(x > 0, np.sin((2 * l + 1) * x) / np.sin(x), 2 * l + 1)
        out += np.sum(weight * ratio, axis=0)
    return out


def _reference_cdf(eps):
    """CDF of the rotation angle: cumulative Simpson of f (1 - cos w) / pi on a fine grid."""
    omega_max = min(np.pi, 14 * np.sqrt(2 * eps))
    grid = np.linspace(0.0, omega_max, 8001)
    density = _reference_f(grid, eps) * (1 - np.cos(grid)) / np.pi
    cdf = scipy.integrate.cumulative_simpson(density, x=grid, initial=0.0)
    return lambda w: np.interp(w, grid, cdf)


@pytest.fixture
def reference_f():
    """`reference_f(omega, eps)`: the IGSO(3) density w.r.t. Haar, from the series."""
    return _reference_f


@pytest.fixture
def reference_cdf():
    """`reference_cdf(eps)(omega)`: the CDF of the IGSO(3) rotation angle."""
    return _reference_cdf
