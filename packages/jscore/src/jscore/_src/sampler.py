"""Annealed posterior sampling for y = A x + n with a score prior (Remy, Lanusse et al. 2022)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._checks import check_int, check_scalar
from .config import AnnealingConfig, HMCConfig, ODEConfig
from .hmc import AnnealedHMCState, annealed_hmc_step
from .noise import AbstractNoise, prepare_data
from .precondition import FourierPreconditioner

Operator = Callable[[Array], Array]
ScoreFn = Callable[[Array, Array], Array]

_DEFAULT_ANNEALING = AnnealingConfig()
_DEFAULT_HMC = HMCConfig()
_DEFAULT_ODE = ODEConfig()


def annealed_log_likelihood(
    forward_op: Operator, adjoint_op: Operator, noise: AbstractNoise, y: Array
) -> Callable[[Array, Array], tuple[Array, Array]]:
    """The annealed Gaussian log-likelihood `log N(y; A x, Sigma + sigma^2 I)` and its gradient.

    Adding `sigma^2 I` to the noise covariance is the approximation of Remy et al. (2022): the
    likelihood of the data given the *noised* field `x_sigma = x + sigma z` is `N(y; A x_sigma,
    Sigma + sigma^2 A A^T)` if one treats `z` as independent of `x_sigma`. The two agree exactly
    when `A A^T = I` (`jscore.IdentityOperator`), and have the same dependence on `x` for
    `jscore.MaskOperator` with diagonal noise (its masked data are identically zero). They do
    **not** agree for `jscore.ShearOperator`: its `A A^T` is the projector onto E-mode shear, not the
    identity (`|A A^T y - y| / |y| ~ 0.7` for white `y`); the `x`-dependence is still exact for noise
    that does not mix E and B modes (white noise on the full periodic map), but not with a mask or
    non-stationary noise. In those cases the annealed posterior is a different (still valid)
    interpolation, and every version becomes exact as `sigma -> 0`.

    Data entries whose noise variance is infinite (`jscore.DiagonalNoise`) may be NaN: they carry no
    information and are set to zero.

    **Arguments:**

    - `forward_op`, `adjoint_op`: `x -> A x` and `y -> A^T y` for one field.
    - `noise`: the noise model of the data (`jscore.DiagonalNoise`, `jscore.FourierNoise`, ...).
    - `y`: the observed data.

    **Returns:**

    A function `(x, sigma) -> (log_likelihood, gradient)`; the log-likelihood drops the
    `x`-independent normalisation, the gradient is `A^T (Sigma + sigma^2 I)^-1 (y - A x)`.
    """

    y = prepare_data(noise, y)

    def log_likelihood(x, sigma):
        sigma = jnp.asarray(sigma, dtype=x.dtype)
        residual = y.astype(x.dtype) - forward_op(x)
        weighted = noise.apply_precision(residual, sigma**2)
        return -0.5 * jnp.vdot(residual, weighted), adjoint_op(weighted)

    return log_likelihood


def _check_problem(score_fn, forward_op, adjoint_op, noise, y) -> jax.ShapeDtypeStruct:
    """Eager shape checks of an inverse problem (`score_fn=None` skips the score); returns the
    shape/dtype of one field."""
    if (
        (score_fn is not None and not callable(score_fn))
        or not callable(forward_op)
        or not callable(adjoint_op)
    ):
        raise TypeError("score_fn, forward_op and adjoint_op must be callables")
    if not isinstance(noise, AbstractNoise):
        raise TypeError(
            f"noise must be a jscore noise model (e.g. DiagonalNoise), got {type(noise).__name__}"
        )
    y = jnp.asarray(y) if not isinstance(y, jax.ShapeDtypeStruct) else y
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise TypeError(f"y must be a real floating-point array, got dtype {y.dtype}")
    if tuple(noise.shape) != tuple(y.shape):
        raise ValueError(
            f"noise is defined on data of shape {tuple(noise.shape)} but y has shape {tuple(y.shape)}"
        )
    x_struct = jax.eval_shape(adjoint_op, jax.ShapeDtypeStruct(y.shape, y.dtype))
    y_struct = jax.eval_shape(forward_op, x_struct)
    if y_struct.shape != y.shape:
        raise ValueError(
            f"forward_op maps fields of shape {x_struct.shape} (the output of adjoint_op) to shape "
            f"{y_struct.shape}, but y has shape {tuple(y.shape)}"
        )
    if score_fn is None:
        return x_struct
    s_struct = jax.eval_shape(score_fn, x_struct, jax.ShapeDtypeStruct((), x_struct.dtype))
    if s_struct.shape != x_struct.shape:
        raise ValueError(
            f"score_fn returns shape {s_struct.shape} for fields of shape {x_struct.shape}"
        )
    return x_struct


def probability_flow_ode(
    score_fn: ScoreFn,
    x: Array,
    sigma_start: Array | float,
    sigma_end: Array | float = 0.0,
    *,
    num_steps: int = 16,
) -> Array:
    """Integrate the probability-flow ODE of the variance-exploding diffusion,
    `dx / dsigma = -sigma s(x, sigma)`, from `sigma_start` to `sigma_end`.

    If `x` is distributed as `p_sigma_start` and `s` is the score of the family `p_sigma`, the result
    is distributed as `p_sigma_end`. Fixed-step Heun (second order) uniform in `sigma`: the interval is
    short (the end of an annealing run), the vector field is smooth and vanishes at `sigma = 0`, and a
    fixed grid keeps the cost predictable and the function vmap-able over chains with different
    `sigma_start` (no dependency on an adaptive ODE library).

    The score is never evaluated at `sigma = 0`: there the vector field is taken as its limit, 0 (for
    any prior with a smooth density `sigma s(x, sigma) -> 0`), so a learned score that divides by
    `sigma` (every jscore network) can be integrated to `sigma_end = 0`.

    **Arguments:**

    - `score_fn`: `s(x, sigma)` for one field (for posterior sampling, the annealed posterior score).
    - `x`: one field at `sigma_start`.
    - `sigma_start`, `sigma_end`: the noise levels (traced).
    - `num_steps`: Heun steps (static).

    **Returns:**

    The field at `sigma_end`.
    """
    num_steps = check_int("num_steps", num_steps, minimum=1)
    dtype = x.dtype
    sigma_start = jnp.asarray(sigma_start, dtype)
    h = (jnp.asarray(sigma_end, dtype) - sigma_start) / num_steps

    def field(x, sigma):
        positive = sigma > 0
        safe = jnp.where(positive, sigma, jnp.ones_like(sigma))
        return jnp.where(positive, -sigma * score_fn(x, safe), jnp.zeros_like(x))

    def heun(i, x):
        s_a = sigma_start + i * h
        s_b = s_a + h
        k1 = field(x, s_a)
        k2 = field(x + h * k1, s_b)
        return x + 0.5 * h * (k1 + k2)

    return jax.lax.fori_loop(0, num_steps, heun, x)


class AnnealedSampleInfo(NamedTuple):
    """Diagnostics of `annealed_posterior_sample`, one entry per chain (see `jscore.diagnose_annealing`).

    - `sigma`: the noise level each chain reached (should equal `sigma_min`; if not, raise `num_steps`).
    - `acceptance_rate`: fraction of accepted proposals over the run.
    - `num_accepted`: number of accepted proposals.
    - `hmc_position`: the chains' fields at the end of HMC, before the probability-flow ODE.
    """

    sigma: Array
    acceptance_rate: Array
    num_accepted: Array
    hmc_position: Array


class AnnealingWarning(UserWarning):
    """An annealed sampling run that probably did not sample the posterior: chains that stopped above
    `sigma_min`, or an acceptance rate that collapsed (see `jscore.diagnose_annealing`)."""


def diagnose_annealing(
    info: AnnealedSampleInfo,
    annealing: AnnealingConfig,
    *,
    min_acceptance: float = 0.1,
    warn: bool = True,
) -> list[str]:
    """Check the diagnostics of an annealed sampling run and describe what went wrong.

    `annealed_posterior_sample` runs this itself when called eagerly; call it on the `info` of a
    jitted run. Two failures are detected: chains that did not reach `annealing.sigma_min` (too few
    steps for the acceptance rate: their samples are from a broader distribution than the posterior)
    and a mean acceptance rate below `min_acceptance` (a step size too large for the posterior's
    smallest scale; at acceptance 0 the chains do not move at all).

    **Arguments:**

    - `info`: the `AnnealedSampleInfo` of a run (concrete arrays).
    - `annealing`: the `jscore.AnnealingConfig` of that run.
    - `min_acceptance`: the mean acceptance rate below which to complain, in [0, 1].
    - `warn`: also issue each message as an `jscore.AnnealingWarning`.

    **Returns:**

    The list of messages (empty when the run looks healthy).
    """
    if not isinstance(annealing, AnnealingConfig):
        raise TypeError(
            f"annealing must be a jscore.AnnealingConfig, got {type(annealing).__name__}"
        )
    check_scalar("min_acceptance", min_acceptance, low=0.0, low_open=False, high=1.0)
    sigma = np.asarray(info.sigma, np.float64)
    rate = np.asarray(info.acceptance_rate, np.float64)
    messages = []
    short = sigma > annealing.sigma_min * (1.0 + 1e-4)
    if np.any(short):
        messages.append(
            f"{int(short.sum())} of {sigma.size} chains stopped above sigma_min="
            f"{annealing.sigma_min:.3g} (highest sigma {sigma.max():.3g}) after num_steps="
            f"{annealing.num_steps} at mean acceptance {rate.mean():.2f}: their samples are broader "
            f"than the posterior; raise num_steps (reaching sigma_min takes "
            f"{annealing.num_accepted_needed} accepted moves) or lower the step size"
        )
    if rate.size and rate.mean() < min_acceptance:
        messages.append(
            f"the HMC acceptance rate collapsed to {rate.mean():.3g} (min {rate.min():.3g}) below "
            f"{min_acceptance:.3g}: the step size is too large for the posterior's smallest scale; "
            "lower HMCConfig.step_size (or raise step_size_exponent)"
        )
    if warn:
        for message in messages:
            warnings.warn(message, AnnealingWarning, stacklevel=2)
    return messages


def annealed_posterior_sample(
    key: Array,
    score_fn: ScoreFn,
    forward_op: Operator,
    adjoint_op: Operator,
    noise: AbstractNoise,
    y: Array,
    *,
    num_chains: int = 16,
    annealing: AnnealingConfig = _DEFAULT_ANNEALING,
    hmc: HMCConfig = _DEFAULT_HMC,
    ode: ODEConfig = _DEFAULT_ODE,
    init_position: Array | None = None,
    preconditioner: FourierPreconditioner | None = None,
    progress_fn: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    progress_every: int = 100,
) -> tuple[Array, AnnealedSampleInfo]:
    """Draw posterior samples of `x` given `y = A x + n`, `n ~ N(0, Sigma)`, for a prior known only
    through its score, by annealed HMC followed by the probability-flow ODE (Remy, Lanusse et al. 2022).

    Each chain samples `pi_sigma(x) ∝ p_sigma(x) N(y; A x, Sigma + sigma^2 I)` with HMC (identity mass
    or `preconditioner`, `hmc.num_integration_steps` leapfrog steps of size
    `hmc.step_size (sigma / sigma_init)^hmc.step_size_exponent`), multiplies its own `sigma` by
    `annealing.sigma_decay` after every accepted move down to `annealing.sigma_min`, and after
    `annealing.num_steps` transitions is carried from its `sigma` to `ode.sigma_end` by the
    probability-flow ODE of the annealed posterior score. The likelihood's `sigma^2 I` is exact for
    `A A^T = I` and an approximation otherwise (see `jscore.annealed_log_likelihood`). The Metropolis
    test uses the exact likelihood and the line integral of the prior score along the proposal
    (`jscore.score_line_integral`).

    The defaults are the reference's settings, in its map units (see `jscore.AnnealingConfig`): scale
    `sigma_init`, `sigma_min` and `step_size` with your data. Called eagerly, the run is checked by
    `jscore.diagnose_annealing` (an `AnnealingWarning` when chains stop above `sigma_min` or the
    acceptance collapses); under `jax.jit`, call it on the returned `info`.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `score_fn`: prior score `s(x, sigma) = grad log p_sigma(x)` for one field (e.g.
      `jscore.GaussianFieldPrior(...).score` or a trained network).
    - `forward_op`, `adjoint_op`: `x -> A x` and `y -> A^T y` for one field.
    - `noise`: the noise model (`jscore.DiagonalNoise`, `jscore.FourierNoise`).
    - `y`: the observed data, shaped like `forward_op`'s output; entries with infinite noise
      variance may be NaN (they carry no information).
    - `num_chains`: independent chains, vmapped (static).
    - `annealing`: the schedule, a `jscore.AnnealingConfig` (`sigma_init`, `sigma_min`,
      `sigma_decay`, `num_steps`).
    - `hmc`: the transitions, a `jscore.HMCConfig` (`step_size`, `step_size_exponent`,
      `num_integration_steps`, `num_quadrature_points`).
    - `ode`: the final probability-flow ODE, a `jscore.ODEConfig` (`num_steps`, `sigma_end`;
      `sigma_end` must not exceed `annealing.sigma_min`).
    - `init_position`: one field or one per chain (`(num_chains, *field_shape)`); default zeros.
    - `preconditioner`: `None` (identity mass; chains start at `init_position + sigma_init z`) or a
      `jscore.FourierPreconditioner`: a mass matrix with one scale per Fourier mode at every `sigma`
      (`hmc.step_size` is then in units of those scales), and chains start at `init_position +
      D(sigma_init)^(1/2) z`. Needed for posteriors whose scales span orders of magnitude (red
      spectra, masks): with the identity mass their largest modes do not converge.
    - `progress_fn`: optional host callback `progress_fn(step, sigma, num_accepted)` called every
      `progress_every` steps (and after the last) with the step count and the chains' current `sigma`
      and accepted-move counts as NumPy arrays, e.g. to print or log progress of long runs (it runs
      through `jax.debug.callback`, also under `jax.jit`).
    - `progress_every`: steps between calls of `progress_fn` (static).

    **Returns:**

    `(samples, info)`: samples of shape `(num_chains, *field_shape)` and an `AnnealedSampleInfo`.
    """
    for name, value, cls in (
        ("annealing", annealing, AnnealingConfig),
        ("hmc", hmc, HMCConfig),
        ("ode", ode, ODEConfig),
    ):
        if not isinstance(value, cls):
            raise TypeError(f"{name} must be a jscore.{cls.__name__}, got {type(value).__name__}")
    if ode.sigma_end > annealing.sigma_min:
        raise ValueError(
            f"ODEConfig.sigma_end={ode.sigma_end!r} exceeds AnnealingConfig.sigma_min="
            f"{annealing.sigma_min!r}: the ODE would add noise back; need sigma_end <= sigma_min"
        )
    x_struct = _check_problem(score_fn, forward_op, adjoint_op, noise, y)
    num_chains = check_int("num_chains", num_chains, minimum=1)
    progress_every = check_int("progress_every", progress_every, minimum=1)
    if preconditioner is not None:
        needed = ("apply_inverse_mass", "apply_sqrt_mass", "apply_sqrt_inverse_mass")
        if not all(callable(getattr(preconditioner, name, None)) for name in needed):
            raise TypeError(
                "preconditioner must be None or a jscore.FourierPreconditioner (an object with "
                f"the methods {', '.join(needed)}), got {type(preconditioner).__name__}"
            )
        if tuple(getattr(preconditioner, "shape", x_struct.shape)) != tuple(x_struct.shape):
            raise ValueError(
                f"preconditioner is defined on fields of shape {tuple(preconditioner.shape)} but "
                f"the fields have shape {tuple(x_struct.shape)}"
            )
    if progress_fn is not None and not callable(progress_fn):
        raise TypeError(f"progress_fn must be callable or None, got {progress_fn!r}")
    num_steps = annealing.num_steps

    dtype = x_struct.dtype
    field_shape = x_struct.shape
    y = prepare_data(noise, jnp.asarray(y, dtype))
    if init_position is None:
        init_position = jnp.zeros(field_shape, dtype)
    init_position = jnp.asarray(init_position, dtype)
    if init_position.shape == field_shape:
        init_position = jnp.broadcast_to(init_position, (num_chains, *field_shape))
    elif init_position.shape != (num_chains, *field_shape):
        raise ValueError(
            f"init_position must have shape {field_shape} or {(num_chains, *field_shape)}, "
            f"got {init_position.shape}"
        )

    log_likelihood = annealed_log_likelihood(forward_op, adjoint_op, noise, y)
    sigma_init = jnp.asarray(annealing.sigma_init, dtype)

    def step_one(key, state):
        eps = hmc.step_size * (state.sigma / sigma_init) ** hmc.step_size_exponent
        return annealed_hmc_step(
            key,
            state,
            score_fn,
            log_likelihood,
            step_size=eps,
            num_integration_steps=hmc.num_integration_steps,
            num_quadrature_points=hmc.num_quadrature_points,
            sigma_decay=annealing.sigma_decay,
            sigma_min=annealing.sigma_min,
            preconditioner=preconditioner,
        )

    def report(step, sigma, num_accepted):
        progress_fn(int(step), np.asarray(sigma), np.asarray(num_accepted))

    def body(carry, inputs):
        states, num_accepted = carry
        step, key = inputs
        keys = jax.random.split(key, num_chains)
        states, info = jax.vmap(step_one)(keys, states)
        num_accepted = num_accepted + info.is_accepted.astype(jnp.int32)
        if progress_fn is not None:
            due = ((step + 1) % progress_every == 0) | (step + 1 == num_steps)
            jax.lax.cond(
                due,
                lambda: jax.debug.callback(report, step + 1, states.sigma, num_accepted),
                lambda: None,
            )
        return (states, num_accepted), None

    key_init, key_run = jax.random.split(key)
    spread = jax.random.normal(key_init, init_position.shape, dtype)
    if preconditioner is None:
        start = init_position + sigma_init * spread
    else:
        start = init_position + jax.vmap(
            lambda z: preconditioner.apply_sqrt_inverse_mass(z, sigma_init)
        )(spread)
    states = AnnealedHMCState(start, jnp.full((num_chains,), sigma_init, dtype))
    carry = (states, jnp.zeros((num_chains,), jnp.int32))
    inputs = (jnp.arange(num_steps), jax.random.split(key_run, num_steps))
    (states, num_accepted), _ = jax.lax.scan(body, carry, inputs)

    def posterior_score(x, sigma):
        return score_fn(x, sigma) + log_likelihood(x, sigma)[1]

    if ode.num_steps > 0:
        flow = jax.vmap(
            lambda x, s: probability_flow_ode(
                posterior_score, x, s, ode.sigma_end, num_steps=ode.num_steps
            )
        )
        samples = flow(states.position, states.sigma)
    else:
        samples = states.position
    rate = num_accepted.astype(dtype) / max(num_steps, 1)
    info = AnnealedSampleInfo(states.sigma, rate, num_accepted, states.position)
    if not isinstance(info.sigma, jax.core.Tracer) and num_steps > 0:
        diagnose_annealing(info, annealing)
    return samples, info


def posterior_map(
    score_fn: ScoreFn,
    forward_op: Operator,
    adjoint_op: Operator,
    noise: AbstractNoise,
    y: Array,
    *,
    num_steps: int = 1000,
    step_size: float | Array = 1e-3,
    sigma_init: float | Array = 0.15,
    sigma_final: float | Array = 1e-3,
    momentum: float = 0.0,
    init_position: Array | None = None,
) -> Array:
    """Maximum a posteriori field by gradient ascent on the annealed posterior score
    `s(x, sigma) + A^T (Sigma + sigma^2 I)^-1 (y - A x)`, with `sigma` lowered geometrically from
    `sigma_init` to `sigma_final` over the run (annealing smooths the start for learned priors; use
    `sigma_init = sigma_final` for a fixed level).

    **Arguments:**

    - `score_fn`, `forward_op`, `adjoint_op`, `noise`, `y`: as in `annealed_posterior_sample`
      (NaN allowed where the noise variance is infinite).
    - `num_steps`: gradient-ascent steps (static).
    - `step_size`: learning rate; stable below `2 / lambda_max` of the posterior Hessian at `sigma_final`.
    - `sigma_init`, `sigma_final`: ends of the geometric schedule (positive).
    - `momentum`: heavy-ball momentum in [0, 1) (0 = plain gradient ascent).
    - `init_position`: starting field; default `A^T y`.

    **Returns:**

    The MAP estimate, one field.
    """
    x_struct = _check_problem(score_fn, forward_op, adjoint_op, noise, y)
    num_steps = check_int("num_steps", num_steps, minimum=1)
    check_scalar("step_size", step_size, low=0.0)
    check_scalar("sigma_init", sigma_init, low=0.0)
    check_scalar("sigma_final", sigma_final, low=0.0)
    check_scalar("momentum", momentum, low=0.0, low_open=False, high=1.0, high_open=True)
    dtype = x_struct.dtype
    y = prepare_data(noise, jnp.asarray(y, dtype))
    x = adjoint_op(y) if init_position is None else jnp.asarray(init_position, dtype)
    if x.shape != x_struct.shape:
        raise ValueError(f"init_position must have shape {x_struct.shape}, got {x.shape}")
    log_likelihood = annealed_log_likelihood(forward_op, adjoint_op, noise, y)
    log_ratio = jnp.log(jnp.asarray(sigma_final, dtype) / jnp.asarray(sigma_init, dtype))
    denominator = max(num_steps - 1, 1)

    def body(i, carry):
        x, v = carry
        sigma = jnp.asarray(sigma_init, dtype) * jnp.exp(log_ratio * i / denominator)
        g = score_fn(x, sigma) + log_likelihood(x, sigma)[1]
        v = momentum * v + step_size * g
        return x + v, v

    x, _ = jax.lax.fori_loop(0, num_steps, body, (x, jnp.zeros_like(x)))
    return x
