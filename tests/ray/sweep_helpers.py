"""Shared pieces of the sweep tests: a tiny sweep file and the MLflow runs of a sweep."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.ray.train_helpers import TINY


def write_sweep(tmp: Path, search: dict, base: dict | None = None, **settings) -> Path:
    """A sweep over the tiny training run of the Ray tests, one 1-worker trial per half CPU."""
    run = {key: dict(value) for key, value in TINY.items()}
    run["parallel"] = {"num_workers": 1, "cpus_per_worker": 0.5, "zero_stage": 0}
    run["train"].update({"micro_batch_size": 4, "global_batch_size": 4, "max_steps": 6, "eval_every": 3,
                         "checkpoint_every": 3})
    for section, values in (base or {}).items():
        run.setdefault(section, {}).update(values)
    run["data"]["shards_dir"] = str(tmp / "tokens")
    run["tracking"] = {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "sweeps"}
    sweep = {"name": "t", "output_dir": str(tmp / "sweeps"), "base": run, "search": search,
             "scheduler": {"name": "fifo"}, **settings}
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def trial_runs(tracking_uri: str, parent_run_id: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")


def steps(tracking_uri: str, run_id: str, metric: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    return sorted(m.step for m in MlflowClient(tracking_uri).get_metric_history(run_id, metric))
