"""MLflow mirrors the study's record (:mod:`raylm.study.record`): a point the record holds but the
tracking store does not (a new or emptied store, a run lost with a store) gets its nested run back,
with its tags, its config as params and its evaluations as metrics, without training anything."""

from __future__ import annotations

from raylm.config import flatten
from raylm.study.config import Study
from raylm.study.grid import StudyPoint, point_config
from raylm.study.record import RecordedPoint
from raylm.tune.trial import POINT_TAG


def recreate_run(writer: str, parent, study: Study, point: StudyPoint, key: str, recorded: RecordedPoint,
                 tags: dict) -> str | None:
    """The point's nested run under ``parent``, made from the record; its id (None when the store is down)."""
    from raylm.tracking.writer import RemoteRun

    cfg = point_config(study, point)
    run = RemoteRun.start(writer, cfg.tracking, point.label, parent_run_id=parent.run_id,
                          tags={"raylm.kind": f"study-{point.kind}", "raylm.recreated_from": "points.jsonl",
                                **{k: str(v) for k, v in tags.items() if k != "run_name"}},
                          reuse_tag=(POINT_TAG, key))
    if not run.enabled:
        return None
    if not run.metric_history("val/loss"):  # a run that exists already keeps its own curve
        run.log_params(flatten(cfg.to_dict()))
        for step, values in sorted(recorded.evals.items()):
            run.log_metrics(values, step)
    run.finish(recorded.status or "FINISHED", error=recorded.error)
    return run.run_id
