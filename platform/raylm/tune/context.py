"""What every trial of one sweep or study gets from its driver, typed and picklable."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one sweep or study gets from its driver.

    ``base``: the validated base run as a plain dict; ``writer``: the tracking writer's actor name;
    ``parent_run_id``: the MLflow parent (None without tracking); ``storage_root``: where the trials'
    checkpoints go (absolute); ``kind``: the ``raylm.kind`` tag of each trial's run; ``dataset_dir``:
    the shards the driver prepared; ``in_process``: trials train in the trial's own process (Ray Train
    local mode), with a worker pool it keeps for the ranks beyond the first, rather than on a new worker
    group; ``demand``: the CPUs and GPUs one trial's training takes; ``workers``: its ranks.
    """

    base: dict[str, Any]
    writer: str
    parent_run_id: str | None
    storage_root: str
    kind: str
    dataset_dir: str | None = None
    in_process: bool = False
    demand: dict[str, float] = field(default_factory=lambda: {"CPU": 1.0, "GPU": 0.0})
    workers: int = 1

    def of_kind(self, kind: str) -> TrialContext:
        return replace(self, kind=kind)
