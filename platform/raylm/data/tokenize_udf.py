"""The function Ray Data runs in ``map_batches``: documents of a batch of files or rows to token ids.

It is plain Python over a pyarrow table (testable without Ray). Each call turns its batch into
one output row holding every document's ids followed by EOS, in input order, plus per-document
lengths, split flags, replacement counts and byte sizes; the driver packs those rows in order.
Bad input found in a worker travels back in the row's ``error`` column.
Workers receive the tokenizer as JSON once and keep it per process, keyed by its hash.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from raylm.data.corpus import column_documents, text_document
from raylm.data.documents import Document, is_validation, jsonl_documents
from raylm.data.packing import TOKEN_DTYPE, SplitStream
from raylm.data.tokenizer import tokenizer_from_json
from raylm.errors import UserError

_TOKENIZERS: dict[str, object] = {}


def batch_documents(batch: pa.Table, fmt: str, text_field: str) -> Iterator[Document]:
    """The documents of one Ray Data batch: whole files (text, jsonl) or rows of a Parquet column."""
    if fmt == "parquet":
        paths = batch.column("path").to_pylist() if "path" in batch.column_names else None
        source = paths[0] if paths else "parquet"
        yield from column_documents(batch.column(text_field).combine_chunks(), source)
        return
    for data, path in zip(batch.column("bytes").to_pylist(), batch.column("path").to_pylist(), strict=True):
        if fmt == "text":
            yield text_document(data, path)
        else:
            yield from jsonl_documents(data, path, text_field)


def encode_documents(docs: list[Document], tokenizer, eos_id: int, val_fraction: float) -> SplitStream:
    """Tokenize ``docs`` in one ``encode_batch_fast`` call (multi-threaded in Rust) and append EOS.

    Empty documents keep their place with zero tokens, so ``max_docs`` counts them like the
    driver-side reader does.
    """
    texts = [d.text for d in docs if d.text]
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False) if texts else []
    ids = iter(encodings)
    pieces, lengths = [], np.zeros(len(docs), dtype=np.int64)
    for i, doc in enumerate(docs):
        if doc.text:
            doc_ids = next(ids).ids
            pieces.append(doc_ids)
            pieces.append((eos_id,))
            lengths[i] = len(doc_ids) + 1
    total = int(lengths.sum())
    tokens = np.fromiter(itertools.chain.from_iterable(pieces), dtype=TOKEN_DTYPE, count=total)
    return SplitStream(
        tokens=tokens,
        doc_tokens=lengths,
        doc_val=np.array([is_validation(d.text, val_fraction) for d in docs], dtype=bool),
        doc_replacements=np.array([d.replacements for d in docs], dtype=np.int64),
        doc_bytes=np.array([d.nbytes for d in docs], dtype=np.int64),
    )


def stream_to_table(stream: SplitStream, error: str | None = None) -> pa.Table:
    """One row holding a whole :class:`SplitStream` (list columns), or the bad-input ``error`` met instead."""
    return pa.table(
        {
            "error": pa.array([error], type=pa.string()),
            "tokens": pa.array([stream.tokens], type=pa.large_list(pa.int32())),
            "doc_tokens": pa.array([stream.doc_tokens], type=pa.list_(pa.int64())),
            "doc_val": pa.array([stream.doc_val], type=pa.list_(pa.bool_())),
            "doc_replacements": pa.array([stream.doc_replacements], type=pa.list_(pa.int64())),
            "doc_bytes": pa.array([stream.doc_bytes], type=pa.list_(pa.int64())),
        }
    )


def table_to_streams(table: pa.Table) -> Iterator[SplitStream]:
    """Inverse of :func:`stream_to_table` for every row of a table (zero-copy views where possible).

    A row that carries an error raises it here, on the driver, as a :class:`UserError`.
    """
    errors = table.column("error").to_pylist()
    columns = {name: table.column(name).combine_chunks() for name in table.column_names if name != "error"}
    for row in range(table.num_rows):
        if errors[row] is not None:
            raise UserError(errors[row])
        values = {name: _list_values(col, row) for name, col in columns.items()}
        yield SplitStream(
            tokens=values["tokens"].astype(TOKEN_DTYPE, copy=False),
            doc_tokens=values["doc_tokens"],
            doc_val=values["doc_val"].astype(bool, copy=False),
            doc_replacements=values["doc_replacements"],
            doc_bytes=values["doc_bytes"],
        )


def _list_values(column: pa.Array, row: int) -> np.ndarray:
    start, stop = column.offsets[row].as_py(), column.offsets[row + 1].as_py()
    return column.values.slice(start, stop - start).to_numpy(zero_copy_only=False)


def tokenize_batch(
    batch: pa.Table,
    *,
    tokenizer_json,
    tokenizer_sha: str,
    eos_id: int,
    fmt: str,
    text_field: str,
    val_fraction: float,
) -> pa.Table:
    """``map_batches`` entry point: a batch of raw input rows in, one :class:`SplitStream` row out.

    ``tokenizer_json`` is the tokenizer's JSON text or an ``ObjectRef`` to it; it is parsed once
    per worker process. Bad input (a :class:`UserError`) is returned as data, not raised, so its
    message reaches the driver intact instead of inside Ray's wrapped task error.
    """
    tokenizer = _TOKENIZERS.get(tokenizer_sha)
    if tokenizer is None:
        if not isinstance(tokenizer_json, str):
            import ray

            tokenizer_json = ray.get(tokenizer_json)
        tokenizer = _TOKENIZERS[tokenizer_sha] = tokenizer_from_json(tokenizer_json)
    try:
        docs = list(batch_documents(batch, fmt, text_field))
    except UserError as exc:
        empty = encode_documents([], tokenizer, eos_id, val_fraction)
        return stream_to_table(empty, error=str(exc))
    return stream_to_table(encode_documents(docs, tokenizer, eos_id, val_fraction))
