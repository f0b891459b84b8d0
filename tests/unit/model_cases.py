"""Small model configs covering every option in every architecture, and how to run them."""

from __future__ import annotations

import torch

from raylm.config import ModelConfig

ARCHS = ("gpt", "bert", "t5")
BASE = dict(vocab_size=61, d_model=32, n_layers=2, n_heads=4, max_seq_len=24)

OPTIONS = [
    {"pos_encoding": "learned"}, {"pos_encoding": "sinusoidal"}, {"pos_encoding": "rope"},
    {"pos_encoding": "alibi"}, {"pos_encoding": "none"},
    {"norm": "rmsnorm"}, {"norm_position": "post"}, {"norm": "rmsnorm", "norm_position": "post"},
    {"activation": "relu"}, {"activation": "gelu_tanh"}, {"activation": "swiglu"}, {"activation": "leaky_relu"},
    {"n_kv_heads": 2}, {"n_kv_heads": 1}, {"bias": False}, {"tie_embeddings": False},
    {"dropout": 0.1, "attn_dropout": 0.1}, {"scaled_init": False},
    {"moe": {"n_experts": 4, "every": 1}}, {"moe": {"n_experts": 4, "every": 2, "top_k": 2}},
    {"bias": False, "norm": "layernorm", "tie_embeddings": False, "activation": "swiglu", "n_kv_heads": 2},
]


def option_id(option: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in option.items()).replace(" ", "")


def make_config(arch: str, **overrides) -> ModelConfig:
    extra = {"nsp_head": True} if arch == "bert" else {}
    return ModelConfig(arch=arch, **{**BASE, **extra, **overrides})


def logits_of(model, arch: str, ids: torch.Tensor, decoder_ids: torch.Tensor | None = None) -> torch.Tensor:
    if arch == "t5":
        return model(ids, ids if decoder_ids is None else decoder_ids)
    return model(ids)


def loss_of(model, arch: str, ids: torch.Tensor):
    if arch == "t5":
        return model(ids, ids, targets=ids)
    if arch == "bert":
        return model(ids, mlm_labels=ids, nsp_labels=torch.zeros(ids.shape[0], dtype=torch.long))
    return model(ids, targets=ids)
