"""``raylm study``: plan, run or resume a compute-optimal scaling study."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study", help="a scaling study: IsoFLOP grid -> trials -> fits -> prediction -> verification",
        description="Train an IsoFLOP grid as Ray Tune trials, fit Chinchilla's laws every way, predict the "
                    "compute-optimal N*, D* and loss at the target budgets, and verify with a real run. "
                    "'raylm study plan FILE' prints the grid, compute, data and an estimated wall time first.",
        epilog="examples:\n  raylm study plan jobs/configs/study_demo.yaml\n"
               "  raylm study --config jobs/configs/study_demo.yaml\n"
               "  raylm study --resume jobs/configs/study_demo.yaml   (same as running it again)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", nargs="?", choices=("plan", "run"), default="run")
    parser.add_argument("file", nargs="?", default=None, help="study YAML file (with plan)")
    parser.add_argument("--config", default=None, help="study YAML file")
    parser.add_argument("--resume", default=None, metavar="FILE",
                        help="run the study FILE again, reusing every finished point")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    parser.set_defaults(func=_study, accepts_overrides=True)


def _study(args: argparse.Namespace) -> int:
    from raylm.config_load import parse_override_args
    from raylm.errors import UserError
    from raylm.study.config import load_study

    path = args.file or args.config or args.resume
    if path is None:
        raise UserError("give a study file: raylm study --config STUDY.yaml (or raylm study plan STUDY.yaml)")
    study = load_study(path, parse_override_args(args.overrides))
    if args.action == "plan":
        return _plan(study, args.address)
    from raylm.study.run import run_study
    from raylm.study.summary import outcome_summary

    print(outcome_summary(run_study(study, address=args.address)))
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
