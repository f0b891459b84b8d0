"""The Ray Data tokenize-and-pack pipeline: corpus files -> parallel tokenization -> ordered packing -> shards.

How it stays deterministic while running in parallel:

1. Ray Data reads the corpus files (``read_binary_files`` for text and JSON Lines, ``read_parquet``)
   in sorted path order, and ``map_batches(tokenize_batch)`` tokenizes the batches in parallel
   tasks across the cluster's CPUs (each call also uses the tokenizer's Rust threads).
2. The dataset runs with ``preserve_order=True``: whatever order the tasks finish in, the
   driver receives their outputs in input order.
3. The driver routes each document's tokens (ids + EOS) to its split and packs them with a
   :class:`~raylm.data.packing.Packer`, whose blocks depend only on the concatenated stream,
   not on batch boundaries; shards are written from those blocks in order.

So two runs over the same inputs write byte-identical shards. Packing on the driver is a
cheap numpy concatenation; tokenization, the costly part, is what runs in parallel.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raylm.data.corpus import CorpusSource
from raylm.data.manifest import SPLITS, SplitInfo
from raylm.data.packing import Packer, SplitStream
from raylm.data.shards import ShardWriter
from raylm.data.tokenize_udf import table_to_streams, tokenize_batch

Log = Callable[[str], None]
BLOCK_BYTES = 8 << 20


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quiet_log(message: str) -> None:
    """A log that prints nothing (``--quiet``, tests)."""


@dataclass
class PipelineOutput:
    """What the pipeline wrote: per-split counts and shards, and the invalid-UTF-8 replacement count."""

    splits: dict[str, SplitInfo]
    invalid_utf8_replacements: int
    seconds: float


class Progress:
    """Prints a one-line status every ``every`` seconds: bytes read, tokens, throughput, ETA."""

    def __init__(self, total_bytes: int, log: Log, every: float = 5.0):
        self.total, self.log, self.every = max(total_bytes, 1), log, every
        self.start = self.last = time.perf_counter()
        self.bytes = self.tokens = 0

    def update(self, nbytes: int, tokens: int) -> None:
        self.bytes += nbytes
        self.tokens += tokens
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self.log(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.perf_counter()) - self.start, 1e-9)
        rate = self.bytes / elapsed
        done = min(self.bytes / self.total, 1.0)
        eta = f"eta {(self.total - self.bytes) / rate:.0f}s" if 0.05 <= done < 1 else ""
        return (
            f"tokenize: {self.bytes / 1e6:.1f}/{self.total / 1e6:.1f} MB ({100 * done:.0f}%), "
            f"{self.tokens / 1e6:.2f}M tokens, {rate / 1e6:.2f} MB/s {eta}"
        ).rstrip()


@dataclass
class _Assembler:
    """Driver side: routes documents to splits in order, packs them, writes shards, counts everything."""

    root: Path
    block_len: int
    shard_size: int
    max_docs: int | None
    progress: Progress
    docs_seen: int = 0
    replacements: int = 0
    info: dict[str, SplitInfo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.packers = {s: Packer(self.block_len) for s in SPLITS}
        self.writers = {s: ShardWriter(self.root, s, self.block_len, self.shard_size) for s in SPLITS}
        self.info = {s: SplitInfo() for s in SPLITS}

    def consume(self, stream: SplitStream) -> bool:
        """Take one batch's documents; returns False once ``max_docs`` documents have been taken."""
        if self.max_docs is not None:
            stream = stream.head(self.max_docs - self.docs_seen)
        n_docs = len(stream.doc_tokens)
        self.docs_seen += n_docs
        self.replacements += int(stream.doc_replacements.sum())
        for split in SPLITS:
            mask = stream.doc_val if split == "val" else ~stream.doc_val
            info, lengths = self.info[split], stream.doc_tokens[mask]
            info.documents += int(np.count_nonzero(lengths))
            info.empty_documents += int(np.count_nonzero(lengths == 0))
            info.bytes += int(stream.doc_bytes[mask].sum())
            info.stream_tokens += int(lengths.sum())
            self.writers[split].add(self.packers[split].add(stream.split_tokens(split == "val")))
        self.progress.update(int(stream.doc_bytes.sum()), len(stream.tokens))
        return self.max_docs is None or self.docs_seen < self.max_docs

    def finish(self) -> dict[str, SplitInfo]:
        for split in SPLITS:
            info = self.info[split]
            info.shards = self.writers[split].close()
            info.sequences = sum(s.sequences for s in info.shards)
            info.tokens = info.sequences * self.block_len
            info.dropped_tokens = self.packers[split].remainder
            assert info.tokens + info.dropped_tokens == info.stream_tokens, "packing lost tokens"
        return self.info


def text_blocks(source: CorpusSource, block_bytes: int = BLOCK_BYTES) -> int:
    """How many blocks to cut a text or JSON Lines corpus into.

    About ``block_bytes`` each, but at least four per cluster CPU (so the tasks overlap and the
    first ordered output comes early) and at most one per file.
    """
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    wanted = max(-(-source.total_bytes // block_bytes), 4 * cpus)
    return max(1, min(wanted, len(source.files)))


def _read(source: CorpusSource):
    """The Ray Data dataset of raw inputs: whole files (text, jsonl) or Parquet rows of the text column."""
    import ray

    if source.format == "parquet":
        ds = ray.data.read_parquet(source.paths, columns=[source.text_field], filesystem=source.filesystem)
    else:
        ds = ray.data.read_binary_files(
            source.paths, include_paths=True, filesystem=source.filesystem, override_num_blocks=text_blocks(source)
        )
    ds.context.execution_options.preserve_order = True
    ds.context.enable_progress_bars = False
    ds.context.print_on_execution_start = False
    return ds


def run_pipeline(
    source: CorpusSource,
    tokenizer_json: str,
    tokenizer_sha: str,
    eos_id: int,
    out_dir: Path,
    *,
    seq_len: int,
    val_fraction: float,
    shard_size: int,
    max_docs: int | None = None,
    log: Log = stderr_log,
) -> PipelineOutput:
    """Tokenize ``source`` with Ray Data and write packed shards of ``seq_len + 1`` tokens under ``out_dir``.

    Ray must already be initialised (:func:`raylm.ray_session.connect_ray`). Bad input met by a worker (say a JSON
    Lines record without the text field) is raised here as a :class:`UserError` with its message.
    """
    import ray

    start = time.perf_counter()
    ds = _read(source).map_batches(
        tokenize_batch,
        batch_format="pyarrow",
        batch_size=None,  # a whole block per call: Ray Data then fuses the read and the tokenize step
        zero_copy_batch=True,
        fn_kwargs=dict(
            tokenizer_json=ray.put(tokenizer_json),
            tokenizer_sha=tokenizer_sha,
            eos_id=eos_id,
            fmt=source.format,
            text_field=source.text_field,
            val_fraction=val_fraction,
        ),
    )
    progress = Progress(source.total_bytes, log)
    assembler = _Assembler(out_dir, seq_len + 1, shard_size, max_docs, progress)
    with _quiet_ray_data():
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
            if not all([assembler.consume(stream) for stream in table_to_streams(table)]):
                break
    splits = assembler.finish()
    log(progress.line() + f", done in {time.perf_counter() - start:.1f}s")
    return PipelineOutput(splits, assembler.replacements, time.perf_counter() - start)


@contextlib.contextmanager
def _quiet_ray_data():
    """Silence Ray Data's own INFO lines and progress-bar notice; this module prints its own progress."""
    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
