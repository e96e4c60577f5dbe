"""A fresh schema's first import, loaded in bulk: where rebuild and replay start, before the projector
applies the rest of the log.

A log's first import holds only EntityAdded events, one per stream, and the schema being built is empty,
so the projector's rounds, staging and existence checks have nothing to decide there. Each table is filled
by one INSERT … SELECT over the import's events that reads each record once, its refusal check folded in;
the powers (most of the bytes) by two connections, each taking half of the events. Its history rows are
copies of its rows, valid from that import. The powers and history tables are loaded without their keys
and indexes, which are made again after the load.

Anything else is left to the projector, which applies the range event by event and stops at the first it
cannot apply, as always: another event type, an unknown kind or schema version, or a record the projector
would refuse (the load's work is then thrown away and the tables made again, empty).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, LiteralString, NamedTuple

import psycopg
import structlog
from psycopg import sql

from events import EntityAdded, current_version, event_type
from projections import ddl
from projections.beside import beside
from projections.kinds import POWERS, SPECS, TableSpec
from projections.projector import EVENT_ERRORS, BatchCounts, column_list, move_checkpoints, record_expr
from projections.tables import HISTORY_TABLES, VALID_FROM, history_table, metadata
from store import faults, imports
from store.connection import Database

log = structlog.get_logger(__name__)

_ADDED = event_type(EntityAdded)


class _Refused(Exception):
    """A record of the first import is one the projector would refuse: leave the range to it."""


class FirstImport(NamedTuple):
    end: int
    """Its last position: the range (0, end] is loaded."""
    import_id: int
    events: dict[str, tuple[int, int]]
    """Events per kind: all of them, and those at an even position (the first of the powers' two halves)."""


def first_import(conn: psycopg.Connection[Any], until: int) -> FirstImport | None:
    """The log's first import, if a bulk load may take it: it ends by `until` and holds only additions of
    new streams, of kinds and a schema version this code knows."""
    ends = imports.boundaries(conn, 0, until)
    if not ends:
        return None
    end = min(ends)
    rows = conn.execute(
        "SELECT split_part(stream_id, ':', 1), count(*), count(*) FILTER (WHERE global_position %% 2 = 0),"
        " bool_and(event_type = %s AND stream_version = 1),"
        " min(schema_version), max(schema_version), min(import_id), max(import_id)"
        " FROM events WHERE global_position > 0 AND global_position <= %s GROUP BY 1",
        (_ADDED, end),
    ).fetchall()
    kinds = {spec.kind for spec in SPECS}
    newest = current_version(_ADDED)
    for kind, _, _, only_added, low, high, first_id, last_id in rows:
        if kind not in kinds or not only_added or low < 1 or high > newest:
            return None
        if first_id != ends[end] or last_id != ends[end]:
            return None
    return FirstImport(end, ends[end], {kind: (int(n), int(even)) for kind, n, even, *_ in rows})


def _only(part: tuple[int, int] | None, column: LiteralString) -> sql.Composable:
    """A filter keeping part (i, n) of the rows, those whose position (or id, the same) is i modulo n."""
    if part is None:
        return sql.SQL("")
    return sql.SQL(column + " %% {} = {}").format(sql.Literal(part[1]), sql.Literal(part[0]))


def _insert(schema: str, spec: TableSpec, part: tuple[int, int] | None) -> sql.Composed:
    """The table's rows from the import's events (of one part of them), the records the projector would
    refuse left out: the caller compares the rows written with the events."""
    names, exprs = column_list(schema, spec, "x.key")
    return sql.SQL(
        "INSERT INTO {table} (id, {names}) SELECT x.global_position, {exprs} FROM"
        " (SELECT y.*, {refusal} AS reason FROM"
        "  (SELECT e.global_position, substr(e.stream_id, strpos(e.stream_id, ':') + 1) AS key,"
        "   substr(e.stream_id, strpos(e.stream_id, ':') + 1) AS k, "
        + record_expr("e.data_escaped", "e.data->'record'")
        + " AS r FROM events e WHERE e.global_position > %s AND e.global_position <= %s"
        "   AND split_part(e.stream_id, ':', 1) = %s{part} OFFSET 0) y OFFSET 0) x"
        " WHERE x.reason IS NULL"
    ).format(
        table=sql.Identifier(schema, spec.table),
        names=names,
        exprs=exprs,
        refusal=sql.SQL(spec.refusal),
        part=_only(part, " AND e.global_position"),
    )


def _history(schema: str, spec: TableSpec, part: tuple[int, int] | None) -> sql.Composed:
    columns = [c.name for c in metadata.tables[spec.table].columns]
    return sql.SQL(
        "INSERT INTO {history} ({names}, {valid_from}) SELECT {names}, %s FROM {table}{part}"
    ).format(
        history=sql.Identifier(schema, history_table(spec.table)),
        table=sql.Identifier(schema, spec.table),
        names=sql.SQL(", ").join(map(sql.Identifier, columns)),
        valid_from=sql.Identifier(VALID_FROM),
        part=_only(part, " WHERE id"),
    )


def _load(
    conn: psycopg.Connection[Any],
    schema: str,
    spec: TableSpec,
    first: FirstImport,
    part: tuple[int, int] | None,
    expected: int,
) -> int:
    """Load one table (or part of it) and its history in the caller's transaction; the rows written."""
    written = conn.execute(_insert(schema, spec, part), (0, first.end, spec.kind)).rowcount
    if written != expected:
        raise _Refused(f"{spec.table}: {expected - written} of {expected} records refused")
    conn.execute(_history(schema, spec, part), (first.import_id,))
    return written


_DEFERRED = (POWERS.table, *HISTORY_TABLES)
"""Tables loaded without their keys and indexes, made after the load: keeping a B-tree and checking a
foreign key for each row costs more than building them once. The other tables keep theirs: they are
small, and the powers' references are looked up in them as powers are written."""


def _drop_keys(conn: psycopg.Connection[Any], schema: str) -> list[tuple[str, bytes]]:
    """Drop the keys, foreign keys and indexes of the deferred tables; the statements that make them again,
    as they were (names included), by table, in an order that works: keys, indexes, then foreign keys."""
    constraints = conn.execute(
        "SELECT c.relname, format('%%I.%%I', n.nspname, c.relname), quote_ident(con.conname), con.contype,"
        " pg_get_constraintdef(con.oid) FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = ANY(%s) AND con.contype IN ('p', 'u', 'f')",
        (schema, list(_DEFERRED)),
    ).fetchall()
    indexes = conn.execute(
        "SELECT c.relname, format('%%I.%%I', n.nspname, ic.relname), pg_get_indexdef(i.indexrelid)"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = ANY(%s)"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid"
        " AND con.conrelid = i.indrelid)",
        (schema, list(_DEFERRED)),
    ).fetchall()
    foreign = [c for c in constraints if c[3] == "f"]
    keys = [c for c in constraints if c[3] != "f"]
    for _, table, name, _, _ in (*foreign, *keys):
        conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}".encode())
    for _, name, _ in indexes:
        conn.execute(f"DROP INDEX {name}".encode())
    again = [(t, f"ALTER TABLE {table} ADD CONSTRAINT {name} {d}") for t, table, name, _, d in keys]
    again += [(t, definition) for t, _, definition in indexes]
    again += [(t, f"ALTER TABLE {table} ADD CONSTRAINT {name} {d}") for t, table, name, _, d in foreign]
    return [(t, statement.encode()) for t, statement in again]


def _make_again(db: Database, conn: psycopg.Connection[Any], again: list[tuple[str, bytes]]) -> None:
    """The dropped keys and indexes: the powers' on this connection, the history tables' beside it."""

    def history(other: psycopg.Connection[Any]) -> None:
        for table, statement in again:
            if table != POWERS.table:
                other.execute(statement)

    with beside(db, history) as other:
        for table, statement in again:
            if table == POWERS.table:
                conn.execute(statement)
        other.join()


def load_first_import(
    db: Database,
    conn: psycopg.Connection[Any],
    schema: str,
    until: int,
    on_batch: Callable[[BatchCounts, int], None] | None = None,
) -> BatchCounts | None:
    """Load the first import into the schema's empty tables and move its checkpoints past it; None (and
    the tables as they were, empty) when it is one the projector must apply itself."""
    first = first_import(conn, until)
    if first is None:
        return None
    counts = BatchCounts()
    try:
        with conn.transaction():
            again = _drop_keys(conn, schema)
            for spec in SPECS:  # referenced tables first: references resolve as rows are written
                if spec is not POWERS:
                    n = _load(conn, schema, spec, first, None, first.events.get(spec.kind, (0, 0))[0])
                    counts.applied[spec.table]["added"] += n
        faults.point("bulk_load", 1)
        # The powers in two halves (odd and even positions), the odd one on a second connection.
        total, even = first.events.get(POWERS.kind, (0, 0))

        def odd_half(other: psycopg.Connection[Any]) -> None:
            with other.transaction():
                _load(other, schema, POWERS, first, (1, 2), total - even)

        with beside(db, odd_half) as odd:
            with conn.transaction():
                _load(conn, schema, POWERS, first, (0, 2), even)
            faults.point("bulk_load", 2)  # the odd half may still be in flight
            odd.join()
        _make_again(db, conn, again)
        faults.point("bulk_load", 3)
        counts.applied[POWERS.table]["added"] += total
    except (_Refused, *EVENT_ERRORS) as exc:
        # The projector finds the event, names it and commits what comes before it, as it always does.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        log.info("bulk_load_left_to_projector", schema=schema, reason=reason)
        with conn.transaction():
            ddl.drop_schema(conn, schema)
            ddl.create_tables(conn, schema)
        return None
    move_checkpoints(conn, schema, first.end)
    counts.events = first.end
    counts.batches = 1
    counts.position = first.end
    log.info("bulk_loaded", schema=schema, import_id=first.import_id, events=first.end)
    if on_batch:
        on_batch(counts, until)
    return counts
