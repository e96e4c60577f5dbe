"""The streams an export no longer holds are found by walking `streams`, but only for the kinds whose live
streams were not all read (`importer/run.py`): a walk over every live stream took about a fifth of a
no-change re-import of a new content hash (scale 3, under cProfile)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from importer.run import run_import
from store import log
from store.connection import Database
from tests.importer.helpers import FIRE_BLAST, SAMPLES, dump, load, read_all
from tests.importer.test_unchanged_files import touched

OLD, NEW = SAMPLES / "mids-20.1224", SAMPLES / "mids-21.0331"


@pytest.fixture
def walked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...] | None]:
    """The kinds each walk of the live streams was asked for."""
    calls: list[tuple[str, ...] | None] = []
    real = log.live_streams

    def spy(
        conn: psycopg.Connection[Any], fetch: int = 5000, kinds: Sequence[str] | None = None
    ) -> Iterator[log.StreamHead]:
        calls.append(None if kinds is None else tuple(kinds))
        return real(conn, fetch, kinds)

    monkeypatch.setattr(log, "live_streams", spy)
    return calls


def _live(conn: psycopg.Connection[Any], kind: str) -> set[str]:
    rows = conn.execute("SELECT key FROM streams WHERE kind = %s AND NOT removed", (kind,)).fetchall()
    return {str(key) for (key,) in rows}


def test_only_the_kinds_that_lost_streams_are_walked(
    db: Database, conn: psycopg.Connection[Any], walked: list[tuple[str, ...] | None], tmp_path: Path
) -> None:
    run_import(db, OLD)
    assert walked == []  # an empty log: nothing to remove
    new = run_import(db, NEW)
    # The sample's 21.0331 drops a powerset and 3 powers; archetypes and enhancements lose nothing.
    assert walked == [("powerset", "power")]
    assert {k: c["removed"] for k, c in new.counts.items()} == {
        "archetype": 0,
        "powerset": 1,
        "power": 3,
        "enhancement": 0,
        "enhancement_set": 0,
    }
    again = run_import(db, touched(NEW, tmp_path / "touched"))
    assert not again.shortcut and again.events == 0
    back = run_import(db, OLD)  # the removed come back: added, nothing removed
    assert back.counts["power"]["added"] == 3 and back.counts["power"]["removed"] == 0
    assert walked == [("powerset", "power")]
    assert _live(conn, "power") == {r.key for r in read_all(OLD) if r.kind == "power"}


def test_a_removal_hidden_behind_as_many_additions_is_still_found(
    db: Database, conn: psycopg.Connection[Any], walked: list[tuple[str, ...] | None], tmp_path: Path
) -> None:
    """A power renamed: the kind has as many keys as live streams, one of them new; its walk still runs."""
    run_import(db, OLD)
    export = tmp_path / "renamed"
    shutil.copytree(OLD, export)
    powerset = load(export / FIRE_BLAST)
    old_name = powerset["Powers"][0]["FullName"]
    powerset["Powers"][0]["FullName"] = old_name + "_Renamed"
    dump(powerset, export / FIRE_BLAST)

    result = run_import(db, export)

    assert walked == [("power",)]
    assert result.counts["power"] == {"added": 1, "changed": 0, "removed": 1, "unchanged": 20}
    live = _live(conn, "power")
    assert old_name not in live and old_name + "_Renamed" in live
    assert len(live) == 21
