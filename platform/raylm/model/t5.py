"""T5: an encoder-decoder transformer (Raffel et al. 2020, section 3.1), trained on span
corruption (:func:`raylm.model.objectives.span_corruption`).

Encoder and decoder share the token embedding (and the output projection when tied).
``model(ids, decoder_ids)`` returns decoder logits; with ``targets`` it returns a
:class:`~raylm.model.output.ModelOutput`.
"""

from __future__ import annotations

import torch
from torch import nn

from raylm.config import ModelConfig
from raylm.model.attention import LayerCache
from raylm.model.blocks import Block, Embeddings, init_weights, make_norm
from raylm.model.output import ModelOutput, assemble, token_cross_entropy
from raylm.model.output_projection import OutputProjection


class T5(nn.Module):
    def __init__(self, cfg: ModelConfig, expert_group=None):
        super().__init__()
        self.cfg = cfg
        self.embed = Embeddings(cfg)
        self.encoder = nn.ModuleList(
            Block(cfg, i, causal=False, expert_group=expert_group) for i in range(cfg.n_layers))
        self.decoder = nn.ModuleList(
            Block(cfg, i, causal=True, cross=True, expert_group=expert_group) for i in range(cfg.n_decoder_layers))
        pre = cfg.norm_position == "pre"
        self.encoder_norm = make_norm(cfg) if pre else None
        self.decoder_norm = make_norm(cfg) if pre else None
        self.lm_head = OutputProjection(cfg.d_model, cfg.vocab_size)
        init_weights(self, cfg, cfg.n_layers + cfg.n_decoder_layers)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.tokens.weight

    def new_cache(self) -> list[tuple[LayerCache, LayerCache]]:
        """Self-attention and cross-attention caches for each decoder layer."""
        return [(LayerCache(), LayerCache()) for _ in self.decoder]

    def encode(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list]:
        key_mask = attention_mask.bool() if attention_mask is not None else None
        x, stats = self.embed(ids), []
        for block in self.encoder:
            x, moe_stats = block(x, key_mask=key_mask)
            stats += [moe_stats] if moe_stats is not None else []
        return (self.encoder_norm(x) if self.encoder_norm is not None else x), stats

    def decode(self, decoder_ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None,
               cache: list[tuple[LayerCache, LayerCache]] | None = None) -> tuple[torch.Tensor, list]:
        """Decoder logits for ``decoder_ids`` attending to the encoder output ``memory``."""
        start = cache[0][0].length if cache else 0
        x, stats = self.embed(decoder_ids, start=start), []
        context_mask = memory_mask.bool() if memory_mask is not None else None
        for i, block in enumerate(self.decoder):
            x, moe_stats = block(x, context=memory, context_mask=context_mask, cache=cache[i] if cache else None)
            stats += [moe_stats] if moe_stats is not None else []
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        return self.lm_head(x), stats

    def forward(self, ids: torch.Tensor, decoder_ids: torch.Tensor, targets: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor | ModelOutput:
        memory, enc_stats = self.encode(ids, attention_mask)
        logits, dec_stats = self.decode(decoder_ids, memory, attention_mask)
        if targets is None:
            return logits
        return assemble(self.cfg, logits, token_cross_entropy(logits, targets), enc_stats + dec_stats)
