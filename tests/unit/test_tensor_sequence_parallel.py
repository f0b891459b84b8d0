"""Tensor and sequence parallelism (raylm.parallel.tensor, raylm.parallel.sequence) against one process.

Four gloo processes split the same model as tp=2, sp=2 and tp=2 x sp=2 (the rest of the four
ranks are data-parallel replicas fed the same batch). The loss and every parameter's gradient
(split ones gathered, sequence ranks averaged as DeepSpeed averages the data group) must equal a
single-process model's. The training runs through Ray Train and DeepSpeed are in
tests/ray/test_tensor_sequence_train.py.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raylm.config import ModelConfig, RunConfig
from raylm.model import build_model
from raylm.parallel.groups import layout_groups, rank_coords
from raylm.parallel.plan import PlanError, make_plan
from raylm.parallel.sequence import sequence_slice

WORLD = 4
LAYOUTS = [(2, 1), (1, 2), (2, 2)]  # (tp, sp)
CASES = [("gpt", "rope"), ("gpt", "alibi"), ("gpt", "learned"), ("bert", "learned")]
SEQ = 16


def model_config(arch: str, pos: str) -> ModelConfig:
    return ModelConfig(arch=arch, vocab_size=64, max_seq_len=SEQ, d_model=32, n_layers=2, n_heads=8, n_kv_heads=4,
                       pos_encoding=pos, activation="swiglu" if pos == "rope" else "gelu")


def batch(arch: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (2, SEQ), generator=generator)
    targets = torch.randint(0, 64, (2, SEQ), generator=generator)
    if arch == "gpt":
        return {"ids": ids, "targets": targets}
    masked = torch.rand(2, SEQ, generator=generator) < 0.3  # uneven counts per sequence slice
    return {"ids": ids, "mlm_labels": targets.masked_fill(~masked, -100)}


def reference(arch: str, pos: str) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = build_model(model_config(arch, pos))
    out = model(**batch(arch))
    out.loss.backward()
    return out.loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def split_run(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    from raylm.parallel.groups import ModelParallelGroups
    from raylm.parallel.sequence import shard_sequence_parallel
    from raylm.parallel.tensor import shard_tensor_parallel, tensor_parallel_state_dict

    torch.set_num_threads(1)
    for tp, sp in LAYOUTS:
        groups = ModelParallelGroups(rank, WORLD, tp, sp)
        for arch, pos in CASES:
            torch.manual_seed(0)
            model = build_model(model_config(arch, pos))
            full_state = {k: v.clone() for k, v in model.state_dict().items()}
            if tp > 1:
                shard_tensor_parallel(model, groups.group("tensor"), groups.coords.tp_rank, tp)
            if sp > 1:
                shard_sequence_parallel(model, groups.group("sequence"), groups.coords.sp_rank, sp, SEQ)
            inputs = batch(arch)
            if sp > 1:
                inputs = sequence_slice(inputs, groups.coords.sp_rank, sp)
            out = model(**inputs)
            out.loss.backward()
            loss = torch.tensor([out.loss.item()], dtype=torch.float64)
            dist.all_reduce(loss)
            grads = {}
            for name, p in model.named_parameters():
                grad = p.grad.clone()
                dist.all_reduce(grad, group=groups.get_data_parallel_group())  # what DeepSpeed does: the mean
                grad /= groups.get_data_parallel_world_size()
                if getattr(p, "tp_split_dim", None) is not None:
                    parts = [torch.empty_like(grad) for _ in range(tp)]
                    dist.all_gather(parts, grad.contiguous(), group=groups.group("tensor"))
                    grad = torch.cat(parts, dim=p.tp_split_dim)
                grads[name] = grad
            gathered = tensor_parallel_state_dict(model, groups.group("tensor"), tp) if tp > 1 else model.state_dict()
            if rank == 0:
                torch.save({"loss": loss.item() / WORLD, "grads": grads,
                            "state_matches": all(torch.equal(gathered[k], v) for k, v in full_state.items())},
                           Path(out_dir) / f"{tp}-{sp}-{arch}-{pos}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def split_results():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(split_run, args=(str(Path(tmp) / "init"), tmp), nprocs=WORLD)
        yield {path.stem: torch.load(path, weights_only=True) for path in Path(tmp).glob("*.pt")}


@pytest.mark.parametrize("tp,sp", LAYOUTS)
@pytest.mark.parametrize("arch,pos", CASES)
def test_split_model_gives_the_single_process_loss_and_gradients(split_results, tp, sp, arch, pos):
    result = split_results[f"{tp}-{sp}-{arch}-{pos}"]
    loss, grads = reference(arch, pos)
    assert result["loss"] == pytest.approx(loss, rel=1e-6)
    scale = max(g.abs().max().item() for g in grads.values())
    for name, grad in grads.items():  # relative to the largest gradient: a key bias's gradient is ~0 analytically
        assert torch.allclose(result["grads"][name], grad, rtol=1e-5, atol=1e-6 * scale), name
    assert result["state_matches"]  # the gathered split weights are the single-process model's


def test_ranks_are_laid_out_tensor_major():
    assert [rank_coords(r, 2, 2) for r in range(8)][5].__dict__ == {"tp_rank": 1, "sp_rank": 0, "dp_rank": 1}
    groups = layout_groups(8, tp=2, sp=2)
    assert groups["tensor"] == [[0, 1], [2, 3], [4, 5], [6, 7]]  # neighbours: the group that talks most
    assert groups["sequence"] == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert groups["data"] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert groups["sequence_data"] == [[0, 2, 4, 6], [1, 3, 5, 7]]


def test_sequence_slice_keeps_this_ranks_tokens():
    inputs = {"ids": torch.arange(16).view(2, 8), "targets": torch.arange(16).view(2, 8) + 100}
    part = sequence_slice(inputs, rank=1, size=2)
    assert part["ids"].tolist() == [[4, 5, 6, 7], [12, 13, 14, 15]]
    assert part["targets"][0, 0].item() == 104


def run_config(**parallel) -> RunConfig:
    return RunConfig.from_dict({
        "model": {"arch": "gpt", "vocab_size": 64, "max_seq_len": 32, "d_model": 48, "n_layers": 2, "n_heads": 4,
                  "n_kv_heads": 2, "d_ff": 102},
        "parallel": {"num_workers": 4, **parallel},
        "train": {"micro_batch_size": 2, "global_batch_size": 8, "seq_len": 30},
    })


def test_tensor_and_sequence_groups_set_the_data_parallel_size():
    plan = make_plan(run_config(tp=2), 4)
    assert (plan.tp, plan.sp, plan.dp, plan.grad_accum) == (2, 1, 2, 2)


@pytest.mark.parametrize("parallel,expected", [
    ({"tp": 4}, ["key-value heads (2) over tp=4", "hidden units (102) over tp=4", "model.d_ff=104"]),
    ({"tp": 3}, ["does not divide the number of workers (4)", "attention heads (4) over tp=3"]),
    ({"sp": 4}, ["train.seq_len (30) does not divide by 4", "model.n_kv_heads (2) / tp (1) = 2 does not divide by 4"]),
    ({"tp": 2, "zero_stage": 3}, ["ZeRO stage 3 is not supported"]),
    ({"sp": 2, "pp": 2}, ["sp=2 with pipeline parallelism (pp=2) is not supported"]),
])
def test_impossible_tensor_and_sequence_plans_are_explained(parallel, expected):
    with pytest.raises(PlanError) as raised:
        make_plan(run_config(**parallel), 4)
    for words in expected:
        assert words in str(raised.value)


def test_tensor_parallel_refuses_moe_t5_and_swa():
    base = run_config(tp=2).model_dump()
    for change, words in ((("model", "moe", {"n_experts": 2}), "with MoE layers is not supported"),
                          (("optim", "swa", True), "optim.swa averages"),
                          (("train", "compile", True), "train.compile with tp=2")):
        data = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
        section, key, value = change
        data[section][key] = value
        with pytest.raises(PlanError, match=words):
            make_plan(RunConfig.from_dict(data), 4)


def test_the_split_parameter_count_is_what_tensor_parallelism_splits():
    from raylm.model.counting import tensor_parallel_split_params

    for cfg in (model_config("gpt", "rope"), model_config("bert", "learned")):
        model = build_model(cfg)
        split_names = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "q_proj.bias",
                       "k_proj.bias", "v_proj.bias", "w_in.weight", "w_in.bias", "w_gate.weight", "w_gate.bias",
                       "w_out.weight")
        expected = sum(p.numel() for name, p in model.named_parameters() if name.endswith(split_names))
        assert tensor_parallel_split_params(cfg) == expected


def test_per_rank_memory_divides_over_the_tensor_and_sequence_groups():
    from raylm.parallel.memory import activation_bytes
    from raylm.parallel.rank_memory import rank_memory

    one = activation_bytes(128, 4, 256, 8, 4, 1000, "fp32")
    assert activation_bytes(128, 4, 256, 8, 4, 1000, "fp32", sp=2) == pytest.approx(one / 2)
    assert one / 2 < activation_bytes(128, 4, 256, 8, 4, 1000, "fp32", tp=2) < one  # norms, dropout: replicated
    assert activation_bytes(128, 4, 256, 8, 4, 1000, "fp32", checkpointing=True) < one / 2
    base = run_config().model_dump()
    plain = rank_memory(RunConfig.from_dict(base), make_plan(RunConfig.from_dict(base), 4))
    tensor = run_config(tp=2)
    split = rank_memory(tensor, make_plan(tensor, 4))
    assert split.params_per_rank < plain.params_per_rank
    assert split.states.params_bytes == pytest.approx(4 * split.params_per_rank)  # fp32, ZeRO-0


def test_raylm_plan_prints_the_groups_and_each_ranks_share(capsys):
    from tests.conftest import REPO_ROOT

    from raylm.cli import main

    config = str(REPO_ROOT / "jobs" / "configs" / "gpt_tiny.yaml")
    assert main(["plan", config, "--workers", "8", "--parallel.tp", "2", "--parallel.sp", "2",
                 "--parallel.zero_stage", "1"]) == 0
    out = capsys.readouterr().out
    assert "workers 8 = tp 2 x sp 2 x pp 1 x dp 2" in out
    assert "tensor groups [[0, 1], [2, 3], [4, 5], [6, 7]]" in out and "data groups [[0, 4]," in out
    assert "each rank of a sequence group holds 64 of the 128 tokens" in out
    assert "per rank with tp 2" in out and "activations" in out
    assert main(["plan", config, "--workers", "4", "--parallel.tp", "3"]) == 2  # said before anything starts
    assert "tensor parallelism splits attention heads (4) over tp=3" in capsys.readouterr().err
