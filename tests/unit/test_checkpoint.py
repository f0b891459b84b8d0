"""The portable model format: save_model/load_model round trips and errors that say what is wrong."""

from __future__ import annotations

import pytest
import torch
import yaml
from tests.unit.model_cases import logits_of, make_config

from raylm.errors import UserError
from raylm.model import build_model
from raylm.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_model, save_model

CASES = {
    "gpt-tied": ("gpt", {}),
    "gpt-untied-rope-gqa": ("gpt", {"tie_embeddings": False, "pos_encoding": "rope", "n_kv_heads": 2}),
    "bert-nsp": ("bert", {}),
    "t5": ("t5", {}),
    "gpt-moe": ("gpt", {"moe": {"n_experts": 4, "every": 1, "top_k": 2}}),
}


@pytest.mark.parametrize("case", CASES)
def test_round_trip_gives_identical_logits(tmp_path, case):
    arch, options = CASES[case]
    torch.manual_seed(0)
    cfg = make_config(arch, **options)
    model = build_model(cfg).eval()
    save_model(model, cfg, tmp_path / "ckpt")
    loaded, loaded_cfg = load_model(tmp_path / "ckpt")
    assert loaded_cfg == cfg
    assert not loaded.training
    ids = torch.randint(cfg.vocab_size, (2, 10))
    with torch.no_grad():
        assert torch.equal(logits_of(loaded, arch, ids), logits_of(model, arch, ids))
    if cfg.tie_embeddings and arch != "bert":
        assert loaded.lm_head.weight is loaded.embed.tokens.weight


def test_config_file_is_plain_yaml_and_tokenizer_is_copied(tmp_path):
    cfg = make_config("gpt")
    tokenizer = tmp_path / "tok.json"
    tokenizer.write_text('{"not": "checked here"}')
    out = save_model(build_model(cfg), cfg, tmp_path / "ckpt", tokenizer_path=tokenizer)
    assert yaml.safe_load((out / CONFIG_FILE).read_text())["d_model"] == cfg.d_model
    assert (out / "tokenizer.json").read_text() == tokenizer.read_text()


def test_missing_directory_and_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="model directory not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=f"{CONFIG_FILE}, {WEIGHTS_FILE} missing"):
        load_model(tmp_path / "empty")
    cfg = make_config("gpt")
    with pytest.raises(UserError, match="tokenizer file not found"):
        save_model(build_model(cfg), cfg, tmp_path / "ckpt", tokenizer_path=tmp_path / "missing.json")


def test_weights_that_do_not_fit_the_config_are_user_errors(tmp_path):
    cfg = make_config("gpt")
    save_model(build_model(cfg), cfg, tmp_path / "ckpt")
    other = make_config("gpt", n_layers=3)  # one block too many: missing keys
    (tmp_path / "ckpt" / CONFIG_FILE).write_text(yaml.safe_dump(other.model_dump(mode="json")))
    with pytest.raises(UserError, match="Missing key.*blocks.2"):
        load_model(tmp_path / "ckpt")
    wider = make_config("gpt", d_model=64)  # same names, other shapes
    (tmp_path / "ckpt" / CONFIG_FILE).write_text(yaml.safe_dump(wider.model_dump(mode="json")))
    with pytest.raises(UserError, match="do not fit"):
        load_model(tmp_path / "ckpt")


def test_invalid_config_file_is_a_user_error(tmp_path):
    cfg = make_config("gpt")
    save_model(build_model(cfg), cfg, tmp_path / "ckpt")
    (tmp_path / "ckpt" / CONFIG_FILE).write_text(yaml.safe_dump({**cfg.model_dump(mode="json"), "d_modle": 3}))
    with pytest.raises(UserError, match="d_modle"):
        load_model(tmp_path / "ckpt")


def test_saving_with_the_wrong_config_is_refused_before_writing(tmp_path):
    model = build_model(make_config("gpt"))
    with pytest.raises(UserError, match="blocks.2.* missing"):
        save_model(model, make_config("gpt", n_layers=3), tmp_path / "ckpt")
    with pytest.raises(UserError, match="has shape"):
        save_model(model, make_config("gpt", d_ff=64), tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()
