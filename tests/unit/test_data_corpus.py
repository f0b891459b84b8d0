"""Corpora: the stdlib default, files, directories, globs, JSON Lines, Parquet, and each bad input."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylm.data.corpus import format_of, iter_documents, resolve_corpus, stdlib_root
from raylm.data.documents import decode_utf8, is_validation, jsonl_documents, split_fraction
from raylm.errors import UserError


def test_stdlib_corpus_is_sorted_python_sources_without_tests():
    source = resolve_corpus("stdlib")
    paths = source.paths
    assert len(paths) > 100 and paths == sorted(paths)
    assert all(p.endswith(".py") for p in paths)
    assert not any("/site-packages/" in p or "/test/" in p or "/tests/" in p for p in paths)
    assert str(stdlib_root() / "os.py") in paths
    assert source.format == "text" and source.total_bytes > 1_000_000


def test_stdlib_max_docs_keeps_the_first_files_and_fingerprint_is_stable():
    a, b = resolve_corpus("stdlib", max_docs=5), resolve_corpus("stdlib", max_docs=5)
    assert a.paths == resolve_corpus("stdlib").paths[:5]
    assert a.fingerprint() == b.fingerprint() != resolve_corpus("stdlib", max_docs=6).fingerprint()
    docs = list(iter_documents(a))
    assert [d.source for d in docs] == a.paths
    assert docs[-1].text == open(a.paths[-1], encoding="utf-8").read()


def test_directory_glob_and_hidden_files(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "b" / "c.txt").write_text("second")
    (tmp_path / "b" / "d.md").write_text("third")
    (tmp_path / ".hidden.txt").write_text("never")
    everything = resolve_corpus(str(tmp_path))
    assert [d.text for d in iter_documents(everything)] == ["first", "second", "third"]
    top_txt = resolve_corpus(str(tmp_path / "*.txt"))
    assert [d.text for d in iter_documents(top_txt)] == ["first"]
    any_txt = resolve_corpus(str(tmp_path / "**" / "*.txt"))
    assert [d.text for d in iter_documents(any_txt)] == ["first", "second"]
    uri = resolve_corpus(f"file://{tmp_path}/b/*.md")
    assert [d.text for d in iter_documents(uri)] == ["third"]


def test_jsonl_named_field_gzip_and_invalid_utf8(tmp_path):
    lines = [json.dumps({"text": "hello", "id": 1}).encode(), b"", b'{"text": "caf\xff\xfe", "id": 2}']
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(json.dumps({"text": "zipped"}).encode()))
    source = resolve_corpus(str(tmp_path))
    assert source.format == "jsonl"
    docs = list(iter_documents(source))
    assert [d.text for d in docs] == ["hello", "caf\ufffd\ufffd", "zipped"]
    assert [d.replacements for d in docs] == [0, 2, 0]
    assert docs[1].source.endswith("a.jsonl:3")
    assert len(list(iter_documents(source, max_docs=2))) == 2


def test_parquet_named_column(tmp_path):
    table = pa.table({"body": ["one", None, "three"], "n": [1, 2, 3]})
    pq.write_table(table, tmp_path / "part-0.parquet")
    source = resolve_corpus(str(tmp_path / "part-0.parquet"), text_field="body")
    assert [d.text for d in iter_documents(source)] == ["one", "", "three"]


def test_missing_path_names_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match=f"corpus path not found: {missing}.*existing file"):
        resolve_corpus(str(missing))


def test_empty_directory_and_unmatched_glob(tmp_path):
    with pytest.raises(UserError, match="matched no files"):
        resolve_corpus(str(tmp_path))
    with pytest.raises(UserError, match=r"matched no files"):
        resolve_corpus(str(tmp_path / "*.jsonl"))


def test_parquet_without_the_column_names_file_and_columns(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"content": ["a"]}), path)
    with pytest.raises(UserError, match=rf"{path} has no column 'text' \(columns: content\).*data.text_field"):
        resolve_corpus(str(path))


def test_not_a_parquet_file_names_it(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match=f"cannot read Parquet file {path}"):
        resolve_corpus(str(path))


def test_jsonl_line_without_the_field_names_the_line(tmp_path):
    data = b'{"text": "ok"}\n{"body": "no"}\n'
    with pytest.raises(UserError, match=r"x.jsonl:2: no field 'text' \(fields: body\)"):
        list(jsonl_documents(data, "x.jsonl", "text"))
    with pytest.raises(UserError, match=r"x.jsonl:1: not valid JSON"):
        list(jsonl_documents(b"{oops\n", "x.jsonl", "text"))


def test_mixed_formats_need_a_choice(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "README.md").write_text("readme")
    with pytest.raises(UserError, match="mixes file formats.*data.format"):
        resolve_corpus(str(tmp_path))
    assert resolve_corpus(str(tmp_path), fmt="text").format == "text"


def test_format_inference():
    assert [format_of(p) for p in ("a.jsonl", "a.ndjson.gz", "a.parquet", "a.txt", "a.py")] == [
        "jsonl", "jsonl", "parquet", "text", "text"
    ]


def test_decode_counts_only_introduced_replacements():
    assert decode_utf8("ok \ufffd".encode()) == ("ok \ufffd", 0)
    text, n = decode_utf8(b"a\x80b\xc3")
    assert text == "a\ufffdb\ufffd" and n == 2


def test_split_is_a_stable_hash_of_the_text():
    assert split_fraction("hello") == split_fraction("hello") == pytest.approx(split_fraction("hello"))
    texts = [f"document {i}" for i in range(2000)]
    val = [t for t in texts if is_validation(t, 0.1)]
    assert 150 < len(val) < 250
    assert not any(is_validation(t, 0.0) for t in texts)
