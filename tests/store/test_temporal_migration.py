"""Migration 0005 on a database that already holds both real releases, imported and projected:
the history tables are filled from the log, the as-of functions answer, and a downgrade takes it all away."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from migrations import schema
from projections.fingerprint import table_hashes
from projections.tables import HISTORY_TABLES, READ_TABLES
from store import locks
from store.connection import Database
from store.errors import SchemaError
from tests.conftest import SHARED_DATA, create_database, drop_database, settings_for

RELEASES = ("mids-20.1224", "mids-21.0331")
AS_OF_FUNCTIONS = (
    "SELECT count(*) FROM pg_proc WHERE proname LIKE '%\\_as\\_of%' OR proname LIKE 'powerlog\\_%of%'"
)


def history_tables(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE '%\\_history' ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def projected_copy(server_dsn: str, real_releases_db: Database) -> Iterator[Database]:
    """A database of its own holding both real releases imported and projected: a copy of the session's."""
    source = conninfo.conninfo_to_dict(real_releases_db.dsn)["dbname"]
    real_releases_db.close()  # CREATE DATABASE ... TEMPLATE needs the source without sessions
    name = f"powerlog_t_{uuid.uuid4().hex[:12]}"
    db = Database(settings_for(create_database(server_dsn, name, template=str(source))))
    try:
        yield db
    finally:
        db.close()
        drop_database(server_dsn, name)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / RELEASES[0]).is_dir(), reason=f"no real data at {SHARED_DATA}")
def test_0005_fills_history_of_a_projected_database_and_downgrades(projected_copy: Database) -> None:
    db = projected_copy
    with db.connect(autocommit=True) as conn:
        projected = table_hashes(conn)
        assert conn.execute("SELECT count(*) FROM imports WHERE status = 'completed'").fetchone() == (2,)
    # What a database projected at revision 0004 holds: the read tables, no history.
    schema.downgrade(db, "0004")
    with db.connect(autocommit=True) as conn:
        assert history_tables(conn) == []
        assert conn.execute(AS_OF_FUNCTIONS).fetchone() == (0,)
        assert table_hashes(conn, tables=READ_TABLES) == {t: projected[t] for t in READ_TABLES}

    schema.upgrade(db)
    with db.connect(autocommit=True) as conn:
        assert history_tables(conn) == sorted(HISTORY_TABLES)
        # Exactly what the projector wrote import by import.
        assert table_hashes(conn) == projected
        conn.execute("SET ROLE powerlog_reader")
        for import_id, powers in ((1, 3049), (2, 3046)):
            assert conn.execute("SELECT count(*) FROM powers_as_of(%s)", (import_id,)).fetchone() == (powers,)
            assert conn.execute(
                "SELECT count(*) FROM power_build_summary_as_of(%s)", (import_id,)
            ).fetchone() == (powers,)
        assert conn.execute(
            "SELECT count(*) FROM powersets_as_of_release('20.1224') WHERE full_name LIKE '%Titan_Weapons_beta'"
        ).fetchone() == (1,)
        conn.execute("RESET ROLE")
        assert conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'powerlog_history_backfill'"
        ).fetchone() == (0,)


def test_0005_refuses_to_run_beside_a_projector(empty_dsn: str) -> None:
    db = Database(settings_for(empty_dsn))
    try:
        schema.upgrade(db, "0004")
        with psycopg.connect(
            empty_dsn, autocommit=True, application_name="powerlog project --follow"
        ) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (locks.PROJECTOR.key,))
            with pytest.raises(SchemaError) as raised:
                schema.upgrade(db)
            message = str(raised.value)
            assert message.startswith(
                "another powerlog process is projecting (project, follow or rebuild) (held by"
            )
            assert (
                "powerlog project --follow" in message
                and "stop it and run `powerlog db upgrade` again" in message
            )
        # Nothing of the revision is left: still at 0004, no history table.
        assert schema.status(db).current_revision == "0004"
        with db.connect(autocommit=True) as conn:
            assert history_tables(conn) == []
        schema.upgrade(db)
        assert schema.status(db).up_to_date
    finally:
        db.close()
