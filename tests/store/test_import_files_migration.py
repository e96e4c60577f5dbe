"""Migration 0010 (`import_files`, `file_keys`) on a database that already holds releases: up, then down."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psycopg

from importer.run import run_import
from migrations import schema
from store import log
from store.connection import Database
from tests.conftest import SAMPLES, import_before_0010, settings_for


def test_0010_upgrades_a_database_with_data_and_downgrades(empty_dsn: str, tmp_path: Path) -> None:
    db = Database(settings_for(empty_dsn))
    copy = tmp_path / "copy"
    shutil.copytree(SAMPLES / "mids-21.0331", copy, copy_function=os.link)
    (copy / "PowerSets.json").unlink()
    (copy / "PowerSets.json").write_bytes((SAMPLES / "mids-21.0331" / "PowerSets.json").read_bytes() + b"\n")
    try:
        schema.upgrade(db, "0009")
        import_before_0010(db, SAMPLES / "mids-20.1224")
        import_before_0010(db, SAMPLES / "mids-21.0331")
        schema.upgrade(db)
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            head = log.head(conn)
            assert conn.execute(
                "SELECT has_table_privilege('powerlog_app', 'import_files', 'SELECT, INSERT'),"
                " has_table_privilege('powerlog_app', 'file_keys', 'SELECT, INSERT'),"
                " has_table_privilege('powerlog_app', 'import_files', 'UPDATE'),"
                " has_table_privilege('powerlog_app', 'file_keys', 'DELETE')"
            ).fetchone() == (True, True, False, False)
            # The imports before 0010 recorded no files: the first import after it reads every file...
            first = run_import(db, copy)
            assert (first.files_reused, first.events) == (0, 0)
            assert conn.execute("SELECT count(*) FROM import_files").fetchone() == (first.files,)
            # ... and records them, so the next one parses only I12.json.
            (copy / "PowerSets.json").write_bytes(b"[]")
            second = run_import(db, copy)
            assert (second.files_reused, second.events) == (second.files - 1, 0)
            assert log.head(conn) == head
            schema.downgrade(db, "0009")
            assert conn.execute(
                "SELECT to_regclass('import_files'), to_regclass('file_keys')"
            ).fetchone() == (
                None,
                None,
            )
            assert log.verify_chain(conn) == head
            assert conn.execute("SELECT count(*) FROM imports WHERE status = 'completed'").fetchone() == (4,)
    finally:
        db.close()
