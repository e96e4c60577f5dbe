"""A change whose patch holds a NUL (the log's jsonb keeps it marked, `data_escaped`) projects like any other.

The projector's checks unmark the record of every such event, and an EntityChanged carries none: the
unmarking function looped forever on that NULL, so `project` and `rebuild` hung (migration 0008)."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

import projections
from importer.run import run_import
from projections.fingerprint import table_hashes
from store.connection import Database
from tests.conftest import SAMPLES
from tests.importer.helpers import FIRE_BLAST, dump, load


def test_a_change_holding_a_nul_is_projected_and_rebuilt(
    db: Database, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were the loop back, a statement timeout ends this test instead of hanging the suite.
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=60000")
    export = tmp_path / "export"
    shutil.copytree(SAMPLES / "mids-20.1224", export)
    run_import(db, export)
    projections.project(db)
    powerset = load(export / FIRE_BLAST)
    assert powerset["Powers"][0]["FullName"] == "Blaster_Ranged.Fire_Blast.Flares"
    powerset["Powers"][0]["DisplayName"] = "Flares\u0000 v2"
    dump(powerset, export / FIRE_BLAST)
    assert run_import(db, export).counts["power"]["changed"] == 1
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(
            "SELECT event_type, data_escaped FROM events ORDER BY global_position DESC LIMIT 1"
        ).fetchone() == ("EntityChanged", True)
        assert projections.project(db).events == 1
        # Text columns cannot hold U+0000: the projection drops it, as it does for added records.
        assert conn.execute(
            "SELECT display_name FROM powers WHERE full_name = 'Blaster_Ranged.Fire_Blast.Flares'"
        ).fetchone() == ("Flares v2",)
        projected = table_hashes(conn)
        projections.rebuild(db)
        assert table_hashes(conn) == projected
