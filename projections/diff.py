"""What changed between the log after two imports: per kind added / changed / removed / unchanged, and
how often each top-level field differs among the changed entities."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

from events import (
    JSON,
    EntityAdded,
    EntityChanged,
    Event,
    apply,
    content_hash,
    event_type,
    fold,
    same,
    tokens,
)
from events.errors import FoldError, PatchError
from events.mids import KINDS, check_kind
from projections.history import ImportRef
from store import asof, imports
from store.imports import ImportRow


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


def diff_imports(
    conn: psycopg.Connection[Any],
    before_id: int,
    after_id: int,
    kind: str | None = None,
    key_like: str | None = None,
) -> ImportDiff:
    """Per kind, what was added / changed / removed / unchanged between the log after two imports, and
    how often each top-level field differs among the changed entities."""
    before, pos_a = imports.state(conn, before_id)
    after, pos_b = imports.state(conn, after_id)
    kinds: dict[str, KindDiff] = {k: KindDiff() for k in ((check_kind(kind),) if kind else KINDS)}
    # Both present at different versions: same record only if the hashes agree (a change may be undone).
    suspects: list[tuple[str, int, int]] = []
    for sid, a, b in asof.streams_at(conn, pos_a, pos_b, kind, key_like):
        k, _, key = sid.partition(":")
        d = kinds.setdefault(k, KindDiff())
        in_a, in_b = a is not None and a.present, b is not None and b.present
        if a is not None and b is not None and in_a and in_b:
            if a.version == b.version:
                d.unchanged += 1
            else:
                suspects.append((sid, a.position, b.position))
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
    hashes = asof.hashes_at(conn, [p for _, a, b in suspects for p in (a, b)])
    return {sid for sid, a, b in suspects if hashes[a] != hashes[b]}


def _field_changes(
    conn: psycopg.Connection[Any], stream_ids: list[str], pos_a: int, pos_b: int
) -> Iterator[tuple[str, list[str]]]:
    """For each stream, the top-level fields whose value differs between the two positions."""
    lo, hi = sorted((pos_a, pos_b))
    # One change between the two positions: its patch is the minimal diff of the two records
    # (events.patch.diff), so the fields its paths start with are exactly those that differ; no record
    # is read. Streams with more events between (a field may change back) are folded.
    folded = []
    for sid, t in asof.touched(conn, stream_ids, lo, hi).items():
        fields = _top_level(t.paths)
        if t.events != 1 or not t.only_changes or t.escaped or fields is None:
            folded.append(sid)
        else:
            yield sid, fields
    for sid, events in asof.stream_events(conn, folded, hi):
        older, newer = fold_twice(sid, events, lo, hi)
        yield (
            sid,
            top_level_differences(older, newer) if pos_a <= pos_b else top_level_differences(newer, older),
        )


def _top_level(paths: list[str]) -> list[str] | None:
    """The top-level fields these patch paths start with; None if one replaces the whole record or is not
    a JSON Pointer."""
    fields = set()
    for path in paths:
        try:
            first = tokens(path)[:1]
        except PatchError:
            return None
        if not first:
            return None
        fields.add(first[0])
    return sorted(fields)


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
    newer = dict(older)
    try:
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
                by_field.setdefault(tokens(path)[0], []).append(op)
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
