"""``raylm sweep --config SWEEP.yaml``: a Ray Tune sweep over any config keys, one MLflow parent run."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="sweep optimizers and hyperparameters with Ray Tune (ASHA stops weak trials early)",
        description="Run a sweep file: a base run, a search space over dotted config keys, a scheduler. Each "
                    "trial is one training run (a nested MLflow run under the sweep's parent run). Overrides "
                    "--section.key VALUE apply to the base run.",
        epilog="example: raylm sweep --config jobs/configs/sweep_optimizers.yaml\n"
               "         raylm sweep --resume runs/sweeps/optimizers-20261202-101500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", dest="file", default=None, help="sweep YAML file (see docs/sweeps.md)")
    parser.add_argument("--resume", default=None, metavar="DIR",
                        help="continue the sweep in DIR after its driver stopped (finished trials are kept)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    parser.add_argument("--verbose", action="store_true",
                        help="stream Ray, Tune, Train, DeepSpeed and worker output here as well (by default it goes "
                             "to logs/ray.log in the run's directory)")
    parser.set_defaults(func=_sweep, accepts_overrides=True)


def _sweep(args: argparse.Namespace) -> int:
    from raylm.config_load import parse_override_args
    from raylm.errors import UserError
    from raylm.tune.sweep import outcome_summary, run_sweep
    from raylm.tune.sweep_config import load_sweep

    if (args.file is None) == (args.resume is None):
        raise UserError("give either --config SWEEP.yaml (a new sweep) or --resume DIR (continue one)")
    if args.resume and args.overrides:
        raise UserError("--resume continues a sweep exactly as it started; overrides are not allowed with it")
    sweep = load_sweep(args.file, parse_override_args(args.overrides)) if args.file else None
    from raylm.console import quiet_console

    with quiet_console(args.verbose):
        outcome = run_sweep(sweep, address=args.address, resume_dir=args.resume)
    print(outcome_summary(outcome))
    return 0
