"""A study's own record of its points: the truth about what was trained, kept in the study directory.

``points.jsonl``: one line per evaluation a point reported (``{"key", "label", "step", "values"}``)
and one per ending (``{"key", "label", "status", "error"}``), appended and fsynced by the driver as
Tune hands it each result (:class:`PointRecorder`), so a driver killed at any moment keeps
everything reported before. The losses come from the training results themselves, never from the
tracking store: the fit reads this file, and the MLflow runs mirror it
(:func:`raylm.study.mirror.mirror_points` re-creates them in a new or emptied store). A later line for
the same point and step wins (a point continued from a checkpoint reports its later steps again).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from raylm.durable_log import append_lines

RECORD_FILE = "points.jsonl"


@dataclass
class RecordedPoint:
    key: str
    label: str
    evals: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> reported values
    status: str | None = None  # FINISHED, FAILED, ... once it ended
    error: str | None = None

    def curve(self, metric: str = "val/loss") -> list[tuple[int, float]]:
        return sorted((step, v[metric]) for step, v in self.evals.items() if metric in v)

    def final(self, steps: int, metric: str = "val/loss") -> float | None:
        """The metric at the last step, when the point finished there."""
        value = self.evals.get(steps, {}).get(metric)
        return value if self.status == "FINISHED" and value is not None else None


class StudyRecord:
    def __init__(self, directory: Path):
        self.path = Path(directory) / RECORD_FILE

    def add_eval(self, key: str, label: str, step: int, values: dict[str, float]) -> None:
        self._append({"key": key, "label": label, "step": int(step), "values": values})

    def add_end(self, key: str, label: str, status: str, error: str | None = None) -> None:
        self._append({"key": key, "label": label, "status": status, "error": error})

    def points(self) -> dict[str, RecordedPoint]:
        out: dict[str, RecordedPoint] = {}
        if not self.path.exists():
            return out
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # the last line of a killed driver, cut short
                    continue
                point = out.setdefault(entry["key"], RecordedPoint(entry["key"], entry["label"]))
                if "step" in entry:
                    point.evals[entry["step"]] = entry["values"]
                else:
                    point.status, point.error = entry["status"], entry.get("error")
        return out

    def _append(self, entry: dict) -> None:
        append_lines(self.path, [entry])


RECORDED_METRICS = ("val/loss", "val/perplexity", "train/loss")


def point_recorder(record: StudyRecord):
    """A Tune callback (driver side) writing each study point's reported evaluations and its ending."""
    import ray.tune

    from raylm.tune.trial import POINT_KEY, POINT_TAG

    def ids(trial) -> tuple[str, str] | None:
        tags = (trial.config.get(POINT_KEY) or {}).get("tags", {})
        return (tags[POINT_TAG], tags.get("raylm.point", tags[POINT_TAG])) if POINT_TAG in tags else None

    class PointRecorder(ray.tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            point = ids(trial)
            if point and "step" in result:
                values = {k: float(result[k]) for k in RECORDED_METRICS if result.get(k) is not None}
                record.add_eval(*point, int(result["step"]), values)

        def on_trial_complete(self, iteration, trials, trial, **info):
            if point := ids(trial):
                record.add_end(*point, "FINISHED")

        def on_trial_error(self, iteration, trials, trial, **info):
            if point := ids(trial):
                record.add_end(*point, "FAILED", str(getattr(trial, "error_msg", "") or "")[:2000] or None)

    return PointRecorder()
