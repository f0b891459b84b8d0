"""Synthetic IsoFLOP studies drawn from a known law, for tests, benchmarks and examples.

Each budget C gets ``per_budget`` model sizes log-spaced over a ``spread``-fold range centred on
the law's N*(C) (Hoffmann et al. 2022, eq. 4), D = C / (6N), and loss
L = L(N, D) * exp(noise * eps), eps ~ N(0, 1): multiplicative noise, i.e. additive on log L,
the scale the Approach 3 residual lives on.
"""

from __future__ import annotations

import numpy as np

from raylm.scaling.data import ScalingData
from raylm.scaling.laws import BESIROGLU_2024, ChinchillaLaw, tokens_for_budget

DEFAULT_BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)  # the Chinchilla IsoFLOP budgets


def synthetic_isoflop(
    law: ChinchillaLaw = BESIROGLU_2024,
    budgets=DEFAULT_BUDGETS,
    *,
    per_budget: int = 9,
    spread: float = 16.0,
    noise: float = 0.005,
    seed: int = 0,
) -> ScalingData:
    """Runs on IsoFLOP lines around the law's optimum with log-normal loss noise; reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    c = np.repeat(np.asarray(budgets, dtype=float), per_budget)
    offsets = np.tile(np.linspace(-0.5, 0.5, per_budget) * np.log(spread), len(budgets))
    n = law.optimal_params(c) * np.exp(offsets)
    d = tokens_for_budget(c, n)
    loss = law.loss(n, d) * np.exp(noise * rng.standard_normal(c.size))
    return ScalingData.from_arrays(n, d, loss, c, source="synthetic")
