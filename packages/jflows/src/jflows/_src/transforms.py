"""Smooth, strictly monotone maps of the unit interval with implicit-gradient inverses.

A transform here is a static, hashable description (a frozen dataclass) of a *family* of elementwise
bijections `f(·; raw): [0, 1] -> [0, 1]`, indexed by an unconstrained parameter vector `raw` of length
`num_params` per coordinate (what a conditioner network outputs). Every family has the form

    f(x) = (1 - c) Σ_k w_k ĝ_k(x) + c x,      ĝ_k(x) = (g_k(x) - g_k(0)) / (g_k(1) - g_k(0)),

with softmax weights w, c in (c_min, 1) and C-infinity monotone components g_k, so that f(0) = 0,
f(1) = 1 exactly and f' >= c > 0 everywhere. The inverse is computed numerically (bisection, then
bracket-safeguarded Newton, on t = logit x, a fixed number of steps so that it vectorises) and
differentiated by the implicit function theorem through `jax.custom_jvp`: forward and reverse mode,
any order.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["MonotoneMixture", "RampMixture", "SigmoidMixture"]


# Stands for log(0) in log-derivatives: exp underflows to 0, but gradients stay finite (no -inf - -inf).
_LOG_ZERO = -1.0e4


def _log_sigmoid(z):
    return -jax.nn.softplus(-z)


def _inv_softplus(y: float) -> float:
    return math.log(math.expm1(y))


class MonotoneMixture(abc.ABC):
    """Base class of the elementwise smooth mixtures; see [`SigmoidMixture`][jflows.SigmoidMixture].

    Subclasses are frozen dataclasses (hashable, static under `jit`) and implement `_components`.
    All methods act elementwise: `x` has any shape `S` and `raw` has shape `S + (num_params,)`.
    """

    num_components: int
    min_slope: float
    min_linear: float
    bisection_steps: int | None
    newton_steps: int | None

    # the allowed range of `min_slope`, [lo, hi)
    _slope_range: tuple[float, float] = (0.0, 1.0)

    def _validate(self) -> None:
        if not isinstance(self.num_components, int) or self.num_components < 1:
            raise ValueError(f"num_components must be a positive int, got {self.num_components!r}")
        lo, hi = self._slope_range
        if not (lo <= self.min_slope and (self.min_slope < hi)):
            raise ValueError(f"min_slope must lie in [{lo}, {hi}), got {self.min_slope!r}")
        if not 0.0 <= self.min_linear < 1.0:
            raise ValueError(f"min_linear must lie in [0, 1), got {self.min_linear!r}")
        for name in ("bisection_steps", "newton_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be None or a non-negative int, got {value!r}")

    @property
    def num_params(self) -> int:
        """Number of unconstrained parameters per coordinate: `3 * num_components + 1`."""
        return 3 * self.num_components + 1

    # ------------------------------------------------------------------ parameters
    def _split(self, raw):
        k = self.num_components
        if raw.shape[-1] != self.num_params:
            raise ValueError(
                f"raw parameters must have last axis {self.num_params}, got shape {raw.shape}"
            )
        a_raw, b_raw, w_raw, c_raw = (
            raw[..., :k],
            raw[..., k : 2 * k],
            raw[..., 2 * k : 3 * k],
            raw[..., 3 * k],
        )
        a = self._a(a_raw)
        log_w = jax.nn.log_softmax(w_raw, axis=-1)
        log_1mc = math.log1p(-self.min_linear) + _log_sigmoid(-c_raw)
        if self.min_linear == 0.0:
            log_c = _log_sigmoid(c_raw)
        else:
            log_c = jnp.logaddexp(
                math.log(self.min_linear), math.log1p(-self.min_linear) + _log_sigmoid(c_raw)
            )
        return a, b_raw, log_w, log_1mc, log_c

    def constrained(self, raw) -> dict[str, jax.Array]:
        """The constrained parameters `a`, `b`, `w`, `c` that `raw` stands for (for inspection).

        **Arguments:**

        - `raw`: unconstrained parameters, shape `S + (num_params,)`.

        **Returns:**

        A dict with `a`, `b`, `w` of shape `S + (num_components,)` and `c` of shape `S`.
        """
        raw = jnp.asarray(raw)
        a, b_raw, log_w, _, log_c = self._split(raw)
        return {"a": a, "b": self._b(b_raw), "w": jnp.exp(log_w), "c": jnp.exp(log_c)}

    def _a(self, a_raw):
        """Slopes `a >= min_slope` of the components; zero raw parameters give `a = 1`."""
        return self.min_slope + jax.nn.softplus(a_raw + _inv_softplus(1.0 - self.min_slope))

    @abc.abstractmethod
    def _b(self, b_raw):
        """Location parameters of the components from their raw values."""

    @abc.abstractmethod
    def _components(self, x, a, b):
        """Normalised components ĝ_k(x) and log ĝ_k'(x); `x` has shape `S + (1,)`, `a`, `b` `S + (K,)`."""

    # ------------------------------------------------------------------ forward
    def forward_and_log_det(self, x, raw) -> tuple[jax.Array, jax.Array]:
        """`f(x)` and `log f'(x)`, elementwise.

        **Arguments:**

        - `x`: points of `[0, 1]`, any shape `S`.
        - `raw`: unconstrained parameters, shape `S + (num_params,)`.

        **Returns:**

        `(y, log_det)`, both of shape `S`.
        """
        x, raw = self._promote(x, raw)
        return _forward_and_log_det(self, x, raw)

    def forward(self, x, raw) -> jax.Array:
        """`f(x)` elementwise; see `forward_and_log_det`."""
        return self.forward_and_log_det(x, raw)[0]

    def log_derivative(self, x, raw) -> jax.Array:
        """`log f'(x)` elementwise; see `forward_and_log_det`."""
        return self.forward_and_log_det(x, raw)[1]

    # ------------------------------------------------------------------ inverse
    def inverse(self, y, raw) -> jax.Array:
        """`f^{-1}(y)` elementwise, by bisection then safeguarded Newton steps.

        Derivatives with respect to `y` and `raw` come from the implicit function theorem,
        `dx = (dy - ∂f/∂raw · draw) / f'(x)` (a `jax.custom_jvp`, so forward and reverse mode of any
        order work); the iterations are never differentiated.

        **Arguments:**

        - `y`: points of `[0, 1]` (values outside are clipped), any shape `S`.
        - `raw`: unconstrained parameters, shape `S + (num_params,)`.

        **Returns:**

        `x` of shape `S`.
        """
        y, raw = self._promote(y, raw)
        return _inverse(self, y, raw)

    def inverse_and_log_det(self, y, raw) -> tuple[jax.Array, jax.Array]:
        """`x = f^{-1}(y)` and `log |d x / d y| = -log f'(x)`, elementwise."""
        x = self.inverse(y, raw)
        return x, -self.log_derivative(x, raw)

    def _promote(self, x, raw):
        x = jnp.asarray(x)
        raw = jnp.asarray(raw)
        dtype = jnp.result_type(x, raw, float)
        x, raw = x.astype(dtype), raw.astype(dtype)
        if raw.shape != (*x.shape, self.num_params):
            raise ValueError(
                f"raw parameters must have shape {(*x.shape, self.num_params)} for inputs of shape "
                f"{x.shape}, got {raw.shape}"
            )
        return x, raw

    def _steps(self, dtype) -> tuple[int, int]:
        double = jnp.finfo(dtype).bits > 32
        n_bisect = self.bisection_steps
        n_newton = self.newton_steps
        if n_bisect is None:
            n_bisect = 16 if double else 12
        if n_newton is None:
            n_newton = 12 if double else 10
        return n_bisect, n_newton

    def _solve(self, y, raw):
        # Solved for t = logit(x), where the components are smooth sigmoids of t and the root keeps
        # its relative precision next to the end points. One loop (one copy of f in the compiled
        # program): the first `n_bisect` steps bisect the bracket [lo, hi] (always valid, always
        # shrinking), the next ones take Newton steps in t, falling back to bisection whenever a
        # step would leave the bracket. The answer is the evaluated point of smallest residual
        # |f(x) - y| (the loop runs once more to evaluate its last step): when the root sits within
        # rounding of a bracket end, Newton's quadratic overshoot lands just outside the bracket and
        # the bisection fallback alone would stall at the bracket's width (x off by 7e-7 in float64
        # at x = 1/2 before this was tracked). NaN parameters give NaN.
        y = jnp.clip(y, 0.0, 1.0)
        n_bisect, n_newton = self._steps(y.dtype)
        tiny, top = _tiny_and_top(y.dtype)
        t_min, t_max = math.log(tiny) - math.log1p(-tiny), math.log(top) - math.log1p(-top)

        def step(i, carry):
            lo, hi, t, best_t, best_r = carry
            x = jax.nn.sigmoid(t)
            fx, log_det = self.forward_and_log_det(x, raw)
            r = fx - y
            better = jnp.abs(r) < best_r
            best_t = jnp.where(better, t, best_t)
            best_r = jnp.where(better, jnp.abs(r), best_r)
            lo = jnp.where(r < 0, t, lo)
            hi = jnp.where(r > 0, t, hi)
            # dF/dt = f'(x) x (1 - x)
            newton = t - r * jnp.exp(-(log_det + _log_sigmoid(t) + _log_sigmoid(-t)))
            use_newton = (i >= n_bisect) & (newton >= lo) & (newton <= hi)
            return lo, hi, jnp.where(use_newton, newton, 0.5 * (lo + hi)), best_t, best_r

        init = (
            jnp.full_like(y, t_min),
            jnp.full_like(y, t_max),
            jnp.zeros_like(y),
            jnp.full_like(y, jnp.nan),
            jnp.full_like(y, jnp.inf),
        )
        *_, t, _ = lax.fori_loop(0, n_bisect + n_newton + 1, step, init)
        x = jnp.where(y <= 0, 0.0, jnp.where(y >= 1, 1.0, jax.nn.sigmoid(t)))
        return jnp.where(jnp.isnan(t), jnp.nan, x).astype(y.dtype)


# The kernels, compiled once per (transform, shapes, dtype); inside a user's jit they are inlined.
@functools.partial(jax.jit, static_argnums=0)
def _forward_and_log_det(transform: MonotoneMixture, x, raw):
    a, b_raw, log_w, log_1mc, log_c = transform._split(raw)
    g, log_dg = transform._components(x[..., None], a, transform._b(b_raw))
    w = jnp.exp(log_w)
    y = jnp.exp(log_1mc) * jnp.sum(w * g, axis=-1) + jnp.exp(log_c) * x
    log_det = jnp.logaddexp(log_1mc + jax.nn.logsumexp(log_w + log_dg, axis=-1), log_c)
    return y, log_det


@functools.partial(jax.jit, static_argnums=0)
def _inverse(transform: MonotoneMixture, y, raw):
    return _implicit_inverse(transform, y, raw)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _implicit_inverse(transform: MonotoneMixture, y, raw):
    return lax.stop_gradient(transform._solve(y, raw))


@_implicit_inverse.defjvp
def _implicit_inverse_jvp(transform, primals, tangents):
    y, raw = primals
    dy, draw = tangents
    x = _implicit_inverse(transform, y, raw)
    # f(x(y, p), p) = y  =>  f'(x) dx + ∂f/∂p dp = dy. Outside [0, 1] the inverse is clipped (flat).
    _, df_dp = jax.jvp(lambda r: transform.forward(x, r), (raw,), (draw,))
    inside = (y >= 0) & (y <= 1)
    dx = (jnp.where(inside, dy, 0) - df_dp) * jnp.exp(-transform.log_derivative(x, raw))
    return x, dx


def _tiny_and_top(dtype):
    info = jnp.finfo(dtype)
    return float(info.tiny), 1.0 - float(info.epsneg)


@dataclasses.dataclass(frozen=True)
class SigmoidMixture(MonotoneMixture):
    r"""Mixture of affine-logit-sigmoids (Zeghal et al. 2022, after Kohler et al. 2021).

    Components `g_k(x) = sigmoid(a_k (logit x + b_k))` with slopes `a_k >= min_slope >= 1` and
    shifts `b_k = raw_b + β_k`, where the fixed offsets β_k spread from -2 to 2 break the symmetry
    between components. The logit is evaluated on `x` clipped to `[tiny, 1 - epsneg]` of its dtype,
    and each component is renormalised so that `ĝ_k(0) = 0` and `ĝ_k(1) = 1` exactly.

    Near the edges a component behaves like `x^a_k` (and `1 - (1 - x)^a_k`), so `a_k >= 1` keeps
    `f'` (the density of the layer) bounded on the closed interval: with `f' >= c` as well, `f` is
    bi-Lipschitz and invertible in floating point up to the edges (slopes below 1, allowed until
    issue 12, made the density singular at the edges and `f(f^-1(y))` wrong by up to 3e-2 near
    `y = 1`).

    **Arguments:**

    - `num_components`: K, the number of mixture components.
    - `min_slope`: lower bound on the slopes `a_k`, at least 1 (zero raw parameters give
      `a_k = min_slope + 1`).
    - `min_linear`: lower bound on the linear weight `c` (zero raw parameters give
      `c = (1 + min_linear) / 2`); it bounds `f' >= c`, which conditions the inverse.
    - `bisection_steps`, `newton_steps`: iterations of the inverse (solved for logit x); `None`
      picks 12 + 10 in float32, 16 + 12 in float64.
    """

    num_components: int = 8
    min_slope: float = 1.0
    min_linear: float = 0.01
    bisection_steps: int | None = None
    newton_steps: int | None = None

    _slope_range = (1.0, math.inf)

    def __post_init__(self):
        self._validate()

    def _a(self, a_raw):
        # a >= 1: a component behaves like x^a at 0 and 1 - (1 - x)^a at 1, so a < 1 would make
        # f' (the density) blow up at the edges. a(0) = min_slope + 1.
        return self.min_slope + jax.nn.softplus(a_raw + _inv_softplus(1.0))

    def _b(self, b_raw):
        k = self.num_components
        offsets = (
            jnp.linspace(-2.0, 2.0, k, dtype=b_raw.dtype) if k > 1 else jnp.zeros(1, b_raw.dtype)
        )
        return b_raw + jnp.broadcast_to(offsets, b_raw.shape)

    def _components(self, x, a, b):
        tiny, top = _tiny_and_top(x.dtype)
        xc = jnp.clip(x, tiny, top)
        log_x, log_1mx = jnp.log(xc), jnp.log1p(-xc)
        z = a * (log_x - log_1mx + b)
        z0 = a * (math.log(tiny) - math.log1p(-tiny) + b)
        z1 = a * (math.log(top) - math.log1p(-top) + b)
        g, g0, g1 = jax.nn.sigmoid(z), jax.nn.sigmoid(z0), jax.nn.sigmoid(z1)
        span = g1 - g0
        interior = (x > tiny) & (x < top)
        log_dg = jnp.log(a) + _log_sigmoid(z) + _log_sigmoid(-z) - log_x - log_1mx - jnp.log(span)
        log_dg = jnp.where(interior, log_dg, _LOG_ZERO)
        return (g - g0) / span, log_dg


@dataclasses.dataclass(frozen=True)
class RampMixture(MonotoneMixture):
    r"""Mixture of smooth ramps (Kohler, Krämer & Noé 2021), C-infinity up to the boundary.

    With the ramp `ρ(u) = exp(-u^{-α})` (0 for `u <= 0`), the smooth step
    `s(u) = ρ(u) / (ρ(u) + ρ(1 - u))` rises from 0 to 1 on [0, 1]; the components are
    `g_k(x) = s(a_k (x - b_k) + 1/2)` with `a_k >= min_slope` and `b_k in (0, 1)` (raw values are
    offset so that the components start evenly spread), renormalised to `ĝ_k(0) = 0`, `ĝ_k(1) = 1`.

    **Arguments:**

    - `num_components`, `min_slope`, `min_linear`, `bisection_steps`, `newton_steps`: as in
      [`SigmoidMixture`][jflows.SigmoidMixture].
    - `alpha`: exponent of the ramp (static, > 0).
    """

    num_components: int = 8
    min_slope: float = 0.1
    min_linear: float = 0.01
    bisection_steps: int | None = None
    newton_steps: int | None = None
    alpha: float = 1.0

    def __post_init__(self):
        self._validate()
        if not self.alpha > 0:
            raise ValueError(f"alpha must be positive, got {self.alpha!r}")

    def _b(self, b_raw):
        k = self.num_components
        centres = (jnp.arange(k, dtype=b_raw.dtype) + 0.5) / k
        shift = jnp.broadcast_to(jnp.log(centres) - jnp.log1p(-centres), b_raw.shape)
        return jax.nn.sigmoid(b_raw + shift)

    def _step(self, u):
        """s(u) and log s'(u), exact to within exp(-1000) thanks to the clip at |q| = 1000."""
        delta = 1000.0 ** (-1.0 / self.alpha)
        uc = jnp.clip(u, delta, 1.0 - delta)
        inv_u, inv_1mu = uc ** (-self.alpha), (1.0 - uc) ** (-self.alpha)
        q = inv_1mu - inv_u
        s = jnp.where(u <= delta, 0.0, jnp.where(u >= 1.0 - delta, 1.0, jax.nn.sigmoid(q)))
        log_ds = (
            _log_sigmoid(q)
            + _log_sigmoid(-q)
            + math.log(self.alpha)
            + jnp.log(inv_u / uc + inv_1mu / (1.0 - uc))
        )
        log_ds = jnp.where((u > delta) & (u < 1.0 - delta), log_ds, _LOG_ZERO)
        return s, log_ds

    def _components(self, x, a, b):
        s, log_ds = self._step(a * (x - b) + 0.5)
        s0, _ = self._step(0.5 - a * b)
        s1, _ = self._step(0.5 + a * (1.0 - b))
        span = s1 - s0
        return (s - s0) / span, jnp.log(a) + log_ds - jnp.log(span)
