"""Build a token dataset from a config, or reuse the one already built from the same inputs.

The output directory is ``<data.shards_dir>/<key>``, where ``key`` hashes everything that
decides the shards: the corpus fingerprint (every file's path, size and mtime), the tokenizer's
sha256, ``seq_len``, ``val_fraction``, ``max_docs``, ``shard_size`` and the format version. A
directory with a ``manifest.json`` of that key is reused as is. A trained tokenizer is cached
the same way under ``<data.shards_dir>/tokenizers/``. Builds go to a temporary directory that is
renamed into place, so an interrupted run leaves nothing that looks complete.

``data.shards_dir`` may be a URI (``s3://bucket/tokens``, :mod:`raylm.storage`): the dataset is
built in a local temporary directory and uploaded with its manifest last, so a dataset whose
upload was interrupted has no manifest and counts as absent (the next run rebuilds it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from raylm import storage
from raylm.config import DataConfig, RunConfig
from raylm.data.corpus import CorpusSource, iter_documents, resolve_corpus
from raylm.data.documents import is_validation, stable_hash
from raylm.data.manifest import FORMAT_VERSION, MANIFEST, Manifest, read_manifest, write_manifest
from raylm.data.pipeline import Log, run_pipeline, stderr_log
from raylm.data.tokenizer import KINDS, SpecialTokens, load_tokenizer, save_tokenizer, tokenizer_hash, train_tokenizer
from raylm.errors import UserError
from raylm.ray_session import connect_ray

TOKENIZER_FILE = "tokenizer.json"


@dataclass
class PreparedDataset:
    """A complete token dataset directory (a ``Path``, or a URI string) and its manifest; ``reused`` when
    nothing was recomputed."""

    directory: Path | str
    manifest: Manifest
    reused: bool

    @property
    def tokenizer_path(self) -> Path | str:
        return storage.location(storage.join(self.directory, TOKENIZER_FILE))

    @property
    def location(self) -> str:
        """The directory as every process can name it: an absolute path, or the URI."""
        return storage.absolute(self.directory)

    def special_tokens(self) -> SpecialTokens:
        return SpecialTokens.from_dict(self.manifest.tokenizer["special_tokens"])


def prepare_dataset(config: RunConfig, *, force: bool = False, log: Log = stderr_log) -> PreparedDataset:
    """Tokenize and pack ``config.data`` with ``train.seq_len`` and a ``model.vocab_size`` tokenizer (or reuse)."""
    return build_dataset(config.data, config.train.seq_len, config.model.vocab_size, force=force, log=log)


def build_dataset(
    data: DataConfig, seq_len: int, vocab_size: int, *, force: bool = False, log: Log = stderr_log
) -> PreparedDataset:
    """Resolve the corpus, get the tokenizer, then reuse or build ``<shards_dir>/<key>`` (see module doc)."""
    source = resolve_corpus(data.corpus, data.format, data.text_field, data.max_docs)
    log(f"corpus: {data.corpus} ({source.format}, {len(source.files)} files, {source.total_bytes / 1e6:.1f} MB)")
    tokenizer, origin = obtain_tokenizer(data, source, vocab_size, log)
    specials = SpecialTokens.from_tokenizer(tokenizer)
    eos_id = specials.require("eos_id", "packing documents (one EOS after each)")
    if tokenizer.get_vocab_size() > vocab_size:
        raise UserError(
            f"tokenizer {origin} has {tokenizer.get_vocab_size()} tokens but model.vocab_size is {vocab_size}; "
            f"set --model.vocab_size {tokenizer.get_vocab_size()}"
        )
    sha = tokenizer_hash(tokenizer)
    key = dataset_key(source, sha, seq_len, data)
    out = storage.location(storage.join(data.shards_dir, key))
    if not force and _is_complete(out):
        manifest = read_manifest(out)
        if manifest.key == key:
            log(f"tokenize: reusing {out} (same corpus, tokenizer and settings; --force rebuilds it)")
            return PreparedDataset(out, manifest, reused=True)
    remote = storage.is_uri(out)
    if remote:
        storage.check_writable(data.shards_dir, "data.shards_dir")
    connect_ray()
    tmp = Path(tempfile.mkdtemp(prefix=f"raylm-{key}-")) / key if remote else out.with_name(f".{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        output = run_pipeline(
            source, tokenizer.to_str(), sha, eos_id, tmp, seq_len=seq_len, val_fraction=data.val_fraction,
            shard_size=data.shard_size, max_docs=data.max_docs, log=log,
        )
        manifest = Manifest(
            key=key,
            seq_len=seq_len,
            val_fraction=data.val_fraction,
            tokenizer={"sha256": sha, "source": origin, "vocab_size": tokenizer.get_vocab_size(),
                       "special_tokens": specials.to_dict()},
            source={"corpus": data.corpus, "format": source.format, "text_field": source.text_field,
                    "fingerprint": source.fingerprint(), "files": len(source.files), "bytes": source.total_bytes,
                    "max_docs": data.max_docs},
            splits=output.splits,
            invalid_utf8_replacements=output.invalid_utf8_replacements,
        )
        _check_output(manifest, data.corpus, seq_len, log)
        save_tokenizer(tokenizer, tmp / TOKENIZER_FILE)
        write_manifest(tmp, manifest)
        if remote:
            _publish_remote(tmp, out, force)
        elif force or not (out / MANIFEST).is_file():  # else a concurrent run just wrote the same dataset
            shutil.rmtree(out, ignore_errors=True)
            tmp.replace(out)
    finally:
        shutil.rmtree(tmp.parent if remote else tmp, ignore_errors=True)
    log(f"tokenize: wrote {out}")
    return PreparedDataset(out, manifest, reused=False)


def _is_complete(directory: Path | str) -> bool:
    """Whether ``directory`` holds a manifest (the mark of a complete dataset)."""
    with storage.errors(directory, "read the token dataset at"):
        return storage.is_file(storage.join(directory, MANIFEST))


def _publish_remote(local: Path, out: str, force: bool) -> None:
    """Upload a built dataset to the URI ``out``, its manifest last; keep a complete one a concurrent run
    published meanwhile (same key, same bytes) unless ``force``."""
    with storage.errors(out, "upload the token dataset to"):
        if not force and storage.is_file(storage.join(out, MANIFEST)):
            return
        storage.delete_file(storage.join(out, MANIFEST))  # first: a half-replaced dataset must look absent
        storage.delete_dir(out)
        storage.upload_dir(local, out, last=(MANIFEST,))


def dataset_key(source: CorpusSource, tokenizer_sha: str, seq_len: int, data: DataConfig) -> str:
    """The output key: a hash of everything that determines the shards' bytes."""
    return stable_hash(
        {
            "format_version": FORMAT_VERSION,
            "source": source.fingerprint(),
            "tokenizer": tokenizer_sha,
            "seq_len": seq_len,
            "val_fraction": data.val_fraction,
            "max_docs": data.max_docs,
            "shard_size": data.shard_size,
        },
        size=8,
    )


def _check_output(manifest: Manifest, corpus: str, seq_len: int, log: Log) -> None:
    train, val = manifest.splits["train"], manifest.splits["val"]
    if train.documents + val.documents == 0:
        raise UserError(f"corpus {corpus!r} holds no text (every document is empty); point data.corpus at text")
    if train.sequences == 0:
        raise UserError(
            f"corpus {corpus!r} is too small: its train split has {train.stream_tokens} tokens, fewer than one "
            f"sequence of train.seq_len + 1 = {seq_len + 1}; use more text (data.max_docs) or a smaller train.seq_len"
        )
    if manifest.val_fraction > 0 and val.sequences == 0:
        log(f"tokenize: warning: the val split has {val.stream_tokens} tokens, not one full sequence; raise "
            "data.val_fraction or use more text to evaluate")


def obtain_tokenizer(data: DataConfig, source: CorpusSource, vocab_size: int, log: Log) -> tuple[Tokenizer, str]:
    """Load ``data.tokenizer`` when it is a path; else train that kind (cached by corpus and settings)."""
    if data.tokenizer not in KINDS:
        return load_tokenizer(data.tokenizer), str(data.tokenizer)
    settings = {
        "kind": data.tokenizer, "vocab_size": vocab_size, "num_sentinels": data.num_sentinels,
        "sample_bytes": data.tokenizer_sample_bytes, "val_fraction": data.val_fraction,
        "max_docs": data.max_docs, "source": source.fingerprint(),
    }
    cached = storage.join(data.shards_dir, "tokenizers", f"{data.tokenizer}-{stable_hash(settings, size=8)}.json")
    with storage.errors(data.shards_dir, "read the tokenizer cache in"):
        found = storage.is_file(cached)
    if found:
        log(f"tokenizer: reusing {cached}")
        return _load_cached(cached), data.tokenizer
    if storage.is_uri(cached):
        storage.check_writable(data.shards_dir, "data.shards_dir")  # before training, not after
    texts = list(training_sample(source, data))
    if not texts:
        raise UserError(f"corpus {data.corpus!r} holds no text to train a tokenizer on; point data.corpus at text")
    size = sum(len(t) for t in texts)
    log(f"tokenizer: training {data.tokenizer} ({vocab_size} tokens) on {len(texts)} docs, {size / 1e6:.1f}M chars")
    start = time.perf_counter()
    tokenizer = train_tokenizer(texts, data.tokenizer, vocab_size, data.num_sentinels, show_progress=False)
    log(f"tokenizer: trained in {time.perf_counter() - start:.1f}s, saved to {_save_cached(tokenizer, cached)}")
    return tokenizer, data.tokenizer


def _load_cached(cached: str) -> Tokenizer:
    """A cached tokenizer, from a local file or a URI."""
    if not storage.is_uri(cached):
        return load_tokenizer(cached)
    with tempfile.TemporaryDirectory(prefix="raylm-tokenizer-") as local:
        path = Path(local) / TOKENIZER_FILE
        with storage.errors(cached, "read"):
            path.write_bytes(storage.read_bytes(cached))
        return load_tokenizer(path)


def _save_cached(tokenizer: Tokenizer, cached: str) -> str:
    """Cache a trained tokenizer at ``cached`` (a local path or a URI); returns where."""
    if not storage.is_uri(cached):
        return str(save_tokenizer(tokenizer, cached))
    with storage.errors(cached, "write"):
        storage.write_text(cached, tokenizer.to_str())
    return cached


def training_sample(source: CorpusSource, data: DataConfig):
    """The first ``tokenizer_sample_bytes`` of non-empty train-split documents, in corpus order."""
    taken = 0
    for doc in iter_documents(source, data.max_docs):
        if doc.text and not is_validation(doc.text, data.val_fraction):
            yield doc.text
            taken += len(doc.text.encode("utf-8", errors="surrogatepass"))
            if taken >= data.tokenizer_sample_bytes:
                return
