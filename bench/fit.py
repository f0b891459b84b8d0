"""Benchmark of the Approach 3 fit: 4,500-start grid plus 4,000 bootstrap refits on 250 points.

Prints one JSON object: wall and CPU seconds of the grid fit, of the bootstrap and in total, the fitted
and true laws, and, for comparison in the same run, the textbook per-start scipy L-BFGS-B (analytic
gradient, default tolerances) on a random subset of the starts: the objective each start reaches
there against the batched engine, and its time extrapolated to the full grid. Writes the ``fit``
section of ``bench/results.json``: starts per second of the batched fit against per-start scipy.

    python bench/fit.py [--points 250] [--bootstrap 4000] [--reference-starts 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import Figure, emit
from raylm.json_safe import json_safe
from raylm.scaling.fit.approach3 import (
    DEFAULT_DELTA,
    bootstrap_approach3,
    fit_approach3,
    lbfgs_from_start,
    start_grid,
)
from raylm.scaling.laws import BESIROGLU_2024
from raylm.scaling.synthetic import synthetic_isoflop


class Timer:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=250)
    parser.add_argument("--bootstrap", type=int, default=4000)
    parser.add_argument("--reference-starts", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()

    budgets = np.geomspace(1e18, 3e21, 10)
    data = synthetic_isoflop(BESIROGLU_2024, budgets, per_budget=args.points // len(budgets), noise=0.01,
                             seed=args.seed)
    with Timer() as grid:
        fit = fit_approach3(data, starts="full")
    with Timer() as boot:
        summary = bootstrap_approach3(data.log, fit.local_optima[:3], DEFAULT_DELTA, args.bootstrap, args.seed, 0.95)

    starts = start_grid("full")
    subset = np.random.default_rng(args.seed).choice(len(starts), args.reference_starts, replace=False)
    with Timer() as ref:
        scipy_fun = np.array([lbfgs_from_start(data.log, starts[i], DEFAULT_DELTA, tight=False)[1] for i in subset])
    ours = fit.start_objectives[subset]
    tol = 1e-6 * fit.objective
    result = {
        "points": len(data), "starts": fit.n_starts, "bootstrap_resamples": args.bootstrap,
        "grid_fit_s": round(grid.wall, 2), "bootstrap_s": round(boot.wall, 2),
        "total_s": round(grid.wall + boot.wall, 2),
        "grid_fit_cpu_s": round(grid.cpu, 2), "bootstrap_cpu_s": round(boot.cpu, 2),
        "objective": fit.objective, "starts_at_best": fit.starts_at_best,
        "fitted": fit.law.as_dict(), "true": BESIROGLU_2024.as_dict(),
        "bootstrap_succeeded": summary.n_ok, "bootstrap_stderr": summary.stderr(),
        "reference": {
            "method": "scipy L-BFGS-B per start, analytic gradient, default tolerances",
            "starts": args.reference_starts, "seconds": round(ref.wall, 2),
            "estimated_full_grid_s": round(ref.wall / args.reference_starts * len(starts), 1),
            "best_objective": float(np.min(scipy_fun)), "batched_best_objective_same_starts": float(np.min(ours)),
            "batched_best_objective_all_starts": fit.objective,
            "starts_batched_lower_or_equal": int(np.sum(ours <= scipy_fun + tol)),
            "starts_batched_higher": int(np.sum(ours > scipy_fun + tol)),
            "starts_both_at_best": int(np.sum((ours <= fit.objective + tol) & (scipy_fun <= fit.objective + tol))),
        },
    }
    result = json_safe(result)
    ref_rate = args.reference_starts / ref.wall
    figures = [
        Figure(f"Approach 3 fit starts/s ({fit.n_starts} starts, {len(data)} points) vs scipy L-BFGS-B per start",
               fit.n_starts / grid.wall, ref_rate, "starts/s", "scipy per start",
               notes=f"{result['reference']['starts_batched_higher']} of {args.reference_starts} sampled starts "
                     "ended higher than scipy's"),
        Figure(f"Approach 3 bootstrap, {args.bootstrap} refits", boot.wall, None, "s"),
    ]
    emit("fit", figures, result, started)


if __name__ == "__main__":
    main()
