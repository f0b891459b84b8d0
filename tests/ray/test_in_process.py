"""A one-worker trial trained in its own Tune trial process (Ray Train local mode) is the same run as one
trained on a Ray Train worker group: the same per-step losses and the same MLflow record."""

from __future__ import annotations

import math

import pytest

from tests.ray.sweep_helpers import trial_runs, write_sweep

pytestmark = pytest.mark.usefixtures("ray_local")

TIMINGS = ("perf/", "system/", "startup/", "teardown/")  # measured times differ from run to run
NAMES = ("name", "tracking.outbox_dir", "data.directory", "trial.values")  # where each run lives


def _sweep(tmp_path, in_process: bool, seeds: list[int]):
    from raylm.tune.sweep import run_sweep
    from raylm.tune.sweep_config import load_sweep

    tmp_path.mkdir(parents=True)
    path = write_sweep(tmp_path, {"train.seed": {"grid": seeds}}, trials={"in_process": in_process,
                                                                          "max_concurrent_trials": 1})
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


def test_in_process_trial_matches_a_worker_group_trial(tmp_path):
    in_process, said = _sweep(tmp_path / "in_process", True, [0, 1])
    group, group_said = _sweep(tmp_path / "group", False, [0])
    assert "each in its own reused process" in said
    assert "worker group of 1" in group_said
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
    # the second in-process trial ran in the reused process: a process group and peak measurement already there
    assert by_seed["1"][0]["status"] == "FINISHED"
    for root in (tmp_path / "in_process", tmp_path / "group"):  # both keep their checkpoints in storage alike
        trials = list(root.glob("sweeps/*/trials/trial-*"))
        assert trials
        for trial in trials:
            kept = sorted(p.parent.name for p in trial.glob("step_*/rank0.json"))
            assert kept == ["step_00000003", "step_00000006"], (trial, kept)
