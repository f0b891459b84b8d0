"""Leave-future-out backtest of a whole ladder: every cut, every later budget, every predictor.

For each cut with at least ``min_measured`` measured budgets (:mod:`raylm.scaling.backtest.leave_future_out`)
every predictor is fitted on the budgets up to the cut and predicts every later budget; the
recommended prediction is made exactly as a study makes it: the rule of
:mod:`raylm.scaling.predict.stacking` learns its weights from the cases *before* the cut only (earlier cuts
predicting budgets up to the cut), and the interval of :mod:`raylm.scaling.intervals.calibrated`
uses those cases' errors and the predictors' disagreement. Nothing after the cut is seen.

Each case reports the relative error of the predicted loss against the measured best loss of that
budget, ``(predicted - measured) / measured``, the extrapolation ratio, whether the interval
covered the measured loss, the interval's width, and ln(N* / best size measured).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from raylm.scaling.backtest.leave_future_out import Ladder, Record, cut_fits, records_of
from raylm.scaling.data import ScalingData
from raylm.scaling.fit.frontier import MIN_BUDGETS_FREE_FLOOR, FrontierUnavailable, fit_frontier
from raylm.scaling.intervals.calibrated import calibrated_quantile, interval_scale, spread_of
from raylm.scaling.predict.pointfit import FitOptions
from raylm.scaling.predict.recommend import minima_admit
from raylm.scaling.predict.stacking import case_table, choose, simplex_least_squares

RECOMMENDED = "recommended"
#: Extrapolation-ratio buckets of the summary: (label, low, high], the first closed below at 1.
BUCKETS = (("1-3x", 1.0, 3.0 - 1e-9), ("3-10x", 3.0 - 1e-9, 10.0 + 1e-9), ("10-30x", 10.0 + 1e-9, 30.0 - 1e-9),
           ("30-100x", 30.0 - 1e-9, 100.0 + 1e-9), (">100x", 100.0 + 1e-9, np.inf))
N_FACTOR = 1.5  # N* counts as right within this factor of the best size measured


@dataclass(frozen=True)
class Case:
    """A record with its interval scale u, the approach behind it (for the recommended one) and q."""

    record: Record
    u: float
    approach: str
    admitted: tuple[float, float] | None = None  # the losses the minima up to the cut alone admit (recommended)

    def covered(self, q: float) -> bool:
        return bool(abs(self.record.log_error) <= q * self.u) if self.u > 0 else False

    def width(self, q: float) -> float:
        """Interval width relative to the prediction: e^(qu) - e^(-qu) (nan without an interval)."""
        return float(np.exp(q * self.u) - np.exp(-q * self.u)) if self.u > 0 else float("nan")

    def admits(self) -> bool | None:
        """Whether the measured loss lies in the range the minima admit (None without one)."""
        if self.admitted is None:
            return None
        return bool(self.admitted[0] <= self.record.actual <= self.admitted[1])

    def admitted_width(self) -> float:
        """The admitted range's width relative to the measured loss (nan without one)."""
        return float("nan") if self.admitted is None else (self.admitted[1] - self.admitted[0]) / self.record.actual

    def as_dict(self, q: float) -> dict:
        return {**self.record.as_dict(), "approach": self.approach, "u": self.u, "covered": self.covered(q),
                "interval_width": self.width(q), "minima_admit": None if self.admitted is None else list(self.admitted),
                "minima_admit_covered": self.admits()}


@dataclass(frozen=True)
class LadderBacktest:
    """Every case of one ladder, at interval level ``level`` (quantile ``q``)."""

    name: str
    level: float
    q: float
    cases: list[Case] = field(repr=False)
    budgets: int = 0
    fit_seconds: float = float("nan")  # median wall time of one cut's fits
    target_noise: TargetNoise | None = None
    measured: int = 0  # budgets with an interior minimum
    min_measured: int = 3  # measured budgets a cut needs

    def why_empty(self) -> str | None:
        """Why the ladder has no case, in words (None when it has some)."""
        if self.cases:
            return None
        return (f"a cut needs {self.min_measured}+ budgets whose best size lies inside the sizes "
                f"trained (an interior IsoFLOP minimum) and a later budget to predict; {self.name} has "
                f"{self.budgets} budget(s), {self.measured} with an interior minimum")

    def predictors(self) -> list[str]:
        names = {c.record.predictor for c in self.cases}
        return [RECOMMENDED] + sorted(names - {RECOMMENDED})

    def summary(self) -> dict:
        """Per predictor and ratio bucket: cases, median/max |error|, bias, coverage, width, N* within 1.5x."""
        out = {}
        for name in self.predictors():
            mine = [c for c in self.cases if c.record.predictor == name]
            out[name] = {label: summarize([c for c in mine if lo < c.record.ratio <= hi], self.q)
                         for label, lo, hi in BUCKETS}
            out[name]["all"] = summarize(mine, self.q)
        return out

    def as_dict(self) -> dict:
        return {"ladder": self.name, "level": self.level, "quantile": self.q, "budgets": self.budgets,
                "measured_budgets": self.measured, "no_case": self.why_empty(),
                "fit_seconds": self.fit_seconds, "summary": self.summary(),
                "target_noise": None if self.target_noise is None else self.target_noise.as_dict(),
                "cases": [c.as_dict(self.q) for c in self.cases]}


def summarize(cases: list[Case], q: float) -> dict:
    if not cases:
        return {"cases": 0}
    err = np.array([c.record.rel_error for c in cases])
    n_log = np.abs([c.record.n_log_ratio for c in cases])
    widths = np.array([c.width(q) for c in cases])
    admitted = [c for c in cases if c.admitted is not None]
    minima = ({"minima_admit_coverage": float(np.mean([c.admits() for c in admitted])),
               "minima_admit_median_width": float(np.median([c.admitted_width() for c in admitted]))}
              if admitted else {})
    return {**minima, "cases": len(cases), "median_abs_error": float(np.median(np.abs(err))),
            "max_abs_error": float(np.max(np.abs(err))), "mean_error": float(np.mean(err)),
            "coverage": float(np.mean([c.covered(q) for c in cases])),
            "median_width": float(np.nanmedian(widths)) if np.isfinite(widths).any() else None,
            "n_within_factor": float(np.mean(n_log <= np.log(N_FACTOR) + 1e-12)),
            "median_abs_n_log_ratio": float(np.median(n_log))}


def backtest_ladder(data: ScalingData, options: FitOptions, *, name: str = "ladder", level: float = 0.9,
                    min_measured: int = 3, progress=None) -> LadderBacktest:
    """The backtest of the module docstring on ``data`` (runs grouped into budgets by ``options``)."""
    ladder = Ladder.build(data, options)
    started = time.perf_counter()
    fits = cut_fits(ladder, options, min_measured=2, progress=progress)
    per_fit = (time.perf_counter() - started) / max(len(fits), 1)
    cases: list[Case] = []
    for fit in fits:
        if fit.fitted_budgets < min_measured:
            continue
        inner = records_of(ladder, [f for f in fits if f.index < fit.index], upto=fit.index)
        choice = choose(inner, list(fit.point.estimates))
        own = records_of(ladder, [fit])
        admitted = minima_admit(fit.point, ladder.budgets[list(fit.targets)])
        for col, k in enumerate(fit.targets):
            losses = {n: e.loss[0, col] for n, e in fit.point.estimates.items()}
            sizes = {n: e.n_opt[0, col] for n, e in fit.point.estimates.items()}
            ratio = ladder.budgets[k] / fit.cut
            u = float(interval_scale(ratio, spread_of(losses), choice.scale, fit.point.law_misfit)[0])
            mine = [r for r in own if r.target == ladder.budgets[k]]
            cases += [Case(r, u, r.predictor) for r in mine]
            if choice.approach is not None:
                rec = Record(fit.cut, fit.fitted_budgets, fit.span, float(ladder.budgets[k]), RECOMMENDED,
                             float(choice.combine(losses)), mine[0].actual, mine[0].actual_source,
                             float(choice.combine(sizes)), mine[0].n_best)
                cases.append(Case(rec, u, choice.approach,
                                  None if admitted is None else (admitted.low[col], admitted.high[col])))
    return LadderBacktest(name, level, calibrated_quantile(level), cases, int(ladder.budgets.size), per_fit,
                          target_noise_of(ladder), int(sum(b.interior for b in ladder.best)), min_measured)


@dataclass(frozen=True)
class TargetNoise:
    """How far a ladder's measured best losses lie from one smooth frontier through all of them, in hindsight.

    Every backtest error is measured against a budget's best loss, itself an estimate from a few noisy
    runs (its IsoFLOP parabola's minimum). The free-floor frontier L*(C) = E + (C0/C)^gamma (Kaplan et al.
    2020 with an irreducible term) fitted to every budget with an interior minimum is the smooth curve a
    perfect predictor could at best follow; its residuals ln(L*(C) / measured) are the targets' own scatter,
    below which no predictor's max error can be expected to go.
    """

    budgets: int
    rms: float
    max_abs: float

    def describe(self) -> str:
        return (f"the measured bests themselves lie up to {self.max_abs:.2%} (RMS {self.rms:.2%}) from one smooth "
                f"frontier through all {self.budgets} budgets")

    def as_dict(self) -> dict:
        return {"budgets": self.budgets, "rms_rel": self.rms, "max_abs_rel": self.max_abs,
                "method": "free-floor frontier through every budget's measured best, fitted in hindsight"}


def target_noise_of(ladder: Ladder) -> TargetNoise | None:
    """:class:`TargetNoise` of the budgets with an interior minimum (None with fewer than a free floor needs)."""
    interior = [k for k, b in enumerate(ladder.best) if b.interior]
    if len(interior) < MIN_BUDGETS_FREE_FLOOR:
        return None
    budgets, losses = ladder.budgets[interior], np.array([ladder.best[k].loss for k in interior])
    try:
        law = fit_frontier(budgets, losses, floor=None)
    except FrontierUnavailable:
        return None
    rel = law(budgets) / losses - 1.0
    return TargetNoise(len(interior), float(np.sqrt(np.mean(rel ** 2))), float(np.max(np.abs(rel))))


@dataclass(frozen=True)
class Hindsight:
    """The best *fixed* combination of the predictors on a ladder, chosen with every answer in view.

    Not a predictor (it sees the measured losses it is scored on): the floor of what any convex
    combination with weights fixed over the ladder could reach, to tell a rule that learns its
    weights badly from a predictor set that cannot reach a goal at all.
    """

    weights: dict[str, float]
    cases: list[tuple[float, float]]  # (ratio, relative error) per (cut, target)

    def bucket(self, low: float, high: float) -> dict:
        err = np.abs([e for r, e in self.cases if low < r <= high])
        if err.size == 0:
            return {"cases": 0}
        return {"cases": int(err.size), "median_abs_error": float(np.median(err)), "max_abs_error": float(err.max())}

    def as_dict(self) -> dict:
        return {"weights": self.weights, **{label: self.bucket(lo, hi) for label, lo, hi in BUCKETS}}


def hindsight_combination(cases: list[Case]) -> Hindsight | None:
    """Simplex least squares of ln(measured) on the log predictions of the predictors present at every case."""
    table = case_table([c.record for c in cases if c.record.predictor != RECOMMENDED])
    if not table:
        return None
    comps = sorted(set.intersection(*(set(row) for row in table.values())))
    if not comps:
        return None
    rows = list(table.values())
    x = np.log([[row[k].predicted for k in comps] for row in rows])
    y = np.log([row[comps[0]].actual for row in rows])
    w = simplex_least_squares(x, y)
    errors = np.expm1(x @ w - y)
    return Hindsight({k: float(v) for k, v in zip(comps, w, strict=True) if v > 1e-9},
                     [(row[comps[0]].ratio, float(e)) for row, e in zip(rows, errors, strict=True)])


def format_summary(result: LadderBacktest, predictors=None) -> str:
    """A plain-text table: one row per predictor and ratio bucket with cases."""
    lines = [f"{result.name}: {result.budgets} budgets, interval level {result.level:g} (q = {result.q:.3f}); "
             "errors are (predicted - measured) / measured of the best loss",
             f"{'predictor':<14}{'ratio':>9}{'cases':>7}{'median|err|':>13}{'max|err|':>10}{'bias':>9}"
             f"{'coverage':>10}{'width':>8}{'N* in 1.5x':>12}"]
    noise = result.target_noise
    if noise is not None:
        lines.insert(1, f"{noise.describe()}: errors below that follow noise")
    empty = result.why_empty()
    if empty:
        return "\n".join([lines[0], f"no backtest case: {empty}"])
    summary = result.summary()
    for name in predictors or result.predictors():
        for label, _, _ in BUCKETS:
            s = summary.get(name, {}).get(label, {"cases": 0})
            if not s["cases"]:
                continue
            width = "n/a" if s["median_width"] is None else f"{s['median_width']:.2%}"
            lines.append(f"{name:<14}{label:>9}{s['cases']:>7}{s['median_abs_error']:>13.2%}"
                         f"{s['max_abs_error']:>10.2%}{s['mean_error']:>+9.2%}{s['coverage']:>10.2f}"
                         f"{width:>8}{s['n_within_factor']:>12.2f}")
    lines += minima_admit_lines(summary.get(RECOMMENDED, {}))
    return "\n".join(lines)


def minima_admit_lines(summary: dict) -> list[str]:
    """What the minima up to each cut alone admitted, per ratio bucket (:mod:`raylm.scaling.fit.admitted`)."""
    parts = [f"{label} {s['minima_admit_median_width']:.1%} (covering {s['minima_admit_coverage']:.2f})"
             for label, _, _ in BUCKETS if (s := summary.get(label, {})).get("minima_admit_median_width") is not None]
    if not parts:
        return []
    return ["the minima up to each cut alone admit losses spanning a median of " + ", ".join(parts)
            + " of the measured loss: what the recommendation claims beyond that rests on the pinned exponent, "
            "the law through every run and the calibration"]
