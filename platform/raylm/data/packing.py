"""Packing a token stream into fixed blocks of ``seq_len + 1`` tokens (pure numpy, no I/O).

Documents are concatenated, each followed by EOS, and cut into consecutive blocks with no
padding, as GPT-2/3 pre-training did (Brown et al. 2020, section 2.2). A block of
``seq_len + 1`` tokens gives one training example: inputs ``block[:-1]``, targets ``block[1:]``.
Blocks do not overlap; the stream's last ``< seq_len + 1`` tokens are dropped and counted.

Every token of the stream up to that tail appears in the blocks, in order: the blocks of a
split, flattened, are exactly the first ``sequences * (seq_len + 1)`` tokens of its stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOKEN_DTYPE = np.int32


@dataclass
class SplitStream:
    """A batch of tokenized documents routed to the splits (what one tokenize task returns).

    ``tokens`` holds every document's ids followed by EOS, in corpus order; ``doc_tokens`` the
    length of each document's slice (0 for an empty document, which gets no EOS).
    """

    tokens: np.ndarray
    doc_tokens: np.ndarray
    doc_val: np.ndarray
    doc_replacements: np.ndarray
    doc_bytes: np.ndarray

    def head(self, docs: int) -> SplitStream:
        """The first ``docs`` documents only (for ``max_docs``)."""
        n_tokens = int(self.doc_tokens[:docs].sum())
        return SplitStream(
            self.tokens[:n_tokens],
            self.doc_tokens[:docs],
            self.doc_val[:docs],
            self.doc_replacements[:docs],
            self.doc_bytes[:docs],
        )

    def split_tokens(self, val: bool) -> np.ndarray:
        """The tokens of the validation (``val=True``) or training documents, in order."""
        mask = np.repeat(self.doc_val, self.doc_tokens)
        return self.tokens[mask] if val else self.tokens[~mask]


class Packer:
    """Cuts a stream fed in pieces into ``block_len`` blocks; the same stream gives the same blocks.

    The output depends only on the concatenation of what was fed, not on how it was cut into
    pieces, so batch boundaries chosen by Ray Data cannot change the result.
    """

    def __init__(self, block_len: int):
        if block_len < 2:
            raise ValueError(f"block_len must be at least 2 (seq_len + 1), got {block_len}")
        self.block_len = block_len
        self._carry = np.empty(0, dtype=TOKEN_DTYPE)
        self.tokens_in = 0

    def add(self, tokens: np.ndarray) -> np.ndarray:
        """Feed tokens; returns the blocks completed by them, shape ``(n, block_len)``."""
        self.tokens_in += len(tokens)
        stream = np.concatenate([self._carry, np.asarray(tokens, dtype=TOKEN_DTYPE)])
        n_blocks = len(stream) // self.block_len
        cut = n_blocks * self.block_len
        self._carry = stream[cut:].copy()
        return stream[:cut].reshape(n_blocks, self.block_len)

    @property
    def remainder(self) -> int:
        """Tokens waiting for a full block (dropped if the stream ends now)."""
        return len(self._carry)


def pack(tokens: np.ndarray, block_len: int) -> np.ndarray:
    """All complete blocks of a whole stream at once (the reference :class:`Packer` must match)."""
    n_blocks = len(tokens) // block_len
    return np.asarray(tokens[: n_blocks * block_len], dtype=TOKEN_DTYPE).reshape(n_blocks, block_len)
