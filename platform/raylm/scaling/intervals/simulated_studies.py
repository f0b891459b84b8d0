"""Run the simulated studies behind every predictor's interval (the method: :mod:`raylm.scaling.intervals.simulated`).

Each simulated data set goes through what the data went through: every predictor refit (Approach 3
from the data's best optima, the rest in closed form), and the backtest (largest budget held out,
refit from the backtest fit's optima, the held-out best loss measured the same way). The simulated
target errors make the pivot intervals; the simulated backtest errors check the real backtest.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from raylm.scaling.backtest.largest_budget import Backtest, held_out_best_rows
from raylm.scaling.fit.objective import log_predict
from raylm.scaling.intervals.simulated import CHECK_LEVEL, NoiseEstimate, backtest_scale, pivot_interval, simulate
from raylm.scaling.predict.pointfit import PointFit
from raylm.scaling.predict.predictors import estimate_rows, law_rows, refit_law_rows


@dataclass(frozen=True)
class SimulatedIntervals:
    """Per predictor: (loss band, run band) as ((low (T,), high (T,)), ...), finite refits per target,
    the backtest scale k and the simulated backtest errors' central 68.3% range (relative errors)."""

    bands: dict
    refits: dict[str, list[int]]
    scales: dict[str, float]
    backtest_range: dict[str, tuple[float, float]]
    backtest_errors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # ln(pred/actual) (S,)


def simulated_intervals(point: PointFit, test: Backtest, noise: NoiseEstimate, targets, options,
                        delta: float) -> SimulatedIntervals:
    """Simulate ``options.simulations`` studies from the Approach 3 fit of ``point`` and build every predictor's
    interval at ``options.level`` (``options``: :class:`raylm.scaling.predict.recommend.IntervalOptions`)."""
    level, size, warm_starts = options.level, options.simulations, options.warm_starts
    rng = np.random.default_rng(options.seed)
    layout, theta, law = point.layout, point.theta, point.approach3.law
    log_fitted = log_predict(theta[0], layout.log_n, layout.log_d)
    n_curves = 0 if layout.grid is None else layout.grid.params.size
    losses, factors, sigma = simulate(log_fitted, noise, size, rng, n_curves)
    theta_s = refit_law_rows(layout, losses, point.approach3.local_optima[:warm_starts], delta)
    if n_curves:  # simulated curves follow the fitted law too: the envelope's own bias shows in the pivot
        layout = replace(layout, grid=layout.grid.world(law.loss))
    rows = estimate_rows(layout, losses, theta_s, targets, factors if n_curves else None)
    world = law_rows(theta, targets).loss[0]
    sim_errors = _simulated_backtest(point, test, losses, factors, warm_starts, delta)
    bands, refits, scales, ranges = {}, {}, {}, {}
    tail = 50.0 * (1.0 - CHECK_LEVEL)
    for name, est in point.estimates.items():
        scale = 1.0
        if name in sim_errors and name in test.rel_error:
            scale = backtest_scale(float(np.log1p(test.rel_error[name])), sim_errors[name])
            finite = sim_errors[name][np.isfinite(sim_errors[name])]
            if finite.size:
                lo, hi = np.expm1(np.percentile(finite, [tail, 100.0 - tail]))
                ranges[name] = (float(lo), float(hi))
        piv = pivot_interval(est.loss[0], rows[name].loss, world, sigma, level, rng, scale=scale)
        bands[name] = (piv.loss, piv.run)
        refits[name] = [int(c) for c in piv.refits]
        scales[name] = scale
    return SimulatedIntervals(bands, refits, scales, ranges, sim_errors)


def _simulated_backtest(point: PointFit, test: Backtest, losses, factors, warm_starts: int, delta: float) -> dict:
    """ln(predicted / actual) of the held-out budget for every simulated data set, per predictor."""
    bt = test.point
    if bt is None or test.held_out is None or bt.approach3 is None:
        return {}
    held = test.held_out
    sub = losses[:, ~held]
    theta = refit_law_rows(bt.layout, sub, bt.approach3.local_optima[:warm_starts], delta)
    layout, sub_factors = bt.layout, None
    if layout.grid is not None and point.layout.grid is not None:
        index = [point.layout.grid.run_ids.index(r) for r in layout.grid.run_ids]
        layout = replace(layout, grid=layout.grid.world(point.approach3.law.loss))
        sub_factors = factors[:, index]
    rows = estimate_rows(layout, sub, theta, [test.budget], sub_factors)
    actual, _ = held_out_best_rows(point.data.params[held], losses[:, held])
    with np.errstate(all="ignore"):
        return {name: np.log(est.loss[:, 0] / actual) for name, est in rows.items() if name in bt.estimates}
