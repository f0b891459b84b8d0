"""Training throughput of the parallel layouts on this machine, as JSON.

    python bench/train_throughput.py [--steps 30] [--layouts zero0,zero2,zero3,pp2,tp2,sp2]

Each layout trains the same small GPT with 2 Ray workers on the embedded corpus; tokens/s,
step time and MFU are the medians of the logged steps after the first few (start-up and
JIT compilation excluded). Ratios are against the first layout, measured in the same run,
so a busy machine affects them less than the absolute figures. Writes the ``train_throughput``
section of ``bench/results.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import Figure, emit

LAYOUTS = {
    "zero0": {"parallel": {"zero_stage": 0}},
    "zero1": {"parallel": {"zero_stage": 1}},
    "zero2": {"parallel": {"zero_stage": 2}},
    "zero3": {"parallel": {"zero_stage": 3}},
    "pp2": {"parallel": {"zero_stage": 1, "pp": 2}},
    "tp2": {"parallel": {"tp": 2}},  # tensor parallel: heads and MLP columns split, one replica
    "sp2": {"parallel": {"sp": 2}},  # sequence parallel (Ulysses): 64 of the 128 tokens per rank, one replica
}


def config(workdir: Path, steps: int, layout: dict):
    from raylm.config import RunConfig

    data = {
        "name": "bench", "output_dir": str(workdir / "runs"),
        "model": {"arch": "gpt", "vocab_size": 2048, "max_seq_len": 128, "d_model": 128, "n_layers": 4,
                  "n_heads": 4},
        "data": {"corpus": "stdlib", "max_docs": 400, "shards_dir": str(workdir / "tokens")},
        "parallel": {"num_workers": 2},
        "train": {"max_steps": steps, "micro_batch_size": 8, "global_batch_size": 32, "seq_len": 128,
                  "log_every": 1, "eval_every": 10_000, "eval_batches": 1, "checkpoint_every": 10_000,
                  "warmup_steps": 2},
        "tracking": {"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}", "experiment": "bench"},
    }
    for section, values in layout.items():
        data[section].update(values)
    return RunConfig.from_dict(data)


def median_metric(result, name: str, skip: int) -> float:
    from mlflow.tracking import MlflowClient

    history = MlflowClient(result.tracking_uri).get_metric_history(result.mlflow_run_id, name)
    values = [m.value for m in sorted(history, key=lambda m: m.step) if m.step > skip]
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--layouts", default="zero0,zero2,zero3,pp2,tp2,sp2")
    args = parser.parse_args()
    started = time.perf_counter()
    from raylm.train.run import run_training

    names = args.layouts.split(",")
    results = {}
    with tempfile.TemporaryDirectory(prefix="raylm-bench-") as tmp:
        for name in names:
            print(f"bench: training layout {name}", file=sys.stderr, flush=True)
            result = run_training(config(Path(tmp), args.steps, LAYOUTS[name]))
            results[name] = {metric: median_metric(result, f"perf/{metric}", skip=5)
                             for metric in ("tokens_per_second", "step_seconds", "mfu")}
    base = results[names[0]]["tokens_per_second"]
    for values in results.values():
        values["throughput_vs_" + names[0]] = values["tokens_per_second"] / base
    figures = [Figure(f"train tok/s, 2 workers: {name} vs {names[0]}", results[name]["tokens_per_second"], base,
                      "tok/s", names[0]) for name in names[1:]]
    emit("train_throughput", figures, {"workers": 2, "device": "cpu", "steps": args.steps, "layouts": results},
         started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
