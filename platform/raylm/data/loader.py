"""The per-worker token loader: deterministic sharding, seeded per-epoch shuffle, sample-exact resume.

Pure Python, numpy and torch over the Parquet shards (no Ray). With ``N`` packed sequences in a
split and ``world_size`` workers, rank ``r`` owns the contiguous sequences
``[r * n, (r + 1) * n)`` with ``n = N // world_size`` (the last ``N % world_size`` are never
used and are reported by :attr:`TokenLoader.dropped_per_epoch`), so each worker reads only its
own part of the shards. The dataset directory may be a URI (``s3://...``): the shards are read
through pyarrow's filesystems (:mod:`raylm.storage`).

Each epoch visits a rank's ``n`` sequences in an order fixed by ``(seed, epoch, rank)``: its
part is cut into chunks of ``chunk_size`` sequences, the chunk order is permuted, and every
window of ``window_chunks`` consecutive chunks is loaded and permuted as a whole (memory holds
one window). An epoch yields ``n // batch_size`` full batches; the rest of the epoch is skipped.

The position is ``(epoch, samples consumed in the epoch)``. :meth:`TokenLoader.state_dict`
returns it and :meth:`TokenLoader.load_state_dict` restores it; since every rank consumes the
same number of samples, any rank's state restores every rank, and a restored loader yields
exactly the batches an uninterrupted one would have yielded next.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import torch

from raylm import storage
from raylm.data.manifest import read_manifest
from raylm.data.shards import ShardReader
from raylm.errors import UserError

STATE_VERSION = 1


class Batch(NamedTuple):
    """One step's data on one worker: ``targets`` are ``inputs`` shifted by one token."""

    inputs: torch.Tensor  # (batch, seq_len) int64
    targets: torch.Tensor  # (batch, seq_len) int64
    sample_ids: torch.Tensor  # (batch,) int64: index of each sequence in its split
    tokens: int  # target tokens in this batch: batch * seq_len


@dataclass(frozen=True)
class EpochPlan:
    """The visiting order of one rank's ``n`` local sequences in one epoch (pure, deterministic)."""

    n: int
    chunk_size: int
    window_chunks: int
    seed: int
    epoch: int
    rank: int
    shuffle: bool
    chunk_order: np.ndarray
    window_starts: np.ndarray  # sample offset of each window; last entry == n

    @classmethod
    def make(cls, n, chunk_size, window_chunks, seed, epoch, rank, shuffle) -> EpochPlan:
        n_chunks = -(-n // chunk_size)
        order = np.arange(n_chunks)
        if shuffle:
            order = np.random.default_rng([seed, epoch, rank, 0]).permutation(n_chunks)
        sizes = np.minimum((order + 1) * chunk_size, n) - order * chunk_size
        window_sizes = np.add.reduceat(sizes, np.arange(0, n_chunks, window_chunks)) if n_chunks else sizes
        starts = np.concatenate([[0], np.cumsum(window_sizes)]).astype(np.int64)
        return cls(n, chunk_size, window_chunks, seed, epoch, rank, shuffle, order, starts)

    def window_chunk_ids(self, window: int) -> np.ndarray:
        return self.chunk_order[window * self.window_chunks : (window + 1) * self.window_chunks]

    def window_local_ids(self, window: int) -> np.ndarray:
        """Local sequence indices of a window, in the order they are stored after loading."""
        ranges = [np.arange(c * self.chunk_size, min((c + 1) * self.chunk_size, self.n)) for c in
                  self.window_chunk_ids(window)]
        return np.concatenate(ranges) if ranges else np.empty(0, dtype=np.int64)

    def window_permutation(self, window: int) -> np.ndarray:
        """The order in which a window's loaded sequences are visited."""
        size = int(self.window_starts[window + 1] - self.window_starts[window])
        if not self.shuffle:
            return np.arange(size)
        return np.random.default_rng([self.seed, self.epoch, self.rank, 1, window]).permutation(size)

    def order(self) -> np.ndarray:
        """The whole epoch's local indices in visiting order (for tests and inspection)."""
        parts = [self.window_local_ids(w)[self.window_permutation(w)] for w in range(len(self.window_starts) - 1)]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


class TokenLoader:
    """Iterator of :class:`Batch` for one rank of one split of a token dataset (see module docstring).

    ``epochs=None`` repeats forever (the training loop decides when to stop); ``epochs=k`` stops
    after ``k`` epochs counted from epoch 0. ``limit``: only the split's first ``limit`` sequences are
    shared out (an evaluation set that is the same for every number of ranks).
    """

    def __init__(
        self,
        directory: str | Path,
        split: str = "train",
        *,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        epochs: Optional[int] = None,
        chunk_size: int = 256,
        window_chunks: int = 64,
        limit: Optional[int] = None,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank ({rank}) must be in [0, world_size={world_size})")
        if batch_size < 1 or chunk_size < 1 or window_chunks < 1:
            raise ValueError("batch_size, chunk_size and window_chunks must be positive")
        self.directory, self.split = storage.location(directory), split  # a local path or a URI
        self.manifest = read_manifest(directory)
        self.reader = ShardReader(directory, self.manifest, split)
        self.reader.check()
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.shuffle, self.epochs, self.chunk_size, self.window_chunks = shuffle, epochs, chunk_size, window_chunks
        self.num_sequences = len(self.reader)
        used = self.num_sequences if limit is None else min(limit, self.num_sequences)
        self.per_rank = used // world_size
        if self.batches_per_epoch == 0:
            raise UserError(
                f"split {split!r} of {directory} has {self.num_sequences} sequences, fewer than world_size "
                f"({world_size}) x batch_size ({batch_size}); use more text, a larger data.val_fraction "
                "(for val) or a smaller batch"
            )
        self._epoch, self._pos = 0, 0
        self._plan: Optional[EpochPlan] = None
        self._window: tuple[int, np.ndarray, np.ndarray] | None = None  # (index, global ids, rows), visit order

    @property
    def seq_len(self) -> int:
        return self.manifest.seq_len

    @property
    def batches_per_epoch(self) -> int:
        return self.per_rank // self.batch_size

    @property
    def tokens_per_batch(self) -> int:
        """Target tokens one batch trains on (no padding: every position counts)."""
        return self.batch_size * self.seq_len

    @property
    def dropped_per_epoch(self) -> int:
        """Sequences of the split no rank sees in an epoch (world_size remainder and last partial batches)."""
        return self.num_sequences - self.world_size * self.batches_per_epoch * self.batch_size

    @property
    def epoch(self) -> int:
        return self._epoch

    def __iter__(self) -> TokenLoader:
        return self

    def __next__(self) -> Batch:
        if self._pos + self.batch_size > self.batches_per_epoch * self.batch_size:
            self._epoch, self._pos = self._epoch + 1, 0
        if self.epochs is not None and self._epoch >= self.epochs:
            raise StopIteration
        ids, rows = self._take(self._pos, self.batch_size)
        self._pos += self.batch_size
        blocks = torch.from_numpy(rows.astype(np.int64))
        return Batch(
            inputs=blocks[:, :-1].contiguous(),
            targets=blocks[:, 1:].contiguous(),
            sample_ids=torch.from_numpy(ids),
            tokens=len(ids) * self.seq_len,
        )

    def state_dict(self) -> dict:
        """The position (epoch, samples consumed in it) plus what must match to restore it."""
        return {
            "version": STATE_VERSION,
            "epoch": self._epoch,
            "samples": self._pos,
            "split": self.split,
            "world_size": self.world_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "num_sequences": self.num_sequences,
            "chunk_size": self.chunk_size,
            "window_chunks": self.window_chunks,
            "dataset_key": self.manifest.key,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``; a state from a different dataset or layout is a :class:`UserError`."""
        mine = self.state_dict()
        different = [
            f"{k}: saved {state.get(k)!r}, now {mine[k]!r}" for k in mine if k not in ("epoch", "samples")
            and state.get(k) != mine[k]
        ]
        if different:
            raise UserError(
                "cannot resume the data loader sample-exactly, the saved state differs: " + "; ".join(different)
                + "; resume with the same dataset, world size and seed, or start the data from scratch"
            )
        self._epoch, self._pos = int(state["epoch"]), int(state["samples"])

    def _epoch_plan(self) -> EpochPlan:
        if self._plan is None or self._plan.epoch != self._epoch:
            self._plan = EpochPlan.make(
                self.per_rank, self.chunk_size, self.window_chunks, self.seed, self._epoch, self.rank, self.shuffle
            )
            self._window = None
        return self._plan

    def _take(self, pos: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Global ids and rows of the epoch's positions ``pos .. pos+count-1``."""
        plan = self._epoch_plan()
        ids, rows = [], []
        while count:
            window = int(np.searchsorted(plan.window_starts, pos, side="right") - 1)
            window_ids, window_rows = self._load_window(plan, window)
            offset = pos - int(plan.window_starts[window])
            k = min(count, len(window_ids) - offset)
            ids.append(window_ids[offset : offset + k])
            rows.append(window_rows[offset : offset + k])
            pos, count = pos + k, count - k
        return np.concatenate(ids), np.concatenate(rows)

    def _load_window(self, plan: EpochPlan, window: int) -> tuple[np.ndarray, np.ndarray]:
        if self._window is None or self._window[0] != window:
            base = self.rank * self.per_rank
            chunks = [
                self.reader.read(base + c * self.chunk_size, base + min((c + 1) * self.chunk_size, self.per_rank))
                for c in plan.window_chunk_ids(window)
            ]
            permutation = plan.window_permutation(window)
            global_ids = (plan.window_local_ids(window) + base)[permutation]
            self._window = (window, global_ids.astype(np.int64), np.concatenate(chunks)[permutation])
        return self._window[1], self._window[2]
