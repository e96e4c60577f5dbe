"""The natural keys an import has read, in 21 to 43 bytes each whatever their length.

A dict of key -> location costs some 270 bytes per key (the key string, a tuple, its ints, the slot),
about 100 MB for the 365K powers of a large export; a dict of 16-byte digests still 138 bytes (50 MB).
Here a key is its 96-bit BLAKE2b digest in an open-addressing table of plain words, with a 32-bit number
beside it (the reader's for the place the key was first read): 16 bytes a slot, at most 3/4 full (the
tables are 16, see KeySet). Two of a million keys share a digest with a probability of about 6e-18
(n**2 / 2**97); 128 bits would cost 4 bytes more a slot, 2 MB at the 365K powers of a large export.
"""

from __future__ import annotations

import hashlib
from array import array
from typing import Final

_EMPTY: Final = 0
_SHARDS: Final = 16
_SHARD_SHIFT: Final = 64 - (_SHARDS.bit_length() - 1)  # the high word's top bits pick the table
_MIN_SLOTS: Final = 64  # a table's first size: 1,024 slots in all


def _table(slots: int) -> tuple[array[int], array[int], array[int]]:
    """Empty slots: high words (64 bits), low words (32 bits), values (32 bits). Made by repeating one zero,
    not from a zeroed `bytes` of the same size, which would be held beside each array while it is copied in."""
    return array("Q", [_EMPTY]) * slots, array("I", [0]) * slots, array("I", [0]) * slots


def key_digest(key: str) -> bytes:
    """The 12 bytes that stand for a natural key."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=12).digest()


class _Table:
    """One open-addressing table of (high word, low word, value), linear probing, at most 3/4 full."""

    def __init__(self, expected: int) -> None:
        self._slots = _MIN_SLOTS
        while expected * 4 > self._slots * 3:
            self._slots *= 2
        self._hi, self._lo, self._value = _table(self._slots)
        self._count = 0

    def _find(self, hi: int, lo: int) -> int:
        """The slot holding (hi, lo), or the empty slot where it would go (linear probing)."""
        mask = self._slots - 1
        slot = lo & mask
        table_hi, table_lo = self._hi, self._lo
        while True:
            h = table_hi[slot]
            if h == _EMPTY or (h == hi and table_lo[slot] == lo):
                return slot
            slot = (slot + 1) & mask

    def get(self, hi: int, lo: int) -> int | None:
        slot = self._find(hi, lo)
        return None if self._hi[slot] == _EMPTY else self._value[slot]

    def setdefault(self, hi: int, lo: int, value: int) -> int | None:
        """Keep `value` for (hi, lo) unless it is there already; the value it had, or None when added."""
        slot = self._find(hi, lo)
        if self._hi[slot] != _EMPTY:
            return self._value[slot]
        self._value[slot] = value  # first: a value out of range raises before the key is in
        self._hi[slot], self._lo[slot] = hi, lo
        self._count += 1
        if self._count * 4 > self._slots * 3:  # at most 3/4 full: probes stay a few slots long
            self._grow()
        return None

    def _grow(self) -> None:
        old = zip(self._hi, self._lo, self._value, strict=True)
        self._slots *= 2
        self._hi, self._lo, self._value = _table(self._slots)
        for hi, lo, value in old:
            if hi != _EMPTY:
                slot = self._find(hi, lo)
                self._hi[slot], self._lo[slot], self._value[slot] = hi, lo, value


class KeySet:
    """Keys added once each, with a number from 0 to 2**32 - 1 kept beside each (OverflowError beyond).

    The keys are spread over _SHARDS tables by their digest's top bits, each growing on its own: a table
    that doubles holds its old and its new arrays at once, and that is a sixteenth of the whole, not all of it
    (6 MB at once for the 365K powers of a large export, when it was one table)."""

    def __init__(self, expected: int = 0) -> None:
        """A set sized for about `expected` keys (more make it grow)."""
        # A little over an even share: the shares differ by a few per cent.
        share = expected // _SHARDS + expected // (_SHARDS * 16)
        self._tables = [_Table(share) for _ in range(_SHARDS)]
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def slots(self) -> int:
        """Slots of all the tables (16 bytes each)."""
        return sum(t._slots for t in self._tables)

    @staticmethod
    def _words(key: str) -> tuple[int, int]:
        digest = key_digest(key)
        # The high word is never 0, so 0 marks an empty slot.
        return int.from_bytes(digest[:8], "little") | 1, int.from_bytes(digest[8:], "little")

    def get(self, key: str) -> int | None:
        """The value kept for `key`, or None when it was never added."""
        hi, lo = self._words(key)
        return self._tables[hi >> _SHARD_SHIFT].get(hi, lo)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def add(self, key: str, value: int) -> None:
        """Keep `value` for a key not added before (a key already there keeps its first value)."""
        self.setdefault(key, value)

    def setdefault(self, key: str, value: int) -> int | None:
        """Keep `value` for a key not added before; the value kept for it before, or None when it was
        added now (the key is digested once for both)."""
        hi, lo = self._words(key)
        first = self._tables[hi >> _SHARD_SHIFT].setdefault(hi, lo, value)
        if first is None:
            self._count += 1
        return first
