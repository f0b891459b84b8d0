"""``raylm tokenize`` as a user runs it, for what needs no Ray: help, bad input exits 2, override parsing."""

from __future__ import annotations

from tests.conftest import run_cli

from raylm.commands.tokenize import format_summary


def test_help_shows_usage_and_examples():
    result = run_cli("tokenize", "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: raylm tokenize" in result.stdout and "--data.corpus" in result.stdout


def test_missing_corpus_exits_2_naming_the_path(tmp_path):
    missing = tmp_path / "no-such-corpus"
    result = run_cli("tokenize", "--data.corpus", str(missing), "--data.shards_dir", str(tmp_path / "out"))
    assert result.returncode == 2
    assert f"corpus path not found: {missing}" in result.stderr and "Traceback" not in result.stderr


def test_parquet_without_column_exits_2(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": ["x"]}), path)
    result = run_cli("tokenize", "--data.corpus", str(path), "--data.shards_dir", str(tmp_path / "out"))
    assert result.returncode == 2
    assert f"{path} has no column 'text' (columns: body)" in result.stderr


def test_override_values_are_never_taken_for_the_config_file():
    from raylm.cli import split_overrides

    assert split_overrides(["tokenize", "--data.corpus", "x", "--force"]) == (
        ["tokenize", "--force"], ["--data.corpus", "x"])
    assert split_overrides(["tokenize", "c.yaml", "--data.corpus=x", "--train.seq_len", "64"]) == (
        ["tokenize", "c.yaml"], ["--data.corpus=x", "--train.seq_len", "64"])


def test_summary_text():
    split = {"documents": 3, "stream_tokens": 1000, "sequences": 7, "tokens": 903, "dropped_tokens": 97}
    text = format_summary({
        "directory": "d/k", "reused": True, "seq_len": 128, "invalid_utf8_replacements": 2,
        "tokenizer": {"source": "bpe", "vocab_size": 512, "sha256": "ab" * 32},
        "splits": {"train": split},
    })
    assert "dataset: d/k (reused)" in text and "7 sequences of 128 + 1 (97 tail tokens dropped)" in text
