"""The two real Mids releases: canonical form, hashes and patches hold on every record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from events import (
    EntityAdded,
    EntityChanged,
    Event,
    apply,
    canonical_bytes,
    content_hash,
    diff,
    fold,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
OLD, NEW = "mids-20.1224", "mids-21.0331"
# Measured here (DESIGN.md says "about 780"): powers whose patch touches /Effects.
POWERS_WITH_EFFECT_CHANGES = 780

pytestmark = pytest.mark.skipif(not (DATA / OLD).is_dir(), reason=f"no real data at {DATA}")


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8-sig"))


def _powers(release: str) -> dict[str, Any]:
    powers: dict[str, Any] = {}
    for path in sorted((DATA / release / "db" / "Player").glob("*.json")):
        for power in _read(path)["Powers"]:
            powers.setdefault(power["FullName"], power)
    return powers


def _all_records(release: str) -> list[Any]:
    root = DATA / release
    records: list[Any] = []
    for path in sorted((root / "db").rglob("*.json")):
        powerset = _read(path)
        records.extend(powerset.pop("Powers"))
        records.append(powerset)
    enh = _read(root / "EnhDB.json")
    records += enh["Enhancements"] + enh["EnhancementSets"] + _read(root / "I12.json")["Archetypes"]
    return records


@pytest.fixture(scope="module")
def powers() -> tuple[dict[str, Any], dict[str, Any]]:
    return _powers(OLD), _powers(NEW)


@pytest.mark.parametrize("release", [OLD, NEW])
def test_canonical_form_is_json_dumps_on_every_record(release: str) -> None:
    for record in _all_records(release):
        expected = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert canonical_bytes(record) == expected


def test_patches_reproduce_every_changed_power(powers: tuple[dict[str, Any], dict[str, Any]]) -> None:
    old, new = powers
    expected = _read(DATA / "expected.json")["diff_20.1224_to_21.0331"]["power"]
    changed = with_effects = unchanged = 0
    for key, before in old.items():
        if key not in new:
            continue
        after = new[key]
        patch = diff(before, after)
        assert canonical_bytes(apply(before, patch)) == canonical_bytes(after), key
        if not patch:
            assert content_hash(before) == content_hash(after), key
            unchanged += 1
            continue
        changed += 1
        if any(p == "/Effects" or p.startswith("/Effects/") for p in (op["path"] for op in patch)):
            with_effects += 1
    assert changed == expected["changed"] == 2889
    assert unchanged == expected["unchanged"]
    assert len(old.keys() - new.keys()) == expected["removed"]
    assert with_effects == POWERS_WITH_EFFECT_CHANGES


def test_fold_of_added_then_changed_gives_the_new_release(
    powers: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    old, new = powers
    key = "Blaster_Ranged.Fire_Blast.Flares"
    before, after = old[key], new[key]
    events: list[Event] = [
        EntityAdded(kind="power", key=key, record=before, hash=content_hash(before)),
        EntityChanged(
            kind="power",
            key=key,
            patch=diff(before, after),
            previous_hash=content_hash(before),
            hash=content_hash(after),
        ),
    ]
    assert canonical_bytes(fold(events)) == canonical_bytes(after)
    flares = _read(DATA / "expected.json")["releases"][NEW]["flares"]
    assert len(fold(events)["Effects"]) == flares["effects"]
