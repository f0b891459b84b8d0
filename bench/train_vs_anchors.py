"""Training throughput of raylm against what a user would run instead, on the same model and data.

    python bench/train_vs_anchors.py [--steps 40] [--anchor-steps 15] [--repeats 2]

One model shape (the tiny GPT: d_model 128, 4 layers, 4 heads, vocab 4096, 16 sequences of
128 tokens per optimizer step), one token dataset (the stdlib corpus), AdamW with gradient
clipping at 1.0 and the same warmup-cosine schedule everywhere:

* ``plain``: a single-process PyTorch loop over raylm's own model (``build_model``), all cores;
* ``hf``: Hugging Face ``GPT2LMHeadModel`` with SDPA attention, the same shape and initial
  weights (through raylm's GPT-2 export), the same loop;
* ``raylm_1w``: ``raylm train`` (Ray Train + DeepSpeed ZeRO-0) with one worker holding all cores;
* ``raylm_2w``: the same with two workers of one core each (data parallel, 8 sequences each).

Tokens per second is the median over steady-state steps (the first ``--skip`` of each are left
out): for the raylm runs the ``perf/tokens_per_second`` their rank 0 logged every step (data
loading, forward, backward, clipping, the update and the loss all-reduce), for the anchors the
same work timed in this process. Plain and Hugging Face run in rounds that alternate with the
raylm runs (``plain, hf, raylm_1w, hf, plain, raylm_2w, ...``, ``--repeats`` runs of each raylm
layout), so load changes on the machine hit all of them; a raylm run is compared with the
anchor rounds just before and after it, and the ratios reported are the medians over runs.
Goals: raylm_1w / plain >= 0.97, raylm_1w / hf >= 1.2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import Figure, alternate, emit, log, median, steady

TOKENS_GOAL_PLAIN, TOKENS_GOAL_HF = 0.97, 1.2


def run_config(workdir: Path, workers: int, steps: int):
    from raylm.config import RunConfig

    cores = os.cpu_count() or 1
    return RunConfig.from_dict({
        "name": f"bench-anchors-{workers}w", "output_dir": str(workdir / "runs"),
        "model": {"arch": "gpt", "vocab_size": 4096, "max_seq_len": 128, "d_model": 128, "n_layers": 4,
                  "n_heads": 4},
        "data": {"corpus": "stdlib", "max_docs": 400, "shards_dir": str(workdir / "tokens")},
        "parallel": {"num_workers": workers, "zero_stage": 0, "cpus_per_worker": max(1, cores // workers)},
        "optim": {"name": "adamw"},
        "train": {"max_steps": steps, "micro_batch_size": 16 // workers, "global_batch_size": 16, "seq_len": 128,
                  "lr": 3e-3, "warmup_steps": 5, "grad_clip": 1.0, "log_every": 1, "eval_every": 100_000,
                  "eval_batches": 1, "checkpoint_every": 100_000},
        "tracking": {"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}", "experiment": "bench",
                     "system_metrics_every_s": 0},
    })


class AnchorLoop:
    """A plain PyTorch training loop over ``model``; each call of :meth:`steps` times ``n`` more steps."""

    def __init__(self, cfg, model, dataset_dir: str, logits_only: bool):
        import torch

        from raylm.data.loader import TokenLoader
        from raylm.train.optimizers import build_optimizer, build_scheduler

        self.torch, self.cfg, self.model, self.logits_only = torch, cfg, model.train(), logits_only
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.loader = TokenLoader(dataset_dir, "train", batch_size=cfg.train.global_batch_size, rank=0,
                                  world_size=1, seed=cfg.data.seed)
        self.tokens_per_step = cfg.train.global_batch_size * cfg.train.seq_len
        self.losses: list[float] = []

    def _loss(self, batch):
        if not self.logits_only:
            return self.model(batch.inputs, targets=batch.targets).loss
        logits = self.model(input_ids=batch.inputs).logits  # Hugging Face: its own logits, our loss
        return self.torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.targets.flatten())

    def steps(self, n: int) -> list[float]:
        """Tokens/s of each of ``n`` steps: batch, forward, backward, clip, update, loss to Python."""
        out = []
        for _ in range(n):
            start = time.perf_counter()
            batch = next(self.loader)
            loss = self._loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.losses.append(loss.item())
            out.append(self.tokens_per_step / (time.perf_counter() - start))
        return out


def hf_gpt2(model, cfg, out_dir: Path):
    """``transformers.GPT2LMHeadModel`` with SDPA attention and ``model``'s weights (raylm's GPT-2 export)."""
    from transformers import GPT2LMHeadModel

    from raylm.model.hf import export_hf

    export_hf(model, cfg.model, out_dir)
    hf = GPT2LMHeadModel.from_pretrained(out_dir, attn_implementation="sdpa")
    assert hf.config._attn_implementation == "sdpa", hf.config._attn_implementation
    return hf


def raylm_tokens_per_second(result, skip: int) -> list[float]:
    from mlflow.tracking import MlflowClient

    history = MlflowClient(result.tracking_uri).get_metric_history(result.mlflow_run_id, "perf/tokens_per_second")
    return steady([m.value for m in sorted(history, key=lambda m: m.step)], skip)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps of each raylm run")
    parser.add_argument("--anchor-steps", type=int, default=15, help="timed steps of each anchor round")
    parser.add_argument("--skip", type=int, default=5, help="start-up steps left out of each median")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each raylm layout")
    args = parser.parse_args()
    started = time.perf_counter()

    import torch

    from raylm.data.prepare import prepare_dataset
    from raylm.model import build_model
    from raylm.ray_session import connect_ray
    from raylm.train.run import run_training

    torch.set_num_threads(os.cpu_count() or 1)
    workdir = Path(tempfile.mkdtemp(prefix="raylm-bench-anchors-"))
    cfg1, cfg2 = (run_config(workdir, w, args.steps) for w in (1, 2))
    connect_ray()
    dataset = prepare_dataset(cfg1, log=lambda *_: None)
    torch.manual_seed(cfg1.train.seed)
    ours = build_model(cfg1.model)
    hf = hf_gpt2(ours, cfg1, workdir / "hf")
    anchors = {"plain": AnchorLoop(cfg1, ours, dataset.location, logits_only=False),
               "hf": AnchorLoop(cfg1, hf, dataset.location, logits_only=True)}
    for loop in anchors.values():  # warm-up, not timed: allocator, kernels, first batches
        loop.steps(args.skip)

    timed = {name: (lambda loop=loop: loop.steps(args.anchor_steps)) for name, loop in anchors.items()}
    anchor_rounds: list[dict[str, float]] = []  # the median tokens/s of each anchor in each round

    def anchor_round() -> None:
        got = alternate(1, timed if len(anchor_rounds) % 2 == 0 else dict(reversed(timed.items())))
        anchor_rounds.append({name: median(values[0]) for name, values in got.items()})

    runs: dict[str, list[dict]] = {"raylm_1w": [], "raylm_2w": []}
    anchor_round()
    for repeat in range(args.repeats):
        for name, cfg in (("raylm_1w", cfg1), ("raylm_2w", cfg2)):
            log(f"{name} run {repeat + 1}/{args.repeats}")
            before = len(anchor_rounds) - 1
            result = run_training(cfg)
            tps = median(raylm_tokens_per_second(result, args.skip))
            anchor_round()
            around = anchor_rounds[before:]
            plain, hf_tps = median(r["plain"] for r in around), median(r["hf"] for r in around)
            runs[name].append({"tokens_per_second": tps, "plain_around": plain, "hf_around": hf_tps,
                               "vs_plain": tps / plain, "vs_hf": tps / hf_tps})

    def summary(name: str) -> dict:
        r = runs[name]
        return {"tokens_per_second": median(x["tokens_per_second"] for x in r),
                "vs_plain": median(x["vs_plain"] for x in r), "vs_hf": median(x["vs_hf"] for x in r), "runs": r}

    one, two = summary("raylm_1w"), summary("raylm_2w")
    plain = median(r["plain"] for r in anchor_rounds)
    hf_tps = median(r["hf"] for r in anchor_rounds)
    note = "median of per-run ratios to the anchor rounds around each run"
    figures = [  # the ratios judged are the per-run (load-paired) ones, not those of the overall medians
        Figure("train tok/s, raylm 1 worker vs plain PyTorch", one["tokens_per_second"], plain, "tok/s",
               "plain PyTorch", goal=TOKENS_GOAL_PLAIN, ratio=one["vs_plain"], notes=note),
        Figure("train tok/s, raylm 1 worker vs HF GPT2LMHeadModel (SDPA)", one["tokens_per_second"], hf_tps,
               "tok/s", "HF GPT-2", goal=TOKENS_GOAL_HF, ratio=one["vs_hf"], notes=note),
        Figure("train tok/s, raylm 2 workers (1 core each) vs plain PyTorch", two["tokens_per_second"], plain,
               "tok/s", "plain PyTorch", ratio=two["vs_plain"], notes=note),
    ]
    details = {
        "model": {"d_model": 128, "n_layers": 4, "n_heads": 4, "vocab_size": 4096, "seq_len": 128,
                  "sequences_per_step": 16, "parameters": sum(p.numel() for p in ours.parameters())},
        "threads": torch.get_num_threads(), "steps_per_raylm_run": args.steps,
        "anchor_steps_per_round": args.anchor_steps,
        "skip": args.skip, "plain_tokens_per_second": plain, "hf_tokens_per_second": hf_tps,
        "plain_vs_hf": plain / hf_tps, "anchor_rounds": anchor_rounds, "raylm_1w": one, "raylm_2w": two,
        "hf_attn_implementation": hf.config._attn_implementation,
    }
    emit("train_vs_anchors", figures, details, started)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
