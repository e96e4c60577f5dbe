"""Temporal read tables: a history table beside each read table (one row per entity version, valid from one
import to another), and SQL functions `<table>_as_of(import_id)` / `<table>_as_of_release(version)` that
return the rows of a read table (or of `power_build_summary`) as they were after an import.

A database that already projected gets its history filled from the log here, up to its checkpoint.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence
from typing import Any

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The read tables at this revision: their columns in order (name, type, NOT NULL), natural key and
# references. History tables and functions repeat them; projections/tables.py derives the same history
# tables from the code's metadata (tests/store/test_migrations.py holds the two together).
TABLES: dict[str, tuple[list[tuple[str, str, bool]], str, tuple[str, ...]]] = {
    "archetypes": (
        [
            ("id", "bigint", True),
            ("class_name", "text", True),
            ("display_name", "text", False),
            ("class_type", "integer", False),
            ("hitpoints", "double precision", False),
            ("hp_cap", "double precision", False),
            ("is_hero", "boolean", False),
            ("playable", "boolean", False),
            ("primary_group", "text", False),
            ("secondary_group", "text", False),
            ("data", "jsonb", True),
        ],
        "class_name",
        (),
    ),
    "powersets": (
        [
            ("id", "bigint", True),
            ("full_name", "text", True),
            ("display_name", "text", False),
            ("set_type", "integer", False),
            ("group_name", "text", False),
            ("archetype_id", "bigint", False),
            ("description", "text", False),
            ("data", "jsonb", True),
        ],
        "full_name",
        ("archetype_id",),
    ),
    "powers": (
        [
            ("id", "bigint", True),
            ("full_name", "text", True),
            ("display_name", "text", False),
            ("powerset_id", "bigint", False),
            ("level_available", "integer", False),
            ("accuracy", "double precision", False),
            ("damage_scale", "double precision", False),
            ("endurance_cost", "double precision", False),
            ("recharge_time", "double precision", False),
            ("cast_time", "double precision", False),
            ("range", "double precision", False),
            ("effects", "jsonb", True),
            ("effect_groups", "jsonb", True),
            ("data", "jsonb", True),
        ],
        "full_name",
        ("powerset_id",),
    ),
    "enhancement_sets": (
        [
            ("id", "bigint", True),
            ("uid", "text", True),
            ("display_name", "text", False),
            ("short_name", "text", False),
            ("set_type", "integer", False),
            ("level_min", "integer", False),
            ("level_max", "integer", False),
            ("data", "jsonb", True),
        ],
        "uid",
        (),
    ),
    "enhancements": (
        [
            ("id", "bigint", True),
            ("uid", "text", True),
            ("name", "text", False),
            ("short_name", "text", False),
            ("set_id", "bigint", False),
            ("level_min", "integer", False),
            ("level_max", "integer", False),
            ("data", "jsonb", True),
        ],
        "uid",
        ("set_id",),
    ),
}
SUMMARY_EXTRA = [("powerset_name", "text"), ("archetype_name", "text")]
RANGE_SIZE = 10_000  # POWERLOG_PROJECT_BATCH's default: positions per transaction of the backfill

# The row of a history table `h` that is valid as of import $1.
VALID = "{h}.valid_from_import <= $1 AND ({h}.valid_to_import IS NULL OR {h}.valid_to_import > $1)"

# SECURITY DEFINER: they read `imports` and the checkpoints, which the reader role may not. They are
# called once per query (a one-time filter), never per row.
HELPERS = [
    """
    CREATE FUNCTION powerlog_check_as_of(as_of bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DECLARE
        found_status text;
        ends_at bigint;
        projected bigint;
    BEGIN
        SELECT i.status INTO found_status FROM public.imports i WHERE i.id = as_of;
        IF found_status IS NULL THEN
            RAISE EXCEPTION 'there is no import %', coalesce(as_of::text, 'NULL')
                USING ERRCODE = 'no_data_found', HINT = '`powerlog imports` lists the imports';
        END IF;
        IF found_status <> 'completed' THEN
            RAISE EXCEPTION 'import % failed; the log holds nothing from it', as_of
                USING ERRCODE = 'invalid_parameter_value', HINT = '`powerlog imports` lists the imports';
        END IF;
        SELECT coalesce(max(i.last_position), 0) INTO ends_at
            FROM public.imports i WHERE i.id <= as_of AND i.status = 'completed';
        SELECT coalesce(min(c.position), 0) INTO projected FROM public.projection_checkpoints c;
        IF projected < ends_at THEN
            RAISE EXCEPTION 'import % is not projected yet: the read tables are at log position %, it ends at %',
                as_of, projected, ends_at
                USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'run `powerlog project`';
        END IF;
        RETURN true;
    END $$
    """,
    # A release imported more than once: its latest completed import.
    """
    CREATE FUNCTION powerlog_import_of_release(release_version text) RETURNS bigint
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DECLARE
        found bigint;
    BEGIN
        SELECT max(i.id) INTO found FROM public.imports i
            WHERE i.status = 'completed' AND i.source_version = release_version;
        IF found IS NULL THEN
            RAISE EXCEPTION 'no completed import of release %', coalesce(release_version, 'NULL')
                USING ERRCODE = 'no_data_found', HINT = '`powerlog imports` lists the imports';
        END IF;
        RETURN found;
    END $$
    """,
]
HELPER_SIGNATURES = ("powerlog_check_as_of(bigint)", "powerlog_import_of_release(text)")


def _returns(columns: list[tuple[str, str]]) -> str:
    return "TABLE (" + ", ".join(f"{name} {kind}" for name, kind in columns) + ")"


def _functions() -> list[tuple[str, str]]:
    """(signature, CREATE FUNCTION) of every as-of function.

    Plain SQL functions (not SECURITY DEFINER, no SET), so the planner inlines them into the caller's
    query: a filter on the result (`WHERE full_name = ...`) then reaches the history table's index instead
    of every row valid at the import being built first. Table names are schema-qualified because an
    inlined body resolves names with the caller's search_path."""
    shapes = {table: [(name, kind) for name, kind, _ in columns] for table, (columns, _, _) in TABLES.items()}
    out = []
    for table, columns in shapes.items():
        select = ", ".join(f"h.{name}" for name, _ in columns)
        out.append(
            (
                f"{table}_as_of(bigint)",
                f"CREATE FUNCTION {table}_as_of(import_id bigint) RETURNS {_returns(columns)}"
                f" LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT {select} FROM public.{table}_history h"
                f" WHERE {VALID.format(h='h')} AND public.powerlog_check_as_of($1) $$",
            )
        )
    # The view's query (projections/ddl.py VIEW_QUERY) over the versions valid at $1.
    shapes["power_build_summary"] = shapes["powers"] + SUMMARY_EXTRA
    select = ", ".join(f"p.{name}" for name, _ in shapes["powers"]) + ", ps.display_name, a.display_name"
    out.append(
        (
            "power_build_summary_as_of(bigint)",
            "CREATE FUNCTION power_build_summary_as_of(import_id bigint)"
            f" RETURNS {_returns(shapes['power_build_summary'])}"
            f" LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT {select} FROM public.powers_history p"
            f" LEFT JOIN public.powersets_history ps ON ps.id = p.powerset_id AND {VALID.format(h='ps')}"
            f" LEFT JOIN public.archetypes_history a ON a.id = ps.archetype_id AND {VALID.format(h='a')}"
            f" WHERE {VALID.format(h='p')} AND public.powerlog_check_as_of($1) $$",
        )
    )
    for name, columns in shapes.items():
        # OFFSET 0 keeps the release's import a row of its own, looked up once, not once per row.
        out.append(
            (
                f"{name}_as_of_release(text)",
                f"CREATE FUNCTION {name}_as_of_release(release_version text) RETURNS {_returns(columns)}"
                " LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT v.* FROM"
                " (SELECT public.powerlog_import_of_release($1) AS import_id OFFSET 0) r,"
                f" LATERAL public.{name}_as_of(r.import_id) v $$",
            )
        )
    return out


def _history_ddl() -> list[str]:
    out = []
    for table, (columns, key, references) in TABLES.items():
        history = f"{table}_history"
        defs = ", ".join(
            f"{name} {kind}{' NOT NULL' if required else ''}" for name, kind, required in columns
        )
        out.append(
            f"CREATE TABLE {history} ({defs}, valid_from_import bigint NOT NULL, valid_to_import bigint,"
            f" PRIMARY KEY (id, valid_from_import),"
            f" CONSTRAINT {history}_valid_range CHECK (valid_to_import > valid_from_import))"
        )
        # A point lookup by natural key as of an import; rows whose reference dangles, for the projector.
        out.append(f"CREATE INDEX {history}_{key}_idx ON {history} ({key}, valid_from_import)")
        out.extend(
            f"CREATE INDEX {history}_{ref}_dangling_idx ON {history} (id)"
            f" WHERE valid_to_import IS NULL AND {ref} IS NULL"
            for ref in references
        )
    return out


def _backfill() -> None:
    """Fill the history tables from the log up to the live checkpoint, as the projector writes them.

    The projector builds every table (history included) into a scratch schema, as `rebuild` does; the
    history rows are copied from there, column by column as this revision knows them. A projector running
    meanwhile (code from before this revision) would move the read tables past the history: the upgrade
    refuses to run beside one."""
    from projections import ddl
    from projections.projector import catch_up, checkpoint
    from projections.tables import LIVE_SCHEMA
    from store import locks

    conn: Any = op.get_bind().connection.dbapi_connection
    if not locks.try_acquire(conn, locks.PROJECTOR):
        raise RuntimeError(
            f"{locks.PROJECTOR.busy} ({locks.holder(conn, locks.PROJECTOR)}): stop it and run"
            " `powerlog db upgrade` again (revision 0005 fills the history tables from the log up to the read"
            " tables' checkpoint, which must not move meanwhile)"
        )
    try:
        until = checkpoint(conn, LIVE_SCHEMA)
        if until == 0:
            return
        scratch = "powerlog_history_backfill"
        ddl.drop_schema(conn, scratch)
        ddl.create_tables(conn, scratch)
        catch_up(conn, scratch, range_size=RANGE_SIZE, until=until)
        for table, (columns, _, _) in TABLES.items():
            names = ", ".join([name for name, _, _ in columns] + ["valid_from_import", "valid_to_import"])
            op.execute(f"INSERT INTO {table}_history ({names}) SELECT {names} FROM {scratch}.{table}_history")
            op.execute(f"ANALYZE {table}_history")
        ddl.drop_schema(conn, scratch)
    finally:
        locks.release(conn, locks.PROJECTOR)


def upgrade() -> None:
    for statement in _history_ddl():
        op.execute(statement)
    histories = ", ".join(f"{table}_history" for table in TABLES)
    op.execute(f"GRANT SELECT ON {histories} TO powerlog_reader")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {histories} TO powerlog_app")
    for statement in HELPERS:
        op.execute(statement)
    functions = _functions()
    for _, statement in functions:
        op.execute(statement)
    # Functions are executable by PUBLIC unless revoked: only the two roles may call these.
    for signature in (*HELPER_SIGNATURES, *(s for s, _ in functions)):
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO powerlog_reader, powerlog_app")
    _backfill()


def downgrade() -> None:
    for signature, _ in reversed(_functions()):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    for signature in HELPER_SIGNATURES:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    for table in reversed(TABLES):
        op.execute(f"DROP TABLE IF EXISTS {table}_history")
