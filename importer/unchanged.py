"""The files of an export whose bytes an earlier import read, with the log unchanged since: their keys,
fetched from `file_keys` a batch at a time as the reader reaches them (see store/files.py)."""

from __future__ import annotations

from typing import Any, Final

import msgspec
import psycopg

from importer.source import ExportReader, FileKeys
from store import files

FETCH: Final = 500
"""Files whose keys are fetched at a time: a few KB each."""


class UnchangedFiles:
    """`reader.reuse(UnchangedFiles(...))`: the keys of each file the import `import_id` read with these
    very bytes (and took every key of), asked for in reading order; None for any other file (it is parsed).

    Every key such a file held was live from it when that import ended, and the log has not changed since:
    the file's records are the streams' heads, and its keys are all a reader needs, in order, to find the
    same duplicates and removals as a full read."""

    def __init__(
        self, conn: psycopg.Connection[Any], import_id: int, warnings: list[Any], reader: ExportReader
    ) -> None:
        self._conn = conn
        self._reading = reader.reading
        earlier = files.digests_of(conn, import_id)
        # A key that import skipped as a duplicate is not live from the file it was skipped in: should the
        # file that held it first now lose it, this one's record is needed. Such files are parsed.
        for w in warnings:
            if isinstance(w, dict) and isinstance(w.get("second"), str):
                earlier.pop(w["second"].rpartition(": ")[0], None)
        # In reading order; the reader asks for every file in that order, so a pointer walks it.
        self._files: list[tuple[str, bytes]] = []
        for rel in reader.reusable_files:
            digest = earlier.get(rel)
            if digest is not None and digest == reader.digest(rel):
                self._files.append((rel, digest))
        del earlier
        self._next = 0
        self._keys: dict[bytes, bytes] = {}

    def __len__(self) -> int:
        return len(self._files)

    def __call__(self, rel: str) -> FileKeys | None:
        if self._next >= len(self._files) or self._files[self._next][0] != rel:
            return None
        digest = self._files[self._next][1]
        self._next += 1
        if digest not in self._keys:
            ahead = [d for _, d in self._files[self._next - 1 : self._next - 1 + FETCH]]
            self._keys = files.keys_of(self._conn, ahead, self._reading)
        blob = self._keys.pop(digest, None)
        if blob is None:
            return None
        try:
            return files.decode_keys(blob)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None  # not keys as this code writes them: read the file instead
