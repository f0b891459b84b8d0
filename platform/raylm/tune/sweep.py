"""Run a sweep: check it, prepare the data once, create the MLflow parent, run the trials with
Ray Tune, then write the results table, plots and best configuration into the parent run.

A sweep lives in its own directory (``output_dir/name-<time>``): ``sweep.json`` (the checked
sweep and its parent run), ``tune/`` (Tune's experiment state, for ``--resume``), ``trials/``
(each trial's TorchTrainer checkpoints) and the results files.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from raylm.config import RunConfig, flatten
from raylm.config_load import to_yaml
from raylm.console import attach_logs, is_quiet
from raylm.errors import UserError
from raylm.tune.context import TrialContext
from raylm.tune.results import TrialRow, format_table, plot_best_curves, plot_metric_vs_lr, ranked, write_csv
from raylm.tune.session import DriverSession, trainable, trial_failures
from raylm.tune.sweep_config import Sweep, SweepConfig, check_local_directory
from raylm.tune.trial import TRIAL_TAG, trial_key, trial_run_config

STATE_FILE = "sweep.json"
TUNE_DIR = "tune"


@dataclass
class SweepOutcome:
    directory: Path
    rows: list[TrialRow]           # ranked, best first
    metric: str
    parent_run_id: str | None
    experiment_id: str | None
    tracking_uri: str
    best_config: Path | None
    table: str


def run_sweep(sweep: Sweep | None, address: str | None = None, resume_dir: str | None = None,
              log=print) -> SweepOutcome:
    """Run ``sweep`` in a new directory, or continue the one in ``resume_dir`` (its own ``sweep.json``)."""
    directory, sweep, state = _directory(sweep, resume_dir)
    trials = sweep.config.trials
    with DriverSession.open(sweep.base_config, trials.max_concurrent_trials, address, log,
                            trials.in_process) as session:
        parent = _parent_run(session.writer, sweep, directory, state, log)
        log(f"sweep {directory.name}: {len(sweep.specs)} keys searched, {session.describe_trials()}; results in "
            f"{directory}")
        attach_logs(directory / "logs", log)
        context = session.trial_context(sweep.base, parent.run_id, str(directory / "trials"), "trial")
        grid = _fit(sweep, directory, context, parent, session.parallel_trials, resume=resume_dir is not None)
        rows = ranked(_rows(grid, sweep, session.writer, parent), sweep.config.mode)
        return _finish(sweep, directory, rows, parent)


def _directory(sweep: Sweep | None, resume_dir: str | None) -> tuple[Path, Sweep, dict]:
    if resume_dir is None:
        if sweep is None:
            raise UserError("give a sweep file (--config) or a sweep directory to continue (--resume)")
        check_local_directory(sweep.config.output_dir, "the sweep's output_dir", "sweep")
        directory = Path(sweep.config.output_dir).resolve() / f"{sweep.config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        directory.mkdir(parents=True, exist_ok=False)
        return directory, sweep, {}
    check_local_directory(resume_dir, "--resume", "sweep")
    directory = Path(resume_dir).resolve()
    state_path = directory / STATE_FILE
    if not state_path.is_file() or not (directory / TUNE_DIR).is_dir():
        raise UserError(f"--resume {resume_dir}: not a sweep directory (no {STATE_FILE} and {TUNE_DIR}/); pass the "
                        "directory a sweep printed when it started")
    state = json.loads(state_path.read_text())
    data = dict(state["sweep"])
    base = data.pop("base")
    restored = Sweep(SweepConfig.model_validate({**data, "base": base}), base, state["specs"], str(state_path))
    return directory, restored, state


def _parent_run(writer: str, sweep: Sweep, directory: Path, state: dict, log):
    from raylm.tracking.writer import RemoteRun

    base = sweep.base_config
    parent = RemoteRun.start(writer, base.tracking, directory.name, tags={"raylm.kind": "sweep"},
                             reuse_tag=("raylm.sweep_dir", str(directory))) if base.tracking.enabled \
        else RemoteRun.disabled()
    if not state:
        parent.log_params({**{f"search.{k}": json.dumps(v, sort_keys=True) for k, v in sweep.config.search.items()},
                           **{f"base.{k}": v for k, v in flatten(sweep.base).items()},
                           "sweep.num_samples": sweep.config.num_samples, "sweep.metric": sweep.config.metric,
                           "sweep.scheduler": sweep.config.scheduler.model_dump_json(),
                           "sweep.search_alg": sweep.config.search_alg.model_dump_json()})
        parent.log_text(json.dumps(sweep.to_dict(), indent=2), "sweep.json")
        (directory / STATE_FILE).write_text(json.dumps({"sweep": sweep.to_dict(), "specs": sweep.specs,
                                                        "parent": parent.handle()}, indent=2))
    else:
        log(f"resuming sweep {directory.name}: finished trials are kept, unfinished ones continue")
        ended = parent.end_children("RUNNING", "KILLED", "its sweep driver stopped before it finished "
                                    "(the resumed sweep continues the trial in this run)")
        if ended:
            log(f"sweep: {ended} trial run(s) left RUNNING by the stopped driver ended as KILLED until they continue")
    return parent


def _fit(sweep: Sweep, directory: Path, context: TrialContext, parent, parallel_trials: int, resume: bool):
    import ray.tune

    from raylm.tune.callbacks import TrialRunStatus
    from raylm.tune.progress import TrialProgress
    from raylm.tune.space import tune_space

    base = sweep.base_config
    function = trainable(context)
    tune_path = directory / TUNE_DIR
    if resume:
        if not ray.tune.Tuner.can_restore(str(tune_path / "sweep")):
            raise UserError(f"--resume {directory}: Tune has no saved state there yet; start the sweep again")
        tuner = ray.tune.Tuner.restore(str(tune_path / "sweep"), trainable=function, resume_unfinished=True,
                                       resume_errored=True)
    else:
        cfg = sweep.config
        tuner = ray.tune.Tuner(
            function,
            param_space=tune_space(sweep.specs, cfg.search_alg.name),
            tune_config=ray.tune.TuneConfig(metric=cfg.metric, mode=cfg.mode, num_samples=cfg.num_samples,
                                            reuse_actors=context.in_process,
                                            scheduler=_scheduler(cfg, base),
                                            search_alg=_search_alg(cfg, parallel_trials),
                                            max_concurrent_trials=None if cfg.search_alg.name != "optuna"
                                            else parallel_trials),
            run_config=ray.tune.RunConfig(
                name="sweep", storage_path=str(tune_path), verbose=0 if is_quiet() else 1,
                failure_config=ray.tune.FailureConfig(max_failures=trial_failures(cfg.trials.max_failures, context)),
                callbacks=[TrialRunStatus(context.writer, parent.uri, base.tracking.experiment, parent.handle(),
                                          cfg.metric, cfg.mode),
                           TrialProgress(sweep_view(base.train.max_steps), cfg.metric, cfg.mode,
                                         total=expected_trials(sweep))],
            ),
        )
    return tuner.fit()


def expected_trials(sweep: Sweep) -> int:
    """num_samples per combination of the grid keys (Tune's count of trials)."""
    from raylm.tune.space import enumerated

    count = sweep.config.num_samples
    for spec in sweep.specs.values():
        if enumerated(spec, sweep.config.search_alg.name):
            count *= len(spec["values"])
    return count


def sweep_view(max_steps: int):
    """A sweep's trials in the live view: named by their short id and sampled values, weighed by their steps."""
    from raylm.tune.progress import TrialView
    from raylm.tune.space import sampled_values

    def steps(trial) -> int:
        return int(trial.config.get("train.max_steps", max_steps))

    def label(trial) -> str:
        values = ", ".join(f"{key.rsplit('.', 1)[-1]}={_short(value)}"
                           for key, value in sampled_values(trial.config).items())
        return f"{trial.trial_id.rsplit('_', 1)[-1]} {values}"

    return TrialView(label=label, steps=steps, work=steps)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _scheduler(cfg: SweepConfig, base: RunConfig):
    from ray.tune.schedulers import FIFOScheduler

    from raylm.tune.asha import FinishingASHA

    if cfg.scheduler.name == "fifo":
        return FIFOScheduler()
    tokens_per_step = base.train.global_batch_size * base.train.seq_len
    horizon = base.train.max_steps * (tokens_per_step if cfg.scheduler.time_attr == "tokens" else 1)
    return FinishingASHA(time_attr=cfg.scheduler.time_attr, max_t=horizon, grace_period=cfg.scheduler.grace_period,
                         reduction_factor=cfg.scheduler.reduction_factor)


def _search_alg(cfg: SweepConfig, parallel_trials: int):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if cfg.search_alg.name == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError as exc:
            raise UserError("search_alg optuna needs the optuna package: pip install optuna") from exc
        return OptunaSearch(seed=cfg.search_alg.seed)
    # Tune ignores max_concurrent_trials for a generator passed in: the limit goes to the generator itself
    return BasicVariantGenerator(random_state=cfg.search_alg.seed, max_concurrent=parallel_trials)


def _rows(grid, sweep: Sweep, writer: str, parent) -> list[TrialRow]:
    from raylm.tracking.writer import RemoteRun

    metric, rows = sweep.config.metric, []
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or _trial_id_from_path(result.path)
        curve = _curve(result.metrics_dataframe, metric)
        values = [v for _, v in curve]
        best = (min(values) if sweep.config.mode == "min" else max(values)) if values else None
        run = RemoteRun.find(writer, parent.uri, sweep.base_config.tracking.experiment, TRIAL_TAG,
                             trial_key(parent.run_id, trial_id)) if parent.enabled else None
        status = (run.status() if run else None) or ("FAILED" if result.error else "FINISHED")
        _, given, _ = trial_run_config(sweep.base, result.config)
        rows.append(TrialRow(trial_id, given, values[-1] if values else None, best, int(metrics.get("step", 0)),
                             status, run.run_id if run else None, curve))
    return rows


def _curve(frame, metric: str) -> list[tuple[int, float]]:
    if frame is None or metric not in frame or "step" not in frame:
        return []
    points = frame[["step", metric]].dropna()
    return [(int(s), float(v)) for s, v in zip(points["step"], points[metric], strict=True)]


def _trial_id_from_path(path: str) -> str:
    match = re.search(r"([0-9a-f]{5}_[0-9]{5})", Path(path).name)
    return match.group(1) if match else Path(path).name


def _finish(sweep: Sweep, directory: Path, rows: list[TrialRow], parent) -> SweepOutcome:
    metric = sweep.config.metric
    write_csv(rows, directory / "results.csv", metric)
    parent.log_artifact(str(directory / "results.csv"))
    for name, plot in (("val_loss_vs_lr.png", plot_metric_vs_lr), ("best_curves.png", plot_best_curves)):
        if plot(rows, directory / name, metric):
            parent.log_artifact(str(directory / name), "plots")
    best_config = None
    if rows and rows[0].best is not None:
        best_config = directory / "best_config.yaml"
        cfg, _, _ = trial_run_config(sweep.base, rows[0].values)
        cfg = cfg.model_copy(update={"name": f"{sweep.config.name}-best"})
        best_config.write_text(f"# best trial {rows[0].trial_id} of sweep {directory.name}: best {metric} "
                               f"{rows[0].best:.4f}\n# run it: raylm train --config {best_config}\n" + to_yaml(cfg))
        parent.log_artifact(str(best_config))
        parent.set_tags({"raylm.best_trial": rows[0].trial_id, "raylm.best_run_id": rows[0].run_id or ""})
    table = format_table(rows, metric)
    parent.end("FINISHED")
    return SweepOutcome(directory, rows, metric, parent.run_id, parent.experiment_id, parent.uri, best_config, table)


def outcome_summary(outcome: SweepOutcome) -> str:
    from raylm.tracking.links import runs_link

    killed = sum(r.status == "KILLED" for r in outcome.rows)
    lines = [f"sweep finished: {len(outcome.rows)} trials ({killed} stopped early), ranked by best {outcome.metric}:",
             outcome.table, f"results: {outcome.directory / 'results.csv'}"]
    if outcome.best_config:
        lines.append(f"best configuration: {outcome.best_config}\n  train it: raylm train --config "
                     f"{outcome.best_config}")
    if outcome.parent_run_id and outcome.experiment_id:
        lines.append(f"MLflow parent run {outcome.parent_run_id} in {outcome.tracking_uri}")
        lines.append(f"  its trials: {runs_link(outcome.tracking_uri, outcome.experiment_id, outcome.parent_run_id)}")
        if outcome.tracking_uri.startswith("sqlite:///"):
            lines.append("  (serve the UI first: make ui)")
    lines.append(f"continue it if interrupted: raylm sweep --resume {outcome.directory}")
    return "\n".join(lines)
