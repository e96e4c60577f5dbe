"""Projections on the real releases: exact rows, stable ids, rebuild equal to incremental, crash safety."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest

import projections
import scheduler
from importer.run import run_import
from projections.audit import rebuilt_hashes
from projections.fingerprint import fingerprint, table_hashes
from store import locks
from store.connection import Database
from store.errors import LockBusy
from tests.advisory import advisory_pids
from tests.conftest import SAMPLES, SHARED_DATA, TABLE_OF, settings_for
from tests.e2e.cli import powerlog

EXPECTED = json.loads((SHARED_DATA / "expected.json").read_text())
OLD = SHARED_DATA / "mids-20.1224"
NEW = SHARED_DATA / "mids-21.0331"


@pytest.fixture(scope="module")
def incremental(real_releases_db: Database) -> Database:
    """20.1224 imported and projected, then 21.0331 imported and projected (incremental runs)."""
    return real_releases_db


def count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.slow
def test_row_counts_are_the_last_release(incremental: Database) -> None:
    unique = EXPECTED["releases"]["mids-21.0331"]["unique_keys"]
    with incremental.connect() as conn:
        assert {kind: count(conn, table) for kind, table in TABLE_OF.items()} == unique
        assert conn.execute(
            "SELECT count(*) FROM powersets WHERE full_name LIKE '%Titan_Weapons_beta'"
        ).fetchone() == (0,)
        assert projections.checkpoints(conn) == dict.fromkeys(projections.projector.PROJECTORS, 8218)


@pytest.mark.slow
def test_flares_row_and_summary(incremental: Database) -> None:
    flares = EXPECTED["releases"]["mids-21.0331"]["flares"]
    with incremental.connect() as conn:
        row = conn.execute(
            "SELECT p.level_available, p.endurance_cost, p.recharge_time, p.accuracy, p.damage_scale,"
            " jsonb_array_length(p.effects), p.effect_groups, ps.full_name, p.data ? 'Effects', p.data->>'FullName'"
            " FROM powers p JOIN powersets ps ON ps.id = p.powerset_id"
            " WHERE p.full_name = 'Blaster_Ranged.Fire_Blast.Flares'"
        ).fetchone()
        assert row is not None
        level, end, recharge, acc, dmg, n_effects, groups, powerset, has_effects, full = row
        assert (level, end, recharge, acc) == (
            flares["level_available"],
            flares["endurance_cost"],
            flares["recharge_time"],
            flares["accuracy"],
        )
        assert dmg == pytest.approx(flares["damage_scale"], abs=1e-9)
        assert n_effects == flares["effects"] == sum(groups.values())
        assert (
            powerset == "Blaster_Ranged.Fire_Blast"
            and not has_effects
            and full == "Blaster_Ranged.Fire_Blast.Flares"
        )
        fire_blast = conn.execute(
            "SELECT count(*) FROM powers p JOIN powersets ps ON ps.id = p.powerset_id"
            " WHERE ps.full_name = 'Blaster_Ranged.Fire_Blast' AND p.level_available <= 20"
        ).fetchone()
        assert fire_blast == (EXPECTED["releases"]["mids-21.0331"]["fire_blast_powers_up_to_level_20"],)
        summary = conn.execute(
            "SELECT powerset_name, archetype_name, damage_scale, level_available FROM power_build_summary"
            " WHERE full_name = 'Blaster_Ranged.Fire_Blast.Flares'"
        ).fetchone()
        assert summary == ("Fire Blast", "Blaster", dmg, 1)
        # One row per power, every power's names joined (db/Player holds no pool sets, so none is NULL).
        assert conn.execute(
            "SELECT count(*), count(powerset_name), count(archetype_name) FROM power_build_summary"
        ).fetchone() == (3046, 3046, 3046)


@pytest.mark.slow
def test_references_resolve_by_natural_key(incremental: Database) -> None:
    with incremental.connect() as conn:
        assert conn.execute("SELECT count(*) FROM powers WHERE powerset_id IS NULL").fetchone() == (0,)
        dangling = conn.execute(
            "SELECT count(*) FROM powersets ps WHERE archetype_id IS NULL"
            " AND EXISTS (SELECT 1 FROM archetypes a WHERE a.class_name = ps.data->>'ATClass')"
        ).fetchone()
        assert dangling == (0,)
        # Enhancements outside any set keep NULL; those in a set point at it.
        wrong = conn.execute(
            "SELECT count(*) FROM enhancements e LEFT JOIN enhancement_sets s ON s.id = e.set_id"
            " WHERE (e.data->>'UIDSet') <> '' AND s.uid IS DISTINCT FROM e.data->>'UIDSet'"
        ).fetchone()
        assert wrong == (0,)


@pytest.mark.slow
def test_rebuild_equals_incremental_ids_included(incremental: Database) -> None:
    with incremental.connect() as conn:
        before = table_hashes(conn)
        ids = conn.execute("SELECT full_name, id FROM powers ORDER BY id").fetchall()
    result = projections.rebuild(incremental)
    assert result.counts.position == 8218
    with incremental.connect() as conn:
        assert table_hashes(conn) == before
        assert conn.execute("SELECT full_name, id FROM powers ORDER BY id").fetchall() == ids
        # The swapped-in view answers and keeps its unique index (needed for concurrent refreshes).
        assert count(conn, "power_build_summary") == 3046
        assert conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'power_build_summary' AND indexdef LIKE 'CREATE UNIQUE%'"
        ).fetchone() == (1,)
        assert conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname IN ('powerlog_shadow', 'powerlog_retired')"
        ).fetchone() == (0,)
        conn.execute("SET ROLE powerlog_reader")
        assert count(conn, "powers") == 3046


def test_projecting_the_sample_after_each_import_equals_one_run(
    dsn: str, server_dsn: str, template_db: str
) -> None:
    db = Database(settings_for(dsn))
    run_import(db, SAMPLES / "mids-20.1224")
    projections.project(db)
    run_import(db, SAMPLES / "mids-21.0331")
    projections.project(db)
    run_import(db, SAMPLES / "mids-20.1224")  # back again: removed entities return with their old ids
    projections.project(db)
    with db.connect() as conn:
        incremental = table_hashes(conn)
        titan = conn.execute("SELECT id FROM powersets WHERE full_name LIKE '%Titan_Weapons_beta'").fetchone()
        first = conn.execute(
            "SELECT global_position FROM events WHERE stream_id LIKE 'powerset:%Titan_Weapons_beta' AND stream_version = 1"
        ).fetchone()
        assert titan is not None and titan == first
    projections.rebuild(db)
    with db.connect() as conn:
        assert table_hashes(conn) == incremental


def test_killed_projection_resumes_to_the_same_tables(dsn: str) -> None:
    env = {"DATABASE_URL": dsn, "POWERLOG_PROJECT_BATCH": "20", "POWERLOG_VIEW_REFRESH": "scheduler"}
    db = Database(settings_for(dsn))
    run_import(db, SAMPLES / "mids-20.1224")
    run_import(db, SAMPLES / "mids-21.0331")
    positions = []
    for batch in (1, 3):
        killed = powerlog("project", env={**env, "POWERLOG_TEST_FAULT": f"project_batch:{batch}"})
        assert killed.returncode == -9, killed.stderr
        with db.connect(autocommit=True) as conn:
            # Whole batches only: each checkpoint is a multiple of the batch size, and rows match it.
            position = projections.checkpoint(conn)
            assert position % 20 == 0
            assert table_hashes(conn) == rebuilt_hashes(conn, position, 20), f"rows at checkpoint {position}"
        positions.append(position)
    # Killed in its first batch, the first run committed none; the second, killed in its third, two.
    assert positions == [0, 40]
    done = powerlog("project", env=env)
    assert done.returncode == 0, done.stderr
    with db.connect() as conn:
        resumed = table_hashes(conn)
    projections.rebuild(db)
    with db.connect() as conn:
        assert table_hashes(conn) == resumed


def test_a_second_projector_waits_or_fails_fast(dsn: str) -> None:
    db = Database(settings_for(dsn))
    run_import(db, SAMPLES / "mids-20.1224")
    with psycopg.connect(dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (locks.PROJECTOR.key,))
        with pytest.raises(LockBusy, match="another powerlog process is projecting"):
            projections.project(db, wait=False)
        result = powerlog("project", "--no-wait", env={"DATABASE_URL": dsn})
        assert result.returncode == 1 and "another powerlog process is projecting" in result.stderr
        with db.connect() as conn:
            assert projections.checkpoint(conn) == 0


def test_readers_never_see_empty_or_failing_tables_during_rebuild(dsn: str) -> None:
    db = Database(settings_for(dsn))
    run_import(db, SAMPLES / "mids-20.1224")
    run_import(db, SAMPLES / "mids-21.0331")
    projections.project(db)
    expected = {"powers": 18, "powersets": 5, "archetypes": 14}
    stop = threading.Event()
    seen: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while not stop.is_set():
                    seen.append({t: count(conn, t) for t in expected})
        except BaseException as exc:  # the test fails on any error, reported below
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(3):
            projections.rebuild(db)
    finally:
        stop.set()
        thread.join(30)
    assert errors == []
    assert len(seen) > 10
    assert all(s == expected for s in seen)


def test_follow_projects_each_import_as_it_commits(dsn: str) -> None:
    db = Database(settings_for(dsn))
    stop = threading.Event()
    rounds: list[int] = []
    reached = threading.Event()

    def on_round(counts: projections.BatchCounts, lag: int) -> None:
        rounds.append(counts.position)
        if counts.position >= target[0] > 0 and lag == 0:
            reached.set()

    target = [0]
    thread = threading.Thread(
        target=projections.follow, args=(db, stop), kwargs={"poll_s": 30, "on_round": on_round}
    )
    thread.start()
    try:
        result = run_import(db, SAMPLES / "mids-20.1224")
        assert result.appended is not None
        target[0] = result.appended.last_position
        assert reached.wait(30), f"follow did not catch up: rounds {rounds}"
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    with db.connect() as conn:
        assert count(conn, "powers") == 21


def test_status_json(dsn: str) -> None:
    db = Database(settings_for(dsn))
    run_import(db, SAMPLES / "mids-20.1224")
    projections.project(db)
    result = powerlog("status", "--json", env={"DATABASE_URL": dsn})
    assert result.returncode == 0, result.stderr
    st = json.loads(result.stdout)
    head = st["log"]["head_position"]
    assert head > 0 and st["log"]["head"].startswith(f"{head}:")
    assert all(p == {"position": head, "lag": 0, "lag_seconds": 0.0} for p in st["projectors"].values())
    assert st["rows"]["powers"] == 21
    assert st["last_import"]["id"] == 1 and st["last_import"]["head"] == st["log"]["head"]
    assert st["view"]["stale"] is True
    with db.connect() as conn:
        # Recorded with the import once the projection reached its last position.
        assert conn.execute("SELECT fingerprint FROM imports WHERE id = 1").fetchone() == (fingerprint(conn),)


def test_rebuild_command_records_its_view_so_no_second_refresh_follows(dsn: str) -> None:
    db = Database(settings_for(dsn))
    run_import(db, SAMPLES / "mids-20.1224")
    env = {"DATABASE_URL": dsn}
    projected = powerlog("project", env=env)
    assert projected.returncode == 0, projected.stderr
    assert "refreshed power_build_summary: 21 rows" in projected.stdout
    result = powerlog("rebuild", env=env)
    assert result.returncode == 0, result.stderr
    assert "rebuilt the read tables" in result.stdout
    assert "refreshed power_build_summary" not in result.stdout
    with db.connect() as conn:
        position = projections.checkpoint(conn)
        rows = conn.execute(
            "SELECT mode, outcome, rows, source_position FROM view_refreshes ORDER BY id"
        ).fetchall()
        assert rows[-1] == ("rebuild", "ok", 21, position) and len(rows) == 2
        assert not scheduler.is_stale(conn)
    st = powerlog("scheduler", "status", env=env)
    assert st.returncode == 0, st.stderr
    assert f"(rebuild, 21 rows, position {position:,})" in " ".join(st.stdout.split())


def test_with_the_scheduler_in_charge_rebuild_does_not_call_its_view_stale(dsn: str) -> None:
    db = Database(settings_for(dsn))
    run_import(db, SAMPLES / "mids-20.1224")
    env = {"DATABASE_URL": dsn, "POWERLOG_VIEW_REFRESH": "scheduler"}
    stale = "view power_build_summary is stale; the scheduler will refresh it"
    projected = powerlog("project", env=env)
    assert projected.returncode == 0 and stale in projected.stdout, projected.stderr
    rebuilt = powerlog("rebuild", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt the read tables" in rebuilt.stdout and stale not in rebuilt.stdout
    with db.connect() as conn:
        assert not scheduler.is_stale(conn)


def test_pool_powers_have_no_archetype_but_stay_in_the_summary(dsn: str, tmp_path: Any) -> None:
    """Pool powersets name no archetype: the view's outer join keeps their powers, with a NULL archetype."""
    import shutil

    export = tmp_path / "export"
    shutil.copytree(SAMPLES / "mids-20.1224", export)
    pool = {
        "FullName": "Pool.Test_Pool",
        "DisplayName": "Test Pool",
        "SetType": 4,
        "ATClass": "",
        "GroupName": "Pool",
        "Powers": [{"FullName": "Pool.Test_Pool.Hop", "DisplayName": "Hop", "Level": 4, "Effects": []}],
    }
    (export / "db" / "Player" / "Pool.Test_Pool.json").write_text(json.dumps(pool))
    db = Database(settings_for(dsn))
    run_import(db, export)
    projections.project(db)
    assert scheduler.refresh(db).outcome == "ok"
    with db.connect() as conn:
        row = conn.execute(
            "SELECT powerset_name, archetype_name, damage_scale, effect_groups FROM power_build_summary"
            " WHERE full_name = 'Pool.Test_Pool.Hop'"
        ).fetchone()
        assert row == ("Test Pool", None, None, {})
        assert count(conn, "power_build_summary") == 22


def _waiting_for_the_projector_lock(conn: psycopg.Connection[Any]) -> int:
    return len(advisory_pids(conn, locks.PROJECTOR, granted=False))


def test_two_rebuilds_at_once_one_builds_the_other_waits_and_the_tables_equal_one_rebuild(dsn: str) -> None:
    db = Database(settings_for(dsn, POWERLOG_PROJECT_BATCH="10"))
    run_import(db, SAMPLES / "mids-20.1224")
    run_import(db, SAMPLES / "mids-21.0331")
    projections.rebuild(db)
    with db.connect() as conn:
        single = table_hashes(conn)

    second_waits = threading.Event()
    batches_while_second_waited: list[int] = []
    errors: list[BaseException] = []

    def first_batch(counts: projections.BatchCounts, target: int) -> None:
        # Hold the first rebuild inside its build until the second one queues for the lock.
        if counts.batches == 1:
            assert second_waits.wait(60), "the second rebuild never queued behind the first"
        batches_while_second_waited.append(counts.batches)

    def run(on_batch: Any = None) -> None:
        try:
            projections.rebuild(db, on_batch=on_batch)
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=run, args=(first_batch,))
    first.start()
    with psycopg.connect(dsn, autocommit=True) as watcher:
        # The first holds the lock once its first batch is in (it then waits on second_waits).
        while (
            not batches_while_second_waited
            and first.is_alive()
            and locks.holder(watcher, locks.PROJECTOR) is None
        ):
            time.sleep(0.01)  # polling the server for the state, not waiting a guessed time
        assert locks.holder(watcher, locks.PROJECTOR) is not None, errors
        with pytest.raises(LockBusy, match="another powerlog process is projecting"):
            projections.rebuild(db, wait=False)
        second = threading.Thread(target=run)
        second.start()
        while _waiting_for_the_projector_lock(watcher) == 0:
            assert second.is_alive(), errors
            time.sleep(0.01)
        second_waits.set()
        first.join(120)
        second.join(120)
    assert not errors, errors
    # The first ran its whole build while the second waited, and both swapped in complete tables.
    assert len(batches_while_second_waited) > 1
    with db.connect() as conn:
        assert table_hashes(conn) == single
        assert conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'powerlog_%'"
        ).fetchone() == (0,)
