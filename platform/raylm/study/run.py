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
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from raylm.config import flatten
from raylm.console import attach_logs
from raylm.errors import UserError
from raylm.study.analysis import fit_results, headline_metrics, usable_points, verification_points
from raylm.study.answers import write_answers
from raylm.study.config import Study
from raylm.study.edges import extend_edges
from raylm.study.grid import MAX_EPOCHS, StudyPoint, build_grid, point_config, point_key
from raylm.study.publish import log_parent
from raylm.study.record import RecordedPoint, StudyRecord
from raylm.study.results import PointResult, StudyOutcome, recorded_result
from raylm.study.show import save_study
from raylm.tune.context import TrialContext
from raylm.tune.session import DriverSession
from raylm.tune.trial import POINT_TAG

ANALYSIS_SETTINGS = ("name", "output_dir", "targets", "edges.", "verify.", "fit.", "trials.")  # may change between runs


@dataclass(frozen=True)
class StudyDriver:
    """What training a study's points needs, gathered once: the study, its driver session, its parent run,
    the trials' context, the data's manifest key (part of every point's hash) and the study directory."""

    study: Study
    session: DriverSession
    parent: Any  # raylm.tracking.writer.RemoteRun
    context: TrialContext
    manifest_key: str
    directory: Path
    log: Callable[[str], None]

    def train(self, points: list[StudyPoint], kind: str = "study-point", announce: bool = True,
              widen: bool = False, edges_beside: int | None = None) -> list[PointResult]:
        """Train (or reuse, found by hash in the study's record) every point; their results in order. ``announce``:
        say how many are reused and how the trials run (a verification run and the sizes added beyond an edge
        are announced by their own lines). ``widen``: fewer points than trials at a time share the idle CPUs
        (:func:`widened`). ``edges_beside``: the grid's points, with the sizes beyond each budget's edge trained
        among them as soon as that budget is done (:mod:`raylm.study.edges_beside`; the value is the corpus's
        training tokens)."""
        from raylm.study.record import point_recorder
        from raylm.tune.batch import run_fixed_trials

        if not points:
            return []
        keys = {p.label: point_key(self.study, p, self.manifest_key) for p in points}
        recorded = self.record.points()  # read once for every point
        done = {p.label: self._finished(p, keys[p.label], recorded.get(keys[p.label])) for p in points}
        pending = [p for p in points if not done[p.label]]
        if announce:
            self.log(f"study: {len(points)} runs, {len(points) - len(pending)} already finished (reused), "
                     f"{len(pending)} to train, {self.session.describe_trials()}")
        searcher = None
        if edges_beside is not None and self.study.config.edges.extend:
            from raylm.study.edges_beside import EdgesBeside

            # Tune pickles its searcher: it gets module functions bound to plain data, not this driver
            searcher = EdgesBeside(self.study, points, pending,
                                   partial(finished_loss, self.study, self.manifest_key, self.record.points()),
                                   partial(keyed_payload, self.study, self.manifest_key), edges_beside)
        if pending or (searcher is not None and searcher.queue):
            context, payloads = self.context.of_kind(kind), [point_payload(p, keys[p.label]) for p in pending]
            if widen:
                context, payloads = widened(context, payloads, self.session)
            at_once = self.session.parallel_trials if searcher else min(self.session.parallel_trials, len(pending))
            run_fixed_trials(payloads, context, at_once, self.directory / "tune", points[0].kind,
                             self.study.config.trials.max_failures, callbacks=[point_recorder(self.record)],
                             searcher=searcher)
        recorded = self.record.points()
        return [self._result(p, keys[p.label], recorded.get(keys[p.label]), done[p.label]) for p in points]

    @property
    def record(self) -> StudyRecord:
        return StudyRecord(self.directory)

    def _finished(self, point: StudyPoint, key: str, recorded: RecordedPoint | None) -> bool:
        """In the record, finished at its last step; else a FINISHED run of the same hash in the store (a study
        moved or renamed), whose curve the record then takes over."""
        if recorded is not None and recorded.final(point.grid.steps) is not None:
            return True
        run = _finished(self.session.writer, self.parent, self.session.base.tracking.experiment, key)
        if run is None:
            return False
        history = run.metric_history("val/loss")
        if not history or history[-1][0] != point.grid.steps:
            return False
        for step, value in history:
            self.record.add_eval(key, point.label, step, {"val/loss": value})
        self.record.add_end(key, point.label, "FINISHED")
        return True

    def _result(self, point: StudyPoint, key: str, recorded: RecordedPoint | None, reused: bool) -> PointResult:
        """The point's result from the record; its MLflow run found (or re-created from the record) for links."""
        from raylm.study.mirror import recreate_run
        from raylm.tracking.writer import RemoteRun

        if recorded is None:
            return PointResult(point, key, "FAILED", None, None)
        run_id = None
        if self.parent.enabled:
            run = RemoteRun.find(self.session.writer, self.parent.uri, self.session.base.tracking.experiment,
                                 POINT_TAG, key)
            run_id = run.run_id if run is not None else None
            if run_id is None and recorded.status is not None:
                run_id = recreate_run(self.session.writer, self.parent, self.study, point, key, recorded,
                                      point_payload(point, key)["tags"])
        return recorded_result(point, recorded, reused, run_id)


def widened(context: TrialContext, payloads: list[dict], session: DriverSession) -> tuple[TrialContext, list[dict]]:
    """Fewer CPU trials than the study runs at a time (its verification run, alone at the end) take the CPUs
    the others would have: ``parallel.cpus_per_worker`` times the trials that fit per trial, so no core idles
    (on the 2-core reference machine the demo's verification took 104 s with two threads, 107 s with one; two
    data-parallel ranks on the trial's pool, half the micro-batch each, trained no faster: 40-48K tokens/s
    either way). Threads do not change what a run learns, so they are not part of its hash (:func:`point_key`
    hashes the point before this): a rerun with other concurrency finds it."""
    share = session.parallel_trials // len(payloads)
    par = session.base.parallel
    if share <= 1 or par.use_gpu:
        return context, payloads
    cpus = par.cpus_per_worker * share
    payloads = [{**p, "overrides": {**p["overrides"], "parallel.cpus_per_worker": cpus}} for p in payloads]
    return replace(context, demand={**context.demand, "CPU": context.demand["CPU"] * share}), payloads


def run_study(study: Study, address: str | None = None, log=print) -> StudyOutcome:
    """grid -> train -> fit -> verify -> log, one straight line; a rerun reuses every finished point."""
    from raylm.tune.sweep_config import check_local_directory

    check_local_directory(study.config.output_dir, "the study's output_dir", "study")
    started = time.time()
    grid = build_grid(study)
    first = point_config(study, grid[0])
    trials = study.config.trials
    with DriverSession.open(first, trials.max_concurrent_trials, address, log, trials.in_process) as session:
        driver = _driver(study, session, grid, log)
        train_tokens = session.dataset.manifest.splits["train"].sequences * study.config.seq_len
        results, edges = extend_edges(study, driver.train(grid, edges_beside=train_tokens),
                                      partial(driver.train, announce=False), train_tokens, log)
        fit, recommendation = fit_results(study, usable_points(results, log))
        recommended = fit["recommended"]
        _log_recommendation(recommended, log)
        verify = driver.train(verification_points(study, recommended, log), "study-verify", announce=False,
                              widen=True)
        outcome = StudyOutcome(driver.directory, results, fit, recommended, verify,
                               headline_metrics(fit, recommended, verify), driver.parent.run_id,
                               driver.parent.experiment_id, driver.parent.uri, time.time() - started,
                               recommendation, write_answers(study, recommended, driver.directory), edges)
        log_parent(outcome, driver.parent, study, log)
        return outcome


def _driver(study: Study, session: DriverSession, grid: list[StudyPoint], log) -> StudyDriver:
    """Check the corpus, find the study's directory and parent run by the grid's hash, bind the trials' context."""
    manifest = session.dataset.manifest
    check_corpus(grid, manifest.splits["train"].sequences * study.config.seq_len, log)
    keys = sorted(point_key(study, p, manifest.key) for p in grid)
    study_key = hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:12]
    directory = Path(study.config.output_dir).resolve() / f"{study.config.name}-{study_key}"
    directory.mkdir(parents=True, exist_ok=True)
    save_study(study, directory)  # what raylm study show reads back
    attach_logs(directory / "logs", log)
    parent = _parent(session, study, study_key, directory, log)
    context = session.trial_context(study.base, parent.run_id, str(directory / "points"), "study-point")
    return StudyDriver(study, session, parent, context, manifest.key, directory, log)


def _log_recommendation(recommended: list[dict], log) -> None:
    from raylm.study.summary import interval, num

    log("fits done; recommended: " + "; ".join(
        f"{r['approach']} at C={r['budget']:.3g}: N*={r['n_opt']:,.0f}, D*={r['d_opt']:,.0f}, loss {num(r['loss'])} "
        f"{interval(r.get('loss_interval'))}" for r in recommended))


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


def _parent(session: DriverSession, study: Study, study_key: str, directory: Path, log):
    from raylm.tracking.writer import RemoteRun

    tracking = session.base.tracking
    if not tracking.enabled:
        return RemoteRun.disabled()
    parent = RemoteRun.start(session.writer, tracking, f"{study.config.name}-{study_key}", tags={"raylm.kind": "study"},
                             reuse_tag=("raylm.study_key", study_key))
    settings = {k: v for k, v in flatten(study.config.model_dump(mode="json")).items() if k != "base"}
    # what defines the grid is a param (it cannot change: the same grid is the same parent run); what
    # only shapes the analysis (targets, fit, verification, name, where) may change between runs: tags
    parent.log_params({f"study.{k}": v for k, v in settings.items() if not k.startswith(ANALYSIS_SETTINGS)})
    parent.set_tags({f"raylm.study.{k}": v for k, v in settings.items() if k.startswith(ANALYSIS_SETTINGS)})
    parent.log_text(json.dumps(study.to_dict(), indent=2), "study.json")
    parent.set_tag("raylm.study_dir", str(directory))
    ended = parent.end_children("RUNNING", "KILLED", "its study driver stopped before it finished (this run of "
                                "the study trains the point again if it is still in the grid)")
    if ended:
        log(f"study: {ended} run(s) left RUNNING by a stopped driver ended as KILLED")
    return parent


def keyed_payload(study: Study, manifest_key: str, point: StudyPoint) -> dict:
    """A point's trial payload, keyed by its hash."""
    return point_payload(point, point_key(study, point, manifest_key))


def finished_loss(study: Study, manifest_key: str, recorded: dict[str, RecordedPoint],
                  point: StudyPoint) -> float | None:
    """The final loss of a point that ``recorded`` (the study's record) holds as finished, else None."""
    found = recorded.get(point_key(study, point, manifest_key))
    return found.final(point.grid.steps) if found is not None else None


def point_payload(point: StudyPoint, key: str) -> dict:
    g = point.grid
    return {"overrides": point.overrides,
            "tags": {POINT_TAG: key, "run_name": point.label, "raylm.point": point.label, "raylm.point_kind":
                     point.kind, "raylm.budget": f"{g.budget:.6g}", "raylm.params": g.params,
                     "raylm.tokens": g.tokens, "raylm.tokens_per_param": f"{g.tokens / g.params:.4g}",
                     "raylm.flops": f"{g.flops:.6g}"}}


def _finished(writer, parent, experiment: str, key: str):
    from raylm.tracking.writer import RemoteRun

    if not parent.enabled:
        return None
    run = RemoteRun.find(writer, parent.uri, experiment, POINT_TAG, key)
    return run if run is not None and run.status() == "FINISHED" else None


__all__ = ["PointResult", "StudyDriver", "StudyOutcome", "check_corpus", "run_study"]
