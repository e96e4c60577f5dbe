"""Compare an export's records with the log's stream heads and produce the events for the difference."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from events import EntityAdded, EntityChanged, EntityRemoved, canonical_bytes, diff, stream_id
from events.mids import KINDS, OUTCOMES
from store.log import Pending, StreamHead


def empty_counts() -> dict[str, dict[str, int]]:
    return {kind: dict.fromkeys(OUTCOMES, 0) for kind in KINDS}


class _Changed(NamedTuple):
    """A record whose hash differs from its stream's head: its event waits for the previous record."""

    kind: str
    key: str
    record: Any
    data: bytes
    digest: str
    head: StreamHead


@dataclass
class Differ:
    """Feed it every record of an export; it yields the events that bring the log up to that export.

    Changed records need their previous record, which lives in `streams`; they are collected and
    fetched in batches through `fetch_records` rather than one query each.
    """

    heads: dict[str, StreamHead]
    fetch_records: Callable[[list[str]], dict[str, bytes]]
    batch_size: int = 2000
    counts: dict[str, dict[str, int]] = field(default_factory=empty_counts)
    _seen: set[str] = field(default_factory=set)
    _changed: list[_Changed] = field(default_factory=list)

    def feed(self, kind: str, key: str, record: Any) -> list[Pending]:
        """One source record; returns the events ready so far (possibly none)."""
        sid = stream_id(kind, key)
        self._seen.add(sid)
        data = canonical_bytes(record)
        digest = hashlib.sha256(data).hexdigest()  # content_hash, without encoding twice
        head = self.heads.get(sid)
        if head is None or head.removed:
            self.counts[kind]["added"] += 1
            expected = 0 if head is None else head.version
            return [Pending(EntityAdded(kind=kind, key=key, record=record, hash=digest), expected, data)]
        if head.hash == digest:
            self.counts[kind]["unchanged"] += 1
            return []
        self.counts[kind]["changed"] += 1
        self._changed.append(_Changed(kind, key, record, data, digest, head))
        if len(self._changed) >= self.batch_size:
            return self.flush()
        return []

    def flush(self) -> list[Pending]:
        """Events for the changed records collected so far."""
        if not self._changed:
            return []
        previous = self.fetch_records([c.head.stream_id for c in self._changed])
        out = []
        for c in self._changed:
            old = msgspec.json.decode(previous[c.head.stream_id])
            ev = EntityChanged(
                kind=c.kind,
                key=c.key,
                patch=diff(old, c.record),
                previous_hash=c.head.hash or "",
                hash=c.digest,
            )
            out.append(Pending(ev, c.head.version, c.data))
        self._changed.clear()
        return out

    def removals(self, kinds: Iterable[str] = KINDS) -> list[Pending]:
        """Tombstones for every live stream of these kinds that the export no longer holds."""
        wanted = set(kinds)
        out = []
        for sid, head in self.heads.items():
            if head.removed or sid in self._seen or head.kind not in wanted:
                continue
            self.counts[head.kind]["removed"] += 1
            out.append(
                Pending(
                    EntityRemoved(kind=head.kind, key=head.key, previous_hash=head.hash or ""),
                    head.version,
                    None,
                )
            )
        return out
