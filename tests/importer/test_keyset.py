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
