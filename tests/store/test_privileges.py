"""The application role cannot rewrite `streams` or `imports` (migration 0006); it still imports, through the
functions that check each change against the log."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from importer.run import run_import
from migrations import schema
from projections.audit import verify
from store.connection import Database
from tests.conftest import SAMPLES, settings_for
from tests.e2e.cli import powerlog

OLD, NEW = SAMPLES / "mids-20.1224", SAMPLES / "mids-21.0331"
APP = "powerlog_app"


def as_app(dsn: str) -> str:
    """The same database, every session of it acting as the application role from its start."""
    return conninfo.make_conninfo(dsn, options=f"-c role={APP}")


REWRITES = [
    "UPDATE streams SET hash = 'x'",
    "DELETE FROM streams",
    "TRUNCATE streams",
    "UPDATE imports SET last_position = 1",
    "DELETE FROM imports",
    "TRUNCATE imports CASCADE",
]


@pytest.mark.parametrize("statement", REWRITES)
def test_app_role_cannot_rewrite_streams_or_imports(db: Database, dsn: str, statement: str) -> None:
    run_import(db, OLD)
    with psycopg.connect(as_app(dsn), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (APP,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute(statement)


def test_app_role_imports_end_to_end(dsn: str) -> None:
    """`powerlog import` connected as the application role: both samples, the second one on top of the
    first (streams moved by the function), then the unchanged one again; the log verifies."""
    env = {"DATABASE_URL": as_app(dsn)}
    for release in (OLD, NEW, NEW):
        result = powerlog("import", str(release), env=env)
        assert result.returncode == 0, result.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, first_position, last_position, split_part(head_chain_hash, ':', 1)"
            " FROM imports ORDER BY id"
        ).fetchall()
        assert rows == [(1, 1, 78, "78"), (2, 79, 104, "104"), (3, None, None, "104")]
    db = Database(settings_for(dsn))
    try:
        report = verify(db)
        assert report.ok, report.failures
    finally:
        db.close()


def test_app_role_cannot_move_a_stream_off_the_log(db: Database, dsn: str) -> None:
    """The function that moves stream heads refuses a head that is not the stream's event in the log: the
    application role cannot use it to plant another hash (the fault that lost a change for good)."""
    run_import(db, OLD)
    with psycopg.connect(as_app(dsn), autocommit=True) as conn:
        row = conn.execute(
            "SELECT stream_id, version, hash, last_position FROM streams WHERE NOT removed ORDER BY stream_id"
            " LIMIT 1"
        ).fetchone()
        assert row is not None
        sid, version, _, position = row
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match=f"stream {sid} cannot move"):
            conn.execute(
                "SELECT powerlog_advance_streams(%s, %s, %s, %s, %s, %s, %s)",
                ([sid], [version], [version], ["0" * 64], [None], [False], [position]),
            )


def test_app_role_cannot_rewrite_a_completed_import(db: Database, dsn: str) -> None:
    run_import(db, OLD)
    with psycopg.connect(as_app(dsn), autocommit=True) as conn:
        with pytest.raises(
            psycopg.errors.IntegrityConstraintViolation, match=r"import 1 holds positions 1\.\.78"
        ):
            conn.execute("SELECT powerlog_complete_import(1, NULL, '{}', '[]', 1, 5, '5:00')")
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="not an import in progress"):
            head = conn.execute("SELECT head_chain_hash FROM imports WHERE id = 1").fetchone()
            assert head is not None
            conn.execute("SELECT powerlog_complete_import(1, NULL, '{}', '[]', 1, 78, %s)", head)


@pytest.mark.parametrize(
    "call",
    [
        "SELECT powerlog_set_fingerprint(1, 'x')",
        "SELECT powerlog_complete_import(1, NULL, '{}', '[]', NULL, NULL, '0:00')",
    ],
)
def test_reader_role_cannot_call_the_functions(conn: psycopg.Connection[Any], call: str) -> None:
    conn.execute("SET ROLE powerlog_reader")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for function"):
        conn.execute(call)


def _privileges(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT table_name, privilege_type FROM information_schema.role_table_grants"
        " WHERE grantee = %s AND table_name IN ('imports', 'streams') ORDER BY 1, 2",
        (APP,),
    ).fetchall()
    return [(str(t), str(p)) for t, p in rows]


def test_0006_upgrades_a_database_with_imports_and_downgrade_gives_the_grants_back(
    db: Database, dsn: str
) -> None:
    run_import(db, OLD)
    schema.downgrade(db, "0005")
    with psycopg.connect(dsn, autocommit=True) as conn:
        granted = {p for t, p in _privileges(conn) if t == "streams"}
        assert granted == {"SELECT", "INSERT", "UPDATE", "DELETE"}
        assert conn.execute(
            "SELECT count(*) FROM pg_proc WHERE proname IN"
            " ('powerlog_complete_import', 'powerlog_set_fingerprint', 'powerlog_advance_streams')"
        ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (78,)
    # Upgraded with the first release's streams and import in it: the second one moves them.
    schema.upgrade(db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert _privileges(conn) == [
            ("imports", "INSERT"),
            ("imports", "SELECT"),
            ("streams", "INSERT"),
            ("streams", "SELECT"),
        ]
    app = Database(settings_for(as_app(dsn)))
    try:
        assert run_import(app, NEW).events == 26
    finally:
        app.close()
    assert verify(db).ok
