"""Compare an export's records with the log's stream heads and produce the events for the difference.

Memory stays bounded whatever the export's size: records wait here as canonical bytes, a chunk at a time
(bounded in count and bytes), and are compared with the heads of their own streams only, fetched for the
chunk; the live streams an export no longer holds are found at the end by walking `streams` on the server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import msgspec

from events import EntityAdded, EntityChanged, EntityRemoved, diff, stream_id
from events.mids import KINDS, OUTCOMES
from store.log import Pending, StreamHead

MiB: Final = 1024 * 1024
CHUNK_RECORDS: Final = 2000
"""Records compared with their streams' heads per query."""
CHUNK_BYTES: Final = 8 * MiB
"""Canonical bytes held before a chunk is compared, whatever its count."""


def empty_counts() -> dict[str, dict[str, int]]:
    return {kind: dict.fromkeys(OUTCOMES, 0) for kind in KINDS}


class _Record(NamedTuple):
    kind: str
    key: str
    sid: str
    data: bytes
    digest: str


@dataclass
class Differ:
    """Feed it every record of an export; it gives the events that bring the log up to that export, in the
    order the records were read, then `removals` for the streams the export no longer holds.

    `fetch_heads` gives the heads of the streams asked for (those that exist); `fetch_records` the current
    records (JSON bytes) of live streams, for the patches of changed records.
    """

    fetch_heads: Callable[[list[str]], dict[str, StreamHead]]
    fetch_records: Callable[[list[str]], dict[str, bytes]]
    chunk_records: int = CHUNK_RECORDS
    chunk_bytes: int = CHUNK_BYTES
    counts: dict[str, dict[str, int]] = field(default_factory=empty_counts)
    _chunk: list[_Record] = field(default_factory=list)
    _chunk_size: int = 0

    def feed(self, kind: str, key: str, data: bytes) -> list[Pending]:
        """One source record as canonical bytes; returns the events ready so far (possibly none)."""
        digest = hashlib.sha256(data).hexdigest()  # content_hash, without encoding twice
        self._chunk.append(_Record(kind, key, stream_id(kind, key), data, digest))
        self._chunk_size += len(data)
        if len(self._chunk) >= self.chunk_records or self._chunk_size >= self.chunk_bytes:
            return self.flush()
        return []

    def flush(self) -> list[Pending]:
        """Events for the records fed since the last flush."""
        chunk, self._chunk, self._chunk_size = self._chunk, [], 0
        if not chunk:
            return []
        heads = self.fetch_heads([r.sid for r in chunk])
        changed = [r.sid for r in chunk if (h := heads.get(r.sid)) and not h.removed and h.hash != r.digest]
        previous = self.fetch_records(changed) if changed else {}
        out = []
        for r in chunk:
            head = heads.get(r.sid)
            counts = self.counts[r.kind]
            if head is None or head.removed:
                counts["added"] += 1
                expected = 0 if head is None else head.version
                # The record goes to the log as the canonical bytes it already is (store.log splices them).
                event = EntityAdded(kind=r.kind, key=r.key, record=msgspec.Raw(r.data), hash=r.digest)
                out.append(Pending(event, expected, r.data))
            elif head.hash == r.digest:
                counts["unchanged"] += 1
            else:
                counts["changed"] += 1
                old = msgspec.json.decode(previous[r.sid])
                ev = EntityChanged(
                    kind=r.kind,
                    key=r.key,
                    patch=diff(old, msgspec.json.decode(r.data)),
                    previous_hash=head.hash or "",
                    hash=r.digest,
                )
                out.append(Pending(ev, head.version, r.data))
        return out

    def removals(
        self, live: Iterable[StreamHead], seen: Callable[[str, str], bool], kinds: Sequence[str] = KINDS
    ) -> Iterator[Pending]:
        """Tombstones for every live stream of these kinds that the export did not hold (`seen`)."""
        wanted = set(kinds)
        for head in live:
            if head.removed or head.kind not in wanted or seen(head.kind, head.key):
                continue
            self.counts[head.kind]["removed"] += 1
            yield Pending(
                EntityRemoved(kind=head.kind, key=head.key, previous_hash=head.hash or ""),
                head.version,
                None,
            )
