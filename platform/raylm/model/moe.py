"""Switch mixture-of-experts feed-forward layer, with optional expert parallelism.

Routing follows the Switch Transformer (Fedus et al. 2021, "Switch Transformers: Scaling to
Trillion Parameter Models with Simple and Efficient Sparsity") for ``top_k=1`` and GShard
(Lepikhin et al. 2020, Algorithm 1) / ST-MoE (Zoph et al. 2022, "ST-MoE: Designing Stable and
Transferable Sparse Expert Models") for ``top_k=2``:

- router logits and probabilities are computed in fp32 (Switch section 2.4, "selective precision");
- top-1: ``y = p_e(x) * E_e(x)`` with the raw softmax probability as the gate (Switch eq. 2);
- top-2: the two experts' outputs are weighted by their probabilities renormalised over the two,
  ``g_i = p_i / (p_1 + p_2)`` (GShard Algorithm 1; the ST-MoE top-2 router does the same).
  The normalisation happens before capacity: when one of the two assignments is dropped the
  other keeps its normalised gate. GShard's random second-expert routing is not used;
- expert capacity ``ceil(capacity_factor * tokens * top_k / n_experts)`` (Switch eq. 3, with the
  top_k factor as in GShard and DeepSpeed-MoE), ``tokens`` being the batch * seq of this rank;
- assignments are served first come first served in token order, all first choices before any
  second choice (GShard Algorithm 1; V-MoE's batch prioritized routing, Riquelme et al. 2021,
  is not used); an assignment beyond capacity contributes zero, so the token rides the block's
  residual;
- router jitter (Switch Transformer; "input jitter" in ST-MoE section 3): in training only, the
  router input (not the experts' input) is multiplied by noise drawn uniformly from
  ``[1 - eps, 1 + eps]``.

With a ``process_group`` of size ``ep`` each rank holds ``n_experts // ep`` experts and the
routed tokens travel to their owners and back with ``torch.distributed.all_to_all_single``
(GShard's dispatch and combine; Switch section 5, "Designing models with data, model and
expert-parallelism"). This module is the only model code that imports ``torch.distributed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from raylm.model.feedforward import FeedForward, feedforward_params


@dataclass
class MoEStats:
    """What one MoE layer reports besides its output; the losses are unweighted.

    ``aux_loss``: load-balancing loss, Switch eq. 4, ``N * sum_i f_i * P_i`` where ``f_i`` is the
    fraction of tokens whose first choice is expert ``i`` (also for top-2, as in GShard and ST-MoE)
    and ``P_i`` the mean router probability of expert ``i``. Equals 1 under uniform routing.
    ``z_loss``: router z-loss, ST-MoE eq. 5, mean over tokens of ``logsumexp(logits)^2``.
    ``expert_load``: ``(n_experts,)`` fraction of all ``tokens * top_k`` assignments sent to each
    expert before capacity (sums to 1), detached.
    ``dropped_fraction``: fraction of the assignments dropped for exceeding capacity, detached.
    """

    aux_loss: torch.Tensor
    z_loss: torch.Tensor
    expert_load: torch.Tensor
    dropped_fraction: torch.Tensor


def expert_capacity(tokens: int, n_experts: int, top_k: int, capacity_factor: float) -> int:
    """Slots per expert: ``ceil(capacity_factor * tokens * top_k / n_experts)`` (Switch eq. 3).

    The product is rounded to 9 decimals first so that float noise (``1.1 * 10 = 11.000000000000002``)
    cannot add a slot.
    """
    return math.ceil(round(capacity_factor * tokens * top_k / n_experts, 9))


def moe_params(d_model: int, d_ff: int, n_experts: int, activation: str, bias: bool) -> int:
    """Parameters of a :class:`SwitchMoE` with all ``n_experts`` experts (router included), without building it."""
    return n_experts * d_model + n_experts * feedforward_params(d_model, d_ff, activation, bias)


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` along dim 0 with uneven splits; its backward is the reverse exchange."""

    @staticmethod
    def forward(ctx, x, out_splits: list[int], in_splits: list[int], group):
        ctx.splits, ctx.group = (out_splits, in_splits), group
        out = x.new_empty((sum(out_splits), *x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        out_splits, in_splits = ctx.splits
        grad_in = grad.new_empty((sum(in_splits), *grad.shape[1:]))
        dist.all_to_all_single(grad_in, grad.contiguous(), in_splits, out_splits, group=ctx.group)
        return grad_in, None, None, None


def _top_k(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Expert ids ``(tokens, k)`` and gates ``(tokens, k)``; ties go to the lower expert id.

    ``argmax`` (first maximum) instead of ``topk`` keeps tie-breaking deterministic. Top-2 gates
    are renormalised over the pair (GShard Algorithm 1; ST-MoE section 2).
    """
    first = probs.argmax(dim=-1, keepdim=True)
    if k == 1:
        return first, probs.gather(-1, first)
    second = probs.scatter(-1, first, -1.0).argmax(dim=-1, keepdim=True)
    ids = torch.cat([first, second], dim=-1)
    gates = probs.gather(-1, ids)
    return ids, gates / gates.sum(dim=-1, keepdim=True)


def _route(ids: torch.Tensor, n_experts: int, capacity: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which assignments fit: first come first served, all first choices before second choices.

    ``ids`` is ``(tokens, k)``. Assignments are numbered choice-major (``a = choice * tokens +
    token``), stably sorted by expert so each expert's queue keeps that priority order, and cut at
    ``capacity``. Returns the kept assignment numbers grouped by ascending expert id, the number
    kept per expert ``(n_experts,)``, and the number routed per expert before capacity.
    """
    flat = ids.t().reshape(-1)
    order = torch.sort(flat, stable=True).indices
    expert_sorted = flat[order]
    routed = torch.bincount(flat, minlength=n_experts)
    starts = torch.cumsum(routed, 0) - routed
    position = torch.arange(flat.numel(), device=flat.device) - starts[expert_sorted]
    kept = order[position < capacity]
    return kept, routed.clamp(max=capacity), routed


class SwitchMoE(nn.Module):
    """Mixture-of-experts FFN: ``(batch, seq, d_model) -> (same, MoEStats)``; add the residual outside.

    ``self.router`` is ``nn.Linear(d_model, n_experts, bias=False)``; ``self.experts`` holds the
    experts this rank owns: all of them without a ``process_group``, else global ids
    ``[rank * n_experts // ep, (rank + 1) * n_experts // ep)``.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        n_experts: int,
        top_k: int = 1,
        capacity_factor: float = 1.25,
        eval_capacity_factor: float = 2.0,
        router_jitter: float = 0.0,
        activation: str = "gelu",
        bias: bool = True,
        process_group=None,
    ):
        super().__init__()
        if n_experts < 1 or top_k not in (1, 2) or top_k > n_experts:
            raise ValueError(
                f"need n_experts >= 1 and top_k in (1, 2) with top_k <= n_experts; "
                f"got n_experts={n_experts}, top_k={top_k}"
            )
        if capacity_factor <= 0 or eval_capacity_factor <= 0 or not 0 <= router_jitter < 1:
            raise ValueError(
                f"capacity factors must be > 0 and router_jitter in [0, 1); got capacity_factor="
                f"{capacity_factor}, eval_capacity_factor={eval_capacity_factor}, "
                f"router_jitter={router_jitter}"
            )
        self.ep_size = 1 if process_group is None else dist.get_world_size(process_group)
        self.ep_rank = 0 if process_group is None else dist.get_rank(process_group)
        if n_experts % self.ep_size:
            raise ValueError(
                f"n_experts ({n_experts}) must be divisible by the expert-parallel size ({self.ep_size}); "
                f"use n_experts={n_experts + self.ep_size - n_experts % self.ep_size} or an ep that divides it"
            )
        self.n_experts, self.top_k = n_experts, top_k
        self.capacity_factor, self.eval_capacity_factor = capacity_factor, eval_capacity_factor
        self.router_jitter = router_jitter
        self.process_group = process_group
        self.n_local_experts = n_experts // self.ep_size
        self.first_local_expert = self.ep_rank * self.n_local_experts
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(d_model, d_ff, activation, bias) for _ in range(self.n_local_experts))

    def router_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """fp32 logits ``(tokens, n_experts)``; in training, with multiplicative input jitter."""
        inputs = tokens.float()
        if self.training and self.router_jitter > 0:
            eps = self.router_jitter
            inputs = inputs * torch.empty_like(inputs).uniform_(1.0 - eps, 1.0 + eps)
        return F.linear(inputs, self.router.weight.float())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, MoEStats]:
        tokens = x.reshape(-1, x.shape[-1])
        n_tokens = tokens.shape[0]
        logits = self.router_logits(tokens)
        probs = logits.softmax(dim=-1)
        ids, gates = _top_k(probs, self.top_k)
        factor = self.capacity_factor if self.training else self.eval_capacity_factor
        capacity = expert_capacity(n_tokens, self.n_experts, self.top_k, factor)
        kept, kept_per_expert, routed = _route(ids, self.n_experts, capacity)

        token_of = kept % n_tokens
        outputs = self._dispatch(tokens[token_of], kept_per_expert)
        weighted = outputs * gates.t().reshape(-1)[kept].unsqueeze(-1).to(outputs.dtype)
        # Each assignment number appears once, so index_copy is exact and deterministic; summing the
        # k choice-major rows gives every token its (at most k) expert contributions.
        slots = weighted.new_zeros(self.top_k * n_tokens, tokens.shape[-1]).index_copy(0, kept, weighted)
        out = slots.view(self.top_k, n_tokens, -1).sum(dim=0)
        return out.view_as(x), self._stats(logits, probs, ids, routed, kept.numel())

    def _stats(self, logits, probs, ids, routed, n_kept: int) -> MoEStats:
        """Switch eq. 4 load balancing, ST-MoE eq. 5 z-loss, and detached load figures."""
        n_assign = ids.numel()
        first_share = torch.bincount(ids[:, 0], minlength=self.n_experts).float() / ids.shape[0]
        aux = self.n_experts * torch.sum(first_share * probs.mean(dim=0))
        z = torch.logsumexp(logits, dim=-1).square().mean()
        load = (routed.float() / n_assign).detach()
        dropped = torch.tensor((n_assign - n_kept) / n_assign, device=logits.device)
        return MoEStats(aux_loss=aux, z_loss=z, expert_load=load, dropped_fraction=dropped)

    def _dispatch(self, routed_tokens: torch.Tensor, kept_per_expert: torch.Tensor) -> torch.Tensor:
        """Run each routed token (grouped by ascending global expert id) through its expert.

        Without expert parallelism the groups go straight to the local experts. With it, the
        per-expert counts are exchanged first, then the tokens go to their owning rank, through
        its experts, and back in the same order (two differentiable all-to-alls).
        """
        if self.process_group is None or self.ep_size == 1:
            local_ids = torch.repeat_interleave(
                torch.arange(self.n_experts, device=routed_tokens.device), kept_per_expert
            )
            return self._run_local(routed_tokens, local_ids)
        ep, n_local, group = self.ep_size, self.n_local_experts, self.process_group
        send_counts = kept_per_expert.view(ep, n_local).contiguous()  # row r: tokens for rank r's experts
        recv_counts = torch.empty_like(send_counts)  # row s: tokens from rank s for my experts
        dist.all_to_all_single(recv_counts, send_counts, group=group)
        in_splits, out_splits = send_counts.sum(1).tolist(), recv_counts.sum(1).tolist()
        received = _AllToAll.apply(routed_tokens, out_splits, in_splits, group)
        local_ids = torch.repeat_interleave(
            torch.arange(n_local, device=received.device).repeat(ep), recv_counts.reshape(-1)
        )
        processed = self._run_local(received, local_ids)
        return _AllToAll.apply(processed, in_splits, out_splits, group)

    def _run_local(self, tokens: torch.Tensor, local_ids: torch.Tensor) -> torch.Tensor:
        """Apply local expert ``local_ids[i]`` to row ``i``: one batched call per expert, rows kept in place.

        Every expert is called, on zero rows if need be, so that each gets a (zero) gradient.
        """
        order = torch.sort(local_ids, stable=True).indices
        counts = torch.bincount(local_ids, minlength=self.n_local_experts).tolist()
        chunks = torch.split(tokens[order], counts)
        outputs = torch.cat([expert(chunk) for expert, chunk in zip(self.experts, chunks, strict=True)])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return outputs[inverse]
