"""The parallel plan: derived sizes, every impossible plan's message, ZeRO memory, DeepSpeed config."""

from __future__ import annotations

import pytest

from raylm.config import RunConfig
from raylm.parallel.deepspeed_config import deepspeed_config
from raylm.parallel.memory import (
    MAX_LIVE_PARAMETERS,
    REDUCE_BUCKET_ELEMENTS,
    optimizer_moments,
    zero_memory,
    zero_model_states,
)
from raylm.parallel.plan import PlanError, check_data_size, make_plan


def config(**sections) -> RunConfig:
    return RunConfig.from_dict(sections)


def test_plan_derives_accumulation_and_precision():
    plan = make_plan(config(train={"micro_batch_size": 4, "global_batch_size": 32}), world_size=2)
    assert (plan.dp, plan.grad_accum, plan.global_batch, plan.precision) == (2, 4, 32, "fp32")
    assert plan.tokens_per_step == 32 * 128
    gpu = make_plan(config(parallel={"use_gpu": True}), world_size=2)
    assert gpu.precision == "bf16"


@pytest.mark.parametrize("sections,world,message", [
    ({"train": {"micro_batch_size": 4, "global_batch_size": 20}}, 2,
     r"global_batch_size \(20\) is not a multiple of micro_batch_size \(4\) \* dp \(2\) = 8; use global_batch_size=24"),
    ({"parallel": {"pp": 2}}, 3, r"pp\(2\) does not divide the number of workers \(3\)"),
    ({"parallel": {"pp": 2, "zero_stage": 2}}, 2, r"works with ZeRO stage 0 or 1 only.*set parallel.zero_stage=1"),
    ({"parallel": {"pp": 2, "zero_stage": 3}}, 2, r"pp=2\) works with ZeRO stage 0 or 1 only"),
    ({"parallel": {"pp": 2}, "train": {"compile": True}}, 2, r"train.compile works with parallel.pp = 1 only"),
    ({"parallel": {"pp": 4}, "model": {"n_layers": 2}}, 4, r"n_layers \(2\) is smaller than pp \(4\)"),
    ({"parallel": {"pp": 2}, "model": {"arch": "t5"}}, 2, r"pipeline parallelism supports gpt and bert"),
    ({"parallel": {"pp": 2}, "model": {"moe": {"n_experts": 2}}}, 2, r"pipeline parallelism with MoE"),
    ({"parallel": {"pp": 2}, "model": {"arch": "bert", "nsp_head": True}}, 2, r"next-sentence head cannot train"),
    ({"parallel": {"ep": 2}}, 2, r"parallel.ep=2 shards experts, but the model has none"),
    ({"parallel": {"ep": 2}, "model": {"moe": {"n_experts": 3}}}, 2, r"ep \(2\) must divide model.moe.n_experts \(3\)"),
    ({"parallel": {"ep": 4}, "model": {"moe": {"n_experts": 4}}}, 2, r"ep \(4\) must divide the data-parallel size"),
    ({"parallel": {"zero_stage": 3}, "model": {"moe": {"n_experts": 2}}}, 2, r"MoE layers cannot train under ZeRO"),
    ({"model": {"n_layers": 2, "moe": {"n_experts": 4, "every": 3}}}, 2,
     r"moe.every \(3\) exceeds the number of layers"),
    ({"parallel": {"offload_optimizer": True}}, 2, r"offload_optimizer needs ZeRO stage 1, 2 or 3"),
    ({"parallel": {"precision": "bf16"}}, 2, r"precision bf16 needs GPU workers"),
    ({"parallel": {"precision": "fp16"}}, 2, r"precision fp16 needs GPU workers"),
])
def test_impossible_plans_are_explained(sections, world, message):
    with pytest.raises(PlanError, match=message):
        make_plan(config(**sections), world_size=world)


@pytest.mark.parametrize("parallel,world,message", [
    ({"zero_stage": 3}, 2, r"optim.swa averages the full parameters on every rank, but ZeRO stage 3 partitions them"
                           r".*set parallel.zero_stage to 0, 1 or 2, or optim.swa=false"),
    ({"pp": 2, "zero_stage": 1}, 2, r"with pp=2 each pipeline stage holds only its own layers; set parallel.pp=1"),
])
def test_swa_needs_full_parameters_on_every_rank(parallel, world, message):
    with pytest.raises(PlanError, match=message):
        make_plan(config(optim={"swa": True}, parallel=parallel), world_size=world)
    make_plan(config(optim={"swa": False}, parallel=parallel), world_size=world)
    make_plan(config(optim={"swa": True}, parallel={"zero_stage": 2}), world_size=world)


def test_swa_with_expert_parallel_is_explained():
    sections = {"optim": {"swa": True}, "parallel": {"ep": 2, "zero_stage": 2}, "model": {"moe": {"n_experts": 2}}}
    with pytest.raises(PlanError, match=r"with ep=2 each rank holds only its own experts; set parallel.ep=1 or "
                                        r"optim.swa=false") as err:
        make_plan(config(**sections), world_size=2)
    assert str(err.value).count("\n  - ") == 1  # the only problem
    make_plan(config(**{**sections, "parallel": {"ep": 1}}), world_size=2)


def test_all_problems_are_listed_at_once():
    with pytest.raises(PlanError) as err:
        make_plan(config(parallel={"pp": 2, "zero_stage": 3, "precision": "fp16"}), world_size=3)
    assert str(err.value).count("\n  - ") == 3


def test_zero_stage_out_of_range_is_a_config_error():
    from raylm.errors import ConfigError

    with pytest.raises(ConfigError, match="zero_stage must be 0, 1, 2 or 3, got 5"):
        config(parallel={"zero_stage": 5})


def test_more_workers_than_data_is_explained():
    plan = make_plan(config(train={"micro_batch_size": 8, "global_batch_size": 64}), world_size=4)
    check_data_size(plan, 64, "shards")
    with pytest.raises(PlanError, match=r"shards holds 40 training sequences, fewer than one global batch \(64"):
        check_data_size(plan, 40, "shards")
    with pytest.raises(PlanError, match=r"holds 3 validation sequences, fewer than one micro-batch.*data.val_fraction"):
        check_data_size(plan, 64, "shards", val_sequences=3)


def test_zero_model_states_follow_the_paper():
    # ZeRO paper, Figure 1: psi = 7.5B, N_d = 64, K = 12 (mixed-precision Adam).
    psi, nd = 7.5e9, 64
    base = zero_model_states(psi, nd, 1, 0, "bf16", moments=2)
    assert base.total_bytes == pytest.approx(16 * psi)  # (2 + 2 + 12) psi = 120 GB
    assert zero_model_states(psi, nd, 1, 1, "bf16", 2).total_bytes == pytest.approx(4 * psi + 12 * psi / nd)
    assert zero_model_states(psi, nd, 1, 2, "bf16", 2).total_bytes == pytest.approx(2 * psi + 14 * psi / nd)
    assert zero_model_states(psi, nd, 1, 3, "bf16", 2).total_bytes == pytest.approx(16 * psi / nd)
    offloaded = zero_model_states(psi, nd, 1, 2, "bf16", 2, offload_optimizer=True)
    assert offloaded.optimizer_bytes == 0 and offloaded.offloaded_bytes == pytest.approx(12 * psi / nd)
    assert zero_model_states(100, 1, 1, 0, "fp32", 2).total_bytes == 100 * (4 + 4 + 8)
    assert optimizer_moments("sgd", 0.9) == 0 and optimizer_moments("momentum", 0.9) == 1
    assert optimizer_moments("rmsprop", 0.0) == 1 and optimizer_moments("rmsprop", 0.9) == 2


def test_zero_memory_adds_deepspeeds_buffers():
    # bench/zero_memory.py measured 20.4, 18.4, 18.4 and 23.1 bytes per parameter at the peak of
    # stages 0-3 (fp32 AdamW, 2 workers, 29M parameters); the estimate is 20, 18, 18 and 20.
    psi = 29_000_000
    per_param = [zero_memory(psi, 2, 1, stage, "fp32", 2).peak_bytes / psi for stage in range(4)]
    assert per_param == pytest.approx([20, 18, 18, 20])
    for stage, measured in enumerate([20.4, 18.4, 18.4, 23.1]):
        assert abs(per_param[stage] / measured - 1) <= 0.25
        paper = zero_model_states(psi, 2, 1, stage, "fp32", 2)
        estimate = zero_memory(psi, 2, 1, stage, "fp32", 2)
        assert estimate.model_states_bytes == pytest.approx(paper.total_bytes)
        assert estimate.total_bytes == pytest.approx(paper.total_bytes + sum(estimate.buffers.values()))
    # the reduce bucket and ZeRO-3's gathered parameters are capped, not proportional to the model
    big = 7.5e9
    z2 = zero_memory(big, 64, 1, 2, "bf16", 2)
    assert z2.buffers["grads/reduce_bucket"] == 2 * REDUCE_BUCKET_ELEMENTS
    assert z2.buffers["grads/fp32_partition"] == pytest.approx(2 * big / 64)
    assert "optimizer/fp32_master_partition" not in z2.buffers  # mixed precision: the paper's K has it
    z3 = zero_memory(big, 64, 1, 3, "bf16", 2)
    assert z3.buffers["params/gathered"] == 2 * MAX_LIVE_PARAMETERS
    assert z3.params_bytes == pytest.approx(2 * big / 64 + 2 * MAX_LIVE_PARAMETERS)
    # offloading moves the optimizer's buffers to the host with its state
    off = zero_memory(psi, 2, 1, 2, "fp32", 2, offload_optimizer=True)
    assert off.optimizer_bytes == 0
    assert off.offloaded_bytes == pytest.approx((8 + 4 + 4) * psi / 2)
    assert zero_memory(psi, 2, 1, 0, "fp32", 0).buffers == {"grads/allreduce_flat_copy": 4 * psi}  # SGD


def test_memory_bucket_matches_the_deepspeed_config():
    cfg = config(parallel={"zero_stage": 2})
    ds = deepspeed_config(cfg, make_plan(cfg, world_size=2))
    assert ds["zero_optimization"]["reduce_bucket_size"] == REDUCE_BUCKET_ELEMENTS


def test_deepspeed_config_matches_the_plan():
    cfg = config(parallel={"zero_stage": 2, "offload_optimizer": True}, train={"grad_clip": 0.5})
    plan = make_plan(cfg, world_size=2)
    ds = deepspeed_config(cfg, plan)
    assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 2
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["gradient_clipping"] == 0.5
    assert not ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    fp16 = config(parallel={"use_gpu": True, "precision": "fp16"})
    ds16 = deepspeed_config(fp16, make_plan(fp16, world_size=1))
    assert ds16["fp16"]["enabled"] and ds16["fp16"]["loss_scale"] == 0  # dynamic loss scaling
