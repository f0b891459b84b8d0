"""The driver of a training job: check the plan, prepare data, create the MLflow run, run the TorchTrainer.

``run_training(cfg)`` is what ``raylm train`` and ``jobs/pretrain.py`` call. Nothing is
launched before the parallel plan is known to be possible. With no Ray address it starts a
local Ray bound to 127.0.0.1 (the embedded default); with ``address`` or ``RAY_ADDRESS`` it
joins that cluster. Everything logged goes through the tracking writer on this node
(:mod:`raylm.tracking.writer`): the workers never open the tracking store.

``output_dir`` may be a local path (on a cluster, a mount every node sees) or a URI
(``s3://bucket/runs``, ``gs://...``): it is Ray Train's ``storage_path``, so checkpoints, the
exported model and ``diverged.txt`` all go there (:mod:`raylm.storage`, docs/storage.md).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from raylm import storage
from raylm.config import RunConfig, flatten
from raylm.config_load import to_yaml
from raylm.console import attach_logs
from raylm.errors import UserError
from raylm.parallel.plan import ParallelPlan, check_data_size, make_plan
from raylm.ray_session import connect_ray
from raylm.tracking.writer import RemoteRun, start_writer, stop_writer
from raylm.train.worker_output import DIVERGED_FILE

HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # Ray Train passes it on to its controller
HEALTH_CHECK_INTERVAL_S = 0.2


@dataclass
class TrainingResult:
    run_name: str
    storage_dir: Path | str     # Ray Train's run directory (checkpoints live here); a URI string for URI storage
    checkpoint_path: str | None  # the latest reported checkpoint (a path or a URI)
    model_dir: Path | str       # the exported model (safetensors + config + tokenizer); a URI string likewise
    metrics: dict               # the last metrics reported with a checkpoint
    mlflow_run_id: str | None
    tracking_uri: str
    experiment_id: str | None = None


def run_training(cfg: RunConfig, address: str | None = None, parent_run_id: str | None = None,
                 resume_from: str | None = None) -> TrainingResult:
    """Train ``cfg``; ``resume_from`` is a checkpoint directory (a path or a URI) of an earlier run to
    continue from."""
    plan = make_plan(cfg)  # raises PlanError before anything starts
    if resume_from is not None:
        check_checkpoint(resume_from)
    if storage.is_uri(cfg.output_dir):
        storage.check_writable(cfg.output_dir, "output_dir")
    from raylm.tracking.mlflow_run import check_store

    check_store(cfg.tracking)  # before Ray starts: a wrong address fails in seconds
    connect_ray(address)
    dataset = prepare_data(cfg, plan)
    run_name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not storage.is_uri(cfg.output_dir):
        attach_logs(Path(storage.absolute(cfg.output_dir)) / run_name / "logs", print)
    writer = start_writer()
    try:
        tracker = RemoteRun.start(writer, cfg.tracking, run_name, parent_run_id=parent_run_id,
                                  tags={"raylm.kind": "train"}) if cfg.tracking.enabled else RemoteRun.disabled()
        return execute_run(cfg, plan, dataset, tracker, run_name, storage.absolute(cfg.output_dir), resume_from)
    finally:
        stop_writer(writer)


def check_checkpoint(location: str) -> None:
    """A :class:`UserError` unless ``location`` is a raylm checkpoint directory (it holds ``rank0.json``)."""
    with storage.errors(location, "read the checkpoint"):
        found = storage.is_file(storage.join(location, "rank0.json"))
    if not found:
        raise UserError(f"--resume {location}: not a raylm checkpoint (no rank0.json); pass a step_NNNNNNNN "
                        "directory of an earlier run")


def execute_run(cfg: RunConfig, plan: ParallelPlan, dataset, tracker: RemoteRun, run_name: str,
                storage_root: str | Path, resume_from: str | None = None, callbacks: tuple = (),
                in_process: bool = False) -> TrainingResult:
    """Run one TorchTrainer for ``cfg`` into the already created MLflow run ``tracker`` and end that run
    (FINISHED, or FAILED with the reason). ``raylm train`` and every Tune trial go through here; a trial
    passes Tune's report callback in ``callbacks``. The run is named ``run_name`` under ``storage_root``:
    a re-run with the same name continues from that run's own newest checkpoint. ``storage_root`` is a
    local path or a URI. ``in_process`` (a Tune trial's process only) trains one worker in this process
    through Ray Train's local mode (:func:`_fit_in_process`), and more on this process's worker pool
    (:func:`_fit_in_pool`), instead of a new worker group."""
    storage_root = storage.absolute(storage_root)  # absolute: workers run in their own working directories
    tracker.log_params({**flatten(cfg.to_dict()), **_plan_params(plan), "data.directory": dataset.location})
    tracker.log_text(to_yaml(cfg), "config.yaml")
    tracker.log_input(dataset_name(dataset), dataset.manifest.key, dataset.location)
    runtime = worker_runtime(dataset, tracker.handle(), storage_root, run_name, resume_from, in_process,
                             pool=in_process and plan.world_size > 1)
    try:
        if runtime["pool"]:
            result = _fit_in_pool(cfg, runtime)
        elif in_process:
            result = _fit_in_process(cfg, run_name, storage_root, runtime)
        else:
            result = _fit(cfg, run_name, storage_root, runtime, callbacks)
    except KeyboardInterrupt:
        tracker.finish("KILLED")
        raise
    except BaseException as exc:
        tracker.finish("FAILED", error=str(exc))
        raise
    diverged = _diverged(runtime["storage_dir"])
    checkpoint = _final_checkpoint(result, runtime, plan)
    if checkpoint:
        tracker.set_tag("raylm.checkpoint", checkpoint)
        tracker.log_text(f"{checkpoint}\n", "checkpoint_path.txt")
    if diverged:
        tracker.finish("FAILED", error=diverged)
        raise UserError(diverged)
    if cfg.train.export_model:
        tracker.set_tag("raylm.model_dir", runtime["model_dir"])
        if cfg.tracking.log_model and not storage.is_uri(runtime["model_dir"]):
            tracker.log_model(runtime["model_dir"], cfg.name, cfg.train.max_steps)
    tracker.finish("FINISHED")
    return TrainingResult(run_name, storage.location(runtime["storage_dir"]), checkpoint,
                          storage.location(runtime["model_dir"]), dict(result.metrics or result.return_value or {}),
                          tracker.run_id, tracker.uri,
                          tracker.experiment_id)


def worker_runtime(dataset, tracking: dict, storage_root: str, run_name: str, resume_from: str | None = None,
                   in_process: bool = False, pool: bool = False) -> dict:
    """What the driver hands every worker besides the run config (``runtime`` of
    :func:`raylm.train.loop.train_loop_per_worker`): the shards, the tokenizer, the tracking handle, where to
    store, and how the run is hosted."""
    return {
        "dataset_dir": dataset.location,
        "tokenizer_path": storage.absolute(dataset.tokenizer_path),
        "special_tokens": dataset.special_tokens().to_dict(),
        "tracking": tracking,
        "storage_dir": storage.join(storage_root, run_name),
        "model_dir": storage.join(storage_root, run_name, "model"),
        "resume_from": storage.absolute(resume_from) if resume_from else None,
        "in_process": in_process,
        "pool": pool,
        "launched_at": time.time(),
    }


def dataset_name(dataset) -> str:
    """How the token shards are named among a run's inputs: their directory and content key."""
    return "/".join(str(dataset.location).rstrip("/").split("/")[-2:])


def _final_checkpoint(result, runtime: dict, plan: ParallelPlan) -> str | None:
    """The newest checkpoint in storage: Ray Train's (a worker group), or the one the run wrote itself (in
    process, where Ray Train's local mode knows only a temporary directory)."""
    if runtime["in_process"]:
        from raylm.train.checkpoints import latest_complete

        found = latest_complete(runtime["storage_dir"], plan.world_size)
        return str(found) if found else None
    return storage.to_uri(result.checkpoint.filesystem, result.checkpoint.path) if result.checkpoint else None


def _diverged(storage_dir: str) -> str | None:
    """The reason rank 0 left in ``diverged.txt``, if it did."""
    path = storage.join(storage_dir, DIVERGED_FILE)
    try:
        return storage.read_text(path) if storage.is_file(path) else None
    except OSError:  # unreadable storage: the training itself would have failed on it
        return None


def prepare_data(cfg: RunConfig, plan: ParallelPlan):
    from raylm.data.prepare import prepare_dataset

    dataset = prepare_dataset(cfg)
    splits = dataset.manifest.splits
    val = splits["val"].sequences if "val" in splits else 0
    check_data_size(plan, splits["train"].sequences, str(dataset.directory), val_sequences=val)
    return dataset


def _plan_params(plan: ParallelPlan) -> dict:
    return {f"plan.{k}": v for k, v in vars(plan).items()}


def _fit(cfg: RunConfig, run_name: str, storage_root: str, runtime: dict, callbacks: tuple = ()):
    import ray.train
    from ray.train.torch import TorchTrainer

    from raylm.train.loop import train_loop_per_worker

    par = cfg.parallel
    resources = {"CPU": par.cpus_per_worker, **({"GPU": 1} if par.use_gpu else {})}
    # Ray Train's controller polls its workers every 2 s by default, so a finished run waited up to 2 s more
    os.environ.setdefault(HEALTH_CHECK_ENV, str(HEALTH_CHECK_INTERVAL_S))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": cfg.to_dict(), "runtime": runtime},
        scaling_config=ray.train.ScalingConfig(num_workers=par.num_workers, use_gpu=par.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_root,
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            callbacks=list(callbacks),
        ),
    )
    try:
        return trainer.fit()
    except Exception as exc:
        raise UserError(f"training failed: {_root_message(exc)}") from exc


def _fit_in_process(cfg: RunConfig, run_name: str, storage_root: str, runtime: dict):
    """Train a one-worker run in this process: Ray Train's local mode (``ScalingConfig(num_workers=0)``), so a
    Tune trial actor that Tune reuses between trials keeps torch, DeepSpeed and its measurements warm.
    The world-size-1 process group (gloo, or NCCL on a GPU) is created through DeepSpeed by the first run in
    the process and kept for the next ones: DeepSpeed caches its groups, so a destroyed and re-created group
    would leave it holding stale ones. Hence the plain ``DataParallelTrainer``: ``TorchTrainer``'s local mode
    destroys the process group after every run. Checkpoints and reports go through
    :class:`raylm.train.reports.InProcessReports`; a failed attempt is re-run by Tune
    (:func:`raylm.tune.session.trial_failures`), not by Ray Train."""
    import ray.train
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from raylm.train.loop import train_loop_per_worker

    if cfg.parallel.num_workers != 1:
        raise ValueError(f"in-process training takes one worker, not {cfg.parallel.num_workers}")
    _single_process_group_env()
    trainer = DataParallelTrainer(
        train_loop_per_worker,
        train_loop_config={"run": cfg.to_dict(), "runtime": runtime},
        scaling_config=ray.train.ScalingConfig(num_workers=0),
        run_config=ray.train.RunConfig(name=run_name, storage_path=storage_root),
    )
    try:
        return trainer.fit()
    except Exception as exc:
        raise UserError(f"training failed: {_root_message(exc)}") from exc


@dataclass
class PoolResult:
    """What :func:`execute_run` reads of a run on a worker pool (as of a Ray Train result)."""

    metrics: dict | None
    return_value: dict | None = None
    checkpoint: None = None  # the run's checkpoints are in its storage directory (:func:`_final_checkpoint`)


def _fit_in_pool(cfg: RunConfig, runtime: dict) -> PoolResult:
    """Train a multi-worker run on this trial process's worker pool (:mod:`raylm.train.pool`): rank 0 here, the
    other ranks in actors the process keeps between trials, one process group for all of them."""
    from raylm.train.pool import pool_for

    par = cfg.parallel
    pool = pool_for(par.num_workers, par.cpus_per_worker, par.use_gpu)
    try:
        metrics = pool.run({"run": cfg.to_dict(), "runtime": runtime})
    except Exception as exc:
        raise UserError(f"training failed: {_root_message(exc)}") from exc
    return PoolResult(metrics)


def _single_process_group_env() -> None:
    """What DeepSpeed's ``init_distributed`` reads for a world of one, on a free local port, set once per
    process."""
    from raylm.train.pool import free_port

    if "MASTER_PORT" in os.environ and os.environ.get("WORLD_SIZE") == "1":
        return
    port = free_port("127.0.0.1")
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})


def _root_message(exc: BaseException) -> str:
    """The innermost error's message (Ray wraps worker errors several times)."""
    seen = exc
    while seen.__cause__ is not None or getattr(seen, "cause", None) is not None:
        seen = seen.__cause__ or seen.cause
    return f"{type(seen).__name__}: {seen}"
