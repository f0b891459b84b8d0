"""Expert-parallel training through DeepSpeed equals the ep=1 run: 2 gloo processes, dp 2.

For 2 and 4 experts and ZeRO stages 0, 1 and 2, a tiny MoE GPT trains 3 optimizer steps (2
micro-batches each) on fixed per-rank token batches, once with ep=1 (every rank holds every expert)
and once with ep=2 (each rank holds half of them, tokens travel by all-to-all). The per-step global
losses, each MoE layer's routing decisions and expert loads, the gradient norms and the final weights
(the ep=2 experts gathered from both ranks) must agree within rtol 1e-5. SGD makes the update
proportional to the gradient, so a wrongly scaled expert gradient would show; the gradient clip is set
below the gradient norm so that it binds. Control runs with ep=2 but without
``prepare_expert_parallel`` (DeepSpeed then averages different experts together) or without
``fix_expert_grad_clipping`` (ZeRO 0 then clips by a mean of local norms) must differ. Last, an ep=2
checkpoint (ZeRO 0 and 2) must restore every rank's experts and resume exactly.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raylm.config import RunConfig
from raylm.model import build_model
from raylm.parallel.deepspeed_config import deepspeed_config
from raylm.parallel.engine import init_distributed
from raylm.parallel.experts import (
    expert_load_fn,
    expert_parallel_group,
    fix_expert_grad_clipping,
    full_state_dict,
    global_grad_norm,
    moe_layers,
    prepare_expert_parallel,
    reinit_dense,
    reinit_experts,
    save_local_experts,
)
from raylm.parallel.plan import make_plan
from raylm.train.moe_metrics import moe_metrics
from raylm.train.optimizers import build_optimizer, build_scheduler

WORLD, STEPS, MICRO, SEQ, VOCAB = 2, 3, 2, 16, 64
TOL = dict(rtol=1e-5, atol=1e-7)


@dataclass
class Run:
    losses: list[float]
    routes: list[list[torch.Tensor]]  # per micro-batch, per MoE layer: argmax expert id per token
    loads: list[list[torch.Tensor]]   # per micro-batch, per MoE layer: MoEStats.expert_load
    grad_norms: list[float]
    state: dict[str, torch.Tensor]    # the equivalent ep=1 model's weights after training
    metrics: dict[str, float]


def _config(n_experts: int, zero_stage: int, ep: int) -> RunConfig:
    return RunConfig.from_dict({
        "model": {"arch": "gpt", "vocab_size": VOCAB, "d_model": 32, "n_layers": 2, "n_heads": 4,
                  "max_seq_len": SEQ, "moe": {"n_experts": n_experts, "every": 1}},
        "parallel": {"num_workers": WORLD, "zero_stage": zero_stage, "ep": ep},
        "optim": {"name": "momentum", "momentum": 0.9, "weight_decay": 0.01},
        "train": {"lr": 0.5, "warmup_steps": 0, "max_steps": STEPS, "micro_batch_size": MICRO,
                  "global_batch_size": 2 * MICRO * WORLD, "seq_len": SEQ, "grad_clip": 0.5, "seed": 3},
    })


def _batch(rank: int, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * rank + 10 * step + micro)
    tokens = torch.randint(VOCAB, (MICRO, SEQ + 1), generator=gen)
    return tokens[:, :-1], tokens[:, 1:]


def _engine(cfg: RunConfig, prepare: bool = True, fix_clip: bool = True):
    """The integration order of :mod:`raylm.parallel.experts`, as the training loop runs it."""
    import deepspeed

    plan = make_plan(cfg, WORLD)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, expert_group=expert_parallel_group(plan.ep))
    reinit_experts(model, cfg.train.seed)
    reinit_dense(model, cfg.train.seed)
    optimizer = build_optimizer(cfg, model)
    if prepare:
        prepare_expert_parallel(model, optimizer, plan)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                           lr_scheduler=lambda opt: build_scheduler(cfg, opt),
                                           config=deepspeed_config(cfg, plan))
    if fix_clip:
        fix_expert_grad_clipping(engine, plan)
    return engine, plan


def _step(engine, plan, rank: int, step: int, on_boundary=None) -> tuple[float, list]:
    """One optimizer step of ``grad_accum`` micro-batches; the loss averaged over micro-batches and ranks."""
    total, stats = torch.zeros((), dtype=torch.float64), []
    for micro in range(plan.grad_accum):
        out = engine(*_batch(rank, step, micro))
        engine.backward(out.loss)
        if on_boundary is not None and engine.is_gradient_accumulation_boundary():
            on_boundary()
        engine.step()
        total += out.loss.item() / plan.grad_accum
        stats.append(out.moe_stats)
    dist.all_reduce(total)
    return total.item() / WORLD, stats


def _train(rank: int, n_experts: int, zero_stage: int, ep: int, **controls) -> Run:
    engine, plan = _engine(_config(n_experts, zero_stage, ep), **controls)
    model, group = engine.module, expert_parallel_group(plan.ep)
    routes = []
    hooks = [layer.register_forward_pre_hook(
        lambda layer, args: routes[-1].append(layer.router_logits(args[0].reshape(-1, args[0].shape[-1])).argmax(-1)))
        for layer in moe_layers(model)]
    pre_hook = model.register_forward_pre_hook(lambda module, args: routes.append([]))
    losses, loads, norms = [], [], []
    for step in range(STEPS):
        on_boundary = None  # ZeRO 0 in fp32 keeps no norm unless ep > 1; measure the reduced gradients
        if zero_stage == 0:
            on_boundary = lambda: norms.append(global_grad_norm(model.parameters(), group).item())  # noqa: E731
        loss, stats = _step(engine, plan, rank, step, on_boundary)
        losses.append(loss)
        loads += [[s.expert_load for s in micro] for micro in stats]
        if zero_stage > 0:
            norms.append(float(engine.get_global_grad_norm()))
    for hook in [*hooks, pre_hook]:
        hook.remove()
    return Run(losses, routes, loads, norms, full_state_dict(model), moe_metrics(stats[-1]))


def _check_resume(rank: int, zero_stage: int, directory: str) -> None:
    """A checkpoint of an ep=2 run restores every rank's experts: the resumed step equals the continued one."""
    cfg = _config(4, zero_stage, ep=2)
    engine, plan = _engine(cfg)
    _step(engine, plan, rank, 0)
    engine.save_checkpoint(directory, tag="ckpt")
    save_local_experts(engine.module, directory, rank)
    saved = full_state_dict(engine.module)
    continued, _ = _step(engine, plan, rank, 1)
    resumed_engine, _ = _engine(cfg)
    resumed_engine.load_checkpoint(directory, tag="ckpt", load_optimizer_states=True, load_lr_scheduler_states=True,
                                   custom_load_fn=expert_load_fn(resumed_engine.module, directory))
    _assert_states_close(f"zero={zero_stage}, loaded", full_state_dict(resumed_engine.module), saved, rtol=0, atol=0)
    resumed, _ = _step(resumed_engine, plan, rank, 1)
    assert resumed == pytest.approx(continued, rel=1e-6), f"zero={zero_stage}: {resumed} != {continued}"
    _assert_states_close(f"zero={zero_stage}, resumed", full_state_dict(resumed_engine.module),
                         full_state_dict(engine.module), **TOL)


def _assert_states_close(name: str, state: dict, expected: dict, **tol) -> None:
    assert state.keys() == expected.keys(), name
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, **tol, msg=lambda m, key=key: f"{name}: {key}: {m}")


def _compare(name: str, ref: Run, run: Run) -> None:
    torch.testing.assert_close(run.losses, ref.losses, **TOL, msg=lambda m: f"{name}: losses: {m}")
    for i, (a, b) in enumerate(zip(run.routes, ref.routes, strict=True)):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), f"{name}: routing differs, micro {i}"
    torch.testing.assert_close(run.loads, ref.loads, **TOL, msg=lambda m: f"{name}: expert load: {m}")
    torch.testing.assert_close(run.grad_norms, ref.grad_norms, **TOL, msg=lambda m: f"{name}: grad norm: {m}")
    _assert_states_close(name, run.state, ref.state, **TOL)


def _worker(rank: int, port: int, directory: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD))
    init_distributed(use_gpu=False)
    for n_experts in (2, 4):
        for zero_stage in (0, 1, 2):
            name = f"n_experts={n_experts}, zero={zero_stage}, rank {rank}"
            ref = _train(rank, n_experts, zero_stage, ep=1)
            run = _train(rank, n_experts, zero_stage, ep=2)
            _compare(name, ref, run)
            assert max(ref.grad_norms) > 0.5, f"{name}: the clip should bind: norms {ref.grad_norms}"
            loads = [run.metrics[f"moe/layer{layer}/expert{e}_load"] for layer in range(2) for e in range(n_experts)]
            assert len(loads) == 2 * n_experts and abs(sum(loads) - 2.0) < 1e-5, f"{name}: {run.metrics}"
            if n_experts == 4 and zero_stage == 0:  # the test sees what each step of the integration fixes
                for control in ("prepare", "fix_clip"):
                    state = _train(rank, n_experts, zero_stage, ep=2, **{control: False}).state
                    assert any(not torch.allclose(state[k], ref.state[k], **TOL) for k in ref.state), \
                        f"{name}: training without {control} should not match ep=1"
    for zero_stage in (0, 2):
        _check_resume(rank, zero_stage, os.path.join(directory, f"zero{zero_stage}"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_expert_parallel_training_matches_ep1(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
