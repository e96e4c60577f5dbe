"""The reader's record of keys seen: a dict's answers in a few dozen bytes a key."""

from __future__ import annotations

import random
import tracemalloc

from importer.keyset import KeySet


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
    seen.add("", -5)
    assert seen.get("") == -5


def test_a_key_costs_under_48_bytes_when_the_table_is_not_just_grown() -> None:
    tracemalloc.start()
    try:
        seen = KeySet()
        for i in range(150_000):
            seen.add(f"Class_Blaster_Blaster_Ranged.Fire_Blast_s{i:03d}.Flares", i << 32 | 1)
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(seen) == 150_000
    assert size / 150_000 < 48, size / 150_000  # a dict of 16-byte digests: 138


def test_a_set_sized_for_its_keys_never_grows_and_answers_the_same() -> None:
    keys = [f"Class_Blaster.Fire_Blast_s{i:05d}.Flares" for i in range(10_000)]
    sized = KeySet(expected=len(keys))
    slots = sized._slots
    assert slots == 16_384  # the smallest power of two at most 3/4 full with 10,000 keys
    for i, key in enumerate(keys):
        sized.add(key, i)
    assert sized._slots == slots and len(sized) == len(keys)
    assert all(sized.get(k) == i for i, k in enumerate(keys))
    more = [f"more {i}" for i in range(slots * 3 // 4 - len(keys) + 1)]
    for key in more:  # past 3/4 full it grows as an unsized set does
        sized.add(key, -1)
    assert sized._slots == 2 * slots and all(sized.get(k) == -1 for k in more)
    assert all(sized.get(k) == i for i, k in enumerate(keys))
    assert KeySet(expected=0)._slots == KeySet()._slots == 1024


def test_growing_holds_no_zeroed_bytes_beside_the_new_table() -> None:
    seen = KeySet()
    for i in range(int(1024 * 0.75)):
        seen.add(f"k{i}", i)
    tracemalloc.start()
    try:
        seen.add("the key that makes it grow", 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The new table (2,048 slots of 24 bytes) and the rehash's small objects; a zeroed 16 KB `bytes` per
    # array on top of it would pass 64 KB.
    assert seen._slots == 2048 and peak < 2048 * 24 + 12_000, peak
