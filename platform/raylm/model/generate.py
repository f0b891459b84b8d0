"""Autoregressive decoding for GPT and the T5 decoder, with a key-value cache.

``temperature=0`` is greedy; otherwise logits are divided by the temperature, cut to
the ``top_k`` most likely tokens and to the smallest set whose probability reaches
``top_p`` (nucleus sampling, Holtzman et al. 2020, section 3.1), then sampled with a
seeded generator. Cached decoding and full recomputation give the same tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from raylm.model.t5 import T5


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set every logit outside the top-k / nucleus to -inf (``logits``: ``(batch, vocab)``)."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _next_token(logits: torch.Tensor, temperature: float, top_k, top_p, generator) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model: nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
             seed: int | None = None, use_cache: bool = True, decoder_start_id: int = 0) -> torch.Tensor:
    """Return the ``(batch, <= max_new_tokens)`` new tokens.

    For GPT, ``prompt_ids`` is the context to continue. For T5 it is the encoder input
    and decoding starts from ``decoder_start_id``. Sequences that emit ``eos_id`` are
    padded with it until all have finished (decoding stops early then).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=prompt_ids.device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()  # a fresh seed for this generator only; the global RNG is left alone
    step = _t5_stepper(model, prompt_ids, decoder_start_id, use_cache) if isinstance(model, T5) else \
        _gpt_stepper(model, prompt_ids, use_cache)
    new_tokens, finished = [], torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=prompt_ids.device)
    previous = None
    for _ in range(max_new_tokens):
        token = _next_token(step(previous), temperature, top_k, top_p, generator)
        if eos_id is not None:
            token = token.masked_fill(finished, eos_id)
            finished |= token == eos_id
        new_tokens.append(token)
        previous = token
        if eos_id is not None and bool(finished.all()):
            break
    model.train(was_training)
    return torch.stack(new_tokens, dim=1) if new_tokens else prompt_ids.new_zeros((prompt_ids.shape[0], 0))


def _gpt_stepper(model: nn.Module, prompt_ids: torch.Tensor, use_cache: bool):
    """A function from the last sampled token (None at first) to next-token logits."""
    cache = model.new_cache() if use_cache else None
    sequence = prompt_ids

    def step(previous: torch.Tensor | None) -> torch.Tensor:
        nonlocal sequence
        if previous is not None:
            sequence = torch.cat([sequence, previous[:, None]], dim=1)
        if cache is None:
            return model(sequence)[:, -1]
        return model(sequence if previous is None else previous[:, None], cache=cache)[:, -1]

    return step


def _t5_stepper(model: T5, encoder_ids: torch.Tensor, decoder_start_id: int, use_cache: bool):
    memory, _ = model.encode(encoder_ids)
    cache = model.new_cache() if use_cache else None
    decoded = torch.full_like(encoder_ids[:, :1], decoder_start_id)

    def step(previous: torch.Tensor | None) -> torch.Tensor:
        nonlocal decoded
        if previous is not None:
            decoded = torch.cat([decoded, previous[:, None]], dim=1)
        inputs = decoded if cache is None or previous is None else previous[:, None]
        logits, _ = model.decode(inputs, memory, cache=cache)
        return logits[:, -1]

    return step
