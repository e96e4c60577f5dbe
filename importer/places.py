"""Where in an export a record was read (file number, item index), as one number below 2**32.

The key set keeps a 4-byte number beside each key (importer/keyset.py): the place a key was first read, for
the message about a duplicate. Numbers go up through an import: each file's run starts where the last
file's ended, so a number goes back to its file by a bisection over the runs' starts (8 bytes a file).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from typing import Final

LIMIT: Final = 2**32


class Places:
    """Numbers for (file number, index) places; index -1 stands for the file itself."""

    def __init__(self) -> None:
        self._starts = array("I")  # each run's first number
        self._files = array("I")  # each run's file
        self._next = 0

    def number(self, file: int, index: int) -> int:
        """The number of this place: the same place gives the same number within a run of its file."""
        new_run = not self._files or self._files[-1] != file
        start: int = self._next if new_run else self._starts[-1]
        n = start + index + 1
        if n >= LIMIT:
            raise OverflowError(f"more than {LIMIT - 1:,} places in one export")
        if new_run:
            self._starts.append(start)
            self._files.append(file)
        self._next = max(self._next, n + 1)
        return n

    def place(self, n: int) -> tuple[int, int]:
        """The (file number, index) a number was given for."""
        run = bisect_right(self._starts, n) - 1
        if run < 0 or n >= self._next:
            raise KeyError(n)
        return self._files[run], n - self._starts[run] - 1
