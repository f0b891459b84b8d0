"""The per-worker loader over real Parquet shards (written here without Ray): sharding, shuffle, resume."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from raylm.data.loader import EpochPlan, TokenLoader
from raylm.data.manifest import Manifest, SplitInfo, read_manifest, write_manifest
from raylm.data.shards import ShardWriter
from raylm.errors import UserError

SEQ_LEN = 8


def make_dataset(root: Path, sequences: int, shard_size: int = 37, seq_len: int = SEQ_LEN) -> Path:
    """A dataset whose sequence i holds tokens i*(seq_len+1) ... (i+1)*(seq_len+1)-1 (so content names it)."""
    block_len = seq_len + 1
    blocks = np.arange(sequences * block_len, dtype=np.int32).reshape(sequences, block_len)
    writer = ShardWriter(root, "train", block_len, shard_size)
    for piece in np.array_split(blocks, 7):
        writer.add(piece)
    shards = writer.close()
    info = SplitInfo(documents=1, stream_tokens=blocks.size, sequences=sequences, tokens=blocks.size, shards=shards)
    manifest = Manifest(
        key="test", seq_len=seq_len, val_fraction=0.0, tokenizer={}, source={},
        splits={"train": info, "val": SplitInfo()},
    )
    write_manifest(root, manifest)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tokens"), sequences=301)


def ids_of(batches) -> list[int]:
    return [int(i) for b in batches for i in b.sample_ids]


def test_batches_are_shifted_blocks_with_exact_token_counts(dataset):
    loader = TokenLoader(dataset, batch_size=4, seed=1)
    batch = next(loader)
    assert batch.inputs.shape == batch.targets.shape == (4, SEQ_LEN)
    assert batch.inputs.dtype == batch.targets.dtype == torch.int64
    assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    first = batch.sample_ids * (SEQ_LEN + 1)
    assert torch.equal(batch.inputs[:, 0], first) and torch.equal(batch.targets[:, -1], first + SEQ_LEN)
    assert batch.tokens == loader.tokens_per_batch == 4 * SEQ_LEN


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ranks_read_disjoint_contiguous_parts_and_each_epoch_is_a_permutation(dataset, world_size):
    per_rank = 301 // world_size
    seen = []
    for rank in range(world_size):
        loader = TokenLoader(dataset, batch_size=5, rank=rank, world_size=world_size, seed=3, epochs=1,
                             chunk_size=16, window_chunks=3)
        ids = ids_of(loader)
        assert len(ids) == loader.batches_per_epoch * 5 == (per_rank // 5) * 5
        assert len(set(ids)) == len(ids) and set(ids) <= set(range(rank * per_rank, (rank + 1) * per_rank))
        seen += ids
    assert loader.dropped_per_epoch == 301 - len(seen)


def test_shuffle_is_seeded_per_epoch_and_off_when_asked(dataset):
    def epochs(seed, shuffle=True):
        loader = TokenLoader(dataset, batch_size=10, seed=seed, shuffle=shuffle, epochs=2, chunk_size=16)
        ids = ids_of(loader)
        half = len(ids) // 2
        return ids[:half], ids[half:]

    e0, e1 = epochs(7)
    assert epochs(7) == (e0, e1)
    assert e0 != e1 and len(set(e0)) == len(set(e1)) == 300  # 301 sequences: each epoch skips a different one
    assert epochs(8)[0] != e0
    assert epochs(7, shuffle=False)[0] == list(range(300))


@pytest.mark.parametrize(("world_size", "batch_size"), [(2, 4), (4, 2)])
def test_a_limited_split_gives_every_layout_the_same_sequences(dataset, world_size, batch_size):
    """Evaluation: 8 batches of 8 on one rank, or the same 64 sequences shared out over more ranks."""
    def first_batches(world, batch, limit):
        ids = []
        for rank in range(world):
            loader = TokenLoader(dataset, "train", batch_size=batch, rank=rank, world_size=world, shuffle=False,
                                 limit=limit)
            ids += ids_of(next(loader) for _ in range(64 // (batch * world)))
        return sorted(ids)

    assert first_batches(1, 8, 64) == first_batches(1, 8, None) == list(range(64))  # one rank: as before
    assert first_batches(world_size, batch_size, 64) == list(range(64))
    assert first_batches(world_size, batch_size, None) != list(range(64))  # each rank's own part of the split
    assert TokenLoader(dataset, batch_size=4, limit=10_000).per_rank == 301  # a limit beyond the split: all of it


def test_epoch_plan_visits_every_local_index_once():
    plan = EpochPlan.make(n=103, chunk_size=10, window_chunks=4, seed=0, epoch=2, rank=1, shuffle=True)
    order = plan.order()
    assert sorted(order.tolist()) == list(range(103)) and order.tolist() != list(range(103))
    assert plan.window_starts[-1] == 103


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("stop_after", [3, 29, 61])
def test_resume_yields_exactly_what_an_uninterrupted_run_yields(dataset, world_size, stop_after):
    """Stop after k batches, save, rebuild, restore: the concatenated ids equal an uninterrupted run (2+ epochs)."""
    total = 70  # more than two epochs at 4 sequences per batch (37 or 18 batches per epoch)
    options = dict(batch_size=4, world_size=world_size, seed=11, chunk_size=16, window_chunks=2)
    for rank in range(world_size):
        uninterrupted = ids_of(itertools.islice(TokenLoader(dataset, rank=rank, **options), total))
        first = TokenLoader(dataset, rank=rank, **options)
        head = ids_of(itertools.islice(first, stop_after))
        state = first.state_dict()
        resumed = TokenLoader(dataset, rank=rank, **options)
        resumed.load_state_dict(state)
        tail = ids_of(itertools.islice(resumed, total - stop_after))
        assert head + tail == uninterrupted
        assert state["epoch"] == (stop_after - 1) // first.batches_per_epoch


def test_one_ranks_state_restores_the_other_rank(dataset):
    options = dict(batch_size=4, world_size=2, seed=5)
    rank0 = TokenLoader(dataset, rank=0, **options)
    for _ in range(9):
        next(rank0)
    rank1 = TokenLoader(dataset, rank=1, **options)
    rank1.load_state_dict(rank0.state_dict())
    reference = TokenLoader(dataset, rank=1, **options)
    expected = ids_of(itertools.islice(reference, 12))[9 * 4 :]
    assert ids_of(itertools.islice(rank1, 3)) == expected


def test_state_from_another_layout_is_refused(dataset):
    state = TokenLoader(dataset, batch_size=4, world_size=1).state_dict()
    with pytest.raises(UserError, match=r"world_size: saved 1, now 2.*same dataset, world size and seed"):
        TokenLoader(dataset, batch_size=4, world_size=2).load_state_dict(state)


def test_too_few_sequences_is_a_clear_error(tmp_path):
    small = make_dataset(tmp_path, sequences=5)
    with pytest.raises(UserError, match=r"has 5 sequences, fewer than world_size \(2\) x batch_size \(4\)"):
        TokenLoader(small, batch_size=4, world_size=2)
    with pytest.raises(UserError, match="has 0 sequences"):
        TokenLoader(small, "val", batch_size=1)


def test_corrupt_shard_names_the_file(tmp_path):
    root = make_dataset(tmp_path, sequences=100, shard_size=50)
    shard = root / read_manifest(root).splits["train"].shards[1].file
    shard.write_bytes(b"PAR1 garbage that is not a parquet file")
    with pytest.raises(UserError, match=f"corrupt token shard {shard}.*raylm tokenize"):
        TokenLoader(root, batch_size=2)


def test_truncated_or_missing_shard_names_the_file(tmp_path):
    root = make_dataset(tmp_path, sequences=100, shard_size=50)
    shards = read_manifest(root).splits["train"].shards
    other = make_dataset(tmp_path / "other", sequences=30, shard_size=50)
    (root / shards[0].file).write_bytes((other / "train" / "shard-00000.parquet").read_bytes())
    with pytest.raises(UserError, match="shard-00000.parquet: 30 sequences, manifest says 50"):
        TokenLoader(root, batch_size=2)
    (root / shards[0].file).unlink()
    with pytest.raises(UserError, match="shard-00000.parquet: file missing"):
        TokenLoader(root, batch_size=2)


def test_missing_or_broken_manifest(tmp_path):
    with pytest.raises(UserError, match=f"no manifest.json in {tmp_path}; run `raylm tokenize`"):
        TokenLoader(tmp_path, batch_size=1)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(UserError, match="cannot read .*manifest.json"):
        TokenLoader(tmp_path, batch_size=1)
