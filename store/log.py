"""The change log: gap-free, append-only, hash-chained `events`, with `streams` kept beside it.

Every write happens inside a transaction the caller owns (one per import): take `store.locks.LOG`
first, then `append` as often as needed; commit makes it all visible at once, or nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
import structlog
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from events import (
    EntityChanged,
    EntityRemoved,
    Event,
    canonical_bytes,
    decode,
    decode_event,
    encode_event,
    event_type,
    stream_id,
)
from store import binary_copy
from store.errors import ChainError, ConcurrencyError
from store.nul import from_jsonb, to_jsonb

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "powerlog_events"
GENESIS = bytes(32)

_EVENT_COLUMNS = (
    "global_position",
    "stream_id",
    "stream_version",
    "event_type",
    "schema_version",
    "data",
    "import_id",
    "chain_hash",
    "data_escaped",
)

_STREAM_COLUMNS = ("stream_id", "kind", "key", "version", "hash", "record", "removed", "last_position")
_STREAM_TYPES = ("text", "text", "text", "int4", "text", "bytea", "bool", "int8")


class _StreamState(NamedTuple):
    """A stream's row in `streams` after a batch, and the version it was at before the batch."""

    stream_id: str
    kind: str
    key: str
    expected: int
    version: int
    hash: str | None
    record: bytes | None
    removed: bool
    last_position: int


class Pending(NamedTuple):
    """An event to append, the stream version it expects, and the stream's record after it."""

    event: Event
    expected_version: int
    record: bytes | None


@dataclass(frozen=True)
class Head:
    position: int
    chain_hash: bytes

    def __str__(self) -> str:
        return f"{self.position}:{self.chain_hash.hex()}"

    @classmethod
    def parse(cls, text: str) -> Head:
        position, _, digest = text.partition(":")
        return cls(int(position), bytes.fromhex(digest))


@dataclass(frozen=True)
class StoredEvent:
    global_position: int
    stream_id: str
    stream_version: int
    event_type: str
    schema_version: int
    event: Event
    import_id: int
    recorded_at: datetime
    chain_hash: bytes


@dataclass(frozen=True)
class Appended:
    first_position: int
    last_position: int
    head: Head

    @property
    def count(self) -> int:
        return self.last_position - self.first_position + 1


def chain_hash(
    previous: bytes,
    position: int,
    sid: str,
    version: int,
    etype: str,
    schema: int,
    import_id: int,
    data: bytes,
) -> bytes:
    """SHA-256 over the previous row's chain hash, this row's identity and its canonical payload."""
    h = hashlib.sha256(previous)
    h.update(f"{position}\x1f{sid}\x1f{version}\x1f{etype}\x1f{schema}\x1f{import_id}\x1f".encode())
    h.update(data)
    return h.digest()


def head(conn: psycopg.Connection[Any]) -> Head:
    """The last committed position and its chain hash (position 0 for an empty log)."""
    row = conn.execute(
        "SELECT global_position, chain_hash FROM events ORDER BY global_position DESC LIMIT 1"
    ).fetchone()
    return Head(0, GENESIS) if row is None else Head(int(row[0]), bytes(row[1]))


def seconds_waiting_after(conn: psycopg.Connection[Any], position: int) -> float:
    """How long the first event past `position` has been in the log (seconds, by the server's clock), or 0
    when there is none: the lag in time of a reader that has applied everything up to `position`."""
    row = conn.execute(
        "SELECT extract(epoch FROM clock_timestamp() - recorded_at) FROM events WHERE global_position = %s",
        (position + 1,),
    ).fetchone()
    return max(0.0, float(row[0])) if row else 0.0


def append(conn: psycopg.Connection[Any], import_id: int, batch: Sequence[Pending]) -> Appended | None:
    """Append a batch in the caller's transaction, which must hold `store.locks.LOG`; None for an empty batch.

    Raises `ConcurrencyError` when a stream is not at the version an event expects; the caller's
    transaction is then unusable and must be rolled back, so nothing of the batch is stored.
    """
    if not batch:
        return None
    start = head(conn)
    position = start.position
    previous = start.chain_hash
    # Last state per stream: a batch may hold several events of one stream.
    streams: dict[str, _StreamState] = {}
    expected_next: dict[str, int] = {}
    with conn.cursor() as cur:
        try:
            # A writer thread sends while this one encodes and hashes: two cores, both busy. Rows are
            # built by store.binary_copy and sent in blocks of about 1 MB.
            with cur.copy(
                sql.SQL("COPY events ({}) FROM STDIN (FORMAT BINARY)").format(
                    sql.SQL(", ").join(map(sql.Identifier, _EVENT_COLUMNS))
                ),
                writer=QueuedLibpqWriter(cur),
            ) as copy:
                block = [binary_copy.SIGNATURE]
                size = 0
                for pending in batch:
                    ev = pending.event
                    sid = stream_id(ev.kind, ev.key)
                    want = expected_next.get(sid, pending.expected_version)
                    if pending.expected_version != want:
                        raise ConcurrencyError(
                            f"stream {sid}: event expects version {pending.expected_version}, "
                            f"the batch already brings it to {want}"
                        )
                    version = want + 1
                    expected_next[sid] = version
                    position += 1
                    etype, schema, data = event_type(ev), ev.schema_version, encode_event(ev, pending.record)
                    previous = chain_hash(previous, position, sid, version, etype, schema, import_id, data)
                    stored = to_jsonb(data)
                    row = binary_copy.event_row(
                        position,
                        sid.encode(),
                        version,
                        etype.encode(),
                        schema,
                        stored,
                        import_id,
                        previous,
                        stored is not data,
                    )
                    first = streams.get(sid)
                    base = first.expected if first else pending.expected_version
                    # An Added event holds the whole record: `streams` points at it (last_position) instead
                    # of writing it a second time; only records built by a patch are stored inline.
                    inline = pending.record if isinstance(ev, EntityChanged) else None
                    streams[sid] = _StreamState(
                        sid,
                        ev.kind,
                        ev.key,
                        base,
                        version,
                        getattr(ev, "hash", None),
                        inline,
                        isinstance(ev, EntityRemoved),
                        position,
                    )
                    block.append(row)
                    size += len(row)
                    if size > 1 << 20:
                        copy.write(b"".join(block))
                        block, size = [], 0
                block.append(binary_copy.TRAILER)
                copy.write(b"".join(block))
        except psycopg.errors.UniqueViolation as exc:
            raise _stale(exc) from None
        _write_streams(cur, list(streams.values()))
        conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(position)))
    return Appended(start.position + 1, position, Head(position, previous))


_KEY_DETAIL = re.compile(r"=\((?P<sid>.*), (?P<version>\d+)\) already exists")


def _stale(exc: psycopg.errors.UniqueViolation) -> ConcurrencyError:
    """The log's unique (stream, version) turned a stale expected version into a clear error."""
    m = _KEY_DETAIL.search(exc.diag.message_detail or "")
    if m is None:
        return ConcurrencyError(
            f"stale append: {exc.diag.message_detail}; another writer got there first: run again"
        )
    version = int(m["version"])
    return ConcurrencyError(
        f"stale append: stream {m['sid']} expected at version {version - 1}, found {version} or later; "
        "another writer got there first: run again"
    )


def _write_streams(cur: psycopg.Cursor[Any], streams: list[_StreamState]) -> None:
    new = [s for s in streams if s.expected == 0]
    old = [s for s in streams if s.expected != 0]
    copy_streams = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)")
    if new:
        try:
            with cur.copy(
                copy_streams.format(
                    sql.Identifier("streams"), sql.SQL(", ").join(map(sql.Identifier, _STREAM_COLUMNS))
                )
            ) as copy:
                copy.set_types(_STREAM_TYPES)
                for s in new:
                    copy.write_row(
                        (s.stream_id, s.kind, s.key, s.version, s.hash, s.record, s.removed, s.last_position)
                    )
        except psycopg.errors.UniqueViolation as exc:
            raise ConcurrencyError(
                f"a stream expected to be new already exists ({exc.diag.message_detail}); "
                "another writer got there first: run again"
            ) from None
    if not old:
        return
    # The application role may not UPDATE `streams` (migration 0006): a function owned by the schema's
    # owner moves each stream, after checking that its new head is the stream's event at that position.
    moved = sum(_advance(cur, part) for part in _slices(old))
    if moved != len(old):
        versions = dict(
            cur.execute(
                "SELECT stream_id, version FROM streams WHERE stream_id = ANY(%s)",
                ([s.stream_id for s in old],),
            ).fetchall()
        )
        stale = next((s for s in old if versions.get(s.stream_id) != s.expected), None)
        detail = (
            f"stream {stale.stream_id} expected at version {stale.expected}, found {versions.get(stale.stream_id)}"
            if stale
            else "unknown"
        )
        raise ConcurrencyError(f"stale append: {detail}; another writer got there first: run again")


ADVANCE_BYTES = 512 * 1024
"""Inline records sent per call that advances streams: its arrays are built whole on both sides, so a
batch of changed 20 KB powers, sent at once, would cost the import several times the batch's bytes."""


def _slices(streams: list[_StreamState]) -> Iterator[list[_StreamState]]:
    part: list[_StreamState] = []
    size = 0
    for s in streams:
        part.append(s)
        size += len(s.record or b"")
        if size >= ADVANCE_BYTES:
            yield part
            part, size = [], 0
    if part:
        yield part


def _advance(cur: psycopg.Cursor[Any], streams: list[_StreamState]) -> int:
    """Advance these streams; how many moved (fewer when one was not at its expected version)."""
    columns = list(zip(*streams, strict=True))
    # Binary parameters: records go as bytes, not twice their size in hex.
    row = cur.execute(
        "SELECT powerlog_advance_streams(%s::text[], %s::int4[], %s::int4[], %s::text[], %s::bytea[],"
        " %s::bool[], %s::int8[])",
        [list(columns[i]) for i in (0, 3, 4, 5, 6, 7, 8)],
        binary=True,
    ).fetchone()
    return int(row[0]) if row else 0


_SELECT = sql.SQL(
    "SELECT global_position, stream_id, stream_version, event_type, schema_version, data::text, import_id,"
    " recorded_at, chain_hash FROM events"
    # data as text: parsed here, after undoing the NUL escape (store.nul)
)


def _stored(row: tuple[Any, ...]) -> StoredEvent:
    return StoredEvent(
        global_position=row[0],
        stream_id=row[1],
        stream_version=row[2],
        event_type=row[3],
        schema_version=row[4],
        event=decode_event(row[3], row[4], from_jsonb(row[5].encode())),
        import_id=row[6],
        recorded_at=row[7],
        chain_hash=bytes(row[8]),
    )


def read_from(
    conn: psycopg.Connection[Any], after: int = 0, until: int | None = None, batch_size: int = 5000
) -> Iterator[list[StoredEvent]]:
    """Events after position `after` (up to `until`, inclusive), in order, in lists of `batch_size`."""
    while True:
        query = _SELECT + sql.SQL(" WHERE global_position > %s")
        params: list[Any] = [after]
        if until is not None:
            query += sql.SQL(" AND global_position <= %s")
            params.append(until)
        query += sql.SQL(" ORDER BY global_position LIMIT %s")
        params.append(batch_size)
        rows = conn.execute(query, params).fetchall()
        if not rows:
            return
        yield [_stored(r) for r in rows]
        after = rows[-1][0]


def read_stream(conn: psycopg.Connection[Any], kind: str, key: str) -> list[StoredEvent]:
    """Every event of one entity, oldest first."""
    rows = conn.execute(
        _SELECT + sql.SQL(" WHERE stream_id = %s ORDER BY stream_version"), (stream_id(kind, key),)
    ).fetchall()
    return [_stored(r) for r in rows]


def position_after_import(conn: psycopg.Connection[Any], import_id: int) -> int:
    """The log's head right after import `import_id` committed (0 while the log was still empty)."""
    # Import ids are taken under the log lock, so they follow commit order.
    row = conn.execute(
        "SELECT coalesce(max(global_position), 0) FROM events WHERE import_id <= %s", (import_id,)
    ).fetchone()
    return int(row[0]) if row else 0


STAGED = "staged_events"
"""The temporary table `stage_range` fills: one row per event of the range, without its payload."""


class Staged(NamedTuple):
    events: int
    rounds: int
    """The highest rank of an event in its stream within the range: rounds that apply it in order."""
    import_ids: tuple[int, ...] = ()
    """The imports the range's events belong to, in order."""


def stage_range(conn: psycopg.Connection[Any], after: int, until: int) -> Staged:
    """Index the events (after, until] in the session's temporary table `staged_events` (global_position,
    stream_id, kind, key, stream_version, event_type, escaped, rn: the event's rank in its stream within the
    range, import_id), emptied at commit.

    Payloads stay in `events`, to be joined by position: copying them would cost as much again.
    """
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (global_position bigint, stream_id text, kind text, key text,"
            " stream_version int, event_type text, escaped bool, rn int, import_id bigint) ON COMMIT DELETE ROWS"
        ).format(sql.Identifier(STAGED))
    )
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(STAGED)))
    # The key is what follows the first ':' of the stream id (kinds hold no ':').
    conn.execute(
        sql.SQL(
            "INSERT INTO {} SELECT global_position, stream_id, split_part(stream_id, ':', 1),"
            " substr(stream_id, strpos(stream_id, ':') + 1), stream_version, event_type, data_escaped,"
            " row_number() OVER (PARTITION BY stream_id ORDER BY global_position), import_id"
            " FROM events WHERE global_position > %s AND global_position <= %s"
        ).format(sql.Identifier(STAGED)),
        (after, until),
    )
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(STAGED)))
    row = conn.execute(
        sql.SQL("SELECT count(*), coalesce(max(rn), 0), array_agg(DISTINCT import_id) FROM {}").format(
            sql.Identifier(STAGED)
        )
    ).fetchone()
    return Staged(int(row[0]), int(row[1]), tuple(row[2] or ())) if row else Staged(0, 0)


def largest_changes(
    conn: psycopg.Connection[Any], import_id: int, kind: str, limit: int
) -> list[tuple[str, int, list[str]]]:
    """The changes of one import to entities of `kind` with the most patch operations: (key, operations,
    top-level fields they touch), most operations first."""
    rows = conn.execute(
        "SELECT data->>'key', jsonb_array_length(data->'patch'),"
        " (SELECT array_agg(DISTINCT split_part(p->>'path', '/', 2)) FROM jsonb_array_elements(data->'patch') p)"
        " FROM events WHERE import_id = %s AND event_type = 'EntityChanged' AND starts_with(stream_id, %s)"
        " ORDER BY 2 DESC, 1 LIMIT %s",
        (import_id, f"{kind}:", limit),
    ).fetchall()
    return [(str(key), int(ops), list(fields or [])) for key, ops, fields in rows]


def verify_chain(conn: psycopg.Connection[Any], batch_size: int = 10000) -> Head:
    """Recompute the hash chain over the whole log; raise `ChainError` at the first row that differs."""
    previous = GENESIS
    expected_position = 0
    after = 0
    while True:
        rows = conn.execute(
            "SELECT global_position, stream_id, stream_version, event_type, schema_version, data::text, import_id,"
            " chain_hash FROM events WHERE global_position > %s ORDER BY global_position LIMIT %s",
            (after, batch_size),
        ).fetchall()
        if not rows:
            _check_imports(conn)
            return Head(expected_position, previous)
        for pos, sid, version, etype, schema, data, import_id, stored in rows:
            expected_position += 1
            if pos != expected_position:
                raise ChainError(
                    expected_position, f"the log has a gap: position {expected_position} is missing"
                )
            previous = chain_hash(
                previous,
                pos,
                sid,
                version,
                etype,
                schema,
                import_id,
                canonical_bytes(decode(from_jsonb(data.encode()))),
            )
            if previous != bytes(stored):
                raise ChainError(
                    pos,
                    f"the hash chain breaks at position {pos} (stream {sid}): "
                    "that event or one before it was altered",
                )
        after = rows[-1][0]


def _check_imports(conn: psycopg.Connection[Any]) -> None:
    # events.import_id has no foreign key (see migration 0003): its integrity is checked here instead.
    row = conn.execute(
        "SELECT min(e.global_position), min(e.import_id) FROM events e LEFT JOIN imports i ON i.id = e.import_id"
        " WHERE i.id IS NULL OR i.status <> 'completed'"
    ).fetchone()
    if row is not None and row[0] is not None:
        raise ChainError(
            int(row[0]), f"position {row[0]} belongs to import {row[1]}, which is missing or not completed"
        )


def check_head(conn: psycopg.Connection[Any], kept: Head) -> None:
    """Fail unless the log still reaches a head kept outside the database (a cut tail shows here)."""
    row = conn.execute(
        "SELECT chain_hash FROM events WHERE global_position = %s", (kept.position,)
    ).fetchone()
    if row is None:
        raise ChainError(
            kept.position, f"the log no longer reaches position {kept.position}: its tail was cut"
        )
    if bytes(row[0]) != kept.chain_hash:
        raise ChainError(
            kept.position, f"position {kept.position} has another chain hash than the head you kept"
        )


class StreamHead(NamedTuple):
    stream_id: str
    kind: str
    key: str
    version: int
    hash: str | None
    removed: bool


def stream_heads(conn: psycopg.Connection[Any]) -> Iterator[StreamHead]:
    """Every stream's version and hash, streamed from the server (records: `current_records`)."""
    with conn.cursor() as cur:
        for row in cur.stream("SELECT stream_id, kind, key, version, hash, removed FROM streams"):
            yield StreamHead(*row)


def current_records(conn: psycopg.Connection[Any], stream_ids: Sequence[str]) -> dict[str, bytes]:
    """The current record (JSON bytes) of each live stream asked for: stored inline in `streams` when a
    patch made it, else read from the Added event that holds it."""
    rows = conn.execute(
        "SELECT s.stream_id, s.record, CASE WHEN s.record IS NULL THEN (e.data->'record')::text END"
        " FROM streams s LEFT JOIN events e ON e.global_position = s.last_position AND s.record IS NULL"
        " WHERE s.stream_id = ANY(%s) AND NOT s.removed",
        (list(stream_ids),),
    ).fetchall()
    return {
        sid: bytes(inline) if inline is not None else from_jsonb(text.encode()) for sid, inline, text in rows
    }


class StreamMismatch(NamedTuple):
    """A stream whose row in `streams` is not what folding the log gives (None: no row, or no event)."""

    stream_id: str
    recorded: str | None
    derived: str | None


def streams_against_log(conn: psycopg.Connection[Any], limit: int = 5) -> tuple[int, list[StreamMismatch]]:
    """How many streams differ between `streams` and the heads the log derives (each stream's last event:
    its version, position, hash and removal), and the first `limit` of them by stream id.

    The importer diffs against `streams`, so a row that lies there makes an import skip a change for good."""
    rows = conn.execute(
        """
        WITH heads AS (
            SELECT DISTINCT ON (stream_id) stream_id, stream_version, global_position
            FROM events ORDER BY stream_id, stream_version DESC
        ), derived AS (
            SELECT h.stream_id, h.stream_version AS version, h.global_position AS last_position,
                   e.event_type = 'EntityRemoved' AS removed,
                   CASE WHEN e.event_type = 'EntityRemoved' THEN NULL ELSE e.data->>'hash' END AS hash,
                   e.event_type = 'EntityChanged' AS inline
            FROM heads h JOIN events e ON e.global_position = h.global_position
        )
        SELECT coalesce(s.stream_id, d.stream_id), count(*) OVER (),
               CASE WHEN s.stream_id IS NOT NULL THEN format('version %%s, position %%s, hash %%s%%s%%s',
                    s.version, s.last_position, coalesce(s.hash, 'none'), CASE WHEN s.removed THEN ', removed' END,
                    CASE WHEN s.record IS NOT NULL AND encode(sha256(s.record), 'hex') IS DISTINCT FROM s.hash
                         THEN ', a record of another hash' END) END,
               CASE WHEN d.stream_id IS NOT NULL THEN format('version %%s, position %%s, hash %%s%%s',
                    d.version, d.last_position, coalesce(d.hash, 'none'), CASE WHEN d.removed THEN ', removed' END)
               END
        FROM streams s FULL JOIN derived d ON d.stream_id = s.stream_id
        WHERE s.stream_id IS NULL OR d.stream_id IS NULL
           OR s.version <> d.version OR s.last_position <> d.last_position OR s.removed <> d.removed
           OR s.hash IS DISTINCT FROM d.hash
           OR s.kind <> split_part(s.stream_id, ':', 1) OR s.key <> substr(s.stream_id, strpos(s.stream_id, ':') + 1)
           -- A patched record is kept inline and must hash to the stream's hash; an added one is read
           -- from its event.
           OR (s.record IS NOT NULL) <> d.inline
           OR (s.record IS NOT NULL AND encode(sha256(s.record), 'hex') IS DISTINCT FROM s.hash)
        ORDER BY 1 LIMIT %s
        """,
        (limit,),
    ).fetchall()
    total = int(rows[0][1]) if rows else 0
    return total, [StreamMismatch(sid, recorded, derived) for sid, _, recorded, derived in rows]


def imports_against_log(conn: psycopg.Connection[Any]) -> list[str]:
    """What each completed import recorded (its first and last position, the head after it) that the log
    no longer holds, one line per import, oldest first. A tail cut off the log shows here even when the
    chain that remains is intact."""
    rows = conn.execute(
        """
        SELECT i.id, i.first_position, i.last_position, i.head_chain_hash, e.first, e.last, h.chain_hash
        FROM imports i
        LEFT JOIN LATERAL (
            -- `+ 0`: no min/max scan of events_pkey from the log's start (migration 0011), by import_id.
            SELECT min(global_position + 0) AS first, max(global_position + 0) AS last
            FROM events WHERE import_id = i.id
        ) e ON true
        LEFT JOIN events h ON h.global_position = CASE WHEN i.head_chain_hash ~ '^[0-9]+:'
            THEN split_part(i.head_chain_hash, ':', 1)::bigint END
        WHERE i.status = 'completed'
        ORDER BY i.id
        """
    ).fetchall()
    out = []
    for import_id, first, last, recorded_head, log_first, log_last, head_hash in rows:
        if (first, last) != (log_first, log_last):
            if log_first is None:
                out.append(
                    f"import {import_id} recorded positions {first}..{last}, but the log holds none of its"
                    " events: they were cut from the log"
                )
            else:
                recorded = "no events" if first is None else f"positions {first}..{last}"
                out.append(
                    f"import {import_id} recorded {recorded}, but the log holds its events at"
                    f" {log_first}..{log_last}"
                )
            continue
        if recorded_head is None:
            continue
        try:
            kept = Head.parse(recorded_head)
        except ValueError:
            out.append(f"import {import_id} recorded a head that is not POSITION:HASH: {recorded_head!r}")
            continue
        found = GENESIS if kept.position == 0 else None if head_hash is None else bytes(head_hash)
        if found is None:
            out.append(
                f"import {import_id} recorded head {kept.position}, but the log no longer reaches position"
                f" {kept.position}: its tail was cut"
            )
        elif found != kept.chain_hash:
            out.append(
                f"import {import_id} recorded head {kept.position} with another chain hash than the log's"
                f" at that position"
            )
    return out


def heads_of(conn: psycopg.Connection[Any], stream_ids: Sequence[str]) -> dict[str, StreamHead]:
    """The heads of these streams (those that exist): what an import diffs one chunk of records against."""
    rows = conn.execute(
        "SELECT stream_id, kind, key, version, hash, removed FROM streams WHERE stream_id = ANY(%s)",
        (list(stream_ids),),
    ).fetchall()
    return {row[0]: StreamHead(*row) for row in rows}


def live_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Live (not removed) streams per kind."""
    rows = conn.execute("SELECT kind, count(*) FROM streams WHERE NOT removed GROUP BY kind").fetchall()
    return {str(kind): int(n) for kind, n in rows}


def live_streams(
    conn: psycopg.Connection[Any], fetch: int = 5000, kinds: Sequence[str] | None = None
) -> Iterator[StreamHead]:
    """Every live (not removed) stream (of these kinds, or of all) in stream_id order, through a server-side
    cursor of the caller's transaction: `fetch` rows at a time are held, and the connection may run other
    statements (appends) between fetches. The cursor reads the streams as they were when it opened."""
    with conn.cursor(name="powerlog_live_streams") as cur:
        cur.itersize = fetch
        cur.execute(
            "SELECT stream_id, kind, key, version, hash, removed FROM streams"
            " WHERE NOT removed AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s::text[]))"
            " ORDER BY stream_id",
            {"kinds": None if kinds is None else list(kinds)},
        )
        for row in cur:
            yield StreamHead(*row)
