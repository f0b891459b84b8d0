"""Sweeps on a local Ray: concurrent trials into one SQLite store, ASHA stopping a trial, the
parent run's artifacts, and the best configuration trained as it is."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from raylm.config_load import load_config
from raylm.errors import UserError
from raylm.train.run import run_training
from raylm.tune.sweep import run_sweep
from raylm.tune.sweep_config import load_sweep
from tests.ray.sweep_helpers import steps, trial_runs, write_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]
LRS = [1e-3, 3e-3, 1e-2, 3e-2]


@pytest.fixture(scope="module")
def concurrent(tmp_path_factory, ray_local):
    """Four trials at once (half a CPU each), every step logged, no early stopping."""
    tmp = tmp_path_factory.mktemp("sweep")
    sweep = load_sweep(write_sweep(tmp, {"train.lr": {"grid": LRS}}, base={"train": {"log_every": 1}}))
    return run_sweep(sweep, log=print)


def test_four_concurrent_trials_lose_no_metric_point(concurrent):
    runs = trial_runs(concurrent.tracking_uri, concurrent.parent_run_id)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        assert steps(concurrent.tracking_uri, run.info.run_id, "train/loss") == [1, 2, 3, 4, 5, 6]
        assert steps(concurrent.tracking_uri, run.info.run_id, "val/loss") == [3, 6]
    starts = [r.info.start_time for r in runs]
    ends = [r.info.end_time for r in runs]
    assert max(starts) < min(ends), "the four trials did not train at the same time"


def test_parent_run_holds_trials_table_plots_and_best_config(concurrent):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(concurrent.tracking_uri)
    parent = client.get_run(concurrent.parent_run_id)
    assert parent.data.tags["raylm.kind"] == "sweep" and parent.info.status == "FINISHED"
    assert '"grid"' in parent.data.params["search.train.lr"] and parent.data.params["base.train.max_steps"] == "6"
    assert parent.data.metrics["best/val_loss"] == pytest.approx(min(r.best for r in concurrent.rows))
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.csv", "best_config.yaml", "plots", "sweep.json"} <= artifacts
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "plots")} == {
        "plots/val_loss_vs_lr.png", "plots/best_curves.png"}
    rows = list(csv.DictReader(open(concurrent.directory / "results.csv")))
    assert sorted(float(r["train.lr"]) for r in rows) == LRS
    assert [float(r["best_val/loss"]) for r in rows] == sorted(float(r["best_val/loss"]) for r in rows)
    trial = trial_runs(concurrent.tracking_uri, concurrent.parent_run_id)[0]
    assert trial.data.tags["raylm.kind"] == "trial" and "trial.values" in trial.data.params
    assert "train.lr" in trial.data.params and "model.d_model" in trial.data.params


def test_best_config_trains_as_it_is(concurrent):
    cfg = load_config(concurrent.best_config)
    assert cfg.train.lr == concurrent.rows[0].values["train.lr"]
    result = run_training(cfg)
    assert result.metrics["step"] == cfg.train.max_steps and (result.model_dir / "model.safetensors").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_asha_stops_the_weak_trial_and_its_run_ends_killed(tmp_path, ray_local, workers):
    """One trial at a time from the same initial weights: the good rate reaches the first rung first and
    lowers the loss; a rate too small to move the weights is stopped there. With two workers (the trial's
    worker pool, raylm.train.pool) every rank leaves the stopped trial together, and the next trial trains on
    the same pool."""
    rates = [1e-2, 1e-7] + ([3e-3] if workers > 1 else [])
    sweep = load_sweep(write_sweep(
        tmp_path, {"train.lr": {"grid": rates}},
        base={"train": {"max_steps": 8, "eval_every": 2, "checkpoint_every": 8, "global_batch_size": 4 * workers},
              "parallel": {"num_workers": workers}},
        scheduler={"name": "asha", "grace_period": 2, "reduction_factor": 2, "time_attr": "step"},
        trials={"max_concurrent_trials": 1}))
    outcome = run_sweep(sweep, log=print)
    by_lr = {row.values["train.lr"]: row for row in outcome.rows}
    assert by_lr[1e-2].status == "FINISHED" and by_lr[1e-2].steps == 8
    assert by_lr[1e-7].status == "KILLED" and by_lr[1e-7].steps == 2
    if workers > 1:  # after a stop, the reused trial process and its pool train the next trial
        assert by_lr[3e-3].status in ("FINISHED", "KILLED") and by_lr[3e-3].steps >= 2
    from mlflow.tracking import MlflowClient

    killed = MlflowClient(outcome.tracking_uri).get_run(by_lr[1e-7].run_id)
    assert killed.info.status == "KILLED" and killed.data.tags["raylm.stopped_at_step"] == "2"
    assert "raylm.error" not in killed.data.tags
    assert "stopped early" in outcome.table


def test_a_trial_that_cannot_fit_the_cluster_is_refused_before_it_starts(tmp_path, ray_local):
    sweep = load_sweep(write_sweep(tmp_path, {"train.lr": {"grid": LRS}},
                                   base={"parallel": {"num_workers": 3, "cpus_per_worker": 1},
                                         "train": {"global_batch_size": 12}}))
    with pytest.raises(UserError, match=r"one trial needs 3 CPUs .* the cluster has 2"):
        run_sweep(sweep, log=print)
    assert not list(Path(tmp_path / "sweeps").glob("*/tune"))


def test_a_killed_sweep_driver_resumes_without_rerunning_or_duplicating(tmp_path, ray_local):
    """The driver (a `raylm sweep` process on the same Ray) is killed while its second trial trains;
    `--resume` keeps the finished trial, continues the interrupted one and runs the last."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    path = write_sweep(tmp_path, {"train.lr": {"grid": [1e-3, 3e-3, 1e-2]}},
                       base={"train": {"max_steps": 12, "log_every": 1},
                             "faults": {"step_delay_s": 0.4}},  # in-process trials take well under a second
                       trials={"max_concurrent_trials": 1})
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen([sys.executable, "-m", "raylm.cli", "sweep", "--config", str(path)], cwd=tmp_path,
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    finished = None
    try:
        deadline = time.time() + 600
        while time.time() < deadline and driver.poll() is None:
            time.sleep(1)
            finished, running = _trial_states(uri)
            state = sorted(tmp_path.glob("sweeps/t-*/tune/sweep/experiment_state-*.json"))
            if (finished and running and len(steps(uri, running[0].info.run_id, "train/loss")) >= 4 and state
                    and state[-1].stat().st_mtime * 1000 > finished[0].info.end_time):
                break
        else:
            pytest.fail(f"the sweep never reached a trial in progress after a finished one:\n"
                        f"{(tmp_path / 'driver.log').read_text()[-3000:]}")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    before = {r.info.run_id: r.info.end_time for r in finished}
    (directory,) = tmp_path.glob("sweeps/t-*")
    outcome = run_sweep(None, resume_dir=str(directory), log=print)
    runs = trial_runs(uri, outcome.parent_run_id)
    assert len(runs) == 3, [r.data.tags.get("raylm.trial_id") for r in runs]
    assert len({r.data.tags["raylm.trial_id"] for r in runs}) == 3
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        assert steps(uri, run.info.run_id, "train/loss") == list(range(1, 13)), run.data.tags["raylm.trial_id"]
        if run.info.run_id in before:  # finished before the kill: not run again
            assert run.info.end_time == before[run.info.run_id]
    assert MlflowClient(uri).get_run(outcome.parent_run_id).info.status == "FINISHED"
    assert len(outcome.rows) == 3 and all(row.status == "FINISHED" for row in outcome.rows)


def _trial_states(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("sweeps")
    if experiment is None:
        return [], []
    runs = client.search_runs([experiment.experiment_id], "tags.`raylm.kind` = 'trial'")
    return ([r for r in runs if r.info.status == "FINISHED"], [r for r in runs if r.info.status == "RUNNING"])
