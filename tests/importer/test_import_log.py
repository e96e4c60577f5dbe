"""Imports of the two real releases into the log: exact counts, idempotence, and the log reproducing them."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from events import canonical_bytes, fold
from importer.run import ImportResult, run_import
from importer.source import read_export
from migrations import schema
from store import log
from store.connection import Database
from tests.conftest import SHARED_DATA, create_database, drop_database, settings_for

EXPECTED = json.loads((SHARED_DATA / "expected.json").read_text())
OLD = SHARED_DATA / "mids-20.1224"
NEW = SHARED_DATA / "mids-21.0331"
KINDS = ("archetype", "powerset", "power", "enhancement", "enhancement_set")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def imported(server_dsn: str, template_db: str) -> Iterator[tuple[Database, list[ImportResult], list[Any]]]:
    """One database with 20.1224, then 21.0331, then 21.0331 again imported (shared by this module)."""
    name = f"powerlog_t_{uuid.uuid4().hex[:12]}"
    dsn = create_database(server_dsn, name, template=template_db)
    db = Database(settings_for(dsn))
    try:
        results = []
        with capture_logs() as logs:
            for path, label in ((OLD, "20.1224"), (NEW, "21.0331"), (NEW, "21.0331 again")):
                results.append(run_import(db, path, label=label))
        yield db, results, logs
    finally:
        db.close()
        drop_database(server_dsn, name)


def test_first_release_into_an_empty_log_adds_every_unique_key(imported: Any) -> None:
    _, (first, _, _), logs = imported
    unique = EXPECTED["releases"]["mids-20.1224"]["unique_keys"]
    assert {k: first.counts[k]["added"] for k in KINDS} == unique
    assert all(first.counts[k]["changed"] == first.counts[k]["removed"] == 0 for k in KINDS)
    assert first.appended is not None and (first.appended.first_position, first.appended.last_position) == (
        1,
        4959,
    )
    assert first.warnings == [
        {
            "event": "duplicate_key",
            "kind": "archetype",
            "key": "Class_Minion_Henchman",
            "first": "I12.json: $.Archetypes[17]",
            "second": "I12.json: $.Archetypes[42]",
        }
    ]
    dup_logs = [e for e in logs if e["event"] == "duplicate_key"]
    assert len(dup_logs) == 3 and dup_logs[0]["first"] == "I12.json: $.Archetypes[17]"


def test_second_release_gives_the_design_diff(imported: Any) -> None:
    _, (_, second, _), _ = imported
    assert second.counts == EXPECTED["diff_20.1224_to_21.0331"]
    assert second.appended is not None
    assert second.appended.first_position == 4960
    assert second.appended.count == 53 + 313 + 1 + 2889 + 3


def test_reimport_appends_nothing(imported: Any) -> None:
    db, (_, second, third), _ = imported
    assert third.no_changes and third.appended is None
    assert {k: third.counts[k]["unchanged"] for k in KINDS} == EXPECTED["releases"]["mids-21.0331"][
        "unique_keys"
    ]
    assert third.head == second.head
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT id, status, label, first_position, last_position FROM imports ORDER BY id"
        ).fetchall()
        assert [r[1:] for r in rows] == [
            ("completed", "20.1224", 1, 4959),
            ("completed", "21.0331", 4960, 8218),
            ("completed", "21.0331 again", None, None),
        ]
        row = conn.execute(
            "SELECT source_version, source_issue, head_chain_hash FROM imports WHERE id = %s",
            (second.import_id,),
        ).fetchone()
        assert row == ("21.0331", 27, str(second.head))


def test_folding_every_stream_reproduces_the_last_export(imported: Any) -> None:
    """All records, not a sample: the log alone gives back 21.0331 canonically."""
    db, _, _ = imported
    by_stream: dict[str, list[Any]] = defaultdict(list)
    with db.connect() as conn:
        for batch in log.read_from(conn, 0):
            for stored in batch:
                by_stream[stored.stream_id].append(stored.event)
        log.verify_chain(conn)
    folded = {sid: fold(evs) for sid, evs in by_stream.items()}
    live = {sid: rec for sid, rec in folded.items() if rec is not None}
    with read_export(NEW) as reader:
        source = {f"{r.kind}:{r.key}": canonical_bytes(r.record) for r in reader}
    assert len(source) == sum(EXPECTED["releases"]["mids-21.0331"]["unique_keys"].values())
    assert live.keys() == source.keys()
    mismatched = [sid for sid, rec in live.items() if canonical_bytes(rec) != source[sid]]
    assert mismatched == []
    removed = sorted(sid for sid, rec in folded.items() if rec is None)
    assert len(removed) == 4 and sum(s.startswith("powerset:") for s in removed) == 1


def test_dry_run_reports_the_diff_and_writes_nothing(dsn: str) -> None:
    db = Database(settings_for(dsn))
    run_import(db, OLD)
    dry = run_import(db, NEW, dry_run=True)
    assert dry.counts == EXPECTED["diff_20.1224_to_21.0331"]
    assert dry.import_id is None
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*), max(global_position) FROM events").fetchone() == (4959, 4959)
        assert conn.execute("SELECT count(*) FROM imports").fetchone() == (1,)


def test_schema_version_is_checked_before_import(empty_dsn: str) -> None:
    from store.errors import SchemaError

    db = Database(settings_for(empty_dsn))
    with pytest.raises(SchemaError, match="run `powerlog db upgrade`"):
        schema.require_current(db)


def test_reimport_is_recognised_without_parsing(imported: Any) -> None:
    _, (_, _, third), _ = imported
    assert third.shortcut is True
    assert third.warnings and third.warnings[0]["key"] == "Class_Minion_Henchman"


def test_going_back_to_an_older_release_re_adds_on_the_same_streams(dsn: str) -> None:
    """The sample: 20.1224, 21.0331, then 20.1224 again: removed entities come back on their old streams."""
    from tests.conftest import SAMPLES

    db = Database(settings_for(dsn))
    old, new = SAMPLES / "mids-20.1224", SAMPLES / "mids-21.0331"
    run_import(db, old)
    run_import(db, new)
    back = run_import(db, old)
    assert back.shortcut is False  # the log moved on since 20.1224 was imported
    assert back.counts["power"] == {"added": 3, "changed": 10, "removed": 0, "unchanged": 8}
    assert back.counts["powerset"] == {"added": 1, "changed": 3, "removed": 0, "unchanged": 2}
    with psycopg.connect(dsn) as conn:
        versions = conn.execute(
            "SELECT stream_id, array_agg(event_type ORDER BY stream_version) FROM events"
            " WHERE stream_id LIKE 'powerset:%Titan%' GROUP BY 1"
        ).fetchall()
        assert len(versions) == 1
        assert versions[0][1] == ["EntityAdded", "EntityRemoved", "EntityAdded"]
        by_stream: dict[str, list[Any]] = defaultdict(list)
        for batch in log.read_from(conn, 0):
            for stored in batch:
                by_stream[stored.stream_id].append(stored.event)
    with read_export(old) as reader:
        source = {f"{r.kind}:{r.key}": canonical_bytes(r.record) for r in reader}
    live = {sid: canonical_bytes(rec) for sid, evs in by_stream.items() if (rec := fold(evs)) is not None}
    assert live == source
