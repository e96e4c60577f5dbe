"""Cut the small sample releases in samples/ from the two real Mids exports in ../shared/data.

Deterministic: the output depends only on the input files. Run from anywhere:

    python samples/cut.py [--data DIR]

What each sample release keeps (the same selection from both releases, in source order):

- I12.json: every top-level field; `Archetypes` cut to the 15 records whose ClassName is in
  ARCHETYPES (both `Class_Minion_Henchman` records among them); `Entities` (a lookup list, not an
  entity kind) cut to its first ENTITIES items.
- db/Player/: the POWERSET_FILES that exist in the release, copied byte for byte. One of them,
  Titan_Weapons_beta, exists only in 20.1224: it is the powerset (and its 3 powers) removed in 21.0331.
- EnhDB.json: the ENHANCEMENT_SETS and, from `Enhancements`, those sets' members plus GENERIC ones.
- PowerSets.json, PowerPools.json: lookup notes, not entities, copied byte for byte.

Files are written as the source writes them (2-space indent, UTF-8, no final newline). The counts
and the diff between the two samples go to samples/expected.json, for tests and the README.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
RELEASES = ("mids-20.1224", "mids-21.0331")

ARCHETYPES = {
    "Class_Blaster",
    "Class_Controller",
    "Class_Defender",
    "Class_Brute",
    "Class_Mastermind",
    "Class_Sentinel",
    "Class_Arachnos_Widow",
    "Class_Boss_Henchman",
    "Class_Minion_Henchman",
    "Class_Minion_Pets",
    "Class_Boss_Archvillain",
    "Class_Minion_Grunt",
    "Class_Minion_Monument",
    "Class_Signature_Pets",
}
ENTITIES = 10
POWERSET_FILES = (
    "db/Player/Class_Blaster_Blaster_Ranged.Fire_Blast.json",
    "db/Player/Class_Brute_Brute_Melee.Titan_Weapons_beta.json",
    "db/Player/Class_Defender_Boosts.Amp_Up_Defender.json",
    "db/Player/Class_Minion_Henchman_Mastermind_Pets.Alpha_Wolf_3.json",
    "db/Player/Class_Sentinel_Epic.Sentinel_Elec_Mastery.json",
    "db/Player/Class_Signature_Pets_Incarnate.Vitae.json",
)
NOTES = ("PowerSets.json", "PowerPools.json")
ENHANCEMENT_SETS = {"Entropic_Chaos", "Decimation", "Thunderstrike", "Devastation", "Positrons_Blast"}
GENERIC = {"Magic_Accuracy", "Magic_Damage", "Crafted_Damage"}

KINDS = ("archetype", "powerset", "power", "enhancement", "enhancement_set")


def load(path: Path) -> Any:
    """Parse a source JSON file (a BOM is allowed)."""
    return json.loads(path.read_bytes().decode("utf-8-sig"))


def dump(value: Any, path: Path) -> None:
    """Write JSON the way the Mids exports do."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False), encoding="utf-8")


def cut(source: Path, target: Path) -> None:
    """Write one sample release from one real release."""
    if target.exists():
        shutil.rmtree(target)
    (target / "db" / "Player").mkdir(parents=True)

    i12 = load(source / "I12.json")
    i12["Archetypes"] = [a for a in i12["Archetypes"] if a["ClassName"] in ARCHETYPES]
    i12["Entities"] = i12["Entities"][:ENTITIES]
    dump(i12, target / "I12.json")

    for rel in (*POWERSET_FILES, *NOTES):
        if (source / rel).exists():
            shutil.copyfile(source / rel, target / rel)

    enh = load(source / "EnhDB.json")
    enh["Enhancements"] = [
        e
        for e in enh["Enhancements"]
        if e["UIDSet"] in ENHANCEMENT_SETS or (not e["UIDSet"] and e["UID"] in GENERIC)
    ]
    enh["EnhancementSets"] = [s for s in enh["EnhancementSets"] if s["Uid"] in ENHANCEMENT_SETS]
    dump(enh, target / "EnhDB.json")


def records(release: Path) -> tuple[dict[str, dict[str, Any]], dict[str, int], int]:
    """Per kind, key -> record (the first of a key wins); duplicate counts; effects inside powers."""
    found: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
    duplicates = dict.fromkeys(KINDS, 0)
    effects = 0

    def add(kind: str, key: str, record: Any) -> None:
        if key in found[kind]:
            duplicates[kind] += 1
        else:
            found[kind][key] = record

    for a in load(release / "I12.json")["Archetypes"]:
        add("archetype", a["ClassName"], a)
    for path in sorted((release / "db").rglob("*.json")):
        powerset = load(path)
        powers = powerset.pop("Powers")
        add("powerset", powerset["FullName"], powerset)
        for p in powers:
            add("power", p["FullName"], p)
            effects += len(p.get("Effects", []))
    enh = load(release / "EnhDB.json")
    for e in enh["Enhancements"]:
        add("enhancement", e["UID"], e)
    for s in enh["EnhancementSets"]:
        add("enhancement_set", s["Uid"], s)
    return found, duplicates, effects


def canonical(record: Any) -> str:
    """Keys sorted, no whitespace: equal strings mean equal records."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def summary(samples: Path) -> dict[str, Any]:
    """Counts per release and the diff from the first release to the second."""
    out: dict[str, Any] = {"releases": {}, "diff": {}}
    loaded = {}
    for name in RELEASES:
        found, duplicates, effects = records(samples / name)
        loaded[name] = found
        out["releases"][name] = {
            "unique_keys": {kind: len(found[kind]) for kind in KINDS},
            "duplicate_records": duplicates,
            "effects": effects,
            "bytes": sum(p.stat().st_size for p in (samples / name).rglob("*") if p.is_file()),
        }
    old, new = (loaded[name] for name in RELEASES)
    for kind in KINDS:
        a, b = old[kind], new[kind]
        both = a.keys() & b.keys()
        changed = sum(1 for key in both if canonical(a[key]) != canonical(b[key]))
        out["diff"][kind] = {
            "added": len(b.keys() - a.keys()),
            "removed": len(a.keys() - b.keys()),
            "changed": changed,
            "unchanged": len(both) - changed,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding the real releases")
    args = parser.parse_args()
    for name in RELEASES:
        cut(args.data / name, HERE / name)
    result = summary(HERE)
    (HERE / "expected.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
