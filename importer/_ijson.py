"""Typed access to ijson's fastest available backend (yajl2_c when built, else ijson's own choice)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import ijson  # type: ignore[import-untyped, unused-ignore]


class Readable(Protocol):
    """What ijson reads from."""

    def read(self, size: int, /) -> bytes: ...


try:
    _backend: Any = ijson.get_backend("yajl2_c")
except ImportError:  # pragma: no cover - the wheel ships yajl2_c on the platforms we run
    _backend = ijson

BACKEND: str = str(_backend.backend_name)
JSONError: type[Exception] = ijson.common.JSONError


def basic_parse(source: Readable, buf_size: int = 64 * 1024) -> Iterator[tuple[str, Any]]:
    """(event, value) pairs; numbers are int or float, never Decimal."""
    events: Iterator[tuple[str, Any]] = _backend.basic_parse(source, buf_size=buf_size, use_float=True)
    return events
