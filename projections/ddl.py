"""The projection tables' DDL for a schema of our choosing: the live one, a shadow for rebuild, a replay."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import create_engine, pool
from sqlalchemy.schema import CreateIndex, CreateTable

from projections.tables import CHECKPOINTS, HISTORY_TABLES, READ_TABLES, VIEW, metadata

# Built after a full load, not during it: GIN indexes present during a load cost 30-40 % (DESIGN.md).
SEARCH_INDEXES = (
    ("powers_effects_gin", "powers", "USING gin (effects jsonb_path_ops)"),
    ("powers_effect_groups_gin", "powers", "USING gin (effect_groups jsonb_path_ops)"),
    ("archetypes_display_name_trgm", "archetypes", "USING gin (display_name gin_trgm_ops)"),
    ("powersets_display_name_trgm", "powersets", "USING gin (display_name gin_trgm_ops)"),
    ("powers_display_name_trgm", "powers", "USING gin (display_name gin_trgm_ops)"),
    ("enhancement_sets_display_name_trgm", "enhancement_sets", "USING gin (display_name gin_trgm_ops)"),
    ("enhancements_name_trgm", "enhancements", "USING gin (name gin_trgm_ops)"),
)

# Outer joins: pool powersets have no archetype, and a dangling powerset_id must not hide a power.
VIEW_QUERY = """
SELECT p.id, p.full_name, p.display_name, p.powerset_id, p.level_available, p.accuracy,
       p.damage_scale, p.endurance_cost, p.recharge_time, p.cast_time, p.range,
       p.effects, p.effect_groups, p.data,
       ps.display_name AS powerset_name,
       a.display_name AS archetype_name
FROM {schema}.powers p
LEFT JOIN {schema}.powersets ps ON ps.id = p.powerset_id
LEFT JOIN {schema}.archetypes a ON a.id = ps.archetype_id
"""


def _ddl_statements(schema: str) -> list[str]:
    """CREATE TABLE/INDEX for every projection table in `schema`, from the metadata the code shares."""
    engine = create_engine("postgresql+psycopg://", poolclass=pool.NullPool)
    dialect = engine.dialect
    out = []
    target = type(metadata)()  # one target, so foreign keys find their tables in the new schema
    for table in metadata.sorted_tables:
        copy = table.to_metadata(target, schema=schema)
        out.append(str(CreateTable(copy).compile(dialect=dialect)))
        out.extend(str(CreateIndex(ix).compile(dialect=dialect)) for ix in copy.indexes)
    return out


def create_tables(conn: psycopg.Connection[Any], schema: str) -> None:
    """Empty projection tables (no search indexes yet) in a new schema."""
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    for stmt in _ddl_statements(schema):
        conn.execute(stmt)


# The largest of them by far (about three quarters of their build time on real powers): a fresh schema
# builds it on a connection of its own while the others and the view are built (runner._finish).
LARGEST_SEARCH_INDEX = "powers_effects_gin"


def search_index(schema: str, name: str) -> sql.Composed:
    table, how = next((t, h) for n, t, h in SEARCH_INDEXES if n == name)
    return sql.SQL("CREATE INDEX {} ON {} " + how).format(sql.Identifier(name), sql.Identifier(schema, table))


def create_search_indexes(conn: psycopg.Connection[Any], schema: str, but: tuple[str, ...] = ()) -> None:
    for name, _, _ in SEARCH_INDEXES:
        if name not in but:
            conn.execute(search_index(schema, name))


def create_view(conn: psycopg.Connection[Any], schema: str) -> None:
    """The summary view over the schema's tables, populated, with the unique index CONCURRENTLY needs."""
    query = sql.SQL(VIEW_QUERY).format(schema=sql.Identifier(schema))
    conn.execute(
        sql.SQL("CREATE MATERIALIZED VIEW {} AS {} WITH DATA").format(sql.Identifier(schema, VIEW), query)
    )
    conn.execute(
        sql.SQL("CREATE UNIQUE INDEX power_build_summary_id_key ON {} (id)").format(
            sql.Identifier(schema, VIEW)
        )
    )
    conn.execute(
        sql.SQL("CREATE INDEX power_build_summary_set_level_idx ON {} (powerset_id, level_available)").format(
            sql.Identifier(schema, VIEW)
        )
    )


def grant(conn: psycopg.Connection[Any], schema: str) -> None:
    """The same privileges the migration gives the live tables."""
    ident = sql.Identifier(schema)
    readable = sql.SQL(", ").join(sql.Identifier(schema, t) for t in (*READ_TABLES, *HISTORY_TABLES, VIEW))
    writable = sql.SQL(", ").join(
        sql.Identifier(schema, t) for t in (*READ_TABLES, *HISTORY_TABLES, CHECKPOINTS)
    )
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO powerlog_reader, powerlog_app").format(ident))
    conn.execute(sql.SQL("GRANT SELECT ON {} TO powerlog_reader").format(readable))
    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO powerlog_app").format(writable))


def drop_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def schema_exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None


def move_all(conn: psycopg.Connection[Any], source: str, target: str) -> None:
    """Move every projection table and the view from one schema to another (indexes follow)."""
    for name in (VIEW,):
        conn.execute(
            sql.SQL("ALTER MATERIALIZED VIEW {} SET SCHEMA {}").format(
                sql.Identifier(source, name), sql.Identifier(target)
            )
        )
    for name in (*READ_TABLES, *HISTORY_TABLES, CHECKPOINTS):
        conn.execute(
            sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                sql.Identifier(source, name), sql.Identifier(target)
            )
        )


def drop_all(conn: psycopg.Connection[Any], schema: str) -> None:
    """Drop the view and every projection table in `schema`, refusing (no CASCADE) if anything else needs them."""
    conn.execute(sql.SQL("DROP MATERIALIZED VIEW {}").format(sql.Identifier(schema, VIEW)))
    conn.execute(
        sql.SQL("DROP TABLE {}").format(
            sql.SQL(", ").join(
                sql.Identifier(schema, t) for t in (*READ_TABLES, *HISTORY_TABLES, CHECKPOINTS)
            )
        )
    )
