"""``raylm export-hf`` and ``raylm generate`` run as a user runs them, on checkpoints made here."""

from __future__ import annotations

import json

import pytest
import torch
from tests.conftest import run_cli
from tests.unit.model_cases import make_config
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from raylm.model import build_model
from raylm.model.checkpoint import load_model, save_model
from raylm.model.generate import generate
from raylm.model.hf import load_hf

TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "def main():\n    print('hello world')\n",
    "Transformers predict the next token from the ones before it.",
    "Scaling laws relate loss to parameters and tokens.",
] * 4
ENV = {"HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    """A byte-level BPE tokenizer of about 300 tokens with a pad and an end-of-text token."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(TEXT, trainer=trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def _checkpoint(root, arch: str, tokenizer_file, **options):
    torch.manual_seed(0)
    vocab = Tokenizer.from_file(str(tokenizer_file)).get_vocab_size()
    cfg = make_config(arch, vocab_size=vocab, max_seq_len=64, **options)
    return save_model(build_model(cfg), cfg, root / f"{arch}_ckpt", tokenizer_path=tokenizer_file)


def test_generate_gpt_prints_prompt_and_greedy_continuation(tmp_path, tokenizer_file):
    ckpt = _checkpoint(tmp_path, "gpt", tokenizer_file, pos_encoding="rope")
    result = run_cli("generate", str(ckpt), "--prompt", "The quick", "--max-new-tokens", "12",
                     "--temperature", "0", env=ENV)
    assert result.returncode == 0, result.stderr
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    model, _ = load_model(ckpt)
    prompt = tokenizer.encode("The quick").ids
    new = generate(model, torch.tensor([prompt]), 12, temperature=0.0,
                   eos_id=tokenizer.token_to_id("<|endoftext|>"))[0].tolist()
    assert result.stdout == tokenizer.decode(prompt + new) + "\n"
    assert result.stdout.startswith("The quick")


def test_generate_t5_samples_from_the_decoder(tmp_path, tokenizer_file):
    ckpt = _checkpoint(tmp_path, "t5", tokenizer_file)
    result = run_cli("generate", str(ckpt), "--prompt", "lazy dog", "--max-new-tokens", "8", "--top-k", "20",
                     "--top-p", "0.9", "--seed", "3", env=ENV)
    assert result.returncode == 0, result.stderr
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    model, _ = load_model(ckpt)
    eos = tokenizer.token_to_id("<|endoftext|>")
    encoder_ids = torch.tensor([tokenizer.encode("lazy dog").ids + [eos]])  # T5 inputs end with EOS
    new = generate(model, encoder_ids, 8, temperature=0.8, top_k=20, top_p=0.9, eos_id=eos, seed=3,
                   decoder_start_id=tokenizer.token_to_id("<pad>"))[0].tolist()
    assert result.stdout == "lazy dog" + tokenizer.decode(new) + "\n"


def test_export_hf_writes_a_gpt2_directory(tmp_path, tokenizer_file):
    ckpt = _checkpoint(tmp_path, "gpt", tokenizer_file, activation="gelu_tanh")
    out = tmp_path / "gpt2"
    result = run_cli("export-hf", str(ckpt), str(out), env=ENV)
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    config = json.loads((out / "config.json").read_text())
    eos = Tokenizer.from_file(str(tokenizer_file)).token_to_id("<|endoftext|>")
    assert config["model_type"] == "gpt2" and config["eos_token_id"] == eos
    assert (out / "tokenizer.json").read_text() == tokenizer_file.read_text()
    ids = torch.randint(config["vocab_size"], (1, 20))
    model, _ = load_model(ckpt)
    with torch.no_grad():
        assert torch.equal(load_hf(out)(ids), model(ids))


def test_bad_checkpoint_path_exits_2_without_traceback(tmp_path):
    result = run_cli("export-hf", str(tmp_path / "missing"), str(tmp_path / "out"), env=ENV)
    assert result.returncode == 2
    assert "model directory not found" in result.stderr and "Traceback" not in result.stderr


def test_help_and_in_process_user_errors(tmp_path, tokenizer_file, capsys):
    for command in ("generate", "export-hf"):
        result = run_cli(command, "--help")
        assert result.returncode == 0 and "CHECKPOINT" in result.stdout, result.stderr
    from raylm.cli import main

    bert = _checkpoint(tmp_path, "bert", tokenizer_file)
    assert main(["generate", str(bert), "--prompt", "hi"]) == 2
    assert "generation needs a gpt or t5 checkpoint" in capsys.readouterr().err
    ckpt = _checkpoint(tmp_path, "gpt", tokenizer_file)  # learned positions, max_seq_len 64
    assert main(["generate", str(ckpt), "--prompt", "The quick brown fox", "--max-new-tokens", "100"]) == 2
    assert "exceed the model's max_seq_len (64); use --max-new-tokens" in capsys.readouterr().err
    assert main(["generate", str(ckpt), "--prompt", "x", "--top-p", "1.5"]) == 2
    assert "--top-p must be in (0, 1]" in capsys.readouterr().err
    assert main(["export-hf", str(bert), str(tmp_path / "out")]) == 2
    assert "arch='bert'" in capsys.readouterr().err
