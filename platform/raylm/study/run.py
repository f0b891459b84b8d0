"""Run a scaling study: the grid as Tune trials, every fit, the recommended prediction, the
verification run, and one MLflow parent run holding all of it.

Running the same study again (or ``--resume``) finds its parent run and every finished point
by hash (:func:`raylm.study.grid.point_key`: the point's full config and the data manifest) and
trains only what is missing; nothing is logged twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from raylm.config import RunConfig, flatten
from raylm.errors import UserError
from raylm.study.analysis import fit_results, headline_metrics, usable_points, verification_points
from raylm.study.config import Study
from raylm.study.grid import StudyPoint, build_grid, point_key, point_run
from raylm.study.publish import log_parent
from raylm.study.results import PointResult, StudyOutcome
from raylm.tune.trial import POINT_TAG

MAX_EPOCHS = 4.0  # Muennighoff et al. (2023): up to ~4 epochs of repeated data cost little


def run_study(study: Study, address: str | None = None, log=print) -> StudyOutcome:
    from raylm.parallel.plan import make_plan
    from raylm.ray_session import cluster_totals, connect_ray
    from raylm.tracking.writer import start_writer, stop_writer
    from raylm.train.run import prepare_data
    from raylm.tune.sweep import concurrency, trial_demand
    from raylm.tune.sweep_config import check_local_directory

    check_local_directory(study.config.output_dir, "the study's output_dir", "study")
    started = time.time()
    grid = build_grid(study)
    first = RunConfig.from_dict(point_run(study, grid[0]), "the study's first grid point")
    plan = make_plan(first)
    connect_ray(address)
    parallel_trials = concurrency(trial_demand(first), cluster_totals(), study.config.trials.max_concurrent_trials,
                                  log)
    dataset = prepare_data(first, plan)
    check_corpus(grid, dataset.manifest.splits["train"].sequences * study.config.seq_len, log)
    manifest_key = dataset.manifest.key
    keys = {p.label: point_key(study, p, manifest_key) for p in grid}
    study_key = hashlib.sha256(json.dumps(sorted(keys.values())).encode()).hexdigest()[:12]
    directory = Path(study.config.output_dir).resolve() / f"{study.config.name}-{study_key}"
    directory.mkdir(parents=True, exist_ok=True)
    writer = start_writer()
    try:
        parent = _parent(writer, study, study_key, directory)
        context = {"base": study.base, "writer": writer, "parent_run_id": parent.run_id,
                   "storage_root": str(directory / "points"), "kind": "study-point",
                   "dataset_dir": dataset.location}
        results = _train(grid, keys, context, writer, parent, parallel_trials, directory, study, log)
        fit = fit_results(study, usable_points(results, log))
        recommended = fit["recommended"]
        _log_recommendation(recommended, log)
        verify = _verify(study, recommended, manifest_key, context, writer, parent, parallel_trials, directory, log)
        outcome = StudyOutcome(directory, results, fit, recommended, verify, headline_metrics(fit, recommended, verify),
                               parent.run_id, parent.experiment_id, parent.uri, time.time() - started)
        log_parent(outcome, parent, study)
        return outcome
    finally:
        stop_writer(writer)


def _log_recommendation(recommended: list[dict], log) -> None:
    from raylm.study.report import interval, num

    log("fits done; recommended: " + "; ".join(
        f"{r['approach']} at C={r['budget']:.3g}: N*={r['n_opt']:,.0f}, D*={r['d_opt']:,.0f}, loss {num(r['loss'])} "
        f"{interval(r.get('loss_interval'))}" for r in recommended))


def _verify(study, recommended, manifest_key, context, writer, parent, parallel_trials, directory, log):
    points = verification_points(study, recommended, log)
    if not points:
        return []
    return train_points(points, study, manifest_key, {**context, "kind": "study-verify"}, writer, parent,
                        parallel_trials, directory, log)


def check_corpus(grid: list[StudyPoint], train_tokens: int, log) -> None:
    """Warn when the largest point repeats data; refuse it beyond MAX_EPOCHS epochs."""
    largest = max(grid, key=lambda p: p.grid.tokens)
    epochs = largest.grid.tokens / max(train_tokens, 1)
    if epochs > MAX_EPOCHS:
        raise UserError(f"the corpus is too small: the largest point ({largest.label}) trains on "
                        f"{largest.grid.tokens:,} tokens, {epochs:.1f} epochs of the {train_tokens:,} training "
                        f"tokens (more than {MAX_EPOCHS:g}); lower the budgets or use a larger corpus")
    if epochs > 1:
        log(f"warning: the largest point ({largest.label}) repeats the data: {largest.grid.tokens:,} tokens is "
            f"{epochs:.2f} epochs of the corpus's {train_tokens:,} training tokens")


def _parent(writer: str, study: Study, study_key: str, directory: Path):
    from raylm.tracking.writer import RemoteRun

    tracking = RunConfig.from_dict(study.base).tracking
    if not tracking.enabled:
        return RemoteRun.disabled()
    parent = RemoteRun.start(writer, tracking, f"{study.config.name}-{study_key}", tags={"raylm.kind": "study"},
                             reuse_tag=("raylm.study_key", study_key))
    parent.log_params({f"study.{k}": v for k, v in flatten(study.config.model_dump(mode="json")).items()
                       if k != "base"})
    parent.log_text(json.dumps(study.to_dict(), indent=2), "study.json")
    parent.set_tag("raylm.study_dir", str(directory))
    return parent


def point_payload(point: StudyPoint, key: str) -> dict:
    g = point.grid
    return {"overrides": point.overrides,
            "tags": {POINT_TAG: key, "run_name": point.label, "raylm.point": point.label, "raylm.point_kind":
                     point.kind, "raylm.budget": f"{g.budget:.6g}", "raylm.params": g.params,
                     "raylm.tokens": g.tokens, "raylm.tokens_per_param": f"{g.tokens / g.params:.4g}",
                     "raylm.flops": f"{g.flops:.6g}"}}


def _train(points, keys, context, writer, parent, parallel_trials, directory, study, log) -> list[PointResult]:
    from raylm.tune.batch import run_fixed_trials

    tracking = RunConfig.from_dict(study.base).tracking
    done = {p.label: _finished(writer, parent, tracking.experiment, keys[p.label]) for p in points}
    pending = [p for p in points if done[p.label] is None]
    log(f"study: {len(points)} runs, {len(points) - len(pending)} already finished (reused), "
        f"{len(pending)} to train, {parallel_trials} at a time")
    if pending:
        run_fixed_trials([point_payload(p, keys[p.label]) for p in pending], context, parallel_trials,
                         directory / "tune", pending[0].kind, study.config.trials.max_failures)
    return [collect(writer, parent, tracking.experiment, p, keys[p.label], reused=done[p.label] is not None)
            for p in points]


def _finished(writer, parent, experiment: str, key: str):
    from raylm.tracking.writer import RemoteRun

    if not parent.enabled:
        return None
    run = RemoteRun.find(writer, parent.uri, experiment, POINT_TAG, key)
    return run if run is not None and run.status() == "FINISHED" else None


def collect(writer, parent, experiment: str, point: StudyPoint, key: str, reused: bool = False) -> PointResult:
    from raylm.tracking.writer import RemoteRun

    run = RemoteRun.find(writer, parent.uri, experiment, POINT_TAG, key) if parent.enabled else None
    if run is None:
        return PointResult(point, key, "FAILED", None, None)
    tokens_per_step = point.grid.global_batch_size * point.grid.seq_len
    history = run.metric_history("val/loss")
    curve = [(step * tokens_per_step, value) for step, value in history]
    status = run.status() or "FAILED"
    final = history[-1][1] if history and history[-1][0] == point.grid.steps else None
    return PointResult(point, key, status if final is not None else "FAILED", run.run_id, final, curve, reused)


def train_points(points: list[StudyPoint], study: Study, manifest_key: str, context, writer, parent,
                 parallel_trials: int, directory: Path, log) -> list[PointResult]:
    """Train (or reuse) extra points such as verification runs."""
    keys = {p.label: point_key(study, p, manifest_key) for p in points}
    return _train(points, keys, context, writer, parent, parallel_trials, directory, study, log)


__all__ = ["PointResult", "StudyOutcome", "check_corpus", "run_study", "train_points"]
