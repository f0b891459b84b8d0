"""Fit every predictor once to measured data: point estimates, and why a predictor is unavailable.

The availability rules (a predictor that cannot run is reported with its reason, never an error):

- ``approach3``: runs at 2+ compute budgets, and a fitted law with alpha > 0 and beta > 0 (else the
  law has no compute-optimal allocation, Hoffmann et al. 2022, eq. 4);
- ``approach2``: 2+ budgets with 3+ sizes and an interior parabola minimum (:func:`fit_approach2`);
- ``frontier``: 2+ budgets with 3+ sizes and an interior minimum (4+ with a free floor), a floor below
  every budget's minimum loss, and minima that decrease with compute (:mod:`raylm.scaling.fit.frontier`);
  ``frontier_free`` the same with 4+ such budgets, ``power_law`` with E = 0; ``frontier_gamma`` (its
  exponent pinned) 2+ such budgets and a fitted floor E >= 0;
- ``approach1``: training curves of 2+ runs whose envelope changes model size (:mod:`raylm.scaling.fit.approach1`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from raylm.errors import UserError
from raylm.scaling.curves import CurveData
from raylm.scaling.data import ScalingData
from raylm.scaling.fit.approach1 import Approach1Fit, Approach1Unavailable, fit_approach1
from raylm.scaling.fit.approach2 import Approach2Fit, Approach2Unavailable, fit_approach2, group_budgets
from raylm.scaling.fit.approach3 import DEFAULT_DELTA, Approach3Fit, fit_approach3
from raylm.scaling.fit.frontier import (
    MIN_BUDGETS_FREE_FLOOR,
    MIN_BUDGETS_PINNED_EXPONENT,
    FrontierLaw,
    FrontierUnavailable,
    check_frontier_inputs,
    fit_frontier,
    fit_frontier_pinned_exponent,
)
from raylm.scaling.fit.objective import log_predict
from raylm.scaling.intervals.calibrated import law_misfit
from raylm.scaling.predict.approaches import checked_budgets
from raylm.scaling.predict.predictors import (
    APPROACHES,
    REFERENCE_EXPONENT,
    Estimates,
    Layout,
    estimate_rows,
    frontier_minima,
    isoflop_rows,
)


@dataclass(frozen=True)
class FitOptions:
    """How every predictor is fitted; the same for the data, the backtest and every simulated data set.

    ``floor``: the frontier's E, ``"approach3"`` (the Approach 3 fit's E), a number, or None (fitted,
    4+ budgets). ``engine``: the Approach 3 search, ``"vp"`` (variable projection, then the published
    objective polished; :mod:`raylm.scaling.fit.vpnls`) or ``"batched"`` from the ``starts`` grid
    (``"coarse"``: 243 starts, ``"full"``: 4,500, or rows). ``isoflop_budgets``/``isoflop_tolerance``: how
    runs group into budgets (:func:`raylm.scaling.fit.approach2.group_budgets`). ``curve_points``/``min_runs``:
    Approach 1's grid.
    """

    starts: str | np.ndarray = "coarse"
    engine: str = "vp"
    delta: float = DEFAULT_DELTA
    floor: str | float | None = "approach3"
    isoflop_budgets: tuple | None = None
    isoflop_tolerance: float = 0.15
    curve_points: int = 256
    min_runs: int = 2

    def __post_init__(self) -> None:
        if self.isoflop_budgets is not None:
            groups = tuple(checked_budgets(self.isoflop_budgets))
            object.__setattr__(self, "isoflop_budgets", groups or None)
        if isinstance(self.floor, str) and self.floor != "approach3":
            raise UserError(f"frontier floor must be 'approach3', a number or None, got {self.floor!r}")


@dataclass(frozen=True)
class PointFit:
    """Fits to one data set: the predictors' estimates at ``targets`` (one row each) and the reasons for the rest."""

    data: ScalingData = field(repr=False)
    layout: Layout = field(repr=False)
    targets: np.ndarray
    approach3: Approach3Fit | None
    approach2: Approach2Fit | None
    approach1: Approach1Fit | None
    frontier: FrontierLaw | None
    estimates: dict[str, Estimates] = field(repr=False)
    unavailable: dict[str, str]
    frontier_gamma: FrontierLaw | None = None  # the frontier with its exponent pinned
    minima: tuple[np.ndarray, np.ndarray] = field(default=(np.zeros(0), np.zeros(0)), repr=False)  # (budgets, losses)

    @property
    def theta(self) -> np.ndarray:
        """(1, 5) law parameters of the Approach 3 fit (nan when it failed)."""
        return np.full((1, 5), np.nan) if self.approach3 is None else self.approach3.theta[None, :]

    @cached_property
    def law_residuals(self) -> np.ndarray:
        """ln(L / L_law) of every run against the Approach 3 law (nan when it failed)."""
        return np.log(self.data.loss) - log_predict(self.theta[0], self.layout.log_n, self.layout.log_d)

    @cached_property
    def law_misfit(self) -> float:
        """m of the calibrated interval: the RMS of :attr:`law_residuals` over n - 5 degrees of freedom."""
        return law_misfit(self.law_residuals)

    def fits_as_dict(self) -> dict:
        return {"approach3": None if self.approach3 is None else self.approach3.as_dict(),
                "approach2": None if self.approach2 is None else self.approach2.as_dict(),
                "approach1": None if self.approach1 is None else self.approach1.as_dict(),
                "frontier": None if self.frontier is None else self.frontier.as_dict(),
                "frontier_gamma": None if self.frontier_gamma is None else self.frontier_gamma.as_dict()}


def fit_point(data: ScalingData, targets, options: FitOptions, curves: CurveData | None = None,
              approach3: Approach3Fit | None = None) -> PointFit:
    """Fit every predictor to ``data`` (and ``curves``) and estimate at ``targets``; see the module docstring.

    ``approach3``: an Approach 3 fit of the same ``data`` to reuse instead of fitting again.
    """
    targets = np.atleast_1d(np.asarray(targets, dtype=float))
    unavailable: dict[str, str] = {}
    a1, grid = None, None
    a3 = approach3 if approach3 is not None else fit_approach3(data, starts=options.starts, delta=options.delta,
                                                               engine=options.engine)
    if a3.n_points != len(data):
        raise UserError(f"the Approach 3 fit given has {a3.n_points} points, the data {len(data)}")
    n_groups = np.unique(group_budgets(data.flops, options.isoflop_budgets, options.isoflop_tolerance)[0]).size
    if n_groups < 2:
        unavailable["approach3"] = f"runs at {n_groups} compute budget(s); extrapolating in compute needs 2+"
    elif not (a3.law.alpha > 0 and a3.law.beta > 0):
        unavailable["approach3"] = (f"the fitted law has alpha={a3.law.alpha:.3g}, beta={a3.law.beta:.3g}: "
                                    "no compute-optimal trade-off between N and D")
    try:
        a2 = fit_approach2(data, budgets=options.isoflop_budgets, tolerance=options.isoflop_tolerance)
    except Approach2Unavailable as exc:
        a2, unavailable["approach2"] = None, str(exc)
    if curves is None:
        unavailable["approach1"] = "no training curves given"
    else:
        try:
            a1 = fit_approach1(curves, floor=_floor_value(options.floor, a3, unavailable),
                               points=options.curve_points, min_runs=options.min_runs)
            grid = a1.grid
            if a1.loss_law is None:
                unavailable["approach1"] = a1.loss_note
        except (Approach1Unavailable, _NoFloor) as exc:
            unavailable["approach1"] = str(exc)
    layout = Layout.build(data, isoflop_budgets=options.isoflop_budgets, tolerance=options.isoflop_tolerance,
                          floor=options.floor, grid=grid)
    theta = a3.theta[None, :]
    budgets_m, minima_m = _measured_minima(layout, data)
    frontier = _frontier(budgets_m, minima_m, a3, options, unavailable)
    rows = estimate_rows(layout, data.loss[None, :], theta, targets)
    if options.floor is None:
        unavailable.setdefault("frontier_free", "the frontier's own floor is already fitted (floor=None)")
    elif not isinstance(options.floor, str) and float(options.floor) == 0.0:
        unavailable.setdefault("power_law", "the frontier's own floor is already 0 (floor=0)")
    estimates = {}
    for name in APPROACHES:
        if name in unavailable:
            continue
        est = rows.get(name)
        if est is None or not np.all(np.isfinite(est.loss)) or not np.all(np.isfinite(est.n_opt)):
            unavailable[name] = "no finite prediction at the target budget(s)"
        else:
            estimates[name] = est
    if "approach3" in unavailable and "approach2" in estimates:
        unavailable["approach2"] = "its loss is the Approach 3 law at its allocation, and Approach 3 is unavailable"
        del estimates["approach2"]
    return PointFit(data=data, layout=layout, targets=targets, approach3=a3, approach2=a2, approach1=a1,
                    frontier=frontier, estimates=estimates, unavailable=unavailable,
                    frontier_gamma=(fit_frontier_pinned_exponent(budgets_m, minima_m, REFERENCE_EXPONENT)
                                    if "frontier_gamma" in estimates else None),
                    minima=(budgets_m, minima_m))


class _NoFloor(ValueError):
    pass


def _floor_value(floor, a3: Approach3Fit, unavailable: dict) -> float | None:
    if floor is None:
        return None
    if isinstance(floor, str):
        if "approach3" in unavailable:
            raise _NoFloor(f"the floor E is pinned to Approach 3's, which is unavailable ({unavailable['approach3']})")
        return a3.law.E
    return float(floor)


def _measured_minima(layout: Layout, data: ScalingData) -> tuple[np.ndarray, np.ndarray]:
    """(budgets, minimum losses) of the budgets whose IsoFLOP minimum is interior: what every frontier fits."""
    _, l_opt, interior, best = isoflop_rows(layout, data.loss[None, :])
    minima = frontier_minima(l_opt, interior, best)[0]
    measured = np.isfinite(minima)
    return layout.budgets[measured], minima[measured]


def _frontier(budgets: np.ndarray, minima: np.ndarray, a3, options: FitOptions,
              unavailable: dict) -> FrontierLaw | None:
    """The frontier through the measured ``minima`` at ``budgets``, or None with the reason recorded (and the
    reasons the frontiers with a pinned exponent or a free floor cannot run, when too few budgets are measured)."""
    if np.unique(budgets).size < MIN_BUDGETS_PINNED_EXPONENT:
        unavailable["frontier_gamma"] = (f"{budgets.size} budget(s) with an interior minimum; the frontier "
                                         f"with a pinned exponent needs {MIN_BUDGETS_PINNED_EXPONENT}+")
    if np.unique(budgets).size < MIN_BUDGETS_FREE_FLOOR:
        unavailable["frontier_free"] = (f"{budgets.size} budget(s) with an interior minimum; a free floor "
                                        f"needs {MIN_BUDGETS_FREE_FLOOR}+")
    try:
        floor = _floor_value(options.floor, a3, unavailable)
        if not budgets.size:
            raise FrontierUnavailable("no budget has its minimum inside the sizes trained")
        check_frontier_inputs(budgets, minima, floor)
        return fit_frontier(budgets, minima, floor)
    except (FrontierUnavailable, _NoFloor) as exc:
        unavailable["frontier"] = str(exc)
        return None
