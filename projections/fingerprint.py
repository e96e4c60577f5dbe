"""A hash over the read tables' content, to compare a rebuild or a replay with the live tables."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from projections.tables import HISTORY_TABLES, LIVE_SCHEMA, READ_TABLES, VALID_FROM


def table_hashes(
    conn: psycopg.Connection[Any],
    schema: str = LIVE_SCHEMA,
    tables: Sequence[str] = (*READ_TABLES, *HISTORY_TABLES),
) -> dict[str, str]:
    """Per table (read and history tables), SHA-256 over its rows in id order, then version order (every
    column, PostgreSQL's text form)."""
    out = {}
    for table in tables:
        order: list[sql.Composable] = [sql.SQL("t.id")]
        if table in HISTORY_TABLES:
            order.append(sql.Identifier("t", VALID_FROM))
        row = conn.execute(
            sql.SQL(
                "SELECT encode(sha256(convert_to(coalesce(string_agg(t::text, E'\\n' ORDER BY {}), ''), 'UTF8')), 'hex')"
                " FROM {} t"
            ).format(sql.SQL(", ").join(order), sql.Identifier(schema, table))
        ).fetchone()
        out[table] = str(row[0]) if row else ""
    return out


def fingerprint(conn: psycopg.Connection[Any], schema: str = LIVE_SCHEMA) -> str:
    """One hash for all read tables of a schema (not the history tables: a fingerprint recorded before they
    existed must still compare)."""
    h = hashlib.sha256()
    for table, digest in sorted(table_hashes(conn, schema, READ_TABLES).items()):
        h.update(f"{table}:{digest}\n".encode())
    return h.hexdigest()
