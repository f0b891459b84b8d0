"""Transformer models in pure torch: GPT, BERT and T5 from one set of parts.

``build_model(cfg)`` makes the model a :class:`~raylm.config.ModelConfig` describes.
This package imports no ray, deepspeed or torch.distributed (the expert-parallel
all-to-all in :mod:`raylm.model.moe` takes a process group as an argument).
"""

from __future__ import annotations

from torch import nn

from raylm.config import ModelConfig


def build_model(cfg: ModelConfig, expert_group=None) -> nn.Module:
    """The model ``cfg`` describes; MoE layers shard their experts over ``expert_group`` if given."""
    from raylm.model.bert import BERT
    from raylm.model.gpt import GPT
    from raylm.model.t5 import T5

    return {"gpt": GPT, "bert": BERT, "t5": T5}[cfg.arch](cfg, expert_group=expert_group)


__all__ = ["build_model"]
