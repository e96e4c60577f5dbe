"""The projector patches a range's changed records a chunk at a time (issue 15): its memory does not grow
with the number of EntityChanged events in a range, and a patch that fails in a later chunk still stops it
at that event, with everything before it applied."""

from __future__ import annotations

import tracemalloc
from typing import Any

import psycopg
import pytest

from importer.run import run_import
from projections import projector
from projections.audit import rebuilt_hashes
from projections.fingerprint import table_hashes
from projections.stalls import ProjectionStalled
from projections.tables import LIVE_SCHEMA
from store.connection import Database
from tests.conftest import settings_for
from tests.projections.test_poison import OLD, OLD_HEAD, added, append_raw, changed, flares

POWERS = 60
CHUNK = 5


def _big_powers(conn: psycopg.Connection[Any]) -> list[str]:
    """Append POWERS powers shaped like Flares, each with its effects repeated ten times (about 280 KB of
    Python objects once parsed), as one import; their keys."""
    record = flares(conn)
    record["Effects"] = record["Effects"] * 10
    keys = [f"Big_Set.Big_{i:04d}" for i in range(POWERS)]
    append_raw(conn, [added("power", {**record, "FullName": k}, k) for k in keys])
    return keys


def _rename_all(conn: psycopg.Connection[Any], keys: list[str], broken: int | None = None) -> None:
    """One import changing every power of `keys`; the change of keys[broken] has a patch that cannot apply."""
    events = []
    for i, k in enumerate(keys):
        path = "/NoSuchField" if i == broken else "/DisplayName"
        events.append(changed(k, [{"op": "replace", "path": path, "value": f"renamed {i}"}]))
    append_raw(conn, events)


def _project(conn: psycopg.Connection[Any]) -> int:
    """Project everything in one range; the peak of memory traced meanwhile, in bytes."""
    tracemalloc.start()
    try:
        projector.catch_up(conn, LIVE_SCHEMA, range_size=100_000)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_however_many_records_a_range_changes(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projector, "_CHANGE_CHUNK", CHUNK, raising=False)
    db = Database(settings_for(dsn))
    try:
        run_import(db, OLD)
        with psycopg.connect(dsn, autocommit=True) as conn:
            keys = _big_powers(conn)
            projector.catch_up(conn, LIVE_SCHEMA, range_size=100_000)
            _rename_all(conn, keys)
            peak = _project(conn)
            # Every parsed record of the range at once is about 17 MB; a chunk of them, about 2 MB.
            assert peak < 8_000_000, peak
            renamed = conn.execute(
                "SELECT count(*) FROM powers WHERE full_name LIKE 'Big_Set.%%' AND display_name LIKE 'renamed %%'"
            ).fetchone()
            assert renamed == (POWERS,)
            head = OLD_HEAD + 2 * POWERS
            assert set(projector.checkpoints(conn).values()) == {head}
            assert table_hashes(conn) == rebuilt_hashes(conn, head, range_size=10_000)
    finally:
        db.close()


def test_a_patch_failing_in_a_later_chunk_stops_the_projector_at_it(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projector, "_CHANGE_CHUNK", CHUNK, raising=False)
    db = Database(settings_for(dsn))
    broken = 7 * CHUNK + 3
    try:
        run_import(db, OLD)
        with psycopg.connect(dsn, autocommit=True) as conn:
            keys = _big_powers(conn)
            projector.catch_up(conn, LIVE_SCHEMA, range_size=100_000)
            _rename_all(conn, keys, broken=broken)
            with pytest.raises(ProjectionStalled) as stalled:
                projector.catch_up(conn, LIVE_SCHEMA, range_size=100_000)
            position = OLD_HEAD + POWERS + broken + 1
            assert (stalled.value.position, stalled.value.stream_id) == (position, f"power:{keys[broken]}")
            assert "its patch does not apply" in stalled.value.reason
            # The changes before it, in earlier chunks and in its own, are applied; none after it.
            assert set(projector.checkpoints(conn).values()) == {position - 1}
            assert table_hashes(conn) == rebuilt_hashes(conn, position - 1, range_size=10_000)
            assert conn.execute(
                "SELECT count(*) FROM powers WHERE display_name LIKE 'renamed %%'"
            ).fetchone() == (broken,)
    finally:
        db.close()
