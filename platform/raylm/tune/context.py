"""What every trial of one sweep or study gets from its driver, typed and picklable."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one sweep or study gets from its driver.

    ``base``: the validated base run as a plain dict; ``writer``: the tracking writer's actor name;
    ``parent_run_id``: the MLflow parent (None without tracking); ``storage_root``: where the trials'
    checkpoints go (absolute); ``kind``: the ``raylm.kind`` tag of each trial's run; ``dataset_dir``:
    the shards the driver prepared.
    """

    base: dict[str, Any]
    writer: str
    parent_run_id: str | None
    storage_root: str
    kind: str
    dataset_dir: str | None = None

    def of_kind(self, kind: str) -> TrialContext:
        return replace(self, kind=kind)
