"""A sweep file over a tiny training run (a 2-layer GPT on a slice of the stdlib corpus) for the start-up benchmarks."""

from __future__ import annotations

from pathlib import Path

import yaml

TINY_RUN = {
    "model": {"arch": "gpt", "vocab_size": 512, "max_seq_len": 32, "d_model": 32, "n_layers": 2, "n_heads": 4},
    "data": {"corpus": "stdlib", "max_docs": 80, "val_fraction": 0.1},
    "parallel": {"num_workers": 1, "cpus_per_worker": 0.5, "zero_stage": 0},
    "train": {"lr": 3e-3, "warmup_steps": 1, "max_steps": 6, "micro_batch_size": 4, "global_batch_size": 4,
              "seq_len": 32, "log_every": 1, "eval_every": 3, "eval_batches": 1, "checkpoint_every": 3},
}


def write_sweep(tmp: Path, search: dict, base: dict | None = None, **settings) -> Path:
    """A sweep of ``search`` over the tiny run, with ``base`` sections merged in; its file path."""
    run = {key: dict(value) for key, value in TINY_RUN.items()}
    for section, values in (base or {}).items():
        run.setdefault(section, {}).update(values)
    run["data"]["shards_dir"] = str(tmp / "tokens")
    run["tracking"] = {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "sweeps"}
    sweep = {"name": "t", "output_dir": str(tmp / "sweeps"), "base": run, "search": search,
             "scheduler": {"name": "fifo"}, **settings}
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path
