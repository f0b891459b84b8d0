"""The Ray Data tokenize-and-pack pipeline on a real local Ray: exact packing, manifest, determinism, reuse.

One dataset is built per module from the first stdlib files (a few hundred KB); the checks
compare it with a reference computed in this process without Ray.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylm.config import DataConfig
from raylm.data import TokenLoader, build_dataset, load_tokenizer
from raylm.data.corpus import iter_documents, resolve_corpus
from raylm.data.documents import is_validation
from raylm.data.pipeline import quiet_log
from raylm.errors import UserError

pytestmark = pytest.mark.ray

SEQ_LEN, VOCAB, DOCS = 32, 512, 20


def data_config(shards_dir: Path, **overrides) -> DataConfig:
    settings = dict(
        corpus="stdlib", max_docs=DOCS, shards_dir=str(shards_dir), val_fraction=0.25, num_sentinels=4,
        shard_size=200, tokenizer_sample_bytes=200_000,
    )
    return DataConfig(**{**settings, **overrides})


def build(config: DataConfig, **kwargs):
    return build_dataset(config, SEQ_LEN, VOCAB, log=quiet_log, **kwargs)


def shard_rows(directory: Path, split: str) -> np.ndarray:
    """Every stored block of a split, read with pyarrow directly (independent of the loader)."""
    manifest = json.loads((directory / "manifest.json").read_text())
    shards = manifest["splits"][split]["shards"]
    rows = [pq.read_table(directory / s["file"]).column("tokens").to_pylist() for s in shards]
    return np.array(list(itertools.chain.from_iterable(rows)), dtype=np.int64).reshape(-1, SEQ_LEN + 1)


@pytest.fixture(scope="module")
def built(ray_local, tmp_path_factory):
    return build(data_config(tmp_path_factory.mktemp("tokens")))


def reference_streams(tokenizer, eos_id: int) -> dict[str, list[int]]:
    streams: dict[str, list[int]] = {"train": [], "val": []}
    for doc in iter_documents(resolve_corpus("stdlib", max_docs=DOCS)):
        if doc.text:
            ids = tokenizer.encode(doc.text, add_special_tokens=False).ids + [eos_id]
            streams["val" if is_validation(doc.text, 0.25) else "train"].extend(ids)
    return streams


def test_packing_keeps_every_token_in_order_in_full_blocks(built):
    tokenizer = load_tokenizer(built.directory)
    specials = built.special_tokens()
    streams = reference_streams(tokenizer, specials.eos_id)
    for split, stream in streams.items():
        rows = shard_rows(built.directory, split)
        assert rows.shape[1] == SEQ_LEN + 1 and len(rows) == len(stream) // (SEQ_LEN + 1) > 0
        assert rows.reshape(-1).tolist() == stream[: rows.size]


def test_manifest_counts_equal_shard_contents(built):
    manifest = built.manifest
    streams = reference_streams(load_tokenizer(built.directory), built.special_tokens().eos_id)
    for split in ("train", "val"):
        info, rows = manifest.splits[split], shard_rows(built.directory, split)
        assert info.sequences == len(rows) == sum(s.sequences for s in info.shards)
        assert info.tokens == rows.size
        assert info.stream_tokens == len(streams[split]) == info.tokens + info.dropped_tokens
        assert 0 <= info.dropped_tokens <= SEQ_LEN
        for shard in info.shards:
            assert pq.ParquetFile(built.directory / shard.file).metadata.num_rows == shard.sequences
    assert manifest.splits["train"].documents + manifest.splits["val"].documents + sum(
        manifest.splits[s].empty_documents for s in ("train", "val")
    ) == DOCS
    assert manifest.seq_len == SEQ_LEN and manifest.block_len == SEQ_LEN + 1
    assert manifest.tokenizer["vocab_size"] <= VOCAB and manifest.source["files"] == DOCS
    assert manifest.invalid_utf8_replacements == 0


def test_two_runs_write_identical_shards_and_a_third_reuses(built, tmp_path):
    second = build(data_config(tmp_path))
    assert not second.reused and second.directory.name == built.directory.name
    files = sorted(p.relative_to(built.directory) for p in built.directory.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second.directory) for p in second.directory.rglob("*") if p.is_file())
    for name in files:
        assert (built.directory / name).read_bytes() == (second.directory / name).read_bytes(), name
    before = {p: p.stat().st_mtime_ns for p in built.directory.rglob("*.parquet")}
    third = build(data_config(built.directory.parent))
    assert third.reused and third.directory == built.directory
    assert {p: p.stat().st_mtime_ns for p in built.directory.rglob("*.parquet")} == before


def test_jsonl_with_invalid_utf8_and_parquet_with_max_docs(built, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    docs = [f"def f{i}(x):\n    return x * {i}\n" * 20 for i in range(40)]
    lines = [json.dumps({"text": d}).encode() for d in docs]
    lines[3] = b'{"text": "bad \xff\xfe bytes \xc3 here ' + b"x" * 400 + b'"}'
    (corpus / "a.jsonl").write_bytes(b"\n".join(lines[:20]))
    (corpus / "b.jsonl").write_bytes(b"\n".join(lines[20:]))
    tokenizer = str(built.tokenizer_path)
    jsonl = build(data_config(tmp_path / "out", corpus=str(corpus), max_docs=None, tokenizer=tokenizer))
    manifest = jsonl.manifest
    assert manifest.invalid_utf8_replacements == 3
    assert manifest.splits["train"].documents + manifest.splits["val"].documents == 40
    assert manifest.tokenizer["sha256"] == built.manifest.tokenizer["sha256"]

    pq.write_table(pa.table({"content": docs[:25]}), corpus / "c.parquet", row_group_size=4)
    parquet = build(
        data_config(tmp_path / "out", corpus=str(corpus / "c.parquet"), text_field="content", max_docs=10,
                    tokenizer=tokenizer)
    )
    assert parquet.manifest.splits["train"].documents + parquet.manifest.splits["val"].documents == 10
    eos = built.special_tokens().eos_id
    assert int((shard_rows(parquet.directory, "train") == eos).sum()) <= parquet.manifest.splits["train"].documents


def test_bad_input_inside_a_worker_names_file_and_line(built, tmp_path):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    with pytest.raises(UserError, match=rf"{corpus}:2: no field 'text' \(fields: body\)"):
        build(data_config(tmp_path / "out", corpus=str(corpus), tokenizer=str(built.tokenizer_path)))


def test_empty_corpus_is_refused(built, tmp_path):
    corpus = tmp_path / "empty"
    corpus.mkdir()
    (corpus / "a.txt").write_text("")
    with pytest.raises(UserError, match="holds no text to train a tokenizer"):
        build(data_config(tmp_path / "out", corpus=str(corpus)))
    with pytest.raises(UserError, match="holds no text"):
        build(data_config(tmp_path / "out", corpus=str(corpus), tokenizer=str(built.tokenizer_path)))


def test_cli_reuses_the_dataset_and_loader_reads_it(built, capsys):
    from raylm.cli import main

    shards_dir = str(built.directory.parent)
    args = ["tokenize", "--quiet", "--json", "--data.max_docs", str(DOCS), "--data.shards_dir", shards_dir,
            "--data.val_fraction", "0.25", "--data.num_sentinels", "4", "--data.shard_size", "200",
            "--data.tokenizer_sample_bytes", "200000", "--train.seq_len", str(SEQ_LEN), "--model.vocab_size",
            str(VOCAB)]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["reused"] and summary["directory"] == str(built.directory)
    assert main(["tokenize", "--quiet", "--data.corpus", str(built.directory / "nope")]) == 2
    assert "corpus path not found" in capsys.readouterr().err

    for split in ("train", "val"):
        loaders = [TokenLoader(built.directory, split, batch_size=2, rank=r, world_size=2, epochs=1) for r in (0, 1)]
        ids = [set(int(i) for b in loader for i in b.sample_ids) for loader in loaders]
        assert ids[0] and ids[1] and not ids[0] & ids[1]
