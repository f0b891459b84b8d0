"""``train.compile``: the speedup and the compile time of torch.compile inside the DeepSpeed engine, on this machine.

    python bench/compile_speedup.py [--steps 10] [--rounds 3]

One process (a gloo process group of one, as a one-worker ``raylm train``) builds two engines
with :func:`raylm.parallel.engine.make_training_engine` from the same seed: ``train.compile``
false (eager) and true (``engine.compile()``, Inductor). Both train the tiny GPT of
``bench/train_vs_anchors.py`` (16 x 128 tokens per step, AdamW, clipping, ZeRO-0) on the same
random batches, in alternating rounds of ``--steps`` steps after their first steps; tokens/s is
the median of each round and the speedup the median of the per-round ratios. The compile time
is the compiled engine's first step less an eager step (Dynamo tracing and Inductor's C++
build of the forward and backward graphs), with Inductor's caches off so it is what a first run
pays. The first steps' losses of the two are compared.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

from _common import Figure, emit, log, median

TOKENS_PER_STEP = 16 * 128


def run_config(compile_model: bool, steps: int):
    from raylm.config import RunConfig

    return RunConfig.from_dict({
        "model": {"arch": "gpt", "vocab_size": 4096, "max_seq_len": 128, "d_model": 128, "n_layers": 4,
                  "n_heads": 4},
        "parallel": {"num_workers": 1, "zero_stage": 0},
        "train": {"max_steps": steps, "micro_batch_size": 16, "global_batch_size": 16, "seq_len": 128, "lr": 3e-3,
                  "warmup_steps": 5, "grad_clip": 1.0, "compile": compile_model},
    })


def batches(count: int, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        tokens = torch.randint(0, 4096, (16, 129), generator=gen)
        out.append({"ids": tokens[:, :-1], "targets": tokens[:, 1:]})
    return out


def train_step(engine, inputs) -> float:
    """One optimizer step as the worker loop runs it (one micro-batch: grad_accum is 1 here)."""
    out = engine(**inputs)
    engine.backward(out.loss)
    engine.step()
    return out.loss.item()


def init_single_process_group() -> None:
    import deepspeed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each engine first")
    args = parser.parse_args()
    started = time.perf_counter()
    os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")  # a cold compile, as a first run's

    import torch

    from raylm.parallel.engine import make_training_engine
    from raylm.parallel.plan import make_plan
    from raylm.train.optimizers import optimizer_factories

    torch.set_num_threads(os.cpu_count() or 1)
    init_single_process_group()
    total = args.warmup + args.rounds * args.steps
    data = batches(total)
    engines, losses, first_step = {}, {}, {}
    for name, flag in (("eager", False), ("compiled", True)):
        cfg = run_config(flag, total)
        torch.manual_seed(cfg.train.seed)
        engines[name] = make_training_engine(cfg, make_plan(cfg, 1), *optimizer_factories(cfg))
        log(f"{name}: first step" + (" (compiling)" if flag else ""))
        start = time.perf_counter()
        losses[name] = [train_step(engines[name], data[0])]
        first_step[name] = time.perf_counter() - start
        losses[name] += [train_step(engines[name], data[i]) for i in range(1, args.warmup)]

    position = {name: args.warmup for name in engines}
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        row = {}
        for name in (("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")):
            per_step = []
            for _ in range(args.steps):
                start = time.perf_counter()
                losses[name].append(train_step(engines[name], data[position[name]]))
                per_step.append(TOKENS_PER_STEP / (time.perf_counter() - start))
                position[name] += 1
            row[name] = median(per_step)
        rounds.append(row)

    eager, compiled = median(r["eager"] for r in rounds), median(r["compiled"] for r in rounds)
    speedup = median(r["compiled"] / r["eager"] for r in rounds)
    compile_s = first_step["compiled"] - TOKENS_PER_STEP / eager
    rel = [abs(a - b) / abs(b) for a, b in zip(losses["compiled"], losses["eager"], strict=True)]
    figures = [
        Figure("train tok/s with train.compile vs eager (1 process, ZeRO-0)", compiled, eager, "tok/s", "eager",
               ratio=speedup, notes="off by default unless it pays on this machine"),
        Figure("train.compile: compile time (first step less an eager step)", compile_s, None, "s"),
    ]
    details = {
        "model": {"d_model": 128, "n_layers": 4, "n_heads": 4, "vocab_size": 4096, "seq_len": 128,
                  "sequences_per_step": 16},
        "threads": torch.get_num_threads(), "backend": "inductor", "steps_per_round": args.steps,
        "tokens_per_second": {"eager": eager, "compiled": compiled}, "rounds": rounds,
        "first_step_s": first_step, "compile_s": compile_s,
        "loss_max_rel_diff": max(rel), "losses_first_steps": {k: v[:5] for k, v in losses.items()},
    }
    emit("compile_speedup", figures, details, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
