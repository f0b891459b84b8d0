"""The one trial runner: a Tune trial is one training run, a TorchTrainer built inside the trial.

This is the Ray Train V2 pattern (Ray docs, "Hyperparameter Tuning with Ray Tune"): the Tune
function builds the trainer from its sampled configuration and runs it with Tune's report
callback, so every evaluation the workers report reaches Tune's scheduler. Sweeps and scaling
studies both run their trials through :func:`run_trial`.

A trial's MLflow run is created through the tracking writer (never by the trial itself), tagged
with the trial's key, so a trial that is re-run after a restore logs into the same run. The
TorchTrainer is named after the trial id and stored under the sweep's directory: a re-run
continues from the trial's own newest checkpoint.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from raylm.config import RunConfig
from raylm.config_load import apply_overrides
from raylm.tune.context import TrialContext
from raylm.tune.space import apply_sample, sampled_values

POINT_KEY = "point"  # a trial config entry {"overrides": {...}, "tags": {...}, "name": str} (a study's grid point)
TRIAL_TAG = "raylm.trial_key"
POINT_TAG = "raylm.point_key"


def trial_key(parent_run_id: str | None, trial_id: str) -> str:
    return f"{parent_run_id}:{trial_id}"


def trial_run_config(base: dict[str, Any], trial_config: dict[str, Any]) -> tuple[RunConfig, dict, dict]:
    """The trial's run config, the values it was given (for params) and its extra tags."""
    trial_config = dict(trial_config)
    point = trial_config.pop(POINT_KEY, None) or {}
    run = apply_sample(base, trial_config)
    run = apply_overrides(run, list(point.get("overrides", {}).items()))
    given = {**sampled_values(trial_config), **point.get("overrides", {})}
    return RunConfig.from_dict(run, "trial config"), given, dict(point.get("tags", {}))


def _dataset(context: TrialContext, cfg: RunConfig, plan):
    """The shards the driver prepared (a sweep or study varies nothing they depend on), without hashing the
    corpus again in every trial; a trial without them prepares its own."""
    from raylm.train.run import prepare_data

    if context.dataset_dir:
        return _prepared(context.dataset_dir)
    return prepare_data(cfg, plan)


@functools.cache
def _prepared(dataset_dir: str):
    """The driver's shards and their manifest, read once per trial process (a reused process trains trial
    after trial on them; the directory is named by the hash of its contents, so it cannot change)."""
    from raylm import storage
    from raylm.data.manifest import read_manifest
    from raylm.data.prepare import PreparedDataset

    directory = storage.location(dataset_dir)  # a path, or a URI (raylm.storage)
    return PreparedDataset(directory, read_manifest(directory), reused=True)


def run_trial(trial_config: dict[str, Any], context: TrialContext) -> None:
    """The Tune function: one training run with the trial's sampled values, tracked under the driver's parent."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from raylm.parallel.plan import make_plan
    from raylm.tracking.writer import RemoteRun
    from raylm.train.run import execute_run

    tune_context = ray.tune.get_context()
    trial_id, trial_name = tune_context.get_trial_id(), tune_context.get_trial_name()
    cfg, given, tags = trial_run_config(context.base, trial_config)
    run_name = tags.pop("run_name", trial_name)
    # a study point is known by the hash of its config: a retried or re-run point reuses its run and checkpoints,
    # and keeps its name (Tune names a trial anew in every run of the study; a logged param cannot change)
    key = tags.get(POINT_TAG)
    cfg = cfg.model_copy(update={"name": run_name if key else trial_name})
    plan = make_plan(cfg)
    dataset = _dataset(context, cfg, plan)
    reuse = (POINT_TAG, key) if key else (TRIAL_TAG, trial_key(context.parent_run_id, trial_id))
    tracker = RemoteRun.start(
        context.writer, cfg.tracking, run_name, parent_run_id=context.parent_run_id,
        tags={"raylm.kind": context.kind, "raylm.trial_id": trial_id, **{k: str(v) for k, v in tags.items()}},
        reuse_tag=reuse,
    ) if cfg.tracking.enabled else RemoteRun.disabled()
    tracker.log_params({"trial.values": json.dumps(given, sort_keys=True)})
    in_process = context.in_process  # one worker in this process, more on its worker pool
    execute_run(cfg, plan, dataset, tracker, f"point-{key}" if key else f"trial-{trial_id}",
                Path(context.storage_root), callbacks=() if in_process else (TuneReportCallback(),),
                in_process=in_process)
