"""The driver of a training job: check the plan, prepare data, create the MLflow run, run the TorchTrainer.

``run_training(cfg)`` is what ``raylm train`` and ``jobs/pretrain.py`` call. Nothing is
launched before the parallel plan is known to be possible. With no Ray address it starts a
local Ray bound to 127.0.0.1 (the embedded default); with ``address`` or ``RAY_ADDRESS`` it
joins that cluster. Everything logged goes through the tracking writer on this node
(:mod:`raylm.tracking.writer`): the workers never open the tracking store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from raylm.config import RunConfig, flatten
from raylm.config_load import to_yaml
from raylm.errors import UserError
from raylm.parallel.plan import ParallelPlan, check_data_size, make_plan
from raylm.ray_session import connect_ray
from raylm.tracking.writer import RemoteRun, start_writer, stop_writer

DIVERGED_FILE = "diverged.txt"  # written by rank 0 of the workers (raylm.train.loop) when the loss is not finite


@dataclass
class TrainingResult:
    run_name: str
    storage_dir: Path           # Ray Train's run directory (checkpoints live here)
    checkpoint_path: str | None  # the latest reported checkpoint
    model_dir: Path             # the exported model (safetensors + config + tokenizer)
    metrics: dict               # the last metrics reported with a checkpoint
    mlflow_run_id: str | None
    tracking_uri: str


def run_training(cfg: RunConfig, address: str | None = None, parent_run_id: str | None = None,
                 resume_from: str | None = None) -> TrainingResult:
    """Train ``cfg``; ``resume_from`` is a checkpoint directory of an earlier run to continue from."""
    plan = make_plan(cfg)  # raises PlanError before anything starts
    if resume_from is not None and not (Path(resume_from) / "rank0.json").exists():
        raise UserError(f"--resume {resume_from}: not a raylm checkpoint (no rank0.json); pass a step_NNNNNNNN "
                        "directory of an earlier run")
    connect_ray(address)
    dataset = prepare_data(cfg, plan)
    run_name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    writer = start_writer()
    try:
        tracker = RemoteRun.start(writer, cfg.tracking, run_name, parent_run_id=parent_run_id,
                                  tags={"raylm.kind": "train"}) if cfg.tracking.enabled else RemoteRun.disabled()
        return execute_run(cfg, plan, dataset, tracker, run_name, Path(cfg.output_dir).resolve(), resume_from)
    finally:
        stop_writer(writer)


def execute_run(cfg: RunConfig, plan: ParallelPlan, dataset, tracker: RemoteRun, run_name: str,
                storage_root: Path, resume_from: str | None = None, callbacks: tuple = ()) -> TrainingResult:
    """Run one TorchTrainer for ``cfg`` into the already created MLflow run ``tracker`` and end that run
    (FINISHED, or FAILED with the reason). ``raylm train`` and every Tune trial go through here; a trial
    passes Tune's report callback in ``callbacks``. The run is named ``run_name`` under ``storage_root``:
    a re-run with the same name continues from that run's own newest checkpoint."""
    dataset_dir = str(dataset.directory.resolve())  # absolute: workers run in their own working directories
    tracker.log_params({**flatten(cfg.to_dict()), **_plan_params(plan), "data.directory": dataset_dir})
    tracker.log_text(to_yaml(cfg), "config.yaml")
    runtime = {
        "dataset_dir": dataset_dir,
        "tokenizer_path": str(dataset.tokenizer_path.resolve()),
        "special_tokens": dataset.special_tokens().to_dict(),
        "tracking": tracker.handle(),
        "storage_dir": str(storage_root / run_name),
        "model_dir": str(storage_root / run_name / "model"),
        "resume_from": str(Path(resume_from).resolve()) if resume_from else None,
    }
    try:
        result = _fit(cfg, run_name, storage_root, runtime, callbacks)
    except KeyboardInterrupt:
        tracker.finish("KILLED")
        raise
    except BaseException as exc:
        tracker.finish("FAILED", error=str(exc))
        raise
    diverged_file = Path(runtime["storage_dir"]) / DIVERGED_FILE
    diverged = diverged_file.read_text() if diverged_file.exists() else None
    checkpoint = result.checkpoint.path if result.checkpoint else None
    if checkpoint:
        tracker.set_tag("raylm.checkpoint", checkpoint)
        tracker.log_text(f"{checkpoint}\n", "checkpoint_path.txt")
    if diverged:
        tracker.finish("FAILED", error=diverged)
        raise UserError(diverged)
    tracker.set_tag("raylm.model_dir", runtime["model_dir"])
    tracker.finish("FINISHED")
    return TrainingResult(run_name, storage_root / run_name, checkpoint, Path(runtime["model_dir"]),
                          dict(result.metrics), tracker.run_id, tracker.uri)


def prepare_data(cfg: RunConfig, plan: ParallelPlan):
    from raylm.data.prepare import prepare_dataset

    dataset = prepare_dataset(cfg)
    splits = dataset.manifest.splits
    val = splits["val"].sequences if "val" in splits else 0
    check_data_size(plan, splits["train"].sequences, str(dataset.directory), val_sequences=val)
    return dataset


def _plan_params(plan: ParallelPlan) -> dict:
    return {f"plan.{k}": v for k, v in vars(plan).items()}


def _fit(cfg: RunConfig, run_name: str, storage_root: Path, runtime: dict, callbacks: tuple = ()):
    import ray.train
    from ray.train.torch import TorchTrainer

    from raylm.train.loop import train_loop_per_worker

    par = cfg.parallel
    resources = {"CPU": par.cpus_per_worker, **({"GPU": 1} if par.use_gpu else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": cfg.to_dict(), "runtime": runtime},
        scaling_config=ray.train.ScalingConfig(num_workers=par.num_workers, use_gpu=par.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=str(storage_root),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            callbacks=list(callbacks),
        ),
    )
    try:
        return trainer.fit()
    except Exception as exc:
        raise UserError(f"training failed: {_root_message(exc)}") from exc


def _root_message(exc: BaseException) -> str:
    """The innermost error's message (Ray wraps worker errors several times)."""
    seen = exc
    while seen.__cause__ is not None or getattr(seen, "cause", None) is not None:
        seen = seen.__cause__ or seen.cause
    return f"{type(seen).__name__}: {seen}"
