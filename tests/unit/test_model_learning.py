"""Tiny models learn what they are shown: GPT memorises a sequence, T5 copies, BERT fills masks."""

from __future__ import annotations

import torch
from tests.unit.model_cases import make_config

from raylm.model import build_model
from raylm.model.generate import generate
from raylm.model.objectives import mlm_mask
from raylm.model.output import IGNORE_INDEX

ALPHABET = torch.arange(26)  # token i is the letter chr(ord('a') + i)


def _train(model, batch_fn, steps: int, lr: float = 3e-3, warmup: int = 30) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    loss = None
    for _ in range(steps):
        loss = batch_fn().lm_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return float(loss.detach())


def test_gpt_memorises_alphabet_and_greedy_reproduces_it():
    torch.manual_seed(0)
    model = build_model(make_config("gpt", vocab_size=32, d_model=64, max_seq_len=64))
    stream = ALPHABET.repeat(4)

    def batch():
        starts = torch.randint(0, 26, (16,))
        windows = torch.stack([stream[s:s + 21] for s in starts])
        return model(windows[:, :-1], targets=windows[:, 1:])

    assert _train(model, batch, 250) < 0.05
    prompt = torch.tensor([[0, 1, 2]])  # "abc"
    continuation = generate(model, prompt, 20, temperature=0.0)
    assert continuation[0].tolist() == list(range(3, 23))  # "defghijklmnopqrstuvw"


def test_t5_learns_to_copy():
    torch.manual_seed(0)
    model = build_model(make_config("t5", vocab_size=24, d_model=64, max_seq_len=16))
    pad, eos = 0, 1
    sequences = torch.randint(2, 24, (32, 8))

    def batch():
        rows = sequences[torch.randint(0, 32, (16,))]
        targets = torch.cat([rows, torch.full((16, 1), eos)], dim=1)
        decoder_ids = torch.cat([torch.full((16, 1), pad), rows], dim=1)
        return model(rows, decoder_ids, targets=targets)

    assert _train(model, batch, 300) < 0.05
    copied = generate(model, sequences[:8], 9, temperature=0.0, eos_id=eos, decoder_start_id=pad)
    assert torch.equal(copied[:, :8], sequences[:8])
    assert (copied[:, 8] == eos).all()


def test_bert_fills_masked_tokens():
    """Four fixed sequences: the unmasked context tells which one, attention recovers the masked tokens."""
    torch.manual_seed(0)
    mask_id = 27
    model = build_model(make_config("bert", vocab_size=28, d_model=32, max_seq_len=32, nsp_head=False))
    sequences = torch.stack([torch.randperm(26)[:16] for _ in range(4)])
    generator = torch.Generator().manual_seed(0)

    def rows(n: int) -> torch.Tensor:
        return sequences[torch.randint(0, 4, (n,), generator=generator)]

    def batch():
        inputs, labels = mlm_mask(rows(16), mask_id, 26, prob=0.25, generator=generator)
        return model(inputs, mlm_labels=labels)

    assert _train(model, batch, 400) < 0.05
    model.eval()
    ids = rows(16)
    inputs, labels = mlm_mask(ids, mask_id, 26, prob=0.25, generator=generator)
    predicted = model(inputs).argmax(-1)
    chosen = labels != IGNORE_INDEX
    assert chosen.sum() > 20
    assert torch.equal(predicted[chosen], ids[chosen])
