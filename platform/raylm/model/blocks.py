"""The shared parts: normalisation, embeddings, the transformer block and weight init.

A block is self-attention, optional cross-attention (T5's decoder) and a feed-forward
network (dense, or Switch MoE on every ``moe.every``-th layer), each a residual branch.
Pre-norm (Xiong et al. 2020) normalises each branch's input; post-norm (Vaswani et
al. 2017; BERT) normalises after each residual sum.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from raylm.config import ModelConfig
from raylm.model.attention import Attention, LayerCache
from raylm.model.feedforward import FeedForward
from raylm.model.moe import MoEStats, SwitchMoE
from raylm.model.positional import sinusoidal_table


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":  # Zhang & Sennrich (2019), eq. 4
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


def is_moe_layer(cfg: ModelConfig, layer_idx: int) -> bool:
    """Layers ``every, 2*every, ...`` (1-based) replace their FFN by experts."""
    return cfg.moe.n_experts > 0 and (layer_idx + 1) % cfg.moe.every == 0


class Block(nn.Module):
    """One transformer layer. ``forward`` returns the new hidden state and the MoE stats (or None).

    ``expert_group``: the expert-parallel process group an MoE layer shards its experts over
    (None: all experts local).
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int, causal: bool, cross: bool = False, expert_group=None):
        super().__init__()
        self.pre_norm = cfg.norm_position == "pre"
        self.attn_norm, self.attn = make_norm(cfg), Attention(cfg, causal=causal)
        self.cross_norm = make_norm(cfg) if cross else None
        self.cross_attn = Attention(cfg, causal=False, cross=True) if cross else None
        self.ffn_norm = make_norm(cfg)
        if is_moe_layer(cfg, layer_idx):
            moe = cfg.moe
            self.ffn = SwitchMoE(cfg.d_model, cfg.d_ff, moe.n_experts, top_k=moe.top_k,
                                 capacity_factor=moe.capacity_factor, eval_capacity_factor=moe.eval_capacity_factor,
                                 router_jitter=moe.router_jitter, activation=cfg.activation, bias=cfg.bias,
                                 process_group=expert_group)
        else:
            self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation, cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, cache: tuple[LayerCache, LayerCache] | None = None,
                ) -> tuple[torch.Tensor, MoEStats | None]:
        self_cache, cross_cache = cache if cache is not None else (None, None)
        x = self._residual(x, self.attn_norm, lambda h: self.attn(h, key_mask=key_mask, cache=self_cache))
        if self.cross_attn is not None:
            x = self._residual(x, self.cross_norm,
                               lambda h: self.cross_attn(h, context=context, key_mask=context_mask, cache=cross_cache))
        stats = []

        def feed_forward(h: torch.Tensor) -> torch.Tensor:
            if isinstance(self.ffn, SwitchMoE):
                out, moe_stats = self.ffn(h)
                stats.append(moe_stats)
                return out
            return self.ffn(h)

        x = self._residual(x, self.ffn_norm, feed_forward)
        return x, (stats[0] if stats else None)

    def _residual(self, x: torch.Tensor, norm: nn.Module, branch) -> torch.Tensor:
        if self.pre_norm:
            return x + self.drop(branch(norm(x)))
        return norm(x + self.drop(branch(x)))


class Embeddings(nn.Module):
    """Token embeddings plus the absolute position encoding (learned or sinusoidal), if any.

    BERT's segment embeddings are added when ``segments`` is set. Post-norm models
    normalise the sum (as BERT does); pre-norm models leave it to the final norm.
    """

    def __init__(self, cfg: ModelConfig, segments: int = 0):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.positions = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.pos_encoding == "learned" else None
        table = sinusoidal_table(cfg.max_seq_len, cfg.d_model) if cfg.pos_encoding == "sinusoidal" else None
        self.register_buffer("sinusoid", table, persistent=False)
        self.segments = nn.Embedding(segments, cfg.d_model) if segments else None
        self.norm = make_norm(cfg) if cfg.norm_position == "post" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.max_seq_len = cfg.max_seq_len

    def forward(self, ids: torch.Tensor, start: int = 0, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        end = start + ids.shape[1]
        if end > self.max_seq_len and (self.positions is not None or self.sinusoid is not None):
            raise ValueError(f"sequence of {end} tokens exceeds max_seq_len ({self.max_seq_len})")
        x = self.tokens(ids)
        if self.positions is not None:
            x = x + self.positions(torch.arange(start, end, device=ids.device))
        if self.sinusoid is not None:
            x = x + self.sinusoid[start:end].to(x.dtype)
        if self.segments is not None:
            x = x + self.segments(segment_ids if segment_ids is not None else torch.zeros_like(ids))
        if self.norm is not None:
            x = self.norm(x)
        return self.drop(x)


def init_weights(model: nn.Module, cfg: ModelConfig, n_layers: int) -> None:
    """GPT-2 init (Radford et al. 2019, section 2.3): N(0, std) weights, zero biases, and
    residual output projections scaled by ``1/sqrt(2 * n_layers)`` when ``scaled_init``."""
    residual_std = cfg.init_std / math.sqrt(2 * n_layers) if cfg.scaled_init else cfg.init_std
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            is_residual_out = name.endswith(("o_proj", "w_out"))
            nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual_out else cfg.init_std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
