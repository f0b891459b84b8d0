"""Parameter and FLOP counts of a model config, without building the model.

Parameters follow the modules exactly (tests compare with ``sum(p.numel())``).
Chinchilla (Hoffmann et al. 2022) counts all parameters, embeddings included, and
Porian et al. (2024) showed that leaving out the output head biases small-model fits,
so ``total`` is the N of ``C = 6ND``; ``non_embedding`` follows Kaplan et al. (2020).
Training FLOPs per token follow Hoffmann et al. (2022), Appendix F (forward pass
counted term by term, backward = 2x forward).
"""

from __future__ import annotations

from dataclasses import dataclass

from raylm.config import ModelConfig
from raylm.model.blocks import is_moe_layer
from raylm.model.feedforward import feedforward_params


@dataclass(frozen=True)
class ParamCount:
    total: int          # every parameter (all experts)
    non_embedding: int  # total less token, position and segment embeddings and an untied output head
    active: int         # parameters used per token (MoE: router plus top_k experts per MoE layer)


def _norm(cfg: ModelConfig) -> int:
    return cfg.d_model * (2 if cfg.norm == "layernorm" and cfg.bias else 1)


def _linear(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _attention(cfg: ModelConfig) -> int:
    q_width, kv_width = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    return (_linear(cfg.d_model, q_width, cfg.bias) + 2 * _linear(cfg.d_model, kv_width, cfg.bias)
            + _linear(q_width, cfg.d_model, cfg.bias))


def _block(cfg: ModelConfig, layer_idx: int, cross: bool) -> tuple[int, int]:
    """(total, active) parameters of one block."""
    shared = 2 * _norm(cfg) + _attention(cfg) + ((_norm(cfg) + _attention(cfg)) if cross else 0)
    ffn = feedforward_params(cfg.d_model, cfg.d_ff, cfg.activation, cfg.bias)
    if not is_moe_layer(cfg, layer_idx):
        return shared + ffn, shared + ffn
    router = cfg.d_model * cfg.moe.n_experts
    return shared + router + cfg.moe.n_experts * ffn, shared + router + cfg.moe.top_k * ffn


def _layers(cfg: ModelConfig) -> list[tuple[int, bool]]:
    """(layer index, has cross-attention) for every block of the architecture."""
    layers = [(i, False) for i in range(cfg.n_layers)]
    if cfg.arch == "t5":
        layers += [(i, True) for i in range(cfg.n_decoder_layers)]
    return layers


def tensor_parallel_split_params(cfg: ModelConfig) -> int:
    """Parameters that tensor parallelism splits over its group (:mod:`raylm.parallel.tensor`): every
    block's attention and dense feed-forward matrices and the biases of their column-parallel layers;
    the rest (embeddings, norms, the head, row-parallel biases) is replicated."""
    row_bias = cfg.d_model if cfg.bias else 0  # the output projections' biases stay whole
    attention = _attention(cfg) - row_bias
    ffn = feedforward_params(cfg.d_model, cfg.d_ff, cfg.activation, cfg.bias) - row_bias
    return sum(attention * (2 if cross else 1) + (0 if is_moe_layer(cfg, idx) else ffn)
               for idx, cross in _layers(cfg))


def count_params(cfg: ModelConfig) -> ParamCount:
    """Exact parameter counts of the model :func:`raylm.model.build_model` makes from ``cfg``."""
    d, vocab = cfg.d_model, cfg.vocab_size
    embedding = vocab * d + (cfg.max_seq_len * d if cfg.pos_encoding == "learned" else 0)
    if cfg.arch == "bert":
        embedding += cfg.type_vocab_size * d
    head = 0 if cfg.tie_embeddings else vocab * d
    body_total = body_active = 0
    for idx, cross in _layers(cfg):
        total, active = _block(cfg, idx, cross)
        body_total, body_active = body_total + total, body_active + active
    extra = _norm(cfg) if cfg.norm_position == "post" else 0  # the embedding norm
    if cfg.norm_position == "pre":
        extra += _norm(cfg) * (2 if cfg.arch == "t5" else 1)  # final norm(s)
    if cfg.arch == "bert":
        extra += _linear(d, d, cfg.bias) + _norm(cfg) + vocab  # MLM transform, its norm, output bias
        extra += (_linear(d, d, True) + _linear(d, 2, True)) if cfg.nsp_head else 0
    total = embedding + head + body_total + extra
    return ParamCount(total=total, non_embedding=total - embedding - head,
                      active=total - body_total + body_active)


def forward_flops_per_sequence(cfg: ModelConfig, seq_len: int) -> float:
    """Forward FLOPs for one sequence, Hoffmann et al. (2022), Table 4 / Appendix F.

    Counts embeddings, QKV projections, attention logits, softmax, attention-weighted
    values, output projection, the (active) feed-forward and the final logits. For T5
    the decoder is taken to see ``seq_len`` tokens too, and cross-attention is counted
    like self-attention.
    """
    d, hd, heads, kv = cfg.d_model, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    ffn_matrices = 3 if cfg.activation == "swiglu" else 2
    attention = (2 * seq_len * d * (heads * hd + 2 * kv * hd)  # Q, K, V projections
                 + 2 * seq_len * seq_len * heads * hd           # key @ query logits
                 + 3 * heads * seq_len * seq_len                # softmax
                 + 2 * seq_len * seq_len * heads * hd           # softmax @ values
                 + 2 * seq_len * heads * hd * d)                # output projection
    flops = 2.0 * seq_len * cfg.vocab_size * d  # embeddings
    for idx, cross in _layers(cfg):
        experts = cfg.moe.top_k if is_moe_layer(cfg, idx) else 1
        router = 2 * seq_len * d * cfg.moe.n_experts if is_moe_layer(cfg, idx) else 0
        flops += attention * (2 if cross else 1) + experts * 2 * seq_len * ffn_matrices * d * cfg.d_ff + router
    return flops + 2.0 * seq_len * d * cfg.vocab_size  # final logits


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token, attention included: 3x the forward pass (backward = 2x forward)."""
    return 3.0 * forward_flops_per_sequence(cfg, seq_len) / seq_len


def matmul_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """:func:`flops_per_token` without the input embedding term, which Chinchilla's table counts
    as a matmul but a model computes as a gather: the figure MFU divides by the peak."""
    return flops_per_token(cfg, seq_len) - 3.0 * 2.0 * cfg.vocab_size * cfg.d_model
