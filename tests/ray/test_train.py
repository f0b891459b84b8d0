"""Training on Ray Train + DeepSpeed (CPU, gloo, a local Ray, 2 workers).

Tolerance: fp32 everywhere; the distributed losses differ from the single-process reference
only by the order of floating-point sums in the gradient all-reduce, so each step's loss
must agree to 1e-5 (relative) over the first 4 steps.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raylm.errors import UserError
from raylm.train.run import run_training
from tests.ray.train_helpers import dataset_dir, logged_curve, metric_history, reference_losses, tiny_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]
RTOL = 1e-5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, ray_local) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def zero2_run(workdir):
    """An uninterrupted ZeRO-2 run, checkpointing every 2 steps: the baseline of several tests."""
    return run_training(tiny_config(workdir, parallel={"zero_stage": 2}, train={"checkpoint_every": 2}))


@pytest.mark.parametrize("stage", [0, 1, 3])
def test_zero_stage_matches_single_process_reference(workdir, stage):
    cfg = tiny_config(workdir, parallel={"zero_stage": stage})
    result = run_training(cfg)
    curve = logged_curve(result)
    expected = reference_losses(cfg, dataset_dir(result), 4)
    assert [curve[s] for s in range(1, 5)] == pytest.approx(expected, rel=RTOL)
    assert all(norm > 0 for norm in logged_curve(result, "train/grad_norm").values())


def test_zero2_matches_reference_and_checkpoints_hold_every_rank(workdir, zero2_run):
    cfg = tiny_config(workdir, parallel={"zero_stage": 2}, train={"checkpoint_every": 2})
    curve = logged_curve(zero2_run)
    assert [curve[s] for s in range(1, 5)] == pytest.approx(reference_losses(cfg, dataset_dir(zero2_run), 4),
                                                            rel=RTOL)
    checkpoint = Path(zero2_run.checkpoint_path)
    assert checkpoint.name == "step_00000004"
    for rank in (0, 1):
        assert (checkpoint / f"rank{rank}.json").exists() and (checkpoint / f"rank{rank}_rng.pt").exists()
        assert list(checkpoint.glob(f"deepspeed/*zero_pp_rank_{rank}_*optim_states.pt")), f"rank {rank} shard missing"
    assert (zero2_run.model_dir / "model.safetensors").exists()
    assert set(logged_curve(zero2_run, "val/loss")) == {4}
    assert {"train/lr", "train/grad_norm", "perf/tokens_per_second", "perf/mfu"} <= set(_metric_names(zero2_run))
    # system metrics (MLflow's names), sampled by the first worker of the node; steps count samples from 0
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
            "system/system_memory_usage_percentage"} <= set(_metric_names(zero2_run))
    memory = metric_history(zero2_run, "system/system_memory_usage_percentage")
    assert [m.step for m in memory] == list(range(len(memory))) and all(0 < m.value < 100 for m in memory)


def test_resume_continues_exactly(workdir, zero2_run):
    """Stop a run after step 2 (its rank 1 dies before step 3), resume from the step-2 checkpoint."""
    cfg = tiny_config(workdir, parallel={"zero_stage": 2}, train={"checkpoint_every": 2},
                      faults={"kill_rank": 1, "kill_at_step": 3})
    with pytest.raises(UserError, match="training failed"):
        run_training(cfg)
    stopped = sorted((workdir / "runs").glob("*/step_00000002"))[-1]
    resumed = run_training(tiny_config(workdir, parallel={"zero_stage": 2}, train={"checkpoint_every": 2}),
                           resume_from=str(stopped))
    baseline, curve = logged_curve(zero2_run), logged_curve(resumed)
    assert sorted(curve) == [3, 4]
    assert [curve[3], curve[4]] == pytest.approx([baseline[3], baseline[4]], rel=RTOL)


PP_DP = {"num_workers": 4, "pp": 2, "zero_stage": 1, "cpus_per_worker": 0.5}  # 4 workers on the 2 test CPUs


@pytest.fixture(scope="module")
def pp_dp_run(workdir):
    """pp=2 x dp=2 on 4 workers, 10 steps, checkpoints every 5: the baseline of the pp x dp tests."""
    return run_training(tiny_config(workdir, parallel=PP_DP, train={"max_steps": 10, "checkpoint_every": 5}))


def test_pipeline_times_data_parallel_matches_single_process_reference(workdir, pp_dp_run):
    """pp=2 x dp=2: two replicas of a two-stage pipeline give the per-step losses of one process that
    averages the gradient over both replicas' micro-batches, over 10 steps."""
    cfg = tiny_config(workdir, parallel=PP_DP, train={"max_steps": 10, "checkpoint_every": 5})
    curve = logged_curve(pp_dp_run)
    expected = reference_losses(cfg, dataset_dir(pp_dp_run), 10)
    assert [curve[s] for s in range(1, 11)] == pytest.approx(expected, rel=RTOL)
    assert (pp_dp_run.model_dir / "model.safetensors").exists()


def test_pipeline_times_data_parallel_resumes_exactly(workdir, pp_dp_run):
    """The pp=2 x dp=2 run resumed from its own step-5 checkpoint (every rank's stage weights, optimizer
    state, data position and RNG) continues with the uninterrupted run's losses over steps 6-10. (A run
    stopped by a killed rank resumes the same way: test_resume_continues_exactly.)"""
    step5 = Path(pp_dp_run.checkpoint_path).parent / "step_00000005"
    assert Path(pp_dp_run.checkpoint_path).name == "step_00000010" and (step5 / "rank3.json").exists()
    resumed = run_training(tiny_config(workdir, parallel=PP_DP, train={"max_steps": 10, "checkpoint_every": 5}),
                           resume_from=str(step5))
    baseline, curve = logged_curve(pp_dp_run), logged_curve(resumed)
    assert sorted(curve) == list(range(6, 11))
    assert [curve[s] for s in range(6, 11)] == pytest.approx([baseline[s] for s in range(6, 11)], rel=RTOL)


def test_expert_parallel_matches_all_local_experts(workdir):
    """ep=2 (each rank holds 2 of 4 experts) trains like ep=1 (all 4 on each rank): same losses and loads."""
    moe = {"moe": {"n_experts": 4, "every": 1}}
    runs = [run_training(tiny_config(workdir, model=moe, parallel={"zero_stage": 2, "ep": ep})) for ep in (1, 2)]
    local, sharded = (logged_curve(run) for run in runs)
    assert [sharded[s] for s in range(1, 5)] == pytest.approx([local[s] for s in range(1, 5)], rel=RTOL)
    load_keys = [f"moe/layer{layer}/expert{e}_load" for layer in (0, 1) for e in range(4)]
    assert set(load_keys) <= set(_metric_names(runs[1]))
    for key in load_keys:
        assert logged_curve(runs[1], key) == pytest.approx(logged_curve(runs[0], key), abs=1e-6)


def test_nan_loss_stops_with_step_and_last_checkpoint(workdir):
    cfg = tiny_config(workdir, train={"checkpoint_every": 2}, faults={"nan_at_step": 3})
    with pytest.raises(UserError, match=r"loss is nan at step 3; last good checkpoint: .*step_00000002"):
        run_training(cfg)


def _metric_names(result) -> list[str]:
    from mlflow.tracking import MlflowClient

    return list(MlflowClient(result.tracking_uri).get_run(result.mlflow_run_id).data.metrics)


def test_killed_worker_is_replaced_and_the_run_finishes(workdir, zero2_run):
    """Rank 1's process dies before step 3; Ray restarts the workers from the step-2 checkpoint."""
    cfg = tiny_config(workdir, parallel={"zero_stage": 2}, train={"checkpoint_every": 2, "max_failures": 1},
                      faults={"kill_rank": 1, "kill_at_step": 3})
    result = run_training(cfg)
    assert (result.storage_dir / ".fault_injected").exists()
    baseline = logged_curve(zero2_run)
    history = metric_history(result, "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4]  # one continuous curve: no step logged twice
    assert [m.value for m in history] == pytest.approx([baseline[s] for s in (1, 2, 3, 4)], rel=RTOL)
