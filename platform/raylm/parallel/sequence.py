"""Sequence parallelism in the style of DeepSpeed-Ulysses (Jacobs et al. 2023, "DeepSpeed Ulysses",
section 3), applied to a finished model: the model code stays single-process.

Every rank of a sequence group holds ``seq_len / sp`` consecutive tokens of the same sequences.
Embeddings, norms, feed-forward layers and the output head work token by token, so they run on
the slice as they are (positions offset to the slice's place in the sequence). Attention needs
whole sequences: after the query, key and value projections one all-to-all turns
``(batch, heads, seq / sp, head_dim)`` into ``(batch, heads / sp, seq, head_dim)``, so each rank
attends over the full sequences for its share of the heads, and a second all-to-all turns the
output back before the output projection. Both are ``all_to_all_single`` collectives (the list
form is not supported on gloo); their backward is the reverse all-to-all.

The loss counts every token once: each rank's sum of token losses is divided by the number of
target tokens in the whole sequence group, and multiplied by ``sp`` because the gradient is
averaged over the ``sp * dp`` ranks that hold the same weights (:mod:`raylm.parallel.groups`).
The loss a rank returns is then its share of the global mean; the mean over the group is the
global mean.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from raylm.model.output import IGNORE_INDEX


def _all_to_all(x: torch.Tensor, scatter_dim: int, gather_dim: int, group, size: int) -> torch.Tensor:
    """Split ``x`` into ``size`` chunks on ``scatter_dim``, send chunk ``i`` to rank ``i`` of ``group``,
    and concatenate what arrives on ``gather_dim`` (in rank order)."""
    chunks = [c.contiguous() for c in x.chunk(size, dim=scatter_dim)]
    send = torch.stack(chunks)  # (size, ...): chunk i goes to rank i
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)
    return torch.cat(list(received.unbind(0)), dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scatter_dim, gather_dim, group, size):
        ctx.args = (scatter_dim, gather_dim, group, size)
        return _all_to_all(x, scatter_dim, gather_dim, group, size)

    @staticmethod
    def backward(ctx, grad):
        scatter_dim, gather_dim, group, size = ctx.args
        return _all_to_all(grad, gather_dim, scatter_dim, group, size), None, None, None, None


def heads_to_sequence(x: torch.Tensor, group, size: int) -> torch.Tensor:
    """``(batch, heads, seq / sp, d)`` on every rank -> ``(batch, heads / sp, seq, d)``."""
    return _AllToAll.apply(x, 1, 2, group, size)


def sequence_to_heads(x: torch.Tensor, group, size: int) -> torch.Tensor:
    """The inverse of :func:`heads_to_sequence`."""
    return _AllToAll.apply(x, 2, 1, group, size)


def _ulysses_attention(attention, heads: int, kv_heads: int, group, size: int):
    """A training forward for one :class:`~raylm.model.attention.Attention` (self-attention, no
    cache) on a sequence slice, ``heads`` and ``kv_heads`` being what its projections produce:
    project, all-to-all to whole sequences over a share of heads, attend with the module's own
    positions and masks, all-to-all back, project out."""

    def split_heads(t: torch.Tensor, n: int) -> torch.Tensor:  # (batch, seq / sp, n * d) -> (batch, n, seq, d)
        per_rank = t.view(t.shape[0], t.shape[1], n, attention.head_dim).transpose(1, 2)
        return heads_to_sequence(per_rank, group, size)

    def forward(x: torch.Tensor, context=None, key_mask=None, cache=None) -> torch.Tensor:
        if cache is not None or context is not None or key_mask is not None:
            raise ValueError("sequence parallelism trains self-attention without a cache or padding mask")
        batch, local_len, _ = x.shape
        q = split_heads(attention.q_proj(x), heads)
        k, v = split_heads(attention.k_proj(x), kv_heads), split_heads(attention.v_proj(x), kv_heads)
        out = attention.attend(q, k, v, past=0, key_mask=None)  # (batch, heads / sp, seq, d)
        out = sequence_to_heads(out, group, size)  # (batch, heads, seq / sp, d)
        return attention.o_proj(out.transpose(1, 2).reshape(batch, local_len, -1))

    return forward


def _offset_embeddings(embeddings, offset: int):
    original = embeddings.forward

    def forward(ids, start: int = 0, segment_ids=None):
        return original(ids, start=start + offset, segment_ids=segment_ids)

    return forward


def shard_sequence_parallel(model: nn.Module, group, rank: int, size: int, seq_len: int) -> nn.Module:
    """Make ``model`` train on this rank's slice (``rank`` of ``size``) of ``seq_len``-token
    sequences; in place, returns the model. The plan has checked that ``seq_len`` and the
    (per tensor rank) heads and key-value heads divide by ``size``."""
    from raylm.model.attention import Attention
    from raylm.model.blocks import Embeddings

    offset = rank * (seq_len // size)
    for module in list(model.modules()):
        if isinstance(module, Attention):
            module.forward = _ulysses_attention(module, module.n_heads, module.n_kv_heads, group, size)
            if module.alibi is not None:  # attend() sees this rank's share of the heads
                module.alibi = module.alibi.chunk(size)[rank].clone()
            module.n_heads, module.n_kv_heads = module.n_heads // size, module.n_kv_heads // size
        elif isinstance(module, Embeddings):
            module.forward = _offset_embeddings(module, offset)
    original = model.forward

    def forward(**inputs):
        out = original(**inputs)
        labels = inputs.get("targets", inputs.get("mlm_labels"))
        if labels is None:
            return out
        lm_loss = sequence_parallel_loss(out.logits, labels, group, size)
        out.loss, out.lm_loss = lm_loss + (out.loss - out.lm_loss), lm_loss
        return out

    model.forward = forward
    return model


def sequence_parallel_loss(logits: torch.Tensor, labels: torch.Tensor, group, size: int) -> torch.Tensor:
    """``size * (this slice's summed token cross-entropy) / (target tokens in the whole group)``: the
    group's mean of it is the mean cross-entropy over the whole sequences (module docstring)."""
    summed = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1),
                             ignore_index=IGNORE_INDEX, reduction="sum")
    count = (labels != IGNORE_INDEX).sum().to(torch.float64).reshape(1)
    dist.all_reduce(count, group=group)
    return summed * size / count.clamp(min=1).item()


def sequence_slice(inputs: dict[str, torch.Tensor], rank: int, size: int) -> dict[str, torch.Tensor]:
    """This rank's slice of every ``(batch, seq)`` input: tokens ``[rank * seq / size, (rank+1) * seq / size)``."""
    return {k: v.chunk(size, dim=1)[rank].contiguous() for k, v in inputs.items()}
