"""Backtest: refit every predictor without the largest budget and predict that budget's best loss.

The held-out "actual" is the minimum of the held-out budget's IsoFLOP parabola of loss in ln N
(Hoffmann et al. 2022, section 3.2) when it is convex with its minimum inside the sampled sizes,
else the lowest loss measured at that budget (an upper bound on its optimum). The parabola
minimum averages the noise of the budget's runs; the lowest measured loss is biased down by the
noise it was selected on and up by the grid's spacing. Each predictor's relative error is
predicted / actual - 1. The curves of the held-out budget's runs (those whose last point falls in
that budget) are held out too, so Approach 1 is refit on the earlier budgets' curves alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from raylm.scaling.curves import CurveData
from raylm.scaling.data import MIN_POINTS, ScalingData
from raylm.scaling.fit.approach2 import MIN_RUNS_PER_BUDGET, group_budgets
from raylm.scaling.predict.pointfit import FitOptions, PointFit, fit_point
from raylm.scaling.predict.predictors import APPROACHES, parabola_minima


@dataclass(frozen=True)
class Backtest:
    """Held-out budget, its best loss and how it was measured, each predictor's prediction and relative error."""

    budget: float | None
    actual: float | None
    actual_source: str
    predicted: dict[str, float] = field(default_factory=dict)
    rel_error: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    note: str = ""
    held_out: np.ndarray | None = field(default=None, repr=False)  # mask of the held-out runs
    point: PointFit | None = field(default=None, repr=False)  # the refit without them

    def ranking(self) -> list[str]:
        """Predictors by |relative error|, ties (within 1e-12) broken by :data:`APPROACHES` order."""
        return sorted(self.rel_error, key=lambda k: (round(abs(self.rel_error[k]), 12), APPROACHES.index(k)))

    def as_dict(self) -> dict:
        return {"held_out_budget": self.budget, "actual_loss": self.actual, "actual_source": self.actual_source,
                "predicted_loss": self.predicted, "rel_error": self.rel_error, "ranking": self.ranking(),
                "unavailable": self.unavailable, "note": self.note}


def run_backtest(data: ScalingData, options: FitOptions, curves: CurveData | None = None) -> Backtest:
    """Hold out the largest budget, refit everything on the rest, compare with the held-out best loss."""
    labels, budgets = group_budgets(data.flops, options.isoflop_budgets, options.isoflop_tolerance)
    present = np.unique(labels[labels >= 0])
    if present.size < 3:
        return Backtest(None, None, "", note=f"runs at {present.size} budget(s); a backtest needs 3+ (2 to fit, "
                        "1 held out)")
    top = int(present.max())
    held = labels == top
    if int((~held).sum()) < MIN_POINTS:
        return Backtest(float(budgets[top]), None, "", note=f"{int((~held).sum())} runs below the largest budget; "
                        f"a refit needs {MIN_POINTS}+")
    actual, from_parabola = held_out_best_rows(data.params[held], data.loss[None, held])
    source = "parabola minimum" if from_parabola[0] else "lowest measured loss"
    rest = data.subset(~held)
    rest_curves = _curves_below(curves, budgets[top], options) if curves is not None else None
    point = fit_point(rest, [budgets[top]], options, rest_curves)
    predicted = {k: float(v.loss[0, 0]) for k, v in point.estimates.items()}
    errors = {k: v / float(actual[0]) - 1.0 for k, v in predicted.items()}
    return Backtest(float(budgets[top]), float(actual[0]), source, predicted, errors, dict(point.unavailable),
                    held_out=held, point=point)


def held_out_best(params: np.ndarray, loss: np.ndarray) -> tuple[float, str]:
    """The parabola minimum when convex and interior (3+ sizes), else the lowest measured loss."""
    best, from_parabola = held_out_best_rows(params, np.asarray(loss, dtype=float)[None, :])
    return float(best[0]), "parabola minimum" if from_parabola[0] else "lowest measured loss"


def held_out_best_rows(params: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`held_out_best` for each row of ``losses`` (S, m): (best loss (S,), from the parabola (S,))."""
    x = np.log(params)
    lowest = losses.min(axis=1)
    if np.unique(x).size < MIN_RUNS_PER_BUDGET:
        return lowest, np.zeros(losses.shape[0], dtype=bool)
    vertex, _, interior = parabola_minima(x, losses)
    return np.where(interior, vertex, lowest), interior


def _curves_below(curves: CurveData, held_budget: float, options: FitOptions) -> CurveData | None:
    """The curves of runs that did not finish in the held-out budget's group."""
    finals = curves.final_flops()
    ids = list(finals)
    labels, _ = group_budgets(np.array([finals[r] for r in ids]), [held_budget], options.isoflop_tolerance)
    keep = [r for r, lab in zip(ids, labels, strict=True) if lab < 0 and finals[r] < held_budget]
    return curves.subset_runs(keep) if keep else None
