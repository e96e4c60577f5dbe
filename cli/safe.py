"""Text that users or exports wrote (labels, keys, paths, messages quoting them), made safe to print.

A label may hold an ANSI escape that would restyle or clear the terminal, a carriage return that hides
what precedes it, a bidi override that reorders it; an argument or file name may hold bytes that are not
UTF-8 (Python keeps them as lone surrogates, which neither a terminal nor PostgreSQL accepts). Printed,
each becomes a visible escape; given as an option that is stored, it is refused with a usage error.
"""

from __future__ import annotations

import re

import typer

# C0 and C1 controls, DEL, the bidi marks and overrides, and lone surrogates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: a byte that was not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control character, bidi override and undecodable byte shown as an escape."""
    return _UNSAFE.sub(_escape, text)


def shown(text: str) -> str:
    """`printable(text)` with rich markup escaped too, for strings that go through rich's markup."""
    from rich.markup import escape

    return escape(printable(text))


def has_undecodable(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def utf8_text(value: str | None) -> str | None:
    """Typer callback for text that is stored or searched for: it must be valid UTF-8."""
    if value is not None and has_undecodable(value):
        raise typer.BadParameter(
            f"is not valid UTF-8: '{printable(value)}' (each \\xNN is a byte that is not)"
        )
    return value
