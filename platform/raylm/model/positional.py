"""Positional encodings: sinusoidal table, rotary embeddings (RoPE) and ALiBi biases.

- Sinusoidal: Vaswani et al. (2017), section 3.5:
  ``PE[pos, 2i] = sin(pos / 10000^(2i/d))``, ``PE[pos, 2i+1] = cos(pos / 10000^(2i/d))``.
- RoPE: Su et al. (2021), "RoFormer", eq. 34: each pair of query/key channels
  ``(x_{2i}, x_{2i+1})`` is rotated by the angle ``pos * theta^(-2i/d)``, so that
  ``<R_m q, R_n k>`` depends only on ``m - n``.
- ALiBi: Press et al. (2022), "Train Short, Test Long", section 3: head ``h`` adds
  ``-m_h * (i - j)`` to the score of query ``i`` and key ``j``; for ``n`` heads (a
  power of two) the slopes are the geometric sequence starting at ``2^(-8/n)`` with
  that ratio; other head counts interleave the next power of two's slopes.
"""

from __future__ import annotations

import math

import torch


def sinusoidal_table(n_positions: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """``(n_positions, dim)`` table of Vaswani et al. (2017), eq. in section 3.5."""
    position = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: dim // 2])
    return table.float()


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` of the RoPE angles, each ``(len(positions), head_dim // 2)``."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    angles = positions.float().unsqueeze(-1) * inv_freq
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of ``x`` (``batch, heads, seq, head_dim``) by the given angles."""
    x_even, x_odd = x[..., 0::2].float(), x[..., 1::2].float()
    rotated_even = x_even * cos - x_odd * sin
    rotated_odd = x_even * sin + x_odd * cos
    return torch.stack((rotated_even, rotated_odd), dim=-1).flatten(-2).to(x.dtype)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Per-head slopes of Press et al. (2022); for 8 heads: 1/2, 1/4, ..., 1/256."""

    def power_of_two_slopes(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        return torch.tensor(power_of_two_slopes(n_heads))
    closest = 2 ** math.floor(math.log2(n_heads))
    extra = power_of_two_slopes(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(power_of_two_slopes(closest) + extra)


def alibi_bias(slopes: torch.Tensor, q_positions: torch.Tensor, k_positions: torch.Tensor,
               causal: bool) -> torch.Tensor:
    """``(heads, q, k)`` additive bias ``-m_h * distance``; symmetric ``|i - j|`` when not causal."""
    distance = q_positions.unsqueeze(-1) - k_positions.unsqueeze(0)
    distance = distance if causal else distance.abs()
    return -slopes.view(-1, 1, 1).to(q_positions.device) * distance.clamp(min=0).float()
