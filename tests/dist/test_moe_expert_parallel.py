"""Expert-parallel SwitchMoE over 2 gloo processes equals the all-local layer on the same rank-local tokens.

Outputs, input and router gradients and the load statistics must match per rank; a rank's expert
gradients must match the all-local layer's gradients for those experts summed over the ranks.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raylm.model.moe import SwitchMoE

WORLD = 2
D_MODEL, D_FF = 6, 10
CASES = [  # (n_experts, top_k, capacity_factor, skew): skew sends every token to expert 0 (empty exchanges)
    (2, 1, 1.0, False),
    (2, 2, 0.8, False),
    (4, 1, 1.0, False),
    (4, 2, 0.6, False),
    (4, 1, 0.5, True),
    (4, 2, 1.0, True),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_case(rank: int, n_experts: int, top_k: int, capacity_factor: float, skew: bool, training: bool):
    name = f"rank {rank}, n_experts={n_experts}, top_k={top_k}, cf={capacity_factor}, skew={skew}, train={training}"
    torch.manual_seed(0)  # the same full layer on every rank
    full = SwitchMoE(
        D_MODEL,
        D_FF,
        n_experts,
        top_k=top_k,
        capacity_factor=capacity_factor,
        eval_capacity_factor=capacity_factor,
        activation="swiglu",
    )
    if skew:
        with torch.no_grad():
            full.router.weight.zero_()
            full.router.weight[0] = 1.0
    sharded = SwitchMoE(
        D_MODEL,
        D_FF,
        n_experts,
        top_k=top_k,
        capacity_factor=capacity_factor,
        eval_capacity_factor=capacity_factor,
        activation="swiglu",
        process_group=dist.group.WORLD,
    )
    local = n_experts // WORLD
    with torch.no_grad():
        sharded.router.weight.copy_(full.router.weight)
        for j, expert in enumerate(sharded.experts):
            expert.load_state_dict(full.experts[rank * local + j].state_dict())
    full.train(training), sharded.train(training)

    gen = torch.Generator().manual_seed(100 + rank)  # different tokens on each rank
    x = torch.randn(3, 7, D_MODEL, generator=gen)
    if skew:
        x = x.abs() + 0.1
    weights = torch.randn(3, 7, D_MODEL, generator=gen)
    results = []
    for layer in (full, sharded):
        xin = x.clone().requires_grad_(True)
        out, stats = layer(xin)
        ((out * weights).sum() + stats.aux_loss + stats.z_loss).backward()
        results.append((out.detach(), stats, xin.grad))
    (out_f, stats_f, gx_f), (out_s, stats_s, gx_s) = results
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_s, out_f, **tol, msg=f"output differs ({name})")
    torch.testing.assert_close(gx_s, gx_f, **tol, msg=f"input gradient differs ({name})")
    torch.testing.assert_close(
        sharded.router.weight.grad, full.router.weight.grad, **tol, msg=f"router gradient differs ({name})"
    )
    # A sharded expert also serves the other rank's tokens, so its gradient is the sum over ranks of
    # the all-local layer's gradient for that expert (what data parallelism would all-reduce).
    summed = {}
    for e, expert in enumerate(full.experts):  # the same all-reduces, in the same order, on every rank
        for pname, p in expert.named_parameters():
            summed[e, pname] = torch.zeros_like(p) if p.grad is None else p.grad.clone()
            dist.all_reduce(summed[e, pname])
    for j, expert in enumerate(sharded.experts):
        for pname, p in expert.named_parameters():
            torch.testing.assert_close(
                p.grad, summed[rank * local + j, pname], **tol, msg=f"expert {rank * local + j} {pname} ({name})"
            )
    assert torch.equal(stats_s.expert_load, stats_f.expert_load), name
    assert torch.equal(stats_s.dropped_fraction, stats_f.dropped_fraction), name
    if skew:
        assert stats_f.dropped_fraction.item() > 0, name


def _worker(rank: int, port: int):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        for case in CASES:
            for training in (True, False):
                _check_case(rank, *case, training)
        with pytest.raises(ValueError, match=r"n_experts \(3\) must be divisible by the expert-parallel size \(2\)"):
            SwitchMoE(D_MODEL, D_FF, 3, process_group=dist.group.WORLD)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_expert_parallel_matches_all_local_layer():
    mp.spawn(_worker, args=(_free_port(),), nprocs=WORLD, join=True)
