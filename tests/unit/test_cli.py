"""The ``raylm`` command as a user runs it: help, config show/schema, exit status 2 on user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from tests.conftest import run_cli

EXAMPLE = "jobs/configs/gpt_tiny.yaml"


def test_console_script_help_lists_commands():
    script = Path(sys.executable).with_name("raylm")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "config" in result.stdout


def test_each_command_has_help():
    for args in (["config", "--help"], ["config", "show", "--help"], ["config", "schema", "--help"]):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        assert "usage:" in result.stdout


def test_config_show_applies_override():
    result = run_cli("config", "show", EXAMPLE, "--train.lr", "1e-3")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["train"]["lr"] == 1e-3


def test_misspelt_key_exits_2_with_suggestion():
    result = run_cli("config", "show", EXAMPLE, "--train.lrr", "1e-3")
    assert result.returncode == 2
    assert "lrr" in result.stderr and "did you mean 'lr'" in result.stderr
    assert "Traceback" not in result.stderr


def test_tab_indented_yaml_exits_2_with_location(tmp_path):
    bad = tmp_path / "tabs.yaml"
    bad.write_text("model:\n  arch: gpt\ntrain:\n\tlr: 0.1\n")
    result = run_cli("config", "show", str(bad))
    assert result.returncode == 2
    assert f"{bad}:4:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_flag_shows_traceback():
    result = run_cli("--debug", "config", "show", EXAMPLE, "--train.lrr", "1")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_schema_is_json():
    result = run_cli("config", "schema")
    assert result.returncode == 0, result.stderr
    assert "train" in json.loads(result.stdout)["properties"]


def test_stray_argument_is_rejected():
    result = run_cli("config", "schema", "--train.lr", "1")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


def test_overrides_without_a_file_are_not_taken_for_one():
    result = run_cli("config", "show", "--train.lr", "1e-3", "--model.arch=bert")
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["train"]["lr"] == 1e-3 and shown["model"]["arch"] == "bert"


def test_top_level_override_value_is_not_taken_for_the_file():
    result = run_cli("config", "show", "--name", "exp1", "--train.lr", "1e-3")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["name"] == "exp1"
