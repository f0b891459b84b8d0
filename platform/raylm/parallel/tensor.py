"""Tensor parallelism in the style of Megatron-LM (Shoeybi et al. 2019, section 3), applied to a
finished model: the model code stays single-process.

In every transformer block the attention's query, key and value projections are split by heads
(column-parallel: each rank keeps ``n_heads / tp`` heads and ``n_kv_heads / tp`` key-value
heads), and its output projection by its input rows (row-parallel); the feed-forward network's
input (and gate) projection is split by columns of ``d_ff``, its output projection by rows. Each
rank then computes its heads and its share of ``d_ff`` alone, and one all-reduce after each
row-parallel layer sums the partial outputs (Figure 3's ``g``); in the backward pass one
all-reduce of the input gradient at the start of each branch (``f``) does the same. Everything
else (embeddings, norms, the output head, biases of row-parallel layers) is replicated, and
thanks to ``f`` and ``g`` its gradients are identical on every rank of the group.

Weights are sliced from the full model every rank builds from the same seed, so a tp run starts
from exactly the weights of a single-process run. Split parameters carry ``tensor_model_parallel``
(DeepSpeed's marker: counted on every rank in the gradient norm, the others once) and
``tp_split_dim`` (which dimension to gather them on, for the portable export).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class _CopyToGroup(torch.autograd.Function):
    """Megatron's ``f``: identity forward, all-reduce of the gradient backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _ReduceFromGroup(torch.autograd.Function):
    """Megatron's ``g``: all-reduce forward, identity backward."""

    @staticmethod
    def forward(ctx, x, group):
        x = x.contiguous()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class RowParallelLinear(nn.Module):
    """``y = all_reduce(x_r W_r^T) + b``: this rank's rows of the input, the full bias added once."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None, group):
        super().__init__()
        self.weight, self.bias, self.group = weight, bias, group
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _ReduceFromGroup.apply(F.linear(x, self.weight), self.group)
        return out + self.bias if self.bias is not None else out


def _split(param: torch.Tensor, dim: int, rank: int, size: int) -> nn.Parameter:
    part = nn.Parameter(param.detach().chunk(size, dim=dim)[rank].clone())
    part.tensor_model_parallel = True
    part.tp_split_dim = dim
    return part


def _column_parallel(linear: nn.Linear, rank: int, size: int) -> None:
    """Keep this rank's output rows (for q/k/v: whole heads, rows ``head * head_dim``, as the plan has
    checked that the heads divide by ``size``)."""
    linear.weight = _split(linear.weight, 0, rank, size)
    if linear.bias is not None:
        linear.bias = _split(linear.bias, 0, rank, size)
    linear.out_features = linear.weight.shape[0]


def _row_parallel(linear: nn.Linear, rank: int, size: int, group) -> RowParallelLinear:
    return RowParallelLinear(_split(linear.weight, 1, rank, size), linear.bias, group)


def _copy_input_to_group(group):
    """A forward pre-hook applying ``f`` to a branch's input (``x``: its first positional argument)."""

    def hook(module, args, kwargs):
        return (_CopyToGroup.apply(args[0], group), *args[1:]), kwargs

    return hook


def shard_tensor_parallel(model: nn.Module, group, rank: int, size: int) -> nn.Module:
    """Split ``model``'s attention and feed-forward layers in place over ``group`` (this process is
    ``rank`` of ``size``); returns the model. The plan (:mod:`raylm.parallel.plan`) has checked that
    heads, key-value heads and ``d_ff`` divide by ``size``."""
    from raylm.model.attention import Attention
    from raylm.model.feedforward import FeedForward

    for module in list(model.modules()):
        if isinstance(module, Attention):
            for projection in (module.q_proj, module.k_proj, module.v_proj):
                _column_parallel(projection, rank, size)
            module.o_proj = _row_parallel(module.o_proj, rank, size, group)
            if module.alibi is not None:
                module.alibi = module.alibi.chunk(size)[rank].clone()
            module.n_heads, module.n_kv_heads = module.n_heads // size, module.n_kv_heads // size
            module.register_forward_pre_hook(_copy_input_to_group(group), with_kwargs=True)
        elif isinstance(module, FeedForward):
            _column_parallel(module.w_in, rank, size)
            if module.w_gate is not None:
                _column_parallel(module.w_gate, rank, size)
            module.w_out = _row_parallel(module.w_out, rank, size, group)
            module.register_forward_pre_hook(_copy_input_to_group(group), with_kwargs=True)
    return model


def tensor_parallel_state_dict(module: nn.Module, group, size: int) -> dict[str, torch.Tensor]:
    """The full (unsplit) state dict, on every rank of ``group``: split parameters are gathered on
    their ``tp_split_dim``. Collective over the group."""
    split = {name: p for name, p in module.named_parameters() if getattr(p, "tp_split_dim", None) is not None}
    state = {}
    for name, tensor in module.state_dict().items():
        param = split.get(name)
        if param is None:
            state[name] = tensor
            continue
        parts = [torch.empty_like(param.data) for _ in range(size)]
        dist.all_gather(parts, param.data.contiguous(), group=group)
        state[name] = torch.cat(parts, dim=param.tp_split_dim)
    return state


def tensor_parallel_grad_norm(parameters, group) -> torch.Tensor:
    """The 2-norm of the whole model's gradient: split parameters summed over the group, the
    replicated ones (identical on every rank) counted once."""
    split_sq = torch.zeros((), dtype=torch.float64)
    replicated_sq = torch.zeros((), dtype=torch.float64)
    for p in parameters:
        if p.grad is None:
            continue
        sq = p.grad.detach().double().pow(2).sum().cpu()
        if getattr(p, "tensor_model_parallel", False):
            split_sq += sq
        else:
            replicated_sq += sq
    dist.all_reduce(split_sq, group=group)
    return (split_sq + replicated_sq).sqrt()


def clip_tensor_parallel(parameters, groups, max_norm: float) -> float:
    """Scale the gradients by ``max_norm / (norm + 1e-6)`` when the whole model's gradient norm exceeds
    ``max_norm`` (as ``torch.nn.utils.clip_grad_norm_`` does on one process; 0 leaves them); returns the norm.
    ``groups``: the run's :class:`~raylm.parallel.groups.ModelParallelGroups`."""
    parameters = [p for p in parameters if p.grad is not None]
    norm = float(tensor_parallel_grad_norm(parameters, groups.get_model_parallel_group()))
    if max_norm > 0:
        coef = min(1.0, max_norm / (norm + 1e-6))
        if coef < 1.0:
            for p in parameters:
                p.grad.detach().mul_(coef)
    return norm
