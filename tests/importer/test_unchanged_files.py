"""A file whose bytes an earlier import read, with the log unchanged since, is not parsed again: its keys come
from `file_keys` (store/files.py), and the import must come out exactly as a full read (`read_all`) does."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from importer import ImportInputError
from importer.run import ImportResult, run_import
from store import files, log
from store.connection import Database
from tests.conftest import create_database, drop_database, settings_for
from tests.importer.helpers import FIRE_BLAST, REAL_DATA, SAMPLES, dump, load


def touched(release: Path, target: Path) -> Path:
    """A copy of an export (hard links) whose PowerSets.json gains a newline: another content hash, so no
    shortcut, and the same records."""
    shutil.copytree(release, target, copy_function=os.link)
    notes = target / "PowerSets.json"
    data = notes.read_bytes()
    notes.unlink()
    notes.write_bytes(data + b"\n")
    return target


def record_files(result: ImportResult) -> int:
    """Files read for records, I12.json aside (it is always parsed: it holds the release's header)."""
    return result.files - 1


@pytest.fixture
def other_db(server_dsn: str, template_db: str) -> Iterator[Database]:
    """A second fresh database, for the same imports read in full."""
    name = f"powerlog_t_{uuid.uuid4().hex[:12]}"
    database = Database(settings_for(create_database(server_dsn, name, template=template_db)))
    try:
        yield database
    finally:
        database.close()
        drop_database(server_dsn, name)


def test_a_touched_copy_of_the_last_release_parses_none_of_its_record_files(
    db: Database, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    run_import(db, REAL_DATA / "mids-20.1224")
    second = run_import(db, REAL_DATA / "mids-21.0331")
    # Four files of 21.0331 are byte for byte as in 20.1224: taken from the first import.
    assert second.files_reused == 4
    copy = touched(REAL_DATA / "mids-21.0331", tmp_path / "copy")
    full = run_import(db, copy, dry_run=True, read_all=True)
    head = log.head(conn)

    again = run_import(db, copy)

    assert not again.shortcut
    assert again.files_reused == record_files(again) == 341
    assert again.events == 0 and log.head(conn) == head
    assert again.counts == full.counts
    assert again.counts["power"] == {"added": 0, "changed": 0, "removed": 0, "unchanged": 3046}
    assert again.records == full.records
    # Every record file is recorded with the SHA-256 of its bytes, whether it was parsed or not.
    recorded = files.recorded(conn, again.import_id or 0)
    assert len(recorded) == again.files
    for path, digest, reading in recorded:
        assert digest == hashlib.sha256((copy / path).read_bytes()).digest()
        assert reading == "1/depth64"


def _heads(db: Database) -> tuple[str, list[tuple[Any, ...]]]:
    with db.connect() as c:
        heads = sorted(tuple(h) for h in log.stream_heads(c))
        return str(log.head(c)), heads


def test_imports_that_skip_files_leave_the_log_a_full_read_leaves(
    db: Database, other_db: Database, tmp_path: Path
) -> None:
    first, second = SAMPLES / "mids-20.1224", SAMPLES / "mids-21.0331"
    steps = [
        first,
        second,
        touched(second, tmp_path / "second-touched"),
        first,  # back to the older release: most of its files are read again
        touched(first, tmp_path / "first-touched"),
        second,
    ]
    reused = []
    for path in steps:
        skipping = run_import(db, path)
        reading = run_import(other_db, path, read_all=True)
        assert reading.files_reused == 0
        reused.append(skipping.files_reused)
        assert skipping.counts == reading.counts
        assert skipping.warnings == reading.warnings
        # The same events in the same order: the chain heads (over positions, data and import ids) agree.
        assert _heads(db) == _heads(other_db)
    assert reused == [0, 2, 6, 2, 7, 2]


@pytest.fixture
def based(tmp_path: Path, db: Database) -> Callable[[str, Callable[[Any], None]], Path]:
    """The 20.1224 sample, without its duplicate archetype, imported; then `based(name, change)` makes a copy
    of it with a new powerset file, `name`, holding the Fire Blast file changed by `change` (so its keys are
    duplicates)."""
    base = tmp_path / "base"
    shutil.copytree(SAMPLES / "mids-20.1224", base)
    header = load(base / "I12.json")
    names = [a["ClassName"] for a in header["Archetypes"]]
    header["Archetypes"] = [a for i, a in enumerate(header["Archetypes"]) if a["ClassName"] not in names[:i]]
    dump(header, base / "I12.json")
    assert run_import(db, base).warnings == []

    def with_copy(name: str, change: Callable[[Any], None]) -> Path:
        target = tmp_path / name.replace("/", "_")
        shutil.copytree(base, target)
        value = load(base / FIRE_BLAST)
        change(value)
        dump(value, target / name)
        return target

    return with_copy


def _count(db: Database, sql: str) -> int:
    with db.connect() as c:
        row = c.execute(sql).fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.parametrize(
    ("name", "first_in_new_file"),
    [
        ("db/Player/AAA_Copy.json", True),  # read before the unchanged Fire Blast file
        ("db/Player/ZZZ_Copy.json", False),  # read after it
    ],
)
def test_duplicates_between_a_skipped_and_a_parsed_file_are_found_as_a_full_read_finds_them(
    db: Database,
    based: Callable[[str, Callable[[Any], None]], Path],
    name: str,
    first_in_new_file: bool,
) -> None:
    def change(powerset: Any) -> None:
        powerset["Powers"][1]["Accuracy"] = 7.5

    export = based(name, change)
    full = run_import(db, export, dry_run=True, read_all=True)
    result = run_import(db, export)

    assert result.files_reused == record_files(result) - 1  # all but the new file
    assert result.warnings == full.warnings
    assert result.counts == full.counts
    assert len(result.warnings) == 1 + len(load(export / FIRE_BLAST)["Powers"])
    power = result.warnings[2]  # after the powerset and Powers[0]
    new_place, old_place = f"{name}: $.Powers[1]", f"{FIRE_BLAST}: $.Powers[1]"
    assert (power["first"], power["second"]) == (
        (new_place, old_place) if first_in_new_file else (old_place, new_place)
    )
    # The copy's changed power is kept only where it is read first.
    assert result.counts["power"]["changed"] == (1 if first_in_new_file else 0)
    # Back to the export without the copy: where the copy came first, the Fire Blast file's keys were skipped
    # in it, so its records are not the log's heads: it is parsed, and its power changes back.
    back = touched(export.with_name("base"), export.with_name("back"))
    full_back = run_import(db, back, dry_run=True, read_all=True)
    result = run_import(db, back)
    assert result.counts == full_back.counts
    assert result.counts["power"]["changed"] == (1 if first_in_new_file else 0)
    assert result.files_reused == record_files(result) - (1 if first_in_new_file else 0)


def test_strict_refuses_a_duplicate_in_a_skipped_file_where_a_full_read_does(
    db: Database, based: Callable[[str, Callable[[Any], None]], Path]
) -> None:
    export = based("db/Player/AAA_Copy.json", lambda powerset: None)
    events = _count(db, "SELECT count(*) FROM events")
    with pytest.raises(ImportInputError) as full:
        run_import(db, export, strict=True, dry_run=True, read_all=True)
    with pytest.raises(ImportInputError) as skipping:
        run_import(db, export, strict=True)
    assert str(skipping.value) == str(full.value)
    assert skipping.value.file == FIRE_BLAST and skipping.value.location == "$"
    assert str(skipping.value).endswith(
        'a unique powerset key; "Blaster_Ranged.Fire_Blast" was already read at db/Player/AAA_Copy.json: $'
    )
    assert _count(db, "SELECT count(*) FROM events") == events
    assert _count(db, "SELECT count(*) FROM imports WHERE status = 'completed'") == 1


def test_keys_stored_in_another_form_make_the_file_parsed(
    db: Database, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    run_import(db, SAMPLES / "mids-20.1224")
    conn.execute("UPDATE file_keys SET keys = '\\x00'::bytea WHERE digest = %s", (_digest(FIRE_BLAST),))
    result = run_import(db, touched(SAMPLES / "mids-20.1224", tmp_path / "copy"))
    assert result.files_reused == record_files(result) - 1
    assert result.events == 0
    assert result.counts["power"]["unchanged"] == _count(
        db, "SELECT count(*) FROM streams WHERE kind = 'power' AND NOT removed"
    )


def _digest(rel: str) -> bytes:
    return hashlib.sha256((SAMPLES / "mids-20.1224" / rel).read_bytes()).digest()


def test_a_file_name_that_is_not_utf8_is_recorded_escaped_and_parsed_each_time(
    db: Database, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    export = tmp_path / "export"
    shutil.copytree(SAMPLES / "mids-20.1224", export)
    player = bytes(export / "db" / "Player")
    os.rename(bytes(export / FIRE_BLAST), player + b"/caf\xe9.json")
    first = run_import(db, export)
    assert first.events == 78
    (export / "PowerSets.json").write_bytes(b"[]")
    again = run_import(db, export)
    assert again.events == 0 and again.files_reused == record_files(again) - 1
    paths = [path for path, _, _ in files.recorded(conn, again.import_id or 0)]
    assert "db/Player/caf\\xe9.json" in paths
