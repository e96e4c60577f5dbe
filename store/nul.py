"""jsonb cannot hold U+0000, yet real exports do (C strings ending in NUL); the log must keep them.

Inside strings, the log's jsonb writes U+0000 as U+E000 "0" and U+E000 itself as U+E000 U+E000: an
escape that is one-to-one, so reading undoes it exactly. The chain hash and content hashes are taken
over the true (unescaped) bytes. Payloads with neither character, nearly all, pass through untouched.
"""

from __future__ import annotations

import re

_NUL_JSON = b"\\u0000"
_MARK = "\ue000".encode()
UNTOUCHED_UNLESS = (_NUL_JSON, _MARK)
"""A JSON text holding neither of these byte strings is what jsonb keeps of it, as it is (`to_jsonb`)."""
# A \u0000 escape is real only when preceded by an even number of backslashes.
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
_MARKED = re.compile(_MARK + b"(" + _MARK + b"|0)")


def to_jsonb(data: bytes) -> bytes:
    """Canonical JSON bytes -> JSON text jsonb accepts (the very same object when nothing needed escaping)."""
    if _NUL_JSON not in data and _MARK not in data:  # UNTOUCHED_UNLESS, without a generator per record
        return data
    data = data.replace(_MARK, _MARK + _MARK)
    return _NUL_ESCAPE.sub(lambda m: m.group(1) + _MARK + b"0", data)


def from_jsonb(text: bytes) -> bytes:
    """JSON text read back from jsonb -> the JSON it was made from (same values)."""
    if _MARK not in text:
        return text
    return _MARKED.sub(lambda m: _MARK if m.group(1) == _MARK else _NUL_JSON, text)
