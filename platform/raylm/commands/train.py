"""``raylm train --config FILE``: train on Ray Train workers hosting DeepSpeed engines."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model (local Ray by default, or the cluster at --address / $RAY_ADDRESS)",
        description="Check the parallel plan, tokenize the corpus (or reuse its shards), then train with "
                    "Ray Train + DeepSpeed, logging to MLflow. Override any config key with --section.key VALUE.",
        epilog="example: raylm train --config jobs/configs/gpt_tiny.yaml --train.max_steps 50",
    )
    parser.add_argument("--config", dest="file", default=None, help="YAML config file (defaults when omitted)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    parser.add_argument("--verbose", action="store_true",
                        help="stream Ray, Tune, Train, DeepSpeed and worker output here as well (by default it goes "
                             "to logs/ray.log in the run's directory)")
    parser.add_argument("--resume", default=None, metavar="CHECKPOINT",
                        help="a checkpoint directory of an earlier run (.../step_00000100) to continue from")
    parser.set_defaults(func=_train, accepts_overrides=True)


def _train(args: argparse.Namespace) -> int:
    from raylm.config_load import load_config, parse_override_args
    from raylm.train.run import run_training

    cfg = load_config(args.file, parse_override_args(args.overrides))
    from raylm.console import quiet_console

    with quiet_console(args.verbose, echo=("[raylm]",)):  # the step lines are a run's progress
        result = run_training(cfg, address=args.address, resume_from=args.resume)
    print(summary(result))
    return 0


def summary(result) -> str:
    val = result.metrics.get("val/loss")
    lines = [f"run {result.run_name} finished at step {result.metrics.get('step')}"]
    if val is not None:
        lines.append(f"  validation loss {val:.4f}")
    lines += [f"  checkpoint: {result.checkpoint_path}", f"  model:      {result.model_dir}"]
    if result.mlflow_run_id:
        lines.append(f"  MLflow run {result.mlflow_run_id} in {result.tracking_uri}")
        if result.experiment_id:
            from raylm.tracking.links import run_link

            lines.append(f"  in the UI: {run_link(result.tracking_uri, result.experiment_id, result.mlflow_run_id)}")
        if not result.tracking_uri.startswith(("http://", "https://")):
            lines.append(f"  (serve the UI first: raylm ui --backend-store-uri {result.tracking_uri})")
    return "\n".join(lines)
