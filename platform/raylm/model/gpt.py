"""GPT: a decoder-only causal language model (Radford et al. 2018, 2019).

``model(ids)`` returns next-token logits ``(batch, seq, vocab)``;
``model(ids, targets)`` returns a :class:`~raylm.model.output.ModelOutput` whose loss
is the mean cross-entropy of ``targets`` plus any MoE auxiliary losses.
"""

from __future__ import annotations

import torch
from torch import nn

from raylm.config import ModelConfig
from raylm.model.attention import LayerCache
from raylm.model.blocks import Block, Embeddings, init_weights, make_norm
from raylm.model.output import ModelOutput, assemble, token_cross_entropy
from raylm.model.output_projection import OutputProjection


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig, expert_group=None):
        super().__init__()
        self.cfg = cfg
        self.embed = Embeddings(cfg)
        self.blocks = nn.ModuleList(Block(cfg, i, causal=True, expert_group=expert_group) for i in range(cfg.n_layers))
        self.final_norm = make_norm(cfg) if cfg.norm_position == "pre" else None
        self.lm_head = OutputProjection(cfg.d_model, cfg.vocab_size)
        init_weights(self, cfg, cfg.n_layers)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.tokens.weight

    def new_cache(self) -> list[tuple[LayerCache, LayerCache]]:
        """An empty key-value cache for :func:`raylm.model.generate.generate`."""
        return [(LayerCache(), LayerCache()) for _ in self.blocks]

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None,
                cache: list[tuple[LayerCache, LayerCache]] | None = None) -> torch.Tensor | ModelOutput:
        start = cache[0][0].length if cache else 0
        x = self.embed(ids, start=start)
        stats = []
        for i, block in enumerate(self.blocks):
            x, moe_stats = block(x, cache=cache[i] if cache else None)
            if moe_stats is not None:
                stats.append(moe_stats)
        if self.final_norm is not None:
            x = self.final_norm(x)
        logits = self.lm_head(x)
        if targets is None:
            return logits
        return assemble(self.cfg, logits, token_cross_entropy(logits, targets), stats)
