"""Wrap a finished model in a DeepSpeed engine, in a fixed order:

1. the distributed backend (gloo on CPU, NCCL on GPU) is initialised through DeepSpeed,
   which also adopts a process group Ray Train already created;
2. activation checkpointing, if asked for, wraps each transformer block;
3. ``deepspeed.initialize`` takes the model, our torch optimizer and LR schedule, and the
   config dict of :func:`raylm.parallel.deepspeed_config.deepspeed_config`.
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

    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")


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
                 scheduler) -> deepspeed.DeepSpeedEngine:  # noqa: F821
    import deepspeed

    if cfg.parallel.activation_checkpointing:
        apply_activation_checkpointing(model)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(cfg, plan))
    return engine
