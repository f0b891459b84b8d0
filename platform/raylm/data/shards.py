"""Parquet token shards: write packed blocks, read any range of sequences back.

A shard has one column, ``tokens``, of type ``fixed_size_list<int32>[seq_len + 1]``: one row per
packed block, in stream order. Sequence ``i`` of a split is row ``i - offset`` of the shard whose
range holds it (shards in manifest order). Shards are zstd-compressed with row groups of
``ROW_GROUP`` rows, so a reader decodes only the row groups it needs. Shards are written to a
local directory; they are read from a local directory or a URI (``s3://``, through pyarrow's
filesystems, :mod:`raylm.storage`), fetching only the byte ranges of those row groups.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raylm import storage
from raylm.data.manifest import Manifest, ShardInfo
from raylm.data.packing import TOKEN_DTYPE
from raylm.errors import UserError

ROW_GROUP = 1024
COLUMN = "tokens"


def blocks_table(blocks: np.ndarray) -> pa.Table:
    """A ``(n, block_len)`` array as a one-column table of fixed-size lists."""
    n, block_len = blocks.shape
    values = pa.array(np.ascontiguousarray(blocks, dtype=TOKEN_DTYPE).reshape(-1))
    return pa.table({COLUMN: pa.FixedSizeListArray.from_arrays(values, block_len)})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ShardWriter:
    """Buffers blocks of one split and writes ``shard-NNNNN.parquet`` files of ``shard_size`` rows."""

    def __init__(self, root: Path, split: str, block_len: int, shard_size: int):
        self.root, self.split, self.block_len, self.shard_size = Path(root), split, block_len, shard_size
        self.shards: list[ShardInfo] = []
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        (self.root / split).mkdir(parents=True, exist_ok=True)

    def add(self, blocks: np.ndarray) -> None:
        """Queue blocks; every full ``shard_size`` rows are written at once."""
        if len(blocks):
            self._pending.append(blocks)
            self._pending_rows += len(blocks)
        while self._pending_rows >= self.shard_size:
            self._flush(self.shard_size)

    def close(self) -> list[ShardInfo]:
        """Write what is left (a last, shorter shard) and return every shard written."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        return self.shards

    def _flush(self, rows: int) -> None:
        buffered = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        head, rest = buffered[:rows], buffered[rows:]
        self._pending, self._pending_rows = ([rest] if len(rest) else []), len(rest)
        relative = f"{self.split}/shard-{len(self.shards):05d}.parquet"
        path = self.root / relative
        pq.write_table(
            blocks_table(head), path, row_group_size=ROW_GROUP, compression="zstd", write_statistics=False
        )
        self.shards.append(ShardInfo(relative, int(len(head)), file_sha256(path)))


def _corrupt(path: str, problem: str, directory: str | Path) -> UserError:
    return UserError(
        f"corrupt token shard {path}: {problem}; delete {directory} and run `raylm tokenize` again to rebuild it"
    )


class ShardReader:
    """Random access to the sequences of one split: ``read(start, stop)`` -> ``(stop-start, block_len)``."""

    def __init__(self, directory: str | Path, manifest: Manifest, split: str, cache_files: int = 8):
        self.directory = storage.location(directory)  # a local path or a URI (raylm.storage)
        self._filesystem, self._root = storage.resolve(directory)
        self.block_len = manifest.block_len
        self.shards = manifest.split(split).shards
        counts = [s.sequences for s in self.shards]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._files: OrderedDict[int, tuple[pq.ParquetFile, np.ndarray]] = OrderedDict()
        self._cache_files = cache_files

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def check(self) -> None:
        """Open every shard and compare its footer with the manifest (cheap: metadata only)."""
        for i in range(len(self.shards)):
            self._open(i)

    def _open(self, index: int) -> tuple[pq.ParquetFile, np.ndarray]:
        if index in self._files:
            self._files.move_to_end(index)
            return self._files[index]
        info = self.shards[index]
        path = storage.join(self.directory, info.file)
        source = f"{self._root}/{info.file}"
        try:
            found = self._filesystem.get_file_info(source).type == pafs.FileType.File
        except OSError as exc:
            raise UserError(f"cannot read token shard {path}: {exc}; {storage.hint(path)}") from None
        if not found:
            raise _corrupt(path, "file missing", self.directory)
        try:
            parquet = pq.ParquetFile(source, filesystem=self._filesystem)
        except (pa.ArrowInvalid, OSError) as exc:
            raise _corrupt(path, str(exc), self.directory) from None
        meta = parquet.metadata
        if meta.num_rows != info.sequences:
            raise _corrupt(path, f"{meta.num_rows} sequences, manifest says {info.sequences}", self.directory)
        expected = pa.list_(pa.int32(), self.block_len)
        if parquet.schema_arrow.names != [COLUMN] or parquet.schema_arrow.field(COLUMN).type != expected:
            raise _corrupt(path, f"schema {parquet.schema_arrow} is not {COLUMN}: {expected}", self.directory)
        starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        self._files[index] = (parquet, starts)
        if len(self._files) > self._cache_files:
            self._files.popitem(last=False)
        return parquet, starts

    def read(self, start: int, stop: int) -> np.ndarray:
        """Sequences ``start..stop-1`` of the split as an int32 array (may span shards)."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"range {start}:{stop} outside 0:{len(self)}")
        parts = []
        while start < stop:
            index = int(np.searchsorted(self.offsets, start, side="right") - 1)
            local_start = start - int(self.offsets[index])
            local_stop = min(stop, int(self.offsets[index + 1])) - int(self.offsets[index])
            parts.append(self._read_local(index, local_start, local_stop))
            start += local_stop - local_start
        if not parts:
            return np.empty((0, self.block_len), dtype=TOKEN_DTYPE)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _read_local(self, index: int, start: int, stop: int) -> np.ndarray:
        parquet, starts = self._open(index)
        first = int(np.searchsorted(starts, start, side="right") - 1)
        last = int(np.searchsorted(starts, stop - 1, side="right") - 1)
        path = storage.join(self.directory, self.shards[index].file)
        try:
            table = parquet.read_row_groups(list(range(first, last + 1)), columns=[COLUMN])
            flat = table.column(COLUMN).combine_chunks().flatten().to_numpy()
        except (pa.ArrowException, OSError) as exc:
            raise _corrupt(path, str(exc), self.directory) from None
        rows = flat.reshape(-1, self.block_len)
        offset = int(starts[first])
        return rows[start - offset : stop - offset]
