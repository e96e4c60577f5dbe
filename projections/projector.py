"""Apply the log to the read tables in set-based batches, each with its checkpoint in the same transaction.

An event that cannot be applied (unknown type or kind, a change or removal of an entity that does not
exist, an addition of one that does, a patch that fails, a record the table refuses) is never skipped:
the batch stops before it, the events before it are committed, and `ProjectionStalled` names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
import structlog
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.types.json import JsonbBinaryLoader

from events import EVENT_TYPES, PatchError, apply, current_version, event_type
from projections import stalls, temporal
from projections.fingerprint import after_import
from projections.kinds import SPECS, TableSpec
from projections.stalls import ProjectionStalled
from projections.tables import CHECKPOINTS, LIVE_SCHEMA
from store import faults, imports, nul
from store.log import STAGED, head, stage_range

log = structlog.get_logger(__name__)

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()
# jsonb's binary input: a version byte, then JSON text.
_JSONB_V1 = b"\x01"
PROJECTORS = tuple(spec.table for spec in SPECS)
_KINDS = {spec.kind for spec in SPECS}
_VERSIONS = {event_type(cls): current_version(event_type(cls)) for cls in EVENT_TYPES}
# What the database says when a value of one event cannot be written (a number out of range, an operation
# on the wrong JSON type, a constraint): the event is located and named, never skipped.
EVENT_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError)
# Changed records patched per fetch: bounds the projector's memory (see _apply_changes).
_CHANGE_CHUNK = 100


@dataclass
class BatchCounts:
    """Rows written per table in a run, and references left dangling (kept as NULL)."""

    applied: dict[str, dict[str, int]] = field(
        default_factory=lambda: {t: {"added": 0, "changed": 0, "removed": 0} for t in PROJECTORS}
    )
    events: int = 0
    batches: int = 0
    position: int = 0

    @property
    def changed_tables(self) -> bool:
        return any(sum(c.values()) for c in self.applied.values())

    def add(self, batch: BatchCounts) -> None:
        """Count a committed batch."""
        for table, counts in batch.applied.items():
            for what, n in counts.items():
                self.applied[table][what] += n
        self.events += batch.events
        self.batches += batch.batches
        self.position = batch.position


def _q(template: str, schema: str, spec: TableSpec, **more: Any) -> sql.Composed:
    """A statement on one table of the schema; {staged} is the log range `store.log.stage_range` staged."""
    return sql.SQL(template).format(
        table=sql.Identifier(schema, spec.table),
        key=sql.Identifier(spec.key_column),
        staged=sql.Identifier(STAGED),
        **more,
    )


def column_list(schema: str, spec: TableSpec, key: str) -> tuple[sql.Composable, sql.Composable]:
    """Column names and their expressions over the record `r`, references resolved by natural key; the key
    column is `key`, the stream's key (a record naming another is refused before it gets here)."""
    names = [sql.Identifier(c) for c in spec.columns]
    exprs: list[sql.Composable] = [
        sql.SQL(key if c == spec.key_column else e) for c, e in spec.columns.items()
    ]
    for column, (ref_table, ref_key, record_expr, _) in spec.references.items():
        names.append(sql.Identifier(column))
        exprs.append(
            sql.SQL("(SELECT ref.id FROM {} ref WHERE ref.{} = " + record_expr + ")").format(
                sql.Identifier(schema, ref_table), sql.Identifier(ref_key)
            )
        )
    return sql.SQL(", ").join(names), sql.SQL(", ").join(exprs)


def checkpoint(conn: psycopg.Connection[Any], schema: str = LIVE_SCHEMA) -> int:
    """The position every projector of this schema has applied (the lowest of them)."""
    row = conn.execute(
        sql.SQL("SELECT min(position), count(*) FROM {}").format(sql.Identifier(schema, CHECKPOINTS))
    ).fetchone()
    if row is None or row[1] < len(PROJECTORS):
        return 0
    return int(row[0])


def checkpoints(conn: psycopg.Connection[Any], schema: str = LIVE_SCHEMA) -> dict[str, int]:
    rows = conn.execute(
        sql.SQL("SELECT projector, position FROM {}").format(sql.Identifier(schema, CHECKPOINTS))
    ).fetchall()
    found = {r[0]: int(r[1]) for r in rows}
    return {p: found.get(p, 0) for p in PROJECTORS}


_ID = (
    "CASE WHEN x.stream_version = 1 THEN x.global_position ELSE"
    " (SELECT e.global_position FROM events e WHERE e.stream_id = x.stream_id AND e.stream_version = 1) END"
)


def record_expr(escaped: str, record: str) -> str:
    """SQL for an event's record as the tables read it: its NULs unmarked when the event says they were."""
    return f"CASE WHEN {escaped} THEN powerlog_unmark({record}) ELSE {record} END"


def _refuse_unknown(conn: psycopg.Connection[Any], after: int, until: int) -> None:
    """Stop at the first event of (after, until] of a type, schema version or entity kind this code does not
    know: applying it as something else, or not at all, would misstate the tables."""
    rows = conn.execute(
        "SELECT event_type, schema_version, split_part(stream_id, ':', 1), min(global_position) FROM events"
        " WHERE global_position > %s AND global_position <= %s GROUP BY 1, 2, 3",
        (after, until),
    ).fetchall()
    refused: list[tuple[int, str]] = []
    for etype, version, kind, position in rows:
        if etype not in _VERSIONS:
            refused.append((position, f"unknown event type {etype!r}"))
        elif not 1 <= version <= _VERSIONS[etype]:
            refused.append(
                (
                    position,
                    f"{etype} schema_version {version} is not one this powerlog knows (1 to "
                    f"{_VERSIONS[etype]}): upgrade powerlog",
                )
            )
        elif kind not in _KINDS:
            refused.append((position, f"unknown entity kind {kind!r}"))
    if refused:
        position, reason = min(refused)
        raise _stalled_at(conn, position, reason)


def _stalled_at(conn: psycopg.Connection[Any], position: int, reason: str) -> ProjectionStalled:
    row = conn.execute(
        "SELECT stream_id, event_type FROM events WHERE global_position = %s", (position,)
    ).fetchone()
    stream, etype = row if row else ("?", "?")
    return ProjectionStalled(position, stream, etype, reason)


# The record `r` is computed in a subquery kept apart by OFFSET 0: otherwise the planner inlines it and
# evaluates the patch and unmarking once per column that reads `r`.
_CHECK_ROUND = (
    "SELECT global_position, stream_id, event_type, reason FROM ("
    " SELECT x.global_position, x.stream_id, x.event_type, CASE"
    "  WHEN x.event_type = 'EntityAdded' AND t.id IS NOT NULL THEN 'it adds an entity that exists already'"
    "  WHEN x.event_type <> 'EntityAdded' AND t.id IS NULL"
    "   THEN 'the entity it ' || CASE x.event_type WHEN 'EntityChanged' THEN 'changes' ELSE 'removes' END"
    "    || ' does not exist'"
    "  WHEN x.event_type = 'EntityAdded' THEN x.refused END AS reason"
    " FROM (SELECT b.global_position, b.stream_id, b.event_type, b.key, {refusal} AS refused FROM"
    "  (SELECT b.*, b.key AS k, " + record_expr("b.escaped", "e.data->'record'") + " AS r FROM {staged} b"
    "   LEFT JOIN events e ON b.event_type = 'EntityAdded' AND e.global_position = b.global_position"
    "    AND e.global_position > %s AND e.global_position <= %s"
    "   WHERE b.kind = %s AND b.rn = %s OFFSET 0) b) x"
    " LEFT JOIN {table} t ON t.{key} = x.key) c"
    " WHERE reason IS NOT NULL ORDER BY global_position LIMIT 1"
)


def _apply_round(
    conn: psycopg.Connection[Any],
    schema: str,
    spec: TableSpec,
    rn: int,
    bounds: tuple[int, int],
    counts: BatchCounts,
) -> None:
    # Checked against the table as the earlier rounds left it: a stream has one event per round.
    refused = conn.execute(
        _q(_CHECK_ROUND, schema, spec, refusal=sql.SQL(spec.refusal)), (*bounds, spec.kind, rn)
    ).fetchone()
    if refused is not None:
        raise ProjectionStalled(*refused)
    names, exprs = column_list(schema, spec, "x.key")
    applied = counts.applied[spec.table]
    cur = conn.execute(
        _q(
            "DELETE FROM {table} t USING {staged} b WHERE b.kind = %s AND b.rn = %s"
            " AND b.event_type = 'EntityRemoved' AND t.{key} = b.key",
            schema,
            spec,
        ),
        (spec.kind, rn),
    )
    applied["removed"] += max(cur.rowcount, 0)
    cur = conn.execute(
        _q(
            "INSERT INTO {table} (id, {names}) SELECT " + _ID + ", {exprs} FROM"
            " (SELECT b.*, " + record_expr("b.escaped", "e.data->'record'") + " AS r"
            "  FROM {staged} b JOIN events e ON e.global_position = b.global_position"
            "   AND e.global_position > %s AND e.global_position <= %s"
            "  WHERE b.kind = %s AND b.rn = %s AND b.event_type = 'EntityAdded' OFFSET 0) x",
            schema,
            spec,
            names=names,
            exprs=exprs,
        ),
        (*bounds, spec.kind, rn),
    )
    applied["added"] += max(cur.rowcount, 0)
    applied["changed"] += _apply_changes(conn, schema, spec, rn, bounds)


def _resolve_dangling(conn: psycopg.Connection[Any], schema: str, spec: TableSpec) -> None:
    """Point rows left dangling by earlier batches at what this batch added (rows written in this batch
    resolved theirs as they were written)."""
    for column, (ref_table, ref_key, _, row_expr) in spec.references.items():
        ref_kind = next(s.kind for s in SPECS if s.table == ref_table)
        conn.execute(
            sql.SQL(
                "UPDATE {table} t SET {col} = r.id FROM {ref} r"
                " WHERE t.{col} IS NULL AND r.{refkey} = "
                + row_expr
                + " AND EXISTS (SELECT 1 FROM {staged} b"
                " WHERE b.kind = %s AND b.event_type = 'EntityAdded' AND b.key = r.{refkey})"
            ).format(
                table=sql.Identifier(schema, spec.table),
                ref=sql.Identifier(schema, ref_table),
                col=sql.Identifier(column),
                refkey=sql.Identifier(ref_key),
                staged=sql.Identifier(STAGED),
            ),
            (ref_kind,),
        )


# The session's table of a round's changed records. Uncompressed: each is written once and read twice (the
# refusal check, the UPDATE), and compressing 10-20 KB records costs more than the reads save.
_PATCHED_RECORDS = (
    "DO $$ BEGIN IF to_regclass('pg_temp.patched_records') IS NULL THEN"
    " CREATE TEMP TABLE patched_records (position bigint, stream_id text, k text, r jsonb, escaped bool)"
    " ON COMMIT DELETE ROWS; ALTER TABLE patched_records ALTER r SET STORAGE EXTERNAL; END IF; END $$"
)
# A changed record the importer kept in `streams` is taken from there when it is the stream's record after
# this very event (its version, and the hash the event names): the same bytes the patch gives, without
# reading the old record, patching it in Python and copying it back. Records holding U+0000 or the mark that
# escapes it in jsonb (store.nul), and anything else, are patched here.
_FROM_STREAMS = (
    "INSERT INTO patched_records (position, stream_id, k, r, escaped)"
    " SELECT b.global_position, b.stream_id, b.key, convert_from(s.record, 'UTF8')::jsonb, false FROM {staged} b"
    " JOIN events e ON e.global_position = b.global_position AND e.global_position > %s AND e.global_position <= %s"
    " JOIN streams s ON s.stream_id = b.stream_id AND s.version = b.stream_version"
    " JOIN {table} t ON t.{key} = b.key"
    " WHERE b.kind = %s AND b.rn = %s AND b.event_type = 'EntityChanged' AND NOT s.removed"
    " AND jsonb_typeof(e.data->'patch') = 'array' AND encode(sha256(s.record), 'hex') = e.data->>'hash'"
    " AND position(%s IN s.record) = 0 AND position(%s IN s.record) = 0"  # nul.UNTOUCHED_UNLESS
)


def _apply_changes(
    conn: psycopg.Connection[Any],
    schema: str,
    spec: TableSpec,
    rn: int,
    bounds: tuple[int, int],
) -> int:
    """Patch the rows of this round's EntityChanged events.

    Records the importer kept in `streams` are taken from there (_FROM_STREAMS). The others are patched here
    in Python (events.patch): a JSON Patch applied in PL/pgSQL rebuilds the whole document per operation,
    10x slower on real powers. Their rows are read through a server-side cursor and copied out a chunk at a
    time, so the projector holds at most _CHANGE_CHUNK parsed records (a real power parses to 50-100 KB of
    Python objects), whatever the range and release size. All are written back by one set-based UPDATE.
    """
    # Most rounds change nothing of most kinds: one look instead of the statements below.
    any_change = conn.execute(
        sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE kind = %s AND rn = %s AND event_type = 'EntityChanged')"
        ).format(sql.Identifier(STAGED)),
        (spec.kind, rn),
    ).fetchone()
    if not (any_change and any_change[0]):
        return 0
    conn.execute(_PATCHED_RECORDS)
    # DELETE, not TRUNCATE: a TRUNCATE writes the catalog.
    conn.execute("DELETE FROM patched_records")
    written = conn.execute(
        _q(_FROM_STREAMS, schema, spec), (*bounds, spec.kind, rn, *nul.UNTOUCHED_UNLESS)
    ).rowcount
    query = _q(
        "SELECT b.global_position, b.stream_id, b.key, e.data->'patch', b.escaped, "
        + spec.record_from_row
        + " FROM {staged} b"
        " JOIN events e ON e.global_position = b.global_position AND e.global_position > %s"
        " AND e.global_position <= %s JOIN {table} t ON t.{key} = b.key"
        " WHERE b.kind = %s AND b.rn = %s AND b.event_type = 'EntityChanged'"
        " AND NOT EXISTS (SELECT 1 FROM patched_records p WHERE p.position = b.global_position)"
        # In log order, as one fetch sorted them: the first patch that fails is the earliest one.
        " ORDER BY b.global_position",
        schema,
        spec,
    )
    with conn.cursor("patch_source", binary=True) as source:
        source.adapters.register_loader("jsonb", _JsonbLoader)
        source.execute(query, (*bounds, spec.kind, rn))
        while rows := source.fetchmany(_CHANGE_CHUNK):
            # The connection cannot fetch while a COPY is open: one COPY per chunk.
            with conn.cursor().copy(
                "COPY patched_records (position, stream_id, k, r, escaped) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "text", "text", "bytea", "bool"])
                for position, sid, key, patch, escaped, record in rows:
                    copy.write_row(
                        (
                            position,
                            sid,
                            key,
                            _JSONB_V1 + _ENCODER.encode(_patched(position, sid, record, patch)),
                            escaped,
                        )
                    )
            written += len(rows)
            del rows  # before the next fetch, so two chunks are never held at once
    if not written:
        return 0
    refused = conn.execute(
        sql.SQL(
            "SELECT position, stream_id, 'EntityChanged', reason FROM (SELECT position, stream_id, {refusal}"
            " AS reason FROM (SELECT position, stream_id, k, " + record_expr("escaped", "r") + " AS r"
            " FROM patched_records OFFSET 0) x) c WHERE reason IS NOT NULL ORDER BY position LIMIT 1"
        ).format(refusal=sql.SQL(spec.refusal))
    ).fetchone()
    if refused is not None:
        raise ProjectionStalled(*refused)
    names, exprs = column_list(schema, spec, "x.k")
    cur = conn.execute(
        _q(
            "UPDATE {table} SET ({names}) = ({exprs}) FROM"
            " (SELECT k, " + record_expr("escaped", "r") + " AS r FROM patched_records OFFSET 0) x"
            " WHERE {table}.{key} = x.k",
            schema,
            spec,
            names=names,
            exprs=exprs,
        )
    )
    return max(cur.rowcount, 0)


class _JsonbLoader(JsonbBinaryLoader):
    """jsonb parsed by msgspec (several times faster than the json module on records of 10-20 KB); what
    msgspec refuses and the json module reads (a number beyond a double) as before."""

    def load(self, data: Buffer) -> Any:
        try:
            return _DECODER.decode(bytes(data[1:]) if data[:1] == _JSONB_V1 else b"")
        except msgspec.DecodeError:
            return super().load(data)  # and its message for another binary format


def _patched(position: int, sid: str, record: Any, patch: Any) -> Any:
    if not isinstance(patch, list):
        raise ProjectionStalled(position, sid, "EntityChanged", "its patch is not a JSON array")
    try:
        return apply(record, patch, in_place=True)  # record was just decoded from its row: ours
    except PatchError as exc:
        raise ProjectionStalled(position, sid, "EntityChanged", f"its patch does not apply: {exc}") from None


def move_checkpoints(conn: psycopg.Connection[Any], schema: str, position: int) -> None:
    """Every projector of the schema has applied the log up to `position` (in the caller's transaction)."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (projector, position, updated_at) SELECT p, %s, clock_timestamp() FROM unnest(%s::text[]) p"
            " ON CONFLICT (projector) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at"
        ).format(sql.Identifier(schema, CHECKPOINTS)),
        (position, list(PROJECTORS)),
    )


def apply_range(
    conn: psycopg.Connection[Any], schema: str, after: int, until: int, counts: BatchCounts
) -> None:
    """Apply events (after, until] to the schema's tables and move its checkpoints, in the caller's transaction."""
    staged = stage_range(conn, after, until)
    _refuse_unknown(conn, after, until)
    for rn in range(1, staged.rounds + 1):
        for spec in SPECS:
            # The range bounds let the planner read `events` by primary key, not scan all of it.
            _apply_round(conn, schema, spec, rn, (after, until), counts)
    for spec in SPECS:
        if spec.references:
            _resolve_dangling(conn, schema, spec)
    temporal.record_versions(conn, schema, staged.import_ids)
    move_checkpoints(conn, schema, until)
    counts.events += staged.events
    counts.batches += 1
    counts.position = until


def catch_up(
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    range_size: int,
    until: int | None = None,
    on_batch: Callable[[BatchCounts, int], None] | None = None,
) -> BatchCounts:
    """Apply every event past the schema's checkpoint (up to `until`), one transaction per range of at most
    `range_size` positions (POWERLOG_PROJECT_BATCH).

    `conn` must not be in a transaction: each range commits on its own, so a crash loses at most the
    range in flight, and the next run resumes from the checkpoint. At an event it cannot apply it commits
    the events before it and raises `ProjectionStalled`, recorded in `projection_stalls` for the live tables.
    """
    counts = BatchCounts()
    target = head(conn).position if until is None else until
    position = checkpoint(conn, schema)
    counts.position = position
    # Ranges stop at each import's last position, so the live tables' fingerprint after that import can
    # be recorded with it (in the same transaction as the rows it describes).
    boundaries = imports.boundaries(conn, position, target)
    while position < target:
        end = min([position + range_size, target, *(b for b in boundaries if b > position)])
        stalled = _apply_until_refused(conn, schema, position, end, boundaries, counts)
        if stalled is not None:
            if on_batch and counts.position > position:
                on_batch(counts, target)
            raise _stall(conn, schema, stalled)
        position = end
        log.debug("projection_batch", schema=schema, position=position, target=target, events=counts.events)
        if on_batch:
            on_batch(counts, target)
    return counts


def _commit_range(
    conn: psycopg.Connection[Any],
    schema: str,
    after: int,
    until: int,
    boundaries: dict[int, int],
    counts: BatchCounts,
) -> None:
    batch = BatchCounts()
    with conn.transaction():
        apply_range(conn, schema, after, until, batch)
        if schema == LIVE_SCHEMA:
            stalls.clear_through(conn, until)
            if until in boundaries:
                imports.set_fingerprint(
                    conn, boundaries[until], after_import(conn, schema, boundaries[until])
                )
        faults.point("project_batch", counts.batches + 1)
    counts.add(batch)


def _apply_until_refused(
    conn: psycopg.Connection[Any],
    schema: str,
    after: int,
    until: int,
    boundaries: dict[int, int],
    counts: BatchCounts,
) -> ProjectionStalled | None:
    """Commit (after, until]; if an event of it cannot be applied, commit the events before the first such
    event instead, and return why it cannot."""
    first: ProjectionStalled | None = None
    end = until
    while end > after:
        try:
            _commit_range(conn, schema, after, end, boundaries, counts)
            return first
        except ProjectionStalled as exc:
            first = exc
        except EVENT_ERRORS as exc:
            first = _locate(conn, schema, after, end, exc)
        # Another event before it may be refused too (found in an earlier round, or by another check).
        end = first.position - 1
    return first


def _locate(
    conn: psycopg.Connection[Any], schema: str, after: int, until: int, error: psycopg.Error
) -> ProjectionStalled:
    """The event of (after, until] the database refused, found by halving the range: (after, lo] applies,
    (after, hi] does not, so event hi is the one."""
    lo, hi = after, until
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            with conn.transaction():
                apply_range(conn, schema, after, mid, BatchCounts())
                raise psycopg.Rollback()
            lo = mid
        except ProjectionStalled as exc:
            return exc
        except EVENT_ERRORS as exc:
            hi, error = mid, exc
    text = " ".join(str(error).split()) or type(error).__name__
    return _stalled_at(conn, hi, f"the database refused it: {text}")


def _stall(conn: psycopg.Connection[Any], schema: str, stalled: ProjectionStalled) -> ProjectionStalled:
    if schema == LIVE_SCHEMA:
        stalls.record(conn, stalled)
    log.error(
        "projection_stalled",
        schema=schema,
        position=stalled.position,
        stream=stalled.stream_id,
        event_type=stalled.event_type,
        reason=stalled.reason,
    )
    return stalled
