"""Delivery of one run's tracking records: now when the store answers, else from the outbox, in order.

A record is delivered at once while nothing waits. When the store does not take it for a reason
that may pass (connection refused, timeout, a 5xx, a locked database) the record goes to the run's
outbox on disk (:mod:`raylm.tracking.outbox`) and so does every later record, to keep the order;
the waiting records are retried with exponential backoff (1 s doubling to 10 s) on every new
record and by the writer's background retry (:mod:`raylm.tracking.writer`). The console says once
when the store went away and where the records wait, and again when they were delivered (how many
still wait is said when the driver finishes: :func:`raylm.tracking.writer.stop_writer`). A record
the store refuses for good (a changed parameter, a missing local file) is reported and dropped:
retrying cannot make it land, and it must not hold back the records behind it. Parameters refused
because some already exist with other values are logged one by one, keeping the values the run
had, and the names that changed are reported.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from raylm.tracking.outbox import Outbox, Record

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 10.0
# MLflow error codes that say the request itself is wrong: retrying cannot help
REFUSED = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                     "INVALID_STATE", "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED"})


def refused_for_good(exc: BaseException) -> bool:
    """True when ``exc`` says the store refuses the record (not that it was unreachable)."""
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, ValueError, TypeError)):
        return True
    return getattr(exc, "error_code", None) in REFUSED


class Delivery:
    """The delivery of one :class:`~raylm.tracking.mlflow_run.MlflowRun`'s records (``run.deliver``)."""

    def __init__(self, run: Any, outbox_dir: str):
        self.run = run
        self.outbox = Outbox.for_run(outbox_dir, run.uri, run.run_id, run.experiment_id)
        self.next_try = 0.0
        self.backoff = FIRST_BACKOFF_S
        self.down_since: float | None = None
        if self.outbox.pending:  # left by a writer or driver that died: delivered first
            self.down_since = time.time()
            _say(f"MLflow: {len(self.outbox.pending)} records of run {run.run_id} wait in {self.outbox.path} "
                 "from before; delivering them first")

    @property
    def pending(self) -> list[Record]:
        return self.outbox.pending

    def write(self, op: str, args: list) -> None:
        if not self.pending:
            try:
                self.run.deliver(op, args)
                return
            except Exception as exc:  # noqa: BLE001 - every failure is either reported or kept
                if refused_for_good(exc):
                    self._refused(op, args, exc)
                    return
                self.outbox.append(op, args)
                self._went_down(exc)
                return
        self.outbox.append(op, args)
        self.drain()

    def drain(self, wait_s: float = 0.0) -> int:
        """Deliver the waiting records in order (retrying until ``wait_s`` has passed); how many still wait."""
        deadline = time.monotonic() + wait_s
        while self.pending:
            now = time.monotonic()
            if now < self.next_try:
                if now + min(self.next_try - now, 1.0) > deadline:
                    break
                time.sleep(min(self.next_try - now, 1.0))
                continue
            record = self.pending[0]
            try:
                self.run.deliver(record.op, record.args)
            except Exception as exc:  # noqa: BLE001
                if refused_for_good(exc):
                    self._refused(record.op, record.args, exc)
                    self.outbox.ack(record)
                    continue
                self._went_down(exc)
                continue
            self.outbox.ack(record)
            if not self.pending:
                self._came_back()
        return len(self.pending)

    def report_down(self, what: str, exc: Exception) -> None:
        """A read failed: say so once (nothing waits because of it)."""
        if self.down_since is None:
            _say(f"MLflow at {self.run.uri} did not answer ({what}: {_brief(exc)}); it is retried")

    def last_waiting_step(self, metric: str) -> int:
        steps = [r.args[1] for r in self.pending if r.op == "log_metrics" and metric in r.args[0]]
        return max(steps, default=-1)

    def _went_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = time.time()
            self.backoff = FIRST_BACKOFF_S
            _say(f"MLflow at {self.run.uri} went away ({_brief(exc)}); records of run {self.run.run_id} wait in "
                 f"{self.outbox.path} and are retried with backoff")
        else:
            self.backoff = min(self.backoff * 2, MAX_BACKOFF_S)
        self.next_try = now + self.backoff

    def _came_back(self) -> None:
        if self.down_since is not None:
            _say(f"MLflow at {self.run.uri} answers again: every waiting record of run {self.run.run_id} "
                 f"delivered (after {time.time() - self.down_since:.0f} s)")
        self.down_since, self.next_try, self.backoff = None, 0.0, FIRST_BACKOFF_S

    def _refused(self, op: str, args: list, exc: BaseException) -> None:
        if op == "log_params" and getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE":
            try:
                changed = self._params_one_by_one(args[0])
            except Exception as again:  # noqa: BLE001
                _say(f"MLflow refused parameters of run {self.run.run_id} ({_brief(again)}); they are dropped")
                return
            if changed:
                _say(f"MLflow run {self.run.run_id} keeps its earlier values of {', '.join(sorted(changed))} "
                     "(a parameter cannot change once logged)")
            return
        _say(f"MLflow refused {op} for run {self.run.run_id} ({_brief(exc)}); that record is dropped")

    def _params_one_by_one(self, params: dict[str, str]) -> list[str]:
        existing = self.run.client.get_run(self.run.run_id).data.params
        changed = [k for k, v in params.items() if k in existing and existing[k] != v]
        fresh = {k: v for k, v in params.items() if k not in existing}
        if fresh:
            self.run.deliver("log_params", [fresh])
        return changed


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


def _say(message: str) -> None:
    print(f"[tracking] {message}", file=sys.stderr, flush=True)
