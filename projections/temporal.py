"""History tables: every version of every read-table row, valid from the import that made it until the
import that replaced or removed it (DESIGN.md, "Temporal tables").

The projector calls `record_versions` for each log range once the read tables hold it, in the same
transaction as those rows and the checkpoint. A range never spans two imports (`catch_up` ends ranges at
each import's last position), so every version it records belongs to that one import: one history row
per entity and import in which the entity's row changed, holding the row as it stood at the end of that
import. A version is valid as of import N when `valid_from_import <= N` and `valid_to_import` is NULL
(still current) or greater than N; a removal closes the last version and adds none.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from events.errors import PowerlogError
from projections.kinds import SPECS, TableSpec
from projections.tables import VALID_FROM, VALID_TO, history_table, metadata
from store.log import STAGED

CANDIDATES = "history_candidates"
"""The session's temporary table of the entity ids (read-table ids) whose rows a range may have changed."""


class HistoryError(PowerlogError):
    """A log range cannot be recorded in the history tables."""


def record_versions(conn: psycopg.Connection[Any], schema: str, import_ids: tuple[int, ...]) -> None:
    """Record, in the schema's history tables, the rows a range of import `import_ids[0]` changed."""
    if not import_ids:
        return
    if len(import_ids) > 1:
        raise HistoryError(
            f"a projected range holds events of imports {', '.join(map(str, import_ids))}: "
            "ranges must end at each import's last position"
        )
    conn.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY) ON COMMIT DELETE ROWS").format(
            sql.Identifier(CANDIDATES)
        )
    )
    for spec in SPECS:
        _record(conn, schema, spec, import_ids[0])


def _q(template: str, schema: str, spec: TableSpec, **more: sql.Composable) -> sql.Composed:
    return sql.SQL(template).format(
        table=sql.Identifier(schema, spec.table),
        history=sql.Identifier(schema, history_table(spec.table)),
        staged=sql.Identifier(STAGED),
        candidates=sql.Identifier(CANDIDATES),
        valid_from=sql.Identifier(VALID_FROM),
        valid_to=sql.Identifier(VALID_TO),
        **more,
    )


def _record(conn: psycopg.Connection[Any], schema: str, spec: TableSpec, import_id: int) -> None:
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(CANDIDATES)))
    # Entities with an event in the range; a row's id is the position of its stream's first event.
    found = conn.execute(
        _q(
            "INSERT INTO {candidates} SELECT e.global_position"
            " FROM (SELECT DISTINCT stream_id FROM {staged} WHERE kind = %s) b"
            " JOIN events e ON e.stream_id = b.stream_id AND e.stream_version = 1",
            schema,
            spec,
        ),
        (spec.kind,),
    ).rowcount
    for column, (ref_table, _, _, _) in spec.references.items():
        found += _moved_references(conn, schema, spec, column, ref_table)
    if found <= 0:
        return
    params = {"import": import_id}
    # A version from an earlier import ends here; one this import already wrote (in an earlier range of
    # it) is replaced in place, or dropped if the entity is gone by now.
    conn.execute(
        _q(
            "UPDATE {history} h SET {valid_to} = %(import)s FROM {candidates} c"
            " WHERE h.id = c.id AND h.{valid_to} IS NULL AND h.{valid_from} < %(import)s",
            schema,
            spec,
        ),
        params,
    )
    conn.execute(
        _q(
            "DELETE FROM {history} h USING {candidates} c WHERE h.id = c.id AND h.{valid_from} = %(import)s"
            " AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.id = c.id)",
            schema,
            spec,
        ),
        params,
    )
    columns = [c.name for c in metadata.tables[spec.table].columns]
    conn.execute(
        _q(
            "INSERT INTO {history} ({names}, {valid_from}) SELECT {values}, %(import)s"
            " FROM {table} t JOIN {candidates} c ON c.id = t.id"
            " ON CONFLICT (id, {valid_from}) DO UPDATE SET {updates}",
            schema,
            spec,
            names=sql.SQL(", ").join(map(sql.Identifier, columns)),
            values=sql.SQL(", ").join(sql.Identifier("t", c) for c in columns),
            updates=sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in columns
            ),
        ),
        params,
    )


def _moved_references(
    conn: psycopg.Connection[Any], schema: str, spec: TableSpec, column: str, ref_table: str
) -> int:
    """Add the rows whose reference `column` moved without an event of their own: set NULL when the row it
    pointed at was removed (ON DELETE SET NULL), or resolved when the row it names was added
    (`projector._resolve_dangling`). Returns how many were added."""
    ref_kind = next(s.kind for s in SPECS if s.table == ref_table)
    row = conn.execute(
        _q(
            "SELECT coalesce(bool_or(event_type = 'EntityAdded'), false),"
            " coalesce(bool_or(event_type = 'EntityRemoved'), false) FROM {staged} WHERE kind = %s",
            schema,
            spec,
        ),
        (ref_kind,),
    ).fetchone()
    added, removed = row if row else (False, False)
    found = 0
    for moved, condition in (
        (added, "h.{col} IS NULL AND t.{col} IS NOT NULL"),
        (removed, "t.{col} IS NULL"),
    ):
        if not moved:
            continue
        cur = conn.execute(
            _q(
                "INSERT INTO {candidates} SELECT h.id FROM {history} h JOIN {table} t ON t.id = h.id"
                " WHERE h.{valid_to} IS NULL AND h.{col} IS DISTINCT FROM t.{col} AND "
                + condition
                + " ON CONFLICT DO NOTHING",
                schema,
                spec,
                col=sql.Identifier(column),
            )
        )
        found += max(cur.rowcount, 0)
    return found
