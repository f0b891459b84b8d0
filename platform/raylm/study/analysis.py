"""After the grid, the numbers: which points count, every fit with the recommended prediction, the
verification points it calls for, and the headline metrics. Pure: nothing here trains or logs
(:mod:`raylm.study.run` does, :mod:`raylm.study.publish` writes the parent run).
"""

from __future__ import annotations

import math

import numpy as np

from raylm.errors import UserError
from raylm.json_safe import json_safe
from raylm.scaling.predict.pointfit import FitOptions
from raylm.study.config import Study
from raylm.study.grid import StudyPoint, verification_point
from raylm.study.results import PointResult, scaling_data


def usable_points(results: list[PointResult], log) -> list[PointResult]:
    """The finished points with a finite loss; warns about the rest, refuses too few budgets."""
    ok = [r for r in results if r.loss is not None and math.isfinite(r.loss)]
    failed = [r for r in results if r not in ok]
    for r in failed:
        log(f"warning: grid point {r.point.label} failed (status {r.status}); it is left out of the fits")
    if len({r.point.grid.budget for r in ok}) < 2:
        raise UserError(f"only {len(ok)} grid points finished ({len(failed)} failed); the fits need two or more "
                        "budgets with 3 points each. Look at the failed runs in MLflow, then run the study again")
    return ok


def fit_results(study: Study, ok: list[PointResult]):
    """Every predictor on the finished points (``raylm.scaling.predict.recommend``): (a JSON-safe dict, the
    :class:`~raylm.scaling.predict.recommend.Recommendation` itself, whose fits the plots draw)."""
    from raylm.scaling.curves import CurveData
    from raylm.scaling.predict.recommend import IntervalOptions, recommend

    records = [{"run": r.point.label, "params": r.point.grid.params, "tokens": t, "loss": v}
               for r in ok for t, v in r.curve if t > 0]
    curves = CurveData.from_records(records, source="the grid's validation curves") if records else None
    cfg, data = study.config.fit, scaling_data(ok)
    options = FitOptions(isoflop_budgets=study.config.budgets)
    result = recommend(data, study.config.targets, curves=curves, fit=options,
                       intervals=IntervalOptions(level=cfg.level, simulations=cfg.simulations, seed=cfg.seed))
    if not result.recommended:
        raise UserError(f"no predictor could be fitted to the grid: {result.unavailable}")
    out = result.as_dict()
    if len(study.config.budgets) >= 4:  # a leave-future-out table of the grid itself (3 budgets fitted, 1+ later)
        from raylm.scaling.backtest.ladder import backtest_ladder

        ladder = backtest_ladder(data, options, name=study.config.name, level=cfg.level)
        out["ladder_backtest"] = json_safe(ladder.as_dict())
    return out, result


def verification_points(study: Study, recommended: list[dict], log) -> list[StudyPoint]:
    """The verification run at the recommended N* (and the comparison allocation, when asked for)."""
    if not study.config.verify.enabled:
        return []
    target = recommended[0]
    points = [verification_point(study, target["budget"], target["n_opt"])]
    ratio = study.config.verify.compare_tokens_per_param
    if ratio:
        compare = verification_point(study, target["budget"], math.sqrt(target["budget"] / (6 * ratio)),
                                     kind=f"compare{ratio:g}")
        if compare.grid.params == points[0].grid.params:
            log(f"comparison at {ratio:g} tokens per parameter picks the same model as the recommendation; "
                "it is not trained twice")
        else:
            points.append(compare)
    for p in points:
        log(f"verification: {p.label}: N={p.grid.params:,} D={p.grid.tokens:,} ({p.tokens_per_param():.1f} tokens "
            f"per parameter), {p.grid.steps} steps")
    return points


def headline_metrics(fit: dict, recommended: list[dict], verify: list[PointResult]) -> dict:
    top = recommended[0]
    metrics = {"predicted/loss": top["loss"], "predicted/n_opt": top["n_opt"], "predicted/d_opt": top["d_opt"],
               "predicted/tokens_per_param": top["d_opt"] / top["n_opt"],
               "predicted/loss_low": top["loss_interval"][0], "predicted/loss_high": top["loss_interval"][1]}
    fits = fit.get("fits") or {}
    law = fits.get("approach3") or {}
    metrics.update({f"fit/{k}": law[k] for k in ("E", "A", "B", "alpha", "beta", "a", "b") if law.get(k) is not None})
    approach2 = fits.get("approach2") or {}
    metrics.update({f"fit/approach2_{k}": approach2[k] for k in ("a", "b") if approach2.get(k) is not None})
    frontier = fits.get("frontier") or {}
    metrics.update({f"fit/frontier_{k}": frontier[k] for k in ("E", "C0", "gamma") if frontier.get(k) is not None})
    metrics["fit/law_misfit"] = fit.get("law_misfit")  # the interval's m (raylm.scaling.intervals.calibrated)
    admitted = fit.get("minima_admit")  # what the grid's minima alone admit (raylm.scaling.fit.admitted)
    if admitted:
        metrics.update({"predicted/minima_admit_low": admitted["low"][0],
                        "predicted/minima_admit_high": admitted["high"][0]})
    for name, error in ((fit.get("backtest") or {}).get("rel_error") or {}).items():
        if error is not None:
            metrics[f"backtest/{name}_rel_error"] = error
    for name, preds in (fit.get("predictions") or {}).items():
        if preds:
            metrics[f"predicted/{name}_loss"] = preds[0]["loss"]
    for name, errors in (fit.get("leave_future_out") or {}).items():
        metrics[f"backtest/{name}_rms_rel_error"] = errors["rms_rel_error"]
    for name, weight in ((fit.get("choice") or {}).get("weights") or {}).items():
        metrics[f"recommended/weight_{name}"] = weight
    if verify and verify[0].loss is not None:
        measured = verify[0].loss
        metrics.update({"verify/loss": measured, "verify/rel_error": (top["loss"] - measured) / measured,
                        "verify/n": verify[0].point.grid.params, "verify/d": verify[0].point.grid.tokens,
                        "verify/in_run_interval": _inside(measured, top.get("run_interval"))})
    for extra in verify[1:]:
        if extra.loss is not None:
            metrics[f"verify/{extra.point.kind}_loss"] = extra.loss
    return {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}


def _inside(value: float, pair) -> float | None:
    """1.0 / 0.0 whether ``value`` lies in the interval; None when the interval could not be computed."""
    if not pair or any(bound is None or not math.isfinite(bound) for bound in pair):
        return None
    return float(pair[0] <= value <= pair[1])
