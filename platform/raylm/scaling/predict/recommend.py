"""One call from a finished IsoFLOP grid to a recommended, honest prediction for bigger budgets.

``recommend(data, targets)`` fits every predictor (:mod:`raylm.scaling.predict.predictors`: Approaches 1, 2
and 3 of Hoffmann et al. 2022, the compute frontier L*(C) = E + (C0/C)^gamma with its exponent pinned
to the reference law's, or its floor pinned to the law's E, fitted, or 0), scores them on the data's
own leave-future-out cases (:mod:`raylm.scaling.backtest.leave_future_out`: fit up to each earlier budget,
predict the later ones) and recommends by the rule of :mod:`raylm.scaling.predict.stacking`: their
stacked combination with weights learnt from those cases, else the first available predictor of the
order (the frontier with its exponent pinned). The
recommended interval is calibrated on real extrapolation errors
(:mod:`raylm.scaling.intervals.calibrated`: it grows with the extrapolation ratio, the data's own
backtest errors and the predictors' disagreement); every predictor keeps its own simulated
interval (:mod:`raylm.scaling.intervals.simulated`, run by
:mod:`raylm.scaling.intervals.simulated_studies`: a parametric bootstrap with the run noise, which
knows only the noise of the law it assumes). ``backtest`` is the largest budget held out, reported
per predictor. ``admitted`` is the range of losses the IsoFLOP minima alone admit at each target
(:mod:`raylm.scaling.fit.admitted`): what the grid decides without the priors the predictors carry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from raylm.errors import UserError
from raylm.json_safe import json_safe
from raylm.scaling.backtest.largest_budget import Backtest, run_backtest
from raylm.scaling.backtest.leave_future_out import Ladder, Record, cut_fits, records_of
from raylm.scaling.curves import CurveData
from raylm.scaling.data import ScalingData
from raylm.scaling.fit.admitted import AdmittedRange, admitted_range
from raylm.scaling.fit.approach3 import Approach3Fit
from raylm.scaling.intervals.calibrated import calibrated_bounds, interval_scale, spread_of
from raylm.scaling.intervals.simulated import NoiseEstimate, estimate_noise
from raylm.scaling.intervals.simulated_studies import SimulatedIntervals, simulated_intervals
from raylm.scaling.predict.approaches import checked_budgets
from raylm.scaling.predict.pointfit import FitOptions, PointFit, fit_point
from raylm.scaling.predict.prediction import NAN_PAIR, Prediction
from raylm.scaling.predict.predictors import isoflop_residuals
from raylm.scaling.predict.stacking import STACKED, Choice, choose

INTERVAL_METHOD = ("per predictor: parametric bootstrap from the Approach 3 fit with the run noise, basic (pivot) "
                   "interval, widened when the real backtest error lies beyond one standard deviation of the "
                   "simulated ones; recommended: calibrated on the public ladders' extrapolation errors "
                   "(raylm.scaling.intervals.calibrated)")


@dataclass(frozen=True)
class Recommendation:
    """Every available predictor's predictions, the unavailable ones with reasons, the backtest and the pick."""

    targets: tuple[float, ...]
    level: float
    predictions: dict[str, list[Prediction]]
    unavailable: dict[str, str]
    backtest: Backtest
    approach: str | None
    reason: str
    noise: NoiseEstimate | None
    simulations: int
    seed: int
    simulated: SimulatedIntervals | None = field(default=None, repr=False)
    point: PointFit | None = field(default=None, repr=False)
    recommended: list[Prediction] = field(default_factory=list)  # the rule's prediction, calibrated interval
    choice: Choice | None = field(default=None, repr=False)
    cases: list[Record] = field(default_factory=list, repr=False)  # the data's own leave-future-out cases
    admitted: AdmittedRange | None = None  # the losses the IsoFLOP minima alone admit at the targets

    def as_dict(self) -> dict:

        return json_safe({
            "targets": list(self.targets), "level": self.level, "approach": self.approach, "reason": self.reason,
            "recommended": [p.as_dict() for p in self.recommended],
            "predictions": {k: [p.as_dict() for p in v] for k, v in self.predictions.items()},
            "unavailable": self.unavailable, "backtest": self.backtest.as_dict(),
            "noise": None if self.noise is None else self.noise.as_dict(),
            "bootstrap": self._bootstrap_dict(),
            "choice": None if self.choice is None else self.choice.as_dict(),
            "law_misfit": None if self.point is None else self.point.law_misfit,
            "leave_future_out": leave_future_out_errors(self.cases),
            "fits": {} if self.point is None else self.point.fits_as_dict(),
            "minima_admit": None if self.admitted is None else self.admitted.as_dict(),
        })


    def _bootstrap_dict(self) -> dict:
        out = {"simulations": self.simulations, "seed": self.seed, "method": INTERVAL_METHOD}
        if self.simulated is not None:
            out.update(finite_refits=self.simulated.refits, backtest_scale=self.simulated.scales,
                       simulated_backtest_range=self.simulated.backtest_range)
        return out


def _check(level: float, simulations: int, warm_starts: int, noise_source: str, noise: float | None) -> None:
    if not 0 < level < 1:
        raise UserError(f"interval level must be between 0 and 1, got {level}")
    if simulations < 0:
        raise UserError(f"simulations must be >= 0, got {simulations}")
    if noise is not None and not (np.isfinite(noise) and noise > 0):
        raise UserError(f"run noise must be a positive relative standard deviation (e.g. 0.01), got {noise}")
    if noise_source not in ("isoflop", "approach3"):
        raise UserError(f"noise_source must be 'isoflop' or 'approach3', got {noise_source!r}")
    if warm_starts < 1:
        raise UserError(f"warm_starts must be >= 1, got {warm_starts}")


@dataclass(frozen=True)
class IntervalOptions:
    """How the intervals are made: ``level``; ``simulations`` simulated data sets behind every predictor's
    interval (0: none) with ``seed``; the run ``noise`` when measured (repeated seeds), else estimated from
    the residuals of ``noise_source`` (``"approach3"``: the law's, a misfit widens the intervals;
    ``"isoflop"``: each budget's parabola); ``warm_starts``: the Approach 3 optima each simulated refit
    starts from."""

    level: float = 0.9
    simulations: int = 200
    seed: int = 0
    noise: float | None = None
    noise_source: str = "approach3"
    warm_starts: int = 3

    def __post_init__(self) -> None:
        _check(self.level, self.simulations, self.warm_starts, self.noise_source, self.noise)


def recommend(data: ScalingData, targets, curves: CurveData | None = None, *, fit: FitOptions = FitOptions(),
              intervals: IntervalOptions = IntervalOptions(), backtest: bool = True,
              approach3: Approach3Fit | None = None) -> Recommendation:
    """Predict N*, D* and the loss at every target budget with every predictor; recommend one.

    ``targets``: FLOPs (a number or a sequence; :func:`~raylm.scaling.predict.approaches.parse_budgets`
    reads strings such as '1e21,3e21'). ``fit``: how every predictor is fitted
    (:class:`~raylm.scaling.predict.pointfit.FitOptions`); ``intervals``: :class:`IntervalOptions`.
    ``backtest=False`` skips the largest-budget backtest. ``approach3``: an Approach 3 fit of the same
    ``data`` (and delta) to reuse. See the module docstring for the rule.
    """
    targets = checked_budgets(targets)
    if not targets:
        raise UserError("recommend needs at least one target budget (FLOPs, e.g. 1e21)")
    point = fit_point(data, targets, fit, curves, approach3)
    test = run_backtest(data, fit, curves) if backtest else Backtest(None, None, "", note="not run")
    bands, noise_est, sims = {}, None, None
    if intervals.simulations and point.estimates:
        noise_est = _noise(data, point, intervals)
        sims = simulated_intervals(point, test, noise_est, targets, intervals, fit.delta)
        bands = sims.bands
    cases = _own_cases(data, fit)
    choice = choose(cases, list(point.estimates))
    level = intervals.level
    predictions = {}
    for name, est in point.estimates.items():
        loss_band, run_band = bands.get(name, (None, None))
        predictions[name] = [
            Prediction(name, c, float(est.n_opt[0, i]), float(est.d_opt[0, i]), float(est.loss[0, i]), level,
                       loss_interval=_pair(loss_band, i), run_interval=_pair(run_band, i))
            for i, c in enumerate(targets)
        ]
    recommended = _recommended(point, choice, targets, level, noise_est, bands)
    if choice.approach == STACKED:
        predictions[STACKED] = recommended
    return Recommendation(targets=tuple(targets), level=level, predictions=predictions,
                          unavailable=dict(point.unavailable), backtest=test, approach=choice.approach,
                          reason=choice.reason, noise=noise_est, simulations=intervals.simulations,
                          seed=intervals.seed, simulated=sims, point=point, recommended=recommended, choice=choice,
                          cases=cases, admitted=minima_admit(point, targets, intervals.noise))


def _noise(data: ScalingData, point: PointFit, intervals: IntervalOptions) -> NoiseEstimate:
    law_resid = point.law_residuals
    isoflop = isoflop_residuals(point.layout, data.loss) if intervals.noise_source == "isoflop" else None
    return estimate_noise(law_resid, isoflop, intervals.noise)


def minima_admit(point: PointFit, targets, noise: float | None = None) -> AdmittedRange | None:
    """:func:`~raylm.scaling.fit.admitted.admitted_range` of the point fit's IsoFLOP minima, with the run noise
    (``noise`` when given, else the IsoFLOP parabolas' residuals, else the law's) as the minima's noise: an upper
    bound, a minimum averaging several runs. None when the noise cannot be estimated."""
    try:
        sigma = estimate_noise(point.law_residuals, isoflop_residuals(point.layout, point.data.loss), noise).sigma
    except UserError:
        return None
    return admitted_range(*point.minima, targets, sigma)


def _own_cases(data: ScalingData, options: FitOptions) -> list[Record]:
    """Leave-future-out cases of the data's own budgets: every cut with 2+ measured budgets."""
    ladder = Ladder.build(data, options)
    return records_of(ladder, cut_fits(ladder, options, min_measured=2))


def _recommended(point: PointFit, choice: Choice, targets: list[float], level: float,
                 noise: NoiseEstimate | None, bands: dict) -> list[Prediction]:
    """The rule's prediction at every target with its interval (``run_interval`` adds one run's noise).

    The interval is the hull of the calibrated one and, with simulations, the bootstrap interval of the
    recommended predictor (for a stacked one, the same weighted geometric mean of its components' bounds):
    the calibration covers real extrapolation error, the bootstrap the noise of a study too small to
    have backtest cases (three budgets), which the public ladders do not calibrate.
    """
    if choice.approach is None:
        return []
    losses = {k: e.loss[0] for k, e in point.estimates.items()}
    sizes = {k: e.n_opt[0] for k, e in point.estimates.items()}
    loss, n_opt = choice.combine(losses), choice.combine(sizes)
    ratio = np.asarray(targets) / float(np.max(point.layout.budgets if point.layout.budgets.size else point.data.flops))
    u = interval_scale(ratio, spread_of(losses), choice.scale, point.law_misfit)
    low, high = calibrated_bounds(loss, u, level)
    run_low, run_high = low, high
    if noise is not None and np.all(u > 0):  # one run's noise on top
        run_low, run_high = calibrated_bounds(loss, np.sqrt(u ** 2 + noise.sigma ** 2), level)
    if all(k in bands for k in choice.weights):  # the hull with the simulated interval
        (b_low, b_high), (r_low, r_high) = (
            tuple(choice.combine({k: bands[k][j][side] for k in choice.weights}) for side in (0, 1)) for j in (0, 1))
        low, high = np.fmin(low, b_low), np.fmax(high, b_high)
        run_low, run_high = np.fmin(run_low, r_low), np.fmax(run_high, r_high)
    return [Prediction(choice.approach, c, float(n_opt[i]), float(c / (6.0 * n_opt[i])), float(loss[i]), level,
                       loss_interval=(float(low[i]), float(high[i])),
                       run_interval=(float(run_low[i]), float(run_high[i])))
            for i, c in enumerate(targets)]


def leave_future_out_errors(cases: list[Record]) -> dict:
    """Per predictor: cases, RMS and max |relative error| over the data's own leave-future-out cases."""
    out = {}
    for name in sorted({r.predictor for r in cases}):
        err = np.array([r.rel_error for r in cases if r.predictor == name])
        out[name] = {"cases": int(err.size), "rms_rel_error": float(np.sqrt(np.mean(err ** 2))),
                     "max_abs_rel_error": float(np.max(np.abs(err)))}
    return out


def _pair(band, i: int) -> tuple[float, float]:
    if band is None:
        return NAN_PAIR
    return (float(band[0][i]), float(band[1][i]))
