"""The config tree: defaults, YAML loading, overrides, derived values, errors and the dict round trip."""

from __future__ import annotations

import json

import pytest
import yaml

from raylm.config import RunConfig, flatten
from raylm.config_load import apply_overrides, load_config, parse_override_args, read_yaml, to_yaml
from raylm.errors import ConfigError

EXAMPLE = "jobs/configs/gpt_tiny.yaml"


def test_example_config_loads(repo_root):
    config = load_config(repo_root / EXAMPLE)
    assert config.model.arch == "gpt"
    assert config.parallel.zero_stage == 2
    assert config.optim.betas == (0.9, 0.95)


def test_every_shipped_config_is_valid(repo_root):
    paths = sorted((repo_root / "jobs" / "configs").glob("*.yaml"))
    assert paths, "jobs/configs holds no example config"
    for path in paths:
        if path.name.startswith("sweep_"):
            from raylm.tune.sweep_config import load_sweep

            load_sweep(path)
        elif path.name.startswith("study_"):
            from raylm.study.config import load_study

            load_study(path)
        else:
            load_config(path)


def test_dict_round_trip_is_lossless(repo_root):
    config = load_config(repo_root / EXAMPLE, [("model.moe.n_experts", "4"), ("tracking.run_name", "x")])
    plain = config.to_dict()
    json.dumps(plain)  # plain data only: Ray ships it to workers
    assert RunConfig.from_dict(plain) == config
    assert RunConfig.from_dict(plain).to_dict() == plain
    assert RunConfig.from_dict(yaml.safe_load(to_yaml(config))) == config


def test_derived_values_are_filled_once():
    config = RunConfig.from_dict({"model": {"d_model": 96, "n_heads": 6, "activation": "swiglu"}})
    assert config.model.n_kv_heads == 6
    assert config.model.d_ff == 256  # 8/3 * 96 = 256
    assert config.model.head_dim == 16
    t5 = RunConfig.from_dict({"model": {"arch": "t5", "n_layers": 3}})
    assert t5.model.n_decoder_layers == 3


def test_overrides_parse_both_spellings_and_types():
    pairs = parse_override_args(["--train.lr", "1e-3", "--model.arch=bert", "--optim.betas", "[0.8, 0.9]"])
    assert pairs == [("train.lr", "1e-3"), ("model.arch", "bert"), ("optim.betas", "[0.8, 0.9]")]
    config = load_config(None, pairs + [("parallel.use_gpu", "true"), ("name", "123")])
    assert config.train.lr == pytest.approx(1e-3)
    assert config.model.arch == "bert"
    assert config.optim.betas == (0.8, 0.9)
    assert config.parallel.use_gpu is True
    assert config.name == "123"  # string-typed keys keep the text


def test_top_level_keys_are_overridable():
    config = load_config(None, parse_override_args(["--name", "exp1", "--output_dir=/tmp/out"]))
    assert (config.name, config.output_dir) == ("exp1", "/tmp/out")


def test_override_does_not_mutate_input():
    data = {"train": {"lr": 1.0}}
    merged = apply_overrides(data, [("train.lr", "2.0")])
    assert data == {"train": {"lr": 1.0}} and merged["train"]["lr"] == 2.0


def test_unknown_key_names_key_section_and_closest_match():
    with pytest.raises(ConfigError) as err:
        load_config(None, [("train.lrr", "1e-3")])
    message = str(err.value)
    assert "'lrr'" in message and "section 'train'" in message and "did you mean 'lr'" in message
    assert "--train.lrr" in message


def test_unknown_section_and_nested_key():
    with pytest.raises(ConfigError, match=r"unknown key 'modle' in the top level.*did you mean 'model'"):
        RunConfig.from_dict({"modle": {}})
    with pytest.raises(ConfigError, match=r"unknown key 'n_expert' in section 'model.moe'.*'n_experts'"):
        RunConfig.from_dict({"model": {"moe": {"n_expert": 2}}})


def test_wrong_type_names_field_value_and_expected_type():
    with pytest.raises(ConfigError) as err:
        load_config(None, [("train.lr", "fast")])
    message = str(err.value)
    assert "train.lr" in message and "'fast'" in message and "expected float" in message
    with pytest.raises(ConfigError, match=r"model.arch.*'gtp'.*one of 'gpt', 'bert', 't5'"):
        load_config(None, [("model.arch", "gtp")])


def test_invalid_values_explain_the_fix():
    with pytest.raises(ConfigError, match=r"d_model \(100\) must be divisible by n_heads \(8\); try n_heads=5"):
        RunConfig.from_dict({"model": {"d_model": 100, "n_heads": 8}})
    with pytest.raises(ConfigError, match=r"zero_stage must be 0, 1, 2 or 3, got 4"):
        RunConfig.from_dict({"parallel": {"zero_stage": 4}})
    with pytest.raises(ConfigError, match=r"train.seq_len \(512\) exceeds model.max_seq_len \(256\)"):
        RunConfig.from_dict({"train": {"seq_len": 512}})


def test_yaml_tab_indentation_names_file_line_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n\tlr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        read_yaml(bad)
    assert f"{bad}:2:1" in str(err.value)
    assert "tab" in str(err.value)


def test_yaml_duplicate_key_and_non_mapping(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("train:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:3:3: .*duplicate key 'lr' \(first given on line 2\)"):
        read_yaml(dup)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        read_yaml(scalar)


def test_missing_file_and_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        read_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="has no value"):
        parse_override_args(["--train.lr"])
    with pytest.raises(ConfigError, match=r"--lr must name a section and a key; did you mean --train.lr\?"):
        parse_override_args(["--lr", "1"])
    with pytest.raises(ConfigError, match=r"did you mean --data.seed or --train.seed\?"):
        parse_override_args(["--seed=1"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"train": {"lr": 1}}, [("train.lr.x", "1")])


def test_flatten_gives_dotted_names():
    flat = flatten(RunConfig().to_dict())
    assert flat["train.lr"] == RunConfig().train.lr
    assert flat["model.moe.n_experts"] == 0


def test_schema_covers_every_section():
    schema = RunConfig.model_json_schema()
    for section in ("model", "data", "parallel", "optim", "train", "tracking"):
        assert section in schema["properties"]
    assert schema["additionalProperties"] is False
