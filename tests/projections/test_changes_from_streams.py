"""A changed record is taken from `streams` when it is the stream's record after that very event (its
version and the hash the event names); every other change is patched from the log. Both give the same
tables (issue 15: patching in Python was most of a rebuild's work past the first import)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

import projections
from importer.run import run_import
from projections import projector
from projections.audit import rebuilt_hashes
from projections.fingerprint import table_hashes
from store import nul
from store.connection import Database
from store.log import head
from tests.conftest import SAMPLES
from tests.importer.helpers import FIRE_BLAST, dump, load

FLARES = "Blaster_Ranged.Fire_Blast.Flares"
# DESIGN.md: 21.0331 against 20.1224 changes 53 archetypes, 313 powersets and 2,889 powers.
REAL_CHANGES = 53 + 313 + 2889


def _count_patched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The streams whose change the projector patches in Python from now on, in the order it does."""
    patched: list[str] = []
    original = projector._patched

    def counting(position: int, sid: str, record: Any, patch: Any) -> Any:
        patched.append(sid)
        return original(position, sid, record, patch)

    monkeypatch.setattr(projector, "_patched", counting)
    return patched


def _without_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(projector, "_FROM_STREAMS", projector._FROM_STREAMS + " AND false")


def test_on_the_real_releases_changes_from_streams_equal_changes_patched_from_the_log(
    real_releases_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(real_releases_db.dsn, autocommit=True) as conn:
        until = head(conn).position
        live = table_hashes(conn)
        # Records holding U+0000 (real exports do) or its jsonb mark are patched either way.
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE position(%s IN s.record) > 0"
            " OR position(%s IN s.record) > 0) FROM events e"
            " JOIN streams s ON s.stream_id = e.stream_id WHERE e.event_type = 'EntityChanged'",
            nul.UNTOUCHED_UNLESS,
        ).fetchone()
        assert row is not None
        changes, holding_nul = row
        assert changes == REAL_CHANGES

        patched = _count_patched(monkeypatch)
        from_streams = rebuilt_hashes(conn, until, range_size=100_000)
        assert len(patched) == holding_nul < changes // 10

        patched.clear()
        _without_streams(monkeypatch)
        from_the_log = rebuilt_hashes(conn, until, range_size=100_000)
        assert len(patched) == REAL_CHANGES
    assert from_streams == from_the_log == live


def _release(base: Path, target: Path, display_name: str) -> Path:
    """The 21.0331 sample with Flares renamed."""
    shutil.copytree(base, target)
    powerset = load(target / FIRE_BLAST)
    flares = next(p for p in powerset["Powers"] if p["FullName"] == FLARES)
    flares["DisplayName"] = display_name
    dump(powerset, target / FIRE_BLAST)
    return target


def test_a_change_its_stream_has_moved_past_is_patched_from_the_log(
    db: Database, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_import(db, SAMPLES / "mids-20.1224")
    run_import(db, _release(SAMPLES / "mids-21.0331", tmp_path / "second", "Flares Two"))
    run_import(db, _release(SAMPLES / "mids-21.0331", tmp_path / "third", "Flares Three"))
    patched = _count_patched(monkeypatch)
    # One project over all three imports: when the second import's change to Flares is applied, `streams`
    # holds the third's record, so that one change is patched; the third's comes from `streams`.
    projections.project(db)
    assert patched == [f"power:{FLARES}"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        versions = conn.execute(
            "SELECT valid_from_import, valid_to_import, display_name FROM powers_history"
            " WHERE full_name = %s ORDER BY valid_from_import",
            (FLARES,),
        ).fetchall()
        assert versions == [(1, 2, "Flares"), (2, 3, "Flares Two"), (3, None, "Flares Three")]
        live = table_hashes(conn)
        _without_streams(monkeypatch)
        assert rebuilt_hashes(conn, head(conn).position, range_size=100_000) == live


def test_a_record_in_streams_that_is_not_the_one_the_event_names_is_not_used(
    db: Database, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_import(db, SAMPLES / "mids-20.1224")
    run_import(db, _release(SAMPLES / "mids-21.0331", tmp_path / "second", "Flares Two"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        # What verify would report: a record that no longer hashes to the event's. The log wins.
        conn.execute(
            "UPDATE streams SET record = convert_to(replace(convert_from(record, 'UTF8'), 'Flares Two',"
            " 'Tampered'), 'UTF8') WHERE stream_id = %s",
            (f"power:{FLARES}",),
        )
        patched = _count_patched(monkeypatch)
        projections.project(db)
        assert patched == [f"power:{FLARES}"]
        assert conn.execute("SELECT display_name FROM powers WHERE full_name = %s", (FLARES,)).fetchone() == (
            "Flares Two",
        )
