"""Bounded memory: an import holds a chunk of records and a batch of events at a time, never the release.

The fast whole-file parser (msgspec) must refuse exactly what the checking parser refuses."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from importer import diff as differ_module
from importer import run as run_module
from importer.run import run_import
from store import log
from store.connection import Database
from tests.conftest import SAMPLES, SHARED_DATA, settings_for
from tests.importer.helpers import FIRE_BLAST, dump, load, read_all

EXPECTED = json.loads((SHARED_DATA / "expected.json").read_text())
OLD = SHARED_DATA / "mids-20.1224"
NEW = SHARED_DATA / "mids-21.0331"


def test_a_duplicate_key_hidden_by_a_colon_escape_is_still_refused(tmp_path: Path) -> None:
    # The fast parser spots a duplicated key by the `:` it drops from the canonical form; a `:` written as
    # \u003a adds one back, so such a file must go to the checking parser.
    sample = tmp_path / "export"
    shutil.copytree(SAMPLES / "mids-20.1224", sample)
    doc = load(sample / FIRE_BLAST)
    doc["Powers"][3]["Effects"][2]["__DUP__"] = 1
    doc["Powers"][0]["DisplayName"] = "__ESCAPED__"
    dump(doc, sample / FIRE_BLAST)
    raw = (sample / FIRE_BLAST).read_bytes()
    raw = raw.replace(b'"__DUP__": 1', b'"Scale": 5').replace(b"__ESCAPED__", b"a\\u003ab")
    (sample / FIRE_BLAST).write_bytes(raw)
    with pytest.raises(Exception) as info:
        read_all(sample)
    assert str(info.value) == (
        f'{FIRE_BLAST}: $.Powers[3].Effects[2]: an object whose keys appear once; "Scale" appears twice'
    )


def test_fast_parser_gives_the_checking_parsers_records() -> None:
    from tests.importer.helpers import STREAMING

    fast = read_all(SAMPLES / "mids-21.0331")
    streamed = read_all(SAMPLES / "mids-21.0331", STREAMING)
    assert [(r.kind, r.key, r.location, r.data) for r in fast] == [
        (r.kind, r.key, r.location, r.data) for r in streamed
    ]
    assert [r.record for r in fast] == [r.record for r in streamed]


@pytest.mark.slow
def test_imports_hold_bounded_chunks_and_batches(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small bounds on the real releases: every query for heads asks for a chunk, every COPY carries a
    batch of at most BATCH_BYTES (plus the record that crossed it), and the diff is still the exact one."""
    batch_bytes = 256 * 1024
    monkeypatch.setattr(run_module, "BATCH_BYTES", batch_bytes)
    monkeypatch.setattr(differ_module, "CHUNK_RECORDS", 100)
    monkeypatch.setattr(differ_module, "CHUNK_BYTES", 128 * 1024)
    asked: list[int] = []
    batches: list[tuple[int, int, int]] = []
    heads_of, append = log.heads_of, log.append

    def counted_heads(conn: psycopg.Connection[Any], sids: Sequence[str]) -> dict[str, log.StreamHead]:
        asked.append(len(sids))
        return heads_of(conn, sids)

    def counted_append(conn: psycopg.Connection[Any], import_id: int, batch: Sequence[log.Pending]) -> Any:
        sizes = [len(p.record or b"") for p in batch]
        batches.append((len(batch), sum(sizes), max(sizes)))
        return append(conn, import_id, batch)

    monkeypatch.setattr(log, "heads_of", counted_heads)
    monkeypatch.setattr(log, "append", counted_append)
    db = Database(settings_for(dsn))
    try:
        first = run_import(db, OLD)
        first_batches = len(batches)
        second = run_import(db, NEW, read_all=True)  # every record diffed, none from an unchanged file
        with db.connect() as conn:
            verified = log.verify_chain(conn)
    finally:
        db.close()
    unique = EXPECTED["releases"]["mids-20.1224"]["unique_keys"]
    assert {k: c["added"] for k, c in first.counts.items()} == unique
    assert second.counts == EXPECTED["diff_20.1224_to_21.0331"]
    assert str(verified) == str(second.head)
    assert max(asked) <= 100 and sum(asked) == first.records + second.records
    assert len(asked) > (first.records + second.records) // 100
    # Each batch stopped at the record that took it to BATCH_BYTES.
    assert all(total - biggest < batch_bytes for _, total, biggest in batches)
    assert first_batches > sum(unique.values()) * 8_000 // batch_bytes // 2  # many, not one per 5,000


@pytest.mark.slow
def test_a_chunks_changes_are_appended_before_the_next_chunk_is_read(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The changes of an incremental import go out chunk by chunk, not held over until they fill a batch of
    BATCH_BYTES (8 MB): held, 3,255 changed records of 21.0331 made batches of hundreds."""
    monkeypatch.setattr(differ_module, "CHUNK_RECORDS", 100)
    batches: list[int] = []
    append = log.append

    def counted_append(conn: psycopg.Connection[Any], import_id: int, batch: Sequence[log.Pending]) -> Any:
        batches.append(len(batch))
        return append(conn, import_id, batch)

    db = Database(settings_for(dsn))
    try:
        run_import(db, OLD)
        monkeypatch.setattr(log, "append", counted_append)
        second = run_import(db, NEW)
    finally:
        db.close()
    assert second.counts == EXPECTED["diff_20.1224_to_21.0331"]
    assert sum(batches) == second.events == 3_259
    # 4,955 records in chunks of 100: the 35 chunks up to the 1,509 unchanged enhancements and sets each
    # give a batch, those after give none; the 4 tombstones go last, on their own.
    assert max(batches) <= 100 and batches[-1] == 4
    assert len(batches) == 36


@pytest.mark.slow
def test_removals_found_by_a_cursor_while_batches_are_appended(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export that drops most powersets: the tombstones come from a server-side cursor fetching 3 live
    streams at a time while COPYs of 5 events go out on the same connection between fetches."""
    monkeypatch.setattr(run_module, "LIVE_FETCH", 3)
    smaller = tmp_path / "smaller"
    shutil.copytree(SAMPLES / "mids-20.1224", smaller)
    powersets = sorted((smaller / "db").rglob("*.json"))
    kept = powersets[0]
    for path in powersets[1:]:
        path.unlink()
    db = Database(settings_for(dsn, POWERLOG_IMPORT_BATCH="5"))
    try:
        full = run_import(db, SAMPLES / "mids-20.1224")
        dropped = run_import(db, smaller)
        with db.connect() as conn:
            live = conn.execute(
                "SELECT kind, count(*) FROM streams WHERE NOT removed GROUP BY kind ORDER BY kind"
            ).fetchall()
            removed = conn.execute("SELECT count(*) FROM streams WHERE removed").fetchone()
            verified = log.verify_chain(conn)
    finally:
        db.close()
    kept_powers = len(load(kept)["Powers"])
    gone_powers = full.counts["power"]["added"] - kept_powers
    gone_sets = full.counts["powerset"]["added"] - 1
    assert dropped.counts["power"] == {
        "added": 0,
        "changed": 0,
        "removed": gone_powers,
        "unchanged": kept_powers,
    }
    assert dropped.counts["powerset"] == {"added": 0, "changed": 0, "removed": gone_sets, "unchanged": 1}
    assert gone_powers + gone_sets > 3 * 3  # several fetches, with COPYs between them
    assert removed == (gone_powers + gone_sets,)
    assert dict(live)["power"] == kept_powers
    assert str(verified) == str(dropped.head)


def test_the_record_of_keys_read_is_sized_from_the_last_import(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Growing the key set holds its old table and the new one at once: an import sizes it once, from the
    # live streams of the last import (powersets from the number of powerset files), so it need not grow.
    from importer import keyset, source

    # One table, from 8 slots: the samples' few keys would fit the usual first sizes.
    monkeypatch.setattr(keyset, "_SHARDS", 1)
    monkeypatch.setattr(keyset, "_SHARD_SHIFT", 64)
    monkeypatch.setattr(keyset, "_MIN_SLOTS", 8)
    sized: dict[int, int] = {}
    grown: list[int] = []
    grow = keyset._Table._grow

    class Spy(keyset.KeySet):
        def __init__(self, expected: int = 0) -> None:
            super().__init__(expected)
            sized[expected] = self.slots

    def counting_grow(table: keyset._Table) -> None:
        grown.append(table._slots)
        grow(table)

    monkeypatch.setattr(source, "KeySet", Spy)
    monkeypatch.setattr(keyset._Table, "_grow", counting_grow)
    run_import(db, SAMPLES / "mids-20.1224")
    assert grown, "a first import's powers start from the smallest table and grow"
    with psycopg.connect(db.dsn) as conn:
        live = log.live_counts(conn)
    assert live["power"] > 8 and live["enhancement"] > 8
    assert live["powerset"] in sized  # one powerset a file: sized from the files even the first time
    sized.clear()
    grown.clear()
    run_import(db, SAMPLES / "mids-21.0331")
    assert {live["power"], live["enhancement"], live["archetype"]} <= set(sized)
    assert grown == []
