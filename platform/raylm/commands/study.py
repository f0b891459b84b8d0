"""``raylm study``: plan, run or resume a compute-optimal scaling study."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study", help="a scaling study: IsoFLOP grid -> trials -> fits -> prediction -> verification",
        description="Train an IsoFLOP grid as Ray Tune trials, fit Chinchilla's laws every way, predict the "
                    "compute-optimal N*, D* and loss at the target budgets, and verify with a real run. "
                    "'raylm study plan FILE' prints the grid, compute, data and an estimated wall time first; "
                    "'raylm study show DIR' reprints a study's summary, refits it and redraws its plots from its "
                    "directory alone (no training, no Ray, no tracking store).",
        epilog="examples:\n  raylm study plan jobs/configs/study_demo.yaml\n"
               "  raylm study --config jobs/configs/study_demo.yaml\n"
               "  raylm study --resume jobs/configs/study_demo.yaml   (same as running it again)\n"
               "  raylm study show runs/studies/stdlib-demo-4dc638568d06 --level 0.8 --predictor approach3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", nargs="?", choices=("plan", "run", "show"), default="run")
    parser.add_argument("file", nargs="?", default=None,
                        help="study YAML file (with plan); study directory (with show)")
    parser.add_argument("--config", default=None, help="study YAML file")
    parser.add_argument("--resume", default=None, metavar="FILE",
                        help="run the study FILE again, reusing every finished point")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    parser.add_argument("--verbose", action="store_true",
                        help="stream Ray, Tune, Train, DeepSpeed and worker output here as well (by default it goes "
                             "to logs/ray.log in the run's directory)")
    show = parser.add_argument_group("show", "refit settings of 'raylm study show DIR' (default: the study's own)")
    show.add_argument("--level", type=float, default=None, help="interval level, e.g. 0.8")
    show.add_argument("--simulations", type=int, default=None, help="simulated studies behind each interval")
    show.add_argument("--seed", type=int, default=None)
    show.add_argument("--predictor", default=None, help="recommend this predictor's prediction (e.g. approach3)")
    show.add_argument("--out", default=None, help="where fit.json, the plots and the configs go (default: DIR/show)")
    parser.set_defaults(func=_study, accepts_overrides=True)


def _study(args: argparse.Namespace) -> int:
    from raylm.config_load import parse_override_args
    from raylm.errors import UserError
    from raylm.study.config import load_study

    if args.action == "show":
        return _show(args)
    path = args.file or args.config or args.resume
    if path is None:
        raise UserError("give a study file: raylm study --config STUDY.yaml (or raylm study plan STUDY.yaml)")
    study = load_study(path, parse_override_args(args.overrides))
    if args.action == "plan":
        return _plan(study, args.address)
    from raylm.console import quiet_console
    from raylm.study.run import run_study
    from raylm.study.summary import outcome_summary

    with quiet_console(args.verbose):
        outcome = run_study(study, address=args.address)
    print(outcome_summary(outcome))
    return 0


def _show(args: argparse.Namespace) -> int:
    from raylm.errors import UserError
    from raylm.study.show import ShowSettings, show_study
    from raylm.study.summary import outcome_summary

    if args.file is None:
        raise UserError("give a study directory: raylm study show runs/studies/<name>-<hash>")
    if args.overrides:
        raise UserError("raylm study show refits without training: it takes --level, --simulations, --seed, "
                        f"--predictor and --out, not run config keys ({' '.join(args.overrides)})")
    outcome = show_study(args.file, ShowSettings(args.level, args.simulations, args.seed, args.predictor,
                                                 args.out))
    print(outcome_summary(outcome))
    print(f"\nfit.json, plots and recommended configs: {outcome.answers[0].parent if outcome.answers else ''}")
    return 0


def _plan(study, address) -> int:
    from raylm.parallel.plan import make_plan
    from raylm.study.grid import build_grid, point_config
    from raylm.study.plan import plan_text
    from raylm.study.run import check_corpus

    grid = build_grid(study)  # impossible grids stop here, before Ray starts
    first = point_config(study, grid[0])
    make_plan(first)
    import os

    from raylm.data.prepare import prepare_dataset
    from raylm.ray_session import connect_ray

    connect_ray(address)
    import ray

    dataset = prepare_dataset(first)
    train_tokens = dataset.manifest.splits["train"].sequences * study.config.seq_len
    print(plan_text(study, train_tokens, float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))))
    check_corpus(grid, train_tokens, print)
    return 0
