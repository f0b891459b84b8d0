"""One call from a finished IsoFLOP grid to a recommended, honest prediction for bigger budgets.

``recommend(data, targets)`` fits every predictor (:mod:`raylm.scaling.predictors`: Approaches 1, 2
and 3 of Hoffmann et al. 2022 and the compute frontier L*(C) = E + (C0/C)^gamma), backtests them
(:mod:`raylm.scaling.backtest`: the largest budget held out), attaches prediction intervals
(:mod:`raylm.scaling.intervals`, run by :mod:`raylm.scaling.calibration`: a parametric bootstrap with
the run noise, basic pivot intervals, widened when the real backtest fails the simulated ones) and
recommends, per target, the prediction of the predictor with the smallest backtest error. The
recommended interval is that predictor's own; the choice itself is not simulated (its effect is in
the coverage measured in docs/scaling.md, which is of the recommended interval).

Recommendation rule: among the predictors available on the full data, the one with the smallest
|relative error| in the backtest, where differences within the noise are ties and ties go to the
first in :data:`APPROACHES` (frontier, approach3, approach2, approach1: fewest parameters first).
"Within the noise": with simulated studies (``bootstrap`` > 0), a predictor earlier in that order
is preferred to the one with the smallest error when its |ln(1 + error)| exceeds the smallest by no
more than one standard deviation of the paired difference of the two errors over the simulated
backtests (a single held-out budget cannot tell them apart better than that); without simulations,
only exact ties. A predictor without a backtest error (not available on the smaller data) ranks
after those with one. Without any backtest (fewer than 3 budgets) the first available predictor in
that order is recommended. ``reason`` says which case applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from raylm.errors import UserError
from raylm.scaling.approach3 import DEFAULT_DELTA, Approach3Fit
from raylm.scaling.backtest import Backtest, run_backtest
from raylm.scaling.calibration import SimulatedIntervals, simulated_intervals
from raylm.scaling.curves import CurveData
from raylm.scaling.data import ScalingData
from raylm.scaling.intervals import NoiseEstimate, estimate_noise
from raylm.scaling.objective import log_predict
from raylm.scaling.pointfit import FitOptions, PointFit, fit_point
from raylm.scaling.predict import parse_budgets
from raylm.scaling.predictors import APPROACHES, isoflop_residuals

NAN_PAIR = (float("nan"), float("nan"))
INTERVAL_METHOD = ("parametric bootstrap from the Approach 3 fit with the run noise, basic (pivot) interval, "
                   "widened when the real backtest error lies beyond one standard deviation of the simulated ones")


@dataclass(frozen=True)
class LossPrediction:
    """One predictor at one target budget: allocation, loss, and intervals at ``level``.

    ``loss_interval`` should hold the true compute-optimal loss; ``run_interval`` one verification
    run's measured loss (it adds one run's noise). Both are (nan, nan) without a bootstrap.
    """

    approach: str
    budget: float
    n_opt: float
    d_opt: float
    loss: float
    loss_interval: tuple[float, float] = NAN_PAIR
    run_interval: tuple[float, float] = NAN_PAIR
    level: float = 0.9

    @property
    def tokens_per_param(self) -> float:
        return self.d_opt / self.n_opt

    def as_dict(self) -> dict:
        return {"approach": self.approach, "budget": self.budget, "n_opt": self.n_opt, "d_opt": self.d_opt,
                "tokens_per_param": self.tokens_per_param, "loss": self.loss,
                "loss_interval": list(self.loss_interval), "run_interval": list(self.run_interval),
                "level": self.level}


@dataclass(frozen=True)
class Recommendation:
    """Every available predictor's predictions, the unavailable ones with reasons, the backtest and the pick."""

    targets: tuple[float, ...]
    level: float
    predictions: dict[str, list[LossPrediction]]
    unavailable: dict[str, str]
    backtest: Backtest
    approach: str | None
    reason: str
    noise: NoiseEstimate | None
    bootstrap: int
    seed: int
    simulated: SimulatedIntervals | None = field(default=None, repr=False)
    point: PointFit | None = field(default=None, repr=False)

    @property
    def recommended(self) -> list[LossPrediction]:
        """The recommended predictor's prediction at every target (empty when no predictor is available)."""
        return [] if self.approach is None else self.predictions[self.approach]

    def as_dict(self) -> dict:
        from raylm.scaling.report import json_safe

        return json_safe({
            "targets": list(self.targets), "level": self.level, "approach": self.approach, "reason": self.reason,
            "recommended": [p.as_dict() for p in self.recommended],
            "predictions": {k: [p.as_dict() for p in v] for k, v in self.predictions.items()},
            "unavailable": self.unavailable, "backtest": self.backtest.as_dict(),
            "noise": None if self.noise is None else self.noise.as_dict(),
            "bootstrap": self._bootstrap_dict(),
            "fits": {} if self.point is None else self.point.fits_as_dict(),
        })


    def _bootstrap_dict(self) -> dict:
        out = {"simulations": self.bootstrap, "seed": self.seed, "method": INTERVAL_METHOD}
        if self.simulated is not None:
            out.update(finite_refits=self.simulated.refits, backtest_scale=self.simulated.scales,
                       simulated_backtest_range=self.simulated.backtest_range)
        return out


def recommend(
    data: ScalingData,
    targets,
    curves: CurveData | None = None,
    *,
    level: float = 0.9,
    bootstrap: int = 200,
    seed: int = 0,
    noise: float | None = None,
    noise_source: str = "approach3",
    starts: str | np.ndarray = "coarse",
    floor: str | float | None = "approach3",
    delta: float = DEFAULT_DELTA,
    isoflop_budgets=None,
    isoflop_tolerance: float = 0.15,
    warm_starts: int = 3,
    backtest: bool = True,
    approach3: Approach3Fit | None = None,
) -> Recommendation:
    """Predict N*, D* and the loss at every target budget with every predictor; recommend one.

    ``targets``: FLOPs (numbers or '1e21,3e21' strings). ``bootstrap``: simulated data sets for the
    intervals (0: none). ``noise``: the run-to-run relative standard deviation of the loss when
    measured (repeated seeds); None estimates it from the residuals of ``noise_source``: ``"approach3"``
    (the law's; a misfit widens the intervals) or ``"isoflop"`` (each budget's parabola; the law's when
    budgets have too few runs).
    ``starts``, ``floor``, ``delta``, ``isoflop_*``: :class:`~raylm.scaling.pointfit.FitOptions`. ``warm_starts``: the
    Approach 3 optima of the data that each simulated refit starts from. ``backtest=False`` skips it
    (then the default order decides). ``approach3``: an Approach 3 fit of the same ``data`` (and ``delta``)
    to reuse. See the module docstring for the rule.
    """
    budgets = parse_budgets([targets] if isinstance(targets, (str, int, float)) else np.ravel(targets).tolist())
    if not budgets:
        raise UserError("recommend needs at least one target budget (FLOPs, e.g. 1e21)")
    _check(level, bootstrap, warm_starts, noise_source, noise)
    groups = tuple(parse_budgets(isoflop_budgets)) if isoflop_budgets else None
    options = FitOptions(starts=starts, delta=delta, floor=floor, isoflop_budgets=groups,
                         isoflop_tolerance=isoflop_tolerance)
    point = fit_point(data, budgets, options, curves, approach3)
    test = run_backtest(data, options, curves) if backtest else Backtest(None, None, "", note="not run")
    bands, noise_est, sims = {}, None, None
    if bootstrap and point.estimates:
        law_resid = np.log(data.loss) - log_predict(point.theta[0], point.layout.log_n, point.layout.log_d)
        isoflop = isoflop_residuals(point.layout, data.loss) if noise_source == "isoflop" else None
        noise_est = estimate_noise(law_resid, isoflop, noise)
        sims = simulated_intervals(point, test, noise_est, budgets, level, bootstrap, seed, warm_starts,
                                   options.delta)
        bands = sims.bands
    approach, reason = _choose(point, test, sims)
    predictions = {}
    for name, est in point.estimates.items():
        loss_band, run_band = bands.get(name, (None, None))
        predictions[name] = [
            LossPrediction(name, c, float(est.n_opt[0, i]), float(est.d_opt[0, i]), float(est.loss[0, i]),
                           _pair(loss_band, i), _pair(run_band, i), level)
            for i, c in enumerate(budgets)
        ]
    return Recommendation(targets=tuple(budgets), level=level, predictions=predictions,
                          unavailable=dict(point.unavailable), backtest=test, approach=approach, reason=reason,
                          noise=noise_est, bootstrap=bootstrap, seed=seed, simulated=sims, point=point)


def _choose(point: PointFit, test: Backtest, sims: SimulatedIntervals | None) -> tuple[str | None, str]:
    """The rule of the module docstring: smallest backtest error, differences within the noise are ties."""
    available = [k for k in APPROACHES if k in point.estimates]
    if not available:
        return None, "no predictor is available: " + "; ".join(f"{k}: {v}" for k, v in point.unavailable.items())
    ranked = [k for k in test.ranking() if k in available]
    if not ranked:
        why = test.note or "no predictor available on the data without the largest budget"
        return available[0], f"no backtest ({why}); first available in the order {', '.join(APPROACHES)}"
    best = ranked[0]
    errors = ", ".join(f"{k} {test.rel_error[k]:+.2%}" for k in ranked)
    why = (f"smallest backtest error predicting the held-out budget C={test.budget:.3g} "
           f"({test.actual_source} {test.actual:.4g}): {errors}")
    for name in (k for k in APPROACHES if k in ranked and k != best):
        if APPROACHES.index(name) > APPROACHES.index(best):
            break
        sd = sims.difference_sd(name, best) if sims is not None else float("nan")
        excess = abs(np.log1p(test.rel_error[name])) - abs(np.log1p(test.rel_error[best]))
        if np.isfinite(sd) and excess <= sd:
            return name, (f"backtest error within the noise of the smallest ({best}): {excess:.2%} more, one "
                          f"simulated standard deviation of the difference is {sd:.2%}; {name} comes first in "
                          f"the order {', '.join(APPROACHES)}. Errors: {errors}")
    return best, why


def _pair(band, i: int) -> tuple[float, float]:
    if band is None:
        return NAN_PAIR
    return (float(band[0][i]), float(band[1][i]))


def _check(level: float, bootstrap: int, warm_starts: int, noise_source: str, noise: float | None) -> None:
    if not 0 < level < 1:
        raise UserError(f"interval level must be between 0 and 1, got {level}")
    if bootstrap < 0:
        raise UserError(f"bootstrap simulations must be >= 0, got {bootstrap}")
    if noise is not None and not (np.isfinite(noise) and noise > 0):
        raise UserError(f"run noise must be a positive relative standard deviation (e.g. 0.01), got {noise}")
    if noise_source not in ("isoflop", "approach3"):
        raise UserError(f"noise_source must be 'isoflop' or 'approach3', got {noise_source!r}")
    if warm_starts < 1:
        raise UserError(f"warm_starts must be >= 1, got {warm_starts}")
