"""An export's files and the digests of those read, in a few dozen bytes a file with its name.

A dict of path -> size and another of path -> 32-byte digest cost some 145 bytes a file beside the path
string (about 110 bytes more): 10 MB at the 40,000 files of a large export, kept to the end of the import
for its content hash. Here the paths are one string in sorted order with the offset where each ends; sizes
and digests are packed arrays indexed like them. A path is found by its hash, in a sorted array of the
paths' hashes (12 bytes a file): a bisection over the names themselves made a dozen strings in Python for
each lookup, and an import looks every file up several times.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import accumulate, pairwise
from typing import Final, overload

DIGEST_SIZE: Final = 32


class FileListing(Mapping[str, int]):
    """Every regular file's relative path and declared size, iterated in sorted path order."""

    def __init__(self, files: Iterable[tuple[str, int]]) -> None:
        names: list[str] = []
        sizes = array("q")
        for rel, size in files:
            names.append(rel)
            sizes.append(size)
        self._build(names, sizes)

    @classmethod
    def of(cls, names: list[str], sizes: array[int]) -> FileListing:
        """The listing of `names[i]` with `sizes[i]`, in any order. `names` is emptied: the listing keeps its
        own copy of them, and the strings go as soon as they are copied."""
        listing = cls.__new__(cls)
        listing._build(names, sizes)
        return listing

    def _build(self, names: list[str], sizes: array[int]) -> None:
        # Positions sorted, not (name, size) pairs: a tuple and an int a file are 90 bytes, and at 40,000
        # files what is made and dropped here stays in the process (about 10 MB of its peak at 40,804).
        order = sorted(range(len(names)), key=names.__getitem__)
        for before, after in pairwise(order):
            if names[before] == names[after]:
                raise ValueError(f"{names[before]!r} is listed twice")
        self._text = "".join([names[i] for i in order])
        # From lists, not generators: an array grown item by item keeps an eighth more than it holds.
        self._ends = array("Q", list(accumulate([len(names[i]) for i in order])))
        self._sizes = array("q", [sizes[i] for i in order])
        hashes = array("q", [hash(names[i]) for i in order])
        names.clear()
        self._names = _Names(self)
        by_hash = sorted(range(len(hashes)), key=hashes.__getitem__)
        self._hashes = array("q", [hashes[i] for i in by_hash])
        self._at = array("I", by_hash)

    def index(self, rel: str) -> int:
        """The position of `rel` in sorted order; KeyError when it is not listed."""
        h = hash(rel)
        j = bisect_left(self._hashes, h)  # in C: the array is indexed without a Python call
        while j < len(self._hashes) and self._hashes[j] == h:
            i = self._at[j]
            if self.name(i) == rel:
                return i
            j += 1
        raise KeyError(rel)

    def name(self, index: int) -> str:
        """The path at a position in sorted order."""
        return self._text[self._ends[index - 1] if index else 0 : self._ends[index]]

    def names(self, indexes: Iterable[int]) -> Sequence[str]:
        """The paths at these positions, in this order, named as they are asked for."""
        return _Names(self, array("L", indexes))

    def __getitem__(self, rel: str) -> int:
        return self._sizes[self.index(rel)]

    def __contains__(self, rel: object) -> bool:
        if not isinstance(rel, str):
            return False
        try:
            self.index(rel)
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._ends)


class _Names(Sequence[str]):
    """Paths of a listing, all in sorted order or the ones at chosen positions, each made when asked for."""

    def __init__(self, listing: FileListing, indexes: array[int] | None = None) -> None:
        self._listing = listing
        self._indexes = indexes

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        if isinstance(i, slice):  # positions, not names: a slice of tens of thousands is made cheaply
            chosen = range(len(self))[i] if self._indexes is None else self._indexes[i]
            return _Names(self._listing, array("L", chosen))
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._listing.name(i if self._indexes is None else self._indexes[i])

    def __len__(self) -> int:
        return len(self._listing) if self._indexes is None else len(self._indexes)


class Digests(Mapping[str, bytes]):
    """The 32-byte digest of each listed file read so far, iterated in sorted path order."""

    def __init__(self, listing: FileListing) -> None:
        self._listing = listing
        self._digests = bytearray(DIGEST_SIZE * len(listing))
        self._done = bytearray(len(listing))
        self._count = 0

    def add(self, rel: str, digest: bytes) -> bool:
        """Keep the digest of a listed file unless one is kept already; whether it was added."""
        if len(digest) != DIGEST_SIZE:
            raise ValueError(f"a digest is {DIGEST_SIZE} bytes, not {len(digest)}")
        i = self._listing.index(rel)
        if self._done[i]:
            return False
        self._digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE] = digest
        self._done[i] = 1
        self._count += 1
        return True

    def __getitem__(self, rel: str) -> bytes:
        i = self._listing.index(rel)
        if not self._done[i]:
            raise KeyError(rel)
        return bytes(self._digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE])

    def __contains__(self, rel: object) -> bool:
        if not isinstance(rel, str):
            return False
        try:
            return bool(self._done[self._listing.index(rel)])
        except KeyError:
            return False

    def __iter__(self) -> Iterator[str]:
        return (self._listing.name(i) for i, done in enumerate(self._done) if done)

    def __len__(self) -> int:
        return self._count
