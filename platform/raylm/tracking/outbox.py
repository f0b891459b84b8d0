"""A run's undelivered tracking records, kept on local disk until the store takes them.

One append-only JSON-lines file per run (``<outbox_dir>/<run_id>.jsonl``): a header naming the
store and the run, then one line per record that could not be delivered (``{"seq": n, "op": ...,
"args": [...]}``) and one line per delivery (``{"ack": n}``). Every line is flushed and fsynced
before the call that wrote it returns, so a record that reached the outbox survives the writer,
the driver and the machine's power. Records are delivered in ``seq`` order; a record is pending
until its ack is written. Metric records carry the timestamp of their first attempt, so
delivering one twice (its batch landed but the answer was lost) writes an identical row, which
MLflow's store keeps once (its primary key is key, timestamp, step and value). The file is
removed once everything in it is delivered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylm.durable_log import append_lines

SUFFIX = ".jsonl"


@dataclass(frozen=True)
class Record:
    seq: int
    op: str
    args: list


class Outbox:
    """The outbox file of one run; the header is written with the first record."""

    def __init__(self, path: Path, uri: str, run_id: str, experiment_id: str | None = None):
        self.path, self.uri, self.run_id, self.experiment_id = Path(path), uri, run_id, experiment_id
        self._last_seq = 0
        self.pending: list[Record] = self._read() if self.path.exists() else []
        self._next = self._last_seq + 1

    @classmethod
    def for_run(cls, directory: str | Path, uri: str, run_id: str, experiment_id: str | None = None) -> Outbox:
        return cls(Path(directory) / f"{run_id}{SUFFIX}", uri, run_id, experiment_id)

    @classmethod
    def open(cls, path: str | Path) -> Outbox:
        """An existing outbox file (``raylm tracking replay``): store and run from its header."""
        with open(path, encoding="utf-8") as handle:
            header = json.loads(handle.readline())
        return cls(Path(path), header["uri"], header["run_id"], header.get("experiment_id"))

    def append(self, op: str, args: list[Any]) -> Record:
        record = Record(self._next, op, list(args))
        self._next += 1
        lines = [] if self.path.exists() else [{"uri": self.uri, "run_id": self.run_id,
                                               "experiment_id": self.experiment_id}]
        self._write([*lines, {"seq": record.seq, "op": op, "args": record.args}])
        self.pending.append(record)
        return record

    def ack(self, record: Record) -> None:
        """``record`` (the first pending one) was delivered; the file goes when nothing is left."""
        self.pending.remove(record)
        if self.pending:
            self._write([{"ack": record.seq}])
        else:
            self.path.unlink(missing_ok=True)

    def _write(self, lines: list[dict]) -> None:
        append_lines(self.path, lines)

    def _read(self) -> list[Record]:
        records: dict[int, Record] = {}
        acked: set[int] = set()
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                if number == 0 or not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash: it was never acknowledged
                    continue
                if "ack" in entry:
                    acked.add(entry["ack"])
                else:
                    records[entry["seq"]] = Record(entry["seq"], entry["op"], entry["args"])
        self._last_seq = max([*records, *acked], default=0)
        return [records[s] for s in sorted(records) if s not in acked]


def outbox_files(directory: str | Path) -> list[Path]:
    """Every outbox file under ``directory`` (the directory itself, or any ``tracking-outbox`` below it)."""
    directory = Path(directory)
    if directory.is_file():
        return [directory]
    return sorted(p for p in directory.rglob(f"*{SUFFIX}") if _is_outbox(p))


def _is_outbox(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            header = json.loads(handle.readline())
    except (OSError, ValueError):
        return False
    return isinstance(header, dict) and {"uri", "run_id"} <= set(header)
