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
    same duplicates and removals as a full read. Which files those are is one flag a file of the listing
    (tens of thousands of paths and digests held at once cost a large export several MB). `conn` reads what
    is committed: the importer's reading connection, not the one busy appending.
    """

    def __init__(
        self, conn: psycopg.Connection[Any], import_id: int, warnings: list[Any], reader: ExportReader
    ) -> None:
        self._conn = conn
        self._reader = reader
        # A key that import skipped as a duplicate is not live from the file it was skipped in: should the
        # file that held it first now lose it, this one's record is needed. Such files are parsed.
        skipped = {
            w["second"].rpartition(": ")[0]
            for w in warnings
            if isinstance(w, dict) and isinstance(w.get("second"), str)
        }
        skipped.add(reader.files[0])  # I12.json, parsed for its header in any case
        self._unchanged = bytearray(reader.listed)
        self._count = 0
        for path, digest in files.digests_of(conn, import_id):
            position = reader.position(path)
            if position is not None and path not in skipped and reader.digest(path) == digest:
                self._unchanged[position] = 1
                self._count += 1
        self._upcoming = reader.reusable_files
        self._asked = 0  # the reader asks about every file of `reusable_files`, in that order
        self._keys: dict[bytes, bytes] = {}

    def __len__(self) -> int:
        return self._count

    def _taken(self, rel: str) -> bytes | None:
        position = self._reader.position(rel)
        return self._reader.digest(rel) if position is not None and self._unchanged[position] else None

    def __call__(self, rel: str) -> FileKeys | None:
        self._asked += 1
        digest = self._taken(rel)
        if digest is None:
            return None
        if digest not in self._keys:
            ahead = [digest]
            for i in range(self._asked, min(len(self._upcoming), self._asked + 4 * FETCH)):
                if len(ahead) == FETCH:
                    break
                if (d := self._taken(self._upcoming[i])) is not None:
                    ahead.append(d)
            self._keys = files.keys_of(self._conn, ahead, self._reader.reading)
        blob = self._keys.pop(digest, None)
        if blob is None:
            return None
        try:
            return files.decode_keys(blob)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None  # not keys as this code writes them: read the file instead
