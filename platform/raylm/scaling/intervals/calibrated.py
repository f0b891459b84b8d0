"""Prediction intervals calibrated on real extrapolation errors (split conformal, by ladder).

A simulated bootstrap knows only the noise of a law it assumes; on real ladders the law itself is
wrong by more than that, and such intervals missed every held-out budget tried (docs/scaling.md).
Here the interval of a prediction L_hat at target budget C is

    L_hat * exp(-+ q_level * u),   u = sqrt((s^2 + m^2) * ln(1 + r)^2 + D^2)

- r = C / (the largest budget fitted): the interval grows with the extrapolation ratio;
- s: the data's own extrapolation error, the RMS over its leave-future-out cases of every
  component's ln(pred / actual) / ln(1 + ratio) (:attr:`raylm.scaling.predict.stacking.Choice.scale`;
  0 when there are none);
- m: how far the data's own runs lie from the fitted Chinchilla law, the RMS of the Approach 3 log
  residuals over n - 5 degrees of freedom (:func:`law_misfit`): a law that misses the runs it was
  fitted on by m misses more the further it extrapolates (a ladder whose runs scatter 1-2% around the
  law extrapolated worse than those within 0.2-0.8%, docs/scaling.md);
- D = ln(max / min) of the available predictors' predictions at C: the interval grows when they
  disagree;
- q_level: the ``level`` quantile of the conformity scores |ln(L_hat / L_measured)| / u of the
  recommended prediction over every leave-future-out case of the public ladders (split conformal
  prediction, Vovk et al. 2005; Angelopoulos & Bates 2021, section 1 and 2.1; each ladder weighs
  the same, however many cases it has). The table ships in ``calibration.json``, written
  by ``bench/ladders.py --write-calibration``; its leave-one-ladder-out coverage (the honest figure)
  is reported beside the in-sample one in docs/scaling.md.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from raylm.errors import UserError
from raylm.scaling.fit.objective import N_PARAMS
from raylm.scaling.residuals import residual_sigma

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")


def interval_scale(ratio, spread, scale: float, misfit: float = 0.0) -> np.ndarray:
    """u = sqrt((s^2 + m^2) ln(1 + r)^2 + D^2) for extrapolation ratios ``ratio``, disagreements ``spread`` (D),
    the data's extrapolation error ``scale`` (s) and the law's ``misfit`` (m); s or m not finite count as 0."""
    s = float(scale) if np.isfinite(scale) else 0.0
    m = float(misfit) if np.isfinite(misfit) else 0.0
    slope = (s * s + m * m) * np.log1p(np.asarray(ratio, dtype=float)) ** 2
    return np.sqrt(slope + np.asarray(spread, dtype=float) ** 2)


def law_misfit(log_residuals) -> float:
    """m = sqrt(sum r^2 / (n - 5)) of the Approach 3 law's residuals ln(L / L_law) (nan with 5 runs or fewer)."""
    r = np.asarray(log_residuals, dtype=float)
    return residual_sigma(r, r.size - N_PARAMS)


def spread_of(predictions: dict[str, np.ndarray]) -> np.ndarray:
    """D = ln(max / min) over the predictors' losses, per target (0 with one predictor)."""
    stack = np.log(np.vstack([np.asarray(v, dtype=float).ravel() for v in predictions.values()]))
    return stack.max(axis=0) - stack.min(axis=0)


def weighted_quantile(scores, groups, level: float) -> float:
    """The ``level`` quantile of ``scores`` with every group weighing the same (the conformal "higher" rule)."""
    scores, groups = np.asarray(scores, dtype=float), np.asarray(groups)
    ok = np.isfinite(scores)
    scores, groups = scores[ok], groups[ok]
    if scores.size == 0:
        return float("nan")
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    order = np.argsort(scores)
    cum = np.cumsum(weights[order]) / weights.sum()
    return float(scores[order][min(np.searchsorted(cum, level - 1e-12), scores.size - 1)])


def calibration_table(scores, groups, levels=None) -> dict:
    """The quantile per level, as written to ``calibration.json``."""
    levels = np.round(np.arange(0.5, 0.991, 0.01), 2) if levels is None else levels
    return {"levels": [float(v) for v in levels],
            "quantiles": [weighted_quantile(scores, groups, float(v)) for v in levels]}


@lru_cache(maxsize=4)
def _load(path: str) -> dict:
    return json.loads(Path(path).read_text())


def calibrated_quantile(level: float, path: Path = CALIBRATION_FILE) -> float:
    """q_level from the shipped table (linear between its levels); UserError outside them."""
    table = _load(str(path))
    levels, quantiles = np.array(table["levels"]), np.array(table["quantiles"])
    if not levels[0] <= level <= levels[-1]:
        raise UserError(f"calibrated intervals exist for levels {levels[0]:g}-{levels[-1]:g}, got {level}")
    return float(np.interp(level, levels, quantiles))


def calibrated_interval(loss, ratio, spread, scale: float, level: float,
                        misfit: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per target; nan where u is 0 (one predictor and no backtest: nothing to calibrate on)."""
    return calibrated_bounds(loss, interval_scale(ratio, spread, scale, misfit), level)


def calibrated_bounds(loss, u, level: float) -> tuple[np.ndarray, np.ndarray]:
    """``loss * exp(-+ q_level u)`` per target; nan where u is 0."""
    q = calibrated_quantile(level)
    loss, u = np.asarray(loss, dtype=float), np.asarray(u, dtype=float)
    with np.errstate(invalid="ignore"):
        low, high = loss * np.exp(-q * u), loss * np.exp(q * u)
    return np.where(u > 0, low, np.nan), np.where(u > 0, high, np.nan)
