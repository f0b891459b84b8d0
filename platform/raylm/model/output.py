"""What a model returns when asked for its loss, and how the loss is assembled."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from raylm.config import ModelConfig
from raylm.model.moe import MoEStats

IGNORE_INDEX = -100


@dataclass
class ModelOutput:
    """``loss`` is what training minimises: ``lm_loss`` plus the weighted MoE losses."""

    logits: torch.Tensor
    loss: torch.Tensor
    lm_loss: torch.Tensor
    aux_loss: torch.Tensor
    moe_stats: list[MoEStats] = field(default_factory=list)
    extra_logits: torch.Tensor | None = None  # BERT's next-sentence logits


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over target positions that are not ``IGNORE_INDEX`` (fp32)."""
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def moe_aux_loss(cfg: ModelConfig, stats: list[MoEStats], like: torch.Tensor) -> torch.Tensor:
    """``sum over MoE layers of aux_loss_coef * aux + z_loss_coef * z`` (Switch eq. 4; ST-MoE eq. 5)."""
    total = like.new_zeros((), dtype=torch.float32)
    for s in stats:
        total = total + cfg.moe.aux_loss_coef * s.aux_loss + cfg.moe.z_loss_coef * s.z_loss
    return total


def assemble(cfg: ModelConfig, logits: torch.Tensor, lm_loss: torch.Tensor, stats: list[MoEStats],
             extra_logits: torch.Tensor | None = None) -> ModelOutput:
    aux = moe_aux_loss(cfg, stats, lm_loss)
    return ModelOutput(logits=logits, loss=lm_loss + aux, lm_loss=lm_loss, aux_loss=aux, moe_stats=stats,
                       extra_logits=extra_logits)
