"""The schema: migrations up, down and again; the log refuses rewrites; roles see only what they may."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, pool

from migrations import schema
from migrations.head import HEAD, stored_revision
from migrations.metadata import target_metadata
from store.connection import Database
from store.errors import SchemaError
from tests.conftest import settings_for

READ_TABLES = ("archetypes", "powersets", "powers", "enhancement_sets", "enhancements")


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "UNION ALL SELECT matviewname FROM pg_matviews WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def test_upgrade_empty_database_then_again_is_a_no_op(empty_dsn: str) -> None:
    db = Database(settings_for(empty_dsn))
    assert schema.status(db).current_revision is None
    schema.upgrade(db)
    first = _tables(empty_dsn)
    assert {"events", "streams", "imports", "power_build_summary", *READ_TABLES} <= first
    schema.upgrade(db)
    st = schema.status(db)
    assert st.current_revision == st.head_revision == schema.head_revision()
    assert st.up_to_date and st.pg_trgm_installed
    assert _tables(empty_dsn) == first


def test_downgrade_base_then_upgrade_head(empty_dsn: str) -> None:
    db = Database(settings_for(empty_dsn))
    schema.upgrade(db)
    schema.downgrade(db, "base")
    assert _tables(empty_dsn) == {"alembic_version"}
    assert schema.status(db).current_revision is None
    schema.upgrade(db)
    assert schema.status(db).up_to_date


def test_the_written_down_head_is_alembics_and_is_read_without_alembic(empty_dsn: str) -> None:
    """Commands check the schema through migrations/head.py: its HEAD must follow the revision files."""
    db = Database(settings_for(empty_dsn))
    assert schema.head_revision() == HEAD
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert stored_revision(conn) is None
        schema.upgrade(db, "0006")
        assert stored_revision(conn) == "0006"
        with pytest.raises(
            SchemaError, match=rf"at schema revision 0006, the code needs {HEAD}: run `powerlog db upgrade`"
        ):
            schema.require_current(db)
        schema.upgrade(db)
        assert stored_revision(conn) == HEAD == schema.status(db).current_revision
        schema.require_current(db)


def test_code_metadata_matches_the_migrations(dsn: str) -> None:
    """The SQLAlchemy tables the code uses and the schema alembic built must not drift apart."""
    db = Database(settings_for(dsn))
    engine = create_engine("postgresql+psycopg://", creator=db.connect, poolclass=pool.NullPool)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), target_metadata)
    # GIN/trigram indexes and the view are raw SQL, which the metadata does not describe.
    diffs = [d for d in diffs if not (d[0] == "remove_index" and d[1].name.endswith(("_gin", "_trgm")))]
    assert diffs == []


def _insert_event(c: psycopg.Connection[Any]) -> None:
    c.execute(
        "INSERT INTO imports (id, source_path, status) OVERRIDING SYSTEM VALUE VALUES (1, 'x', 'completed')"
    )
    c.execute(
        "INSERT INTO events (global_position, stream_id, stream_version, event_type, schema_version, data,"
        " import_id, chain_hash) VALUES (1, 'power:a', 1, 'EntityAdded', 1, '{}', 1, '\\x00')"
    )


@pytest.mark.parametrize(
    ("statement", "op"),
    [
        ("UPDATE events SET stream_id = 'x'", "UPDATE"),
        ("DELETE FROM events", "DELETE"),
        ("TRUNCATE events CASCADE", "TRUNCATE"),
    ],
)
def test_events_refuse_rewrites_even_for_superuser(
    conn: psycopg.Connection[Any], statement: str, op: str
) -> None:
    _insert_event(conn)
    with pytest.raises(
        psycopg.errors.InsufficientPrivilege, match=f"events is append-only: {op} is not allowed"
    ):
        conn.execute(statement)
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)


@pytest.mark.parametrize(
    "statement", ["UPDATE events SET stream_id = 'x'", "DELETE FROM events", "TRUNCATE events"]
)
def test_app_role_holds_no_rewrite_privilege(conn: psycopg.Connection[Any], statement: str) -> None:
    _insert_event(conn)
    conn.execute("SET ROLE powerlog_app")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        conn.execute(statement)
    conn.execute("RESET ROLE")
    # It can append, though.
    conn.execute("SET ROLE powerlog_app")
    conn.execute(
        "INSERT INTO events (global_position, stream_id, stream_version, event_type, schema_version, data,"
        " import_id, chain_hash) VALUES (2, 'power:a', 2, 'EntityRemoved', 2, '{}', 1, '\\x00')"
    )


# One row in every read table, written by the owner (the view gets its row from the REFRESH below).
_ROWS = (
    "INSERT INTO archetypes (id, class_name, display_name, data) VALUES (7, 'Class_Blaster', 'Blaster', '{}')",
    "INSERT INTO powersets (id, full_name, display_name, archetype_id, data)"
    " VALUES (8, 'Blaster_Ranged.Fire_Blast', 'Fire Blast', 7, '{}')",
    "INSERT INTO powers (id, full_name, display_name, powerset_id, level_available, data)"
    " VALUES (9, 'Blaster_Ranged.Fire_Blast.Flares', 'Flares', 8, 1, '{}')",
    "INSERT INTO enhancement_sets (id, uid, display_name, data) VALUES (10, 'Set_A', 'Set A', '{}')",
    "INSERT INTO enhancements (id, uid, name, set_id, data) VALUES (11, 'Enh_A', 'Enh A', 10, '{}')",
    "REFRESH MATERIALIZED VIEW power_build_summary",
)
_ROW_IDS = {
    "archetypes": 7,
    "powersets": 8,
    "powers": 9,
    "enhancement_sets": 10,
    "enhancements": 11,
    "power_build_summary": 9,
}


@pytest.mark.parametrize("table", [*READ_TABLES, "power_build_summary"])
def test_reader_role_reads_read_tables(conn: psycopg.Connection[Any], table: str) -> None:
    for statement in _ROWS:
        conn.execute(statement)
    query = f"SELECT * FROM {table} ORDER BY id"
    as_owner = conn.execute(query).fetchall()
    assert [row[0] for row in as_owner] == [_ROW_IDS[table]]
    conn.execute("SET ROLE powerlog_reader")
    assert conn.execute(query).fetchall() == as_owner


@pytest.mark.parametrize("table", ["events", "streams", "imports"])
def test_reader_role_cannot_read_the_log(conn: psycopg.Connection[Any], table: str) -> None:
    conn.execute("SET ROLE powerlog_reader")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"SELECT * FROM {table}")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO archetypes (id, class_name, data) VALUES (1, 'x', '{}')",
        "UPDATE powers SET display_name = 'x'",
        "DELETE FROM powersets",
        "INSERT INTO events (global_position, stream_id, stream_version, event_type, schema_version, data,"
        " import_id, chain_hash) VALUES (9, 's', 1, 't', 1, '{}', 1, '\\x00')",
        "REFRESH MATERIALIZED VIEW power_build_summary",
    ],
)
def test_reader_role_cannot_write(conn: psycopg.Connection[Any], statement: str) -> None:
    conn.execute("SET ROLE powerlog_reader")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


def test_upgrade_from_0001_keeps_existing_events(empty_dsn: str) -> None:
    """A migration must upgrade a database with data in it, not only an empty one."""
    db = Database(settings_for(empty_dsn))
    schema.upgrade(db, "0001")
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        _insert_event(c)
    schema.upgrade(db)
    with psycopg.connect(empty_dsn) as c:
        assert c.execute("SELECT global_position, data_escaped FROM events").fetchall() == [(1, False)]
        assert c.execute("SELECT powerlog_int('12.7'::jsonb), powerlog_text('3'::jsonb)").fetchone() == (
            12,
            None,
        )
    schema.downgrade(db, "0001")
    with psycopg.connect(empty_dsn) as c:
        assert c.execute("SELECT count(*) FROM events").fetchone() == (1,)


def test_0004_drops_the_unused_patch_functions_and_downgrade_brings_them_back(empty_dsn: str) -> None:
    db = Database(settings_for(empty_dsn))
    schema.upgrade(db, "0003")
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        _insert_event(c)
    functions = (
        "SELECT proname FROM pg_proc WHERE proname IN ('powerlog_jsonb_patch', 'powerlog_pointer') ORDER BY 1"
    )
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        assert [r[0] for r in c.execute(functions)] == ["powerlog_jsonb_patch", "powerlog_pointer"]
    schema.upgrade(db)
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        assert c.execute(functions).fetchall() == []
        assert c.execute("SELECT count(*) FROM events").fetchone() == (1,)
    schema.downgrade(db, "0003")
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        assert [r[0] for r in c.execute(functions)] == ["powerlog_jsonb_patch", "powerlog_pointer"]
        assert c.execute(
            'SELECT powerlog_jsonb_patch(\'{"a": 1}\', \'[{"op": "replace", "path": "/a", "value": 2}]\')'
        ).fetchone() == ({"a": 2},)
