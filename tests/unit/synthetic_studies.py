"""Synthetic studies with a known answer: training curves from a Chinchilla law, and a pure-frontier world.

For tests, benchmarks and the coverage check of :mod:`raylm.scaling.predict.recommend`.

- :func:`synthetic_curves`: IsoFLOP runs as in :func:`raylm.scaling.synthetic.synthetic_isoflop`, each
  with a training curve L(N, D_t) (Hoffmann et al. 2022, eq. 2) times one noise factor per run (a seed
  moves a whole curve) and optional per-point evaluation noise. The curve is what a run of each length
  would reach (an idealised constant-then-decayed schedule): the envelope of Approach 1 is unbiased here,
  unlike on real cosine curves (see :mod:`raylm.scaling.fit.approach1`).
- :func:`synthetic_frontier`: loss = E + (C0/C)^gamma + kappa (ln N - ln N*(C))^2 with N*(C) = k C^a:
  the frontier law and Approach 2's parabolas are exact, and the Chinchilla law of Approach 3 is not
  (its valley's curvature shrinks with the reducible loss; this one's does not).
"""

from __future__ import annotations

import numpy as np

from raylm.scaling.curves import CurveData
from raylm.scaling.data import ScalingData
from raylm.scaling.laws import ChinchillaLaw, tokens_for_budget


def _isoflop_sizes(n_opt: np.ndarray, budgets, per_budget: int, spread: float, offset: float):
    """(C, N) of ``per_budget`` sizes per budget, log-spaced over ``spread``, centred on offset x N*(C)."""
    c = np.repeat(np.asarray(budgets, dtype=float), per_budget)
    steps = np.tile(np.linspace(-0.5, 0.5, per_budget) * np.log(spread), len(budgets))
    return c, np.repeat(n_opt, per_budget) * offset * np.exp(steps)


def synthetic_curves(
    law: ChinchillaLaw,
    budgets,
    *,
    per_budget: int = 5,
    spread: float = 16.0,
    noise: float = 0.005,
    eval_noise: float = 0.0,
    points: int = 20,
    seed: int = 0,
) -> tuple[ScalingData, CurveData]:
    """(final losses, curves) of an IsoFLOP grid around the law's optimum; curve j of ``points`` at D j/points."""
    rng = np.random.default_rng(seed)
    c, n = _isoflop_sizes(law.optimal_params(np.asarray(budgets, dtype=float)), budgets, per_budget, spread, 1.0)
    d = tokens_for_budget(c, n)
    run_factor = np.exp(noise * rng.standard_normal(c.size))
    frac = np.arange(1, points + 1) / points
    tokens = d[:, None] * frac[None, :]
    loss = law.loss(n[:, None], tokens) * run_factor[:, None] * np.exp(eval_noise * rng.standard_normal(tokens.shape))
    run = np.repeat([f"run{i:03d}" for i in range(c.size)], points)
    curves = CurveData.from_arrays(run, np.repeat(n, points), tokens.ravel(), loss.ravel(), source="synthetic")
    final = ScalingData.from_arrays(n, d, loss[:, -1], c, source="synthetic")
    return final, curves


def synthetic_frontier(
    budgets,
    *,
    E: float = 2.0,
    C0: float = 1e9,
    gamma: float = 0.12,
    a: float = 0.5,
    k_n: float = 0.1,
    curvature: float = 0.02,
    per_budget: int = 5,
    spread: float = 16.0,
    offset: float = 1.0,
    noise: float = 0.005,
    seed: int = 0,
) -> ScalingData:
    """Runs of a world where L*(C) = E + (C0/C)^gamma exactly and the IsoFLOP valleys are parabolas in ln N.

    Sizes are log-spaced over ``spread`` around ``offset`` x N*(C), N*(C) = k_n C^a; noise is log-normal.
    """
    rng = np.random.default_rng(seed)
    b = np.asarray(budgets, dtype=float)
    c, n = _isoflop_sizes(k_n * b**a, budgets, per_budget, spread, offset)
    n_opt = k_n * c**a
    loss = E + (C0 / c) ** gamma + curvature * np.log(n / n_opt) ** 2
    loss = loss * np.exp(noise * rng.standard_normal(c.size))
    return ScalingData.from_arrays(n, tokens_for_budget(c, n), loss, c, source="synthetic")


def frontier_optimum(budgets, *, E: float = 2.0, C0: float = 1e9, gamma: float = 0.12) -> np.ndarray:
    """The true L*(C) of :func:`synthetic_frontier` with the same parameters."""
    return E + (C0 / np.asarray(budgets, dtype=float)) ** gamma


def random_chinchilla_study(seed: int, budgets=(1e18, 3e18, 1e19), *, per_budget: int = 5,
                            spreads=(16.0, 64.0), noise=(0.005, 0.01), max_offset: float = 2.5,
                            target_ratio=(3.0, 10.0)):
    """(data, law, target) of one random study: the coverage check of docs/scaling.md.

    A law with E in [1.5, 2.5], A in [200, 600], B in [400, 3000], alpha and beta in [0.28, 0.42];
    ``per_budget`` sizes per budget over a spread drawn from ``spreads`` (16: +-4x, 64: +-8x), centred
    within a factor ``max_offset`` of N*(C); log-normal noise drawn from ``noise``; a target drawn
    log-uniformly ``target_ratio`` times above the largest budget.
    """
    rng = np.random.default_rng(10_000 + seed)
    law = ChinchillaLaw(E=rng.uniform(1.5, 2.5), A=rng.uniform(200, 600), B=rng.uniform(400, 3000),
                        alpha=rng.uniform(0.28, 0.42), beta=rng.uniform(0.28, 0.42))
    offset = np.exp(rng.uniform(-np.log(max_offset), np.log(max_offset)))
    c, n = _isoflop_sizes(law.optimal_params(np.asarray(budgets, dtype=float)), budgets, per_budget,
                          float(rng.choice(spreads)), offset)
    d = tokens_for_budget(c, n)
    loss = law.loss(n, d) * np.exp(rng.uniform(*noise) * rng.standard_normal(c.size))
    target = float(max(budgets) * np.exp(rng.uniform(np.log(target_ratio[0]), np.log(target_ratio[1]))))
    return ScalingData.from_arrays(n, d, loss, c, source="synthetic"), law, target
