"""Decoding throughput: raylm's KV-cache generation against recomputing the prefix and against Hugging Face.

    python bench/decode.py [--new-tokens 256] [--prompt 32] [--rounds 3]

The model is the tiny GPT of ``bench/train_vs_anchors.py`` (d_model 128, 4 layers, 4 heads,
vocab 4096; 512 positions here so the prompt plus 256 new tokens fit), seeded random weights.
Each contender generates ``--new-tokens`` tokens greedily for one ``--prompt``-token prompt
(batch 1), all cores:

* ``cached``: :func:`raylm.model.generate.generate` with its KV cache (one new token per forward);
* ``recompute``: the same function with ``use_cache=False``, which runs the whole sequence
  through the model for every new token (what decoding costs without a cache);
* ``hf``: ``transformers.GPT2LMHeadModel.generate`` (greedy, its own cache, SDPA attention) on the
  same weights, exported with :func:`raylm.model.hf.export_hf`.

The three alternate over ``--rounds`` rounds (after one untimed warm-up call each); the ratios
are medians of the per-round ratios. Goals: cached >= 5x recompute, cached >= 1x Hugging Face.
The tokens of the three are compared too (greedy decoding of the same weights).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import Figure, alternate, emit, median

GOAL_VS_RECOMPUTE, GOAL_VS_HF = 5.0, 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=32, help="prompt length in tokens")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()

    import torch
    from transformers import GPT2LMHeadModel

    from raylm.config import ModelConfig
    from raylm.model import build_model
    from raylm.model.generate import generate
    from raylm.model.hf import export_hf

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = ModelConfig(arch="gpt", vocab_size=4096, max_seq_len=512, d_model=128, n_layers=4, n_heads=4)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with tempfile.TemporaryDirectory(prefix="raylm-bench-decode-") as tmp:
        hf = GPT2LMHeadModel.from_pretrained(export_hf(model, cfg, Path(tmp)), attn_implementation="sdpa").eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, args.prompt), generator=torch.Generator().manual_seed(1))
    n = args.new_tokens
    tokens: dict[str, torch.Tensor] = {}

    def timed(name: str, fn):
        def run() -> float:
            start = time.perf_counter()
            with torch.no_grad():
                tokens[name] = fn()
            return n / (time.perf_counter() - start)
        return run

    contenders = {
        "cached": timed("cached", lambda: generate(model, prompt, n, use_cache=True)),
        "recompute": timed("recompute", lambda: generate(model, prompt, n, use_cache=False)),
        "hf": timed("hf", lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                                              min_new_tokens=n, do_sample=False, use_cache=True, num_beams=1,
                                              pad_token_id=0)[:, args.prompt:]),
    }
    for run in contenders.values():  # warm-up, not timed
        run()
    got = alternate(args.rounds, contenders)
    per_round = [{name: got[name][r] for name in got} for r in range(args.rounds)]
    vs_recompute = median(r["cached"] / r["recompute"] for r in per_round)
    vs_hf = median(r["cached"] / r["hf"] for r in per_round)
    cached, recompute, hf_tps = (median(got[name]) for name in ("cached", "recompute", "hf"))

    def agreement(a: torch.Tensor, b: torch.Tensor) -> int:
        """How many leading tokens two greedy decodings share."""
        differ = (a[0] != b[0]).nonzero()
        return int(differ[0]) if len(differ) else int(a.shape[1])

    figures = [
        Figure(f"decode tok/s, {n} new tokens: KV cache vs recompute", cached, recompute, "tok/s",
               "recompute prefix", goal=GOAL_VS_RECOMPUTE, ratio=vs_recompute),
        Figure(f"decode tok/s, {n} new tokens: raylm vs HF generate", cached, hf_tps, "tok/s", "HF generate",
               goal=GOAL_VS_HF, ratio=vs_hf),
    ]
    details = {
        "model": {"d_model": 128, "n_layers": 4, "n_heads": 4, "vocab_size": 4096,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "prompt_tokens": args.prompt, "new_tokens": n, "batch": 1, "threads": torch.get_num_threads(),
        "tokens_per_second": {"cached": cached, "recompute": recompute, "hf": hf_tps}, "rounds": per_round,
        "cached_equals_recompute": bool(torch.equal(tokens["cached"], tokens["recompute"])),
        "tokens_agreeing_with_hf": agreement(tokens["cached"], tokens["hf"]),
    }
    emit("decode", figures, details, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
