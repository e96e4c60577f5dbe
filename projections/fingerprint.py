"""Fingerprints of the read tables, to compare a rebuild or a replay with the live tables, and the live tables
with what the projector recorded after each import.

A table's digest is a sum, modulo 2^64 in each of two lanes, of one SHA-256 per row (the row's text form,
every column): equal tables give equal digests whatever the row order, any table is hashed in one pass in
constant memory (the first form, SHA-256 over all rows joined by `string_agg`, hit PostgreSQL's 1 GB limit on
a text value at about 90K real powers), and a sum can be carried forward: the projector derives an import's
fingerprint from the previous import's by adding the row versions the import wrote and subtracting the ones
it closed, both read from the history tables, instead of hashing every table again.

A fingerprint is `v2:` followed by each read table's digest; one recorded in the first form (64 hex digits,
no prefix) is only ever compared with a fingerprint computed the first way (`comparable`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from projections.tables import (
    HISTORY_TABLES,
    LIVE_SCHEMA,
    READ_TABLES,
    VALID_FROM,
    VALID_TO,
    history_table,
    metadata,
)
from store import imports

VERSION = "v2"
_PREFIX = VERSION + ":"
_MASK = (1 << 64) - 1
Sums = tuple[int, int]
"""A table's digest: two sums modulo 2^64 of the rows' 8-byte SHA-256 slices."""

_ZERO: Sums = (0, 0)


def _row_text(table: str, alias: str) -> sql.Composable:
    """The row's text form with the read table's columns in their declared order, so a live row and its
    history version (same columns, plus validity) give the same text, however the table was created."""
    columns = [c.name for c in metadata.tables[table].columns]
    return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.Identifier(alias, c) for c in columns))


def _sums(
    conn: psycopg.Connection[Any],
    text: sql.Composable,
    source: sql.Composable,
    where: sql.Composable | None = None,
    sign: sql.Composable | None = None,
    params: Sequence[Any] | dict[str, Any] = (),
) -> Sums:
    """Sum the digests of `text` (an expression over the row `r`) over the rows of `source`, each times
    `sign` (1 or -1, over `r`; 1 if not given)."""
    # Each row's digest is cut into two signed 8-byte integers; PostgreSQL sums them as numeric, exact at
    # any row count, and the 2^64 wrap-around is taken here.
    row = conn.execute(
        sql.SQL(
            "SELECT coalesce(sum(s * ('x' || substr(d, 1, 16))::bit(64)::bigint::numeric), 0),"
            " coalesce(sum(s * ('x' || substr(d, 17, 16))::bit(64)::bigint::numeric), 0)"
            " FROM (SELECT encode(sha256(convert_to({text}, 'UTF8')), 'hex') AS d, {sign} AS s"
            " FROM {source} r {where}) x"
        ).format(
            text=text,
            source=source,
            where=where if where is not None else sql.SQL(""),
            sign=sign if sign is not None else sql.SQL("1"),
        ),
        params,
    ).fetchone()
    assert row is not None
    return int(row[0]) & _MASK, int(row[1]) & _MASK


def _hex(sums: Sums) -> str:
    return f"{sums[0]:016x}{sums[1]:016x}"


def _read(table: str) -> str:
    """The read table a table's rows have the columns of (itself, or the one a history table stands beside)."""
    return next((t for t in READ_TABLES if history_table(t) == table), table)


def table_hashes(
    conn: psycopg.Connection[Any],
    schema: str = LIVE_SCHEMA,
    tables: Sequence[str] = (*READ_TABLES, *HISTORY_TABLES),
) -> dict[str, str]:
    """Per table (read and history tables), its digest in hex: equal for equal contents, in any row order.

    A history table's rows are hashed with their validity too (two versions differing only there differ)."""
    out = {}
    for table in tables:
        text = _history_text(table) if table in HISTORY_TABLES else _row_text(table, "r")
        out[table] = _hex(_sums(conn, text, sql.Identifier(schema, table)))
    return out


def _history_text(table: str) -> sql.Composable:
    return sql.SQL("{} || ' ' || r.{} || ' ' || coalesce(r.{}::text, '')").format(
        _row_text(_read(table), "r"), sql.Identifier(VALID_FROM), sql.Identifier(VALID_TO)
    )


def _format(sums: dict[str, Sums]) -> str:
    return _PREFIX + ",".join(f"{t}={_hex(sums[t])}" for t in sorted(READ_TABLES))


def parse(value: str | None) -> dict[str, Sums] | None:
    """The per-table sums of a fingerprint in this module's form, or None (none recorded, or the first form)."""
    if value is None or not value.startswith(_PREFIX):
        return None
    out: dict[str, Sums] = {}
    for part in value[len(_PREFIX) :].split(","):
        table, _, digest = part.partition("=")
        if table not in READ_TABLES or len(digest) != 32:
            return None
        out[table] = (int(digest[:16], 16), int(digest[16:], 16))
    return out if set(out) == set(READ_TABLES) else None


def fingerprint(conn: psycopg.Connection[Any], schema: str = LIVE_SCHEMA) -> str:
    """The read tables of a schema, every row hashed (not the history tables: a fingerprint recorded before
    they existed must still compare)."""
    return _format({t: _sums(conn, _row_text(t, "r"), sql.Identifier(schema, t)) for t in READ_TABLES})


def after_import(conn: psycopg.Connection[Any], schema: str, import_id: int) -> str:
    """The fingerprint of the schema's read tables once import `import_id` is projected into them, in the
    transaction that projected its last events.

    Carried forward from the fingerprint recorded with the import whose events precede it, by the row
    versions this import opened and closed in the history tables (which hold the live rows as current
    versions: projections/temporal.py); every table is hashed only when there is nothing to carry forward
    (the first import projected since fingerprints took this form)."""
    row = imports.get(conn, import_id)
    if row is None or row.first_position is None:
        return fingerprint(conn, schema)
    if row.first_position == 1:
        base: dict[str, Sums] | None = dict.fromkeys(READ_TABLES, _ZERO)
    else:
        previous = imports.ending_at(conn, row.first_position - 1)
        base = parse(previous.fingerprint) if previous is not None else None
    if base is None:
        return fingerprint(conn, schema)
    out = {}
    for table in READ_TABLES:
        # One pass over the history: + the versions this import opened, - those it closed.
        delta = _sums(
            conn,
            _row_text(table, "r"),
            sql.Identifier(schema, history_table(table)),
            sql.SQL("WHERE r.{vf} = %(import)s OR r.{vt} = %(import)s").format(
                vf=sql.Identifier(VALID_FROM), vt=sql.Identifier(VALID_TO)
            ),
            sql.SQL("CASE WHEN r.{vf} = %(import)s THEN 1 ELSE -1 END").format(vf=sql.Identifier(VALID_FROM)),
            {"import": import_id},
        )
        out[table] = ((base[table][0] + delta[0]) & _MASK, (base[table][1] + delta[1]) & _MASK)
    return _format(out)


def comparable(
    conn: psycopg.Connection[Any],
    recorded: str | None,
    schema: str = LIVE_SCHEMA,
    hashes: dict[str, str] | None = None,
) -> str:
    """The schema's fingerprint in the form of a recorded one, so the two can be compared: the first form
    for a value recorded before `v2:` fingerprints (read row by row, so any size is hashed in bounded memory).

    `hashes`, the schema's `table_hashes` taken in the same snapshot, spare hashing the read tables again."""
    if recorded is not None and not recorded.startswith(_PREFIX):
        return _first_form(conn, schema)
    if hashes is not None and all(t in hashes for t in READ_TABLES):
        return _PREFIX + ",".join(f"{t}={hashes[t]}" for t in sorted(READ_TABLES))
    return fingerprint(conn, schema)


def _first_form(conn: psycopg.Connection[Any], schema: str) -> str:
    """SHA-256 per read table over its rows' text in id order joined by newlines, then SHA-256 over the
    sorted `table:digest` lines: what `fingerprint` returned before v2, computed client-side."""
    h = hashlib.sha256()
    for table in sorted(READ_TABLES):
        h.update(f"{table}:{_ordered_digest(conn, schema, table)}\n".encode())
    return h.hexdigest()


def _ordered_digest(conn: psycopg.Connection[Any], schema: str, table: str) -> str:
    digest = hashlib.sha256()
    with conn.transaction(), conn.cursor(name=f"powerlog_fp_{table}") as cur:
        cur.itersize = 500
        cur.execute(sql.SQL("SELECT t::text FROM {} t ORDER BY t.id").format(sql.Identifier(schema, table)))
        rows: Iterable[tuple[str]] = cur
        for i, (text,) in enumerate(rows):
            digest.update(b"\n" if i else b"")
            digest.update(text.encode())
    return digest.hexdigest()
