"""A hash over the read tables' content, to compare a rebuild or a replay with the live tables."""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
from psycopg import sql

from projections.tables import LIVE_SCHEMA, READ_TABLES


def table_hashes(conn: psycopg.Connection[Any], schema: str = LIVE_SCHEMA) -> dict[str, str]:
    """Per read table, SHA-256 over its rows in id order (every column, PostgreSQL's text form)."""
    out = {}
    for table in READ_TABLES:
        row = conn.execute(
            sql.SQL(
                "SELECT encode(sha256(convert_to(coalesce(string_agg(t::text, E'\\n' ORDER BY t.id), ''), 'UTF8')), 'hex')"
                " FROM {} t"
            ).format(sql.Identifier(schema, table))
        ).fetchone()
        out[table] = str(row[0]) if row else ""
    return out


def fingerprint(conn: psycopg.Connection[Any], schema: str = LIVE_SCHEMA) -> str:
    """One hash for all read tables of a schema."""
    h = hashlib.sha256()
    for table, digest in sorted(table_hashes(conn, schema).items()):
        h.update(f"{table}:{digest}\n".encode())
    return h.hexdigest()
