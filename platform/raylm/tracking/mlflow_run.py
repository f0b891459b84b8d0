"""MLflow logging that never stops training.

The tracking URI is ``tracking.tracking_uri``, resolved once when the config was built
(:func:`raylm.config.resolved_tracking_uri`: else ``$MLFLOW_TRACKING_URI``, else a SQLite file
``mlflow.db`` in the driver's working directory; its artifacts beside it in ``mlartifacts/``).
An unreachable server is reported once as a warning; training goes on without tracking.
Only the tracking writer (:mod:`raylm.tracking.writer`, an actor on the driver's node) uses
this class; everything else logs through the writer. A run that restarts after a failure keeps
one run and one continuous curve.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from raylm.config import TrackingConfig

# Fail fast instead of retrying for minutes when a server is down.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")

PARAM_VALUE_LIMIT = 6000


def artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside the database file."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


class MlflowRun:
    """One MLflow run; every call warns instead of raising, and logging stops after a failure."""

    def __init__(self, uri: str, run_id: str | None, enabled: bool = True):
        self.uri, self.run_id, self.enabled = uri, run_id, enabled and run_id is not None
        self.experiment_id: str | None = None
        self._client = None

    @classmethod
    def start(cls, tracking: TrackingConfig, run_name: str, parent_run_id: str | None = None,
              tags: dict[str, str] | None = None, reuse_tag: tuple[str, str] | None = None) -> MlflowRun:
        """Create a run (nested under ``parent_run_id`` if given); a disabled run when tracking is off or down.

        With ``reuse_tag=(key, value)``, a run of the experiment already carrying that tag is reopened
        instead (set RUNNING again unless it finished): a resumed sweep's trial keeps its one run.
        """
        uri = tracking.tracking_uri
        if not tracking.enabled:
            return cls(uri, None, enabled=False)
        run = cls(uri, None)
        run.enabled = True
        try:
            client = run.client
            experiment = client.get_experiment_by_name(tracking.experiment)
            experiment_id = run.experiment_id = experiment.experiment_id if experiment else client.create_experiment(
                tracking.experiment, artifact_location=artifact_root(uri) and
                f"{artifact_root(uri)}/{tracking.experiment}")
            all_tags = {**(tags or {}), **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})}
            if reuse_tag is not None:
                all_tags[reuse_tag[0]] = reuse_tag[1]
                existing = client.search_runs([experiment_id], f"tags.`{reuse_tag[0]}` = '{reuse_tag[1]}'",
                                              max_results=1)
                if existing:
                    run.run_id = existing[0].info.run_id
                    if existing[0].info.status != "FINISHED":
                        client.update_run(run.run_id, status="RUNNING")
                    return run
            run.run_id = client.create_run(experiment_id, run_name=tracking.run_name or run_name,
                                           tags=all_tags).info.run_id
        except Exception as exc:  # noqa: BLE001 - any tracking failure must not stop training
            run._fail("start a run", exc)
        return run

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _fail(self, what: str, exc: Exception) -> None:
        warnings.warn(f"MLflow at {self.uri} failed to {what} ({type(exc).__name__}: {str(exc)[:200]}); "
                      "training goes on without tracking", stacklevel=3)
        self.enabled = False

    def _call(self, what: str, fn, *args, **kwargs) -> Any:
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            self._fail(what, exc)
            return None

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:PARAM_VALUE_LIMIT]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._call("log params", self.client.log_batch, self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self._call("log metrics", self.client.log_batch, self.run_id, metrics=items[i:i + 500])

    def last_step(self, metric: str) -> int:
        """The highest step already logged for ``metric`` (-1 if none): a restarted worker skips up to it."""
        history = self._call("read metric history", self.client.get_metric_history, self.run_id, metric)
        return max((m.step for m in history), default=-1) if history else -1

    def metric_history(self, metric: str) -> list[tuple[int, float]]:
        """``(step, value)`` of every logged point of ``metric``, by step."""
        history = self._call("read metric history", self.client.get_metric_history, self.run_id, metric) or []
        return sorted((m.step, m.value) for m in history)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._call("log an artifact", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self._call("log a text artifact", self.client.log_text, self.run_id, text, name)

    def set_tag(self, key: str, value: str) -> None:
        self._call("set a tag", self.client.set_tag, self.run_id, key, value)

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._call("set tags", self.client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def status(self) -> str | None:
        run = self._call("read the run", self.client.get_run, self.run_id)
        return run.info.status if run else None

    def end(self, status: str = "FINISHED") -> None:
        self._call("end the run", self.client.set_terminated, self.run_id, status)

    def finish(self, status: str, error: str | None = None, force: bool = False) -> bool:
        """End the run as ``status`` unless it has ended already (``force``: whatever it ended as);
        True when this call ended it.

        A trial stopped by the scheduler can see its own workers die and try to end as FAILED while
        the driver ends it as KILLED: the driver forces, the trial does not, so KILLED wins in any order.
        """
        if not force and self.status() not in (None, "RUNNING"):
            return False
        if error is not None:
            self.set_tag("raylm.error", error[:4000])
        elif force:
            run = self._call("read the run", self.client.get_run, self.run_id)
            if run is not None and "raylm.error" in run.data.tags:  # the trial's view of its own stop
                self._call("clear the error", self.client.delete_tag, self.run_id, "raylm.error")
        self.end(status)
        return True

    def handle(self) -> dict[str, Any]:
        """What a worker needs to log into this run (a plain dict for ``train_loop_config``)."""
        return {"uri": self.uri, "run_id": self.run_id, "enabled": self.enabled, "experiment_id": self.experiment_id}

    @classmethod
    def from_handle(cls, handle: dict[str, Any]) -> MlflowRun:
        run = cls(handle["uri"], handle["run_id"], handle["enabled"])
        run.experiment_id = handle.get("experiment_id")
        return run

    @classmethod
    def find(cls, uri: str, experiment: str, tag: str, value: str) -> MlflowRun | None:
        """The run of ``experiment`` tagged ``tag = value``, if there is one."""
        run = cls(uri, None)
        run.enabled = True
        experiment_obj = run._call("find the experiment", run.client.get_experiment_by_name, experiment)
        if experiment_obj is None:
            return None
        found = run._call("search runs", run.client.search_runs, [experiment_obj.experiment_id],
                          f"tags.`{tag}` = '{value}'", max_results=1)
        if not found:
            return None
        run.run_id, run.experiment_id = found[0].info.run_id, experiment_obj.experiment_id
        return run
