"""One entity's history: every event of its stream, with its import and each changed path's old and new value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from events import JSON, EntityAdded, EntityChanged, Event, PatchError, fold, resolve
from events.errors import PowerlogError
from events.mids import check_kind
from store import imports
from store.imports import ImportRow
from store.log import read_stream


class UnknownEntity(PowerlogError):
    """The log has no stream for the entity asked for."""


@dataclass(frozen=True)
class ImportRef:
    id: int
    label: str | None
    source_version: str | None
    source_date: str | None

    @classmethod
    def of(cls, row: ImportRow) -> ImportRef:
        return cls(row.id, row.label, row.source_version, row.source_date)


@dataclass(frozen=True)
class PathChange:
    """One patch op, with the value the path held before it (`old`) and after (`new`), when there was one."""

    op: str
    path: str
    old: JSON = None
    new: JSON = None
    had_old: bool = False
    has_new: bool = False

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "path": self.path}
        if self.had_old:
            out["old"] = self.old
        if self.has_new:
            out["new"] = self.new
        return out


@dataclass(frozen=True)
class HistoryEntry:
    position: int
    stream_version: int
    event_type: str
    recorded_at: datetime
    import_ref: ImportRef
    hash: str | None
    previous_hash: str | None
    changes: list[PathChange] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "stream_version": self.stream_version,
            "event_type": self.event_type,
            "recorded_at": self.recorded_at.isoformat(),
            "import": vars(self.import_ref),
            "hash": self.hash,
            "previous_hash": self.previous_hash,
            "changes": [c.as_dict() for c in self.changes],
        }


def _path_changes(before: JSON, patch: Sequence[dict[str, Any]]) -> list[PathChange]:
    out = []
    for op in patch:
        try:
            old, had_old = resolve(before, op["path"]), True
        except PatchError:  # an add where nothing was
            old, had_old = None, False
        has_new = op["op"] != "remove"
        out.append(
            PathChange(
                op=op["op"],
                path=op["path"],
                old=old,
                new=op.get("value") if has_new else None,
                had_old=had_old,
                has_new=has_new,
            )
        )
    return out


def history(conn: psycopg.Connection[Any], kind: str, key: str) -> list[HistoryEntry]:
    """Every event of one entity, oldest first, with its import and, for changes, each path's old and new value."""
    check_kind(kind)
    stored = read_stream(conn, kind, key)
    if not stored:
        raise UnknownEntity(f"the log has no {kind} {key!r} (keys are case-sensitive)")
    refs = {
        r.id: ImportRef.of(r)
        for r in (imports.get(conn, i) for i in {s.import_id for s in stored})
        if r is not None
    }
    entries = []
    seen: list[Event] = []
    for s in stored:
        ev = s.event
        changes: list[PathChange] = []
        if isinstance(ev, EntityChanged):
            # Old values come from the record as it stood before this event: the stream folded so far.
            changes = _path_changes(fold(seen), ev.patch)
        seen.append(ev)
        entries.append(
            HistoryEntry(
                position=s.global_position,
                stream_version=s.stream_version,
                event_type=s.event_type,
                recorded_at=s.recorded_at,
                import_ref=refs.get(s.import_id, ImportRef(s.import_id, None, None, None)),
                hash=ev.hash if isinstance(ev, EntityAdded | EntityChanged) else None,
                previous_hash=None if isinstance(ev, EntityAdded) else ev.previous_hash,
                changes=changes,
            )
        )
    return entries
