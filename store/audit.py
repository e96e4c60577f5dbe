"""Audits that only read the log: one entity's history, the difference between two imports, state as of one."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from events import (
    JSON,
    EntityAdded,
    EntityChanged,
    Event,
    apply,
    content_hash,
    decode_event,
    event_type,
    fold,
    same,
)
from events.errors import FoldError, PatchError, PowerlogError
from events.patch import unescape
from store import imports, log
from store.imports import ImportRow
from store.log import read_stream
from store.nul import from_jsonb

KINDS = ("archetype", "powerset", "power", "enhancement", "enhancement_set")


class AuditError(PowerlogError):
    """An audit cannot be done as asked: unknown or failed import, unknown entity or kind."""


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise AuditError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")


def import_state(conn: psycopg.Connection[Any], import_id: int) -> tuple[ImportRow, int]:
    """The import's row and the log position right after it committed (0 when the log was still empty)."""
    row = imports.get(conn, import_id)
    if row is None:
        raise AuditError(f"there is no import {import_id} (see `powerlog status`)")
    if row.status != "completed":
        raise AuditError(f"import {import_id} failed; the log holds nothing from it")
    return row, log.position_after_import(conn, import_id)


# --- history ---------------------------------------------------------------------------------------------


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


_ABSENT = object()


def pointer_get(doc: JSON, pointer: str) -> Any:
    """The value at a JSON Pointer, or `_ABSENT` when the path does not exist in doc."""
    if pointer == "":
        return doc
    node = doc
    for raw in pointer[1:].split("/"):
        token = unescape(raw)
        if isinstance(node, dict):
            if token not in node:
                return _ABSENT
            node = node[token]
        elif isinstance(node, list):
            if not token.isdigit() or int(token) >= len(node):
                return _ABSENT
            node = node[int(token)]
        else:
            return _ABSENT
    return node


def _path_changes(before: JSON, patch: Sequence[dict[str, Any]]) -> list[PathChange]:
    out = []
    for op in patch:
        old = pointer_get(before, op["path"])
        has_new = op["op"] != "remove"
        out.append(
            PathChange(
                op=op["op"],
                path=op["path"],
                old=None if old is _ABSENT else old,
                new=op.get("value") if has_new else None,
                had_old=old is not _ABSENT,
                has_new=has_new,
            )
        )
    return out


def history(conn: psycopg.Connection[Any], kind: str, key: str) -> list[HistoryEntry]:
    """Every event of one entity, oldest first, with its import and, for changes, each path's old and new value."""
    check_kind(kind)
    stored = read_stream(conn, kind, key)
    if not stored:
        raise AuditError(f"the log has no {kind} {key!r} (keys are case-sensitive)")
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


# --- folding many streams --------------------------------------------------------------------------------


def stream_events(
    conn: psycopg.Connection[Any], stream_ids: Sequence[str], until: int
) -> Iterator[tuple[str, list[tuple[int, Event]]]]:
    """Each stream's events up to position `until` as (position, event), one stream at a time, in the
    order `stream_ids` gives; streamed from the server so only one stream's events are held."""
    if not stream_ids:
        return
    current: str | None = None
    events: list[tuple[int, Event]] = []
    with conn.cursor() as cur:
        rows = cur.stream(
            "SELECT e.stream_id, e.global_position, e.event_type, e.schema_version, e.data::text"
            " FROM unnest(%s::text[]) WITH ORDINALITY AS s(stream_id, ord)"
            " JOIN events e ON e.stream_id = s.stream_id AND e.global_position <= %s"
            " ORDER BY s.ord, e.stream_version",
            (list(stream_ids), until),
        )
        for sid, position, etype, schema, data in rows:
            if sid != current:
                if current is not None:
                    yield current, events
                current, events = sid, []
            events.append((position, decode_event(etype, schema, from_jsonb(data.encode()))))
    if current is not None:
        yield current, events


def fold_streams(
    conn: psycopg.Connection[Any], stream_ids: Sequence[str], until: int
) -> Iterator[tuple[str, JSON]]:
    """(stream id, record after position `until`) per stream, in the order given (None: absent then)."""
    pending = iter(stream_ids)
    for sid, events in stream_events(conn, stream_ids, until):
        # A stream with no event up to `until` gets no row from the query: it was absent.
        for expected in pending:
            if expected == sid:
                break
            yield expected, None
        yield sid, fold(ev for _, ev in events)
    for expected in pending:
        yield expected, None


@dataclass(frozen=True)
class Present:
    """An entity present after some position: its key and where its stream began (its read-table id)."""

    key: str
    first_position: int


def present(conn: psycopg.Connection[Any], kind: str, until: int) -> list[Present]:
    """Entities of `kind` present after position `until` (last event an Added or a Changed), oldest first."""
    check_kind(kind)
    rows = conn.execute(
        "SELECT substr(stream_id, %s), min(global_position),"
        " (array_agg(event_type ORDER BY stream_version DESC))[1] <> 'EntityRemoved'"
        " FROM events WHERE starts_with(stream_id, %s) AND global_position <= %s"
        " GROUP BY stream_id ORDER BY 2",
        (len(kind) + 2, f"{kind}:", until),
    ).fetchall()
    return [Present(r[0], int(r[1])) for r in rows if r[2]]


# --- diff between imports --------------------------------------------------------------------------------


@dataclass
class KindDiff:
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    # Top-level field -> how many changed entities differ in it.
    fields: dict[str, int] = field(default_factory=dict)
    added_keys: list[str] = field(default_factory=list)
    removed_keys: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": self.unchanged,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.counts(),
            "fields": self.fields,
            "added_keys": self.added_keys,
            "removed_keys": self.removed_keys,
        }


@dataclass
class ImportDiff:
    before: ImportRow
    after: ImportRow
    before_position: int
    after_position: int
    kinds: dict[str, KindDiff]

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": {**vars(ImportRef.of(self.before)), "position": self.before_position},
            "to": {**vars(ImportRef.of(self.after)), "position": self.after_position},
            "kinds": {k: d.as_dict() for k, d in self.kinds.items()},
        }


# Last event per stream as of each side, without reading `data` (records are large and TOASTed).
_LAST = (
    "SELECT DISTINCT ON (stream_id) stream_id, stream_version, global_position,"
    " event_type <> 'EntityRemoved' AS present FROM events"
    " WHERE global_position <= %(pos{side})s{filters} ORDER BY stream_id, stream_version DESC"
)


def diff_imports(
    conn: psycopg.Connection[Any],
    before_id: int,
    after_id: int,
    kind: str | None = None,
    key_like: str | None = None,
) -> ImportDiff:
    """Per kind, what was added / changed / removed / unchanged between the log after two imports, and
    how often each top-level field differs among the changed entities."""
    if kind is not None:
        check_kind(kind)
    before, pos_a = import_state(conn, before_id)
    after, pos_b = import_state(conn, after_id)
    filters = ""
    params: dict[str, Any] = {"posa": pos_a, "posb": pos_b}
    if kind is not None:
        filters += " AND starts_with(stream_id, %(prefix)s)"
        params["prefix"] = f"{kind}:"
    if key_like is not None:
        filters += " AND substr(stream_id, strpos(stream_id, ':') + 1) LIKE %(like)s"
        params["like"] = key_like
    rows = conn.execute(
        f"WITH a AS ({_LAST.format(side='a', filters=filters)}), b AS ({_LAST.format(side='b', filters=filters)})"
        " SELECT stream_id, a.present, b.present, a.stream_version, b.stream_version,"
        " a.global_position, b.global_position FROM a FULL JOIN b USING (stream_id)",
        params,
    ).fetchall()
    kinds = {k: KindDiff() for k in ((kind,) if kind else KINDS)}
    # Both present at different versions: same record only if the hashes agree (a change may be undone).
    suspects: list[tuple[str, int, int]] = []
    for sid, in_a, in_b, ver_a, ver_b, at_a, at_b in rows:
        k, _, key = sid.partition(":")
        d = kinds.setdefault(k, KindDiff())
        if in_a and in_b:
            if ver_a == ver_b:
                d.unchanged += 1
            else:
                suspects.append((sid, at_a, at_b))
        elif in_b:
            d.added += 1
            d.added_keys.append(key)
        elif in_a:
            d.removed += 1
            d.removed_keys.append(key)
    changed = _changed(conn, suspects)
    for sid, _, _ in suspects:
        d = kinds[sid.partition(":")[0]]
        if sid in changed:
            d.changed += 1
        else:
            d.unchanged += 1
    for sid, fields in _field_changes(conn, sorted(changed), pos_a, pos_b):
        d = kinds[sid.partition(":")[0]]
        for f in fields:
            d.fields[f] = d.fields.get(f, 0) + 1
    for d in kinds.values():
        d.added_keys.sort()
        d.removed_keys.sort()
        d.fields = dict(sorted(d.fields.items(), key=lambda kv: (-kv[1], kv[0])))
    return ImportDiff(before, after, pos_a, pos_b, kinds)


def _changed(conn: psycopg.Connection[Any], suspects: list[tuple[str, int, int]]) -> set[str]:
    if not suspects:
        return set()
    positions = [p for _, a, b in suspects for p in (a, b)]
    hashes = dict(
        conn.execute(
            "SELECT global_position, data->>'hash' FROM events WHERE global_position = ANY(%s)", (positions,)
        ).fetchall()
    )
    return {sid for sid, a, b in suspects if hashes[a] != hashes[b]}


def _field_changes(
    conn: psycopg.Connection[Any], stream_ids: list[str], pos_a: int, pos_b: int
) -> Iterator[tuple[str, list[str]]]:
    """For each stream, the top-level fields whose value differs between the two positions."""
    lo, hi = sorted((pos_a, pos_b))
    for sid, events in stream_events(conn, stream_ids, hi):
        older, newer = fold_twice(sid, events, lo, hi)
        yield (
            sid,
            top_level_differences(older, newer) if pos_a <= pos_b else top_level_differences(newer, older),
        )


def fold_twice(sid: str, events: list[tuple[int, Event]], lo: int, hi: int) -> tuple[JSON, JSON]:
    """A stream's record after position `lo` and after `hi` (lo <= hi), folding its events once."""
    # When only changes lie between, their patches go on the first record field by field: only the
    # top-level fields they touch are copied (a real power's Effects are large), the rest is shared, and
    # the result is checked once against the last change's hash.
    before = [ev for p, ev in events if p <= lo]
    between = [ev for p, ev in events if lo < p <= hi]
    older = fold(before)
    changes = [ev for ev in between if isinstance(ev, EntityChanged)]
    if not between:
        return older, older
    if not isinstance(older, dict) or len(changes) != len(between):
        return older, fold(before + between)
    expected = next(ev.hash for ev in reversed(before) if isinstance(ev, EntityAdded | EntityChanged))
    by_field: dict[str, list[dict[str, Any]]] = {}
    for ev in changes:
        if ev.previous_hash != expected:
            raise FoldError(
                f"{sid}: {event_type(ev)} expects previous hash {ev.previous_hash}, stream is at {expected}"
            )
        expected = ev.hash
        for op in ev.patch:
            path = op.get("path")
            if not isinstance(path, str) or not path.startswith("/"):
                # The whole record replaced (or a malformed op): fold it the plain way.
                return older, fold(before + between)
            by_field.setdefault(unescape(path[1:].split("/", 1)[0]), []).append(op)
    newer = dict(older)
    try:
        for name, ops in by_field.items():
            part = apply({name: older[name]} if name in older else {}, ops)
            newer.pop(name, None)
            newer.update(part)
    except PatchError as exc:
        raise FoldError(f"{sid}: {exc}") from exc
    if content_hash(newer) != expected:
        raise FoldError(f"{sid}: patched record does not hash to {expected}")
    return older, newer


def top_level_differences(a: JSON, b: JSON) -> list[str]:
    """Top-level fields added, removed or changed between two records."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return [""]
    missing = object()
    return sorted(
        f
        for f in a.keys() | b.keys()
        # Fields shared by both records (not copied by fold_twice) are the same without a look.
        if a.get(f, missing) is not b.get(f, missing) and not same(a.get(f, missing), b.get(f, missing))
    )
