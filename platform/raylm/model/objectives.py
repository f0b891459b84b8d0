"""Pretraining objectives that turn token blocks into model inputs and targets.

- Masked LM (Devlin et al. 2019, section 3.1, "Task #1"): 15% of positions are chosen;
  of those 80% become [MASK], 10% a random token and 10% stay unchanged; only chosen
  positions carry a label.
- Span corruption (Raffel et al. 2020, section 3.1.4 and Figure 2): about
  ``noise_density`` of the tokens, in spans of mean length ``mean_span_length``, are
  replaced in the input by one sentinel per span; the target lists each sentinel
  followed by the tokens it replaced, then EOS.
"""

from __future__ import annotations

import torch

from raylm.model.output import IGNORE_INDEX


def mlm_mask(ids: torch.Tensor, mask_id: int, vocab_size: int, special_ids: list[int] | tuple[int, ...] = (),
             prob: float = 0.15, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(inputs, labels)``; special tokens are never chosen."""
    chosen = torch.rand(ids.shape, generator=generator) < prob
    if special_ids:
        chosen &= ~torch.isin(ids, torch.tensor(list(special_ids), device=ids.device))
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    roll = torch.rand(ids.shape, generator=generator)
    random_tokens = torch.randint(vocab_size, ids.shape, generator=generator)
    inputs = torch.where(chosen & (roll < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_tokens.to(ids.device), inputs)
    return inputs, labels


def span_lengths(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """``(noise_tokens, spans)`` for a block of ``length`` tokens, as in T5's ``random_spans_noise_mask``."""
    noise = min(max(int(round(length * noise_density)), 1), length - 1)
    spans = max(int(round(noise / mean_span_length)), 1)
    return noise, spans


def _random_segmentation(total: int, segments: int, generator: torch.Generator | None) -> torch.Tensor:
    """Split ``total`` items into ``segments`` non-empty runs uniformly at random; returns run lengths."""
    cuts = torch.randperm(total - 1, generator=generator)[: segments - 1] + 1
    bounds = torch.cat([torch.tensor([0]), cuts.sort().values, torch.tensor([total])])
    return bounds.diff()


def span_corruption(tokens: torch.Tensor, sentinel_ids: list[int], eos_id: int, noise_density: float = 0.15,
                    mean_span_length: float = 3.0, generator: torch.Generator | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt one 1-D block; returns ``(encoder_input, target)``, both ending with EOS.

    Their lengths depend only on ``len(tokens)``, so a batch of equal blocks stacks.
    """
    noise, spans = span_lengths(len(tokens), noise_density, mean_span_length)
    if len(tokens) - noise < spans:
        raise ValueError(f"a block of {len(tokens)} tokens is too short for {spans} spans; lower noise_density")
    if spans > len(sentinel_ids):
        raise ValueError(f"{spans} noise spans need {spans} sentinels; the tokenizer has {len(sentinel_ids)}")
    noise_runs = _random_segmentation(noise, spans, generator)
    keep_runs = _random_segmentation(len(tokens) - noise, spans, generator)
    encoder, target, pos = [], [], 0
    for i in range(spans):
        encoder.append(tokens[pos:pos + keep_runs[i]])
        pos += int(keep_runs[i])
        sentinel = tokens.new_tensor([sentinel_ids[i]])
        encoder.append(sentinel)
        target += [sentinel, tokens[pos:pos + noise_runs[i]]]
        pos += int(noise_runs[i])
    eos = tokens.new_tensor([eos_id])
    return torch.cat(encoder + [tokens[pos:], eos]), torch.cat(target + [eos])


def span_corruption_batch(blocks: torch.Tensor, sentinel_ids: list[int], eos_id: int, decoder_start_id: int,
                          noise_density: float = 0.15, mean_span_length: float = 3.0,
                          generator: torch.Generator | None = None,
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(encoder_ids, decoder_ids, targets)`` for a ``(batch, length)`` block; the decoder input
    is the target shifted right behind ``decoder_start_id`` (T5 uses the pad id)."""
    pairs = [span_corruption(row, sentinel_ids, eos_id, noise_density, mean_span_length, generator) for row in blocks]
    encoder = torch.stack([p[0] for p in pairs])
    targets = torch.stack([p[1] for p in pairs])
    start = torch.full_like(targets[:, :1], decoder_start_id)
    return encoder, torch.cat([start, targets[:, :-1]], dim=1), targets
