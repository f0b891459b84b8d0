"""Tokenizers: BPE round trip on real text, special-token ids, save/load, the other kinds, bad input."""

from __future__ import annotations

import pytest

from raylm.data.corpus import iter_documents, resolve_corpus
from raylm.data.tokenizer import (
    SpecialTokens,
    load_tokenizer,
    save_tokenizer,
    special_token_list,
    tokenizer_hash,
    train_tokenizer,
)
from raylm.errors import UserError


@pytest.fixture(scope="module")
def sample() -> list[str]:
    """Real text: the first stdlib source files (a few hundred KB)."""
    return [d.text for d in iter_documents(resolve_corpus("stdlib", max_docs=12)) if d.text]


@pytest.fixture(scope="module")
def bpe(sample):
    return train_tokenizer(sample, "bpe", vocab_size=1024, num_sentinels=8)


def test_bpe_round_trip_is_exact_on_a_corpus_sample(bpe, sample):
    tricky = "tabs\tand  spaces\n\n  café, naïve, 東京, emoji 🙂, a literal <eos> and <extra_id_0>\r\n"
    for text in [*sample, tricky]:
        ids = bpe.encode(text, add_special_tokens=False).ids
        assert bpe.decode(ids, skip_special_tokens=False) == text


def test_special_tokens_come_first_with_sentinels(bpe):
    specials = SpecialTokens.from_tokenizer(bpe)
    assert (specials.pad_id, specials.bos_id, specials.eos_id, specials.unk_id) == (0, 1, 2, 3)
    assert (specials.cls_id, specials.sep_id, specials.mask_id) == (4, 5, 6)
    assert specials.sentinel_ids == tuple(range(7, 15))
    assert SpecialTokens.from_dict(specials.to_dict()) == specials
    assert special_token_list(2)[-1] == "<extra_id_1>"


def test_literal_special_text_in_a_document_is_not_a_special_id(bpe):
    ids = bpe.encode("x <eos> <pad> y", add_special_tokens=False).ids
    specials = SpecialTokens.from_tokenizer(bpe)
    assert specials.eos_id not in ids and specials.pad_id not in ids


def test_training_is_deterministic_and_save_load_keeps_the_hash(bpe, sample, tmp_path):
    again = train_tokenizer(sample, "bpe", vocab_size=1024, num_sentinels=8)
    assert tokenizer_hash(again) == tokenizer_hash(bpe)
    path = save_tokenizer(bpe, tmp_path / "tok" / "tokenizer.json")
    loaded = load_tokenizer(path)
    assert tokenizer_hash(loaded) == tokenizer_hash(bpe)
    assert tokenizer_hash(load_tokenizer(tmp_path / "tok")) == tokenizer_hash(bpe)
    assert loaded.encode("def f(x):\n    return x").ids == bpe.encode("def f(x):\n    return x").ids


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_other_kinds_train_with_the_same_specials(kind, sample):
    tokenizer = train_tokenizer(sample[:4], kind, vocab_size=600, num_sentinels=3)
    specials = SpecialTokens.from_tokenizer(tokenizer)
    assert specials.mask_id == 6 and specials.sentinel_ids == (7, 8, 9)
    assert 10 < tokenizer.get_vocab_size() <= 600
    assert "return" in tokenizer.decode(tokenizer.encode("return value").ids)


def test_aliases_of_a_foreign_tokenizer_and_require(tmp_path):
    from tokenizers import Tokenizer, models

    foreign = Tokenizer(models.WordLevel({"[UNK]": 0, "</s>": 1, "[MASK]": 2, "hi": 3}, unk_token="[UNK]"))
    specials = SpecialTokens.from_tokenizer(foreign)
    assert (specials.eos_id, specials.mask_id, specials.unk_id, specials.pad_id) == (1, 2, 0, None)
    assert specials.require("eos_id", "packing") == 1
    with pytest.raises(UserError, match="no pad token, which batching needs"):
        specials.require("pad_id", "batching")


def test_vocab_too_small_for_byte_level_bpe(sample):
    with pytest.raises(UserError, match=r"model.vocab_size \(300\) is too small.*at least 363"):
        train_tokenizer(sample, "bpe", vocab_size=300, num_sentinels=100)


def test_unknown_kind_and_missing_or_broken_file(tmp_path):
    with pytest.raises(UserError, match="unknown tokenizer kind 'sentencepiece'"):
        train_tokenizer(["x"], "sentencepiece")
    with pytest.raises(UserError, match=f"tokenizer file not found: {tmp_path / 'none.json'}"):
        load_tokenizer(tmp_path / "none.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match=f"cannot load tokenizer {broken}"):
        load_tokenizer(broken)
