"""The reader's numbers for places in an export: 4 bytes a key, and back to the file and item."""

from __future__ import annotations

import pytest

from importer import places
from importer.places import Places


def test_numbers_go_back_to_their_file_and_item() -> None:
    p = Places()
    asked = [(0, 0), (0, 1), (0, 42), (1, -1), (1, 0), (1, 7), (2, -1), (5, 3), (5, 0), (1, 2)]
    numbers = [p.number(file, index) for file, index in asked]
    assert len(set(numbers)) == len(numbers)  # a file read again later starts a run of its own
    assert [p.place(n) for n in numbers] == asked
    assert numbers[:3] == [1, 2, 43] and numbers[3] == 44  # the next file starts where the last ended
    with pytest.raises(KeyError):
        p.place(numbers[-1] + 100)


def test_a_number_at_32_bits_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(places, "LIMIT", 100)
    p = Places()
    assert p.number(0, 98) == 99
    with pytest.raises(OverflowError, match="more than 99 places in one export"):
        p.number(1, 0)
