"""Two-moons C2ST against the number of simulations, with and without the score term.

Not run by the tests. Two setups (`--setup`):

- `posterior` (default; the setup of the reference numbers, Zeghal et al. 2022): an unconditional
  smooth flow is fitted to `n` exact samples of the two-moons posterior `p(theta | x_o)`
  (`jflows.two_moons_reference_posterior`, `x_o = (0, 0)`) and, with the score term, to their exact
  scores `∇_theta log p(theta | x_o)` (= `∇_theta log p(x_o | theta)` inside the prior box);
- `npe`: amortised neural posterior estimation, a conditional flow `q(theta | x)` fitted to `n`
  simulations `(theta, x, joint score)` from the prior (`jflows.two_moons_simulate`), evaluated at
  `x_o` (a much harder problem at small `n`: few simulations land near `x_o`).

`--model affine` replaces the smooth flow by a distrax RealNVP (affine couplings, Gaussian base):
the baseline whose log-density gradients are too poor for the score term to help.

Every fit (`--steps` Adam steps, cosine-decayed learning rate, no early stopping) is followed by
`--n-eval` samples of the fitted posterior and of the exact one, compared by `jflows.c2st`
(0.5: indistinguishable). One JSON line per (seed, budget, weight) is appended to `--out` (runs
already there are skipped, so an interrupted grid resumes); the median table (markdown) and a JSON
summary are printed at the end (`--table-only` prints them from `--out` without running):

    nice -n 10 python packages/jflows/benchmarks/two_moons.py --out runs.jsonl
    python packages/jflows/benchmarks/two_moons.py --out runs.jsonl --table-only
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jflows

#: Zeghal et al. 2022 (10 seeds; with score, without): ../shared/SCIENCE.md
REFERENCE = {
    20: (0.759, 0.818),
    50: (0.699, 0.748),
    100: (0.655, 0.681),
    200: (0.611, 0.635),
    500: (0.583, 0.590),
    1000: (0.576, 0.582),
}


def _posterior_score(theta):
    x_o = jnp.asarray(jflows.TWO_MOONS_X_OBS, theta.dtype)
    return jax.vmap(jax.grad(jflows.two_moons_log_likelihood), (0, None))(theta, x_o)


def _data(setup, key, n):
    if setup == "posterior":
        theta = jflows.two_moons_reference_posterior(key, n)
        return theta, None, _posterior_score(theta)
    return jflows.two_moons_simulate(key, n)


def _fit_smooth(args, seed, theta, x, score, weight, key):
    context_dim = 0 if x is None else 2
    flow = jflows.ConditionalFlow(
        2,
        context_dim,
        rngs=nnx.Rngs(seed),
        box=(-1.0, 1.0),
        hidden=tuple(args.hidden),
        num_layers=args.layers,
        transform=jflows.SigmoidMixture(args.components),
    )
    n = theta.shape[0]
    batch = min(args.batch_size, n)
    epochs = max(1, args.steps // (n // batch))
    schedule = optax.cosine_decay_schedule(args.learning_rate, epochs * (n // batch))
    trained, _ = jflows.fit(
        key,
        flow,
        theta,
        x,
        score if weight > 0 else None,
        score_weight=weight if weight > 0 else None,
        learning_rate=schedule,
        batch_size=batch,
        max_epochs=epochs,
        validation_fraction=0.0,
        progress=False,
    )
    x_o = None if x is None else jnp.asarray(jflows.TWO_MOONS_X_OBS, theta.dtype)
    return lambda key, n: trained.sample(key, x_o, n=n)


def _fit_affine(args, seed, theta, score, weight, key):
    """A distrax RealNVP baseline (unconditional): affine couplings, standard normal base."""
    import distrax

    loc, scale = jflows.standardisation(theta)
    loc, scale = jnp.asarray(loc, theta.dtype), jnp.asarray(scale, theta.dtype)
    u, u_score = (theta - loc) / scale, score * scale  # scores transform with the Jacobian
    width = args.hidden[0]

    def init(key):
        params = []
        for k in jax.random.split(key, 2 * args.layers):
            k1, k2 = jax.random.split(k)
            params.append(
                {
                    "w1": jax.random.normal(k1, (2, width)) / 2**0.5,
                    "b1": jnp.zeros(width),
                    "w2": jax.random.normal(k2, (width, width)) / width**0.5,
                    "b2": jnp.zeros(width),
                    "w3": jnp.zeros((width, 2)),
                    "b3": jnp.zeros(2),
                }
            )
        return params

    def dist(params):
        layers = []
        for i, p in enumerate(params):
            mask = jnp.array([i % 2 == 0, i % 2 == 1])

            def conditioner(v, p=p):
                h = jax.nn.silu(v @ p["w1"] + p["b1"])
                h = jax.nn.silu(h @ p["w2"] + p["b2"])
                return h @ p["w3"] + p["b3"]

            def bijector(out):
                return distrax.ScalarAffine(shift=out[..., 0], log_scale=jnp.tanh(out[..., 1]) * 3)

            layers.append(
                distrax.MaskedCoupling(mask=mask, conditioner=conditioner, bijector=bijector)
            )
        base = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
        return distrax.Transformed(base, distrax.Chain(layers))

    def loss(params, u, s):
        def lp(v):
            return dist(params).log_prob(v)

        log_q, grad_q = jax.vmap(jax.value_and_grad(lp))(u)
        return -jnp.mean(log_q) + weight * jnp.mean(jnp.sum((grad_q - s) ** 2, -1))

    # the affine flow has 2 outputs per coordinate, the coupling conditioner sees the masked half
    params = init(jax.random.key(seed))
    n = theta.shape[0]
    batch = min(args.batch_size, n)
    tx = optax.adam(optax.cosine_decay_schedule(args.learning_rate, args.steps))
    state = tx.init(params)

    @jax.jit
    def step(params, state, idx):
        grads = jax.grad(loss)(params, u[idx], u_score[idx])
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for k in jax.random.split(key, args.steps):
        params, state = step(params, state, jax.random.choice(k, n, (batch,), replace=False))
    return lambda key, m: dist(params).sample(seed=key, sample_shape=(m,)) * scale + loc


def run(args, budget, weight, seed):
    k_data, k_fit, k_sample, k_ref, k_c2st = jax.random.split(jax.random.key(seed), 5)
    theta, x, score = _data(args.setup, k_data, budget)
    start = time.perf_counter()
    if args.model == "smooth":
        sampler = _fit_smooth(args, seed, theta, x, score, weight, k_fit)
    else:
        if args.setup != "posterior":
            raise ValueError("--model affine is implemented for --setup posterior only")
        sampler = _fit_affine(args, seed, theta, score, weight, k_fit)
    fit_s = time.perf_counter() - start
    q = sampler(k_sample, args.n_eval)
    p = jflows.two_moons_reference_posterior(k_ref, args.n_eval)
    q = jnp.where(jnp.isfinite(q), q, 0.0)  # a diverged affine fit must not crash the table
    return {
        "setup": args.setup,
        "model": args.model,
        "budget": budget,
        "score_weight": weight,
        "seed": seed,
        "c2st": round(jflows.c2st(k_c2st, p, q).accuracy, 4),
        "fit_seconds": round(fit_s, 1),
    }


def table(rows):
    """Markdown table of the median C2ST per budget (and a JSON-able summary)."""
    summary = {}
    for row in rows:
        key = (row["setup"], row["model"], row["budget"], row["score_weight"] > 0)
        summary.setdefault(key, []).append(row["c2st"])
    groups = sorted({k[:2] for k in summary})
    lines, out = [], []
    for setup, model in groups:
        lines += [
            f"\n{setup} / {model}: median C2ST (seeds) [reference with / without score]\n",
            "| simulations | NLL + score | NLL only | reference: with score | without |",
            "| --- | --- | --- | --- | --- |",
        ]
        budgets = sorted({k[2] for k in summary if k[:2] == (setup, model)})
        for b in budgets:
            cells = []
            for with_score in (True, False):
                vals = summary.get((setup, model, b, with_score), [])
                med = float(np.median(vals)) if vals else float("nan")
                cells.append(f"{med:.3f} ({len(vals)})" if vals else "-")
                out.append(
                    {
                        "setup": setup,
                        "model": model,
                        "budget": b,
                        "score": with_score,
                        "median_c2st": round(med, 4),
                        "seeds": len(vals),
                        "c2st": vals,
                    }
                )
            ref = REFERENCE.get(b, (float("nan"), float("nan")))
            lines.append(f"| {b} | {cells[0]} | {cells[1]} | {ref[0]:.3f} | {ref[1]:.3f} |")
    return "\n".join(lines), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=("posterior", "npe"), default="posterior")
    parser.add_argument("--model", choices=("smooth", "affine"), default="smooth")
    parser.add_argument("--budgets", type=int, nargs="+", default=[20, 50, 100, 200, 1000])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    # the posterior scores are O(100) (the moons are 0.01 thin): lambda * |score|^2 ~ NLL at 1e-4
    parser.add_argument("--score-weight", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--n-eval", type=int, default=4000)
    parser.add_argument("--out", default="two_moons_runs.jsonl")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()

    rows = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    if not args.table_only:
        done = {(r["setup"], r["model"], r["budget"], r["score_weight"], r["seed"]) for r in rows}
        for seed in args.seeds:  # seed-major: an interrupted grid still covers every budget
            for budget in args.budgets:
                for weight in (args.score_weight, 0.0):
                    if (args.setup, args.model, budget, weight, seed) in done:
                        continue
                    row = run(args, budget, weight, seed)
                    rows.append(row)
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    text, summary = table(rows)
    print(text)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
