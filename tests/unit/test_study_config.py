"""Study files and grids: the grid a study trains, and every impossible grid named before training."""

from __future__ import annotations

import pytest
import yaml
from tests.conftest import run_cli
from tests.ray.study_helpers import write_study

from raylm.errors import UserError
from raylm.study.config import load_study
from raylm.study.grid import build_grid, point_key, verification_point
from raylm.study.run import check_corpus


def edit(tmp_path, **changes):
    path = write_study(tmp_path)
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


def test_grid_has_every_budget_with_its_own_schedule(tmp_path):
    study = load_study(write_study(tmp_path))
    grid = build_grid(study)
    assert [p.grid.budget for p in grid] == [2e8] * 3 + [4e8] * 3 + [8e8] * 3
    for p in grid:
        o = p.overrides
        assert o["train.max_steps"] == p.grid.steps
        assert o["train.eval_every"] == max(1, p.grid.steps // 3) and 0 <= o["train.warmup_steps"] < p.grid.steps
        # checkpoints along the run, each at an evaluation (3 evaluations, 3 checkpoints: every evaluation)
        assert o["train.checkpoint_every"] == o["train.eval_every"] < p.grid.steps
        assert o["model.d_model"] == p.grid.model["d_model"]
        assert abs(p.grid.flops / p.grid.budget - 1) < 0.1
    ends_only = build_grid(load_study(write_study(tmp_path, checkpoints_per_point=1)))
    assert all(p.overrides["train.checkpoint_every"] == p.grid.steps for p in ends_only)
    for p in grid:  # warmup of N tokens (grows with size), at most a quarter of the run
        tokens_per_step = p.grid.global_batch_size * p.grid.seq_len
        assert p.grid.warmup == min(round(p.grid.params / tokens_per_step), int(0.25 * p.grid.steps))
    assert len({p.grid.params for p in grid}) >= 4


def test_point_keys_depend_on_config_and_data_only(tmp_path):
    study = load_study(write_study(tmp_path))
    grid = build_grid(study)
    keys = {point_key(study, p, "m1") for p in grid}
    assert len(keys) == 9
    assert point_key(study, grid[0], "m1") != point_key(study, grid[0], "m2")
    moved = load_study(edit(tmp_path, output_dir=str(tmp_path / "elsewhere")))
    assert point_key(moved, build_grid(moved)[0], "m1") == point_key(study, grid[0], "m1")


def test_verification_point_is_the_closest_model_at_the_target(tmp_path):
    study = load_study(write_study(tmp_path))
    point = verification_point(study, 2.4e9, 12_000)
    assert point.kind == "verify" and abs(point.grid.flops / 2.4e9 - 1) < 0.05
    assert 8_000 < point.grid.params < 20_000


@pytest.mark.parametrize("changes, message", [
    ({"min_steps": 60}, "below min_steps=60"),
    ({"budgets": [4.0e8, 2.0e8, 8.0e8]}, "budgets must be positive and increasing"),
    ({"points_per_budget": 2}, "needs 3 or more"),
    ({"targets": [8.0e8]}, "not above the grid's largest budget"),
    ({"family": {"aspect_ratio": 12, "head_dim": 8, "max_layers": 1, "aspect_tolerance": 1,
                 "base": {"vocab_size": 512, "max_seq_len": 32}}, "spread": 1.5}, "distinct model sizes"),
    ({"budgetz": [1.0]}, "unknown key 'budgetz'"),
    ({"budgets": [1.0e3, 4.0e8, 8.0e8]}, "less than one step"),
])
def test_impossible_grids_exit_2_before_training(tmp_path, monkeypatch, capsys, changes, message):
    """``raylm study``'s own entry point in this process (seconds each); the console script in a subprocess is
    checked once below."""
    from raylm.cli import main

    path = edit(tmp_path, **changes)
    monkeypatch.chdir(tmp_path)
    assert main(["study", "--config", str(path)]) == 2
    said = capsys.readouterr()
    assert message in said.err and "Traceback" not in said.err, said.out + said.err
    assert not (tmp_path / "studies").exists()


def test_the_study_command_exits_2_in_a_subprocess(tmp_path):
    result = run_cli("study", "--config", str(edit(tmp_path, points_per_budget=2)), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "needs 3 or more" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "studies").exists()


def test_fit_simulations_and_its_earlier_name(tmp_path):
    assert load_study(write_study(tmp_path, fit={"simulations": 30})).config.fit.simulations == 30
    assert load_study(write_study(tmp_path, fit={"bootstrap": 40})).config.fit.simulations == 40
    with pytest.raises(UserError, match="give fit.simulations only"):
        load_study(write_study(tmp_path, fit={"bootstrap": 40, "simulations": 30}))


def test_a_corpus_too_small_for_the_largest_point_is_refused(tmp_path):
    grid = build_grid(load_study(write_study(tmp_path)))
    largest = max(p.grid.tokens for p in grid)
    warnings = []
    check_corpus(grid, largest // 2, warnings.append)
    assert "repeats the data" in warnings[0] and "2.00 epochs" in warnings[0]
    with pytest.raises(UserError, match="the corpus is too small: .* lower the budgets or use a larger corpus"):
        check_corpus(grid, largest // 10, warnings.append)


def test_the_demo_study_file_is_valid(repo_root):
    study = load_study(repo_root / "jobs" / "configs" / "study_demo.yaml")
    grid = build_grid(study)
    assert len(grid) == 15 and min(study.config.targets) >= 3 * max(study.config.budgets)


def test_missing_fits_print_as_not_available():
    from raylm.study.summary import interval, num

    assert num(None) == "n/a" and num(float("nan")) == "n/a" and num(3.14159) == "3.1416"
    assert interval([None, 2.0]) == "[n/a, 2.0000]" and interval(None) == "[n/a]"


def test_plan_prints_grid_compute_data_and_an_estimate(tmp_path):
    from raylm.study.plan import plan_text

    study = load_study(write_study(tmp_path))
    text = plan_text(study, train_tokens=10_000, cpus=2)
    assert "3 budgets x 3 sizes = 9 runs" in text and "total compute:" in text
    assert "WARNING: the data repeats" in text and "estimated wall time:" in text and "probe:" in text
    assert "concurrency: 2 trial(s) at a time on 2 CPUs" in text and "for one trial with 2 threads" in text
    assert "per trial, in its own reused process" in text and "measured (" in text
    assert "warning: at C=2e+08 the prior's optimum, N=5,774, is 0.2 grid steps above its smallest size" in text
