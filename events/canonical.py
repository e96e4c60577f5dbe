"""Canonical JSON form of a record and its content hash (SHA-256 of the canonical bytes)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec

from events.errors import CanonicalError

JSON = Any

_ENCODER = msgspec.json.Encoder(order="sorted")
_DECODER = msgspec.json.Decoder()
# ValueError covers NaN/inf (json.dumps) and lone surrogates (UnicodeEncodeError);
# TypeError covers unsupported types and non-str keys; deep nesting recurses out.
_FAILURES = (TypeError, ValueError, OverflowError, RecursionError)

# msgspec and json.dumps print floats with the same shortest round-trip digits
# but differ in notation when the decimal exponent is >= 16 or <= -5: msgspec
# writes 1e16 / 1e-6 / 0.00001 where json.dumps writes 1e+16 / 1e-06 / 1e-05.
# msgspec also writes NaN/inf as null. Output that could hold such a float is
# redone with json.dumps, the reference form. One translate folds the three
# tell-tales into plain substrings: digits 1-9 -> "1", "e" -> "#", "," and "["
# -> ":", "-" dropped. Then "<digit>e<digit|->" reads "1#1", a number starting
# "0.0000" reads ":0.0000" (or starts the output), and null stays "null".
# Strings can only add false alarms (a slower, still exact, result).
_TELL_TALES = bytes.maketrans(b"123456789e,[", b"111111111#::")


def _may_differ(out: bytes) -> bool:
    folded = out.translate(_TELL_TALES, b"-")
    return b"1#1" in folded or b":0.0000" in folded or b"null" in folded or folded.startswith(b"0.0000")


def canonical_bytes(value: JSON) -> bytes:
    """Keys sorted, no whitespace, UTF-8, shortest round-trip floats: json.dumps' sorted compact form.

    Meant for JSON values; other types msgspec encodes (Structs, sets, ...) are lowered as msgspec does.
    """
    try:
        out = _ENCODER.encode(value)
    except _FAILURES as exc:
        raise CanonicalError(f"value has no canonical JSON form: {exc}") from exc
    if _may_differ(out):
        return _reference_bytes(value)
    return out


def _reference_bytes(value: JSON) -> bytes:
    try:
        text = json.dumps(
            value,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_to_builtins,
        )
        return text.encode("utf-8")
    except _FAILURES as exc:
        raise CanonicalError(f"value has no canonical JSON form: {exc}") from exc


def _to_builtins(obj: Any) -> Any:
    # Same lowering msgspec applies on the fast path (Structs, sets, datetimes, ...),
    # so both paths agree on every value msgspec accepts.
    return msgspec.to_builtins(obj, order="sorted")


def content_hash(value: JSON) -> str:
    """Hex SHA-256 of the value's canonical bytes."""
    return hashlib.sha256(canonical_bytes(value)).hexdigest()


def decode(data: bytes | str) -> JSON:
    """Parse JSON text into Python values (dict, list, str, int, float, bool, None)."""
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise CanonicalError(f"invalid JSON: {exc}") from exc
