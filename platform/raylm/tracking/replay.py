"""Deliver what finished runs left in their outboxes (``raylm tracking replay DIR``).

Each outbox file (:mod:`raylm.tracking.outbox`) names its store and run; its waiting records are
delivered in order, each once (:mod:`raylm.tracking.delivery`), and the file is removed when empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raylm.tracking.outbox import Outbox, outbox_files


@dataclass(frozen=True)
class Replayed:
    path: Path
    uri: str
    run_id: str
    waiting_before: int
    waiting_after: int


def replay(directory: str | Path, wait_s: float = 0.0) -> list[Replayed]:
    """Deliver every outbox under ``directory`` (retrying each for up to ``wait_s`` seconds)."""
    from raylm.tracking.mlflow_run import MlflowRun

    out = []
    for path in outbox_files(directory):
        box = Outbox.open(path)
        before = len(box.pending)
        run = MlflowRun(box.uri, box.run_id, outbox_dir=str(path.parent))
        run.experiment_id = box.experiment_id
        out.append(Replayed(path, box.uri, box.run_id, before, run.drain(wait_s)))
    return out
