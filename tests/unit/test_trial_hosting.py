"""How a trial is hosted: in-process checkpoints and pruning, re-runs, and the measured overhead the plan uses."""

from __future__ import annotations

import json

from raylm.train.reports import InProcessReports, TrainReports, reports_for, worker_coordinates
from raylm.tune.context import TrialContext
from raylm.tune.overhead import REFERENCE, trial_overhead
from raylm.tune.session import trial_failures


def _checkpoint(tmp_path, step: int):
    local = tmp_path / f"local-{step}"
    (local / "deepspeed").mkdir(parents=True)
    (local / "deepspeed" / "state.pt").write_bytes(b"x" * 10)
    (local / "rank0.json").write_text(json.dumps({"step": step}))
    return local


def test_in_process_checkpoints_land_whole_in_storage_and_only_the_newest_are_kept(tmp_path):
    from raylm.train.checkpoints import latest_complete

    storage_dir = tmp_path / "run"
    reports = InProcessReports(str(storage_dir), keep=2)
    for step in (3, 6, 9):
        reports.report({"step": step}, _checkpoint(tmp_path, step), f"step_{step:08d}")
    assert sorted(p.name for p in storage_dir.iterdir()) == ["step_00000006", "step_00000009"]
    assert (storage_dir / "step_00000009" / "deepspeed" / "state.pt").read_bytes() == b"x" * 10
    assert str(latest_complete(storage_dir, 1)).endswith("step_00000009")
    assert reports.last == {"step": 9}
    reports.report({"step": 10})  # an evaluation without a checkpoint is remembered, nothing is written
    assert reports.last == {"step": 10} and len(list(storage_dir.iterdir())) == 2
    assert reports.given_checkpoint() is None  # a re-run finds its newest checkpoint in storage itself


def test_a_partial_checkpoint_is_replaced_and_one_without_rank0_is_not_complete(tmp_path):
    from raylm.train.checkpoints import latest_complete

    storage_dir = tmp_path / "run"
    (storage_dir / "step_00000003" / "deepspeed").mkdir(parents=True)  # a killed copy: no rank0.json
    assert latest_complete(storage_dir, 1) is None
    InProcessReports(str(storage_dir), keep=2).report({}, _checkpoint(tmp_path, 3), "step_00000003")
    assert str(latest_complete(storage_dir, 1)).endswith("step_00000003")


def test_the_runtime_decides_how_a_worker_reports_and_where_it_stands():
    assert isinstance(reports_for({"in_process": True, "storage_dir": "/x"}, 2), InProcessReports)
    assert isinstance(reports_for({"in_process": False}, 2), TrainReports)
    assert worker_coordinates({"in_process": True}) == (0, 1, 0, 0)


def test_in_process_trials_are_rerun_for_worker_failures_too():
    def context(in_process: bool, restarts: int) -> TrialContext:
        return TrialContext({"train": {"max_failures": restarts}}, "w", None, "/s", "trial", in_process=in_process)

    assert trial_failures(1, context(True, 2)) == 3
    assert trial_failures(1, context(False, 2)) == 1  # a worker group restarts its workers itself
    assert trial_failures(0, context(True, -1)) == -1
    assert trial_failures(2, context(True, 0)) == 2


def test_the_plan_uses_measured_overhead_when_the_benchmark_ran(tmp_path):
    results = tmp_path / "results.json"
    assert trial_overhead(True, 1, results).warm_s == REFERENCE["in_process"][0]  # no file: the reference figures
    section = {"date": "2026-12-05", "details": {"layouts": {"in_process": {
        "median": {"start_to_first_step_s": 0.1, "last_step_to_end_s": 0.2, "between_trials_s": 0.05},
        "first_trial": {"start_to_first_step_s": 4.0, "last_step_to_end_s": 0.5}}}}}
    results.write_text(json.dumps({"benchmarks": {"trial_overhead": section}}))
    measured = trial_overhead(True, 1, results)
    assert (measured.warm_s, measured.first_s) == (0.35, 4.5) and "2026-12-05" in measured.source
    assert trial_overhead(False, 2, results).warm_s == REFERENCE["two_workers"][0]  # not measured: reference
    results.write_text("{not json")
    assert trial_overhead(False, 1, results).warm_s == REFERENCE["worker_group"][0]


def test_a_pool_places_its_ranks_by_node_and_each_rank_reads_its_place(monkeypatch):
    from raylm.train.pool import rank_places

    places = rank_places(["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"])
    assert [(p.rank, p.world, p.local_rank, p.node_rank) for p in places] == [
        (0, 4, 0, 0), (1, 4, 0, 1), (2, 4, 1, 0), (3, 4, 1, 1)]
    env = places[2].env("10.0.0.1", 29500, use_gpu=False)
    assert env["RANK"] == "2" and env["WORLD_SIZE"] == "4" and env["MASTER_ADDR"] == "10.0.0.1"
    assert env["LOCAL_RANK"] == "1"
    assert places[2].env("10.0.0.1", 29500, use_gpu=True)["LOCAL_RANK"] == "0"  # one visible GPU per process
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    runtime = {"in_process": True, "pool": True, "storage_dir": "/x"}
    assert worker_coordinates(runtime) == (2, 4, 1, 0)
    reports = reports_for(runtime, 2)
    assert isinstance(reports, InProcessReports) and (reports.rank, reports.world) == (2, 4)


def test_the_plan_reads_the_pool_figures_for_trials_hosted_with_more_workers():
    from raylm.tune.overhead import layout_name

    assert layout_name(True, 1) == "in_process"
    assert layout_name(True, 2) == "two_workers_pool"
    assert layout_name(False, 2) == "two_workers"
    assert layout_name(False, 1) == "worker_group"


def test_a_lone_verification_run_takes_the_cpus_of_the_idle_trial_slots():
    from types import SimpleNamespace

    from raylm.study.run import widened

    def session(slots: int, gpu: bool = False):
        return SimpleNamespace(parallel_trials=slots,
                               base=SimpleNamespace(parallel=SimpleNamespace(cpus_per_worker=1.0, use_gpu=gpu)))

    context = TrialContext({}, "w", None, "/s", "study-verify", in_process=True, demand={"CPU": 1.0, "GPU": 0.0})
    payload = {"overrides": {"train.max_steps": 10}, "tags": {"run_name": "v"}}
    wide, (one,) = widened(context, [payload], session(2))
    assert wide.demand == {"CPU": 2.0, "GPU": 0.0}
    assert one["overrides"] == {"train.max_steps": 10, "parallel.cpus_per_worker": 2.0}
    assert one["tags"] == payload["tags"]
    assert widened(context, [payload, payload], session(2)) == (context, [payload, payload])  # no slot idles
    assert widened(context, [payload], session(2, gpu=True)) == (context, [payload])  # GPUs are not threads
    assert widened(context, [payload], session(1)) == (context, [payload])
