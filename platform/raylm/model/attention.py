"""Multi-head attention with grouped-query heads, RoPE/ALiBi and a key-value cache.

Scores go through ``torch.nn.functional.scaled_dot_product_attention``
(Vaswani et al. 2017, eq. 1). Grouped-query attention (Ainslie et al. 2023) shares
each key/value head across ``n_heads / n_kv_heads`` query heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from raylm.config import ModelConfig
from raylm.model.positional import alibi_bias, alibi_slopes, apply_rope, rope_angles


@dataclass
class LayerCache:
    """Keys and values seen so far by one attention layer (``batch, kv_heads, seq, head_dim``)."""

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]


class Attention(nn.Module):
    """Self- or cross-attention. ``o_proj`` is the residual output projection (scaled init applies)."""

    def __init__(self, cfg: ModelConfig, causal: bool, cross: bool = False):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.causal, self.cross = causal, cross
        self.dropout = cfg.attn_dropout
        self.rope_theta = cfg.rope_theta if cfg.pos_encoding == "rope" and not cross else None
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=cfg.bias)
        use_alibi = cfg.pos_encoding == "alibi" and not cross
        self.register_buffer("alibi", alibi_slopes(cfg.n_heads) if use_alibi else None, persistent=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, key_mask: torch.Tensor | None = None,
                cache: LayerCache | None = None) -> torch.Tensor:
        """``x``: ``(batch, seq, d_model)``. ``context``: the encoder output for cross-attention.

        ``key_mask``: ``(batch, keys)`` bool, True where a key may be attended (padding
        otherwise). ``cache``: extended in place with this call's keys and values (for
        cross-attention it holds the projected context after the first call).
        """
        batch, q_len, _ = x.shape
        past = cache.length if cache is not None and not self.cross else 0
        q = self._heads(self.q_proj(x), self.n_heads)
        k, v = self._keys_values(x if context is None else context, cache)
        out = self.attend(q, k, v, past, key_mask, keys_rotated=cache is not None)
        return self.o_proj(out.transpose(1, 2).reshape(batch, q_len, -1))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int = 0,
               key_mask: torch.Tensor | None = None, keys_rotated: bool = False) -> torch.Tensor:
        """Scaled dot-product attention of ``q`` (``batch, heads, q_len, head_dim``; positions from
        ``past``) over ``k``, ``v`` (``batch, kv_heads, keys, head_dim``; positions from 0), with the
        module's position encoding and masks; returns ``(batch, heads, q_len, head_dim)``."""
        q_len = q.shape[2]
        q_pos = torch.arange(past, past + q_len, device=q.device)
        k_pos = torch.arange(k.shape[2], device=q.device)
        if self.rope_theta is not None:
            q = apply_rope(q, *rope_angles(q_pos, self.head_dim, self.rope_theta))
            k = k if keys_rotated else apply_rope(k, *rope_angles(k_pos, self.head_dim, self.rope_theta))
        repeat = self.n_heads // self.n_kv_heads
        if repeat > 1:
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        mask = self._mask(q_pos, k_pos, key_mask, q.dtype)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal and mask is None and q_len > 1,
        )

    def _heads(self, t: torch.Tensor, n: int) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], n, self.head_dim).transpose(1, 2)

    def _keys_values(self, source: torch.Tensor, cache: LayerCache | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cross and cache is not None and cache.keys is not None:
            return cache.keys, cache.values
        k = self._heads(self.k_proj(source), self.n_kv_heads)
        v = self._heads(self.v_proj(source), self.n_kv_heads)
        if cache is None:
            return k, v
        if self.rope_theta is not None:  # cache rotated keys: positions continue from the cache
            k_pos = torch.arange(cache.length, cache.length + k.shape[2], device=k.device)
            k = apply_rope(k, *rope_angles(k_pos, self.head_dim, self.rope_theta))
        if not self.cross and cache.keys is not None:
            k, v = torch.cat([cache.keys, k], dim=2), torch.cat([cache.values, v], dim=2)
        cache.keys, cache.values = k, v
        return k, v

    def _mask(self, q_pos: torch.Tensor, k_pos: torch.Tensor, key_mask: torch.Tensor | None,
              dtype: torch.dtype) -> torch.Tensor | None:
        """An additive float mask, or None when ``is_causal`` (or nothing) suffices."""
        needs_offset = self.causal and len(q_pos) > 1 and len(k_pos) != len(q_pos)
        if self.alibi is None and key_mask is None and not needs_offset:
            return None
        bias = torch.zeros(len(q_pos), len(k_pos), device=q_pos.device, dtype=torch.float32)
        if self.alibi is not None:
            bias = alibi_bias(self.alibi, q_pos, k_pos, self.causal)
        if self.causal:
            bias = bias.masked_fill(k_pos.unsqueeze(0) > q_pos.unsqueeze(-1), float("-inf"))
        if key_mask is not None:
            bias = bias + torch.zeros_like(key_mask, dtype=torch.float32).masked_fill(~key_mask, float("-inf"))[
                :, None, None, :
            ]
        return bias.to(dtype)
