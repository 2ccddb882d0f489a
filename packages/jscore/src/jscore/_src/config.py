"""Configuration objects of the annealed posterior sampler: small frozen, hashable dataclasses whose
fields are validated when they are built (static under `jax.jit`)."""

from __future__ import annotations

import dataclasses
import math

from ._checks import check_float, check_int


@dataclasses.dataclass(frozen=True)
class AnnealingConfig:
    """The geometric annealing schedule of `jscore.annealed_posterior_sample`.

    Every chain starts at `sigma_init` and multiplies its own `sigma` by `sigma_decay` after each
    accepted HMC move, down to `sigma_min`, for `num_steps` transitions. Reaching `sigma_min` takes
    `num_accepted_needed = ceil(log(sigma_init / sigma_min) / -log(sigma_decay))` accepted moves, so
    `num_steps` must be at least that (with an acceptance rate `a`, plan for about
    `num_accepted_needed / a` steps; `jscore.diagnose_annealing` warns when chains stop short).

    The defaults are the reference's settings (Remy, Lanusse et al. 2022), in its map units
    (convergence maps with pixel values of order 0.01-0.1): `sigma_init` should exceed the largest
    posterior standard deviation (chains start at `init_position + sigma_init * z`), and `sigma_min`
    should be well below the smallest posterior standard deviation you care about.

    **Arguments:**

    - `sigma_init`: the starting noise level, positive.
    - `sigma_min`: the final noise level, `0 < sigma_min <= sigma_init` (a larger value would anneal
      upward: `ValueError`).
    - `sigma_decay`: factor per accepted move, in `(0, 1)` (or exactly 1 with
      `sigma_min == sigma_init`: HMC at a fixed level).
    - `num_steps`: HMC transitions per chain (static), at least `num_accepted_needed`.
    """

    sigma_init: float = 0.15
    sigma_min: float = 8e-3
    sigma_decay: float = 0.98
    num_steps: int = 1000

    def __post_init__(self):
        sigma_init = check_float("AnnealingConfig.sigma_init", self.sigma_init, low=0.0)
        sigma_min = check_float("AnnealingConfig.sigma_min", self.sigma_min, low=0.0)
        decay = check_float("AnnealingConfig.sigma_decay", self.sigma_decay, low=0.0, high=1.0)
        num_steps = check_int("AnnealingConfig.num_steps", self.num_steps, minimum=0)
        if sigma_min > sigma_init:
            raise ValueError(
                f"AnnealingConfig.sigma_min={sigma_min!r} exceeds sigma_init={sigma_init!r}: the "
                "schedule would anneal upward; need sigma_min <= sigma_init"
            )
        if decay == 1.0 and sigma_min < sigma_init:
            raise ValueError(
                f"AnnealingConfig.sigma_decay=1.0 never lowers sigma from sigma_init={sigma_init!r} "
                f"to sigma_min={sigma_min!r}; use a decay below 1 or sigma_min == sigma_init"
            )
        object.__setattr__(self, "sigma_init", sigma_init)
        object.__setattr__(self, "sigma_min", sigma_min)
        object.__setattr__(self, "sigma_decay", decay)
        object.__setattr__(self, "num_steps", num_steps)
        needed = self.num_accepted_needed
        if num_steps < needed:
            reached = sigma_init * decay**num_steps
            raise ValueError(
                f"AnnealingConfig.num_steps={num_steps} is too few to reach sigma_min={sigma_min!r}: "
                f"from sigma_init={sigma_init!r} with sigma_decay={decay!r} it takes {needed} accepted "
                f"moves (the chains would stop at sigma >= {reached:.3g} even if every move were "
                "accepted); raise num_steps or lower sigma_decay"
            )

    @property
    def num_accepted_needed(self) -> int:
        """Accepted moves needed to go from `sigma_init` down to `sigma_min`."""
        if self.sigma_min >= self.sigma_init:
            return 0
        ratio = math.log(self.sigma_init / self.sigma_min) / -math.log(self.sigma_decay)
        return math.ceil(ratio - 1e-9)


@dataclasses.dataclass(frozen=True)
class HMCConfig:
    """The HMC transitions of `jscore.annealed_posterior_sample` (identity mass matrix, leapfrog).

    **Arguments:**

    - `step_size`: the leapfrog step size at `sigma_init`, positive; at noise level `sigma` the step
      is `step_size * (sigma / sigma_init) ** step_size_exponent`.
    - `step_size_exponent`: that power law's exponent (0 for a fixed step).
    - `num_integration_steps`: leapfrog steps per proposal, >= 1 (static).
    - `num_quadrature_points`: nodes of the line integral of the prior score in the Metropolis test:
      2 (trapezoid) or an odd number >= 3 (composite Simpson); see `jscore.score_line_integral`.
    """

    step_size: float = 0.01
    step_size_exponent: float = 0.5
    num_integration_steps: int = 3
    num_quadrature_points: int = 3

    def __post_init__(self):
        object.__setattr__(
            self, "step_size", check_float("HMCConfig.step_size", self.step_size, low=0.0)
        )
        object.__setattr__(
            self,
            "step_size_exponent",
            check_float("HMCConfig.step_size_exponent", self.step_size_exponent),
        )
        object.__setattr__(
            self,
            "num_integration_steps",
            check_int("HMCConfig.num_integration_steps", self.num_integration_steps, minimum=1),
        )
        points = check_int("HMCConfig.num_quadrature_points", self.num_quadrature_points, minimum=2)
        if points != 2 and points % 2 == 0:
            raise ValueError(
                "HMCConfig.num_quadrature_points must be 2 (trapezoid) or an odd number >= 3 "
                f"(Simpson), got {points!r}"
            )
        object.__setattr__(self, "num_quadrature_points", points)


@dataclasses.dataclass(frozen=True)
class ODEConfig:
    """The final probability-flow ODE of `jscore.annealed_posterior_sample`, which carries each chain
    from the `sigma` it reached down to `sigma_end`.

    **Arguments:**

    - `num_steps`: Heun steps (0 skips the ODE; static).
    - `sigma_end`: where the ODE stops, `0 <= sigma_end <= sigma_min` of the annealing (checked by
      the sampler). At `sigma_end = 0` the score is never evaluated at 0 (the vector field
      `-sigma s(x, sigma)` is taken as its limit 0 there), so learned priors that divide by `sigma`
      are safe.
    """

    num_steps: int = 16
    sigma_end: float = 0.0

    def __post_init__(self):
        object.__setattr__(
            self, "num_steps", check_int("ODEConfig.num_steps", self.num_steps, minimum=0)
        )
        object.__setattr__(
            self,
            "sigma_end",
            check_float("ODEConfig.sigma_end", self.sigma_end, low=0.0, low_open=False),
        )
