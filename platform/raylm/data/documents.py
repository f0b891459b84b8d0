"""Pure text helpers shared by the driver and the Ray Data workers: decoding, JSON Lines, the split hash.

Nothing here touches a filesystem or Ray; every function takes bytes or text and returns values,
so the same code decides a document's text and split wherever it runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

from raylm.errors import UserError

_REPLACEMENT = "\ufffd"
_REPLACEMENT_BYTES = _REPLACEMENT.encode("utf-8")
_HASH_SCALE = float(2**64)


@dataclass(frozen=True)
class Document:
    """One document of a corpus: its text, where it came from, and how many bytes were invalid UTF-8."""

    text: str
    source: str
    replacements: int = 0
    nbytes: int = 0


def decode_utf8(data: bytes) -> tuple[str, int]:
    """Decode UTF-8, replacing invalid bytes with U+FFFD; returns ``(text, replacements)``.

    ``replacements`` counts the U+FFFD characters that decoding introduced (genuine U+FFFD
    characters already present in ``data`` are not counted).
    """
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        return text, text.count(_REPLACEMENT) - data.count(_REPLACEMENT_BYTES)


def jsonl_documents(data: bytes, path: str, field: str) -> Iterator[Document]:
    """Yield one :class:`Document` per non-blank line of a JSON Lines file, the text taken from ``field``.

    Invalid UTF-8 is replaced and counted per line. A line that is not a JSON object, lacks
    ``field`` or holds a non-string there raises :class:`UserError` naming ``path:line``;
    a ``null`` value is an empty document (skipped downstream).
    """
    for lineno, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        line, replacements = decode_utf8(raw)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        if field not in record:
            fields = ", ".join(sorted(record)[:10]) or "none"
            raise UserError(
                f"{path}:{lineno}: no field {field!r} (fields: {fields}); set data.text_field to the text field"
            )
        value = record[field]
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise UserError(f"{path}:{lineno}: field {field!r} holds a {type(value).__name__}, not a string")
        yield Document(value, f"{path}:{lineno}", replacements, len(raw))


def split_fraction(text: str) -> float:
    """A stable number in [0, 1) for ``text``: blake2b's first 8 bytes over 2**64 (same on every machine)."""
    digest = hashlib.blake2b(text.encode("utf-8", errors="surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE


def is_validation(text: str, val_fraction: float) -> bool:
    """True when a document belongs to the validation split (stable hash below ``val_fraction``).

    Identical texts always land in the same split, so duplicated documents cannot leak across it.
    """
    return val_fraction > 0 and split_fraction(text) < val_fraction


def stable_hash(obj: object, size: int = 16) -> str:
    """Hex blake2b of a JSON-serialisable object with sorted keys: the key of caches and outputs."""
    payload = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    return hashlib.blake2b(payload, digest_size=size).hexdigest()
