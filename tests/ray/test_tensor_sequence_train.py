"""Tensor and sequence parallelism through Ray Train and DeepSpeed (CPU workers, gloo) against one process.

Each layout trains the tiny GPT for 10 steps on the same data as the single-process reference of
tests/ray/train_helpers.py (the global batch of every data-parallel replica, one optimizer step):
tp=2, sp=2 and tp=2 x dp=2 reproduce its per-step losses to 1e-5 (relative; fp32, only the order of
the all-reduced sums differs). The tp=2 run resumes exactly from its step-5 checkpoint and exports the
single-process model. The layer-level checks (GPT and BERT, RoPE, ALiBi and learned positions,
tp x sp) are in tests/unit/test_tensor_sequence_parallel.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from raylm.parallel.plan import PlanError
from raylm.train.run import run_training
from tests.ray.train_helpers import dataset_dir, logged_curve, reference_training, tiny_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]
RTOL = 1e-5
STEPS = 10
TRAIN = {"max_steps": STEPS, "checkpoint_every": 5}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, ray_local) -> Path:
    return tmp_path_factory.mktemp("tensor-sequence")


@pytest.fixture(scope="module")
def tp_run(workdir):
    return run_training(tiny_config(workdir, parallel={"tp": 2}, train=TRAIN))


def test_tensor_parallel_matches_single_process_and_exports_its_model(workdir, tp_run):
    cfg = tiny_config(workdir, parallel={"tp": 2}, train=TRAIN)
    reference = reference_training(cfg, dataset_dir(tp_run), STEPS)
    curve = logged_curve(tp_run)
    assert [curve[s] for s in range(1, STEPS + 1)] == pytest.approx(reference.losses, rel=RTOL)
    assert all(norm > 0 for norm in logged_curve(tp_run, "train/grad_norm").values())
    exported = load_file(tp_run.model_dir / "model.safetensors")  # the gathered, unsplit weights
    expected = reference.model.state_dict()
    assert set(exported) | {"lm_head.weight"} == set(expected)  # the head is tied to the token embeddings
    for name, weight in exported.items():
        assert torch.allclose(weight, expected[name], rtol=1e-4, atol=1e-5), name  # key biases: ~0, noise
    checkpoint = Path(tp_run.checkpoint_path)
    assert {p.name for p in (checkpoint / "deepspeed").glob("mp_rank_*_model_states.pt")} == {
        "mp_rank_00_model_states.pt", "mp_rank_01_model_states.pt"}  # each tensor rank saves its share


def test_tensor_parallel_resumes_exactly(workdir, tp_run):
    step5 = Path(tp_run.checkpoint_path).parent / "step_00000005"
    resumed = run_training(tiny_config(workdir, parallel={"tp": 2}, train=TRAIN), resume_from=str(step5))
    baseline, curve = logged_curve(tp_run), logged_curve(resumed)
    assert sorted(curve) == list(range(6, STEPS + 1))
    assert [curve[s] for s in range(6, STEPS + 1)] == pytest.approx([baseline[s] for s in range(6, STEPS + 1)],
                                                                   rel=RTOL)


@pytest.mark.parametrize("parallel", [
    {"sp": 2},
    {"tp": 2, "num_workers": 4, "zero_stage": 1, "cpus_per_worker": 0.5},  # tp=2 x dp=2, ZeRO-1 over dp
], ids=["sp2", "tp2xdp2"])
def test_layout_matches_single_process_reference(workdir, parallel):
    cfg = tiny_config(workdir, parallel=parallel, train=TRAIN)
    result = run_training(cfg)
    curve = logged_curve(result)
    expected = reference_training(cfg, dataset_dir(result), STEPS).losses
    assert [curve[s] for s in range(1, STEPS + 1)] == pytest.approx(expected, rel=RTOL)
    val = logged_curve(result, "val/loss")[STEPS]
    assert 0 < val < 10


def test_an_impossible_tensor_plan_fails_before_launch(workdir):
    cfg = tiny_config(workdir, parallel={"tp": 2}, model={"n_heads": 4, "n_kv_heads": 1})
    with pytest.raises(PlanError, match=r"key-value heads \(1\) over tp=2"):
        run_training(cfg)
