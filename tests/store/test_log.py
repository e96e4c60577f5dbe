"""The log's promises: gap-free positions in commit order, version checks, a chain that shows tampering."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from events import EntityAdded, EntityChanged, EntityRemoved, canonical_bytes, content_hash, decode, diff
from store import imports, locks, log
from store.errors import ChainError, ConcurrencyError, LockBusy
from store.imports import ImportMeta


def added(kind: str, key: str, record: Any) -> log.Pending:
    return log.Pending(
        EntityAdded(kind=kind, key=key, record=record, hash=content_hash(record)), 0, canonical_bytes(record)
    )


def changed(kind: str, key: str, old: Any, new: Any, expected: int) -> log.Pending:
    ev = EntityChanged(
        kind=kind, key=key, patch=diff(old, new), previous_hash=content_hash(old), hash=content_hash(new)
    )
    return log.Pending(ev, expected, canonical_bytes(new))


def removed(kind: str, key: str, old: Any, expected: int) -> log.Pending:
    return log.Pending(EntityRemoved(kind=kind, key=key, previous_hash=content_hash(old)), expected, None)


def commit_import(dsn: str, batch: list[log.Pending], label: str = "t") -> log.Appended | None:
    with psycopg.connect(dsn) as conn, conn.transaction():
        locks.acquire(conn, locks.LOG)
        import_id = imports.begin(conn, ImportMeta(source_path="test", label=label))
        return log.append(conn, import_id, batch)


def positions(conn: psycopg.Connection[Any]) -> list[int]:
    return [r[0] for r in conn.execute("SELECT global_position FROM events ORDER BY 1").fetchall()]


def test_append_then_read_back(dsn: str, conn: psycopg.Connection[Any]) -> None:
    a = {"FullName": "A.B", "Level": 1, "Scale": 1.0, "Name": "Ünïcode"}
    b = {**a, "Level": 2}
    first = commit_import(dsn, [added("power", "A.B", a), added("power", "A.C", {"x": [1, 2]})])
    assert first is not None and (first.first_position, first.last_position) == (1, 2)
    second = commit_import(dsn, [changed("power", "A.B", a, b, 1), removed("power", "A.C", {"x": [1, 2]}, 1)])
    assert second is not None and (second.first_position, second.last_position) == (3, 4)
    assert positions(conn) == [1, 2, 3, 4]

    stream = log.read_stream(conn, "power", "A.B")
    assert [e.stream_version for e in stream] == [1, 2]
    assert isinstance(stream[0].event, EntityAdded) and stream[0].event.record == a
    assert isinstance(stream[1].event, EntityChanged)
    heads = {h.stream_id: h for h in log.stream_heads(conn)}
    assert heads["power:A.B"].version == 2 and heads["power:A.B"].hash == content_hash(b)
    assert heads["power:A.C"].removed

    batches = list(log.read_from(conn, 0, batch_size=3))
    assert [[e.global_position for e in b] for b in batches] == [[1, 2, 3], [4]]
    until_first = log.position_after_import(conn, 1)
    assert [e.global_position for b in log.read_from(conn, 0, until_first) for e in b] == [1, 2]
    assert log.verify_chain(conn) == second.head == log.head(conn)
    commit_import(dsn, [added("power", "A.D", {"d": "\u0000 kept", "f": 1.0})])
    records = log.current_records(conn, ["power:A.B", "power:A.C", "power:A.D", "power:nope"])
    # A.B's record was made by a patch (stored inline), A.D's is read from its Added event.
    assert {k: decode(v) for k, v in records.items()} == {
        "power:A.B": b,
        "power:A.D": {"d": "\u0000 kept", "f": 1.0},
    }


def test_stale_expected_version_raises_and_stores_nothing(dsn: str, conn: psycopg.Connection[Any]) -> None:
    v = [{"n": i} for i in range(10)]
    commit_import(dsn, [added("power", "P", v[0])])
    for i in range(1, 8):
        commit_import(dsn, [changed("power", "P", v[i - 1], v[i], i)])
    # The stream is at version 8; a writer that still believes it is at 7 must fail, and its whole batch with it.
    before = positions(conn)
    with pytest.raises(ConcurrencyError, match="stream power:P expected at version 7, found 8"):
        commit_import(dsn, [added("power", "Q", {"q": 1}), changed("power", "P", v[6], v[9], 7)])
    assert positions(conn) == before
    assert conn.execute("SELECT count(*) FROM streams WHERE stream_id = 'power:Q'").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM imports").fetchone() == (8,)


def test_changed_records_advance_their_streams_in_slices_and_a_stale_one_still_fails_the_batch(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch of changed records is sent to the stream-advancing function a few at a time (bounded memory):
    # every stream still moves to its new record, and a stale stream in such a batch still fails all of it.
    monkeypatch.setattr(log, "ADVANCE_BYTES", 64)
    old = {f"P{i}": {"n": i, "pad": "x" * 40} for i in range(6)}
    new = {k: {**v, "n": v["n"] + 100} for k, v in old.items()}
    commit_import(dsn, [added("power", k, v) for k, v in old.items()])
    commit_import(dsn, [changed("power", k, old[k], new[k], 1) for k in old])
    heads = {h.key: h for h in log.stream_heads(conn)}
    assert {k: (h.version, h.hash) for k, h in heads.items()} == {
        k: (2, content_hash(v)) for k, v in new.items()
    }
    assert {k: decode(v) for k, v in log.current_records(conn, [f"power:{k}" for k in old]).items()} == {
        f"power:{k}": v for k, v in new.items()
    }
    before = positions(conn)
    newer = {k: {**v, "n": 0} for k, v in new.items()}
    stale = [changed("power", k, new[k], newer[k], 2) for k in old]
    stale[-1] = changed("power", "P5", old["P5"], newer["P5"], 1)  # P5 is at version 2, not 1
    with pytest.raises(ConcurrencyError, match="stream power:P5 expected at version 1, found 2"):
        commit_import(dsn, stale)
    assert positions(conn) == before
    assert {h.key: h.version for h in log.stream_heads(conn)} == dict.fromkeys(old, 2)


def test_adding_an_existing_stream_is_a_concurrency_error(dsn: str, conn: psycopg.Connection[Any]) -> None:
    commit_import(dsn, [added("power", "P", {"a": 1})])
    with pytest.raises(ConcurrencyError, match="stream power:P expected at version 0, found 1"):
        commit_import(dsn, [added("power", "Z", {"z": 1}), added("power", "P", {"a": 2})])
    assert positions(conn) == [1]


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def test_concurrent_writers_commit_in_order_and_readers_never_see_a_gap(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    commit_import(dsn, [added("power", f"seed{i}", {"i": i}) for i in range(3)])
    writer1 = psycopg.connect(dsn)
    writer1.execute("BEGIN")
    locks.acquire(writer1, locks.LOG)
    import1 = imports.begin(writer1, ImportMeta(source_path="w1"))
    log.append(writer1, import1, [added("power", f"w1-{i}", {"i": i}) for i in range(50)])
    writer1_pid = writer1.info.backend_pid

    writer2_result: dict[str, Any] = {}
    writer2_started = threading.Event()
    writer2_pid: list[int] = []

    def writer2() -> None:
        with psycopg.connect(dsn) as c:
            writer2_pid.append(c.info.backend_pid)
            c.execute("BEGIN")
            writer2_started.set()
            writer2_result["waited"] = not locks.acquire(c, locks.LOG)
            import2 = imports.begin(c, ImportMeta(source_path="w2"))
            writer2_result["appended"] = log.append(
                c, import2, [added("power", f"w2-{i}", {"i": i}) for i in range(50)]
            )
            c.execute("COMMIT")

    seen: list[list[int]] = []
    stop = threading.Event()

    def reader() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            while not stop.is_set():
                seen.append(positions(c))

    t2 = threading.Thread(target=writer2)
    tr = threading.Thread(target=reader)
    tr.start()
    t2.start()
    assert writer2_started.wait(30)

    def writer2_blocked_on_the_log_lock() -> bool:
        if not writer2_pid:
            return False
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = %s",
            (writer2_pid[0],),
        ).fetchone()
        return bool(row and row[0])

    _wait_until(writer2_blocked_on_the_log_lock, "writer 2 to wait on the log lock")
    # While writer 1 holds its open transaction, nobody sees its events nor any of writer 2's.
    assert positions(conn) == [1, 2, 3]
    writer1.execute("COMMIT")
    writer1.close()
    t2.join(60)
    stop.set()
    tr.join(60)

    assert writer2_result["waited"] is True
    assert writer2_result["appended"].first_position == 54
    final = positions(conn)
    assert final == list(range(1, 104))
    for snapshot in seen:
        assert snapshot == list(range(1, len(snapshot) + 1)), "a reader saw a gap"
    assert {len(s) for s in seen} <= {3, 53, 103}
    assert writer1_pid != writer2_pid[0]
    log.verify_chain(conn)


def test_no_wait_fails_fast_while_another_import_runs(dsn: str) -> None:
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn) as other:
        holder.execute("BEGIN")
        locks.acquire(holder, locks.LOG)
        other.execute("BEGIN")
        with pytest.raises(LockBusy, match="another import"):
            locks.acquire(other, locks.LOG, wait=False)
        other.execute("ROLLBACK")
        with pytest.raises(LockBusy, match="still running"):
            locks.acquire(other, locks.LOG, wait=True, timeout_s=0.2)


def test_tampering_as_superuser_is_caught_at_the_first_bad_position(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    commit_import(dsn, [added("power", f"P{i}", {"i": i, "v": 1.5}) for i in range(20)])
    assert log.verify_chain(conn).position == 20
    conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    conn.execute("UPDATE events SET data = jsonb_set(data, '{record,v}', '2.5') WHERE global_position = 13")
    conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_delete")
    with pytest.raises(ChainError, match="position 13") as info:
        log.verify_chain(conn)
    assert info.value.position == 13


def test_a_cut_tail_is_caught_by_a_kept_head(dsn: str, conn: psycopg.Connection[Any]) -> None:
    commit_import(dsn, [added("power", f"P{i}", {"i": i}) for i in range(5)])
    second = commit_import(dsn, [added("power", f"Q{i}", {"i": i}) for i in range(5)])
    assert second is not None
    kept = log.Head.parse(str(second.head))
    log.check_head(conn, kept)
    conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    conn.execute("DELETE FROM events WHERE global_position > 5")
    conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_delete")
    assert log.verify_chain(conn).position == 5  # what is left still chains
    with pytest.raises(ChainError, match="no longer reaches position 10"):
        log.check_head(conn, kept)


def test_commit_notifies_listeners(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {log.NOTIFY_CHANNEL}")
        commit_import(dsn, [added("power", "P", {"a": 1}), added("power", "Q", {"a": 2})])
        notes = list(listener.notifies(timeout=10, stop_after=1))
    assert [n.payload for n in notes] == ["2"]


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        "ends in NUL\u0000",
        "\u0000",
        "mark \ue000 alone",
        "mark then zero \ue0000",
        "both \ue000\u0000\\u0000 \\\u0000",
    ],
)
def test_nul_characters_survive_the_log(dsn: str, conn: psycopg.Connection[Any], text: str) -> None:
    """jsonb refuses U+0000; real exports hold it, so the log escapes it and gives it back exactly."""
    record = {"DescLong": text, "Nested": [{"k\u0000": text}]}
    commit_import(dsn, [added("power", "P", record)])
    (stored,) = log.read_stream(conn, "power", "P")
    assert isinstance(stored.event, EntityAdded)
    assert stored.event.record == record
    assert stored.event.hash == content_hash(record)
    log.verify_chain(conn)


def test_an_event_whose_import_row_is_gone_fails_verification(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    commit_import(dsn, [added("power", "P", {"a": 1})])
    commit_import(dsn, [added("power", "Q", {"a": 2})])
    conn.execute("DELETE FROM imports WHERE id = 2")
    with pytest.raises(ChainError, match="position 2 belongs to import 2, which is missing") as info:
        log.verify_chain(conn)
    assert info.value.position == 2
