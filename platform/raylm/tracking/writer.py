"""The one writer of a tracking store: a Ray actor on the driver's node.

Training workers, Tune trials and study drivers never open the tracking store. They send
what they log to this actor, which alone talks to MLflow. That avoids SQLite's "database
is locked" under many concurrent trials, the broken store that several processes creating
it at once can leave, relative SQLite paths that resolve in each trial's own working
directory, and workers on other nodes writing to a local file nobody reads.

Calls from one process reach the actor in the order they were sent (Ray's per-caller
ordering of actor tasks), so a curve logged step by step stays in order; ``flush`` waits
until everything sent before it has been written.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from typing import Any

from raylm.config import TrackingConfig
from raylm.tracking.mlflow_run import MlflowRun
from raylm.tracking.shutdown import install_sigterm_handler, remove_sigterm_handler

NAMESPACE = "raylm"
RETRY_EVERY_S = 1.0
CALL_TIMEOUT_S = 120.0  # the longest a caller waits for an answer (a read or an end); then it goes on
CLOSE_WAIT_S = 60.0  # how long a finishing driver keeps retrying records the store has not taken yet
# Run methods the writer forwards; anything else is refused (the actor is not a general RPC).
FORWARDED = frozenset({"log_params", "log_metrics", "log_text", "log_artifact", "log_input", "log_model", "set_tag",
                       "set_tags", "end", "finish", "last_step", "status", "metric_history", "end_children"})


class TrackingWriter:
    """Holds one :class:`MlflowRun` per run id and forwards calls to it (runs as a Ray actor).

    Records the store does not take wait in each run's outbox (:mod:`raylm.tracking.delivery`); a
    background thread retries them every ``RETRY_EVERY_S`` seconds while any wait. The actor restarts
    when it dies (its callers' calls are retried by Ray) and picks the waiting records up from disk.
    """

    def __init__(self):
        self._runs: dict[str, MlflowRun] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._retry_waiting, name="tracking-retry", daemon=True).start()

    def start_run(self, tracking: dict, run_name: str, parent_run_id: str | None = None,
                  tags: dict[str, str] | None = None, reuse_tag: tuple[str, str] | None = None) -> dict:
        with self._lock:
            run = MlflowRun.start(TrackingConfig(**tracking), run_name, parent_run_id=parent_run_id, tags=tags,
                                  reuse_tag=reuse_tag)
            if run.run_id:
                self._runs[run.run_id] = run
            return run.handle()

    def call(self, handle: dict, method: str, *args, **kwargs) -> Any:
        if method not in FORWARDED:
            raise ValueError(f"the tracking writer does not forward {method!r}")
        with self._lock:
            return getattr(self._run(handle), method)(*args, **kwargs)

    def _run(self, handle: dict) -> MlflowRun:
        run = self._runs.get(handle["run_id"])
        if run is None:
            run = self._runs[handle["run_id"]] = MlflowRun.from_handle(handle)
        return run

    def find_run(self, uri: str, experiment: str, tag: str, value: str) -> dict | None:
        with self._lock:
            run = MlflowRun.find(uri, experiment, tag, value)
            return run.handle() if run else None

    def end_open_runs(self, status: str, error: str) -> list[str]:
        """End every run this writer holds that is still running as ``status`` (the job was stopped);
        returns their ids. Runs that already ended keep their status."""
        with self._lock:
            return [run_id for run_id, run in self._runs.items() if run.finish(status, error=error)]

    def close(self, wait_s: float) -> list[dict]:
        """Deliver what waits, retrying for up to ``wait_s`` seconds; what still waits, per run."""
        deadline = time.monotonic() + wait_s
        with self._lock:
            left = [{"run_id": run_id, "uri": run.uri, "waiting": run.drain(max(0.0, deadline - time.monotonic())),
                     "outbox": run.outbox_dir} for run_id, run in self._runs.items()]
            self._closed.set()
        return [entry for entry in left if entry["waiting"]]

    def waiting(self) -> int:
        with self._lock:
            return sum(run.waiting for run in self._runs.values())

    def ping(self) -> bool:
        return True

    def _retry_waiting(self) -> None:
        while not self._closed.wait(RETRY_EVERY_S):
            with self._lock:
                for run in self._runs.values():
                    if run.waiting:
                        run.drain()


_STARTED: dict[str, object] = {}  # the driver's handles: a named actor lives as long as its owner holds one


def start_writer() -> str:
    """Start the writer on this (the driver's) node and return its name, which workers look up.

    The actor takes no CPU, so it never competes with training for a slot.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import ray

    name = f"tracking-writer-{uuid.uuid4().hex[:12]}"
    node = ray.get_runtime_context().get_node_id()
    actor = ray.remote(TrackingWriter).options(
        name=name, namespace=NAMESPACE, num_cpus=0, max_concurrency=1, max_restarts=-1, max_task_retries=-1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
    ).remote()
    ray.get(actor.ping.remote(), timeout=CALL_TIMEOUT_S)
    _STARTED[name] = actor
    install_sigterm_handler(end_open_runs)  # `ray job stop` ends this driver's open runs as KILLED
    return name


def current_writer(name: str) -> str:
    """``name`` if this driver started it, else the writer this driver started last (a callback
    restored with a resumed sweep still names the writer of the killed driver)."""
    if name in _STARTED or not _STARTED:
        return name
    return next(reversed(_STARTED))


def stop_writer(name: str, wait_s: float = CLOSE_WAIT_S) -> None:
    """Let the writer go once everything sent to it is written, or waits on disk (the console says where)."""
    import ray

    actor = _STARTED.pop(name, None)
    if not _STARTED:
        remove_sigterm_handler()
    if actor is None:
        return
    try:
        waiting = ray.get(actor.waiting.remote(), timeout=CALL_TIMEOUT_S)
        if waiting:
            print(f"[tracking] the store has not taken {waiting} records yet; retrying for up to {wait_s:.0f} s "
                  "before leaving them in the outbox", file=sys.stderr, flush=True)
        left = ray.get(actor.close.remote(wait_s), timeout=wait_s + CALL_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - the run's own result stands; what waits is on disk
        left = []
        print(f"[tracking] the tracking writer did not answer on closing ({type(exc).__name__}); records it had not "
              "delivered wait in the outbox: raylm tracking replay DIR delivers them", file=sys.stderr)
    for entry in left:
        print(f"[tracking] MLflow at {entry['uri']} is still unreachable: {entry['waiting']} records of run "
              f"{entry['run_id']} wait in {entry['outbox']}; the run's results are complete. Deliver them when "
              f"the store is back: raylm tracking replay {entry['outbox']}", file=sys.stderr, flush=True)
    ray.kill(actor, no_restart=True)


def end_open_runs(status: str, error: str, timeout_s: float = 10.0) -> list[str]:
    """End the still-running runs of every writer this driver started (see :mod:`raylm.tracking.shutdown`)."""
    import ray

    ended: list[str] = []
    for actor in list(_STARTED.values()):
        try:
            ended += ray.get(actor.end_open_runs.remote(status, error), timeout=timeout_s)
        except Exception:  # noqa: BLE001 - a stopping job must still exit; the other writers still get asked
            continue
    return ended


def _writer(name: str):
    import ray

    return ray.get_actor(name, namespace=NAMESPACE)


class RemoteRun:
    """An MLflow run logged through the writer actor; the same methods as :class:`MlflowRun`.

    Metrics, params, tags and texts are sent without waiting; ``end``, ``last_step``,
    ``status`` and ``flush`` wait for the writer.
    """

    def __init__(self, writer_name: str | None, handle: dict[str, Any]):
        self.writer_name, self._handle = writer_name, dict(handle)
        self.run_id, self.uri = handle.get("run_id"), handle.get("uri", "")
        self.enabled = bool(handle.get("enabled")) and writer_name is not None and self.run_id is not None
        self._actor = None

    @classmethod
    def start(cls, writer_name: str, tracking: TrackingConfig, run_name: str, parent_run_id: str | None = None,
              tags: dict[str, str] | None = None, reuse_tag: tuple[str, str] | None = None) -> RemoteRun:
        """Create a run in the store (or reopen the unfinished run tagged ``reuse_tag``)."""
        import ray

        handle = ray.get(_writer(writer_name).start_run.remote(tracking.model_dump(), run_name, parent_run_id,
                                                               tags, reuse_tag), timeout=CALL_TIMEOUT_S)
        return cls(writer_name, handle)

    @classmethod
    def find(cls, writer_name: str, uri: str, experiment: str, tag: str, value: str) -> RemoteRun | None:
        """The run tagged ``tag = value`` in ``experiment`` of the store ``uri`` (absolute), if any."""
        import ray

        handle = ray.get(_writer(writer_name).find_run.remote(uri, experiment, tag, value), timeout=CALL_TIMEOUT_S)
        return cls(writer_name, handle) if handle else None

    @property
    def experiment_id(self) -> str | None:
        return self._handle.get("experiment_id")

    @classmethod
    def disabled(cls) -> RemoteRun:
        return cls(None, {"enabled": False})

    @property
    def actor(self):
        if self._actor is None:
            self._actor = _writer(self.writer_name)
        return self._actor

    def _send(self, method: str, *args, **kwargs):
        return self.actor.call.remote(self._handle, method, *args, **kwargs) if self.enabled else None

    def _ask(self, method: str, *args, default=None, **kwargs):
        """The writer's answer, or ``default`` when it does not come within CALL_TIMEOUT_S (training goes on)."""
        import ray

        ref = self._send(method, *args, **kwargs)
        if ref is None:
            return default
        try:
            return ray.get(ref, timeout=CALL_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            print(f"[tracking] the tracking writer did not answer {method} within {CALL_TIMEOUT_S:.0f} s; "
                  "going on", file=sys.stderr, flush=True)
            return default

    def log_params(self, params: dict[str, Any]) -> None:
        self._send("log_params", params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        # stamped here: a call Ray retries on a restarted writer carries the same timestamp (logged once)
        self._send("log_metrics", {k: float(v) for k, v in metrics.items()}, step, int(time.time() * 1000))

    def log_text(self, text: str, name: str) -> None:
        self._send("log_text", text, name)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        """``path`` must be readable on the driver's node (where the writer runs)."""
        self._send("log_artifact", str(path), artifact_path)

    def log_input(self, name: str, digest: str, source: str, context: str = "training") -> None:
        self._send("log_input", name, digest, source, context)

    def log_model(self, model_dir: str, name: str, step: int) -> None:
        self._send("log_model", str(model_dir), name, int(step))

    def set_tag(self, key: str, value: str) -> None:
        self._send("set_tag", key, str(value))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._send("set_tags", {k: str(v) for k, v in tags.items()})

    def last_step(self, metric: str) -> int:
        return self._ask("last_step", metric, default=-1)

    def end_children(self, status: str, new_status: str, reason: str) -> int:
        """End the nested runs in ``status`` as ``new_status`` (see :meth:`MlflowRun.end_children`)."""
        return self._ask("end_children", status, new_status, reason, default=0)

    def status(self) -> str | None:
        return self._ask("status")

    def metric_history(self, metric: str) -> list[tuple[int, float]]:
        return self._ask("metric_history", metric, default=[])

    def end(self, status: str = "FINISHED") -> None:
        self._ask("end", status)

    def finish(self, status: str, error: str | None = None, force: bool = False) -> None:
        """End as ``status`` unless already ended (see :meth:`MlflowRun.finish`); waits for the writer."""
        self._ask("finish", status, error, force)

    def flush(self, timeout: float = CALL_TIMEOUT_S) -> None:
        """Wait (at most ``timeout`` s) until everything sent so far is written or waits in the outbox."""
        import ray

        if self.enabled:
            ray.get(self.actor.ping.remote(), timeout=timeout)

    def handle(self) -> dict[str, Any]:
        """What another process needs to log into this run (a plain dict)."""
        return {"writer": self.writer_name, **self._handle}

    @classmethod
    def from_handle(cls, handle: dict[str, Any] | None) -> RemoteRun:
        if not handle:
            return cls.disabled()
        handle = dict(handle)
        return cls(handle.pop("writer", None), handle)
