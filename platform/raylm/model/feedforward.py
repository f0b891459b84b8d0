"""Position-wise feed-forward network with the activations the model config names.

``swiglu`` is the gated unit of Shazeer (2020), "GLU Variants Improve Transformer",
eq. 6: ``FFN(x) = (Swish(x W) * x V) W2``. The others are the classic two-layer FFN of
Vaswani et al. (2017), eq. 2, with the activation swapped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "swiglu", "leaky_relu")


def activation_fn(name: str):
    """The element-wise nonlinearity for ``name`` (for swiglu: the SiLU of its gate)."""
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "leaky_relu":
        return lambda x: F.leaky_relu(x, negative_slope=0.01)
    if name == "swiglu":
        return F.silu
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


class FeedForward(nn.Module):
    """``d_model -> d_ff -> d_model``; the output projection is ``w_out`` (scaled init applies to it)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", bias: bool = True):
        super().__init__()
        self.gated = activation == "swiglu"
        self.act = activation_fn(activation)
        self.w_in = nn.Linear(d_model, d_ff, bias=bias)
        self.w_gate = nn.Linear(d_model, d_ff, bias=bias) if self.gated else None
        self.w_out = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            return self.w_out(self.act(self.w_gate(x)) * self.w_in(x))
        return self.w_out(self.act(self.w_in(x)))


def feedforward_params(d_model: int, d_ff: int, activation: str, bias: bool) -> int:
    """Parameter count of :class:`FeedForward` without building it."""
    matrices = 3 if activation == "swiglu" else 2
    biases = ((2 if activation == "swiglu" else 1) * d_ff + d_model) if bias else 0
    return matrices * d_model * d_ff + biases
