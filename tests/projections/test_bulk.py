"""The first import loaded in bulk by rebuild and replay: the same tables as the projector makes, and
every event it cannot vouch for left to the projector, which stops where it always stops."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

import projections
from importer.run import run_import
from projections import bulk, ddl
from projections.fingerprint import table_hashes
from projections.projector import catch_up
from projections.stalls import ProjectionStalled
from projections.tables import HISTORY_TABLES, READ_TABLES, VIEW
from store import log
from store.connection import Database
from tests.conftest import SAMPLES
from tests.projections.test_poison import Raw, added, append_raw, changed

OLD, NEW = SAMPLES / "mids-20.1224", SAMPLES / "mids-21.0331"


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def test_rebuild_and_replay_load_the_first_import_in_bulk_and_leave_what_the_projector_leaves(
    db: Database, dsn: str
) -> None:
    run_import(db, OLD)
    run_import(db, NEW)
    projections.project(db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        projected = table_hashes(conn)
        first = bulk.first_import(conn, log.head(conn).position)
        # The sample release 20.1224 is positions 1..78, import 1.
        assert first is not None and (first.end, first.import_id) == (78, 1)
        assert {kind: n for kind, (n, _) in first.events.items()} == {
            "archetype": 14,
            "enhancement": 32,
            "enhancement_set": 5,
            "power": 21,
            "powerset": 6,
        }
    with capture_logs() as logs:
        result = projections.rebuild(db)
    assert _events(logs, "bulk_loaded") == [
        {
            "event": "bulk_loaded",
            "schema": "powerlog_shadow",
            "import_id": 1,
            "events": 78,
            "log_level": "info",
        }
    ]
    assert not _events(logs, "bulk_load_left_to_projector")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert result.counts.position == log.head(conn).position
        # The read tables and every version in the history tables, as the projector made them.
        assert table_hashes(conn) == projected
    with capture_logs() as logs:
        projections.replay(db, 1, "as_of_1")
    assert [e["events"] for e in _events(logs, "bulk_loaded")] == [78]
    with psycopg.connect(dsn, autocommit=True) as conn:
        replayed = table_hashes(conn, "as_of_1")
        # The same replay by the projector alone: a scratch schema caught up to the end of import 1.
        ddl.create_tables(conn, "by_projector")
        catch_up(conn, "by_projector", range_size=10_000, until=78)
        assert replayed == table_hashes(conn, "by_projector")


TABLES = [*READ_TABLES, *HISTORY_TABLES, VIEW]


def _keys_and_indexes(conn: psycopg.Connection[Any], schema: str) -> set[tuple[str, str, str]]:
    indexes = conn.execute(
        "SELECT tablename, indexname, replace(indexdef, %s, ' ON ') FROM pg_indexes"
        " WHERE schemaname = %s AND tablename = ANY(%s)",
        (f" ON {schema}.", schema, TABLES),
    ).fetchall()
    constraints = conn.execute(
        "SELECT c.relname, con.conname, replace(pg_get_constraintdef(con.oid), %s, '') FROM pg_constraint con"
        " JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = ANY(%s)",
        (f"{schema}.", schema, TABLES),
    ).fetchall()
    return {*indexes, *constraints}


def test_the_keys_and_indexes_dropped_for_the_load_are_made_again_as_they_were(
    db: Database, dsn: str
) -> None:
    run_import(db, OLD)
    run_import(db, NEW)
    projections.project(db)
    # A replay: no swap after it, which would make again what it finds missing as if a user had made it.
    projections.replay(db, 2, "again")
    with psycopg.connect(dsn, autocommit=True) as conn:
        live = _keys_and_indexes(conn, "public")
        # Those the load does without: the powers' and every history table's.
        assert {
            ("powers", "powers_pkey"),
            ("powers", "powers_powerset_id_fkey"),
            ("powers", "powers_powerset_level_idx"),
            ("powers_history", "powers_history_full_name_idx"),
        } <= {(t, n) for t, n, _ in live}
        assert _keys_and_indexes(conn, "again") == live


def _power(key: str, **fields: Any) -> Raw:
    return added("power", {"FullName": key, "DisplayName": key.rsplit(".", 1)[-1], **fields}, key)


TINY = (
    "power:Tiny.Set.Z",
    "EntityAdded",
    '{"hash":"h","key":"Tiny.Set.Z","kind":"power","record":{"Accuracy":1e-400,"FullName":"Tiny.Set.Z"},'
    '"schema_version":1,"type":"EntityAdded"}',
    1,
)

# name -> (the first import, the position the projector stops at, words of its reason)
REFUSED: dict[str, tuple[list[Raw], int, str]] = {
    # The powers are loaded in two halves: even positions on the rebuild's connection, odd ones beside it.
    "refused record at an even position": (
        [_power("A.Set.P1"), _power("A.Set.P2", Level="high"), _power("A.Set.P3")],
        2,
        "Level is a JSON string; its column takes an integer",
    ),
    "refused record at an odd position (the second connection)": (
        [_power("A.Set.P1"), _power("A.Set.P2"), _power("A.Set.P3", Level="high")],
        3,
        "Level is a JSON string; its column takes an integer",
    ),
    "record naming another entity": (
        [_power("A.Set.P1"), added("power", {"FullName": "A.Set.P1"}, "A.Set.P9")],
        2,
        "is not its stream's key",
    ),
    "record the database refuses": (
        [_power("A.Set.P1"), TINY, _power("A.Set.P3")],
        2,
        "the database refused it: ",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_first_import_the_projector_would_refuse_is_left_to_it_and_rebuild_stops_where_project_does(
    db: Database, dsn: str, case: str
) -> None:
    events, position, reason = REFUSED[case]
    with psycopg.connect(dsn, autocommit=True) as conn:
        append_raw(conn, events)
    with capture_logs() as logs, pytest.raises(ProjectionStalled) as rebuilt:
        projections.rebuild(db)
    assert not _events(logs, "bulk_loaded")
    assert len(_events(logs, "bulk_load_left_to_projector")) == 1
    assert rebuilt.value.position == position and reason in rebuilt.value.reason, rebuilt.value
    with pytest.raises(ProjectionStalled) as projected:
        projections.project(db)
    assert (projected.value.position, projected.value.reason) == (position, rebuilt.value.reason)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The live tables hold the events before it, and nothing the bulk load tried was kept anywhere.
        assert conn.execute("SELECT count(*) FROM powers").fetchone() == (position - 1,)
        assert conn.execute(
            "SELECT count(*) FROM powerlog_shadow.powers WHERE id >= %s", (position,)
        ).fetchone() == (0,)


NOT_FIRST_ADDITIONS: dict[str, list[Raw]] = {
    "a change": [_power("A.Set.P1"), changed("A.Set.P1", [{"op": "add", "path": "/Level", "value": 2}])],
    "an unknown kind": [_power("A.Set.P1"), added("weapon", {"Name": "Sword"}, "Sword")],
    "a newer schema version": [_power("A.Set.P1"), (*_power("A.Set.P2")[:3], 9)],
}


@pytest.mark.parametrize("case", list(NOT_FIRST_ADDITIONS))
def test_a_first_import_holding_anything_but_additions_of_known_kinds_is_not_bulk_loaded(
    dsn: str, case: str
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert bulk.first_import(conn, 0) is None  # no import yet
        append_raw(conn, NOT_FIRST_ADDITIONS[case])
        assert bulk.first_import(conn, log.head(conn).position) is None
