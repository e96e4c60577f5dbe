"""Apply the log to the read tables in set-based batches, each with its checkpoint in the same transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
import structlog
from psycopg import sql

from events import apply
from projections import temporal
from projections.fingerprint import after_import
from projections.kinds import SPECS, TableSpec
from projections.tables import CHECKPOINTS, LIVE_SCHEMA
from store import faults, imports
from store.log import STAGED, head, stage_range

log = structlog.get_logger(__name__)

_ENCODER = msgspec.json.Encoder()
# jsonb's binary input: a version byte, then JSON text.
_JSONB_V1 = b"\x01"
PROJECTORS = tuple(spec.table for spec in SPECS)


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


def _q(template: str, schema: str, spec: TableSpec, **more: Any) -> sql.Composed:
    """A statement on one table of the schema; {staged} is the log range `store.log.stage_range` staged."""
    return sql.SQL(template).format(
        table=sql.Identifier(schema, spec.table),
        key=sql.Identifier(spec.key_column),
        staged=sql.Identifier(STAGED),
        **more,
    )


def _column_list(schema: str, spec: TableSpec) -> tuple[sql.Composable, sql.Composable]:
    """Column names and their expressions over the record `r`, references resolved by natural key."""
    names = [sql.Identifier(c) for c in spec.columns]
    exprs: list[sql.Composable] = [sql.SQL(e) for e in spec.columns.values()]
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


# The record `r` is computed in a subquery kept apart by OFFSET 0: otherwise the planner inlines it and
# evaluates the patch and unmarking once per column that reads `r`.
def _apply_round(
    conn: psycopg.Connection[Any],
    schema: str,
    spec: TableSpec,
    rn: int,
    bounds: tuple[int, int],
    counts: BatchCounts,
) -> None:
    names, exprs = _column_list(schema, spec)
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
    updates = sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
        for c in (*spec.columns, *spec.references)
    )
    cur = conn.execute(
        _q(
            "INSERT INTO {table} (id, {names}) SELECT " + _ID + ", {exprs} FROM"
            " (SELECT b.*, CASE WHEN b.escaped THEN powerlog_unmark(e.data->'record') ELSE e.data->'record' END AS r"
            "  FROM {staged} b JOIN events e ON e.global_position = b.global_position"
            "   AND e.global_position > %s AND e.global_position <= %s"
            "  WHERE b.kind = %s AND b.rn = %s AND b.event_type = 'EntityAdded' OFFSET 0) x"
            " ON CONFLICT ({key}) DO UPDATE SET {updates}",
            schema,
            spec,
            names=names,
            exprs=exprs,
            updates=updates,
        ),
        (*bounds, spec.kind, rn),
    )
    applied["added"] += max(cur.rowcount, 0)
    applied["changed"] += _apply_changes(conn, schema, spec, rn, bounds, names, exprs)


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


def _apply_changes(
    conn: psycopg.Connection[Any],
    schema: str,
    spec: TableSpec,
    rn: int,
    bounds: tuple[int, int],
    names: sql.Composable,
    exprs: sql.Composable,
) -> int:
    """Patch the rows of this round's EntityChanged events.

    The patches are applied here in Python (events.patch), then written back in one set-based UPDATE:
    a JSON Patch applied in PL/pgSQL rebuilds the whole document per operation, 10x slower on real powers.
    """
    rows = conn.execute(
        _q(
            "SELECT b.key, e.data->'patch', b.escaped, " + spec.record_from_row + " FROM {staged} b"
            " JOIN events e ON e.global_position = b.global_position AND e.global_position > %s"
            " AND e.global_position <= %s JOIN {table} t ON t.{key} = b.key"
            " WHERE b.kind = %s AND b.rn = %s AND b.event_type = 'EntityChanged'",
            schema,
            spec,
        ),
        (*bounds, spec.kind, rn),
        binary=True,
    ).fetchall()
    if not rows:
        return 0
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS patched_records (k text, r jsonb, escaped bool) ON COMMIT DELETE ROWS"
    )
    conn.execute("TRUNCATE patched_records")
    with conn.cursor().copy("COPY patched_records (k, r, escaped) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["text", "bytea", "bool"])
        for key, patch, escaped, record in rows:
            copy.write_row((key, _JSONB_V1 + _ENCODER.encode(apply(record, patch)), escaped))
    cur = conn.execute(
        _q(
            "UPDATE {table} SET ({names}) = ({exprs}) FROM"
            " (SELECT k, CASE WHEN escaped THEN powerlog_unmark(r) ELSE r END AS r FROM patched_records OFFSET 0) x"
            " WHERE {table}.{key} = x.k",
            schema,
            spec,
            names=names,
            exprs=exprs,
        )
    )
    return max(cur.rowcount, 0)


def apply_range(
    conn: psycopg.Connection[Any], schema: str, after: int, until: int, counts: BatchCounts
) -> None:
    """Apply events (after, until] to the schema's tables and move its checkpoints, in the caller's transaction."""
    staged = stage_range(conn, after, until)
    for rn in range(1, staged.rounds + 1):
        for spec in SPECS:
            # The range bounds let the planner read `events` by primary key, not scan all of it.
            _apply_round(conn, schema, spec, rn, (after, until), counts)
    for spec in SPECS:
        if spec.references:
            _resolve_dangling(conn, schema, spec)
    temporal.record_versions(conn, schema, staged.import_ids)
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (projector, position, updated_at) SELECT p, %s, clock_timestamp() FROM unnest(%s::text[]) p"
            " ON CONFLICT (projector) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at"
        ).format(sql.Identifier(schema, CHECKPOINTS)),
        (until, list(PROJECTORS)),
    )
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
    range in flight, and the next run resumes from the checkpoint.
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
        with conn.transaction():
            apply_range(conn, schema, position, end, counts)
            if schema == LIVE_SCHEMA and end in boundaries:
                imports.set_fingerprint(conn, boundaries[end], after_import(conn, schema, boundaries[end]))
            faults.point("project_batch", counts.batches)
        position = end
        log.debug("projection_batch", schema=schema, position=position, target=target, events=counts.events)
        if on_batch:
            on_batch(counts, target)
    return counts
