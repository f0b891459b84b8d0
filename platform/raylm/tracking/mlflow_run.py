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

import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

from raylm.config import TrackingConfig

# Fail fast instead of retrying for minutes when a server is down.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")

PARAM_VALUE_LIMIT = 6000
DEFAULT_OUTBOX = Path("runs/tracking-outbox").resolve()


def artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside the database file."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


def check_store(tracking: TrackingConfig) -> None:
    """Refuse to start work whose tracking store does not answer (a local SQLite file is made on demand).

    Records that a store drops in the middle of a run wait on disk and are delivered later; a store
    that is not there at the start is more likely a wrong address or a server not started yet.
    """
    if not tracking.enabled or tracking.tracking_uri.startswith("sqlite:///"):
        return
    from mlflow.tracking import MlflowClient

    from raylm.errors import UserError

    try:
        MlflowClient(tracking_uri=tracking.tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure means the same to the user
        raise UserError(f"the tracking store {tracking.tracking_uri} does not answer ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). Start it (e.g. raylm ui), fix "
                        "tracking.tracking_uri, or run without tracking: --tracking.enabled false") from None


class MlflowRun:
    """One MLflow run; every call warns instead of raising, and logging stops after a failure."""

    def __init__(self, uri: str, run_id: str | None, enabled: bool = True, outbox_dir: str | None = None):
        self.uri, self.run_id, self.enabled = uri, run_id, enabled and run_id is not None
        self.experiment_id: str | None = None
        self.outbox_dir = outbox_dir or str(DEFAULT_OUTBOX)
        self._client = None
        self._deliveries = None

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
        run = cls(uri, None, outbox_dir=tracking.outbox_dir)
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
                    if existing[0].info.status != "FINISHED":  # continued: no longer killed or failed
                        client.update_run(run.run_id, status="RUNNING")
                        if "raylm.error" in existing[0].data.tags:
                            client.delete_tag(run.run_id, "raylm.error")
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
        """A read: its answer, or None (with a warning once) when the store does not answer."""
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            if self.run_id is None:
                warnings.warn(f"MLflow at {self.uri} failed to {what} ({type(exc).__name__}: {str(exc)[:200]})",
                              stacklevel=3)
            else:
                self._delivery.report_down(what, exc)
            return None

    # -- writes: delivered now, or kept in the outbox and delivered in order later (raylm.tracking.delivery)

    def log_params(self, params: dict[str, Any]) -> None:
        self._write("log_params", {k: str(v)[:PARAM_VALUE_LIMIT] for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int, timestamp_ms: int | None = None) -> None:
        """``timestamp_ms`` is fixed by the caller (now if not given): a record delivered twice writes an
        identical row, which the store keeps once."""
        timestamp_ms = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        self._write("log_metrics", {k: float(v) for k, v in metrics.items()}, int(step), timestamp_ms)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._write("log_artifact", str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self._write("log_text", text, name)

    def log_input(self, name: str, digest: str, source: str, context: str = "training") -> None:
        """A dataset input of the run (MLflow's Datasets column and the run's Inputs): the token shards, named,
        with the digest of their manifest and where they are."""
        self._write("log_input", name, digest, source, context)

    def log_model(self, model_dir: str, name: str, step: int) -> None:
        """``model_dir`` (a local directory) as the run's logged model ``name`` at ``step`` (MLflow 3: the run's
        Logged models, and the model's own page with the files). MLflow refuses ``/ : . % "`` in a model's
        name: they become ``_`` (``verify-C2.4e+09-N5K`` is logged as ``verify-C2_4e+09-N5K``)."""
        self._write("log_model", str(model_dir), re.sub(r'[/:.%"]', "_", name), int(step))

    def set_tag(self, key: str, value: str) -> None:
        self._write("set_tags", {key: str(value)})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._write("set_tags", {k: str(v) for k, v in tags.items()})

    def end(self, status: str = "FINISHED") -> None:
        self._write("end", status)

    def finish(self, status: str, error: str | None = None, force: bool = False) -> bool:
        """End the run as ``status`` unless it has ended already (``force``: whatever it ended as);
        True when this call ended it (or will, once the store answers).

        A trial stopped by the scheduler can see its own workers die and try to end as FAILED while
        the driver ends it as KILLED: the driver forces, the trial does not, so KILLED wins in any order.
        """
        if not self.enabled:
            return False
        if not self._delivery.pending and not force and self.status() not in (None, "RUNNING"):
            return False
        self._write("finish", status, error, force)
        return True

    def _write(self, op: str, *args) -> None:
        if self.enabled:
            self._delivery.write(op, list(args))

    @property
    def _delivery(self):
        if self._deliveries is None:
            from raylm.tracking.delivery import Delivery

            self._deliveries = Delivery(self, self.outbox_dir)
        return self._deliveries

    def drain(self, wait_s: float = 0.0) -> int:
        """Deliver what waits (retrying for up to ``wait_s`` seconds); the number of records still waiting."""
        return self._delivery.drain(wait_s) if self.enabled else 0

    @property
    def waiting(self) -> int:
        return len(self._delivery.pending) if self.enabled and self._deliveries is not None else 0

    def end_children(self, status: str, new_status: str, reason: str) -> int:
        """End this run's nested runs that are in ``status`` as ``new_status`` with ``reason`` (runs whose
        driver died: nothing else will ever end them); how many."""
        found = self._call("search the nested runs", self.client.search_runs, [self.experiment_id],
                           f"tags.mlflow.parentRunId = '{self.run_id}' and attributes.status = '{status}'")
        for child in found or []:
            orphan = MlflowRun(self.uri, child.info.run_id, outbox_dir=self.outbox_dir)
            orphan.experiment_id = self.experiment_id
            orphan.finish(new_status, error=reason, force=True)
        return len(found or [])

    # -- reads

    def last_step(self, metric: str) -> int:
        """The highest step logged for ``metric`` (-1 if none), counting records still waiting to be
        delivered: a restarted worker skips up to it."""
        history = self._call("read metric history", self.client.get_metric_history, self.run_id, metric)
        stored = max((m.step for m in history), default=-1) if history else -1
        return max(stored, self._delivery.last_waiting_step(metric) if self.enabled else -1)

    def metric_history(self, metric: str) -> list[tuple[int, float]]:
        """``(step, value)`` of every logged point of ``metric``, by step."""
        history = self._call("read metric history", self.client.get_metric_history, self.run_id, metric) or []
        return sorted((m.step, m.value) for m in history)

    def status(self) -> str | None:
        run = self._call("read the run", self.client.get_run, self.run_id)
        return run.info.status if run else None

    # -- what the delivery calls: each raises when the store does not take the record

    def deliver(self, op: str, args: list) -> None:
        from mlflow.entities import Metric, Param, RunTag

        client = self.client
        if op == "log_params":
            items = [Param(k, v) for k, v in args[0].items()]
            for i in range(0, len(items), 100):
                client.log_batch(self.run_id, params=items[i:i + 100])
        elif op == "log_metrics":
            metrics, step, timestamp = args
            items = [Metric(k, v, timestamp, step) for k, v in metrics.items()]
            for i in range(0, len(items), 500):
                client.log_batch(self.run_id, metrics=items[i:i + 500])
        elif op == "set_tags":
            client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in args[0].items()])
        elif op == "log_input":
            self._deliver_input(*args)
        elif op == "log_model":
            self._deliver_model(*args)
        elif op == "log_text":
            client.log_text(self.run_id, *args)
        elif op == "log_artifact":
            client.log_artifact(self.run_id, *args)
        elif op == "end":
            client.set_terminated(self.run_id, args[0])
        elif op == "finish":
            self._deliver_finish(*args)
        else:
            raise ValueError(f"unknown tracking record {op!r}")

    def _deliver_input(self, name: str, digest: str, source: str, context: str) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        run = self.client.get_run(self.run_id)
        logged = run.inputs.dataset_inputs if run.inputs else []
        if any(d.dataset.name == name and d.dataset.digest == digest for d in logged):
            return  # delivered before (a retried record): the run holds each input once
        source_type = source.split("://", 1)[0] if "://" in source else "local"
        dataset = Dataset(name=name, digest=digest, source_type=source_type,
                          source=json.dumps({"uri": source}))
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context",
                                                                                       context)])])

    def _deliver_model(self, model_dir: str, name: str, step: int) -> None:
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        client = self.client
        run = client.get_run(self.run_id)
        found = client.search_logged_models([run.info.experiment_id],
                                            filter_string=f"source_run_id = '{self.run_id}' AND name = '{name}'")
        ready = [m for m in found if m.status == LoggedModelStatus.READY]
        model = ready[0] if ready else (found[0] if found else client.create_logged_model(
            run.info.experiment_id, name=name, source_run_id=self.run_id, model_type="raylm",
            tags={"raylm.model_dir": model_dir}))
        if not ready:  # a resent record finishes what a lost answer left pending, once
            client.log_model_artifacts(model.model_id, model_dir)
            client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        outputs = run.outputs.model_outputs if run.outputs else []
        if not any(o.model_id == model.model_id for o in outputs):
            client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step)])

    def _deliver_finish(self, status: str, error: str | None, force: bool) -> None:
        client = self.client
        run = client.get_run(self.run_id)
        if not force and run.info.status != "RUNNING":
            return
        if error is not None:
            client.set_tag(self.run_id, "raylm.error", error[:4000])
        elif force and "raylm.error" in run.data.tags:  # the trial's view of its own stop
            client.delete_tag(self.run_id, "raylm.error")
        client.set_terminated(self.run_id, status)

    def handle(self) -> dict[str, Any]:
        """What a worker needs to log into this run (a plain dict for ``train_loop_config``)."""
        return {"uri": self.uri, "run_id": self.run_id, "enabled": self.enabled, "experiment_id": self.experiment_id,
                "outbox_dir": self.outbox_dir}

    @classmethod
    def from_handle(cls, handle: dict[str, Any]) -> MlflowRun:
        run = cls(handle["uri"], handle["run_id"], handle["enabled"], handle.get("outbox_dir"))
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
