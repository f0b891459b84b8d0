"""``raylm fit --csv FILE``: fit Chinchilla scaling laws to finished runs, predict, plot."""

from __future__ import annotations

import argparse
import json

EPILOG = """\
The CSV has a header row and one row per run: params,tokens,loss (flops optional: the compute
each run was charged; 6*params*tokens when absent; tokens may be left out when flops is given).

A `budget` column (a ladder's nominal compute label) groups runs exactly by it; an `experiment`
column names the ladder of each row when a file holds several (--experiment picks one; --backtest
runs every one).

examples:
  raylm fit --csv jobs/data/synthetic_isoflop.csv --budget 1e22 --out fit_out
  raylm fit --csv runs.csv --bootstrap 4000 --seed 0 --budget 5.76e23,1e24
  raylm fit --csv jobs/data/ladders/llama_3.csv --backtest --out backtest_out
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="fit scaling laws (Chinchilla Approaches 2 and 3) to a CSV of runs",
        description="Fit L(N, D) = E + A/N^alpha + B/D^beta (Approach 3: Huber on the log loss, 4,500 starts)\n"
        "and IsoFLOP parabolas (Approach 2); print the fits as JSON, predict the compute-optimal\n"
        "N*, D* and loss for --budget values, and write plots to --out (Hoffmann et al. 2022;\n"
        "Besiroglu et al. 2024). With --budget, 'recommended' holds, per budget, the prediction of\n"
        "the predictor (Approach 2, 3 or the loss frontier) that best predicted the largest budget\n"
        "when it was held out ('backtest'), with a prediction interval. See docs/scaling.md.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--csv", required=True, metavar="FILE", help="runs: params,tokens,loss[,flops]")
    parser.add_argument("--out", metavar="DIR", help="write isoflops.png, optimal_allocation.png, "
                        "loss_contours.png and fit.json here")
    parser.add_argument("--budget", action="append", default=[], metavar="C",
                        help="target compute in FLOPs; repeat or give a comma list (1e22,1e23)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="bootstrap resamples for standard errors and intervals (0: none; the paper used 4000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--starts", choices=("full", "coarse"), default="full",
                        help="Approach 3 start grid: full = 4,500 starts, coarse = 243")
    parser.add_argument("--delta", type=float, default=1e-3, help="Huber delta on the log-loss residual")
    parser.add_argument("--level", type=float, default=None,
                        help="interval level, e.g. 0.95 or 0.8 (default 0.95; 0.9 with --backtest)")
    parser.add_argument("--exclude-highest", type=int, default=0, metavar="K",
                        help="drop the K highest-loss runs first (Besiroglu et al. 2024 drop 5)")
    parser.add_argument("--isoflop-budgets", action="append", metavar="C",
                        help="Approach 2: nominal budgets to group runs by (default: group by compute)")
    parser.add_argument("--isoflop-tolerance", type=float, default=0.15, metavar="T",
                        help="Approach 2: runs within a factor 1+T of a budget belong to it")
    parser.add_argument("--simulations", type=int, default=200, metavar="N",
                        help="recommended prediction: simulated data sets for its loss interval (0: none)")
    parser.add_argument("--backtest", action="store_true",
                        help="leave-future-out backtest: fit on the budgets up to each cut, predict every later "
                        "budget; print a table per ladder (and backtest.json in --out, or --json)")
    parser.add_argument("--json", action="store_true", help="with --backtest: print JSON instead of the table")
    parser.add_argument("--experiment", metavar="NAME", help="the ladder to use when the CSV's 'experiment' "
                        "column holds several")
    parser.add_argument("--noise", type=float, default=None, metavar="SIGMA",
                        help="recommended prediction: run-to-run relative noise of the loss, if measured "
                        "(e.g. 0.005 from repeated seeds); default: estimated from the Approach 3 residuals")
    parser.set_defaults(func=_fit)


def _fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from raylm.scaling.io import has_budget_labels, read_csv
    from raylm.scaling.predict.approaches import parse_budgets

    if args.backtest:
        return _backtest(args)
    from raylm.scaling.fit_all import fit_scaling_laws
    from raylm.scaling.predict.pointfit import FitOptions
    from raylm.scaling.predict.recommend import IntervalOptions

    data = read_csv(args.csv, args.experiment)
    groups = parse_budgets(args.isoflop_budgets)
    if not groups and has_budget_labels(args.csv):
        groups = sorted(set(data.flops.tolist()))
    fit = FitOptions(starts=args.starts, delta=args.delta, isoflop_budgets=groups,
                     isoflop_tolerance=args.isoflop_tolerance)
    intervals = IntervalOptions(level=0.95 if args.level is None else args.level, simulations=args.simulations,
                                seed=args.seed, noise=args.noise)
    report = fit_scaling_laws(data, targets=parse_budgets(args.budget), fit=fit, intervals=intervals,
                              bootstrap=args.bootstrap,
                              exclude_highest=args.exclude_highest)
    result = report.as_dict()
    if args.out:
        from raylm.scaling.plots import write_plots

        out = Path(args.out)
        targets = [p.budget for p in report.predictions if p.approach == "approach3"]
        paths = write_plots(out, report.data, approach2=report.approach2, approach3=report.approach3,
                            targets=targets)
        result["plots"] = [str(p) for p in paths]
        (out / "fit.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def _backtest(args: argparse.Namespace) -> int:
    """``--backtest``: every ladder of the file (or --experiment), a table each, JSON to --out or stdout."""
    import sys
    from pathlib import Path

    from raylm.errors import UserError
    from raylm.json_safe import json_safe
    from raylm.scaling.backtest.ladder import backtest_ladder, format_summary
    from raylm.scaling.io import has_budget_labels, read_csv, read_ladders
    from raylm.scaling.predict.approaches import parse_budgets
    from raylm.scaling.predict.pointfit import FitOptions

    if args.experiment is None:
        ladders = read_ladders(args.csv)
    else:
        ladders = {args.experiment: read_csv(args.csv, args.experiment)}
    labelled = has_budget_labels(args.csv)
    results = []
    for name, data in ladders.items():
        data = data.without_highest_losses(args.exclude_highest)
        groups = parse_budgets(args.isoflop_budgets) or (sorted(set(data.flops.tolist())) if labelled else None)
        options = FitOptions(starts=args.starts, delta=args.delta, isoflop_budgets=groups,
                             isoflop_tolerance=args.isoflop_tolerance)
        print(f"backtesting {name} ...", file=sys.stderr, flush=True)
        result = backtest_ladder(data, options, name=name, level=0.9 if args.level is None else args.level,
                                 progress=lambda done, total: print(f"  cut {done}/{total}", file=sys.stderr,
                                                                    end="\r" if sys.stderr.isatty() else "\n",
                                                                    flush=True))
        results.append(result)
        if not args.json:
            print(format_summary(result) + "\n")
    if not any(r.cases for r in results):
        raise UserError(f"{args.csv}: no backtest case: " + "; ".join(r.why_empty() for r in results))
    payload = json_safe({"csv": str(args.csv), "ladders": [r.as_dict() for r in results]})
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "backtest.json").write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {out / 'backtest.json'}", file=sys.stderr)
    if args.json:
        print(json.dumps(payload, indent=2))
    return 0
