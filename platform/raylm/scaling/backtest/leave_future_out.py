"""Leave-future-out records: fit on the budgets up to a cut, predict every later budget, score.

A ladder (or a study's own grid) is a list of compute budgets, each with runs of several sizes. For
every cut, every predictor of :mod:`raylm.scaling.predict.predictors` is fitted on the runs of the budgets
up to the cut (the same :func:`~raylm.scaling.predict.pointfit.fit_point` a study uses) and predicts the
best loss and the best size N* of every later budget. Each (cut, later budget, predictor) is one
:class:`Record`. This is the backtest Marin and Open-Athena report for real ladders: a prediction is
only as good as its error on budgets it did not see.

The measured best of a budget is the minimum of its IsoFLOP parabola of loss in ln N (Hoffmann et al.
2022, section 3.2) when convex with its minimum inside the sizes trained, else its lowest measured
loss (an upper bound: ``source`` says which); N* likewise (the parabola's argmin, else the best run's
size). A budget counts as *measured* when its minimum is interior: cuts are counted in measured
budgets, since a budget whose best run is its smallest or largest model has not located its optimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raylm.scaling.data import MIN_POINTS, ScalingData
from raylm.scaling.fit.approach2 import MIN_RUNS_PER_BUDGET, group_budgets
from raylm.scaling.predict.pointfit import FitOptions, PointFit, fit_point
from raylm.scaling.predict.predictors import parabola_minima


@dataclass(frozen=True)
class BudgetBest:
    """One budget's measured best: loss, size, and whether the parabola minimum was interior."""

    budget: float
    loss: float
    n_best: float
    interior: bool
    runs: int

    @property
    def source(self) -> str:
        return "parabola minimum" if self.interior else "lowest measured loss"


@dataclass(frozen=True)
class Record:
    """One predictor's prediction of one later budget from the fit at one cut."""

    cut: float  # the largest budget fitted
    fitted_budgets: int  # measured budgets (interior minimum) up to the cut
    span: float  # largest / smallest budget fitted
    target: float
    predictor: str
    predicted: float
    actual: float
    actual_source: str
    n_pred: float
    n_best: float

    @property
    def ratio(self) -> float:
        """Extrapolation ratio: the target budget over the largest budget fitted."""
        return self.target / self.cut

    @property
    def log_error(self) -> float:
        return float(np.log(self.predicted / self.actual))

    @property
    def rel_error(self) -> float:
        """(predicted - measured) / measured."""
        return self.predicted / self.actual - 1.0

    @property
    def n_log_ratio(self) -> float:
        """ln(N* predicted / best size measured)."""
        return float(np.log(self.n_pred / self.n_best))

    def as_dict(self) -> dict:
        return {"cut": self.cut, "fitted_budgets": self.fitted_budgets, "span": self.span, "target": self.target,
                "ratio": self.ratio, "predictor": self.predictor, "predicted": self.predicted,
                "actual": self.actual, "actual_source": self.actual_source, "rel_error": self.rel_error,
                "n_pred": self.n_pred, "n_best": self.n_best, "n_log_ratio": self.n_log_ratio}


@dataclass(frozen=True)
class CutFit:
    """The fit at one cut: which budgets it saw and every predictor's estimates at the later budgets."""

    index: int  # position of the cut among the budgets
    cut: float
    fitted_budgets: int
    span: float
    point: PointFit
    targets: tuple[int, ...]  # indices of the later budgets predicted


@dataclass(frozen=True)
class Ladder:
    """Runs grouped into budgets, each budget's measured best, and the run labels."""

    data: ScalingData
    budgets: np.ndarray  # (K,) ascending
    labels: np.ndarray  # budget index per run, -1 for none
    best: tuple[BudgetBest, ...]

    @classmethod
    def build(cls, data: ScalingData, options: FitOptions) -> Ladder:
        labels, budgets = group_budgets(data.flops, options.isoflop_budgets, options.isoflop_tolerance)
        best = tuple(budget_best(data.params[labels == k], data.loss[labels == k], float(budgets[k]))
                     for k in range(budgets.size))
        return cls(data, np.asarray(budgets, dtype=float), labels, best)

    @property
    def measured(self) -> np.ndarray:
        """Cumulative count of budgets with an interior minimum, per budget index."""
        return np.cumsum([b.interior for b in self.best])

    def up_to(self, index: int) -> ScalingData:
        return self.data.subset((self.labels >= 0) & (self.labels <= index))


def budget_best(params: np.ndarray, loss: np.ndarray, budget: float) -> BudgetBest:
    """The parabola minimum when convex and interior (3+ sizes), else the lowest measured loss."""
    x, y = np.log(params), np.asarray(loss, dtype=float)
    if np.unique(x).size >= MIN_RUNS_PER_BUDGET:
        vertex, x_opt, interior = parabola_minima(x, y[None, :])
        if interior[0]:
            return BudgetBest(budget, float(vertex[0]), float(np.exp(x_opt[0])), True, x.size)
    low = int(np.argmin(y))
    return BudgetBest(budget, float(y[low]), float(params[low]), False, x.size)


def cut_fits(ladder: Ladder, options: FitOptions, min_measured: int = 2, last: int | None = None,
             progress=None) -> list[CutFit]:
    """Fit every predictor at every cut with ``min_measured``+ measured budgets, up to budget index ``last``.

    Each cut predicts the later budgets up to ``last`` (default: all). ``progress(done, total)`` is
    called after each cut.
    """
    last = ladder.budgets.size - 1 if last is None else last
    measured = ladder.measured
    cuts = [i for i in range(last) if measured[i] >= min_measured and len(ladder.up_to(i)) >= MIN_POINTS]
    out = []
    for done, i in enumerate(cuts, start=1):
        targets = tuple(range(i + 1, last + 1))
        sub = ladder.up_to(i)
        point = fit_point(sub, ladder.budgets[list(targets)], options)
        first = float(np.min(sub.flops))
        out.append(CutFit(i, float(ladder.budgets[i]), int(measured[i]), float(ladder.budgets[i] / first),
                          point, targets))
        if progress is not None:
            progress(done, len(cuts))
    return out


def records_of(ladder: Ladder, fits: list[CutFit], upto: int | None = None) -> list[Record]:
    """Every predictor's record at every cut of ``fits``, keeping targets at budget index <= ``upto``."""
    out = []
    for fit in fits:
        for col, k in enumerate(fit.targets):
            if upto is not None and k > upto:
                continue
            best = ladder.best[k]
            for name, est in fit.point.estimates.items():
                out.append(Record(fit.cut, fit.fitted_budgets, fit.span, float(ladder.budgets[k]), name,
                                  float(est.loss[0, col]), best.loss, best.source, float(est.n_opt[0, col]),
                                  best.n_best))
    return out
