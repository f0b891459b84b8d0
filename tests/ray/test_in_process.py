"""A trial trained in its own Tune trial process is the same run as one trained on a Ray Train worker group:
the same per-step losses and the same MLflow record. One worker trains in the trial's process (Ray Train
local mode); two train there and on the worker pool the process keeps between trials (raylm.train.pool)."""

from __future__ import annotations

import math

import pytest

from tests.ray.sweep_helpers import trial_runs, write_sweep

pytestmark = pytest.mark.usefixtures("ray_local")

TIMINGS = ("perf/", "system/", "startup/", "teardown/")  # measured times differ from run to run
NAMES = ("name", "tracking.outbox_dir", "data.directory", "trial.values")  # where each run lives


def _sweep(tmp_path, in_process: bool, seeds: list[int], workers: int = 1, **base):
    from raylm.tune.sweep import run_sweep
    from raylm.tune.sweep_config import load_sweep

    tmp_path.mkdir(parents=True)
    path = write_sweep(tmp_path, {"train.seed": {"grid": seeds}},
                       base={"parallel": {"num_workers": workers}, "train": {"global_batch_size": 4 * workers},
                             **base},
                       trials={"in_process": in_process, "max_concurrent_trials": 1})
    lines: list[str] = []
    outcome = run_sweep(load_sweep(path), log=lines.append)
    return outcome, "\n".join(lines)


def _record(tracking_uri: str, run, root) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    histories = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
                 for key in run.data.metrics if not key.startswith(TIMINGS)}
    params = {k: v.replace(str(root), "<root>") for k, v in run.data.params.items() if k not in NAMES}
    tags = {k: v for k, v in run.data.tags.items() if k in ("raylm.kind", "mlflow.parentRunId") or k == "raylm.error"}
    return {"status": run.info.status, "metrics": histories, "params": params,
            "tags": {k: v for k, v in tags.items() if k != "mlflow.parentRunId"},
            "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id))}


@pytest.mark.parametrize("workers", [1, 2])
def test_in_process_trial_matches_a_worker_group_trial(tmp_path, workers):
    in_process, said = _sweep(tmp_path / "in_process", True, [0, 1], workers)
    group, group_said = _sweep(tmp_path / "group", False, [0], workers)
    assert "each in its own reused process" in said
    assert ("worker process(es) it keeps between trials" in said) == (workers > 1)
    assert f"worker group of {workers}" in group_said
    by_seed = {}
    for outcome, root in ((in_process, tmp_path / "in_process"), (group, tmp_path / "group")):
        for run in trial_runs(outcome.tracking_uri, outcome.parent_run_id):
            by_seed.setdefault(run.data.params["train.seed"], []).append(_record(outcome.tracking_uri, run, root))
    first, second = by_seed["0"]
    assert first["status"] == second["status"] == "FINISHED"
    assert first["metrics"].keys() == second["metrics"].keys()
    for key, history in first["metrics"].items():
        other = second["metrics"][key]
        assert history.keys() == other.keys(), key
        if key.startswith(("train/", "val/")) and "lr" not in key:
            for step, value in history.items():
                assert math.isclose(value, other[step], rel_tol=1e-6), (key, step, value, other[step])
    assert len(first["metrics"]["train/loss"]) == 6  # every step of the run
    assert first["params"] == second["params"]
    assert first["tags"] == second["tags"]
    assert first["artifacts"] == second["artifacts"]
    # the second trial ran in the reused process (and its pool): a process group and peak measurement already there
    assert by_seed["1"][0]["status"] == "FINISHED"
    for root in (tmp_path / "in_process", tmp_path / "group"):  # both keep their checkpoints in storage alike
        trials = list(root.glob("sweeps/*/trials/trial-*"))
        assert trials
        for trial in trials:
            kept = sorted(p.parent.name for p in trial.glob("step_*/rank0.json"))
            assert kept == ["step_00000003", "step_00000006"], (trial, kept)
    if workers > 1:
        _pool_rank_dies(tmp_path, first)


def _pool_rank_dies(tmp_path, uninterrupted: dict) -> None:
    """Rank 1 (a pool actor) exits before step 4: rank 0's collective fails instead of waiting, the trial fails,
    and Tune re-runs it in a fresh process with a fresh pool from the step-3 checkpoint. Every step is logged
    once, with the losses of the run that was never interrupted (``uninterrupted``: its record)."""
    killed, _ = _sweep(tmp_path / "killed", True, [0], 2, train={"global_batch_size": 8, "max_failures": 1},
                       faults={"kill_rank": 1, "kill_at_step": 4})
    (run,) = trial_runs(killed.tracking_uri, killed.parent_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["raylm.resumed_from_step"] == "3"
    record = _record(killed.tracking_uri, run, tmp_path / "killed")
    for key in ("train/loss", "val/loss"):
        history, expected = record["metrics"][key], uninterrupted["metrics"][key]
        assert history.keys() == expected.keys(), key  # each step once
        for step, value in history.items():
            assert math.isclose(value, expected[step], rel_tol=1e-6), (key, step, value, expected[step])
