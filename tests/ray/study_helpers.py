"""A tiny study for the Ray tests: 3 budgets x 3 sizes of a very small GPT, seconds per point."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.ray.train_helpers import TINY


def write_study(tmp: Path, **settings) -> Path:
    run = {key: dict(value) for key, value in TINY.items()}
    run["parallel"] = {"num_workers": 1, "cpus_per_worker": 1, "zero_stage": 0}
    run["train"].update({"micro_batch_size": 4, "log_every": 5, "eval_batches": 2, "lr": 1e-2})
    run["data"]["shards_dir"] = str(tmp / "tokens")
    run["tracking"] = {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "studies"}
    study = {"name": "tiny", "output_dir": str(tmp / "studies"), "base": run,
             "family": {"aspect_ratio": 12, "head_dim": 8, "max_layers": 2, "aspect_tolerance": 2,
                        "base": {"arch": "gpt", "vocab_size": 512, "max_seq_len": 32}},
             "budgets": [2.0e8, 4.0e8, 8.0e8], "points_per_budget": 3, "spread": 3, "seq_len": 32,
             "global_batch_size": 4, "min_steps": 10, "evals_per_point": 3, "prior": {"tokens_per_param": 1},
             "targets": [2.4e9], "fit": {"simulations": 30, "level": 0.9},
             "edges": {"extend": False},  # a fixed grid of 9 points (edge extension: tests/ray/test_study_edges.py)
             **settings}
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path
