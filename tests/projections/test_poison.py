"""Poison events: an event the projector cannot apply stops it there, named, never skipped or misapplied.

The bad events are appended to the log as the superuser, hash chain and all (a completed import of their
own), so the log stays valid and only the projector has something to say about them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

import projections
from events import canonical_bytes, content_hash, decode
from importer.run import run_import
from projections import projector, stalls
from projections.audit import rebuilt_hashes
from projections.fingerprint import table_hashes
from projections.metrics import Health
from store import log
from store.connection import Database
from tests.conftest import SAMPLES, settings_for
from tests.e2e.cli import powerlog
from tests.e2e.daemons import Daemon, wait_for

OLD = SAMPLES / "mids-20.1224"
FLARES = "Blaster_Ranged.Fire_Blast.Flares"
OLD_HEAD = 78  # the sample release 20.1224 is positions 1..78
POISON = OLD_HEAD + 1


Raw = tuple[str, str, "dict[str, Any] | str", int]


def append_raw(conn: psycopg.Connection[Any], events: list[Raw]) -> None:
    """Append (stream id, event type, payload as a dict or JSON text, schema version) as one completed
    import, chained as `store.log.verify_chain` checks it, whether or not the projector can make sense of it."""
    with conn.transaction():
        start = log.head(conn)
        import_id = conn.execute(
            "INSERT INTO imports (source_path, status, started_at) VALUES ('poison', 'failed', now()) RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        previous, position = start.chain_hash, start.position
        for sid, etype, payload, schema in events:
            position += 1
            row = conn.execute(
                "SELECT coalesce(max(stream_version), 0) + 1 FROM events WHERE stream_id = %s", (sid,)
            ).fetchone()
            version = int(row[0])  # type: ignore[index]
            text = (
                payload if isinstance(payload, str) else canonical_bytes({"type": etype, **payload}).decode()
            )
            data = canonical_bytes(decode(text.encode()))
            previous = log.chain_hash(previous, position, sid, version, etype, schema, import_id, data)
            conn.execute(
                "INSERT INTO events (global_position, stream_id, stream_version, event_type, schema_version,"
                " data, import_id, chain_hash) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s)",
                (position, sid, version, etype, schema, text, import_id, previous),
            )
        conn.execute(
            "UPDATE imports SET status = 'completed', completed_at = now(), first_position = %s,"
            " last_position = %s, head_chain_hash = %s WHERE id = %s",
            (start.position + 1, position, str(log.Head(position, previous)), import_id),
        )


def flares(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Flares' record as the log has it (its Added event)."""
    row = conn.execute(
        "SELECT data->'record' FROM events WHERE stream_id = %s AND event_type = 'EntityAdded'",
        (f"power:{FLARES}",),
    ).fetchone()
    assert row is not None
    return dict(row[0])


def added(kind: str, record: dict[str, Any], key: str) -> Raw:
    return (
        f"{kind}:{key}",
        "EntityAdded",
        {"kind": kind, "key": key, "record": record, "hash": content_hash(record), "schema_version": 1},
        1,
    )


def changed(key: str, patch: list[dict[str, Any]], kind: str = "power") -> Raw:
    payload = {
        "kind": kind,
        "key": key,
        "patch": patch,
        "previous_hash": "x",
        "hash": "y",
        "schema_version": 1,
    }
    return (f"{kind}:{key}", "EntityChanged", payload, 1)


def removed(key: str, kind: str = "power") -> Raw:
    payload = {"kind": kind, "key": key, "previous_hash": "x", "schema_version": 2}
    return (f"{kind}:{key}", "EntityRemoved", payload, 2)


# A good event after the poison one: it must not be applied either (the projector stops, in order).
GOOD = added("power", {"FullName": "Good.Set.Power", "DisplayName": "Good"}, "Good.Set.Power")

# name -> (the poison event, given Flares' record; the stream it is on; words its reason must hold)
CASES: dict[str, tuple[Any, str, str]] = {
    "change of an entity that does not exist": (
        lambda f: changed("No.Such.Power", [{"op": "replace", "path": "/DisplayName", "value": "x"}]),
        "power:No.Such.Power",
        "the entity it changes does not exist",
    ),
    "removal of an entity that does not exist": (
        lambda f: removed("No.Such.Power"),
        "power:No.Such.Power",
        "the entity it removes does not exist",
    ),
    "addition of an entity that exists": (
        lambda f: added("power", f, FLARES),
        f"power:{FLARES}",
        "it adds an entity that exists already",
    ),
    "unknown event type": (
        lambda f: (f"power:{FLARES}", "EntityRenamed", {"kind": "power", "key": FLARES, "to": "x"}, 1),
        f"power:{FLARES}",
        "unknown event type 'EntityRenamed'",
    ),
    "schema version newer than the code": (
        lambda f: (f"power:{FLARES}", "EntityChanged", changed(FLARES, [])[2], 7),
        f"power:{FLARES}",
        "EntityChanged schema_version 7 is not one this powerlog knows",
    ),
    "unknown entity kind": (
        lambda f: added("weapon", {"Name": "Sword"}, "Sword"),
        "weapon:Sword",
        "unknown entity kind 'weapon'",
    ),
    "record naming another entity than its stream": (
        lambda f: added("power", f, "Poison.Set.Z"),
        "power:Poison.Set.Z",
        f'its FullName "{FLARES}" is not its stream\'s key "Poison.Set.Z"',
    ),
    "patch turning Effects into an object": (
        lambda f: changed(FLARES, [{"op": "replace", "path": "/Effects", "value": {"a": 1}}]),
        f"power:{FLARES}",
        "Effects is a JSON object; its column takes an array",
    ),
    "patch removing a field that is not there": (
        lambda f: changed(FLARES, [{"op": "remove", "path": "/NoSuchField"}]),
        f"power:{FLARES}",
        "its patch does not apply: no member 'NoSuchField' to remove at '/NoSuchField'",
    ),
    "patch making the record a scalar": (
        lambda f: changed(FLARES, [{"op": "replace", "path": "", "value": 3}]),
        f"power:{FLARES}",
        "the record is a JSON number, not a JSON object",
    ),
    "number too large for an integer column": (
        lambda f: changed(FLARES, [{"op": "replace", "path": "/Level", "value": 3000000000}]),
        f"power:{FLARES}",
        "Level 3000000000 does not fit its column (an integer)",
    ),
    "number too large for a double precision column": (
        lambda f: added("power", {"FullName": "Big.Set.Z", "Accuracy": 10**400}, "Big.Set.Z"),
        "power:Big.Set.Z",
        "does not fit its column (a number)",
    ),
    # Passes every check the projector makes itself; the database refuses it, and halving the batch
    # finds which event it was.
    "number too small for a double precision column (the database refuses it)": (
        lambda f: (
            "power:Tiny.Set.Z",
            "EntityAdded",
            '{"hash":"h","key":"Tiny.Set.Z","kind":"power","record":{"Accuracy":1e-400,"FullName":"Tiny.Set.Z"},'
            '"schema_version":1,"type":"EntityAdded"}',
            1,
        ),
        "power:Tiny.Set.Z",
        "the database refused it: ",
    ),
}


def _inject(conn: psycopg.Connection[Any], case: str) -> None:
    make, _, _ = CASES[case]
    append_raw(conn, [make(flares(conn)), GOOD])


def _checkpoints(conn: psycopg.Connection[Any]) -> set[int]:
    return set(projections.checkpoints(conn).values())


@pytest.mark.parametrize("case", list(CASES))
def test_a_poison_event_stops_the_projector_there_named_and_status_shows_it(dsn: str, case: str) -> None:
    db = Database(settings_for(dsn))
    try:
        run_import(db, OLD)
        with psycopg.connect(dsn, autocommit=True) as conn:
            _inject(conn, case)
        result = powerlog("project", env={"DATABASE_URL": dsn})
        _, stream, reason = CASES[case]
        assert result.returncode == 1, result.stdout + result.stderr
        error = " ".join(result.stderr.split())
        assert f"error: projection stalled at position {POISON} ({stream}, " in error, error
        assert reason in error, error
        assert "Traceback" not in result.stderr
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Never past it; everything before it applied, in the same batch as the poison event.
            assert _checkpoints(conn) == {OLD_HEAD}
            assert table_hashes(conn) == rebuilt_hashes(conn, OLD_HEAD, range_size=10_000)
            assert conn.execute(
                "SELECT count(*) FROM powers WHERE full_name = 'Good.Set.Power'"
            ).fetchone() == (0,)
            stall = stalls.current(conn, OLD_HEAD)
            assert stall is not None and (stall.position, stall.stream_id) == (POISON, stream)
            assert reason in stall.reason
        shown = json.loads(powerlog("status", "--json", env={"DATABASE_URL": dsn}).stdout)["stalled"]
        assert (shown["position"], shown["stream_id"]) == (POISON, stream) and reason in shown["reason"]
        text = powerlog("status", env={"DATABASE_URL": dsn, "COLUMNS": "400"})
        assert text.returncode == 0, text.stderr
        assert f"stalled at position {POISON} ({stream}, " in " ".join(text.stdout.split()), text.stdout
        # Again: the same stop, counted as another attempt, the checkpoint still short of it.
        again = powerlog("project", env={"DATABASE_URL": dsn})
        assert again.returncode == 1 and f"position {POISON}" in again.stderr
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert _checkpoints(conn) == {OLD_HEAD}
            stall = stalls.current(conn, OLD_HEAD)
            assert stall is not None and stall.attempts == 2
    finally:
        db.close()


def test_a_record_naming_another_entity_leaves_that_entity_alone(dsn: str) -> None:
    db = Database(settings_for(dsn))
    try:
        run_import(db, OLD)
        projections.project(db)
        with psycopg.connect(dsn, autocommit=True) as conn:
            before = conn.execute(
                "SELECT id, display_name, data FROM powers WHERE full_name = %s", (FLARES,)
            ).fetchone()
            record = {**flares(conn), "DisplayName": "Overwritten"}
            append_raw(conn, [added("power", record, "Poison.Set.Z"), GOOD])
        stalled: projections.ProjectionStalled | None = None
        try:
            projections.project(db)
        except projections.ProjectionStalled as exc:
            stalled = exc
        with psycopg.connect(dsn, autocommit=True) as conn:
            after = conn.execute(
                "SELECT id, display_name, data FROM powers WHERE full_name = %s", (FLARES,)
            ).fetchone()
            assert after == before
            assert conn.execute(
                "SELECT count(*) FROM powers WHERE full_name = 'Poison.Set.Z'"
            ).fetchone() == (0,)
        assert stalled is not None and stalled.position == POISON
        assert "is not its stream's key" in stalled.reason
    finally:
        db.close()


def test_the_stall_clears_once_code_that_can_apply_the_event_passes_it(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(settings_for(dsn))
    try:
        run_import(db, OLD)
        with psycopg.connect(dsn, autocommit=True) as conn:
            append_raw(conn, [CASES["unknown event type"][0]({}), GOOD])
        with pytest.raises(projections.ProjectionStalled):
            projections.project(db)
        # A later powerlog that knows the type (and has nothing to write for it).
        monkeypatch.setitem(projector._VERSIONS, "EntityRenamed", 1)
        counts = projections.project(db)
        assert counts.position == POISON + 1
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert stalls.current(conn, 0) is None
            assert conn.execute(
                "SELECT count(*) FROM powers WHERE full_name = 'Good.Set.Power'"
            ).fetchone() == (1,)
        assert json.loads(powerlog("status", "--json", env={"DATABASE_URL": dsn}).stdout)["stalled"] is None
    finally:
        db.close()


def test_project_refreshes_a_view_left_stale_even_with_nothing_to_apply(dsn: str) -> None:
    """As after a `project` killed between its last batch's commit and its refresh."""
    db = Database(settings_for(dsn))
    try:
        run_import(db, OLD)
        projections.project(db)  # the batches, without the refresh the command does after them
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM power_build_summary").fetchone() == (0,)
            powers = conn.execute("SELECT count(*) FROM powers").fetchone()
        result = powerlog("project", env={"DATABASE_URL": dsn})
        assert result.returncode == 0, result.stderr
        assert "nothing to apply" in result.stdout and "refreshed power_build_summary" in result.stdout
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM power_build_summary").fetchone() == powers
        status = json.loads(powerlog("status", "--json", env={"DATABASE_URL": dsn}).stdout)
        assert status["view"]["stale"] is False
    finally:
        db.close()


def test_the_follower_stalls_at_a_poison_event_names_it_and_keeps_running(dsn: str) -> None:
    from tests.projections.test_follow import following

    db = Database(settings_for(dsn))
    health = Health(threshold_s=0.1)
    try:
        run_import(db, OLD)
        with psycopg.connect(dsn, autocommit=True) as conn:
            append_raw(conn, [removed("No.Such.Power"), GOOD])
        with capture_logs() as logs, following(db, health) as f:
            wait_for(lambda: f.follower.state == "stalled", "the follower to stall")
            _, body = wait_for(lambda: (r := health.report())[0] is False and r, "/healthz to fail")
            assert (
                f"projection stalled at position {POISON} (power:No.Such.Power, EntityRemoved)"
                in body["reason"]
            )
            assert f.thread.is_alive()
            with psycopg.connect(dsn, autocommit=True) as conn:
                assert _checkpoints(conn) == {OLD_HEAD}
                stall = stalls.current(conn, OLD_HEAD)
                assert stall is not None and stall.position == POISON
        assert [e["position"] for e in logs if e["event"] == "projection_stalled"][:1] == [POISON]
    finally:
        db.close()


def test_project_follow_refreshes_a_view_left_stale_at_its_first_round(dsn: str, tmp_path: Path) -> None:
    db = Database(settings_for(dsn))
    try:
        run_import(db, OLD)
        projections.project(db)  # as a `project` killed before its refresh
        with psycopg.connect(dsn, autocommit=True) as conn:
            powers = conn.execute("SELECT count(*) FROM powers").fetchone()
        follower = Daemon(["project", "--follow", "--poll", "600"], {"DATABASE_URL": dsn}, tmp_path / "f.log")
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                wait_for(
                    lambda: conn.execute("SELECT count(*) FROM power_build_summary").fetchone() == powers,
                    "the follower to refresh the view",
                )
            assert follower.stop() == 0
        finally:
            follower.kill()
    finally:
        db.close()
