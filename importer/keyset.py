"""The natural keys an import has read, in 32 to 64 bytes each whatever their length.

A dict of key -> location costs some 270 bytes per key (the key string, a tuple, its ints, the slot),
about 100 MB for the 365K powers of a large export; a dict of 16-byte digests still 138 bytes (50 MB).
Here a key is its 128-bit BLAKE2b digest (never colliding in practice: 2**-128 per pair) in an
open-addressing table of plain 64-bit words, with the place it was first read beside it: 24 bytes a slot,
at most 3/4 full.
"""

from __future__ import annotations

import hashlib
from array import array
from typing import Final

_EMPTY: Final = 0
_MIN_SLOTS: Final = 1024


def _table(slots: int) -> tuple[array[int], array[int], array[int]]:
    """Empty slots: high words, low words, values. Made by repeating one zero, not from a zeroed `bytes` of
    the same size, which would be held beside each array while it is copied in."""
    return array("Q", [_EMPTY]) * slots, array("Q", [0]) * slots, array("q", [0]) * slots


def key_digest(key: str) -> bytes:
    """The 16 bytes that stand for a natural key."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class KeySet:
    """Keys added once each, with an int (where the key was first read) kept beside each."""

    def __init__(self, expected: int = 0) -> None:
        """A set sized for `expected` keys (more make it grow): growing holds the old table and the new one
        at once, so a good guess lowers the peak as well as the time."""
        self._slots = _MIN_SLOTS
        while expected * 4 > self._slots * 3:
            self._slots *= 2
        self._hi, self._lo, self._value = _table(self._slots)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @staticmethod
    def _words(key: str) -> tuple[int, int]:
        digest = key_digest(key)
        # The high word is never 0, so 0 marks an empty slot.
        return int.from_bytes(digest[:8], "little") | 1, int.from_bytes(digest[8:], "little")

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

    def get(self, key: str) -> int | None:
        """The value kept for `key`, or None when it was never added."""
        hi, lo = self._words(key)
        slot = self._find(hi, lo)
        return None if self._hi[slot] == _EMPTY else self._value[slot]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def add(self, key: str, value: int) -> None:
        """Keep `value` for a key not added before (a key already there keeps its first value)."""
        hi, lo = self._words(key)
        slot = self._find(hi, lo)
        if self._hi[slot] != _EMPTY:
            return
        self._hi[slot], self._lo[slot], self._value[slot] = hi, lo, value
        self._count += 1
        if self._count * 4 > self._slots * 3:  # at most 3/4 full: probes stay a few slots long
            self._grow()

    def _grow(self) -> None:
        old = zip(self._hi, self._lo, self._value, strict=True)
        self._slots *= 2
        self._hi, self._lo, self._value = _table(self._slots)
        for hi, lo, value in old:
            if hi != _EMPTY:
                slot = self._find(hi, lo)
                self._hi[slot], self._lo[slot], self._value[slot] = hi, lo, value
