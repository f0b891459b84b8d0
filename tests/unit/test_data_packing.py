"""Packing and the map_batches function, without Ray: every token kept in order, fixed-size blocks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raylm.data.documents import Document, is_validation
from raylm.data.packing import Packer, pack
from raylm.data.tokenize_udf import encode_documents, stream_to_table, table_to_streams, tokenize_batch
from raylm.data.tokenizer import train_tokenizer
from raylm.errors import UserError


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["def add(a, b):\n    return a + b\n", "class Point:\n    x: int\n    y: int\n"] * 20
    return train_tokenizer(texts, "bpe", vocab_size=400, num_sentinels=4)


@pytest.mark.parametrize("block_len", [2, 7, 33])
def test_packer_keeps_every_token_in_order_whatever_the_pieces(block_len):
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 1000, size=1000).astype(np.int32)
    cuts = np.sort(rng.choice(np.arange(1, 1000), size=40, replace=False))
    packer = Packer(block_len)
    blocks = np.concatenate([packer.add(piece) for piece in np.split(stream, cuts)])
    assert blocks.shape == (1000 // block_len, block_len)
    assert np.array_equal(blocks.reshape(-1), stream[: blocks.size])
    assert packer.remainder == 1000 % block_len
    assert np.array_equal(blocks, pack(stream, block_len))


def test_packer_rejects_a_block_without_a_target():
    with pytest.raises(ValueError, match="at least 2"):
        Packer(1)


def test_encode_documents_appends_eos_and_routes_splits(tokenizer):
    docs = [Document(f"x = {i}\nprint(x)\n", "f") for i in range(30)] + [Document("", "empty")]
    stream = encode_documents(docs, tokenizer, eos_id=2, val_fraction=0.3)
    assert stream.doc_tokens[-1] == 0
    expected = []
    for doc in docs[:-1]:
        expected += tokenizer.encode(doc.text, add_special_tokens=False).ids + [2]
    assert stream.tokens.tolist() == expected
    val = [d for d in docs[:-1] if is_validation(d.text, 0.3)]
    assert 0 < len(val) < 30
    val_ids = [t for d in val for t in tokenizer.encode(d.text, add_special_tokens=False).ids + [2]]
    assert stream.split_tokens(val=True).tolist() == val_ids
    assert len(stream.split_tokens(val=False)) == len(expected) - len(val_ids)
    head = stream.head(3)
    assert head.tokens.tolist() == expected[: int(stream.doc_tokens[:3].sum())]


def test_tokenize_batch_round_trips_through_a_table(tokenizer):
    batch = pa.table({"bytes": [b"a = 1\n", b"b = \xff 2\n", b""], "path": ["a.py", "b.py", "c.py"]})
    table = tokenize_batch(
        batch, tokenizer_json=tokenizer.to_str(), tokenizer_sha="t", eos_id=2, fmt="text", text_field="text",
        val_fraction=0.0,
    )
    (stream,) = list(table_to_streams(pa.concat_tables([table])))
    assert stream.doc_replacements.tolist() == [0, 1, 0]
    assert stream.doc_bytes.tolist() == [6, 8, 0]
    assert stream.doc_tokens[2] == 0 and stream.tokens[-1] == 2
    again = list(table_to_streams(stream_to_table(stream)))[0]
    assert np.array_equal(again.tokens, stream.tokens)


def test_bad_input_in_a_worker_comes_back_as_data_and_is_raised_on_the_driver(tokenizer):
    batch = pa.table({"bytes": [b'{"body": "x"}\n'], "path": ["data/a.jsonl"]})
    table = tokenize_batch(
        batch, tokenizer_json=tokenizer.to_str(), tokenizer_sha="t", eos_id=2, fmt="jsonl", text_field="text",
        val_fraction=0.0,
    )
    assert "data/a.jsonl:1: no field 'text'" in table.column("error")[0].as_py()
    with pytest.raises(UserError, match="data/a.jsonl:1: no field 'text'"):
        list(table_to_streams(table))
