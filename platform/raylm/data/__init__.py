"""Data: corpora, tokenizers, the Ray Data tokenize-and-pack pipeline and the resumable per-worker loader.

The flow is corpus -> tokenizer -> Ray Data shards -> loader::

    from raylm.data import prepare_dataset, TokenLoader, load_tokenizer

    ds = prepare_dataset(config)                 # builds <data.shards_dir>/<key>/ or reuses it (driver, Ray)
    specials = ds.special_tokens()               # pad_id, bos_id, eos_id, cls_id, sep_id, mask_id, sentinel_ids
    tokenizer = load_tokenizer(ds.directory)     # the dataset's tokenizer.json
    loader = TokenLoader(ds.directory, "train", batch_size=8, rank=rank, world_size=world, seed=config.data.seed)
    inputs, targets, sample_ids, tokens = next(loader)

Names are imported on first use: Ray workers that tokenize never import torch, and only
:func:`prepare_dataset` starts or uses Ray.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CorpusSource": "corpus",
    "iter_documents": "corpus",
    "resolve_corpus": "corpus",
    "Batch": "loader",
    "EpochPlan": "loader",
    "TokenLoader": "loader",
    "Manifest": "manifest",
    "read_manifest": "manifest",
    "PreparedDataset": "prepare",
    "build_dataset": "prepare",
    "prepare_dataset": "prepare",
    "SpecialTokens": "tokenizer",
    "load_tokenizer": "tokenizer",
    "save_tokenizer": "tokenizer",
    "tokenizer_hash": "tokenizer",
    "train_tokenizer": "tokenizer",
}


def __getattr__(name: str):
    """Import lazily, so that Ray workers running the tokenizer never import torch (the loader's)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = [
    "Batch",
    "CorpusSource",
    "EpochPlan",
    "Manifest",
    "PreparedDataset",
    "SpecialTokens",
    "TokenLoader",
    "build_dataset",
    "iter_documents",
    "load_tokenizer",
    "prepare_dataset",
    "read_manifest",
    "resolve_corpus",
    "save_tokenizer",
    "tokenizer_hash",
    "train_tokenizer",
]
