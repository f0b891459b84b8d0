"""Sweep files and search spaces: what is accepted, and every bad input named with its fix."""

from __future__ import annotations

import math

import pytest
import yaml
from tests.conftest import run_cli

from raylm.errors import ConfigError, UserError
from raylm.tune.session import concurrency
from raylm.tune.space import map_unit, sampled_values, tune_space
from raylm.tune.sweep_config import load_sweep
from raylm.tune.trial import trial_run_config

BASE = {"model": {"vocab_size": 512, "max_seq_len": 32, "d_model": 32, "n_layers": 1, "n_heads": 2},
        "train": {"max_steps": 10, "seq_len": 32}}


def write_sweep(tmp_path, search, **extra):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "base": BASE, "search": search, **extra}))
    return path


def test_a_valid_sweep_loads_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": "run.yaml", "num_samples": 2, "search": {
        "optim.name": {"choice": ["adamw", "lion"]}, "train.lr": {"loguniform": [1e-4, 1e-2]},
        "train.warmup_steps": {"grid": [1, 2]}, "train.seed": {"randint": [0, 10]},
        "train.grad_clip": {"uniform": [0.5, 2.0]}}}))
    sweep = load_sweep(path, [("train.max_steps", "7")])
    assert sweep.base["train"]["max_steps"] == 7
    assert sweep.base["output_dir"] == str(tmp_path / "runs")
    assert sweep.base["data"]["shards_dir"] == str(tmp_path / "data" / "tokens")
    assert sweep.base["tracking"]["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = tune_space(sweep.specs, "random")
    assert set(space) == {"optim.name", "train.lr", "train.warmup_steps", "train.seed", "train.grad_clip"}
    assert space["train.warmup_steps"] == {"grid_search": [1, 2]}


@pytest.mark.parametrize("search, message", [
    ({"train.lrr": {"choice": [1e-3]}}, "unknown config key 'train.lrr'; did you mean 'train.lr'?"),
    ({"optim.name": {"choice": []}}, "choice needs a non-empty list"),
    ({"train.lr": {"loguniform": [0, 1e-2]}}, "loguniform needs positive bounds"),
    ({"train.lr": {"loguniform": [1e-2, 1e-4]}}, "needs low < high"),
    ({"train.lr": {"choice": ["fast"]}}, "the value 'fast' does not fit the run config"),
    ({"optim.name": {"choice": ["adamw", "adamx"]}}, "the value 'adamx' does not fit"),
    ({"train.max_steps": {"randint": [1.5, 4]}}, "randint needs integer bounds"),
    ({"train.lr": {"sample": [1, 2]}}, "give exactly one of choice, grid, uniform, loguniform, randint"),
    ({"train.lr": 0.1}, "expected a mapping"),
    ({"data.corpus": {"choice": ["a", "b"]}}, "cannot vary within a sweep (the token shards"),
    ({"parallel.num_workers": {"choice": [1, 2]}}, "every trial reserves the same resources"),
    ({}, "give at least one key to vary"),
    ({"optim.name": {"choice": ["sgd", "adamw"]},
      "train.lr": {"loguniform": {"sgd": [0.01, 1.0]}, "given": "optim.name"}}, "no range for optim.name = adamw"),
])
def test_bad_search_entries_are_named_with_the_fix(tmp_path, search, message):
    with pytest.raises(ConfigError) as caught:
        load_sweep(write_sweep(tmp_path, search))
    assert message in str(caught.value)


def test_bad_sweep_settings(tmp_path):
    with pytest.raises(ConfigError, match="metric 'val/acc' is not reported"):
        load_sweep(write_sweep(tmp_path, {"train.lr": {"choice": [1e-3]}}, metric="val/acc"))
    with pytest.raises(ConfigError, match="'grace_perod' in section 'scheduler'; did you mean 'grace_period'"):
        load_sweep(write_sweep(tmp_path, {"train.lr": {"choice": [1e-3]}}, scheduler={"grace_perod": 3}))
    with pytest.raises(ConfigError, match="search_alg grid enumerates lists only"):
        tune_space(load_sweep(write_sweep(tmp_path, {"train.lr": {"uniform": [0.1, 0.2]}})).specs, "grid")


def test_conditional_ranges_follow_the_given_key():
    assert map_unit(0.0, "loguniform", 1e-4, 1e-2) == pytest.approx(1e-4)
    assert map_unit(0.5, "loguniform", 1e-4, 1e-2) == pytest.approx(1e-3)
    assert map_unit(0.999, "randint", 0, 10) == 9
    assert map_unit(0.25, "uniform", 1.0, 3.0) == pytest.approx(1.5)
    from raylm.tune.space import _conditional

    spec = {"kind": "loguniform", "values": {"sgd": [0.01, 1.0], "adamw": [1e-4, 1e-2]}, "given": "optim.name"}
    draw = _conditional("train.lr", spec)
    assert draw({"config": {"optim.name": "sgd", "train.lr#u": 0.5}}) == pytest.approx(0.1)
    assert math.isclose(draw({"config": {"optim.name": "adamw", "train.lr#u": 0.0}}), 1e-4)


def test_trial_config_applies_sampled_values_and_grid_points():
    cfg, given, tags = trial_run_config(BASE, {"optim.name": "lion", "train.lr": 3e-4, "train.lr#u": 0.2})
    assert cfg.optim.name == "lion" and cfg.train.lr == 3e-4
    assert given == {"optim.name": "lion", "train.lr": 3e-4} == sampled_values({**given, "train.lr#u": 0.2})
    cfg, given, tags = trial_run_config(BASE, {"point": {"overrides": {"model.d_model": 64}, "tags": {"n": 5}}})
    assert cfg.model.d_model == 64 and given == {"model.d_model": 64} and tags == {"n": 5}


def test_concurrency_fits_the_cluster_or_says_why_not():
    assert concurrency({"CPU": 1.0, "GPU": 0.0}, {"CPU": 2.0, "GPU": 0.0}, None) == 2
    assert concurrency({"CPU": 0.5, "GPU": 0.0}, {"CPU": 2.0, "GPU": 0.0}, None) == 4
    assert concurrency({"CPU": 1.0, "GPU": 0.0}, {"CPU": 2.0, "GPU": 0.0}, 1) == 1
    assert concurrency({"CPU": 1.0, "GPU": 1.0}, {"CPU": 16.0, "GPU": 2.0}, None) == 2
    with pytest.raises(UserError, match="one trial needs 4 CPUs .* but the cluster has 2; lower parallel.num_workers"):
        concurrency({"CPU": 4.0, "GPU": 0.0}, {"CPU": 2.0, "GPU": 0.0}, None)
    with pytest.raises(UserError, match="one trial needs 2 GPUs.*set trials.max_concurrent_trials"):
        concurrency({"CPU": 2.0, "GPU": 2.0}, {"CPU": 8.0, "GPU": 1.0}, None)
    notes = []  # an autoscaling cluster with no GPU node yet: the named concurrency waits for nodes
    assert concurrency({"CPU": 1.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 0.0}, 4, notes.append) == 4
    assert "needs 1 GPUs" in notes[0] and "autoscaler" in notes[0]


@pytest.mark.parametrize("search, message", [
    ({"train.lrr": {"choice": [1e-3]}}, "did you mean 'train.lr'"),
    ({"optim.name": {"choice": []}}, "non-empty list"),
    ({"train.lr": {"loguniform": [-1, 1]}}, "positive bounds"),
    ({"train.warmup_steps": {"choice": ["ten"]}}, "does not fit the run config"),
])
def test_cli_exits_2_before_any_trial(tmp_path, search, message):
    result = run_cli("sweep", "--config", str(write_sweep(tmp_path, search)), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing was launched


def test_cli_needs_a_config_or_a_sweep_to_resume(tmp_path):
    result = run_cli("sweep", cwd=tmp_path)
    assert result.returncode == 2 and "--config SWEEP.yaml" in result.stderr
    result = run_cli("sweep", "--resume", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "not a sweep directory" in result.stderr


def test_the_shipped_sweep_file_is_valid(repo_root):
    sweep = load_sweep(repo_root / "jobs" / "configs" / "sweep_optimizers.yaml")
    assert sweep.config.scheduler.name == "asha"
    assert set(sweep.specs["optim.name"]["values"]) <= set(sweep.specs["train.lr"]["values"])
