"""The reader's numbers for places in an export: 4 bytes a key, and back to the file and item."""

from __future__ import annotations

import pytest

from importer import places, read_export
from importer.errors import ImportInputError
from importer.places import Places
from tests.importer.helpers import SAMPLES


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


def test_an_export_past_the_numbers_is_refused_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(places, "LIMIT", 20)
    with read_export(SAMPLES / "mids-21.0331") as reader, pytest.raises(ImportInputError) as raised:
        for _ in reader:
            pass
    assert "an export of fewer records (more than 19 places in one export)" in str(raised.value)
    assert raised.value.file == str(SAMPLES / "mids-21.0331")
