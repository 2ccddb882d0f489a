"""The conditional flow: normalisation, change of variables, sampling, gradients, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from jflows import ConditionalFlow, RampMixture, SigmoidMixture, standardisation

SMALL = {"hidden": (16, 16), "num_layers": 3}


def _flow(dim, context_dim=0, seed=0, **kwargs):
    return ConditionalFlow(dim, context_dim, rngs=nnx.Rngs(seed), **{**SMALL, **kwargs})


# ---------------------------------------------------------------------------------- quadrature
# Box supports are integrated in logit coordinates t of the unit box, u = sigmoid(t), where the
# flow's densities (which may blow up like u^(a - 1) at the edges) become smooth and decay
# exponentially; Gauss-Legendre on each of a few t-intervals is then accurate to ~1e-8.
T_EDGES = np.array([-60.0, -8.0, -3.0, -1.5, -0.5, 0.5, 1.5, 3.0, 8.0, 36.0])


def _nodes(edges, m=24):
    x, w = np.polynomial.legendre.leggauss(m)
    lo, hi = edges[:-1, None], edges[1:, None]
    return (lo + hi) / 2 + (hi - lo) / 2 * x[None, :], (hi - lo) / 2 * w[None, :]


def _box_bin_masses(flow, width, context=None, edges=T_EDGES):
    """Probability of each cell of the t-grid `edges` (per dim) under a flow on [0, width]^dim."""
    t, w = _nodes(edges)
    n_bins, m = t.shape
    u = 1 / (1 + np.exp(-t))
    jac = width * u * (1 - u) * w  # d theta / d t, times the quadrature weights
    if flow.dim == 1:
        theta = (width * u).reshape(-1, 1)
        p = np.exp(np.asarray(flow.log_prob(jnp.asarray(theta), context)))
        return (p.reshape(n_bins, m) * jac).sum(axis=1)
    t1, t2 = np.meshgrid(width * u.ravel(), width * u.ravel(), indexing="ij")
    theta = np.stack([t1.ravel(), t2.ravel()], axis=-1)
    p = np.exp(np.asarray(flow.log_prob(jnp.asarray(theta), context))).reshape(n_bins, m, n_bins, m)
    return np.einsum("imjn,im,jn->ij", p, jac, jac)


# ---------------------------------------------------------------------------------- normalisation
@pytest.mark.x64
@pytest.mark.parametrize(
    "transform",
    [SigmoidMixture(num_components=4), RampMixture(num_components=4)],
    ids=["sigmoid", "ramp"],
)
def test_log_prob_integrates_to_one_1d(transform):
    flow = _flow(1, 2, transform=transform, box=(0.0, 2.0), init_scale=0.7)
    for context in (jnp.array([0.3, -1.0]), jnp.array([2.0, 0.5])):
        total = _box_bin_masses(flow, 2.0, context).sum()
        assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.x64
def test_log_prob_integrates_to_one_2d():
    flow = _flow(2, 1, box=(0.0, 3.0), init_scale=0.7)
    total = _box_bin_masses(flow, 3.0, jnp.array([0.4])).sum()
    assert total == pytest.approx(1.0, abs=1e-5)


@pytest.mark.x64
def test_log_prob_integrates_to_one_unbounded_1d():
    # loc_scale support: theta = loc + scale * t with the same t-quadrature.
    flow = _flow(1, loc_scale=(1.0, 0.5), init_scale=0.7)
    t, w = _nodes(T_EDGES)
    theta = 1.0 + 0.5 * t.reshape(-1, 1)
    p = np.exp(np.asarray(flow.log_prob(jnp.asarray(theta))))
    assert float(np.sum(p * 0.5 * w.ravel())) == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------------------------- change of variables
def _logistic_flow(a_raw, b_raw, loc, scale):
    # One sigmoid component with c -> 0: u = sigmoid((theta - loc) / scale) is mapped to
    # z = sigmoid(a (logit u + b)) ~ U(0, 1), so theta ~ Logistic(loc - scale b, scale / a).
    flow = ConditionalFlow(
        1,
        rngs=nnx.Rngs(0),
        num_layers=1,
        transform=SigmoidMixture(num_components=1, min_linear=0.0),
        loc_scale=(loc, scale),
    )
    flow.layers[0].free[...] = jnp.array([a_raw, b_raw, 0.0, -60.0])
    a = 1.0 + jax.nn.softplus(a_raw + np.log(np.expm1(1.0)))
    return flow, loc - scale * b_raw, scale / a


@pytest.mark.x64
def test_change_of_variables_matches_closed_form_density():
    flow, mean, s = _logistic_flow(0.8, -0.7, 2.0, 0.5)
    theta = jnp.linspace(-4.0, 8.0, 301)[:, None]
    z = (theta[:, 0] - mean) / s
    expected = -z - 2 * jax.nn.softplus(-z) - jnp.log(s)  # logistic log-density, written out
    np.testing.assert_allclose(flow.log_prob(theta), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(flow.score(theta)[:, 0], -jnp.tanh(z / 2) / s, rtol=1e-8, atol=1e-8)


def test_samples_of_closed_form_flow_pass_ks_test():
    flow, mean, s = _logistic_flow(0.8, -0.7, 2.0, 0.5)
    n = 4000
    theta = np.sort(np.asarray(flow.sample(jax.random.PRNGKey(11), None, n))[:, 0])
    cdf = 1 / (1 + np.exp(-(theta - float(mean)) / float(s)))
    ecdf_hi, ecdf_lo = np.arange(1, n + 1) / n, np.arange(n) / n
    d = max(np.max(ecdf_hi - cdf), np.max(cdf - ecdf_lo))
    assert d < 1.95 / np.sqrt(n)  # Kolmogorov-Smirnov at the 0.1% level


# ---------------------------------------------------------------------------------- sampling
@pytest.mark.x64
def test_samples_histogram_matches_density_chi_square():
    # A randomly initialised (visibly non-uniform) 2-D conditional flow on [0, 3]^2.
    flow = _flow(2, 1, seed=3, box=(0.0, 3.0), init_scale=1.0)
    context = jnp.array([0.4])
    masses = _box_bin_masses(flow, 3.0, context)
    assert masses.sum() == pytest.approx(1.0, abs=1e-5)
    n = 20000
    theta = np.asarray(flow.sample(jax.random.PRNGKey(5), context, n))
    t = np.log(theta / 3.0) - np.log1p(-theta / 3.0)
    inner = T_EDGES[1:-1]
    counts = np.zeros_like(masses)
    np.add.at(counts, (np.searchsorted(inner, t[:, 0]), np.searchsorted(inner, t[:, 1])), 1)
    expected = n * masses
    keep = expected > 5  # pool the nearly empty cells into one
    observed = np.append(counts[keep], counts[~keep].sum())
    expected = np.append(expected[keep], expected[~keep].sum())
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    dof = observed.size - 1
    p_value = float(jax.scipy.special.gammaincc(dof / 2, chi2 / 2))
    assert dof > 30
    assert p_value > 1e-3, (chi2, dof)


@pytest.mark.x64
def test_sample_and_log_prob_agree_with_log_prob_and_stay_in_box():
    flow = _flow(
        3,
        2,
        num_layers=2,
        box=(jnp.array([-1.0, 0.0, 10.0]), jnp.array([1.0, 5.0, 11.0])),
        init_scale=1.0,
    )
    context = jnp.array([0.5, -0.5])
    theta, log_q = flow.sample_and_log_prob(jax.random.PRNGKey(0), context, 256)
    assert theta.shape == (256, 3)
    low, high = jnp.array([[-1.0, 0.0, 10.0]]), jnp.array([[1.0, 5.0, 11.0]])
    assert bool(jnp.all((theta >= low) & (theta <= high)))
    # Rounding theta = low + width * u loses relative precision in u next to an edge, where these
    # random densities are steep (in float32 that can move log q by O(1), hence float64 here).
    np.testing.assert_allclose(flow.log_prob(theta, context), log_q, rtol=1e-4, atol=1e-6)
    assert float(flow.log_prob(jnp.array([2.0, 1.0, 10.5]), context)) == -np.inf


# ---------------------------------------------------------------------------------- gradients
@pytest.mark.slow
@pytest.mark.x64
def test_check_grads_log_prob_and_samples():
    flow = _flow(2, 1, box=(0.0, 3.0), init_scale=0.7)
    context = jnp.array([0.2])
    theta = jnp.array([[0.4, 2.5], [1.7, 0.9]])
    kw = {"order": 1, "modes": ("fwd", "rev"), "atol": 1e-5, "rtol": 1e-5, "eps": 1e-6}
    check_grads(lambda th: flow.log_prob(th, context), (theta,), **kw)
    check_grads(lambda c: flow.log_prob(theta, c), (context,), **kw)
    # w.r.t. all parameters: the module is a PyTree
    check_grads(lambda m: m.log_prob(theta, context), (flow,), **kw)
    # samples, through the implicit-gradient inverse, w.r.t. the parameters
    check_grads(lambda m: m.sample(jax.random.PRNGKey(1), context, 3), (flow,), **kw)


@pytest.mark.x64
def test_score_matches_finite_differences():
    flow = _flow(2, 1, box=(0.0, 3.0), init_scale=0.7)
    context = jnp.array([0.2])
    theta = jnp.array([[0.4, 2.5], [1.7, 0.9]])
    eps = 1e-6
    fd = jnp.stack(
        [
            (flow.log_prob(theta + eps * e, context) - flow.log_prob(theta - eps * e, context))
            / (2 * eps)
            for e in jnp.eye(2)[:, None, :]
        ],
        axis=-1,
    )
    np.testing.assert_allclose(flow.score(theta, context), fd, rtol=1e-6, atol=1e-6)


def test_jit_vmap_grad_friendly():
    flow = _flow(2, 3, num_layers=1, loc_scale=(jnp.zeros(2), jnp.ones(2)))
    theta = jax.random.normal(jax.random.PRNGKey(0), (5, 2))
    contexts = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    lp = flow.log_prob(theta, contexts)
    assert lp.shape == (5,)
    np.testing.assert_allclose(
        jax.jit(lambda m, t, c: m.log_prob(t, c))(flow, theta, contexts), lp, rtol=1e-6
    )
    samples = jax.vmap(lambda c: flow.sample(jax.random.PRNGKey(2), c, 4))(contexts)
    assert samples.shape == (5, 4, 2)
    grads = jax.grad(lambda m: jnp.mean(m.log_prob(theta, contexts)))(flow)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))


def test_random_permutations_are_reproducible():
    def perms(seed):
        flow = _flow(5, seed=seed, permutation="random")
        return [layer.permutation for layer in flow.layers if hasattr(layer, "permutation")]

    assert perms(0) == perms(0)
    assert perms(0) != perms(1)


# ---------------------------------------------------------------------------------- input checks
def test_eager_value_errors():
    flow = _flow(2, 3, num_layers=1)
    with pytest.raises(ValueError, match=r"theta must have shape \(2,\) or \(n, 2\), got \(4, 3\)"):
        flow.log_prob(jnp.zeros((4, 3)), jnp.zeros(3))
    with pytest.raises(ValueError, match="context must have shape"):
        flow.log_prob(jnp.zeros((4, 2)), jnp.zeros(2))
    with pytest.raises(ValueError, match="needs a context"):
        flow.score(jnp.zeros(2))
    with pytest.raises(ValueError, match="batch of contexts"):
        flow.log_prob(jnp.zeros((4, 2)), jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="one context"):
        flow.sample(jax.random.PRNGKey(0), jnp.zeros((2, 3)), 4)
    with pytest.raises(ValueError, match="n must be a positive int"):
        flow.sample(jax.random.PRNGKey(0), jnp.zeros(3), 0)
    with pytest.raises(ValueError, match="unconditional"):
        _flow(2, num_layers=1).log_prob(jnp.zeros(2), jnp.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        _flow(2, box=(0.0, jnp.array([1.0, jnp.inf])))
    with pytest.raises(ValueError, match="finite"):
        _flow(2, box=(jnp.nan, 1.0))
    with pytest.raises(ValueError, match="low < high"):
        _flow(2, box=(jnp.array([0.0, 2.0]), 1.0))
    with pytest.raises(ValueError, match="shape"):
        _flow(2, box=(jnp.zeros(3), 1.0))
    with pytest.raises(ValueError, match="scale must be positive"):
        _flow(2, loc_scale=(0.0, jnp.array([1.0, 0.0])))
    with pytest.raises(ValueError, match="at most one"):
        _flow(2, box=(0.0, 1.0), loc_scale=(0.0, 1.0))


def test_standardisation():
    theta = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    loc, scale = standardisation(theta)
    np.testing.assert_allclose(loc, [2.0, 1.0])
    np.testing.assert_allclose(scale, [np.sqrt(8 / 3), 1.0])
    with pytest.raises(ValueError, match="shape"):
        standardisation(np.zeros(3))
