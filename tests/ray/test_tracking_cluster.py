"""Tracking on a two-node cluster: the training workers run on a node where importing mlflow
fails, and the run's metrics are complete (the driver's tracking writer is the only writer)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_workers_on_another_node_never_open_the_store_and_lose_no_metric(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    script = REPO_ROOT / "tests" / "ray" / "scripts" / "two_node_training.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert "imported mlflow" in result["poisoned"]  # the worker node really cannot import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(result["tracking_uri"])
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(result["run_id"], "train/loss"))
    assert steps == [1, 2, 3, 4]
    assert sorted(m.step for m in client.get_metric_history(result["run_id"], "val/loss")) == [2, 4]
