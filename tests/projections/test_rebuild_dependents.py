"""`rebuild` keeps what users built on the read tables (views, foreign keys, grants, comments, indexes) by
re-creating it over the new tables in the swap, and refuses by name what it cannot re-create."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import projections
from importer.run import run_import
from projections.dependents import DependentsRefused
from projections.fingerprint import table_hashes
from store.connection import Database
from tests.conftest import SAMPLES
from tests.e2e.cli import powerlog

Conn = psycopg.Connection[Any]
ROLE = "powerlog_test_auditor"  # roles are cluster-wide: made if missing, never dropped (other tests' dbs)


def one(conn: Conn, query: str, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def projected(db: Database) -> Database:
    run_import(db, SAMPLES / "mids-20.1224")
    run_import(db, SAMPLES / "mids-21.0331")
    projections.project(db)
    return db


def catalog(conn: Conn) -> dict[str, Any]:
    """What a rebuild must leave as it found it on the live relations: indexes, constraints, grants,
    comments, and every view or foreign key pointing at them."""
    return {
        "indexes": conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2"
        ).fetchall(),
        "constraints": conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
        ).fetchall(),
        "acls": conn.execute(
            "SELECT relname, relacl::text, reloptions, relrowsecurity FROM pg_class"
            " WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'v', 'm') ORDER BY 1"
        ).fetchall(),
        "column acls": conn.execute(
            "SELECT c.relname, a.attname, a.attacl::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " WHERE c.relnamespace = 'public'::regnamespace AND a.attacl IS NOT NULL ORDER BY 1, 2"
        ).fetchall(),
        "comments": conn.execute(
            "SELECT c.relname, d.objsubid, d.description FROM pg_description d JOIN pg_class c ON c.oid = d.objoid"
            " WHERE d.classoid = 'pg_class'::regclass AND c.relnamespace = 'public'::regnamespace ORDER BY 1, 2"
        ).fetchall(),
        "views": conn.execute(
            "SELECT c.relname, c.relkind::text, pg_get_viewdef(c.oid) FROM pg_class c"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('v', 'm') ORDER BY 1"
        ).fetchall(),
    }


def build_on_the_read_tables(conn: Conn) -> None:
    conn.execute(f"DO $$ BEGIN CREATE ROLE {ROLE}; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    # A view, a view over it (with a grant and a comment), and a view over the summary view.
    conn.execute(
        "CREATE VIEW my_powers AS SELECT id, full_name, level_available FROM powers WHERE level_available > 1"
    )
    conn.execute("CREATE VIEW my_early_powers AS SELECT * FROM my_powers WHERE level_available < 10")
    conn.execute(f"GRANT SELECT ON my_early_powers TO {ROLE}")
    conn.execute("COMMENT ON VIEW my_early_powers IS 'early powers'")
    conn.execute("CREATE VIEW my_summary AS SELECT id, archetype_name FROM power_build_summary")
    # A table of the user's with a foreign key to powers.
    conn.execute("CREATE TABLE my_builds (id int PRIMARY KEY, power_id bigint REFERENCES powers (id))")
    conn.execute("INSERT INTO my_builds SELECT 1, min(id) FROM powers")
    # A grant, comments and an index on the read table itself.
    conn.execute(f"GRANT SELECT ON powers TO {ROLE}")
    conn.execute("COMMENT ON TABLE powers IS 'the powers, one row each'")
    conn.execute("COMMENT ON COLUMN powers.display_name IS 'as the game shows it'")
    conn.execute("CREATE INDEX my_powers_by_level ON powers (level_available, id)")
    # Less common: a column grant, a storage parameter, row security switched on.
    conn.execute(f"GRANT SELECT (display_name) ON powersets TO {ROLE}")
    conn.execute("ALTER TABLE powers SET (fillfactor = 80)")
    conn.execute("ALTER TABLE enhancements ENABLE ROW LEVEL SECURITY")


def test_rebuild_keeps_views_foreign_keys_grants_comments_and_indexes(
    projected: Database, conn: Conn
) -> None:
    build_on_the_read_tables(conn)
    before, rows = catalog(conn), table_hashes(conn)
    my_powers = conn.execute("SELECT * FROM my_early_powers ORDER BY id").fetchall()
    old_oid = one(conn, "SELECT 'powers'::regclass::oid")

    projections.rebuild(projected)

    assert one(conn, "SELECT 'powers'::regclass::oid") != old_oid  # the tables were replaced
    assert table_hashes(conn) == rows
    assert catalog(conn) == before
    # Each kind works over the new tables, not only exists.
    assert conn.execute("SELECT * FROM my_early_powers ORDER BY id").fetchall() == my_powers
    assert one(conn, "SELECT count(*) FROM my_summary") == one(
        conn, "SELECT count(*) FROM power_build_summary"
    )
    assert one(
        conn,
        "SELECT confrelid = 'powers'::regclass FROM pg_constraint WHERE conname = 'my_builds_power_id_fkey'",
    )
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("INSERT INTO my_builds VALUES (2, -1)")
    assert one(conn, "SELECT has_table_privilege(%s, 'powers', 'SELECT')", ROLE)
    assert one(conn, "SELECT has_column_privilege(%s, 'powersets', 'display_name', 'SELECT')", ROLE)
    assert one(conn, "SELECT has_table_privilege(%s, 'my_early_powers', 'SELECT')", ROLE)
    assert one(conn, "SELECT obj_description('powers'::regclass, 'pg_class')") == "the powers, one row each"
    assert one(conn, "SELECT obj_description('my_early_powers'::regclass, 'pg_class')") == "early powers"
    assert one(
        conn,
        "SELECT indrelid = 'powers'::regclass FROM pg_index WHERE indexrelid = 'my_powers_by_level'::regclass",
    )
    # And a second rebuild keeps them again.
    projections.rebuild(projected)
    assert catalog(conn) == before


def test_a_rebuild_with_nothing_built_on_the_tables_leaves_the_catalog_as_it_was(
    projected: Database, conn: Conn
) -> None:
    before = catalog(conn)
    projections.rebuild(projected)
    assert catalog(conn) == before


def test_a_dependent_of_a_kind_it_cannot_recreate_is_refused_by_name(projected: Database, conn: Conn) -> None:
    conn.execute(
        "CREATE FUNCTION my_first_power() RETURNS SETOF powers LANGUAGE sql AS 'SELECT * FROM powers LIMIT 1'"
    )
    conn.execute("CREATE VIEW my_powers AS SELECT id FROM powers")
    before, rows = catalog(conn), table_hashes(conn)
    old_oid = one(conn, "SELECT 'powers'::regclass::oid")
    with pytest.raises(DependentsRefused, match=r"function my_first_power\(\)"):
        projections.rebuild(projected)
    # Nothing changed, nothing dropped, nothing left behind.
    assert one(conn, "SELECT 'powers'::regclass::oid") == old_oid
    assert (catalog(conn), table_hashes(conn)) == (before, rows)
    assert one(conn, "SELECT count(*) FROM my_first_power()") == 1
    assert one(conn, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'powerlog\\_%'") == 0


def test_a_foreign_key_not_valid_is_kept_not_valid(projected: Database, conn: Conn) -> None:
    conn.execute("CREATE TABLE my_builds (id int PRIMARY KEY, power_id bigint)")
    conn.execute("INSERT INTO my_builds VALUES (1, -1)")
    conn.execute(
        "ALTER TABLE my_builds ADD CONSTRAINT my_builds_power FOREIGN KEY (power_id) REFERENCES powers (id) NOT VALID"
    )
    before = catalog(conn)
    projections.rebuild(projected)  # NOT VALID stays NOT VALID: re-created as it was
    assert catalog(conn) == before


def test_the_rebuild_command_refuses_in_one_line_naming_the_dependent(
    projected: Database, conn: Conn, dsn: str
) -> None:
    conn.execute(
        "CREATE FUNCTION my_first_power() RETURNS SETOF powers LANGUAGE sql AS 'SELECT * FROM powers'"
    )
    result = powerlog("rebuild", env={"DATABASE_URL": dsn})
    said = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert len(said) == 1 and "function my_first_power()" in said[0] and "nothing was changed" in said[0], (
        said
    )
