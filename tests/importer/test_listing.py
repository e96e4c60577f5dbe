"""An export's listing and digests: a dict's answers, in sorted order, in a few dozen bytes a file."""

from __future__ import annotations

import hashlib
import random
import tracemalloc
from pathlib import Path

import pytest

from importer.archive import DirectoryExport
from importer.limits import ReadLimits
from importer.listing import Digests, FileListing


def _names(count: int) -> list[str]:
    return [f"db/Powersets_Player/Class_Blaster_s{i:05d}.json" for i in range(count)]


def test_a_listing_answers_as_a_dict_in_sorted_order() -> None:
    rng = random.Random(15)
    files = {name: rng.randrange(1 << 40) for name in [*_names(500), "I12.json", "EnhDB.json", "db/x/é.json"]}
    shuffled = list(files.items())
    rng.shuffle(shuffled)
    listing = FileListing(shuffled)
    assert list(listing) == sorted(files) and len(listing) == len(files)
    assert all(listing[name] == size for name, size in files.items())
    assert dict(listing) == files
    assert "db/" not in listing and "I12.jso" not in listing and 5 not in listing and "" not in listing
    assert "" not in FileListing([("a", 1)])  # before any lookup was kept
    with pytest.raises(KeyError):
        listing["db/Powersets_Player/Class_Blaster_s99999.json"]
    with pytest.raises(ValueError, match=r"'I12\.json' is listed twice"):
        FileListing([("I12.json", 1), ("EnhDB.json", 2), ("I12.json", 3)])


def test_digests_keep_the_first_of_each_file_in_sorted_order() -> None:
    listing = FileListing([("b", 1), ("a", 2), ("c", 3)])
    digests = Digests(listing)
    first, second = hashlib.sha256(b"1").digest(), hashlib.sha256(b"2").digest()
    assert "c" not in digests and len(digests) == 0
    assert digests.add("c", first) and digests.add("a", second)
    assert not digests.add("c", second)  # a second read of a file does not replace its digest
    assert list(digests) == ["a", "c"] and dict(digests) == {"a": second, "c": first}
    assert "b" not in digests and "z" not in digests
    with pytest.raises(KeyError):
        digests["b"]
    with pytest.raises(KeyError):
        digests.add("z", first)  # only listed files have digests
    with pytest.raises(ValueError, match="32 bytes, not 16"):
        digests.add("b", first[:16])


def test_chosen_names_are_made_when_asked_for() -> None:
    listing = FileListing([("db/b.json", 1), ("I12.json", 2), ("db/a.txt", 3), ("db/a.json", 4)])
    assert list(listing) == ["I12.json", "db/a.json", "db/a.txt", "db/b.json"]
    chosen = listing.names([0, 3, 1])
    assert list(chosen) == ["I12.json", "db/b.json", "db/a.json"] and len(chosen) == 3
    assert chosen[-1] == "db/a.json" and list(chosen[1:]) == ["db/b.json", "db/a.json"]
    with pytest.raises(IndexError):
        chosen[3]
    assert listing.index("db/a.txt") == 2 and listing.name(2) == "db/a.txt"


def test_a_file_costs_under_112_bytes_with_its_name() -> None:
    names = _names(40_000)
    tracemalloc.start()
    try:
        listing = FileListing((name, 12_345_678 + i) for i, name in enumerate(names))
        digests = Digests(listing)
        for name in names:
            digests.add(name, hashlib.sha256(name.encode()).digest())
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The name's 45 characters and where it ends, a size, a digest and its flag, the name's hash and its
    # position: 106 bytes. Two dicts (path -> size, path -> 32-byte digest), with an int and a bytes object
    # a file, cost 145 beside the path strings (94 bytes each).
    assert size / len(names) < 112, size / len(names)
    assert listing.name(39_999) == names[-1] and listing.index(names[20_000]) == 20_000


def test_a_slice_of_names_is_names_made_when_asked_for() -> None:
    listing = FileListing([("b.json", 2), ("a.json", 1), ("c.json", 3), ("d.json", 4)])
    chosen = listing.names([3, 0, 2])
    tail = chosen[1:]
    assert list(tail) == ["a.json", "c.json"] and len(tail) == 2 and tail[-1] == "c.json"
    assert list(listing.names(range(4))[::2]) == ["a.json", "c.json"]
    assert type(tail) is type(chosen)  # positions kept, no list of names


def test_listing_a_directory_holds_under_320_bytes_a_file_at_its_peak(tmp_path: Path) -> None:
    # What the scan makes and drops stays in the process as freed memory it does not give back: os.walk's
    # lists, a relpath and a (name, size) tuple a file took this peak to 454 bytes a file (22.6 MB at the
    # 40,804 files of a scale 120 export, 10 MB of it still held after the listing was made).
    folder = tmp_path / "db" / "Powersets_Player"
    folder.mkdir(parents=True)
    for name in _names(20_000):
        (tmp_path / name).touch()
    (tmp_path / "I12.json").write_bytes(b"{}")
    tracemalloc.start()
    try:
        export = DirectoryExport(tmp_path, "export", ReadLimits())
        size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 44-character names: the listing keeps under 90 bytes a file.
    assert size / 20_001 < 90 and peak / 20_001 < 320, (size / 20_001, peak / 20_001)
    assert len(export.files) == 20_001 and export.files.name(0) == "I12.json"
    assert export.files["I12.json"] == 2 and export.dirs == {"db", "db/Powersets_Player"}
