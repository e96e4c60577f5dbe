"""The reader's record of keys seen: a dict's answers in a few dozen bytes a key."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from importer.keyset import KeySet, _Table


def test_answers_as_a_dict_does_through_growth() -> None:
    rng = random.Random(15)
    keys = [f"Class_Blaster.Fire_Blast_s{rng.randrange(15_000):05d}.P{i % 7}" for i in range(20_000)]
    seen = KeySet()
    reference: dict[str, int] = {}
    for i, key in enumerate(keys):
        assert seen.get(key) == reference.get(key)
        seen.add(key, i)
        reference.setdefault(key, i)  # a key already there keeps its first value
    assert len(seen) == len(reference)
    assert all(seen.get(k) == v for k, v in reference.items())
    assert seen.get("not a key") is None and "not a key" not in seen and keys[0] in seen
    assert "" not in seen
    seen.add("", 2**32 - 1)
    assert seen.get("") == 2**32 - 1


def test_a_key_costs_under_32_bytes_when_the_table_is_not_just_grown() -> None:
    tracemalloc.start()
    try:
        seen = KeySet()
        for i in range(150_000):
            seen.add(f"Class_Blaster_Blaster_Ranged.Fire_Blast_s{i:03d}.Flares", i)
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(seen) == 150_000
    # A dict of 16-byte digests: 138; 128-bit slots with 8-byte values: 42; 96 bits and 8-byte values: 35.
    assert size / 150_000 < 32, size / 150_000


def test_a_set_sized_for_its_keys_does_not_grow_and_answers_the_same() -> None:
    keys = [f"Class_Blaster.Fire_Blast_s{i:05d}.Flares" for i in range(10_000)]
    sized = KeySet(expected=len(keys))
    slots = sized.slots
    assert slots == 16 * 1024  # each of the 16 tables sized for a little over 10,000 / 16 keys
    for i, key in enumerate(keys):
        sized.add(key, i)
    assert sized.slots == slots and len(sized) == len(keys)
    more = []
    while sized.slots == slots:  # past its size it grows, a table at a time
        more.append(f"more {len(more)}")
        sized.add(more[-1], 7)
    assert slots < sized.slots <= slots + 2048
    assert all(sized.get(k) == i for i, k in enumerate(keys)) and all(sized.get(k) == 7 for k in more)
    assert KeySet(expected=0).slots == KeySet().slots == 1024


def test_growing_holds_only_one_table_and_no_zeroed_bytes_beside_it() -> None:
    table = _Table(expected=768)
    for i in range(768):
        table.setdefault(i << 8 | 1, i, i)
    tracemalloc.start()
    try:
        table.setdefault(1 << 40 | 1, 5, 1)  # the key that makes it grow
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The new arrays (2,048 slots of 16 bytes) and the rehash's small objects; a zeroed `bytes` per array
    # (32 KB in all) on top of it would pass 64 KB.
    assert table._slots == 2048 and peak < 2048 * 16 + 12_000, peak
    assert all(table.get(i << 8 | 1, i) == i for i in range(768)) and table.get(1 << 40 | 1, 5) == 1


def test_a_set_grows_a_sixteenth_at_a_time() -> None:
    tracemalloc.start()
    try:
        seen = KeySet()
        for i in range(260_000):
            seen.add(f"k{i}", i)
        size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 16 tables of 32,768 slots (8.4 MB). Each doubled on its own, holding its old and new arrays at once
    # (about 0.8 MB over the final size); one table of the whole would have held 4.2 MB more at its last
    # doubling.
    assert seen.slots == 16 * 32_768 and size > 8_300_000 and peak - size < 1_400_000, (size, peak)


def test_setdefault_keeps_the_first_value_and_says_it() -> None:
    keys = KeySet()
    assert keys.setdefault("Blaster_Ranged.Fire_Blast", 7) is None
    assert keys.setdefault("Blaster_Ranged.Fire_Blast", 9) == 7
    assert keys.get("Blaster_Ranged.Fire_Blast") == 7 and len(keys) == 1


def test_a_number_past_32_bits_is_refused_and_the_key_is_not_kept() -> None:
    keys = KeySet()
    with pytest.raises(OverflowError):
        keys.add("Blaster_Ranged.Fire_Blast", 2**32)
    assert "Blaster_Ranged.Fire_Blast" not in keys and len(keys) == 0
    keys.add("Blaster_Ranged.Fire_Blast", 3)
    assert keys.get("Blaster_Ranged.Fire_Blast") == 3
