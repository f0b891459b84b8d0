"""Append-only JSON-lines files whose every write survives a crash: flushed and fsynced before returning.

Used where a line must outlive the process that wrote it: a run's tracking outbox
(:mod:`raylm.tracking.outbox`) and a study's record of its points (:mod:`raylm.study.record`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def append_lines(path: Path, entries: list[dict]) -> None:
    """Append one JSON line per entry to ``path`` (its directory made if missing), flushed and fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(entry) + "\n" for entry in entries))
        handle.flush()
        os.fsync(handle.fileno())
