"""Fisher matrices, validated against analytic results, numpy and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jinfer

# A linear Gaussian model y = A theta + n, n ~ N(0, C): F = A^T C^-1 A exactly.
_RNG = np.random.default_rng(16)
_D, _P = 5, 3
_A = _RNG.normal(size=(_D, _P))
_M = _RNG.normal(size=(_D, _D))
_C = _M @ _M.T + _D * np.eye(_D)
_THETA = np.array([0.3, -1.2, 0.7])
_Y = _A @ _THETA + np.linalg.cholesky(_C) @ _RNG.normal(size=_D)
_F_EXACT = _A.T @ np.linalg.solve(_C, _A)


def _linear_log_likelihood(theta):
    a, c, y = jnp.asarray(_A), jnp.asarray(_C), jnp.asarray(_Y)
    r = y - a @ theta
    _, logdet = jnp.linalg.slogdet(c)
    return -0.5 * (r @ jnp.linalg.solve(c, r) + logdet + _D * jnp.log(2 * jnp.pi))


def _linear_mean(theta):
    return jnp.asarray(_A) @ theta


@pytest.mark.x64
def test_hessian_fisher_of_a_linear_gaussian_model_is_analytic():
    fisher = jinfer.fisher_from_log_likelihood(_linear_log_likelihood, jnp.asarray(_THETA))
    assert fisher.shape == (_P, _P)
    np.testing.assert_allclose(fisher, _F_EXACT, rtol=1e-10)
    np.testing.assert_array_equal(fisher, fisher.T)
    # the same at another point (the Fisher of a linear model does not depend on theta), under jit
    jitted = jax.jit(lambda t: jinfer.fisher_from_log_likelihood(_linear_log_likelihood, t))
    np.testing.assert_allclose(jitted(jnp.zeros(_P)), _F_EXACT, rtol=1e-10)


@pytest.mark.x64
def test_hessian_fisher_of_a_nonlinear_likelihood_matches_its_analytic_hessian():
    # log L = -(t0^2 t1^2) / 2 - exp(t0): -H = [[t1^2 + e^t0, 2 t0 t1], [2 t0 t1, t0^2]]
    def log_l(t):
        return -0.5 * t[0] ** 2 * t[1] ** 2 - jnp.exp(t[0])

    t0, t1 = 0.4, -1.3
    expected = np.array([[t1**2 + np.exp(t0), 2 * t0 * t1], [2 * t0 * t1, t0**2]])
    fisher = jinfer.fisher_from_log_likelihood(log_l, jnp.array([t0, t1]))
    np.testing.assert_allclose(fisher, expected, rtol=1e-12)


@pytest.mark.x64
def test_gaussian_fisher_with_given_covariance_is_analytic():
    fisher = jinfer.gaussian_fisher(_linear_mean, jnp.asarray(_THETA), jnp.asarray(_C))
    np.testing.assert_allclose(fisher, _F_EXACT, rtol=1e-10)
    # and agrees with the Hessian route
    hess = jinfer.fisher_from_log_likelihood(_linear_log_likelihood, jnp.asarray(_THETA))
    np.testing.assert_allclose(fisher, hess, rtol=1e-10)


@pytest.mark.x64
def test_hartlap_corrected_fisher_is_unbiased_and_uncorrected_is_biased_high():
    # 2000 small estimates: the standard error of their mean is ~0.7 %, so a Hartlap factor off by
    # one in n - d - 2 (a 4 % bias) is caught
    n, d, p, reps = 30, 5, 2, 2000
    rng = np.random.default_rng(7)
    a = rng.normal(size=(d, p))
    m = rng.normal(size=(d, d))
    cov = m @ m.T + d * np.eye(d)
    exact = a.T @ np.linalg.solve(cov, a)
    chol = jnp.asarray(np.linalg.cholesky(cov))

    def mean_fn(theta):
        return jnp.asarray(a) @ theta

    def estimate(key, hartlap):
        sims = jax.random.normal(key, (n, d)) @ chol.T
        return jinfer.gaussian_fisher(mean_fn, jnp.zeros(p), simulations=sims, hartlap=hartlap)

    keys = jax.random.split(jax.random.key(3), reps)
    corrected = np.asarray(jax.vmap(lambda k: estimate(k, True))(keys))
    uncorrected = np.asarray(jax.vmap(lambda k: estimate(k, False))(keys))
    assert corrected.shape == (reps, p, p)

    mean_c, se_c = corrected.mean(0), corrected.std(0, ddof=1) / np.sqrt(reps)
    mean_u, se_u = uncorrected.mean(0), uncorrected.std(0, ddof=1) / np.sqrt(reps)
    assert np.all(np.abs(mean_c - exact) < 4 * se_c), (mean_c, exact, se_c)
    # the uncorrected estimate is biased high by (n - 1) / (n - d - 2) = 29/23, detectably so
    bias = (n - 1) / (n - d - 2)
    assert np.all(np.abs(mean_u - bias * exact) < 4 * se_u), (mean_u, bias * exact, se_u)
    diag = np.arange(p)
    assert np.all(mean_u[diag, diag] - exact[diag, diag] > 4 * se_u[diag, diag])


@pytest.mark.x64
def test_gaussian_fisher_jacobian_of_a_nonlinear_model_matches_finite_differences():
    def mean_fn(t):
        return jnp.stack([t[0] ** 2, jnp.sin(t[1]), t[0] * t[1]])

    theta = np.array([0.8, 0.5])
    eps = 1e-6
    jac_fd = np.stack(
        [
            (
                np.asarray(mean_fn(jnp.asarray(theta + eps * e)))
                - np.asarray(mean_fn(jnp.asarray(theta - eps * e)))
            )
            / (2 * eps)
            for e in np.eye(2)
        ],
        axis=1,
    )
    cov = np.array([[1.0, 0.2, 0.0], [0.2, 0.5, 0.1], [0.0, 0.1, 2.0]])
    expected = jac_fd.T @ np.linalg.solve(cov, jac_fd)
    fisher = jinfer.gaussian_fisher(mean_fn, jnp.asarray(theta), jnp.asarray(cov))
    np.testing.assert_allclose(fisher, expected, rtol=1e-8)


def test_gaussian_fisher_runs_in_float32_under_jit_and_grad():
    cov = jnp.asarray(_C, dtype=jnp.float32)

    def mean_fn(t):
        return jnp.stack([t[0] ** 2, jnp.sin(t[1]), t[0] * t[1], t[0], t[1]])

    def log_det_fisher(t):
        return jnp.linalg.slogdet(jinfer.gaussian_fisher(mean_fn, t, cov))[1]

    value, grad = jax.jit(jax.value_and_grad(log_det_fisher))(jnp.array([0.8, 0.5]))
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad))


def _correlated_fisher():
    return np.array([[4.0, 1.5, 0.3], [1.5, 2.0, -0.4], [0.3, -0.4, 1.0]])


def test_marginal_errors_are_at_least_the_conditional_errors():
    fisher = _correlated_fisher()
    marginal = np.asarray(jinfer.marginal_errors(jnp.asarray(fisher)))
    conditional = np.asarray(jinfer.conditional_errors(jnp.asarray(fisher)))
    np.testing.assert_allclose(marginal, np.sqrt(np.diag(np.linalg.inv(fisher))), rtol=1e-5)
    np.testing.assert_allclose(conditional, 1 / np.sqrt(np.diag(fisher)), rtol=1e-6)
    assert np.all(marginal >= conditional)
    assert np.all(marginal > 1.01 * conditional)  # correlated: strictly larger


def test_marginal_and_conditional_errors_agree_for_a_diagonal_fisher():
    sigma = np.array([0.1, 2.0, 0.5])
    fisher = jnp.asarray(np.diag(1 / sigma**2))
    np.testing.assert_allclose(jinfer.marginal_errors(fisher), sigma, rtol=1e-6)
    np.testing.assert_allclose(jinfer.conditional_errors(fisher), sigma, rtol=1e-6)


@pytest.mark.parametrize(("level", "q"), [(0.683, 2.30), (0.954, 6.17)])
def test_ellipse_of_a_diagonal_fisher(level, q):
    sigma = np.array([0.3, 2.0, 0.5])
    fisher = jnp.asarray(np.diag(1 / sigma**2))
    # sigma_0 < sigma_1: the major axis is the vertical one
    width, height, angle = jinfer.fisher_ellipse(fisher, 0, 1, level=level)
    np.testing.assert_allclose(width, 2 * np.sqrt(q) * sigma[1], rtol=2e-3)
    np.testing.assert_allclose(height, 2 * np.sqrt(q) * sigma[0], rtol=2e-3)
    np.testing.assert_allclose(angle, 90.0, atol=1e-4)
    # sigma_1 > sigma_2: the major axis is the horizontal one
    width, height, angle = jinfer.fisher_ellipse(fisher, 1, 2, level=level)
    np.testing.assert_allclose(width, 2 * np.sqrt(q) * sigma[1], rtol=2e-3)
    np.testing.assert_allclose(height, 2 * np.sqrt(q) * sigma[2], rtol=2e-3)
    np.testing.assert_allclose(angle, 0.0, atol=1e-4)


@pytest.mark.x64
@pytest.mark.parametrize(("i", "j"), [(0, 1), (1, 0), (0, 2), (2, 1)])
def test_ellipse_of_a_correlated_fisher_matches_numpy_eigendecomposition(i, j):
    fisher = _correlated_fisher()
    level = 0.9
    q = -2 * np.log(1 - level)
    cov = np.linalg.inv(fisher)[np.ix_([i, j], [i, j])]
    evals, evecs = np.linalg.eigh(cov)  # ascending
    major_vec = evecs[:, 1]
    expected_angle = np.degrees(np.arctan2(major_vec[1], major_vec[0]))
    expected_angle = (expected_angle + 90.0) % 180.0 - 90.0  # an axis: defined modulo 180
    width, height, angle = jinfer.fisher_ellipse(jnp.asarray(fisher), i, j, level=level)
    np.testing.assert_allclose(width, 2 * np.sqrt(q * evals[1]), rtol=1e-10)
    np.testing.assert_allclose(height, 2 * np.sqrt(q * evals[0]), rtol=1e-10)
    np.testing.assert_allclose(angle, expected_angle, atol=1e-8)
    # the ellipse boundary point along the major axis has chi^2 = q
    r = 0.5 * float(width) * np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
    np.testing.assert_allclose(r @ np.linalg.solve(cov, r), q, rtol=1e-10)


def test_bad_covariance_is_rejected():
    theta = jnp.array([0.8, 0.5])

    def mean_fn(t):
        return jnp.stack([t[0], t[1], t[0] * t[1]])

    not_spd = jnp.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="positive definite"):
        jinfer.gaussian_fisher(mean_fn, theta, not_spd)
    asymmetric = jnp.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="symmetric"):
        jinfer.gaussian_fisher(mean_fn, theta, asymmetric)
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        jinfer.gaussian_fisher(mean_fn, theta, jnp.eye(2))
    with pytest.raises(ValueError, match="exactly one"):
        jinfer.gaussian_fisher(mean_fn, theta)
    with pytest.raises(ValueError, match="exactly one"):
        jinfer.gaussian_fisher(mean_fn, theta, jnp.eye(3), simulations=jnp.zeros((10, 3)))
    with pytest.raises(ValueError, match="positive definite"):
        jinfer.marginal_errors(jnp.array([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="square"):
        jinfer.conditional_errors(jnp.ones(3))


def test_too_few_simulations_are_rejected():
    def mean_fn(t):
        return jnp.stack([t[0], t[1], t[0] * t[1]])

    sims = jax.random.normal(jax.random.key(0), (5, 3))  # n = 5 <= d + 2
    with pytest.raises(ValueError, match=r"too few simulations.*n > d \+ 2 = 5, got n = 5"):
        jinfer.gaussian_fisher(mean_fn, jnp.array([0.8, 0.5]), simulations=sims)
    with pytest.raises(ValueError, match=r"simulations must have shape \(n, 3\)"):
        jinfer.gaussian_fisher(mean_fn, jnp.array([0.8, 0.5]), simulations=jnp.zeros((40, 2)))


def test_bad_theta_is_rejected():
    with pytest.raises(ValueError, match="theta must be finite"):
        jinfer.fisher_from_log_likelihood(lambda t: -jnp.sum(t**2), jnp.array([0.0, jnp.nan]))
    with pytest.raises(ValueError, match="theta must be finite"):
        jinfer.gaussian_fisher(lambda t: t, jnp.array([jnp.nan, 1.0]), jnp.eye(2))
    with pytest.raises(ValueError, match="1-D"):
        jinfer.fisher_from_log_likelihood(lambda t: -jnp.sum(t**2), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="1-D"):
        jinfer.fisher_from_log_likelihood(lambda t: -jnp.sum(t**2), 1.0)


def test_non_scalar_log_likelihood_and_bad_method_are_rejected():
    with pytest.raises(ValueError, match=r"must return a scalar, got output of shape \(2,\)"):
        jinfer.fisher_from_log_likelihood(lambda t: -(t**2), jnp.ones(2))
    with pytest.raises(ValueError, match="method must be one of"):
        jinfer.fisher_from_log_likelihood(lambda t: -jnp.sum(t**2), jnp.ones(2), method="fd")
    with pytest.raises(ValueError, match="not finite"):
        jinfer.fisher_from_log_likelihood(lambda t: -jnp.sum(jnp.sqrt(t)), jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="1-D array of summaries"):
        jinfer.gaussian_fisher(lambda t: jnp.sum(t), jnp.ones(2), jnp.eye(1))


def test_bad_ellipse_arguments_are_rejected():
    fisher = jnp.eye(3)
    with pytest.raises(ValueError, match="level must be a probability"):
        jinfer.fisher_ellipse(fisher, 0, 1, level=1.0)
    with pytest.raises(ValueError, match="i and j must be different"):
        jinfer.fisher_ellipse(fisher, 1, 1)
    with pytest.raises(ValueError, match="j must be a parameter index"):
        jinfer.fisher_ellipse(fisher, 0, 3)


def test_plot_fisher_ellipses_returns_a_figure():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fisher_a = _correlated_fisher()
    fisher_b = 2.0 * np.diag(np.diag(fisher_a))
    fig = jinfer.plot_fisher_ellipses(
        [fisher_a, fisher_b], ["a", "b", "c"], labels=["correlated", "diagonal"], fiducial=[1, 2, 3]
    )
    assert isinstance(fig, Figure)
    drawn = [ax for ax in fig.axes if ax.patches]
    assert len(drawn) == 3  # the pairs (a, b), (a, c), (b, c)
    assert all(len(ax.patches) == 4 for ax in drawn)  # 2 Fishers x 2 levels
    fig.canvas.draw()  # renders without a display

    # a single panel in a given Axes (p = 2)
    ax = Figure().add_subplot()
    fig2 = jinfer.plot_fisher_ellipses(jnp.eye(2), ["x", "y"], ax=ax)
    assert fig2 is ax.figure
    assert len(ax.patches) == 2
    with pytest.raises(ValueError, match="names must hold 3"):
        jinfer.plot_fisher_ellipses(fisher_a, ["a", "b"])
