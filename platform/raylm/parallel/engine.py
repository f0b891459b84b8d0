"""Wrap a finished model in a DeepSpeed engine, in a fixed order:

1. the distributed backend (gloo on CPU, NCCL on GPU) is initialised through DeepSpeed,
   which also adopts a process group Ray Train already created;
2. the model is built: a pipeline stage (``pp > 1``), or the whole model with its experts
   sharded over the expert-parallel group (``ep > 1``), its layers split over the tensor group
   (``tp > 1``, :mod:`raylm.parallel.tensor`) and its attention made to work on sequence slices
   (``sp > 1``, :mod:`raylm.parallel.sequence`); the groups (:mod:`raylm.parallel.groups`) become
   DeepSpeed's ``mpu``, so that gradients are averaged over the ranks holding the same weights;
3. activation checkpointing, if asked for, wraps each transformer block;
4. expert parameters are marked for DeepSpeed's expert-data-parallel gradient reduction;
5. ``deepspeed.initialize`` takes the model, our torch optimizer and LR schedule, and the
   config dict of :func:`raylm.parallel.deepspeed_config.deepspeed_config`;
6. with ``train.compile``, the engine compiles its module in place (``engine.compile()``:
   ``nn.Module.compile`` with the accelerator's backend, Inductor), so parameter names, ZeRO's
   hooks, checkpoints and the export are the same as without it.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from raylm.config import RunConfig
from raylm.parallel.deepspeed_config import deepspeed_config
from raylm.parallel.plan import ParallelPlan


def init_distributed(use_gpu: bool) -> None:
    import deepspeed

    if not use_gpu:
        skip_shared_memory_all_reduce()
    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")


def skip_shared_memory_all_reduce() -> None:
    """Keep DeepSpeed's CPU backend from compiling and loading its shared-memory all-reduce.

    When a process group starts on the CPU accelerator, DeepSpeed JIT-compiles ``deepspeed_shm_comm``
    (about 40 s on 2 cores, once per machine and virtual environment, paid by a new user's first run and by
    every fresh CI machine; a worker killed during the build leaves its file lock held and every later run
    waits on it). The op serves only ``deepspeed.comm.inference_all_reduce``; training reduces through
    ``torch.distributed`` (gloo), so nothing here uses it. DeepSpeed reads ``ops.__compatible_ops__`` (a dict
    it keeps for the process, meant to be edited) before building an op: marked incompatible, it is skipped.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass (Chen et al. 2016).

    The block's ``forward`` is replaced on the instance, so parameter names (and with them
    checkpoints) are the same with and without it.
    """
    from raylm.model.blocks import Block

    for module in model.modules():
        if isinstance(module, Block):
            original = module.forward
            module.forward = functools.partial(checkpoint, original, use_reentrant=False)


def build_engine(cfg: RunConfig, plan: ParallelPlan, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler, mpu=None) -> deepspeed.DeepSpeedEngine:  # noqa: F821
    import deepspeed

    from raylm.parallel.experts import fix_expert_grad_clipping, prepare_expert_parallel

    if cfg.train.compile and plan.pp > 1:
        raise ValueError("train.compile works with parallel.pp = 1 only (DeepSpeed's pipeline engine runs the "
                         "stages' layers itself); set train.compile=false or parallel.pp=1")
    if cfg.parallel.activation_checkpointing and plan.pp == 1:  # the pipeline module checkpoints its own blocks
        apply_activation_checkpointing(model)
    prepare_expert_parallel(model, optimizer, plan)  # marks experts, splits param groups (ep > 1 only)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, mpu=mpu,
                                           config=deepspeed_config(cfg, plan))
    fix_expert_grad_clipping(engine, plan)  # ZeRO 0 fp32 with ep > 1: clip by the exact global norm
    if plan.world_size == 1 and plan.zero_stage == 0:
        # one rank has nothing to average, but DeepSpeed would still flatten every gradient, all-reduce it over
        # a group of one and copy it back at each step: a tenth of a tiny model's step on a CPU
        engine.enable_backward_allreduce = False
    if cfg.train.compile:
        engine.compile()  # traced and compiled at the first forward pass, not here
    return engine


def make_training_engine(cfg: RunConfig, plan: ParallelPlan, make_optimizer, make_scheduler):
    """The model for this rank (the whole model, or its pipeline stage when ``pp > 1``), with the
    optimizer ``make_optimizer(model)`` and schedule ``make_scheduler(optimizer)`` (the training room's,
    :func:`raylm.train.optimizers.optimizer_factories`), inside a DeepSpeed engine. Call after
    :func:`init_distributed` and after seeding torch with ``train.seed`` (every rank builds identical
    initial weights). The tensor and sequence groups, if any, are the engine's ``mpu``."""
    from raylm.model import build_model
    from raylm.parallel.experts import expert_parallel_group, reinit_dense, reinit_experts
    from raylm.parallel.pipeline import build_pipeline_module

    if plan.pp > 1:
        model = build_pipeline_module(cfg, plan)
    else:
        model = build_model(cfg.model, expert_group=expert_parallel_group(plan.ep))
        if cfg.model.moe.n_experts:  # the same initial weights whatever ep is: drawn per global expert id
            reinit_experts(model, cfg.train.seed)
            reinit_dense(model, cfg.train.seed)
    groups = split_model(cfg, plan, model)
    return build_engine(cfg, plan, model, make_optimizer(model), make_scheduler, mpu=groups)


def split_model(cfg: RunConfig, plan: ParallelPlan, model: nn.Module):
    """Split ``model`` in place over its tensor and sequence groups; the groups (DeepSpeed's ``mpu``),
    or None when the plan has neither. Every rank must call it (it creates the groups)."""
    if not plan.model_parallel:
        return None
    import torch.distributed as dist

    from raylm.parallel.groups import ModelParallelGroups
    from raylm.parallel.sequence import shard_sequence_parallel
    from raylm.parallel.tensor import shard_tensor_parallel

    groups = ModelParallelGroups(dist.get_rank(), plan.world_size, plan.tp, plan.sp)
    if plan.tp > 1:
        shard_tensor_parallel(model, groups.group("tensor"), groups.coords.tp_rank, plan.tp)
    if plan.sp > 1:
        shard_sequence_parallel(model, groups.group("sequence"), groups.coords.sp_rank, plan.sp, plan.seq_len)
    return groups
