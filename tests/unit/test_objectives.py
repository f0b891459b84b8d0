"""MLM masking proportions and T5 span corruption."""

from __future__ import annotations

import pytest
import torch

from raylm.model.objectives import mlm_mask, span_corruption, span_corruption_batch, span_lengths
from raylm.model.output import IGNORE_INDEX


def test_mlm_mask_80_10_10():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (200, 100), generator=generator)
    ids[:, 0] = 1  # a special token: never masked
    inputs, labels = mlm_mask(ids, mask_id=2, vocab_size=1000, special_ids=[1], prob=0.15, generator=generator)
    chosen = labels != IGNORE_INDEX
    assert not chosen[:, 0].any()
    assert chosen.float().mean().item() == pytest.approx(0.15 * 99 / 100, abs=0.005)
    assert torch.equal(labels[chosen], ids[chosen])
    masked = (inputs == 2) & chosen
    unchanged = (inputs == ids) & chosen
    assert masked.sum() / chosen.sum() == pytest.approx(0.8, abs=0.02)
    assert unchanged.sum() / chosen.sum() == pytest.approx(0.1 + 0.1 / 1000, abs=0.02)
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_span_corruption_round_trips():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.arange(100, 164)
    sentinels = list(range(1000, 1100))
    encoder, target = span_corruption(tokens, sentinels, eos_id=1, generator=generator)
    noise, spans = span_lengths(64, 0.15, 3.0)
    assert len(encoder) == 64 - noise + spans + 1 and len(target) == noise + spans + 1
    # Rebuild the original: replace each sentinel in the encoder input by its span from the target.
    spans_by_sentinel, current = {}, None
    for token in target[:-1].tolist():
        if token in sentinels:
            current = token
            spans_by_sentinel[current] = []
        else:
            spans_by_sentinel[current].append(token)
    rebuilt = []
    for token in encoder[:-1].tolist():
        rebuilt += spans_by_sentinel[token] if token in sentinels else [token]
    assert rebuilt == tokens.tolist()
    assert encoder[-1] == 1 and target[-1] == 1


def test_span_corruption_batch_shapes_and_shift():
    blocks = torch.arange(2, 2 + 3 * 40).view(3, 40)
    enc, dec_in, targets = span_corruption_batch(blocks, list(range(500, 520)), eos_id=1, decoder_start_id=0,
                                                 generator=torch.Generator().manual_seed(1))
    assert enc.shape[0] == dec_in.shape[0] == targets.shape[0] == 3
    assert (dec_in[:, 0] == 0).all() and torch.equal(dec_in[:, 1:], targets[:, :-1])
    with pytest.raises(ValueError, match="sentinels"):
        span_corruption(torch.arange(300), [7], eos_id=1)
