"""`make demo` end to end, shrunk: jobs/demo.py runs a tiny study (3 budgets x 3 sizes), prints the
grid, a line per finished run, every fit, the recommended prediction and the verification (at most 60
plain lines when piped), and leaves it all in MLflow."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from tests.ray.study_helpers import write_study

pytestmark = [pytest.mark.slow]


def test_demo_runs_a_study(repo_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    path = write_study(tmp_path, verify={"enabled": True, "compare_tokens_per_param": 20.0})
    done = subprocess.run([sys.executable, str(repo_root / "jobs" / "demo.py"), "--config", str(path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for expected in ("raylm demo: a scaling study", "budget", "predictions at the target budget",
                     "backtest:", "recommended (", "verification: N=", "MLflow parent run:",
                     "workflowType=machine_learning", "demo finished in"):
        assert expected in out, out
    # the comparison at 20 tokens per parameter is trained unless it picks the recommended model itself
    compared = "is not trained twice" not in out
    assert ("comparison run" in out) == compared, out
    assert "Failed to query Ray Train Controller actor state" not in out + done.stderr
    # the quiet console, piped: plain lines, one per finished run, Ray's output in the study's log file
    printed = out + done.stderr
    assert len(printed.splitlines()) <= 60, printed
    assert "\x1b" not in printed and "\r" not in printed, "control characters on a piped console"
    assert len(re.findall(r"^  \[\s*\d+/9\] C\S+  val/loss \d\.\d{4} ", out, re.MULTILINE)) == 9, out
    for noise in ("Trial status", "Reporting training result", "Setting accelerator to CPU", "[raylm] step"):
        assert noise not in printed, noise
    (log_file,) = re.findall(r"worker output: (\S+ray\.log)", out)
    assert "[raylm] step" in open(log_file, encoding="utf-8").read()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("studies")
    runs = client.search_runs([experiment.experiment_id])
    kinds = sorted(r.data.tags["raylm.kind"] for r in runs)
    assert kinds == ["study"] + ["study-point"] * 9 + ["study-verify"] * (2 if compared else 1)
