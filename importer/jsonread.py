"""Parse one export file: whole when small (msgspec, else json.loads to say where a problem is), item by item
with ijson when big, same rules.

Every path refuses invalid UTF-8, lone surrogate escapes, duplicate keys in an object, NaN and
infinities, integers beyond 64 bits and nesting deeper than the limit, so they give the same values.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Iterator
from typing import Any, Final, NamedTuple

import msgspec

from events.canonical import canonical_bytes
from events.errors import CanonicalError
from importer import _ijson
from importer.archive import Export, MeteredReader
from importer.errors import ImportInputError
from importer.limits import ReadLimits

BOM: Final = b"\xef\xbb\xbf"
# yajl refuses integers whose magnitude needs more than 63 bits, so the whole-file path does too.
_MAX_INT: Final = 2**63 - 1
_DIGITS_TO_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
_BIG_EXPONENTS: Final = (b"e000", b"E000", b"e+000", b"E+000")
_LONG_INTEGER: Final = b"0" * 19
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_STREAM_BUFFER: Final = 64 * 1024

_DECODER: Final = msgspec.json.Decoder()
_COLON_ESCAPE_START: Final = b"\\u003"
_COLON_ESCAPES: Final = (b"\\u003a", b"\\u003A")

Item = tuple[str, int, Any, bytes | None]
"""(array, index, item, the item's canonical bytes when the parser already made them)"""
PathPart = str | int


class ParsedFile(NamedTuple):
    """A file's top-level fields other than the streamed arrays, and those arrays' items in document order;
    `rest_data` is the canonical form of `rest` when the parser already made it."""

    rest: dict[str, Any]
    items: Iterator[Item]
    rest_data: bytes | None = None


def parse_file(export: Export, rel: str, arrays: tuple[str, ...], limits: ReadLimits) -> ParsedFile:
    """Parse `rel` (a JSON object whose `arrays` keys must hold arrays), whole or streamed by size."""
    if export.files[rel] <= limits.whole_parse_max_bytes:
        with export.open(rel) as f:
            raw = _read_at_most(f, limits.whole_parse_max_bytes + 1)
        if len(raw) <= limits.whole_parse_max_bytes:
            fast = _parse_fast(raw, arrays, limits.max_depth)
            if fast is not None:
                return fast
            try:
                document = loads_whole(raw, rel, limits.max_depth)
            except RecursionError:
                pass  # deeper than Python's stack allows: the streaming parser has no such bound
            else:
                return _split(document, rel, arrays)
    return _parse_streaming(export, rel, arrays, limits)


def json_path(parts: list[PathPart] | tuple[PathPart, ...]) -> str:
    """`$.Powers[3].FullName`; keys that are not identifiers are quoted (`$["a b"]`)."""
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.match(part):
            out.append(f".{part}")
        else:
            out.append(f"[{json.dumps(part, ensure_ascii=False)}]")
    return "".join(out)


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "null"


# --- whole-file fast path ----------------------------------------------------------------------


def _parse_fast(raw: bytes, arrays: tuple[str, ...], max_depth: int) -> ParsedFile | None:
    """The file through msgspec, with the canonical form of every record made here; None when anything
    is off, and the whole-file path below then reads it again to say what and where.

    msgspec refuses invalid UTF-8, lone surrogates, NaN, infinities and overflowing floats, but takes
    integers of any size and keeps the last of duplicated keys; those two are checked here. A key given
    twice drops a `:` (and whatever its first value held) from the canonical form, which keeps every
    other `:` of the file's strings, so the counts differ exactly when a key was duplicated (a `:` written
    as an escape, which could make up for a dropped one, sends the file to the checking path).
    """
    body = raw[len(BOM) :] if raw.startswith(BOM) else raw
    if max_depth < 3 or (_COLON_ESCAPE_START in body and any(e in body for e in _COLON_ESCAPES)):
        return None
    # Floats that overflow msgspec refuses itself; integers it takes whatever their size.
    if _LONG_INTEGER in body.translate(_DIGITS_TO_ZERO):
        return None
    try:
        document = _DECODER.decode(body)
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None
    if type(document) is not dict or any(type(document.get(key)) is not list for key in arrays):
        return None
    rest = {key: value for key, value in document.items() if key not in arrays}
    try:
        rest_data = canonical_bytes(rest)
        data = {key: [canonical_bytes(item) for item in document[key]] for key in arrays}
    except CanonicalError:
        return None
    colons = rest_data.count(b":") + len(arrays)
    for canonical in data.values():
        colons += sum(d.count(b":") for d in canonical)
    if colons != body.count(b":"):
        return None
    # Depth: a value holds at least as many `{` and `[` as it is deep (strings can only add some), so only
    # the few values with many are walked. The rest sits at the top (depth 1), items at depth 3.
    if _too_deep_for(rest, rest_data, max_depth) or any(
        _too_deep_for(item, canonical, max_depth - 2)
        for key in arrays
        for item, canonical in zip(document[key], data[key], strict=True)
    ):
        return None

    def items() -> Iterator[Item]:
        for key, value in document.items():
            if key in arrays:
                for index, (item, canonical) in enumerate(zip(value, data[key], strict=True)):
                    yield key, index, item, canonical

    return ParsedFile(rest, items(), rest_data)


# --- whole-file path ---------------------------------------------------------------------------


class _Duplicated(dict[str, Any]):
    """An object that had a key twice; kept so the check after parsing can say where it was."""

    key: str


class _Refused:
    """A NaN, infinity or out-of-range number, kept so the check after parsing can say where it was."""

    def __init__(self, text: str) -> None:
        self.text = text


def loads_whole(raw: bytes, rel: str, max_depth: int) -> dict[str, Any]:
    """Decode and parse a whole file; raises ImportInputError, or RecursionError when too deep for Python."""
    start = len(BOM) if raw.startswith(BOM) else 0
    if len(raw) == start:
        raise _empty(rel)
    try:
        text = raw[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_utf8(rel, raw, start + exc.start, exc.reason) from exc
    if "\\ud" in text or "\\uD" in text:
        scanner = SurrogateScanner(rel)
        scanner.feed(text)
        scanner.finish()
    # NaN, Infinity and duplicated keys are marked while parsing; numbers the streaming parser would refuse
    # (an overflowing float, a 19+ digit integer) are rare enough that a cheap byte scan decides whether to look.
    refused = _may_overflow(raw)

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal refused
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        refused = True
        marked = _Duplicated(obj)
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                marked.key = key
                break
            seen.add(key)
        return marked

    def parse_constant(text: str) -> Any:
        nonlocal refused
        refused = True
        return _Refused(text)

    try:
        document = json.loads(text, object_pairs_hook=pairs_hook, parse_constant=parse_constant)
    except json.JSONDecodeError as exc:
        raise _syntax(rel, text, exc) from exc
    except ValueError as exc:  # an integer longer than Python's int parsing limit
        raise ImportInputError(rel, "", f"valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise _not_object(rel, json_type(document))
    if refused or _depth(document) > max_depth:
        _locate_refused(document, rel, max_depth)
    return document


def _read_at_most(f: MeteredReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = f.read(min(1024 * 1024, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _depth(document: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        for child in value.values() if type(value) is dict or type(value) is _Duplicated else value:
            kind = type(child)
            if kind is dict or kind is list or kind is _Duplicated:
                stack.append((child, depth + 1))
    return deepest


def _too_deep_for(value: Any, canonical: bytes, limit: int) -> bool:
    if canonical.count(b"{") + canonical.count(b"[") <= limit:
        return False
    return type(value) in (dict, list) and _depth(value) > limit


def _may_overflow(raw: bytes) -> bool:
    digits = raw.translate(_DIGITS_TO_ZERO)
    return _LONG_INTEGER in digits or any(exponent in digits for exponent in _BIG_EXPONENTS)


def _locate_refused(document: dict[str, Any], rel: str, max_depth: int) -> None:
    # Depth first in document order, so the first problem reported is the first in the file.
    stack: list[tuple[Any, tuple[PathPart, ...]]] = [(document, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict | list) and len(path) + 1 > max_depth:
            raise _too_deep(rel, list(path), max_depth)
        if isinstance(value, _Duplicated):
            raise _duplicate(rel, list(path), value.key)
        if isinstance(value, _Refused):
            raise _refused_number(rel, list(path), value.text)
        if (type(value) is int and abs(value) > _MAX_INT) or (type(value) is float and math.isinf(value)):
            raise _refused_number(rel, list(path), repr(value))
        if isinstance(value, dict):
            stack.extend(((child, (*path, key)) for key, child in reversed(value.items())))
        elif isinstance(value, list):
            stack.extend((value[i], (*path, i)) for i in reversed(range(len(value))))


def _split(document: dict[str, Any], rel: str, arrays: tuple[str, ...]) -> ParsedFile:
    for key in arrays:
        if key not in document:
            raise _missing_array(rel, key)
        if not isinstance(document[key], list):
            raise _not_array(rel, key, json_type(document[key]))
    rest = {key: value for key, value in document.items() if key not in arrays}

    def items() -> Iterator[Item]:
        for key, value in document.items():
            if key in arrays:
                for index, item in enumerate(value):
                    yield key, index, item, None

    return ParsedFile(rest, items())


# --- streaming path ----------------------------------------------------------------------------


def _parse_streaming(export: Export, rel: str, arrays: tuple[str, ...], limits: ReadLimits) -> ParsedFile:
    # Two passes, so a powerset is complete (and known valid as JSON) before any of its powers is given,
    # whatever the order of its keys, and only one item is ever held.
    rest: dict[str, Any] = {}
    seen: list[str] = []
    with export.open(rel) as f:
        for kind, key, _, value in _stream_document(f, rel, arrays, limits.max_depth):
            if kind == "field":
                rest[key] = value
            elif kind == "array":
                seen.append(key)
    for key in arrays:
        if key not in seen:
            raise _missing_array(rel, key)

    def items() -> Iterator[Item]:
        with export.open(rel) as f:
            for kind, key, index, value in _stream_document(f, rel, arrays, limits.max_depth):
                if kind == "item":
                    yield key, index, value, None

    return ParsedFile(rest, items())


def _stream_document(
    f: MeteredReader, rel: str, arrays: tuple[str, ...], max_depth: int
) -> Iterator[tuple[str, str, int, Any]]:
    """("field", key, -1, value) per top-level field, ("array", key, -1, None) then ("item", key, i, v)."""
    stack: list[Any] = []
    keys: list[Any] = []
    streaming = False  # stack[1] is a streamed array: its items are given, not kept
    index = 0
    source = _CheckedStream(f, rel)

    def path(through: int) -> list[PathPart]:
        parts: list[PathPart] = []
        for level in range(through):
            container = stack[level]
            if type(container) is dict:
                if keys[level] is None:
                    break
                parts.append(keys[level])
            else:
                parts.append(index if streaming and level == 1 else len(container))
        return parts

    try:
        for event, value in _ijson.basic_parse(source, buf_size=_STREAM_BUFFER):
            if event == "map_key":
                if value in stack[-1]:
                    raise _duplicate(rel, path(len(stack) - 1), value)
                keys[-1] = value
                continue
            if event == "start_map" or event == "start_array":
                if not stack:
                    if event != "start_map":
                        raise _not_object(rel, "an array")
                elif len(stack) == 1 and keys[0] in arrays:
                    if event != "start_array":
                        raise _not_array(rel, keys[0], "an object")
                    streaming, index = True, 0
                    yield "array", keys[0], -1, None
                if len(stack) >= max_depth:
                    raise _too_deep(rel, path(len(stack)), max_depth)
                stack.append({} if event == "start_map" else [])
                keys.append(None)
                continue
            if event == "end_map" or event == "end_array":
                value = stack.pop()
                keys.pop()
                if not stack:
                    continue
            elif not stack:
                raise _not_object(rel, json_type(value))
            depth = len(stack)
            parent = stack[-1]
            if depth == 1:
                key = keys[0]
                parent[key] = None  # only the key is kept, for the duplicate check
                if key in arrays:
                    if not streaming:
                        raise _not_array(rel, key, json_type(value))
                    streaming = False
                else:
                    yield "field", key, -1, value
            elif depth == 2 and streaming:
                yield "item", keys[0], index, value
                index += 1
            elif type(parent) is dict:
                parent[keys[-1]] = value
            else:
                parent.append(value)
    except _ijson.JSONError as exc:
        raise _stream_syntax(rel, json_path(path(len(stack))), exc) from exc


class _CheckedStream:
    """Feeds ijson the file minus any BOM, refusing invalid UTF-8 and lone surrogates as it goes."""

    def __init__(self, f: MeteredReader, rel: str) -> None:
        self._f = f
        self._rel = rel
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._scanner = SurrogateScanner(rel)
        self._lines = 0
        self._line_start = 0
        self.content_bytes = 0
        self._start = True
        self._bom = 0

    def read(self, size: int, /) -> bytes:
        """Up to `size` checked bytes."""
        if size == 0:
            return b""
        data = self._f.read(size)
        if self._start:
            self._start = False
            while data and len(data) < len(BOM) and BOM.startswith(data):
                more = self._f.read(size)
                if not more:
                    break
                data += more
            if data.startswith(BOM):
                self._bom = len(BOM)
                data = data[len(BOM) :] or self._f.read(size)
        if not data:
            self._finish()
            return data
        try:
            text = self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            at = self.content_bytes + exc.start - len(self._decoder.getstate()[0])
            raise self._bad_utf8(data, at, exc.reason) from exc
        self._scanner.feed(text)
        self._count(data)
        return data

    def _count(self, data: bytes) -> None:
        newlines = data.count(b"\n")
        if newlines:
            self._lines += newlines
            self._line_start = self.content_bytes + data.rfind(b"\n") + 1
        self.content_bytes += len(data)

    def _finish(self) -> None:
        if self.content_bytes == 0:
            raise _empty(self._rel)
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            pending = len(self._decoder.getstate()[0])
            raise self._bad_utf8(b"", self.content_bytes - pending, exc.reason) from exc
        self._scanner.finish()

    def _bad_utf8(self, data: bytes, at: int, reason: str) -> ImportInputError:
        # `at` counts content bytes (after the BOM); lines before this chunk are already counted.
        within = max(0, at - self.content_bytes)
        head = data[:within]
        line = self._lines + head.count(b"\n") + 1
        line_start = self.content_bytes + head.rfind(b"\n") + 1 if b"\n" in head else self._line_start
        return _utf8_error(self._rel, line, at - line_start + 1, at + self._bom, reason)


class SurrogateScanner:
    """Finds a `\\uD800`-`\\uDFFF` escape not part of a pair, in text fed chunk by chunk."""

    def __init__(self, rel: str) -> None:
        self._rel = rel
        self._carry = ""
        self._line = 1
        self._line_start = 0  # offset of the current line's first character
        self._offset = 0  # offset of the carried text's first character

    def feed(self, text: str, final: bool = False) -> None:
        """Check `text`, keeping an escape cut by the chunk's end for the next call."""
        s = self._carry + text
        end = len(s)
        i = s.find("\\")
        while i != -1:
            if s[i + 1 : i + 2] != "u":
                if i + 1 >= len(s) and not final:
                    end = i
                    break
                i = s.find("\\", i + 2)
                continue
            code = _hex(s[i + 2 : i + 6])
            if code is None:
                if i + 6 > len(s) and not final:
                    end = i
                    break
            elif 0xD800 <= code <= 0xDBFF:
                low = _hex(s[i + 8 : i + 12]) if s[i + 6 : i + 8] == "\\u" else None
                if low is not None and 0xDC00 <= low <= 0xDFFF:
                    i = s.find("\\", i + 12)
                    continue
                if i + 12 > len(s) and not final:
                    end = i
                    break
                raise self._error(s, i)
            elif 0xDC00 <= code <= 0xDFFF:
                raise self._error(s, i)
            i = s.find("\\", i + 2)
        done = s[:end]
        newlines = done.count("\n")
        if newlines:
            self._line += newlines
            self._line_start = self._offset + done.rfind("\n") + 1
        self._offset += end
        self._carry = s[end:]

    def finish(self) -> None:
        """Check what was kept back at the end of the text."""
        self.feed("", final=True)

    def _error(self, s: str, i: int) -> ImportInputError:
        head = s[:i]
        line = self._line + head.count("\n")
        line_start = self._offset + head.rfind("\n") + 1 if "\n" in head else self._line_start
        column = self._offset + i - line_start + 1
        return ImportInputError(
            self._rel,
            f"line {line}, column {column}",
            f"text without lone surrogate escapes; {s[i : i + 6]} is half of a UTF-16 pair",
        )


def _hex(text: str) -> int | None:
    if len(text) != 4:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


# --- errors shared by both paths, so both say the same thing -------------------------------------


def _empty(rel: str) -> ImportInputError:
    return ImportInputError(rel, "line 1, column 1", "a JSON object; the file is empty")


def _bad_utf8(rel: str, raw: bytes, at: int, reason: str) -> ImportInputError:
    head = raw[:at]
    line = head.count(b"\n") + 1
    column = at - (head.rfind(b"\n") + 1) + 1 - (len(BOM) if line == 1 and raw.startswith(BOM) else 0)
    return _utf8_error(rel, line, column, at, reason)


def _utf8_error(rel: str, line: int, column: int, at: int, reason: str) -> ImportInputError:
    return ImportInputError(rel, f"line {line}, column {column} (byte {at})", f"UTF-8 text ({reason})")


def _syntax(rel: str, text: str, exc: json.JSONDecodeError) -> ImportInputError:
    # The decoder says "Unterminated string" only when a string runs to the end of the text.
    if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
        expected = "complete JSON; the file ends too early (truncated?)"
    else:
        expected = f"valid JSON ({exc.msg})"
    return ImportInputError(rel, f"line {exc.lineno}, column {exc.colno}", expected)


def _stream_syntax(rel: str, where: str, exc: Exception) -> ImportInputError:
    lines = str(exc).splitlines()
    message = lines[0].strip() if lines else type(exc).__name__
    if "premature EOF" in message:
        return ImportInputError(rel, where, "complete JSON; the file ends too early (truncated?)")
    near = " ".join(lines[1].split()) if len(lines) > 1 else ""
    detail = f"{message} near {near!r}" if near else message
    return ImportInputError(rel, where, f"valid JSON ({detail})")


def _not_object(rel: str, found: str) -> ImportInputError:
    return ImportInputError(rel, "$", f"a JSON object at the top level, found {found}")


def _missing_array(rel: str, key: str) -> ImportInputError:
    return ImportInputError(rel, "$", f'a top-level "{key}" array; there is no "{key}"')


def _not_array(rel: str, key: str, found: str) -> ImportInputError:
    return ImportInputError(rel, json_path([key]), f"an array, found {found}")


def _duplicate(rel: str, path: list[PathPart], key: str) -> ImportInputError:
    return ImportInputError(rel, json_path(path), f'an object whose keys appear once; "{key}" appears twice')


def _refused_number(rel: str, path: list[PathPart], text: str) -> ImportInputError:
    return ImportInputError(
        rel, json_path(path), f"a finite number, integers within ±(2**63-1); found {text}"
    )


def _too_deep(rel: str, path: list[PathPart], max_depth: int) -> ImportInputError:
    return ImportInputError(
        rel, json_path(path), f"JSON nested at most {max_depth} levels deep (ReadLimits.max_depth)"
    )
