"""`export --as-of N`: write a Mids export directory from the log alone, whose records equal import N's."""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import structlog

from events import JSON, decode, stream_id
from events.errors import CanonicalError, PowerlogError
from events.mids import ARCHETYPES_FILE, ENHANCEMENTS_FILE, KINDS, NOTE_FILES, POWERSETS_DIR
from store import asof, imports
from store.connection import Database
from store.imports import ImportRow

log = structlog.get_logger(__name__)

# What an export consists of: with --force these are replaced in OUT, nothing else there is touched.
EXPORT_ENTRIES = (ARCHETYPES_FILE, ENHANCEMENTS_FILE, *NOTE_FILES, POWERSETS_DIR)
_UNSAFE = re.compile(r"[/\\\x00-\x1f]")


class ExportError(PowerlogError):
    """An export cannot be written as asked (output not empty, unknown import, inconsistent log)."""


@dataclass
class ExportResult:
    out: Path
    import_id: int
    position: int
    records: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    files: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "as_of": self.import_id,
            "position": self.position,
            "records": self.records,
            "files": self.files,
        }


def header_version(text: str | None) -> JSON:
    """The release's Version as I12.json had it: imports keep it as text, so a number comes back as one."""
    if text is None:
        return None
    try:
        value = decode(text)
    except CanonicalError:
        return text
    if isinstance(value, bool) or not isinstance(value, int | float):
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value


def _dump(path: Path, value: JSON) -> None:
    # msgspec writes floats in shortest round-trip form, so reading the file back gives the same values.
    path.write_bytes(msgspec.json.format(msgspec.json.encode(value), indent=2))


def _file_name(full_name: str, taken: set[str]) -> str:
    """`<FullName>.json`, made safe as one file name and unique (case-insensitively) among those taken."""
    base = _UNSAFE.sub("_", full_name) or "_"
    name, n = f"{base}.json", 1
    while name.lower() in taken:
        n += 1
        name = f"{base}~{n}.json"
    taken.add(name.lower())
    return name


def _owner(power_key: str, powersets: dict[str, int]) -> str | None:
    """The powerset a power belongs to: the longest powerset FullName its key starts with (then a dot)."""
    prefix = power_key
    while "." in prefix:
        prefix = prefix.rpartition(".")[0]
        if prefix in powersets:
            return prefix
    return None


def _records(
    conn: psycopg.Connection[Any], kind: str, keys: list[str], until: int
) -> Iterator[tuple[str, dict[str, Any]]]:
    sids = [stream_id(kind, k) for k in keys]
    for sid, record in asof.fold_streams(conn, sids, until):
        if not isinstance(record, dict):
            raise ExportError(f"{sid} is listed as present after position {until} but folds to nothing")
        yield sid.partition(":")[2], record


def write_export(conn: psycopg.Connection[Any], row: ImportRow, until: int, target: Path) -> ExportResult:
    """Write every entity present after position `until` into the empty directory `target`."""
    result = ExportResult(target, row.id, until)
    archetypes = [r for _, r in _records(conn, "archetype", _keys(conn, "archetype", until), until)]
    header = {
        "Version": header_version(row.source_version),
        "Date": row.source_date,
        "Issue": row.source_issue,
        "Archetypes": archetypes,
    }
    _dump(target / ARCHETYPES_FILE, header)
    result.records["archetype"] = len(archetypes)
    del header, archetypes

    enhancements = [r for _, r in _records(conn, "enhancement", _keys(conn, "enhancement", until), until)]
    sets = [r for _, r in _records(conn, "enhancement_set", _keys(conn, "enhancement_set", until), until)]
    _dump(target / ENHANCEMENTS_FILE, {"Enhancements": enhancements, "EnhancementSets": sets})
    result.records["enhancement"], result.records["enhancement_set"] = len(enhancements), len(sets)
    del enhancements, sets

    powerset_keys = _keys(conn, "powerset", until)
    order = {k: i for i, k in enumerate(powerset_keys)}
    powers: dict[str, list[str]] = {k: [] for k in powerset_keys}
    for key in _keys(conn, "power", until):
        owner = _owner(key, order)
        if owner is None:
            raise ExportError(
                f"power {key!r} is present after position {until} but no powerset it could belong to is"
            )
        powers[owner].append(key)
    # Powers are streamed in powerset order, so one powerset file's records are held at a time.
    power_records = _records(conn, "power", [k for ps in powerset_keys for k in powers[ps]], until)
    powersets = list(_records(conn, "powerset", powerset_keys, until))
    folder = target / POWERSETS_DIR
    folder.mkdir()
    taken: set[str] = set()
    for key, record in powersets:
        file = {**record, "Powers": [next(power_records)[1] for _ in powers[key]]}
        _dump(folder / _file_name(key, taken), file)
        result.records["powerset"] += 1
        result.records["power"] += len(powers[key])
    if next(power_records, None) is not None:  # also ends the server-side stream cleanly
        raise ExportError("the log gave more powers than its powersets hold")
    result.files = 2 + len(powersets)
    return result


def _keys(conn: psycopg.Connection[Any], kind: str, until: int) -> list[str]:
    return [p.key for p in asof.present(conn, kind, until)]


def export(db: Database, as_of: int, out: Path, force: bool = False) -> ExportResult:
    """Write the entities the log held after import `as_of` as a Mids export directory at `out`.

    A non-empty `out` is refused unless `force`, which replaces only the export's own entries there."""
    # Written into a staging directory beside `out` and moved in at the end: a failure leaves `out` as it was.
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} is not empty; choose an empty or new directory, or use --force")
    with db.connect(autocommit=True) as conn:
        row, until = imports.state(conn, as_of)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        # mkdtemp makes it private (0700); the export should get the modes any new directory gets.
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        try:
            # Single-row streaming needs the connection to itself: the folds are read one after another.
            result = write_export(conn, row, until, staging)
            _move_in(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    result.out = out
    log.info("exported", as_of=as_of, out=str(out), position=until, records=result.records)
    return result


def _move_in(staging: Path, out: Path) -> None:
    if not out.exists():
        staging.rename(out)
        return
    for name in EXPORT_ENTRIES:
        old = out / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
    for child in staging.iterdir():
        child.rename(out / child.name)
