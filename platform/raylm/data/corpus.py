"""Corpora: resolve ``data.corpus`` to an ordered list of files on a pyarrow filesystem, and read them.

``data.corpus`` is one of:

* ``stdlib``: the running interpreter's standard library sources (``*.py`` under
  ``sysconfig.get_paths()["stdlib"]``, without ``site-packages`` and test directories), so every
  machine has a real corpus without a download;
* a file, a directory (read recursively, hidden files skipped) or a glob (``*``, ``?``, ``[...]``,
  ``**`` for any depth), local or as a URI of any filesystem pyarrow supports (``s3://``, ``gs://``...).

Files are always taken in sorted path order, which fixes the document order downstream.
Formats: ``text`` (one document per file), ``jsonl`` (one document per line,
from ``data.text_field``) and ``parquet`` (one document per row of column ``data.text_field``).
``format: auto`` infers it from the file names. Compressed files (``.gz``, ``.zst``, ``.bz2``...) are
decompressed on reading, by pyarrow here and by Ray Data in the pipeline.
"""

from __future__ import annotations

import functools
import os
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raylm.data.documents import Document, decode_utf8, jsonl_documents, stable_hash
from raylm.errors import UserError

STDLIB = "stdlib"
STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSED = frozenset({".gz", ".bz2", ".zst", ".lz4", ".br"})
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class CorpusFile:
    """One input file: path on its filesystem, size and modification time (for the fingerprint)."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class CorpusSource:
    """A resolved corpus: its files in read order, their format and the filesystem that holds them."""

    spec: str
    format: str
    text_field: str
    files: tuple[CorpusFile, ...]
    filesystem: pafs.FileSystem = field(compare=False, repr=False)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    def fingerprint(self) -> str:
        """Hash of format, text field and every file's (path, size, mtime): equal inputs, equal fingerprint."""
        files = [(f.path, f.size, f.mtime_ns) for f in self.files]
        return stable_hash({"format": self.format, "text_field": self.text_field, "files": files})


def format_of(path: str) -> str:
    """The format ``auto`` infers from a file name: jsonl, parquet, or text for anything else."""
    name, ext = os.path.splitext(path)
    if ext.lower() in _COMPRESSED:
        ext = os.path.splitext(name)[1]
    return _SUFFIX_FORMATS.get(ext.lower(), "text")


def stdlib_root() -> Path:
    """Directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def resolve_corpus(spec: str, fmt: str = "auto", text_field: str = "text", max_docs: int | None = None) -> CorpusSource:
    """Resolve ``spec`` (see the module docstring) to a :class:`CorpusSource`.

    Raises :class:`UserError` for a missing path, a pattern that matches nothing, mixed formats
    under ``format: auto``, and Parquet files without ``text_field``. For text corpora, where a
    file is a document, only the first ``max_docs`` files are kept.
    """
    if spec == STDLIB:
        filesystem, files = pafs.LocalFileSystem(), list(_stdlib_files())
    else:
        filesystem, files = _list_files(spec)
    if not files:
        raise UserError(f"corpus {spec!r} matched no files; check the path or pattern (or use data.corpus=stdlib)")
    fmt = _choose_format(spec, fmt, files)
    if fmt == "text" and max_docs is not None:
        files = files[:max_docs]
    source = CorpusSource(spec, fmt, text_field, tuple(files), filesystem)
    if fmt == "parquet":
        check_parquet_columns(source)
    return source


@functools.lru_cache(maxsize=1)
def _stdlib_files() -> tuple[CorpusFile, ...]:
    """The stdlib corpus files, listed once per process (the installed stdlib does not change)."""
    root = stdlib_root()
    found = []
    for path in root.rglob("*.py"):
        if STDLIB_SKIP.isdisjoint(path.relative_to(root).parts):
            stat = path.stat()
            found.append(CorpusFile(str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found, key=lambda f: f.path))


def _split_uri(spec: str) -> tuple[pafs.FileSystem, str]:
    """A filesystem and a path on it for a local path or a URI (the glob part kept in the path)."""
    if "://" not in spec:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(spec))
    match = _GLOB_CHARS.search(spec)
    head = spec if match is None else spec[: spec.rfind("/", 0, match.start())]
    try:
        filesystem, base = pafs.FileSystem.from_uri(head)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise UserError(f"cannot open corpus URI {spec!r}: {exc}; check the scheme and credentials") from None
    return filesystem, base + spec[len(head) :]


def _list_files(spec: str) -> tuple[pafs.FileSystem, list[CorpusFile]]:
    filesystem, path = _split_uri(spec)
    match = _GLOB_CHARS.search(path)
    try:
        if match:
            base = path[: path.rfind("/", 0, match.start())] or "/"
            pattern = _glob_regex(path)
            infos = [i for i in _walk(filesystem, base, spec) if pattern.fullmatch(i.path)]
        else:
            info = filesystem.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                resolved = f" (resolved to {path})" if path != spec else ""
                raise UserError(
                    f"corpus path not found: {spec}{resolved}; give an existing file, directory, "
                    "glob or URI, or use data.corpus=stdlib"
                )
            infos = [info] if info.type == pafs.FileType.File else _walk(filesystem, path, spec)
    except OSError as exc:
        raise UserError(f"cannot list corpus {spec!r}: {exc}; check the path and its permissions") from None
    files = [CorpusFile(i.path, i.size or 0, i.mtime_ns or 0) for i in infos]
    return filesystem, sorted(files, key=lambda f: f.path)


def _walk(filesystem: pafs.FileSystem, base: str, spec: str) -> list[pafs.FileInfo]:
    """Regular, non-hidden files under ``base``, at any depth."""
    infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    keep = []
    for info in infos:
        relative = info.path[len(base) :].strip("/").split("/")
        if info.type == pafs.FileType.File and not any(part.startswith(".") for part in relative):
            keep.append(info)
    return keep


def _glob_regex(pattern: str) -> re.Pattern:
    """Glob to regex: ``*`` and ``?`` stay inside one path component, ``**/`` spans any depth."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            out.append("[" + pattern[i + 1 : end].replace("!", "^", 1) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _choose_format(spec: str, fmt: str, files: list[CorpusFile]) -> str:
    if fmt != "auto":
        return fmt
    counts: dict[str, int] = {}
    for f in files:
        counts[format_of(f.path)] = counts.get(format_of(f.path), 0) + 1
    if len(counts) > 1:
        found = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        raise UserError(
            f"corpus {spec!r} mixes file formats ({found}); narrow it with a glob such as '{spec.rstrip('/')}/*.jsonl' "
            "or set data.format to read every file one way"
        )
    return next(iter(counts))


def check_parquet_columns(source: CorpusSource) -> None:
    """Every Parquet file must hold ``text_field`` as a string or binary column; else a :class:`UserError`."""
    for f in source.files:
        try:
            with source.filesystem.open_input_file(f.path) as handle:
                schema = pq.read_schema(handle)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"cannot read Parquet file {f.path}: {exc}; is it a complete Parquet file?") from None
        if source.text_field not in schema.names:
            columns = ", ".join(schema.names[:20]) or "none"
            raise UserError(
                f"Parquet file {f.path} has no column {source.text_field!r} (columns: {columns}); "
                "set data.text_field to the column that holds the text"
            )
        kind = schema.field(source.text_field).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
                or pa.types.is_large_binary(kind)):
            raise UserError(f"column {source.text_field!r} of {f.path} is {kind}, not text; set data.text_field")


def read_bytes(filesystem: pafs.FileSystem, path: str) -> bytes:
    """The whole content of one file, decompressed by its suffix (``.gz``, ``.zst``...) as Ray Data does."""
    try:
        with filesystem.open_input_stream(path) as handle:
            return handle.read()
    except OSError as exc:
        raise UserError(f"cannot read corpus file {path}: {exc}") from None


def text_document(data: bytes, path: str) -> Document:
    """A whole text file as one document (invalid UTF-8 replaced and counted)."""
    text, replacements = decode_utf8(data)
    return Document(text, path, replacements, len(data))


def column_documents(column: pa.Array, source: str) -> Iterator[Document]:
    """Documents from a Parquet text column (nulls become empty documents; binary is decoded as UTF-8)."""
    binary = pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)
    for value in column.to_pylist():
        if value is None:
            yield Document("", source)
        elif binary:
            text, replacements = decode_utf8(value)
            yield Document(text, source, replacements, len(value))
        else:
            yield Document(value, source, 0, len(value.encode("utf-8", errors="surrogatepass")))


def iter_documents(source: CorpusSource, max_docs: int | None = None) -> Iterator[Document]:
    """Every document of ``source`` in corpus order (empty ones included), read in this process.

    Used on the driver for tokenizer training samples; the Ray Data pipeline reads the same
    files in parallel and sees the same documents in the same order.
    """
    count = 0
    for f in source.files:
        for doc in _file_documents(source, f.path):
            if max_docs is not None and count >= max_docs:
                return
            count += 1
            yield doc


def _file_documents(source: CorpusSource, path: str) -> Iterator[Document]:
    if source.format == "text":
        yield text_document(read_bytes(source.filesystem, path), path)
    elif source.format == "jsonl":
        yield from jsonl_documents(read_bytes(source.filesystem, path), path, source.text_field)
    else:
        with source.filesystem.open_input_file(path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(columns=[source.text_field], batch_size=1024):
                yield from column_documents(batch.column(0), path)
