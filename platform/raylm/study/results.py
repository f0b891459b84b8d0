"""A study's results as data: each point's run and losses, the whole outcome, and their tables."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raylm.scaling.data import ScalingData
from raylm.study.grid import StudyPoint


@dataclass
class PointResult:
    point: StudyPoint
    key: str
    status: str                 # FINISHED, FAILED, ...
    run_id: str | None
    loss: float | None          # final validation loss (the fixed held-out set)
    curve: list[tuple[int, float]] = field(default_factory=list)  # (tokens seen, val loss) along the run
    reused: bool = False


@dataclass
class StudyOutcome:
    directory: Path
    results: list[PointResult]
    fit: dict
    recommended: list[dict]
    verify: list[PointResult]
    metrics: dict
    parent_run_id: str | None
    experiment_id: str | None
    tracking_uri: str
    elapsed_s: float | None  # None: refitted from the record (raylm study show), not run
    recommendation: Any = field(default=None, repr=False)  # raylm.scaling.predict.recommend.Recommendation: the fits
    answers: list[Path] = field(default_factory=list)  # recommended_<target>.yaml, one per target (study/answers.py)
    edges: Any = None  # raylm.study.edges.EdgeReport: the budgets whose minimum was at an edge, and the sizes added


def recorded_result(point: StudyPoint, recorded, reused: bool, run_id: str | None = None,
                    unfinished: str = "FAILED") -> PointResult:
    """A point's result from the study's record (a :class:`~raylm.study.record.RecordedPoint`): its final
    validation loss and its curve on the tokens axis; ``unfinished`` is the status of a point whose record
    holds no evaluation at its last step."""
    tokens_per_step = point.grid.global_batch_size * point.grid.seq_len
    curve = [(step * tokens_per_step, value) for step, value in recorded.curve()]
    final = recorded.final(point.grid.steps)
    status = (recorded.status or "FAILED") if final is not None else unfinished
    return PointResult(point, recorded.key, status, run_id, final, curve, reused)


def scaling_data(results: list[PointResult]) -> ScalingData:
    return ScalingData.from_arrays([r.point.grid.params for r in results], [r.point.grid.tokens for r in results],
                                   [r.loss for r in results], flops=[r.point.grid.flops for r in results],
                                   source="study")


def write_results_csv(outcome: StudyOutcome, path: Path) -> None:
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["kind", "label", "budget", "params", "tokens", "tokens_per_param", "steps", "flops", "loss",
                      "status", "reused", "run_id"])
        for r in [*outcome.results, *outcome.verify]:
            g = r.point.grid
            out.writerow([r.point.kind, r.point.label, f"{g.budget:.6g}", g.params, g.tokens,
                          f"{g.tokens / g.params:.4g}", g.steps, f"{g.flops:.6g}",
                          "" if r.loss is None else f"{r.loss:.6f}", r.status, r.reused, r.run_id or ""])
