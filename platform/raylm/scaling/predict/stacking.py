"""The recommendation rule: stack the predictors with weights learnt from the study's own backtests.

No single predictor wins on every real ladder (docs/scaling.md: the Chinchilla law over-predicts
some, a pure power law under-predicts all, a free floor is the best on one and the worst on
another). So the weights come from the data at hand: the leave-future-out records of the study's
own budgets (:mod:`raylm.scaling.backtest.leave_future_out`: fit up to each earlier cut, predict the later
budgets it already measured). The rule, in order:

1. With :data:`MIN_STACK_CASES`+ cases (a cut and a later budget) where every component predicted,
   the recommendation is ``stacked``: the convex combination of the components' log predictions,
   ln L = sum_k w_k ln L_k with w_k >= 0 and sum w_k = 1, whose weights minimise the squared log
   errors over those cases (stacked generalisation, Wolpert 1992; Breiman 1996, "Stacked
   regressions", non-negative weights). N* is the same weighted geometric mean of the components'
   N*. Components are the predictors available at the targets, dropped one at a time (the one with
   the fewest records first) until enough cases remain.
2. With fewer cases (a study of three budgets has one), the first available predictor in
   :data:`~raylm.scaling.predict.predictors.APPROACHES` (the frontier with its exponent pinned first: on
   every public ladder its max error at 3-10x and 30-100x is below the pinned-floor frontier's,
   docs/scaling.md). One case does not choose: on 100 synthetic
   Chinchilla studies of three budgets, picking by the smallest error on it chose the pure power law,
   biased low by construction, 30 times.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from raylm.scaling.backtest.leave_future_out import Record
from raylm.scaling.predict.predictors import APPROACHES

MIN_STACK_CASES = 3
STACKED = "stacked"


@dataclass(frozen=True)
class Choice:
    """What the rule recommends: ``approach`` (``"stacked"`` or one predictor), its weights and why."""

    approach: str | None
    weights: dict[str, float]
    reason: str
    cases: int
    scale: float = float("nan")  # RMS over the cases of ln(pred/actual) / ln(1 + ratio), every component
    errors: dict[str, float] = field(default_factory=dict)  # RMS log error per component over the cases

    def combine(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """The weighted geometric mean of ``values[k]`` (any shape) over the weights."""
        return np.exp(sum(w * np.log(np.asarray(values[k], dtype=float)) for k, w in self.weights.items()))

    def as_dict(self) -> dict:
        return {"approach": self.approach, "weights": self.weights, "reason": self.reason, "cases": self.cases,
                "scale": self.scale, "rms_log_error": self.errors}


def choose(records: list[Record], available: list[str]) -> Choice:
    """The rule of the module docstring, on ``records`` (earlier cuts, budgets measured) and ``available``."""
    components = [k for k in APPROACHES if k in available]
    if not components:
        return Choice(None, {}, "no predictor is available", 0)
    table = case_table(records)
    for size in range(len(components), 0, -1):
        comps, cases = _best_subset(table, components, size)
        if len(cases) >= MIN_STACK_CASES and size >= 2:
            return _stack(table, comps, cases)
    with_records = {k: [c for c in table if k in table[c]] for k in components}
    scored = {k: _rms(table, [k], v) for k, v in with_records.items() if v}
    n = max((len(v) for v in with_records.values()), default=0)
    first = components[0]
    if scored:
        errors = ", ".join(f"{k} {v:.2%}" for k, v in scored.items())
        return Choice(first, {first: 1.0}, f"{n} backtest case(s), fewer than the {MIN_STACK_CASES} stacking needs "
                      f"(RMS log errors there: {errors}): first available in the order {', '.join(APPROACHES)}",
                      n, _scale(table, list(scored), [c for c in table if all(k in table[c] for k in scored)]),
                      scored)
    return Choice(first, {first: 1.0}, "no backtest (a cut needs 2+ budgets with an interior minimum and a later "
                  f"budget): first available in the order {', '.join(APPROACHES)}", 0)


def case_table(records: list[Record]) -> dict[tuple[float, float], dict[str, Record]]:
    """The records by case, (cut, target), then by predictor; predictions that are not finite and positive
    left out."""
    table: dict[tuple[float, float], dict[str, Record]] = defaultdict(dict)
    for r in records:
        if np.isfinite(r.predicted) and r.predicted > 0:
            table[(r.cut, r.target)][r.predictor] = r
    return table


def _best_subset(table, components: list[str], size: int) -> tuple[list[str], list]:
    """Drop the components with the fewest records until ``size`` remain; the cases where all predicted."""
    counts = {k: sum(k in row for row in table.values()) for k in components}
    keep = sorted(components, key=lambda k: (-counts[k], APPROACHES.index(k)))[:size]
    keep = [k for k in APPROACHES if k in keep]
    return keep, [c for c, row in table.items() if all(k in row for k in keep)]


def _stack(table, comps: list[str], cases: list) -> Choice:
    x = np.array([[np.log(table[c][k].predicted) for k in comps] for c in cases])
    y = np.array([np.log(table[c][comps[0]].actual) for c in cases])
    w = simplex_least_squares(x, y)
    weights = {k: float(v) for k, v in zip(comps, w, strict=True) if v > 1e-9}
    total = sum(weights.values())
    weights = {k: v / total for k, v in weights.items()}
    errors = {k: _rms(table, [k], cases) for k in comps}
    fitted = float(np.sqrt(np.mean((x @ w - y) ** 2)))
    reason = (f"stacked over {len(cases)} backtest case(s) of this data's own budgets: weights "
              + ", ".join(f"{k} {v:.2f}" for k, v in weights.items())
              + f"; RMS log error {fitted:.2%} stacked, " + ", ".join(f"{k} {v:.2%}" for k, v in errors.items()))
    return Choice(STACKED, weights, reason, len(cases), _scale(table, comps, cases), errors)


def simplex_least_squares(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin ||x w - y||^2 over w >= 0, sum w = 1 (Breiman 1996), via NNLS on y - x_K against x_k - x_K."""
    from scipy.optimize import nnls

    k = x.shape[1]
    if k == 1:
        return np.ones(1)
    best, best_sse = None, np.inf
    for last in range(k):  # eliminate sum w = 1 through each component in turn; keep the feasible optimum
        others = [j for j in range(k) if j != last]
        a = x[:, others] - x[:, [last]]
        v, _ = nnls(a, y - x[:, last])
        if v.sum() <= 1.0 + 1e-12:
            w = np.zeros(k)
            w[others], w[last] = v, 1.0 - v.sum()
            sse = float(np.sum((x @ w - y) ** 2))
            if sse < best_sse - 1e-15:
                best, best_sse = w, sse
    return best if best is not None else np.full(k, 1.0 / k)


def _rms(table, comps: list[str], cases: list) -> float:
    errs = [table[c][k].log_error for c in cases for k in comps]
    return float(np.sqrt(np.mean(np.square(errs)))) if errs else float("nan")


def _scale(table, comps: list[str], cases: list) -> float:
    """RMS of each component's ln(pred/actual) per ln(1 + ratio) over the cases: the data's own extrapolation error."""
    errs = [table[c][k].log_error / np.log1p(table[c][k].ratio) for c in cases for k in comps]
    return float(np.sqrt(np.mean(np.square(errs)))) if errs else float("nan")
