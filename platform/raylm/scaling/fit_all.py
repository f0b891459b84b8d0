"""One call for a whole Chinchilla-style analysis: both fits and the predictions, as plain numbers.

Approach 3 (Hoffmann et al. 2022, section 3.3; Besiroglu et al. 2024) always; Approach 2
(section 3.2) when the runs form at least two IsoFLOP profiles; predictions for target budgets;
with target budgets, the backtested recommendation of :mod:`raylm.scaling.predict.recommend` (every
predictor, the largest budget held out, the winner's prediction with a prediction interval).
Plots live in :mod:`raylm.scaling.plots`, file reading in :mod:`raylm.scaling.io`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raylm.json_safe import json_safe
from raylm.scaling.data import ScalingData
from raylm.scaling.fit.approach2 import Approach2Fit, Approach2Unavailable, fit_approach2
from raylm.scaling.fit.approach3 import Approach3Fit, fit_approach3
from raylm.scaling.predict.approaches import Prediction, checked_budgets, predict
from raylm.scaling.predict.pointfit import FitOptions
from raylm.scaling.predict.recommend import IntervalOptions, Recommendation, recommend


@dataclass(frozen=True)
class FitReport:
    data: ScalingData = field(repr=False)
    approach3: Approach3Fit
    approach2: Approach2Fit | None
    approach2_note: str
    predictions: list[Prediction]
    recommendation: Recommendation | None = None

    def as_dict(self) -> dict:
        approach2 = self.approach2.as_dict() if self.approach2 else {"skipped": self.approach2_note}
        out = {"n_points": len(self.data), "approach3": self.approach3.as_dict(), "approach2": approach2,
               "predictions": [p.as_dict() for p in self.predictions], "recommended": []}
        if self.recommendation is not None:
            rec = self.recommendation.as_dict()
            keys = ("approach", "budget", "n_opt", "d_opt", "tokens_per_param", "loss", "loss_interval",
                    "run_interval", "level")
            out["recommended"] = [{k: p[k] for k in keys} for p in rec["recommended"]]
            admitted = self.recommendation.admitted
            for i, entry in enumerate(out["recommended"]):  # what the minima alone admit, beside the interval
                entry["minima_admit"] = None if admitted is None else [admitted.low[i], admitted.high[i]]
            out["backtest"] = rec["backtest"]
            out["recommendation"] = {k: rec[k] for k in ("approach", "reason", "predictions", "unavailable",
                                                          "noise", "bootstrap", "minima_admit")}
        return json_safe(out)


def fit_scaling_laws(data: ScalingData, *, targets=(), fit: FitOptions = FitOptions(starts="full"),
                     intervals: IntervalOptions = IntervalOptions(level=0.95), bootstrap: int = 0,
                     exclude_highest: int = 0) -> FitReport:
    """Fit both approaches to ``data`` and predict at ``targets`` (FLOPs, numbers).

    Approach 3 is the published procedure (the ``fit.starts`` grid, Huber ``fit.delta``), Approach 2
    groups runs into budgets by ``fit.isoflop_budgets``/``fit.isoflop_tolerance``
    (:func:`raylm.scaling.fit.approach2.group_budgets`); both with ``bootstrap`` resamples (seed and level
    from ``intervals``). ``exclude_highest`` drops that many highest-loss runs first (Besiroglu et al.
    2024 drop 5). With ``targets``, also :func:`raylm.scaling.predict.recommend.recommend` with ``fit`` and
    ``intervals``, reusing the Approach 3 fit.
    """
    targets = checked_budgets(targets)
    data = data.without_highest_losses(exclude_highest)
    level, seed = intervals.level, intervals.seed
    approach3 = fit_approach3(data, starts=fit.starts, delta=fit.delta, bootstrap=bootstrap, seed=seed, level=level)
    try:
        approach2 = fit_approach2(data, level=level, bootstrap=bootstrap, seed=seed, budgets=fit.isoflop_budgets,
                                  tolerance=fit.isoflop_tolerance)
        note = ""
    except Approach2Unavailable as exc:
        approach2, note = None, str(exc)
    recommendation = None
    if targets:
        recommendation = recommend(data, targets, fit=fit, intervals=intervals, approach3=approach3)
    return FitReport(data=data, approach3=approach3, approach2=approach2, approach2_note=note,
                     predictions=predict(targets, approach3, approach2), recommendation=recommendation)
