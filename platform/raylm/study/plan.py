"""``raylm study plan``: the grid, its compute, the data it needs, each budget whose prior optimum sits
near an edge of its sizes, how its trials share the machine, and a wall-time estimate from a short timed
probe and the measured per-trial overhead (:mod:`raylm.tune.overhead`), before anything trains."""

from __future__ import annotations

import math
import time

from raylm.study.config import Study
from raylm.study.edges import prior_warnings
from raylm.study.grid import StudyPoint, build_grid, format_grid, point_config, verification_point
from raylm.tune.overhead import trial_overhead

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
    lines += prior_warnings(study, grid, train_tokens)  # a prior optimum near an edge the family clipped
    base = point_config(study, grid[0])
    threads = max(1, int(base.parallel.cpus_per_worker))
    workers = base.parallel.num_workers
    per_trial_cpus = workers * base.parallel.cpus_per_worker
    at_once = max(1, int(cpus // per_trial_cpus)) if per_trial_cpus else 1
    smallest, biggest = min(grid, key=lambda p: p.grid.params), max(grid, key=lambda p: p.grid.params)
    rate = {p.grid.params: probe_tokens_per_second(study, p, threads) * workers for p in (smallest, biggest)}
    seconds = [_tokens_per_second(rate, p.grid.params) for p in grid]
    train_s = sum(p.grid.tokens / s for p, s in zip(grid, seconds, strict=True))
    in_process = cfg.trials.in_process  # one worker in the trial's process, more on the worker pool it keeps
    overhead = trial_overhead(in_process, workers)
    verify = verification_point(study, cfg.targets[0], math.sqrt(cfg.targets[0] / 120))
    verify_s = verify.grid.tokens / _tokens_per_second(rate, verify.grid.params) + overhead.warm_s
    start_s = overhead.first_s * min(at_once, len(grid)) if in_process else 0.0
    wall = (train_s + overhead.warm_s * len(grid) + start_s) / at_once + (verify_s if cfg.verify.enabled else 0)
    lines.append(f"probe: {rate[smallest.grid.params]:,.0f} tokens/s at N={smallest.grid.params:,}, "
                 f"{rate[biggest.grid.params]:,.0f} at N={biggest.grid.params:,} ({threads} thread(s) per worker)")
    lines.append(concurrency_text(study, biggest, cpus, at_once, threads, rate[biggest.grid.params] / workers))
    pool = f" and its pool of {workers - 1} worker process(es)" if workers > 1 else ""
    hosted = f"in its own reused process{pool}" if in_process else f"on a Ray Train worker group of {workers}"
    lines.append(f"per trial, {hosted}: {overhead.warm_s:.1f} s of start-up and tear-down"
                 + (f" ({overhead.first_s:.0f} s for the first in each process)" if in_process else "")
                 + f", measured ({overhead.source})")
    lines.append(f"estimated wall time: {wall / 60:.1f} min (training {train_s / at_once / 60:.1f} min, "
                 f"start-up {(overhead.warm_s * len(grid) + start_s) / at_once / 60:.1f} min, verification at "
                 f"20 tokens/param ~{verify_s:.0f} s)")
    return "\n".join(lines)


def concurrency_text(study: Study, point: StudyPoint, cpus: float, at_once: int, threads: int,
                     rate: float) -> str:
    """Why this many trials run at once: the largest point's tokens/s with one trial's threads against one
    trial using every CPU, so the choice (``parallel.cpus_per_worker``, trials at a time) is explained by
    measurement."""
    wide = int(cpus)
    head = (f"concurrency: {at_once} trial(s) at a time on {cpus:g} CPUs, {threads} thread(s) each "
            f"(parallel.cpus_per_worker)")
    if wide <= threads or at_once <= 1:
        return head
    wide_rate = probe_tokens_per_second(study, point, wide)
    together = at_once * rate
    verdict = ("side by side is faster, so it stays" if together >= wide_rate else
               f"one trial at a time with {wide} threads would be faster: set parallel.cpus_per_worker: {wide}")
    return (f"{head}; at N={point.grid.params:,} {at_once} x {rate:,.0f} tokens/s side by side against "
            f"{wide_rate:,.0f} tokens/s for one trial with {wide} threads: {verdict}")


def _tokens_per_second(rate: dict[int, float], params: int) -> float:
    """Log-log interpolation between the probed sizes."""
    (n1, r1), (n2, r2) = sorted(rate.items())
    if n1 == n2:
        return r1
    slope = math.log(r2 / r1) / math.log(n2 / n1)
    return r1 * (params / n1) ** slope
