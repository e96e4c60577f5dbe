"""An export's files and the digests of those read, in a few dozen bytes a file beside each name.

A dict of path -> size and another of path -> 32-byte digest cost some 130 bytes a file besides the path
itself (dict slots, an int, a bytes object): 5 MB at the 40,000 files of a large export, kept to the end of
the import for its content hash. Here the paths are one sorted tuple, found again by bisection; sizes and
digests are packed arrays indexed like it.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

DIGEST_SIZE: Final = 32


class FileListing(Mapping[str, int]):
    """Every regular file's relative path and declared size, iterated in sorted path order."""

    def __init__(self, files: Iterable[tuple[str, int]]) -> None:
        pairs = sorted(files)
        self._names = tuple(rel for rel, _ in pairs)
        self._sizes = array("q", (size for _, size in pairs))
        for before, after in zip(self._names, self._names[1:], strict=False):
            if before == after:
                raise ValueError(f"{before!r} is listed twice")

    def index(self, rel: str) -> int:
        """The position of `rel` in sorted order; KeyError when it is not listed."""
        i = bisect_left(self._names, rel)
        if i == len(self._names) or self._names[i] != rel:
            raise KeyError(rel)
        return i

    def name(self, index: int) -> str:
        return self._names[index]

    def __getitem__(self, rel: str) -> int:
        return self._sizes[self.index(rel)]

    def __contains__(self, rel: object) -> bool:
        if not isinstance(rel, str):
            return False
        i = bisect_left(self._names, rel)
        return i < len(self._names) and self._names[i] == rel

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


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
        if not isinstance(rel, str) or rel not in self._listing:
            return False
        return bool(self._done[self._listing.index(rel)])

    def __iter__(self) -> Iterator[str]:
        return (self._listing.name(i) for i, done in enumerate(self._done) if done)

    def __len__(self) -> int:
        return self._count
