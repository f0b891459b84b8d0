"""The sweep file: a base run, a search space, and how trials are scheduled.

::

    name: optimizers
    base: gpt_tiny.yaml              # a run config file (relative to this file), or the run inline
    search:                          # dotted config keys -> distributions (raylm.tune.space)
      optim.name: {grid: [adamw, sgd]}
      train.lr: {loguniform: [1.0e-4, 1.0e-2]}
    num_samples: 4                   # samples per grid combination
    metric: val/loss
    mode: min
    scheduler: {name: asha, grace_period: 20, reduction_factor: 3, time_attr: step}
    search_alg: {name: random, seed: 0}
    trials: {max_concurrent_trials: null, max_failures: 0, in_process: true}

Everything is checked when the file is loaded, before Ray starts.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import Field

from raylm import storage
from raylm.config import RunConfig, Section
from raylm.config_load import apply_overrides, load_file, read_yaml, validate
from raylm.errors import ConfigError
from raylm.tune.space import check_search


class SchedulerConfig(Section):
    """Early stopping: ASHA (Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning") or none."""

    name: Literal["asha", "fifo"] = Field("asha", description="'fifo' runs every trial to the end.")
    grace_period: int = Field(20, ge=1, description="No trial is stopped before this many time units.")
    reduction_factor: float = Field(3.0, gt=1, description="Each rung keeps the best 1/reduction_factor.")
    time_attr: Literal["step", "tokens"] = Field("step", description="Time axis: optimizer steps or tokens seen.")


class SearchAlgConfig(Section):
    """How configurations are drawn: Ray's random/grid generator, or Optuna's TPE (needs optuna)."""

    name: Literal["random", "grid", "optuna"] = "random"
    seed: Optional[int] = Field(0, description="Seed of the draws (null: a different sweep every time).")


class TrialsConfig(Section):
    """How many trials run at once, and how often a failed trial is re-run."""

    max_concurrent_trials: Optional[int] = Field(None, ge=1, description="Default: as many as the cluster fits.")
    max_failures: int = Field(0, ge=0, description="Re-runs of a failed trial (from its last checkpoint).")
    in_process: bool = Field(True, description="Train trials in their own Tune trial process (Ray Train local "
                             "mode), reused from trial to trial, with a pool of worker processes it keeps for the "
                             "ranks beyond the first; false: each trial on a new Ray Train worker group.")


class SweepConfig(Section):
    name: str = "sweep"
    output_dir: str = Field("runs/sweeps", description="The sweep's directory is output_dir/name-<time>.")
    base: Union[str, dict[str, Any]] = Field(..., description="A run config file, or the run config inline.")
    search: dict[str, Any]
    num_samples: int = Field(1, ge=1)
    metric: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    search_alg: SearchAlgConfig = Field(default_factory=SearchAlgConfig)
    trials: TrialsConfig = Field(default_factory=TrialsConfig)


class Sweep:
    """A loaded sweep: its settings, the base run as a plain dict (paths absolute) and the checked space."""

    def __init__(self, config: SweepConfig, base: dict[str, Any], specs: dict[str, dict], source: str):
        self.config, self.base, self.specs, self.source = config, base, specs, source

    @cached_property
    def base_config(self) -> RunConfig:
        """The base run, validated once (the sweep's rows and trials all read this one)."""
        return RunConfig.from_dict(self.base)

    def to_dict(self) -> dict[str, Any]:
        return {**self.config.model_dump(mode="json"), "base": self.base}


METRICS = ("val/loss", "val/perplexity", "train/loss")


def load_sweep(path: str | Path, overrides: list[tuple[str, str]] = ()) -> Sweep:
    """Read and check a sweep file; ``overrides`` (``--train.max_steps 50``) apply to the base run."""
    path = Path(path)
    config = load_file(path, SweepConfig, "sweep file")
    if config.metric not in METRICS:
        raise ConfigError(f"{path}: metric '{config.metric}' is not reported by training; use one of "
                          f"{', '.join(METRICS)}")
    check_local_directory(config.output_dir, f"{path}: output_dir", "sweep")
    base = load_base_run(config.base, path, overrides, "sweep")
    return Sweep(config, base, check_search(config.search, base), str(path))


def check_local_directory(output_dir: str, what: str, kind: str) -> None:
    """Sweeps and studies keep their state (Tune's experiment, results, plots) in a directory: a local path,
    on a cluster a mount every node sees; an ``s3://`` or ``gs://`` URI is refused with that advice."""
    if storage.is_uri(output_dir):
        raise ConfigError(f"{what} is {output_dir}, but a {kind} keeps its state, results and plots in a directory "
                          f"on a filesystem: use a local path, or on a cluster a mount every node sees (NFS, "
                          f"s3fs, gcsfuse); the base run's data.shards_dir may still be a URI (docs/storage.md)")


def load_base_run(base: str | dict[str, Any], path: Path, overrides, kind: str) -> dict[str, Any]:
    """The base run of a sweep or study file: a run config file (relative to ``path``) or the run inline,
    with ``overrides`` applied, validated, and its local paths made absolute."""
    source = str(path)
    if isinstance(base, str):
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        source, base = str(base_path), read_yaml(base_path)
    else:
        base = dict(base)
    base = apply_overrides(base, overrides)
    return absolute_paths(validate(base, f"{source} (the {kind}'s base run)", {k for k, _ in overrides}))


def absolute_paths(run: RunConfig, cwd: Path | None = None) -> dict[str, Any]:
    """The run as a plain dict with its local paths absolute: Tune runs each trial in its own working
    directory."""
    cwd = cwd or Path.cwd()
    cfg = run.to_dict()

    def fix(value: str) -> str:  # URIs (s3://, gs://) pass through untouched
        return value if "://" in value else str((cwd / value).resolve())

    cfg["output_dir"] = fix(cfg["output_dir"])
    cfg["data"]["shards_dir"] = fix(cfg["data"]["shards_dir"])
    if cfg["data"]["corpus"] != "stdlib" and (cwd / cfg["data"]["corpus"]).exists():
        cfg["data"]["corpus"] = fix(cfg["data"]["corpus"])
    if cfg["data"]["tokenizer"].endswith(".json"):
        cfg["data"]["tokenizer"] = fix(cfg["data"]["tokenizer"])
    return cfg  # tracking.tracking_uri was made absolute when the config was built
