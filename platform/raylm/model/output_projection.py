"""The output projection: hidden states (tokens x d_model) to vocabulary logits (tokens x vocab).

Its backward pass is two matrix products with the logits' gradient G (tokens x vocab):
``grad_x = G @ W`` and ``grad_W = G^T @ x``. Both have an output only ``d_model`` columns wide. On a
CPU, MKL's sgemm runs such products 6-9x slower when the narrow side is the output's columns than the
same product transposed, with the narrow side as its rows (measured on the 2-core reference machine,
one thread, 2048 tokens: 5.1 ms against 0.8 ms for both products at d_model 8 and vocabulary 512;
0.47-0.59x at d_model 12, 0.76-0.94x at 16, no gain from 32 up). A scaling study's smallest models
have d_model 6-16, where this was a fifth of a training step, so on a CPU :class:`OutputProjection`
computes ``grad_x = (W^T G^T)^T`` and ``grad_W = (x^T G)^T`` up to :data:`NARROW_WIDTH`: the same
products, summed in another order (per-step losses agree to float32 rounding).
"""

from __future__ import annotations

import torch
from torch import nn

NARROW_WIDTH = 16  # d_model up to which the transposed products were faster, at every vocabulary measured


class _NarrowSideFirst(torch.autograd.Function):
    """``x @ weight.T`` whose backward computes each product with the narrow (d_model) side as its rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return x @ weight.t()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])
        grad_x = (weight.t() @ rows.t()).t().reshape(x.shape) if ctx.needs_input_grad[0] else None
        grad_weight = (x.reshape(-1, x.shape[-1]).t() @ rows).t() if ctx.needs_input_grad[1] else None
        return grad_x, grad_weight


class OutputProjection(nn.Linear):
    """``nn.Linear(d_model, vocab_size, bias=False)`` (the same parameter name, ``weight``, tied or not),
    whose backward on a CPU takes the narrow-side-first products at ``d_model <= NARROW_WIDTH``."""

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__(d_model, vocab_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_features <= NARROW_WIDTH and x.device.type == "cpu" and torch.is_grad_enabled():
            return _NarrowSideFirst.apply(x, self.weight)
        return super().forward(x)
