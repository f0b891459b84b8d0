"""MLflow tracking against a real local store, and a dead server that must not stop training."""

from __future__ import annotations

import socket
import warnings

from raylm.config import TrackingConfig, resolved_tracking_uri
from raylm.tracking.mlflow_run import MlflowRun


def test_run_logs_params_metrics_and_artifacts(tmp_path):
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="unit")
    run = MlflowRun.start(tracking, "unit-run")
    run.log_params({"train.lr": 0.001, "model.arch": "gpt"})
    run.log_metrics({"train/loss": 2.5}, step=1)
    run.log_metrics({"train/loss": 2.0}, step=2)
    run.log_text("name: x\n", "config.yaml")
    assert run.last_step("train/loss") == 2
    run.end()
    data = run.client.get_run(run.run_id).data
    assert data.params["train.lr"] == "0.001" and data.metrics["train/loss"] == 2.0
    artifacts = [a.path for a in run.client.list_artifacts(run.run_id)]
    assert "config.yaml" in artifacts
    worker_side = MlflowRun.from_handle(run.handle())
    assert worker_side.last_step("train/loss") == 2
    child = MlflowRun.start(tracking, "child", parent_run_id=run.run_id)
    assert child.client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == run.run_id


def test_unreachable_server_warns_and_carries_on():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tracking = TrackingConfig(tracking_uri=f"http://127.0.0.1:{port}", experiment="unit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = MlflowRun.start(tracking, "dead")
        run.log_metrics({"train/loss": 1.0}, step=1)
        run.end()
    assert not run.enabled
    assert any("training goes on without tracking" in str(w.message) for w in caught)


def test_tracking_uri_is_resolved_once_when_the_config_is_built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert TrackingConfig().tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert TrackingConfig().tracking_uri == "http://127.0.0.1:5000"
    # a relative SQLite path is made absolute against the driver's directory (trials run elsewhere)
    built = TrackingConfig(tracking_uri="sqlite:///x.db")
    assert built.tracking_uri == f"sqlite:///{tmp_path}/x.db"
    assert TrackingConfig(tracking_uri="sqlite:////abs/x.db").tracking_uri == "sqlite:////abs/x.db"
    # the resolved URI travels: rebuilt in another directory (a worker), it names the same file
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert TrackingConfig(**built.model_dump()).tracking_uri == built.tracking_uri
    assert resolved_tracking_uri("sqlite:///y.db", tmp_path) == f"sqlite:///{tmp_path}/y.db"
