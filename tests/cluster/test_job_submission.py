"""The three job entrypoints submitted with the real `ray job submit --working-dir .` to a real Ray head
with token authentication on; a client without the token is refused; the upload leaves out what
does not belong in it; `ray job stop` on a running study ends its MLflow runs KILLED."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.cluster.conftest import VENV_BIN
from tests.conftest import REPO_ROOT
from tests.ray.study_helpers import write_study
from tests.ray.sweep_helpers import write_sweep
from tests.ray.train_helpers import TINY

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# What a working tree that has been used holds and the upload must leave out: the venv, runs,
# token shards and tracking files (see .rayignore).
JUNK = [".venv/lib/python3.11/site-packages/big.bin", "runs/gpt-tiny/step_00000004/rank0.json",
        "data/tokens/abc123/train/part-00000.parquet", "mlflow.db", "mlruns/0/meta.yaml",
        "mlartifacts/1/model.safetensors", "bench/results.json.tmp/x.parquet"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A checkout of the project as a user would submit it: every file git knows, plus the JUNK."""
    root = tmp_path_factory.mktemp("checkout") / "raylm"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        source = REPO_ROOT / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    for name in JUNK:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * 1024)
    return root


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    """Where the jobs write (absolute: the job's driver runs in its own copy of the working dir)."""
    return tmp_path_factory.mktemp("job-outputs")


def submit(head, workdir: Path, *entrypoint: str, wait: bool = True) -> tuple[str, subprocess.CompletedProcess]:
    args = ["job", "submit", "--address", head.dashboard, "--working-dir", "."]
    if not wait:
        args.append("--no-wait")
    done = head.ray(*args, "--", *entrypoint, cwd=workdir)
    match = re.search(r"raysubmit_\w+", done.stdout + done.stderr)
    assert match, done.stdout[-3000:] + done.stderr[-3000:]
    return match.group(0), done


def job_status(head, job_id: str) -> str:
    """The job's status as `ray job status` words it (see ray.dashboard.modules.job.cli._log_job_status)."""
    done = head.ray("job", "status", "--address", head.dashboard, job_id)
    text = done.stdout + done.stderr
    for pattern, status in ((r"' succeeded", "SUCCEEDED"), (r"' was stopped", "STOPPED"), (r"' failed", "FAILED")):
        if re.search(pattern, text):
            return status
    match = re.search(r"Status for job '\S+': (\w+)", text)
    return match.group(1) if match else f"unknown: {text[-800:]}"


def job_logs(head, job_id: str) -> str:
    return head.ray("job", "logs", "--address", head.dashboard, job_id).stdout


def assert_succeeded(head, job_id: str, done: subprocess.CompletedProcess) -> str:
    logs = job_logs(head, job_id)
    assert job_status(head, job_id) == "SUCCEEDED", logs[-6000:] + done.stderr[-2000:]
    return logs


def tiny_run(outputs: Path) -> dict:
    run = {key: dict(value) for key, value in TINY.items()}
    run.update(name="job-tiny", output_dir=str(outputs / "runs"))
    run["parallel"] = {"num_workers": 1, "cpus_per_worker": 1, "zero_stage": 0}
    run["train"].update({"global_batch_size": 2, "eval_every": 2, "checkpoint_every": 4})
    run["data"]["shards_dir"] = str(outputs / "tokens")
    run["tracking"] = {"tracking_uri": f"sqlite:///{outputs / 'mlflow.db'}", "experiment": "jobs"}
    return run


def in_workdir(workdir: Path, source: Path, name: str) -> str:
    """Put a config file into the submitted tree; the entrypoint names it relative to the tree."""
    target = workdir / "jobs" / "configs" / name
    shutil.copy2(source, target)
    return f"jobs/configs/{name}"


def runs(outputs: Path, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_a_client_without_the_token_or_with_a_wrong_one_is_refused(ray_head, workdir, tmp_path):
    done = ray_head.ray("job", "submit", "--address", ray_head.dashboard, "--working-dir", ".", "--",
                        "python", "-c", "print('should not run')", token=False, cwd=workdir, timeout=120)
    assert done.returncode != 0
    assert "authentication" in (done.stdout + done.stderr).lower()
    wrong = tmp_path / "wrong_token"
    wrong.write_text("0" * 64)
    env = ray_head.client_env(RAY_AUTH_TOKEN_PATH=str(wrong))
    done = subprocess.run([str(VENV_BIN / "ray"), "job", "list", "--address", ray_head.dashboard],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "should not run" not in ray_head.ray("job", "list", "--address", ray_head.dashboard).stdout


def test_the_upload_leaves_out_the_venv_runs_shards_and_tracking_files(ray_head, workdir):
    listing = ("import json, os; print('UPLOADED=' + json.dumps([os.path.relpath(os.path.join(d, f)) "
               "for d, _, fs in os.walk('.') for f in fs]))")
    job_id, done = submit(ray_head, workdir, "python", "-c", listing)
    logs = assert_succeeded(ray_head, job_id, done)
    uploaded = json.loads(re.search(r"^UPLOADED=(.*)$", logs, re.MULTILINE).group(1))
    assert "jobs/pretrain.py" in uploaded and "platform/raylm/data/prepare.py" in uploaded
    assert "jobs/data/synthetic_isoflop.csv" in uploaded
    for name in JUNK:
        assert name not in uploaded
    assert not any(name.startswith((".venv/", ".git/", "runs/", "data/", "mlruns/")) for name in uploaded)


def test_pretrain_job_trains_and_logs(ray_head, workdir, outputs):
    config = outputs / "pretrain.yaml"
    config.write_text(yaml.safe_dump(tiny_run(outputs)))
    job_id, done = submit(ray_head, workdir, "python", "jobs/pretrain.py", "--config",
                          in_workdir(workdir, config, "job_pretrain.yaml"))
    logs = assert_succeeded(ray_head, job_id, done)
    assert "step 4/4: loss" in logs  # the workers' progress reaches the job's log
    (run,) = [r for r in runs(outputs, "jobs") if r.data.tags.get("raylm.kind") == "train"]
    assert run.info.status == "FINISHED" and "train/loss" in run.data.metrics


def test_sweep_job_runs_its_trials(ray_head, workdir, outputs):
    (outputs / "sweep").mkdir(exist_ok=True)
    path = write_sweep(outputs / "sweep", {"train.lr": {"grid": [1e-3, 3e-3]}})
    sweep = yaml.safe_load(path.read_text())
    sweep["base"]["data"]["shards_dir"] = str(outputs / "tokens")
    sweep["base"]["tracking"] = {"tracking_uri": f"sqlite:///{outputs / 'mlflow.db'}", "experiment": "job-sweeps"}
    path.write_text(yaml.safe_dump(sweep))
    job_id, done = submit(ray_head, workdir, "python", "jobs/sweep.py", "--config",
                          in_workdir(workdir, path, "job_sweep.yaml"))
    logs = assert_succeeded(ray_head, job_id, done)
    assert "best" in logs.lower()
    found = runs(outputs, "job-sweeps")
    (parent,) = [r for r in found if r.data.tags.get("raylm.kind") == "sweep"]
    trials = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(trials) == 2
    assert all(t.info.status == "FINISHED" for t in trials)


def study_file(outputs: Path, name: str, **settings) -> Path:
    (outputs / name).mkdir(exist_ok=True)
    path = write_study(outputs / name, name=name, **settings)
    study = yaml.safe_load(path.read_text())
    study["base"]["data"]["shards_dir"] = str(outputs / "tokens")
    study["base"]["tracking"] = {"tracking_uri": f"sqlite:///{outputs / 'mlflow.db'}", "experiment": name}
    path.write_text(yaml.safe_dump(study))
    return path


def test_scaling_study_job_trains_the_grid_and_fits(ray_head, workdir, outputs):
    path = study_file(outputs, "job-study", budgets=[2.0e8, 4.0e8], targets=[8.0e8], verify={"enabled": False})
    job_id, done = submit(ray_head, workdir, "python", "jobs/scaling_study.py", "--config",
                          in_workdir(workdir, path, "job_study.yaml"))
    logs = assert_succeeded(ray_head, job_id, done)
    assert "study: 6 runs" in logs
    found = runs(outputs, "job-study")
    (parent,) = [r for r in found if r.data.tags.get("raylm.kind") == "study"]
    points = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(points) == 6
    assert all(p.info.status == "FINISHED" for p in points)
    assert "predicted/loss" in parent.data.metrics


def test_stopping_a_study_job_ends_its_runs_killed(ray_head, workdir, outputs):
    path = study_file(outputs, "job-stopped", verify={"enabled": False})
    study = yaml.safe_load(path.read_text())
    study["base"]["faults"] = {"step_delay_s": 0.5}  # points of 10+ s: the stop lands inside the grid
    path.write_text(yaml.safe_dump(study))
    job_id, _ = submit(ray_head, workdir, "python", "jobs/scaling_study.py", "--config",
                       in_workdir(workdir, path, "job_stopped.yaml"), wait=False)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until a grid point is training
        found = runs(outputs, "job-stopped")
        if any(r.info.status == "RUNNING" and "train/loss" in r.data.metrics
               and r.data.tags.get("mlflow.parentRunId") for r in found):
            break
        assert job_status(ray_head, job_id) in ("PENDING", "RUNNING"), job_logs(ray_head, job_id)[-4000:]
        time.sleep(2)
    else:
        pytest.fail("no grid point started training: " + job_logs(ray_head, job_id)[-4000:])
    stopped = ray_head.ray("job", "stop", "--address", ray_head.dashboard, job_id)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    deadline = time.monotonic() + 120
    while job_status(ray_head, job_id) != "STOPPED" and time.monotonic() < deadline:
        time.sleep(1)
    assert job_status(ray_head, job_id) == "STOPPED"
    found = runs(outputs, "job-stopped")
    (parent,) = [r for r in found if r.data.tags.get("raylm.kind") == "study"]
    points = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    statuses = {r.info.run_name: (r.info.status, r.data.tags.get("raylm.error")) for r in found}
    context = f"{statuses}\n{job_logs(ray_head, job_id)[-5000:]}"
    assert points and not [name for name, (status, _) in statuses.items() if status == "RUNNING"], context
    assert parent.info.status == "KILLED", context
    assert any(p.info.status == "KILLED" for p in points), context
    assert sum(p.info.status == "FINISHED" for p in points) < 9  # the study did not carry on
