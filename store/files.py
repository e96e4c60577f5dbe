"""What each import read, file by file (`import_files`, `file_keys`, migration 0010).

An import that finds a file's bytes as an earlier import read them, with the log unchanged since, knows that
file's records are the log's heads already: it needs the file's natural keys (to tell removed entities and
duplicate keys apart), not its records. Keys are kept once per digest, as msgpack `{kind: [key, ...]}` in
file order, so an unchanged file costs each later import one `import_files` row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import msgspec
import psycopg

KeysByKind = Mapping[str, Sequence[str]]

_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(dict[str, list[str]])

WRITE_BYTES: Final = 256 * 1024
"""Keys held before they are written: a file's keys are a few KB, and a release has thousands of files. A
write is sent as arrays built whole (twice the bytes on the client): at 1 MB, a scale 120 first import's
peak was 104.6 MB, at 256 KB 97.3 (single runs)."""


def encode_keys(keys: KeysByKind) -> bytes:
    return _ENCODER.encode(keys)


def decode_keys(blob: bytes) -> dict[str, list[str]]:
    """The keys as stored; `msgspec.ValidationError` or `msgspec.DecodeError` when the blob is not such."""
    return _DECODER.decode(blob)


def reusable_import(conn: psycopg.Connection[Any], head: str, reading: str) -> tuple[int, list[Any]] | None:
    """The newest completed import that left the log at `head` (so nothing was appended since) and read its
    files under the rules `reading`, with its warnings; None when there is none."""
    row = conn.execute(
        "SELECT i.id, i.warnings FROM imports i WHERE i.status = 'completed' AND i.head_chain_hash = %s"
        " AND EXISTS (SELECT FROM import_files f WHERE f.import_id = i.id AND f.reading = %s)"
        " ORDER BY i.id DESC LIMIT 1",
        (head, reading),
    ).fetchone()
    return None if row is None else (int(row[0]), list(row[1]))


def digests_of(conn: psycopg.Connection[Any], import_id: int) -> Iterator[tuple[str, bytes]]:
    """(path, SHA-256) of every record file that import read, streamed row by row."""
    with conn.cursor() as cur:
        for path, digest in cur.stream(
            "SELECT path, digest FROM import_files WHERE import_id = %s", (import_id,), binary=True
        ):
            yield path, bytes(digest)


def keys_of(conn: psycopg.Connection[Any], digests: Sequence[bytes], reading: str) -> dict[bytes, bytes]:
    """Digest -> the stored keys (encoded) of the files with these digests read under `reading`."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT digest, keys FROM file_keys WHERE reading = %s AND digest = ANY(%s::bytea[])",
            (reading, list(digests)),
            binary=True,
        )
        return {bytes(digest): bytes(keys) for digest, keys in cur}


class Recorder:
    """Collects an import's files (path, digest, and the keys of those it parsed) and writes them in
    batches, in the import's transaction."""

    def __init__(self, reading: str) -> None:
        self.reading = reading
        self._files: list[tuple[str, bytes]] = []
        self._keys: dict[bytes, bytes] = {}
        self._bytes = 0

    def add(self, path: str, digest: bytes, keys: KeysByKind | None) -> bool:
        """Note one file (`keys` None: the file was not parsed, its keys are stored already); True when
        enough is held that it should be written now."""
        self._files.append((path, digest))
        self._bytes += len(path) + len(digest)
        if keys is not None and digest not in self._keys:
            blob = encode_keys(keys)
            self._keys[digest] = blob
            self._bytes += len(blob)
        return self._bytes >= WRITE_BYTES

    def write(self, conn: psycopg.Connection[Any], import_id: int) -> None:
        """Write what is held, as files of `import_id`."""
        if self._keys:
            conn.execute(
                "INSERT INTO file_keys (digest, reading, keys)"
                " SELECT d, %s, k FROM unnest(%s::bytea[], %s::bytea[]) AS t(d, k)"
                " ON CONFLICT DO NOTHING",
                (self.reading, list(self._keys), list(self._keys.values())),
                binary=True,
            )
        if self._files:
            with (
                conn.cursor() as cur,
                cur.copy("COPY import_files (import_id, path, digest, reading) FROM STDIN") as copy,
            ):
                for path, digest in self._files:
                    copy.write_row((import_id, path, digest, self.reading))
        self._files.clear()
        self._keys.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._files)


def recorded(conn: psycopg.Connection[Any], import_id: int) -> Iterable[tuple[str, bytes, str]]:
    """(path, digest, reading) of every file recorded for that import, by path: for audits and tests."""
    return [
        (str(p), bytes(d), str(r))
        for p, d, r in conn.execute(
            "SELECT path, digest, reading FROM import_files WHERE import_id = %s ORDER BY path", (import_id,)
        ).fetchall()
    ]
