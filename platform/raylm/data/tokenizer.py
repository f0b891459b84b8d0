"""Tokenizers: train byte-level BPE, WordPiece or Unigram with Hugging Face ``tokenizers``, save, load.

Every tokenizer raylm trains carries the special tokens the three architectures need, first in
the vocabulary: ``<pad> <bos> <eos> <unk> <cls> <sep> <mask>`` (ids 0-6) and ``num_sentinels``
T5 sentinels ``<extra_id_0> ... <extra_id_{n-1}>`` (ids 7...). :class:`SpecialTokens` gives
their ids to the training code; for a tokenizer.json from elsewhere it also recognises common
spellings (``</s>``, ``<|endoftext|>``, ``[CLS]``...).

Corpus text is encoded with ``encode_special_tokens = True``: a literal ``<eos>`` inside a
document is ordinary text, never the special id. Byte-level BPE (the default) has no unknown
token and decodes back to the exact input text (Radford et al. 2019, GPT-2, section 2.2).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from raylm.errors import UserError

KINDS = ("bpe", "wordpiece", "unigram")
PAD, BOS, EOS, UNK, CLS, SEP, MASK = "<pad>", "<bos>", "<eos>", "<unk>", "<cls>", "<sep>", "<mask>"
BASE_SPECIALS = (PAD, BOS, EOS, UNK, CLS, SEP, MASK)
_ALIASES = {
    "pad_id": (PAD, "[PAD]", "<|pad|>"),
    "bos_id": (BOS, "<s>", "[BOS]", "<|startoftext|>", "<|begin_of_text|>", "<|endoftext|>"),
    "eos_id": (EOS, "</s>", "[EOS]", "<|endoftext|>", "<|end_of_text|>"),
    "unk_id": (UNK, "[UNK]"),
    "cls_id": (CLS, "[CLS]"),
    "sep_id": (SEP, "[SEP]"),
    "mask_id": (MASK, "[MASK]"),
}
_BYTE_ALPHABET = 256


def sentinel(i: int) -> str:
    """The i-th T5 sentinel token (Raffel et al. 2020, section 3.1.4)."""
    return f"<extra_id_{i}>"


def special_token_list(num_sentinels: int) -> list[str]:
    """Special tokens in id order: the seven base tokens, then the sentinels."""
    return [*BASE_SPECIALS, *(sentinel(i) for i in range(num_sentinels))]


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens (None where a loaded tokenizer has no such token)."""

    pad_id: Optional[int]
    bos_id: Optional[int]
    eos_id: Optional[int]
    unk_id: Optional[int]
    cls_id: Optional[int]
    sep_id: Optional[int]
    mask_id: Optional[int]
    sentinel_ids: tuple[int, ...] = ()

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> SpecialTokens:
        """Look every special token up by its raylm name, then by the common aliases."""
        ids = {name: _first_id(tokenizer, aliases) for name, aliases in _ALIASES.items()}
        sentinels = []
        while (token_id := tokenizer.token_to_id(sentinel(len(sentinels)))) is not None:
            sentinels.append(token_id)
        return cls(**ids, sentinel_ids=tuple(sentinels))

    def require(self, name: str, purpose: str) -> int:
        """The id ``name`` (e.g. ``"mask_id"``), or a :class:`UserError` saying ``purpose`` needs it."""
        value = getattr(self, name)
        if value is None:
            raise UserError(
                f"the tokenizer has no {name[:-3]} token, which {purpose} needs; train one with "
                "data.tokenizer=bpe (raylm adds all special tokens) or add it to the tokenizer.json"
            )
        return value

    def to_dict(self) -> dict:
        data = asdict(self)
        data["sentinel_ids"] = list(self.sentinel_ids)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SpecialTokens:
        return cls(**{**data, "sentinel_ids": tuple(data.get("sentinel_ids", ()))})


def _first_id(tokenizer: Tokenizer, names: Iterable[str]) -> Optional[int]:
    for name in names:
        token_id = tokenizer.token_to_id(name)
        if token_id is not None:
            return token_id
    return None


def new_tokenizer(kind: str, vocab_size: int, num_sentinels: int, show_progress: bool = False):
    """An untrained tokenizer of ``kind`` and its trainer, both carrying raylm's special tokens."""
    specials = special_token_list(num_sentinels)
    if kind == "bpe":
        minimum = _BYTE_ALPHABET + len(specials)
        if vocab_size < minimum:
            raise UserError(
                f"model.vocab_size ({vocab_size}) is too small for byte-level BPE: it needs at least {minimum} "
                f"(256 bytes + {len(specials)} special tokens); raise model.vocab_size or lower data.num_sentinels"
            )
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=show_progress,
        )
    elif kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=show_progress)
    elif kind == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, unk_token=UNK, show_progress=show_progress
        )
    else:
        raise UserError(f"unknown tokenizer kind {kind!r}; use one of {', '.join(KINDS)} or a tokenizer.json path")
    return tokenizer, trainer


def train_tokenizer(
    texts: Iterable[str], kind: str = "bpe", vocab_size: int = 8192, num_sentinels: int = 100, show_progress=False
) -> Tokenizer:
    """Train a ``kind`` tokenizer of at most ``vocab_size`` tokens on ``texts`` (deterministic for BPE)."""
    tokenizer, trainer = new_tokenizer(kind, vocab_size, num_sentinels, show_progress)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if tokenizer.get_vocab_size() <= len(special_token_list(num_sentinels)):
        raise UserError("the tokenizer training sample holds no text; check the corpus")
    tokenizer.encode_special_tokens = True
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a ``tokenizer.json`` (or the one inside a dataset directory); errors name the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"tokenizer file not found: {path}; give a tokenizer.json path or a kind ({', '.join(KINDS)})")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises plain Exception for bad JSON
        raise UserError(f"cannot load tokenizer {path}: {exc}; is it a Hugging Face tokenizer.json?") from None
    tokenizer.encode_special_tokens = True
    return tokenizer


def tokenizer_from_json(text: str) -> Tokenizer:
    """A tokenizer from its JSON text (how workers receive it), set to encode corpus text literally."""
    tokenizer = Tokenizer.from_str(text)
    tokenizer.encode_special_tokens = True
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> Path:
    """Write ``tokenizer.json`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(tokenizer.to_str(), encoding="utf-8")
    tmp.replace(path)
    return path


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """sha256 of the tokenizer's canonical JSON (vocabulary, merges, specials, pre-tokenizer...)."""
    canonical = json.dumps(json.loads(tokenizer.to_str()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
