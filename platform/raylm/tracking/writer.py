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

import uuid
from typing import Any

from raylm.config import TrackingConfig
from raylm.tracking.mlflow_run import MlflowRun
from raylm.tracking.shutdown import install_sigterm_handler, remove_sigterm_handler

NAMESPACE = "raylm"
# Run methods the writer forwards; anything else is refused (the actor is not a general RPC).
FORWARDED = frozenset({"log_params", "log_metrics", "log_text", "log_artifact", "set_tag", "set_tags", "end",
                       "finish", "last_step", "status", "metric_history"})


class TrackingWriter:
    """Holds one :class:`MlflowRun` per run id and forwards calls to it (runs as a Ray actor)."""

    def __init__(self):
        self._runs: dict[str, MlflowRun] = {}

    def start_run(self, tracking: dict, run_name: str, parent_run_id: str | None = None,
                  tags: dict[str, str] | None = None, reuse_tag: tuple[str, str] | None = None) -> dict:
        run = MlflowRun.start(TrackingConfig(**tracking), run_name, parent_run_id=parent_run_id, tags=tags,
                              reuse_tag=reuse_tag)
        if run.run_id:
            self._runs[run.run_id] = run
        return run.handle()

    def call(self, handle: dict, method: str, *args, **kwargs) -> Any:
        if method not in FORWARDED:
            raise ValueError(f"the tracking writer does not forward {method!r}")
        run = self._runs.get(handle["run_id"])
        if run is None:
            run = self._runs[handle["run_id"]] = MlflowRun.from_handle(handle)
        return getattr(run, method)(*args, **kwargs)

    def find_run(self, uri: str, experiment: str, tag: str, value: str) -> dict | None:
        run = MlflowRun.find(uri, experiment, tag, value)
        return run.handle() if run else None

    def end_open_runs(self, status: str, error: str) -> list[str]:
        """End every run this writer holds that is still running as ``status`` (the job was stopped);
        returns their ids. Runs that already ended keep their status."""
        return [run_id for run_id, run in self._runs.items() if run.finish(status, error=error)]

    def ping(self) -> bool:
        return True


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
        name=name, namespace=NAMESPACE, num_cpus=0, max_concurrency=1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
    ).remote()
    ray.get(actor.ping.remote())
    _STARTED[name] = actor
    install_sigterm_handler(end_open_runs)  # `ray job stop` ends this driver's open runs as KILLED
    return name


def current_writer(name: str) -> str:
    """``name`` if this driver started it, else the writer this driver started last (a callback
    restored with a resumed sweep still names the writer of the killed driver)."""
    if name in _STARTED or not _STARTED:
        return name
    return next(reversed(_STARTED))


def stop_writer(name: str) -> None:
    """Let the writer go once everything sent to it is written."""
    import ray

    actor = _STARTED.pop(name, None)
    if not _STARTED:
        remove_sigterm_handler()
    if actor is not None:
        ray.get(actor.ping.remote())
        ray.kill(actor)


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
                                                               tags, reuse_tag))
        return cls(writer_name, handle)

    @classmethod
    def find(cls, writer_name: str, uri: str, experiment: str, tag: str, value: str) -> RemoteRun | None:
        """The run tagged ``tag = value`` in ``experiment`` of the store ``uri`` (absolute), if any."""
        import ray

        handle = ray.get(_writer(writer_name).find_run.remote(uri, experiment, tag, value))
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
        import ray

        ref = self._send(method, *args, **kwargs)
        return ray.get(ref) if ref is not None else default

    def log_params(self, params: dict[str, Any]) -> None:
        self._send("log_params", params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._send("log_metrics", {k: float(v) for k, v in metrics.items()}, step)

    def log_text(self, text: str, name: str) -> None:
        self._send("log_text", text, name)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        """``path`` must be readable on the driver's node (where the writer runs)."""
        self._send("log_artifact", str(path), artifact_path)

    def set_tag(self, key: str, value: str) -> None:
        self._send("set_tag", key, str(value))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._send("set_tags", {k: str(v) for k, v in tags.items()})

    def last_step(self, metric: str) -> int:
        return self._ask("last_step", metric, default=-1)

    def status(self) -> str | None:
        return self._ask("status")

    def metric_history(self, metric: str) -> list[tuple[int, float]]:
        return self._ask("metric_history", metric, default=[])

    def end(self, status: str = "FINISHED") -> None:
        self._ask("end", status)

    def finish(self, status: str, error: str | None = None, force: bool = False) -> None:
        """End as ``status`` unless already ended (see :meth:`MlflowRun.finish`); waits for the writer."""
        self._ask("finish", status, error, force)

    def flush(self, timeout: float | None = None) -> None:
        """Wait (at most ``timeout`` s, if given) until everything sent so far is written."""
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
