"""Log-normal maps: spectra recovered on the grid, one-point shift, cross-bin correlation, shift tables
(correct and sbi_lens-compatible lookups), the numpyro model, and consistency with sbi_lens's observed
maps (slow; needs the shared data directory)."""

from __future__ import annotations

import dataclasses
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlens
from jpm_core import Cosmology

DATA = pathlib.Path(
    os.environ.get(
        "JLENS_SBI_LENS_DATA",
        pathlib.Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "sbi_lens",
    )
)
SHIFTS = np.array([0.012, 0.03])


def _toy_cl_grid(geometry, r=0.8):
    """Power-law C_ij on the grid: C_ii = A_i (ell / 500)^-1.6 exp(-(ell / 6000)^2), C_12 = r sqrt."""
    ell = np.asarray(geometry.ell_grid_numpy())
    safe = np.where(ell > 0, ell, 1.0)
    shape = (safe / 500.0) ** -1.6 * np.exp(-((safe / 6000.0) ** 2))
    amps = np.array([1.5e-10, 8e-10])
    cl = np.empty((2, 2, *ell.shape))
    for i in range(2):
        for j in range(2):
            c = 1.0 if i == j else r
            cl[i, j] = c * np.sqrt(amps[i] * amps[j]) * shape
    cl[..., 0, 0] = 0.0
    return cl


def _measure(geometry, n_maps, seed=0):
    cl_grid = _toy_cl_grid(geometry)
    make = jax.jit(
        jax.vmap(
            lambda k: jlens.lognormal_field(
                jax.random.normal(k, (2, *geometry.shape)), cl_grid, geometry, SHIFTS
            )
        )
    )
    maps = make(jax.random.split(jax.random.key(seed), n_maps))
    edges = np.geomspace(1.5 * geometry.ell_fundamental, geometry.ell_nyquist, 9)
    spectra = jax.jit(jax.vmap(lambda m: jlens.map_power_spectrum(m, geometry, edges)[1]))(maps)
    # Theory averaged over the same modes (binning weights of map_power_spectrum).
    ell = geometry.ell_grid_numpy()
    index = np.searchsorted(edges, ell, side="right") - 1
    weights = geometry.rfft_weights()
    theory = np.array(
        [
            [
                [
                    np.sum((weights * cl_grid[i, j])[index == b]) / np.sum(weights[index == b])
                    for b in range(edges.size - 1)
                ]
                for j in range(2)
            ]
            for i in range(2)
        ]
    )
    return np.asarray(maps), np.asarray(spectra), theory


@pytest.fixture(scope="module")
def toy64():
    return (jlens.FlatSky(64, field_deg=5.0), *_measure(jlens.FlatSky(64, field_deg=5.0), 600))


def _check_spectra(spectra, theory, tolerance):
    mean = spectra.mean(0)
    error = spectra.std(0) / np.sqrt(spectra.shape[0])
    ratio = mean / theory - 1.0
    assert np.all(np.abs(ratio) < np.maximum(tolerance, 4.0 * error / theory)), ratio
    return ratio, error / theory


def test_mean_spectra_match_input(toy64):
    """600 maps of 64^2: every band within 4 sigma of the input, and within 3% where sigma < 0.75%."""
    _, _, spectra, theory = toy64
    ratio, sigma = _check_spectra(spectra, theory, 0.03)
    precise = sigma < 0.0075
    assert precise.sum() >= 12
    assert np.all(np.abs(ratio[precise]) < 0.03)


@pytest.mark.slow
def test_mean_spectra_match_input_3_percent():
    """2000 maps of 128^2: every band (auto and cross) within 3% of the input C_ell."""
    geometry = jlens.FlatSky(128, field_deg=5.0)
    _, spectra, theory = _measure(geometry, 2000, seed=3)
    ratio, sigma = _check_spectra(spectra, theory, 0.03)
    assert np.all(np.abs(ratio) < 0.03), ratio
    print("C_ell mean/input - 1 per band:", np.round(ratio, 4), "sigma:", np.round(sigma, 4))


def test_one_point_shift_skewness_and_mean(toy64):
    _, maps, _, _ = toy64
    for i, lam in enumerate(SHIFTS):
        values = maps[:, i].ravel()
        assert values.min() >= -lam
        centred = values - values.mean()
        skew = np.mean(centred**3) / np.mean(centred**2) ** 1.5
        sigma = values.std()
        expected = 3 * sigma / lam + (sigma / lam) ** 3  # log-normal skewness
        assert skew > 0
        assert abs(skew / expected - 1) < 0.15, (skew, expected)
        assert abs(values.mean()) < 0.02 * sigma


def test_cross_bin_correlation(toy64):
    _, maps, spectra, _theory = toy64
    mean = spectra.mean(0)
    r_measured = mean[0, 1] / np.sqrt(mean[0, 0] * mean[1, 1])
    np.testing.assert_allclose(r_measured, 0.8, atol=0.02)
    pixel_corr = np.corrcoef(maps[:, 0].ravel(), maps[:, 1].ravel())[0, 1]
    assert 0.5 < pixel_corr < 0.9


def test_shift_errors_and_traced_nan():
    geometry = jlens.FlatSky(16, field_deg=2.0)
    cl_grid = _toy_cl_grid(geometry)
    noise = np.zeros((2, 16, 16))
    with pytest.raises(ValueError, match="shifts"):
        jlens.lognormal_field(noise, cl_grid, geometry, np.array([0.01, 0.0]))
    with pytest.raises(ValueError, match="shift per bin"):
        jlens.lognormal_field(noise, cl_grid, geometry, np.array([0.01, 0.02, 0.03]))
    with pytest.raises(ValueError, match="noise must have shape"):
        jlens.lognormal_field(noise[:, :8], cl_grid, geometry, SHIFTS)
    f = jax.jit(lambda s: jlens.lognormal_field(noise, cl_grid, geometry, s))
    assert np.all(np.isnan(f(jnp.array([0.01, -0.02]))))
    grad = jax.grad(lambda s: jnp.sum(f(s) ** 2))(jnp.array([0.01, -0.02]))
    assert np.all(np.isnan(grad))
    good = jax.grad(lambda s: jnp.sum(jnp.sin(f(s))))(jnp.asarray(SHIFTS))
    assert np.all(np.isfinite(good))
    with pytest.raises(ValueError, match="n_ell"):
        jlens.LognormalConfig(n_ell=2)
    with pytest.raises(ValueError, match="variance"):
        jlens.LognormalConfig(variance="sample")
    with pytest.raises(ValueError, match="n_z"):
        jlens.LognormalConfig(n_z=4)


@pytest.mark.x64
@pytest.mark.parametrize(("r", "same_bins"), [(0.8, False), (0.0, True), (1.0, True)])
def test_multi_bin_gradient_matches_finite_differences(r, same_bins):
    """Two bins through the per-mode matrix square root: correlated, uncorrelated with equal spectra
    (degenerate eigenvalues) and perfectly correlated identical bins (a zero eigenvalue at every
    mode, where `sqrt(clip(w, 0))` gave NaN gradients)."""
    from jax.test_util import check_grads

    geometry = jlens.FlatSky(16, field_deg=2.0)
    cl = _toy_cl_grid(geometry, r=r)
    if same_bins:
        cl[1, 1] = cl[0, 0]
        cl[0, 1] = cl[1, 0] = r * cl[0, 0]
    noise = jax.random.normal(jax.random.key(0), (2, 16, 16), jnp.float64)

    def statistic(scale, shifts):
        kappa = jlens.lognormal_field(noise, jnp.asarray(cl) * scale, geometry, shifts)
        return jnp.sum(jnp.sin(50.0 * kappa))

    args = (1.0, jnp.asarray(SHIFTS))
    assert np.all(np.isfinite(jax.grad(statistic, argnums=(0, 1))(*args)[1]))
    check_grads(statistic, args, order=1, modes=("rev",), eps=1e-6, atol=1e-5, rtol=1e-4)


# --- with a cosmology ------------------------------------------------------------------------------

# float32 leaves, as numpyro samples them: one compilation of angular_cl serves every test below
_FIDUCIAL = {"Omega_c": 0.3, "Omega_b": 0.0486, "h": 0.6774, "n_s": 0.9667, "sigma8": 0.8}
COSMO = Cosmology(**{k: np.float32(v) for k, v in {**_FIDUCIAL, "w0": -1.0, "wa": 0.0}.items()})
BIN = jlens.Smail(z0=1.0, alpha=0.5, beta=2.0, z_max=4.0)
GEO32 = jlens.FlatSky(32, field_deg=3.0)
CONFIG = jlens.LognormalConfig(n_ell=64)


def test_lognormal_maps_cosmology_vmap_and_bad_input():
    lam = 0.03
    keys = jax.random.split(jax.random.key(0), 4)
    maps = jax.vmap(lambda k: jlens.lognormal_maps(k, COSMO, BIN, GEO32, lam, config=CONFIG))(keys)
    assert maps.shape == (4, 1, 32, 32)
    assert np.all(np.isfinite(maps))
    assert np.all(np.asarray(maps) >= -lam)
    one = jlens.lognormal_maps(keys[1], COSMO, BIN, GEO32, lam, config=CONFIG)
    np.testing.assert_allclose(one, maps[1], rtol=1e-5, atol=1e-7)
    # the grid spectrum is the Limber C_ell at the grid's |ell|
    grid = np.asarray(jlens.grid_cl(COSMO, BIN, GEO32, config=CONFIG))[0, 0]
    ell = GEO32.ell_grid_numpy().ravel()
    modes = np.argsort(ell)[1::7][:64]  # 64 modes (the shape of CONFIG's table: no recompile)
    direct = np.asarray(jlens.angular_cl(COSMO, BIN, ell[modes].astype(np.float32)))[0, 0]
    np.testing.assert_allclose(grid.ravel()[modes], direct, rtol=5e-3)
    with pytest.raises(ValueError, match="shifts"):
        jlens.lognormal_maps(keys[0], COSMO, BIN, GEO32, -0.1, config=CONFIG)
    with pytest.raises(TypeError, match="FlatSky"):
        jlens.lognormal_maps(keys[0], COSMO, BIN, (32, 3.0), lam, config=CONFIG)


def test_multi_bin_maps_are_nan_for_an_invalid_traced_cosmology():
    """Under `jit` (where samplers call it), a NaN or negative sigma8 gives NaN maps and NaN
    gradients for two tomographic bins, never a finite wrong answer."""
    bins = jlens.tomographic_bins(BIN, 2)
    noise = jax.random.normal(jax.random.key(3), (2, 32, 32))

    def power(s8):
        cosmo = dataclasses.replace(COSMO, sigma8=s8)
        kappa = jlens.lognormal_maps_from_noise(noise, cosmo, bins, GEO32, SHIFTS, config=CONFIG)
        return jnp.sum(kappa**2)

    value_and_grad = jax.jit(jax.value_and_grad(power))
    value, grad = value_and_grad(jnp.float32(0.8))
    assert np.isfinite(value)
    assert np.isfinite(grad)
    assert grad > 0
    for bad in (np.nan, -0.5):
        value, grad = value_and_grad(jnp.float32(bad))
        assert np.isnan(value)
        assert np.isnan(grad)


def test_numpyro_model_sites():
    numpyro = pytest.importorskip("numpyro")
    from numpyro import distributions as dist
    from numpyro.infer.util import log_density

    std = jlens.shape_noise_std(0.2, 30.0, GEO32)
    kwargs = {"priors": {"sigma8": dist.Normal(0.8, 0.05)}, "fiducial": COSMO, "config": CONFIG}
    model = numpyro.handlers.seed(jlens.lognormal_model, jax.random.key(1))
    trace = numpyro.handlers.trace(model).get_trace(GEO32, BIN, 0.03, std, **kwargs)
    assert list(trace) == ["sigma8", "z", "kappa", "y"]
    assert trace["z"]["value"].shape == (1, 32, 32)
    assert trace["y"]["value"].shape == (1, 32, 32)
    observed = trace["y"]["value"]
    params = {"sigma8": trace["sigma8"]["value"], "z": trace["z"]["value"]}
    logp, _ = log_density(
        jlens.lognormal_model, (GEO32, BIN, 0.03, std), dict(kwargs, observed=observed), params
    )
    assert np.isfinite(logp)
    with pytest.raises(ValueError, match="Cosmology fields"):
        numpyro.handlers.trace(model).get_trace(
            GEO32, BIN, 0.03, std, priors={"s8": dist.Normal(0.8, 0.05)}
        )


@pytest.mark.slow
@pytest.mark.x64
def test_gradient_wrt_cosmology_matches_finite_differences():
    noise = jax.random.normal(jax.random.key(2), (1, 32, 32), jnp.float64)

    def statistic(s8, om):
        cosmo = dataclasses.replace(COSMO, sigma8=s8, Omega_c=om)
        kappa = jlens.lognormal_maps_from_noise(noise, cosmo, BIN, GEO32, 0.03, config=CONFIG)
        return jnp.sum(kappa**3) / jnp.sum(kappa**2)

    grads = jax.grad(statistic, argnums=(0, 1))(0.8, 0.3)
    h = 1e-4
    for i, g in enumerate(grads):
        args_p = [0.8, 0.3]
        args_m = [0.8, 0.3]
        args_p[i] += h
        args_m[i] -= h
        fd = (statistic(*args_p) - statistic(*args_m)) / (2 * h)
        np.testing.assert_allclose(g, fd, rtol=1e-4)


# --- shift tables -----------------------------------------------------------------------------------


def _needs(name):
    if not (DATA / name).exists():
        pytest.skip(f"no sbi_lens data in {DATA}")
    return DATA / name


def _cosmo(om, s8, w0=-1.0):
    return Cosmology(Omega_c=om - 0.0486, Omega_b=0.0486, h=0.6774, n_s=0.9667, sigma8=s8, w0=w0)


def test_shift_table_axes_and_nodes():
    table = np.load(_needs("lognormal_shifts_LSSTY10_om_s8_w_bin.npy"))
    shifts = jlens.ShiftTable.from_sbi_lens(DATA / "lognormal_shifts_LSSTY10_om_s8_w_bin.npy")
    assert shifts.axes == ("sigma8", "Omega_m", "w0")  # the file's first axis is sigma_8
    for i, j, k in [(0, 0, 0), (3, 5, 2), (7, 1, 6)]:
        row = table[i, j, k]
        value = shifts(_cosmo(row[0, 0], row[0, 1], row[0, 2]))
        np.testing.assert_allclose(value, row[:, 4], rtol=1e-5)
    csv = np.loadtxt(_needs("lognormal_shift.csv"), delimiter=",", skiprows=1)
    set_a = jlens.ShiftTable.from_sbi_lens(DATA / "lognormal_shift.csv")
    assert set_a.axes == ("Omega_m", "sigma8")
    assert set_a.n_bins == 1
    for row in csv[[0, 9, 37, 63]]:
        np.testing.assert_allclose(set_a(_cosmo(row[0], row[1])), [row[2]], rtol=1e-5)


def test_shift_table_compat_reproduces_sbi_lens_lookup():
    from scipy.ndimage import map_coordinates

    params = np.load(_needs("lognormal_shifts_LSSTY10_om_s8_w_bin.npy"))
    compat = jlens.ShiftTable.from_sbi_lens(
        DATA / "lognormal_shifts_LSSTY10_om_s8_w_bin.npy", compat="sbi_lens"
    )
    for theta in ([0.3156, 0.831, -1.0], [0.25, 0.6, -0.7], [0.5, 1.1, -1.6]):
        # sbi_lens HEAD's shift_fn, transcribed: parameter j on axis j, cell-centre coordinates.
        coords = np.stack(
            [
                (theta[j] - params[..., j].min())
                / (params[..., j].max() - params[..., j].min())
                * params.shape[j]
                - 0.5
                for j in range(3)
            ]
        ).reshape(3, -1)
        reference = [
            map_coordinates(params[..., i, -1], coords, order=1, mode="nearest")[0]
            for i in range(5)
        ]
        value = compat(_cosmo(*theta))
        np.testing.assert_allclose(value, reference, rtol=1e-5)
    # set A (commit b2517a4): (Omega_m - 0.2) / 0.2 * 8 - 0.5, (sigma_8 - 0.6) / 0.4 * 8 - 0.5
    grid = np.loadtxt(_needs("lognormal_shift.csv"), delimiter=",", skiprows=1).reshape(8, 8, 3)
    set_a = jlens.ShiftTable.from_sbi_lens(DATA / "lognormal_shift.csv", compat="sbi_lens")
    for om, s8 in [(0.3486, 0.8), (0.21, 0.95)]:
        coords = np.array([[(om - 0.2) / 0.2 * 8 - 0.5], [(s8 - 0.6) / 0.4 * 8 - 0.5]])
        reference = map_coordinates(grid[..., 2], coords, order=1, mode="nearest")
        np.testing.assert_allclose(set_a(_cosmo(om, s8)), reference, rtol=1e-5)
    # the defect matters: at set B's truth the compatible lambda differs from the correct one
    correct = jlens.ShiftTable.from_sbi_lens(DATA / "lognormal_shifts_LSSTY10_om_s8_w_bin.npy")
    truth = _cosmo(0.3156, 0.831)
    assert np.all(np.asarray(compat(truth)) > 1.1 * np.asarray(correct(truth)))


def test_shift_table_gradient_and_errors():
    shifts = jlens.ShiftTable.from_sbi_lens(_needs("lognormal_shift.csv"))
    grad = jax.grad(lambda s8: shifts(_cosmo(0.3, s8))[0])(0.8)
    assert np.isfinite(grad)
    assert grad != 0
    with pytest.raises(ValueError, match="compat"):
        jlens.ShiftTable.from_sbi_lens(DATA / "lognormal_shift.csv", compat="original")
    with pytest.raises(ValueError, match=r"csv or \.npy"):
        jlens.ShiftTable.from_sbi_lens(DATA / "README.md")


# --- sbi_lens's observed maps ----------------------------------------------------------------------

SBI_SETS = {
    "A": {
        "npix": 128,
        "field": 5.0,
        "sigma_e": 0.2,
        "n_gal": 30.0,
        "n_bins": 1,
        "data": "m_data__128N_5ms_30gpa_0.2se.npy",
        "table": "lognormal_shift.csv",
        "cosmo": Cosmology(Omega_c=0.3, Omega_b=0.0486, h=0.6774, n_s=0.9667, sigma8=0.8),
    },
    "B": {
        "npix": 256,
        "field": 10.0,
        "sigma_e": 0.26,
        "n_gal": 27.0,
        "n_bins": 5,
        "data": "m_data__256N_10ms_27gpa_0.26se.npy",
        "table": "lognormal_shifts_LSSTY10_om_s8_w_bin.npy",
        "cosmo": Cosmology(Omega_c=0.2664, Omega_b=0.0492, h=0.6727, n_s=0.9645, sigma8=0.831),
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["A", "B"])
def test_consistent_with_sbi_lens_observed_maps(name):
    """At the truth, with the compatible lookup: noise level, band powers and one-point variance of
    64 simulations are consistent with sbi_lens's observed map(s)."""
    s = SBI_SETS[name]
    data = np.load(_needs(s["data"]))
    data = data[None] if data.ndim == 2 else np.moveaxis(data, -1, 0)
    geometry = jlens.FlatSky(s["npix"], field_deg=s["field"])
    if s["n_bins"] == 1:
        bins = (jlens.Smail(z0=1.0, alpha=0.5, beta=2.0, z_max=4.0),)
    else:
        parent = jlens.Smail(z0=0.11, alpha=2.0, beta=0.68, z_max=5.0)
        bins = jlens.tomographic_bins(parent, 5, sigma_z=0.05)
    lam = jlens.ShiftTable.from_sbi_lens(DATA / s["table"], compat="sbi_lens")(s["cosmo"])
    std = jlens.shape_noise_std(s["sigma_e"], s["n_gal"] / s["n_bins"], geometry)
    config = jlens.LognormalConfig(variance="empirical", spectrum="abs")

    def simulate(key):
        k1, k2 = jax.random.split(key)
        kappa = jlens.lognormal_maps(k1, s["cosmo"], bins, geometry, lam, config=config)
        return kappa, jlens.add_noise(k2, kappa, std)

    clean, sims = jax.lax.map(simulate, jax.random.split(jax.random.key(0), 64))
    edges = np.geomspace(3 * geometry.ell_fundamental, geometry.ell_nyquist, 11)
    spectra = jax.vmap(lambda m: jlens.map_power_spectrum(m, geometry, edges)[1])(sims)
    diag = np.arange(s["n_bins"])
    sims_cl = np.asarray(spectra)[:, diag, diag]
    data_cl = np.asarray(jlens.map_power_spectrum(data, geometry, edges)[1])[diag, diag]
    z = (data_cl - sims_cl.mean(0)) / sims_cl.std(0)
    print(name, "band-power z-scores of the data:", np.round(z, 2))
    assert np.all(np.abs(z) < 4.0)
    # one-point variance of the data against the simulations
    var_data = data.var(axis=(1, 2))
    var_sims = np.asarray(sims.var(axis=(2, 3)))
    print(name, "variance data / sims:", np.round(var_data / var_sims.mean(0), 4))
    assert np.all(np.abs(var_data / var_sims.mean(0) - 1.0) < 0.03)
    # noise level: data variance minus the simulated signal variance, against sigma_e / sqrt(n A)
    noise = np.sqrt(var_data - np.asarray(clean.var(axis=(2, 3))).mean(0))
    print(name, "noise std data / model:", np.round(noise / float(std), 4))
    np.testing.assert_allclose(noise, float(std), rtol=0.02)
