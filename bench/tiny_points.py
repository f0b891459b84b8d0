"""Tokens/s of a study's grid points in raylm's training loop against a plain PyTorch loop, as JSON.

    python bench/tiny_points.py [--steps 120] [--rounds 3] [--study jobs/configs/study_demo.yaml]

A scaling study's smallest points have 6K-90K parameters: there a step is a few milliseconds and
what the loop does around the model (DeepSpeed's engine, metrics, loaders) decides the speed. For
the smallest and the largest point of the demo study's grid, this trains the point's own run
config in this process, once through raylm's worker loop (:class:`raylm.train.loop.WorkerRun`,
a DeepSpeed engine on a world-size-1 process group, exactly as an in-process trial runs it) and
once through a plain PyTorch loop over the same model, optimizer, schedule, gradient clipping
and batches (forward, backward, clip, step, ``loss.item()``), alternating, with one thread as a
one-CPU trial has. Tokens/s are the medians of timed windows after a warm-up; the figure is
raylm / plain (goal: at least 0.9). For a point with d_model up to ``NARROW_WIDTH`` (the smallest,
8) the plain loop also runs with an ``nn.Linear`` output head in place of
:class:`raylm.model.output_projection.OutputProjection`, whose narrow-side-first backward is what
that figure measures. Writes the ``tiny_points`` section of ``bench/results.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import Figure, alternate, emit  # noqa: E402 - bench/ is on sys.path (the script's folder)

GOAL_RATIO = 0.9
WINDOW_STEPS = 10
REPO = Path(__file__).resolve().parents[1]


def point_configs(study_path: Path, steps: int) -> dict:
    """The smallest and the largest grid point's run config, shortened to ``steps`` with no pause inside."""
    from raylm.study.config import load_study
    from raylm.study.grid import build_grid, point_config

    study = load_study(study_path, [])
    grid = build_grid(study)
    chosen = {"smallest": min(grid, key=lambda p: p.grid.params), "largest": max(grid, key=lambda p: p.grid.params)}
    configs = {}
    for name, point in chosen.items():
        cfg = point_config(study, point)
        train = cfg.train.model_copy(update={"max_steps": steps, "log_every": WINDOW_STEPS, "eval_every": steps,
                                             "checkpoint_every": steps, "eval_batches": 1, "warmup_steps": 1})
        tracking = cfg.tracking.model_copy(update={"enabled": False, "system_metrics_every_s": 0})
        configs[name] = (point, cfg.model_copy(update={"train": train, "tracking": tracking}))
    return configs


def raylm_tokens_per_second(cfg, dataset, workdir: Path) -> float:
    """The loop's own steady tokens/s (``perf/tokens_per_second`` of every window but the first)."""
    from raylm.train.loop import WorkerRun
    from raylm.train.run import _single_process_group_env, worker_runtime

    _single_process_group_env()
    seen: list[float] = []

    class Measured(WorkerRun):
        def _log(self, metrics):
            if "perf/tokens_per_second" in metrics:
                seen.append(metrics["perf/tokens_per_second"])

    run_name = f"run-{time.perf_counter_ns()}"
    Measured(cfg, worker_runtime(dataset, {}, str(workdir), run_name, in_process=True), 0, 1).run()
    return statistics.median(seen[1:])


def plain_tokens_per_second(cfg, dataset, linear_head: bool = False) -> float:
    """A plain PyTorch loop over the same model, optimizer, schedule, clipping and batches; ``linear_head``:
    with a plain ``nn.Linear`` output head holding the same (tied) weight."""
    import torch

    from raylm.data.loader import TokenLoader
    from raylm.data.tokenizer import SpecialTokens
    from raylm.model import build_model
    from raylm.train.batches import model_inputs, objective_generator
    from raylm.train.optimizers import build_optimizer, build_scheduler

    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    if linear_head:
        head = torch.nn.Linear(cfg.model.d_model, cfg.model.vocab_size, bias=False)
        head.weight = model.lm_head.weight
        model.lm_head = head
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    specials = SpecialTokens.from_dict(dataset.special_tokens().to_dict())
    loader = TokenLoader(dataset.location, "train", batch_size=cfg.train.micro_batch_size, rank=0, world_size=1,
                         seed=cfg.data.seed, shuffle=True)
    tokens_per_step = cfg.train.micro_batch_size * cfg.train.seq_len
    rates, start = [], time.perf_counter()
    for step in range(cfg.train.max_steps):
        inputs = model_inputs(cfg.model.arch, next(loader), specials, cfg.model.vocab_size,
                              objective_generator(cfg.train.seed, step, 0, 0))
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        if (step + 1) % WINDOW_STEPS == 0:
            now = time.perf_counter()
            rates.append(tokens_per_step * WINDOW_STEPS / (now - start))
            start = now
    return statistics.median(rates[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--study", type=Path, default=REPO / "jobs" / "configs" / "study_demo.yaml")
    args = parser.parse_args()
    started_at = time.perf_counter()
    import torch

    from raylm.model.output_projection import NARROW_WIDTH
    from raylm.parallel.plan import make_plan
    from raylm.train.run import prepare_data

    torch.set_num_threads(1)
    workdir = Path(tempfile.mkdtemp(prefix="raylm-bench-tiny-"))
    figures, details = [], {"steps": args.steps, "rounds": args.rounds, "threads": 1, "points": {}}
    for name, (point, cfg) in point_configs(args.study, args.steps).items():
        dataset = prepare_data(cfg, make_plan(cfg))
        contenders = {"raylm": lambda c=cfg, d=dataset: raylm_tokens_per_second(c, d, workdir),
                      "plain": lambda c=cfg, d=dataset: plain_tokens_per_second(c, d)}
        if cfg.model.d_model <= NARROW_WIDTH:  # only there does the output projection differ from nn.Linear
            contenders["plain_linear_head"] = lambda c=cfg, d=dataset: plain_tokens_per_second(c, d, linear_head=True)
        runs = alternate(args.rounds, contenders)
        ratios = [r / p for r, p in zip(runs["raylm"], runs["plain"], strict=True)]
        raylm, plain = statistics.median(runs["raylm"]), statistics.median(runs["plain"])
        details["points"][name] = {"label": point.label, "params": point.grid.params,
                                   "raylm_tokens_per_s": runs["raylm"], "plain_tokens_per_s": runs["plain"],
                                   "ratios": ratios}
        figures.append(Figure(f"grid point tokens/s, {name} ({point.grid.params:,} params): raylm / plain PyTorch",
                              raylm, plain, "tokens/s", anchor_name="plain PyTorch loop", goal=GOAL_RATIO,
                              ratio=statistics.median(ratios), notes=f"{point.label}, 1 thread, {args.steps} steps"))
        if "plain_linear_head" in runs:
            head_ratios = [p / q for p, q in zip(runs["plain"], runs["plain_linear_head"], strict=True)]
            details["points"][name]["plain_linear_head_tokens_per_s"] = runs["plain_linear_head"]
            figures.append(Figure(f"grid point tokens/s, {name} (d_model {cfg.model.d_model}): output projection vs "
                                  "nn.Linear head (plain loop)", plain, statistics.median(runs["plain_linear_head"]),
                                  "tokens/s", anchor_name="nn.Linear head", ratio=statistics.median(head_ratios),
                                  notes="narrow-side-first backward (raylm/model/output_projection.py)"))
    emit("tiny_points", figures, details, started_at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
