"""Generation: cached decoding equals recomputation; sampling filters behave."""

from __future__ import annotations

import pytest
import torch
from tests.unit.model_cases import make_config

from raylm.model import build_model
from raylm.model.generate import filter_logits, generate


@pytest.mark.parametrize("arch", ["gpt", "t5"])
@pytest.mark.parametrize("option", [{"pos_encoding": "learned"}, {"pos_encoding": "rope", "n_kv_heads": 2},
                                    {"pos_encoding": "alibi"}, {"pos_encoding": "sinusoidal", "norm_position": "post"},
                                    {"moe": {"n_experts": 4, "every": 1}}])
def test_kv_cache_equals_recomputation(arch, option):
    torch.manual_seed(0)
    model = build_model(make_config(arch, **option)).eval()
    prompt = torch.randint(61, (3, 5))
    for temperature in (0.0, 1.0):
        cached = generate(model, prompt, 12, temperature=temperature, top_k=20, seed=7, use_cache=True)
        full = generate(model, prompt, 12, temperature=temperature, top_k=20, seed=7, use_cache=False)
        assert cached.shape == (3, 12)
        assert torch.equal(cached, full)


def test_cached_logits_match_full_forward():
    torch.manual_seed(1)
    model = build_model(make_config("gpt", pos_encoding="rope")).eval()
    ids = torch.randint(61, (2, 9))
    full = model(ids)
    cache = model.new_cache()
    first = model(ids[:, :4], cache=cache)
    steps = [model(ids[:, i:i + 1], cache=cache) for i in range(4, 9)]
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full, atol=1e-5, rtol=1e-5)


def test_seed_makes_sampling_reproducible_and_eos_stops():
    torch.manual_seed(2)
    model = build_model(make_config("gpt")).eval()
    prompt = torch.randint(61, (2, 3))
    a = generate(model, prompt, 10, temperature=1.0, seed=3)
    b = generate(model, prompt, 10, temperature=1.0, seed=3)
    assert torch.equal(a, b)
    first = generate(model, prompt, 1, temperature=0.0)
    stopped = generate(model, prompt[:1], 10, temperature=0.0, eos_id=int(first[0, 0]))
    assert stopped.shape == (1, 1)


def test_filters_keep_the_right_tokens():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    probs = logits.softmax(-1)[0]  # ~0.64, 0.24, 0.09, 0.03
    kept = ~torch.isinf(filter_logits(logits, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]] and probs[0] < 0.7
    with pytest.raises(ValueError, match="temperature"):
        generate(build_model(make_config("gpt")), torch.zeros(1, 2, dtype=torch.long), 2, temperature=-1)


def test_unseeded_generation_leaves_the_global_rng_alone():
    model = build_model(make_config("gpt")).eval()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate(model, torch.zeros(1, 2, dtype=torch.long), 3, temperature=1.0)
    assert torch.equal(torch.rand(3), expected)
