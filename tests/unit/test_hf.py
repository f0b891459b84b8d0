"""Hugging Face interop: imported GPT-2/BERT and exported GPT-2 compute what ``transformers`` computes."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from tests.unit.model_cases import make_config  # noqa: E402

from raylm.config import ModelConfig  # noqa: E402
from raylm.errors import UserError  # noqa: E402
from raylm.model import build_model  # noqa: E402
from raylm.model.hf import export_hf, hf_config_to_model_config, load_hf  # noqa: E402

TOL = 1e-4
VOCAB, SEQ = 57, 16


def _jitter(model: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter off its init (zero biases, unit norms) so that a misplaced tensor shows."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _save(model, path, fmt: str):
    """Save in Hugging Face layout; ``bin`` writes a torch state dict as older checkpoints have it."""
    if fmt == "safetensors":
        model.save_pretrained(path)
    else:
        path.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(path)
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    return path


def _gpt2(**overrides):
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=SEQ,
                                     bos_token_id=0, eos_token_id=0, **overrides)
    return _jitter(transformers.GPT2LMHeadModel(config))


def _bert(cls, **overrides):
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=48,
                                     vocab_size=VOCAB, max_position_embeddings=SEQ, **overrides)
    return _jitter(getattr(transformers, cls)(config))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("fmt, overrides", [
    ("safetensors", {}),
    ("bin", {"activation_function": "gelu", "n_inner": 40, "tie_word_embeddings": False}),
])
def test_gpt2_import_matches_transformers(tmp_path, fmt, overrides):
    torch.manual_seed(0)
    reference = _gpt2(**overrides)
    ours = load_hf(_save(reference, tmp_path / "gpt2", fmt))
    assert ours.cfg.activation == ("gelu" if overrides else "gelu_tanh")
    assert (ours.lm_head.weight is ours.embed.tokens.weight) == (not overrides)
    ids = torch.randint(VOCAB, (2, SEQ))
    with torch.no_grad():
        assert _max_diff(ours(ids), reference(ids).logits) < TOL


def _mlm_logits(output) -> torch.Tensor:
    """MLM logits of a BertForMaskedLM (``logits``) or BertForPreTraining (``prediction_logits``) output."""
    return output.prediction_logits if hasattr(output, "prediction_logits") else output.logits


@pytest.mark.parametrize("cls, fmt", [("BertForMaskedLM", "bin"), ("BertForPreTraining", "safetensors")])
def test_bert_import_matches_transformers(tmp_path, fmt, cls):
    torch.manual_seed(1)
    reference = _bert(cls)
    ours = load_hf(_save(reference, tmp_path / "bert", fmt))
    assert ours.cfg.nsp_head == (cls == "BertForPreTraining")
    ids, segments = torch.randint(VOCAB, (2, SEQ)), torch.randint(2, (2, SEQ))
    mask = torch.ones(2, SEQ, dtype=torch.long)
    mask[1, 11:] = 0
    with torch.no_grad():
        theirs = reference(ids, token_type_ids=segments, attention_mask=mask)
        mine = ours(ids, segment_ids=segments, attention_mask=mask, mlm_labels=ids)
        assert _max_diff(mine.logits, _mlm_logits(theirs)) < TOL
        assert _max_diff(ours(ids), _mlm_logits(reference(ids))) < TOL
        if cls == "BertForPreTraining":
            assert _max_diff(mine.extra_logits, theirs.seq_relationship_logits) < TOL


def _our_gpt(**overrides) -> tuple[torch.nn.Module, ModelConfig]:
    cfg = make_config("gpt", vocab_size=VOCAB, max_seq_len=SEQ, **overrides)
    return _jitter(build_model(cfg)), cfg


@pytest.mark.parametrize("overrides", [{"activation": "gelu_tanh"}, {"activation": "gelu", "tie_embeddings": False,
                                                                     "norm_eps": 1e-6, "d_ff": 40}])
def test_gpt_export_loads_in_transformers_and_round_trips(tmp_path, overrides):
    torch.manual_seed(2)
    model, cfg = _our_gpt(**overrides)
    out = export_hf(model, cfg, tmp_path / "hf")
    reference = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    ids = torch.randint(VOCAB, (3, SEQ))
    with torch.no_grad():
        expected = model(ids)
        assert _max_diff(reference(ids).logits, expected) < TOL
        again = load_hf(out)
        assert again.cfg == cfg
        assert torch.equal(again(ids), expected)


def test_export_lists_every_incompatible_option(tmp_path):
    model, cfg = _our_gpt(pos_encoding="rope", norm="rmsnorm", activation="swiglu", n_kv_heads=2,
                          moe={"n_experts": 2, "every": 1}, bias=False)
    with pytest.raises(UserError) as err:
        export_hf(model, cfg, tmp_path / "hf")
    for option in ("pos_encoding='rope'", "norm='rmsnorm'", "activation='swiglu'", "n_kv_heads=2",
                   "moe.n_experts=2", "bias=False"):
        assert option in str(err.value)
    bert_cfg = make_config("bert")
    with pytest.raises(UserError, match="arch='bert'"):
        export_hf(build_model(bert_cfg), bert_cfg, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("config, message", [
    ({"model_type": "llama"}, "model_type 'llama' is not supported"),
    ({"model_type": "gpt2", "scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"model_type": "gpt2", "activation_function": "quick_gelu"}, "activation_function: 'quick_gelu'"),
    ({"model_type": "bert", "position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"model_type": "bert", "hidden_size": 30, "num_attention_heads": 4}, "divisible by n_heads"),
])
def test_unsupported_configs_are_user_errors(config, message):
    with pytest.raises(UserError, match=message):
        hf_config_to_model_config(config)


def test_broken_directories_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_hf(tmp_path / "missing")
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1}))
    with pytest.raises(UserError, match="no weights"):
        load_hf(tmp_path / "no_weights")
    torch.manual_seed(3)
    path = _save(_gpt2(), tmp_path / "gpt2", "safetensors")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "n_layer": 1}))  # weights hold one more block
    with pytest.raises(UserError, match="cannot place: h.1"):
        load_hf(path)
    (path / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(UserError, match="lack 'h.2"):
        load_hf(path)
    bert = _save(transformers.BertModel(transformers.BertConfig(
        num_hidden_layers=1, hidden_size=32, num_attention_heads=4, intermediate_size=48, vocab_size=VOCAB,
        max_position_embeddings=SEQ)), tmp_path / "bert", "safetensors")
    with pytest.raises(UserError, match="without its masked-LM head"):
        load_hf(bert)


def test_pickled_objects_are_refused(tmp_path):
    torch.manual_seed(4)
    path = _save(_gpt2(), tmp_path / "gpt2", "bin")
    torch.save({"weights": torch.zeros(1), "code": ModelConfig()}, path / "pytorch_model.bin")
    with pytest.raises(UserError, match="cannot read weights"):
        load_hf(path)


def test_platform_never_imports_transformers(repo_root):
    offenders = [str(path.relative_to(repo_root)) for path in (repo_root / "platform").rglob("*.py")
                 if any(line.strip().startswith(("import transformers", "from transformers"))
                        for line in path.read_text(encoding="utf-8").splitlines())]
    assert offenders == []
