"""A training run through a tracking outage and a dead tracking writer: a real `mlflow server`
stopped for 12 s and started again on the same store, and the writer actor killed mid-run.
The run ends FINISHED with every logged step's metrics present once."""

from __future__ import annotations

import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from raylm.tracking.ui_server import ServerProcess, free_port, start_ui
from raylm.tracking.writer import NAMESPACE
from tests.ray.train_helpers import tiny_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]
OUTAGE_S = 12.0  # longer than the delivery backoff (1 s doubling to 10 s) reaches in one wait
STEPS = 40


def _writer_actor():
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == NAMESPACE and a["name"].startswith("tracking-writer-")]
    return ray.get_actor(names[-1], namespace=NAMESPACE)


def _wait_for_points(uri: str, experiment: str, count: int, timeout: float = 300.0) -> None:
    client = MlflowClient(uri)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            exp = client.get_experiment_by_name(experiment)
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if runs and len(client.get_metric_history(runs[0].info.run_id, "train/loss")) >= count:
                return
        except Exception:  # noqa: BLE001 - the server may still be starting
            pass
        time.sleep(0.5)
    raise AssertionError(f"no {count} train/loss points within {timeout} s")


def test_train_survives_a_tracking_outage_and_a_killed_writer(ray_local, tmp_path, capfd):
    import ray
    from raylm.train.run import run_training

    store = f"sqlite:///{tmp_path / 'server.db'}"
    port = free_port()
    process = ServerProcess(log_path=tmp_path / "server.log", timeout=120)
    server = {"ui": start_ui(store, port=port, process=process)}
    uri = f"http://127.0.0.1:{port}"
    cfg = tiny_config(tmp_path, parallel={"num_workers": 1}, faults={"step_delay_s": 0.5},
                      train={"max_steps": STEPS, "eval_every": 8, "checkpoint_every": 16})
    cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={
        "tracking_uri": uri, "experiment": "outage", "outbox_dir": str(tmp_path / "outbox")})})
    events: list[str] = []
    started = time.monotonic()

    def event(name: str) -> None:
        events.append(name)
        print(f"outage test: {name} at {time.monotonic() - started:.1f} s", flush=True)

    def disrupt():
        _wait_for_points(uri, "outage", 2)
        ray.kill(_writer_actor(), no_restart=False)  # the writer dies; Ray restarts it
        event("writer killed")
        _wait_for_points(uri, "outage", 4)
        server["ui"].stop()
        event("server stopped")
        time.sleep(OUTAGE_S)
        server["ui"] = start_ui(store, port=port, process=process)
        event("server started")

    thread = threading.Thread(target=disrupt, daemon=True)
    thread.start()
    try:
        result = run_training(cfg)
        print(f"outage test: training returned at {time.monotonic() - started:.1f} s", flush=True)
        thread.join(timeout=OUTAGE_S + 180)
        assert events == ["writer killed", "server stopped", "server started"]
        client = MlflowClient(uri)
        steps = sorted(m.step for m in client.get_metric_history(result.mlflow_run_id, "train/loss"))
        assert steps == list(range(1, STEPS + 1))  # 0 missing, 0 duplicated
        val = sorted(m.step for m in client.get_metric_history(result.mlflow_run_id, "val/loss"))
        assert val == list(range(8, STEPS + 1, 8))
        assert client.get_run(result.mlflow_run_id).info.status == "FINISHED"
        assert not list((tmp_path / "outbox").glob("*.jsonl"))  # everything delivered
        assert "went away" in capfd.readouterr().err
    finally:
        server["ui"].stop()
