"""Benchmark of the scaling predictions on public IsoFLOP ladders: leave-future-out, every ladder, every cut.

For every ladder in ``jobs/data/ladders/`` (and a synthetic ladder drawn from a known law), fit on
the budgets up to each cut and predict every later budget (:mod:`raylm.scaling.backtest.ladder`).
Reports, for the recommended prediction, the max and median |error| of the best loss at 3-10x and
30-100x beyond the fit, the coverage and median width of its nominal 90% interval, the share of N*
within a factor 1.5 of the best size measured at 3-10x, and the fit time; every predictor's table is
in the details. Coverage is reported twice: in-sample (the shipped quantile, calibrated on every
ladder) and leave-one-source-out (the quantile calibrated on the other sources' ladders only, the
honest figure for a ladder the calibration never saw). Writes the ``ladders`` section of
``bench/results.json``.

    python bench/ladders.py [--level 0.9] [--write-calibration]

``--write-calibration`` rewrites ``platform/raylm/scaling/intervals/calibration.json`` from these
backtests (the conformity scores of the recommended prediction, each ladder weighing the same).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _common import Figure, emit, log
from raylm.scaling.backtest.ladder import RECOMMENDED, backtest_ladder, format_summary, hindsight_combination
from raylm.scaling.intervals.calibrated import CALIBRATION_FILE, calibration_table, weighted_quantile
from raylm.scaling.io import read_ladders
from raylm.scaling.laws import BESIROGLU_2024
from raylm.scaling.predict.pointfit import FitOptions
from raylm.scaling.synthetic import synthetic_isoflop

LADDERS = Path(__file__).resolve().parent.parent / "jobs" / "data" / "ladders"


def public_ladders() -> dict:
    """Every public ladder by name, with the source it comes from (for leave-one-source-out)."""
    out = {}
    for path in sorted(LADDERS.glob("*.csv")):
        for name, data in read_ladders(path).items():
            out[name] = (path.stem, data)
    return out


def synthetic_ladder():
    """Eight budgets 1e18-1e20 of a known law (Besiroglu et al. 2024) with 1% run noise: the harness's control."""
    budgets = np.geomspace(1e18, 1e20, 8)
    return "synthetic", synthetic_isoflop(BESIROGLU_2024, budgets, per_budget=7, spread=16.0, noise=0.01, seed=0)


def _ceiling_note(ceiling: dict | None, noise) -> str:
    """The hindsight-best fixed combination's 3-10x max error and the measured bests' own scatter, as notes (both
    see the answers: floors, not rivals)."""
    best = (ceiling or {}).get("3-10x", {"cases": 0})
    note = f"; hindsight-best fixed combination max {best['max_abs_error']:.2%}" if best["cases"] else ""
    return note + (f"; {noise.describe()}" if noise is not None else "")


def _admit_note(bucket: dict) -> str:
    """How wide a range the minima up to each cut alone admitted (raylm.scaling.fit.admitted), as a note."""
    width = bucket.get("minima_admit_median_width")
    if width is None:
        return ""
    return (f"; the minima alone admit a median range of {width:.1%} of the loss here "
            f"(covering {bucket['minima_admit_coverage']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--write-calibration", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    ladders = public_ladders()
    source, data = synthetic_ladder()
    ladders["synthetic_besiroglu_2024"] = (source, data)
    results = {}
    for name, (src, data) in ladders.items():
        log(f"backtesting {name}")
        options = FitOptions(isoflop_budgets=tuple(sorted(set(data.flops.tolist()))))
        results[name] = (src, backtest_ladder(data, options, name=name, level=args.level))
        log("\n" + format_summary(results[name][1], [RECOMMENDED, "frontier", "approach3", "frontier_free",
                                                     "power_law", "approach2"]))
    public = {k: v for k, v in results.items() if v[0] != "synthetic"}
    scores, groups, sources = [], [], []
    for name, (src, res) in public.items():
        for c in res.cases:
            if c.record.predictor == RECOMMENDED and c.u > 0:
                scores.append(abs(c.record.log_error) / c.u)
                groups.append(name)
                sources.append(src)
    scores, groups, sources = np.array(scores), np.array(groups), np.array(sources)
    if args.write_calibration:
        table = calibration_table(scores, groups)
        table["method"] = ("split conformal: the level quantile of |ln(pred/measured)| / u of the recommended "
                           "prediction over every leave-future-out case of the public ladders, each ladder "
                           "weighing the same (raylm.scaling.intervals.calibrated)")
        table["ladders"] = sorted(set(groups.tolist()))
        CALIBRATION_FILE.write_text(json.dumps(table, indent=2) + "\n")
        log(f"wrote {CALIBRATION_FILE}")
    details, figures = {"level": args.level, "ladders": {}}, []
    worst3, worst30, covers, widths, n15 = [], [], [], [], []
    for name, (src, res) in results.items():
        rec = [c for c in res.cases if c.record.predictor == RECOMMENDED]
        q_out = weighted_quantile(scores[sources != src], groups[sources != src], args.level)
        summary = res.summary()
        hindsight = hindsight_combination(res.cases)
        ceiling = hindsight.as_dict() if hindsight else None
        s3, s30 = summary[RECOMMENDED]["3-10x"], summary[RECOMMENDED]["30-100x"]
        held_out = float(np.mean([c.covered(q_out) for c in rec])) if rec else None
        entry = {"source": src, "budgets": res.budgets, "cases": len(rec), "fit_seconds_per_cut": res.fit_seconds,
                 "3-10x": s3, "30-100x": s30, "all": summary[RECOMMENDED]["all"],
                 "coverage_leave_one_source_out": held_out, "quantile_leave_one_source_out": q_out,
                 "every_predictor": summary, "hindsight_fixed_combination": ceiling,
                 "target_noise": None if res.target_noise is None else res.target_noise.as_dict()}
        details["ladders"][name] = entry
        if s3["cases"]:
            figures.append(Figure(f"{name}: recommended max |error| at 3-10x ({s3['cases']} cases)",
                                  100 * s3["max_abs_error"], unit="%", goal=1.0, goal_on="raylm",
                                  higher_is_better=False,
                                  notes=f"median {s3['median_abs_error']:.2%}; N* within 1.5x "
                                        f"{s3['n_within_factor']:.0%}{_ceiling_note(ceiling, res.target_noise)}"
                                        f"{_admit_note(s3)}"))
            if src != "synthetic":
                worst3.append(s3["max_abs_error"])
                n15.append(s3["n_within_factor"])
        if s30["cases"]:
            figures.append(Figure(f"{name}: recommended max |error| at 30-100x ({s30['cases']} cases)",
                                  100 * s30["max_abs_error"], unit="%", goal=2.0, goal_on="raylm",
                                  higher_is_better=False))
            if src != "synthetic":
                worst30.append(s30["max_abs_error"])
        all_ = entry["all"]
        figures.append(Figure(f"{name}: {args.level:.0%} interval coverage, leave-one-source-out "
                              f"(in-sample {all_['coverage']:.2f})", held_out, goal=0.85, goal_on="raylm",
                              notes=f"median width {all_['median_width'] or float('nan'):.2%} of the loss"))
        if src != "synthetic":
            covers.append(held_out)
            widths.append(all_["median_width"])
    details["public_worst"] = {"max_abs_error_3_10x": max(worst3, default=None),
                               "max_abs_error_30_100x": max(worst30, default=None),
                               "min_coverage_leave_one_source_out": min(covers, default=None),
                               "max_median_width": max(widths, default=None),
                               "min_n_within_1.5x_3_10x": min(n15, default=None)}
    emit("ladders", figures, details, started)


if __name__ == "__main__":
    main()
