"""``raylm study plan``: the grid, its compute, the data it needs, and a wall-time estimate from a
short timed probe, before anything trains."""

from __future__ import annotations

import math
import time

from raylm.study.config import Study
from raylm.study.grid import StudyPoint, build_grid, format_grid, point_config, verification_point

TRIAL_OVERHEAD_S = 30.0  # start-up and tear-down of one trial, two at a time on 2 cores (docs/studies.md, bench/)
PROBE_STEPS = 3


def probe_tokens_per_second(study: Study, point: StudyPoint, threads: int) -> float:
    """Tokens/s of a few optimizer steps of the point's model in this process (plain PyTorch, random tokens,
    ``threads`` CPU threads as one worker would have)."""
    import torch

    from raylm.model import build_model
    from raylm.train.optimizers import build_optimizer

    cfg = point_config(study, point)
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        model = build_model(cfg.model)
        optimizer = build_optimizer(cfg, model)
        batch, seq = cfg.train.micro_batch_size, cfg.train.seq_len
        tokens = torch.randint(0, cfg.model.vocab_size, (batch, seq + 1))
        elapsed = []
        for _ in range(PROBE_STEPS + 1):
            start = time.perf_counter()
            out = model(tokens[:, :-1], targets=tokens[:, 1:])
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            elapsed.append(time.perf_counter() - start)
        return batch * seq / min(elapsed[1:])  # the first step warms up
    finally:
        torch.set_num_threads(previous)


def plan_text(study: Study, train_tokens: int | None, cpus: float) -> str:
    cfg = study.config
    grid = build_grid(study)
    lines = [f"study {cfg.name}: {len(cfg.budgets)} budgets x {cfg.points_per_budget} sizes = {len(grid)} runs", "",
             format_grid(grid), ""]
    total = sum(p.grid.flops for p in grid)
    lines.append(f"total compute: {total:.3g} FLOPs (6ND) over the grid; targets: "
                 + ", ".join(f"{t:.3g}" for t in cfg.targets))
    largest = max(grid, key=lambda p: p.grid.tokens)
    if train_tokens:
        epochs = largest.grid.tokens / train_tokens
        note = "  WARNING: the data repeats" if epochs > 1 else ""
        lines.append(f"data: the largest point ({largest.label}) needs {largest.grid.tokens:,} tokens; the corpus "
                     f"has {train_tokens:,} training tokens ({epochs:.2f} epochs){note}")
    else:
        lines.append("data: not tokenized yet (raylm tokenize builds the shards; the study does it first)")
    base = point_config(study, grid[0])
    threads = max(1, int(base.parallel.cpus_per_worker))
    per_trial_cpus = base.parallel.num_workers * base.parallel.cpus_per_worker
    at_once = max(1, int(cpus // per_trial_cpus)) if per_trial_cpus else 1
    smallest, biggest = min(grid, key=lambda p: p.grid.params), max(grid, key=lambda p: p.grid.params)
    rate = {p.grid.params: probe_tokens_per_second(study, p, threads) * base.parallel.num_workers
            for p in (smallest, biggest)}
    seconds = [_tokens_per_second(rate, p.grid.params) for p in grid]
    train_s = sum(p.grid.tokens / s for p, s in zip(grid, seconds, strict=True))
    verify = verification_point(study, cfg.targets[0], math.sqrt(cfg.targets[0] / 120))
    verify_s = verify.grid.tokens / _tokens_per_second(rate, verify.grid.params) + TRIAL_OVERHEAD_S
    wall = (train_s + TRIAL_OVERHEAD_S * len(grid)) / at_once + (verify_s if cfg.verify.enabled else 0)
    lines.append(f"probe: {rate[smallest.grid.params]:,.0f} tokens/s at N={smallest.grid.params:,}, "
                 f"{rate[biggest.grid.params]:,.0f} at N={biggest.grid.params:,} ({threads} thread(s) per worker)")
    lines.append(f"estimated wall time: {wall / 60:.1f} min ({at_once} trial(s) at a time on {cpus:g} CPUs, "
                 f"{TRIAL_OVERHEAD_S:.0f} s start-up per trial, verification at 20 tokens/param ~{verify_s:.0f} s)")
    return "\n".join(lines)


def _tokens_per_second(rate: dict[int, float], params: int) -> float:
    """Log-log interpolation between the probed sizes."""
    (n1, r1), (n2, r2) = sorted(rate.items())
    if n1 == n2:
        return r1
    slope = math.log(r2 / r1) / math.log(n2 / n1)
    return r1 * (params / n1) ** slope
