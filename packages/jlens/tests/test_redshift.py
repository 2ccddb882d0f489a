"""Redshift distributions: normalisation against analytic integrals, tomographic bins, bad input."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special

import jlens
from jlens import PhotoZBin, Smail, Tabulated, tomographic_bins
from jpm_core import Cosmology


@pytest.mark.x64
def test_smail_normalisation_matches_the_incomplete_gamma_function():
    nz = Smail(z0=0.3, alpha=2.0, beta=1.5, z_max=3.0)
    s = (2.0 + 1.0) / 1.5
    exact = 0.3**3 / 1.5 * scipy.special.gamma(s) * scipy.special.gammainc(s, (3.0 / 0.3) ** 1.5)
    np.testing.assert_allclose(nz.normalisation(), exact, rtol=1e-9)
    integral, _ = scipy.integrate.quad(lambda z: float(nz.pdf(z)), 0.0, 3.0, limit=200)
    assert abs(integral - 1.0) < 1e-8
    assert float(nz.pdf(3.5)) == 0.0
    assert float(nz.pdf(-0.1)) == 0.0


@pytest.mark.x64
def test_tabulated_nodes_and_histogram_are_exactly_normalised():
    z = np.array([0.0, 0.4, 1.0, 1.5, 2.5])
    nodes = Tabulated(z, np.array([0.0, 2.0, 3.0, 1.0, 0.0]))
    histogram = Tabulated(z, np.array([1.0, 4.0, 2.0, 0.5]))
    assert not nodes.is_histogram
    assert histogram.is_histogram
    assert nodes.z_max == 2.5
    for nz in (nodes, histogram):
        pieces = [
            scipy.integrate.quad(lambda x, nz=nz: float(nz.pdf(x)), lo, hi)[0]
            for lo, hi in itertools.pairwise(z)
        ]
        assert abs(sum(pieces) - 1.0) < 1e-10
    # the histogram is piecewise constant, the nodes are interpolated linearly
    np.testing.assert_allclose(histogram.pdf(0.5) * (0.4 + 2.4 + 1.0 + 0.5), 4.0, rtol=1e-12)
    np.testing.assert_allclose(nodes.pdf(0.7) / nodes.pdf(0.4), 2.5 / 2.0, rtol=1e-12)


@pytest.mark.x64
def test_tomographic_bins_hold_equal_numbers_and_add_up_to_the_parent():
    parent = Smail(z0=0.3, alpha=2.0, beta=1.5, z_max=3.0)
    bins = tomographic_bins(parent, 4, sigma_z=0.05)
    assert len(bins) == 4
    assert all(isinstance(b, PhotoZBin) for b in bins)
    # Fraction of the parent's galaxies in each bin: 1/4 (the photo-z edges are the quartiles).
    fractions = np.array([b.normalisation() for b in bins])
    np.testing.assert_allclose(fractions, 0.25, atol=2e-4)
    # The selections add up to 1, so the fraction-weighted bins add up to the parent.
    z = jnp.linspace(0.01, 2.99, 300)
    total = sum(f * b.pdf(z) for f, b in zip(fractions, bins, strict=True))
    np.testing.assert_allclose(total, parent.pdf(z), rtol=1e-9, atol=1e-12)
    # Mean redshifts increase.
    means = [float(scipy.integrate.quad(lambda x, b=b: x * float(b.pdf(x)), 0, 3)[0]) for b in bins]
    assert np.all(np.diff(means) > 0.1)
    # Differentiable with respect to the parent's parameters and the scatter.
    grad = jax.grad(lambda s: tomographic_bins(parent, 4, sigma_z=s)[1].z_hi)(0.05)
    assert np.isfinite(grad)
    assert grad != 0.0


def test_bad_distributions_raise_eagerly_and_poison_traced_values():
    with pytest.raises(ValueError, match="z0"):
        Smail(z0=-0.3).check()
    with pytest.raises(ValueError, match="alpha"):
        Smail(z0=0.3, alpha=-1.5).check()
    with pytest.raises(ValueError, match="positive finite"):
        Tabulated([0.0, 1.0, 2.0], [0.0, 0.0, 0.0]).check()
    with pytest.raises(ValueError, match=">= 0"):
        Tabulated([0.0, 1.0, 2.0], [1.0, -1.0, 0.0]).check()
    with pytest.raises(ValueError, match="increasing"):
        Tabulated([0.0, 2.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="entries"):
        Tabulated([0.0, 1.0, 2.0], [1.0]).check()
    with pytest.raises(ValueError, match="n_bins"):
        tomographic_bins(Smail(z0=0.3), 0)
    with pytest.raises(ValueError, match="sigma_z"):
        tomographic_bins(Smail(z0=0.3), 3, sigma_z=0.0)
    with pytest.raises(TypeError, match="RedshiftDistribution"):
        jlens.lensing_efficiency(Cosmology(), [], 100.0)
    # Traced: an n(z) that does not normalise gives NaN, not a finite wrong answer.
    pdf = jax.jit(lambda v: Tabulated([0.0, 1.0, 2.0], v).pdf(0.5))
    assert np.isnan(pdf(jnp.zeros(3)))
    assert np.isfinite(pdf(jnp.ones(3)))
