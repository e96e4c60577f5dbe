"""The log as of a past position: streams folded, entities present, each stream's last event.

Reads only; audits (history, diff, replay, export) build on these and never query `events` themselves.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg

from events import JSON, Event, decode_event, fold
from events.mids import check_kind
from store.nul import from_jsonb


def stream_events(
    conn: psycopg.Connection[Any], stream_ids: Sequence[str], until: int
) -> Iterator[tuple[str, list[tuple[int, Event]]]]:
    """Each stream's events up to position `until` as (position, event), one stream at a time, in the
    order `stream_ids` gives; streamed from the server so only one stream's events are held."""
    if not stream_ids:
        return
    current: str | None = None
    events: list[tuple[int, Event]] = []
    with conn.cursor() as cur:
        rows = cur.stream(
            "SELECT e.stream_id, e.global_position, e.event_type, e.schema_version, e.data::text"
            " FROM unnest(%s::text[]) WITH ORDINALITY AS s(stream_id, ord)"
            " JOIN events e ON e.stream_id = s.stream_id AND e.global_position <= %s"
            " ORDER BY s.ord, e.stream_version",
            (list(stream_ids), until),
        )
        for sid, position, etype, schema, data in rows:
            if sid != current:
                if current is not None:
                    yield current, events
                current, events = sid, []
            events.append((position, decode_event(etype, schema, from_jsonb(data.encode()))))
    if current is not None:
        yield current, events


def fold_streams(
    conn: psycopg.Connection[Any], stream_ids: Sequence[str], until: int
) -> Iterator[tuple[str, JSON]]:
    """(stream id, record after position `until`) per stream, in the order given (None: absent then)."""
    pending = iter(stream_ids)
    for sid, events in stream_events(conn, stream_ids, until):
        # A stream with no event up to `until` gets no row from the query: it was absent.
        for expected in pending:
            if expected == sid:
                break
            yield expected, None
        yield sid, fold(ev for _, ev in events)
    for expected in pending:
        yield expected, None


@dataclass(frozen=True)
class Present:
    """An entity present after some position: its key and where its stream began (its read-table id)."""

    key: str
    first_position: int


def present(conn: psycopg.Connection[Any], kind: str, until: int) -> list[Present]:
    """Entities of `kind` present after position `until` (last event an Added or a Changed), oldest first."""
    check_kind(kind)
    rows = conn.execute(
        "SELECT substr(stream_id, %s), min(global_position),"
        " (array_agg(event_type ORDER BY stream_version DESC))[1] <> 'EntityRemoved'"
        " FROM events WHERE starts_with(stream_id, %s) AND global_position <= %s"
        " GROUP BY stream_id ORDER BY 2",
        (len(kind) + 2, f"{kind}:", until),
    ).fetchall()
    return [Present(r[0], int(r[1])) for r in rows if r[2]]


class StreamAt(NamedTuple):
    """One stream's last event as of a position: whether it was present then, its version and position."""

    present: bool
    version: int
    position: int


class StreamPair(NamedTuple):
    """A stream as of two positions; None on a side where it had no event yet."""

    stream_id: str
    a: StreamAt | None
    b: StreamAt | None


# Last event per stream as of one side, without reading `data` (records are large and TOASTed).
_LAST = (
    "SELECT DISTINCT ON (stream_id) stream_id, stream_version, global_position,"
    " event_type <> 'EntityRemoved' AS present FROM events"
    " WHERE global_position <= %(pos{side})s{filters} ORDER BY stream_id, stream_version DESC"
)


def streams_at(
    conn: psycopg.Connection[Any],
    position_a: int,
    position_b: int,
    kind: str | None = None,
    key_like: str | None = None,
) -> list[StreamPair]:
    """Every stream (of `kind`, with a key LIKE `key_like`) as of two positions."""
    filters = ""
    params: dict[str, Any] = {"posa": position_a, "posb": position_b}
    if kind is not None:
        check_kind(kind)
        filters += " AND starts_with(stream_id, %(prefix)s)"
        params["prefix"] = f"{kind}:"
    if key_like is not None:
        filters += " AND substr(stream_id, strpos(stream_id, ':') + 1) LIKE %(like)s"
        params["like"] = key_like
    rows = conn.execute(
        f"WITH a AS ({_LAST.format(side='a', filters=filters)}), b AS ({_LAST.format(side='b', filters=filters)})"
        " SELECT stream_id, a.present, a.stream_version, a.global_position,"
        " b.present, b.stream_version, b.global_position FROM a FULL JOIN b USING (stream_id)",
        params,
    ).fetchall()
    return [
        StreamPair(
            sid,
            None if pa is None else StreamAt(pa, va, qa),
            None if pb is None else StreamAt(pb, vb, qb),
        )
        for sid, pa, va, qa, pb, vb, qb in rows
    ]


def hashes_at(conn: psycopg.Connection[Any], positions: Sequence[int]) -> dict[int, str | None]:
    """The content hash each event at these positions gives its record (None for a removal)."""
    if not positions:
        return {}
    return dict(
        conn.execute(
            "SELECT global_position, data->>'hash' FROM events WHERE global_position = ANY(%s)",
            (list(positions),),
        ).fetchall()
    )


class Touched(NamedTuple):
    """One stream's events in a range of positions: how many, whether all are changes, whether any payload
    had U+0000 escaped (store/nul.py), and the distinct paths their patches touch."""

    events: int
    only_changes: bool
    escaped: bool
    paths: list[str]


def touched(conn: psycopg.Connection[Any], stream_ids: Sequence[str], lo: int, hi: int) -> dict[str, Touched]:
    """Per stream, its events in (lo, hi] and the paths of their patches (patches are small: records are
    not read)."""
    if not stream_ids:
        return {}
    rows = conn.execute(
        "SELECT e.stream_id, count(DISTINCT e.global_position), bool_and(e.event_type = 'EntityChanged'),"
        " bool_or(e.data_escaped), coalesce(array_agg(DISTINCT p.op->>'path') FILTER (WHERE p.op IS NOT NULL), '{}')"
        " FROM unnest(%s::text[]) s(stream_id)"
        " JOIN events e ON e.stream_id = s.stream_id AND e.global_position > %s AND e.global_position <= %s"
        " LEFT JOIN LATERAL jsonb_array_elements("
        "  CASE WHEN e.event_type = 'EntityChanged' THEN e.data->'patch' END) p(op) ON true"
        " GROUP BY e.stream_id",
        (list(stream_ids), lo, hi),
    ).fetchall()
    return {
        sid: Touched(int(n), bool(changes), bool(escaped), list(paths))
        for sid, n, changes, escaped, paths in rows
    }
