"""``manifest.json``: what a token dataset directory holds and how it was made.

A dataset directory (``<data.shards_dir>/<key>/``, local or a URI) contains ``manifest.json``,
``tokenizer.json`` and ``<split>/shard-NNNNN.parquet`` files. The manifest is written (or
uploaded) last; its presence marks a complete dataset. It records no time stamps, so two runs over the same
inputs write identical files. Format (version 1)::

    format_version    1
    key               hash of everything that determines the shards (the directory name)
    seq_len           training sequence length; every stored block has seq_len + 1 tokens
    block_len         seq_len + 1
    dtype             "int32"
    val_fraction      fraction of documents routed to "val" by a stable hash of their text
    invalid_utf8_replacements   U+FFFD characters substituted for invalid UTF-8 input bytes
    tokenizer         {sha256, source, vocab_size, special_tokens: {pad_id, ..., sentinel_ids}}
    source            {corpus, format, text_field, fingerprint, files, bytes, max_docs}
    splits.<name>     {documents, empty_documents, bytes, stream_tokens, sequences, tokens,
                       dropped_tokens, shards: [{file, sequences, sha256}]}

``stream_tokens`` counts every token of the split's documents including one EOS each;
``tokens = sequences * block_len`` are stored; ``dropped_tokens = stream_tokens - tokens`` is
the unpacked tail. A training step on ``b`` sequences sees ``b * seq_len`` target tokens.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from raylm import storage
from raylm.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val")


@dataclass
class ShardInfo:
    """One Parquet shard: path relative to the dataset directory, its sequence count and sha256."""

    file: str
    sequences: int
    sha256: str


@dataclass
class SplitInfo:
    """Counts of one split (see the module docstring for each field)."""

    documents: int = 0
    empty_documents: int = 0
    bytes: int = 0
    stream_tokens: int = 0
    sequences: int = 0
    tokens: int = 0
    dropped_tokens: int = 0
    shards: list[ShardInfo] = field(default_factory=list)


@dataclass
class Manifest:
    """The parsed ``manifest.json`` of a token dataset."""

    key: str
    seq_len: int
    val_fraction: float
    tokenizer: dict
    source: dict
    splits: dict[str, SplitInfo]
    invalid_utf8_replacements: int = 0
    dtype: str = "int32"
    format_version: int = FORMAT_VERSION

    @property
    def block_len(self) -> int:
        return self.seq_len + 1

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise UserError(f"unknown split {name!r}; this dataset has {', '.join(self.splits)}")
        return self.splits[name]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["block_len"] = self.block_len
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        data = dict(data)
        data.pop("block_len", None)
        splits = {
            name: SplitInfo(**{**info, "shards": [ShardInfo(**s) for s in info.get("shards", [])]})
            for name, info in data.pop("splits").items()
        }
        return cls(**data, splits=splits)


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically (sorted keys, so equal manifests are equal bytes)."""
    path = Path(directory) / MANIFEST
    tmp = path.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_manifest(directory: str | Path) -> Manifest:
    """Read and check a dataset's manifest (a local directory or a URI, :mod:`raylm.storage`); every problem
    is a :class:`UserError` naming the file."""
    path = storage.join(directory, MANIFEST)
    with storage.errors(directory, "read the token dataset at"):
        found = storage.is_file(path)
    if not found:
        raise UserError(f"no {MANIFEST} in {directory}; run `raylm tokenize` to build the token dataset first")
    try:
        data = json.loads(storage.read_text(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}; delete {directory} and run `raylm tokenize` again") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise UserError(
            f"{path} has format version {version!r}, this raylm reads {FORMAT_VERSION}; "
            f"delete {directory} and run `raylm tokenize` again"
        )
    try:
        return Manifest.from_dict(data)
    except (TypeError, KeyError, AttributeError) as exc:
        raise UserError(f"{path} is malformed ({exc}); delete {directory} and run `raylm tokenize` again") from None
