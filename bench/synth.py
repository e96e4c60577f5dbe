"""Scale a real Mids export by a factor N, and derive further releases with seeded changes.

    .venv/bin/python bench/synth.py --scale 10 --releases 1 --seed 1 --out /tmp/synth-10

Writes `OUT/r00` (the scaled base release), `OUT/r01` … `OUT/rK` (each derived from the one before) in the
export's own layout (I12.json, EnhDB.json, PowerSets.json, PowerPools.json, db/<dir>/<file>.json), and
`OUT/manifest.json`: per release, the keys changed / added / removed per kind, what was changed in each
changed power, the importer counts to expect per kind, and the release's content hash (the importer's own
`content_hash` formula, so a test can compare it with `imports.content_hash`).

Scaling: copy 0 of every powerset file is the real file, byte for byte; copy c >= 1 renames the powerset
`X` to `X_s{c:03d}` and each of its powers `X.Y` to `X_s{c:03d}.Y` (FullName, FullSetName, and the power
names inside its effects), in a file `<name>_s{c:03d}.json` beside the real one. Real sizes, real effects.
Archetypes (I12.json, with its duplicated Class_Minion_Henchman), enhancements and sets (EnhDB.json) and
the lookup notes are kept as they are, not scaled.

Each derived release changes, by default, 5 % of the previous release's powers (one to three fields each,
`Effects` in about half of them: a Scale or Mag tweaked, an effect duplicated or dropped), adds 0.5 %
(a copy of an existing power under a new key, placed after it) and removes 0.5 %; exact counts, rounded,
at least one each. Powersets, archetypes and enhancements do not change. Files no power of which changes
are hard links to the previous release's files (a copy where links are refused).

Bounded memory: one powerset file is held at a time; what is kept across files is a count and a digest
per file, and the manifest's key lists. Deterministic: the same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ARCHETYPES_FILE = "I12.json"
ENHANCEMENTS_FILE = "EnhDB.json"
NOTE_FILES = ("PowerSets.json", "PowerPools.json")
POWERSETS_DIR = "db"
BOM = b"\xef\xbb\xbf"
KINDS = ("archetype", "powerset", "power", "enhancement", "enhancement_set")
MANIFEST = "manifest.json"
FORMAT = 1  # bump when the output for the same arguments changes

# Numeric fields a release may retune (all present on real powers).
SCALARS = ("RechargeTime", "EndCost", "Accuracy", "CastTime", "Range", "BaseRechargeTime", "ToggleCost")
TEXTS = ("DescShort", "DescLong")

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def release_name(number: int) -> str:
    return f"r{number:02d}"


def copy_suffix(copy_number: int) -> str:
    return f"_s{copy_number:03d}"


@dataclass(frozen=True)
class SourceSet:
    """One real powerset file: where it is, its powerset's FullName, and how many powers it holds."""

    rel: str  # relative to the export, e.g. db/Player/Class_Blaster_Blaster_Ranged.Fire_Blast.json
    full_name: str
    powers: int

    def rel_for(self, copy_number: int) -> str:
        if copy_number == 0:
            return self.rel
        stem = self.rel[: -len(".json")]
        return f"{stem}{copy_suffix(copy_number)}.json"

    def name_for(self, copy_number: int) -> str:
        return self.full_name if copy_number == 0 else self.full_name + copy_suffix(copy_number)


@dataclass
class Release:
    name: str
    counts: dict[str, dict[str, int]]
    keys: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    changed_fields: dict[str, list[str]] = field(default_factory=dict)
    content_hash: str = ""
    files: int = 0
    bytes: int = 0
    powers: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.name,
            "content_hash": self.content_hash,
            "files": self.files,
            "bytes": self.bytes,
            "powers": self.powers,
            "counts": self.counts,
            "keys": self.keys,
            "changed_fields": self.changed_fields,
        }


def _counts() -> dict[str, dict[str, int]]:
    return {kind: {"added": 0, "changed": 0, "removed": 0, "unchanged": 0} for kind in KINDS}


def _decode(raw: bytes) -> tuple[bool, Any]:
    """(had a BOM, the parsed JSON)."""
    bom = raw.startswith(BOM)
    return bom, _decoder.decode(raw[3:] if bom else raw)


def _encode(bom: bool, doc: Any) -> bytes:
    """The export's own style: two-space indent (what Mids writes), the BOM kept if the file had one."""
    return (BOM if bom else b"") + msgspec.json.format(_encoder.encode(doc), indent=2)


def _unique_keys(items: list[Any], key: str) -> int:
    return len({item.get(key) for item in items if isinstance(item, dict)})


class Synth:
    """Writes the releases; `run` returns the manifest."""

    def __init__(
        self,
        source: Path,
        out: Path,
        scale: int,
        seed: int,
        change: float,
        add: float,
        remove: float,
        sets: int | None,
    ) -> None:
        self.source = source
        self.out = out
        self.scale = scale
        self.seed = seed
        self.fractions = {"change": change, "add": add, "remove": remove}
        self.sets = self._source_sets(sets)
        # Powers per (copy, set) where a release made it differ from the source file's count.
        self.power_counts: dict[tuple[int, int], int] = {}
        # SHA-256 (hex) of every file of the last release written, by relative path.
        self.digests: dict[str, str] = {}

    def _source_sets(self, limit: int | None) -> list[SourceSet]:
        rels = sorted(
            p.relative_to(self.source).as_posix()
            for p in (self.source / POWERSETS_DIR).rglob("*.json")
            if p.is_file()
        )
        if limit is not None and limit < len(rels):
            # A spread over the whole export, not the first few (which are all one archetype's).
            rels = [rels[i * len(rels) // limit] for i in range(limit)]
        out = []
        for rel in rels:
            _, doc = _decode((self.source / rel).read_bytes())
            out.append(SourceSet(rel, doc["FullName"], len(doc.get("Powers") or [])))
        return out

    # -- base release -------------------------------------------------------------------------------

    def _fixed_counts(self) -> dict[str, int]:
        """Unique keys of the kinds that are not scaled (first occurrence wins, as in the importer)."""
        _, i12 = _decode((self.source / ARCHETYPES_FILE).read_bytes())
        _, enh = _decode((self.source / ENHANCEMENTS_FILE).read_bytes())
        return {
            "archetype": _unique_keys(i12.get("Archetypes") or [], "ClassName"),
            "enhancement": _unique_keys(enh.get("Enhancements") or [], "UID"),
            "enhancement_set": _unique_keys(enh.get("EnhancementSets") or [], "Uid"),
        }

    def _write(self, target: Path, rel: str, data: bytes) -> None:
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.digests[rel] = hashlib.sha256(data).hexdigest()

    def base(self) -> Release:
        started = time.perf_counter()
        target = self.out / release_name(0)
        release = Release(release_name(0), _counts())
        for rel in (ARCHETYPES_FILE, ENHANCEMENTS_FILE, *NOTE_FILES):
            if (self.source / rel).exists():
                self._write(target, rel, (self.source / rel).read_bytes())
        for s in self.sets:
            raw = (self.source / s.rel).read_bytes()
            for c in range(self.scale):
                data = raw if c == 0 else self._renamed(raw, s, c)
                self._write(target, s.rel_for(c), data)
        fixed = self._fixed_counts()
        for kind, n in fixed.items():
            release.counts[kind]["added"] = n
        release.counts["powerset"]["added"] = len(self.sets) * self.scale
        release.counts["power"]["added"] = self.total_powers()
        self._finish(release, target, started)
        return release

    def _renamed(self, raw: bytes, s: SourceSet, c: int) -> bytes:
        """The real file with its powerset renamed: every JSON string that is the powerset's FullName, or
        starts with it and a dot (its powers' names, in FullName, FullSetName and effects), gets the suffix."""
        old = s.full_name.encode()
        new = s.name_for(c).encode()
        data = raw.replace(b'"' + old + b'"', b'"' + new + b'"').replace(b'"' + old + b".", b'"' + new + b".")
        if c == 1:
            self._check_renamed(data, s, c)
        return data

    @staticmethod
    def _check_renamed(data: bytes, s: SourceSet, c: int) -> None:
        # Checked on one copy per file: the textual rename must give what the importer will demand.
        _, doc = _decode(data)
        name = s.name_for(c)
        powers = doc.get("Powers") or []
        if doc["FullName"] != name or len(powers) != s.powers:
            raise SystemExit(f"{s.rel}: renaming to {name} did not give the expected powerset")
        for p in powers:
            if not str(p.get("FullName", "")).startswith(name + "."):
                raise SystemExit(f"{s.rel}: power {p.get('FullName')} is not under {name} after renaming")

    def total_powers(self) -> int:
        return sum(self._powers_in(c, f) for c in range(self.scale) for f in range(len(self.sets)))

    def _powers_in(self, c: int, f: int) -> int:
        return self.power_counts.get((c, f), self.sets[f].powers)

    def _finish(self, release: Release, target: Path, started: float) -> None:
        h = hashlib.sha256()
        for rel in sorted(self.digests):
            h.update(f"{rel}\0{self.digests[rel]}\n".encode())
        release.content_hash = h.hexdigest()
        release.files = len(self.digests)
        release.bytes = sum((target / rel).stat().st_size for rel in self.digests)
        release.powers = self.total_powers()
        release.seconds = time.perf_counter() - started

    # -- derived releases ---------------------------------------------------------------------------

    def _amount(self, what: str, n: int) -> int:
        fraction = self.fractions[what]
        return 0 if fraction <= 0 else max(1, round(n * fraction))

    def derive(self, number: int) -> Release:
        started = time.perf_counter()
        previous = self.out / release_name(number - 1)
        target = self.out / release_name(number)
        release = Release(release_name(number), _counts())
        n = self.total_powers()
        k_change, k_remove, k_add = (self._amount(w, n) for w in ("change", "remove", "add"))
        if k_change + k_remove + k_add > n:
            raise SystemExit(f"release {number}: {k_change + k_remove + k_add} changes asked of {n} powers")
        rng = random.Random(f"{self.seed}:{number}")
        picked = rng.sample(range(n), k_change + k_remove + k_add)
        ops: dict[int, str] = dict.fromkeys(picked[:k_change], "change")
        ops.update(dict.fromkeys(picked[k_change : k_change + k_remove], "remove"))
        ops.update(dict.fromkeys(picked[k_change + k_remove :], "add"))
        # Global power index -> (copy, set file, index in the file), in (copy, file) order.
        per_file: dict[tuple[int, int], dict[int, str]] = {}
        wanted = sorted(ops)
        w = 0
        start = 0
        for c in range(self.scale):
            for f in range(len(self.sets)):
                end = start + self._powers_in(c, f)
                while w < len(wanted) and wanted[w] < end:
                    per_file.setdefault((c, f), {})[wanted[w] - start] = ops[wanted[w]]
                    w += 1
                start = end
        changed: list[str] = []
        added: list[str] = []
        removed: list[str] = []
        for rel in (ARCHETYPES_FILE, ENHANCEMENTS_FILE, *NOTE_FILES):
            if rel in self.digests:
                _link(previous / rel, target / rel)
        for c in range(self.scale):
            for f, s in enumerate(self.sets):
                rel = s.rel_for(c)
                file_ops = per_file.get((c, f))
                if not file_ops:
                    _link(previous / rel, target / rel)
                    continue
                bom, doc = _decode((previous / rel).read_bytes())
                file_rng = random.Random(f"{self.seed}:{number}:{c}:{f}")
                powers_out: list[Any] = []
                for i, power in enumerate(doc["Powers"]):
                    op = file_ops.get(i)
                    if op == "remove":
                        removed.append(power["FullName"])
                        continue
                    if op == "change":
                        fields = _mutate(file_rng, power, release.name)
                        changed.append(power["FullName"])
                        release.changed_fields[power["FullName"]] = fields
                    powers_out.append(power)
                    if op == "add":
                        new = _new_power(power, f"{power['FullName']}_{release.name}n{len(added):05d}")
                        added.append(new["FullName"])
                        powers_out.append(new)
                doc["Powers"] = powers_out
                self.power_counts[(c, f)] = len(powers_out)
                self._write(target, rel, _encode(bom, doc))
        release.keys = {
            "power": {"changed": sorted(changed), "added": sorted(added), "removed": sorted(removed)}
        }
        for kind in KINDS:
            release.keys.setdefault(kind, {"changed": [], "added": [], "removed": []})
        fixed = self._fixed_counts()
        for kind, count in fixed.items():
            release.counts[kind]["unchanged"] = count
        release.counts["powerset"]["unchanged"] = len(self.sets) * self.scale
        release.counts["power"] = {
            "added": len(added),
            "changed": len(changed),
            "removed": len(removed),
            "unchanged": n - len(changed) - len(removed),
        }
        self._finish(release, target, started)
        return release


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _bump(value: float | int, rng: random.Random) -> float | int:
    """A different value of the same kind: ints move by 1..3, floats by 5-25 % (and at least 0.01)."""
    if isinstance(value, int):
        return value + rng.randint(1, 3)
    new = round(value * rng.uniform(1.05, 1.25) + 0.01, 4)
    return new if new != value else value + 1.0


def _mutate(rng: random.Random, power: dict[str, Any], release: str) -> list[str]:
    """Change one to three fields of a power in place (Effects in about half the powers); returns them."""
    before = _encoder.encode(power)
    fields: list[str] = []
    effects = power.get("Effects")
    if isinstance(effects, list) and effects and rng.random() < 0.5:
        _mutate_effects(rng, effects)
        fields.append("Effects")
    scalars = [k for k in SCALARS if isinstance(power.get(k), int | float) and not isinstance(power[k], bool)]
    for _ in range(rng.randint(1, 3) - len(fields)):
        choice = rng.random()
        if scalars and choice < 0.7:
            key = rng.choice(scalars)
            power[key] = _bump(power[key], rng)
        elif isinstance(power.get("Level"), int) and choice < 0.85:
            key = "Level"
            power[key] = min(50, power[key] + 1) if power[key] < 50 else power[key] - 1
        else:
            key = rng.choice(TEXTS)
            power[key] = f"{power.get(key) or ''} (revised in {release})"
        if key not in fields:
            fields.append(key)
    if _encoder.encode(power) == before:  # cannot happen with the edits above; never emit a no-op change
        power["DescLong"] = f"{power.get('DescLong') or ''} (revised in {release})"
        fields.append("DescLong")
    return sorted(fields)


def _mutate_effects(rng: random.Random, effects: list[Any]) -> None:
    choice = rng.random()
    if choice < 0.6:
        effect = rng.choice(effects)
        key = "Scale" if rng.random() < 0.6 else "Mag"
        if isinstance(effect.get(key), int | float) and not isinstance(effect[key], bool):
            effect[key] = _bump(float(effect[key]), rng)
        else:
            effect[key] = 1.0
    elif choice < 0.8 or len(effects) == 1:
        effects.insert(rng.randrange(len(effects) + 1), copy.deepcopy(rng.choice(effects)))
    else:
        del effects[rng.randrange(len(effects))]


def _new_power(template: dict[str, Any], full_name: str) -> dict[str, Any]:
    """A new power: a copy of `template` (same powerset) under a new name, its effects renamed too."""
    new = copy.deepcopy(template)
    old_name = template["FullName"]
    new["FullName"] = full_name
    new["PowerName"] = full_name.rsplit(".", 1)[-1]
    new["DisplayName"] = f"{template.get('DisplayName') or ''} (new)"
    for effect in new.get("Effects") or []:
        if isinstance(effect, dict) and effect.get("PowerFullName") == old_name:
            effect["PowerFullName"] = full_name
    return new


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "source": str(Path(args.source).resolve()),
        "scale": args.scale,
        "releases": args.releases,
        "seed": args.seed,
        "change": args.change,
        "add": args.add,
        "remove": args.remove,
        "sets": args.sets,
    }


def generate(args: argparse.Namespace) -> dict[str, Any]:
    """Write every release and the manifest; returns the manifest."""
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        if not args.force:
            raise SystemExit(f"{out} is not empty (use --force to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    synth = Synth(
        Path(args.source), out, args.scale, args.seed, args.change, args.add, args.remove, args.sets
    )
    releases = [synth.base()]
    _say(releases[-1])
    for number in range(1, args.releases + 1):
        releases.append(synth.derive(number))
        _say(releases[-1])
    manifest = {
        "parameters": parameters(args),
        "sets_per_copy": len(synth.sets),
        "releases": [r.as_dict() for r in releases],
    }
    # Written last: a manifest present means every release is complete.
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _say(release: Release) -> None:
    p = release.counts["power"]
    print(
        f"{release.name}: {release.powers:,} powers, {release.files:,} files, {release.bytes / 1e6:,.0f} MB in "
        f"{release.seconds:.1f} s (powers added {p['added']:,}, changed {p['changed']:,}, "
        f"removed {p['removed']:,})",
        file=sys.stderr,
    )


def ensure(
    out: Path,
    scale: int,
    releases: int = 1,
    seed: int = 1,
    source: Path | None = None,
    sets: int | None = None,
) -> dict[str, Any]:
    """The manifest of `out`, generating it first unless it holds these very releases (for bench/run.py)."""
    args = build_parser().parse_args(
        [
            "--scale",
            str(scale),
            "--releases",
            str(releases),
            "--seed",
            str(seed),
            "--out",
            str(out),
            "--force",
            *(["--source", str(source)] if source else []),
            *(["--sets", str(sets)] if sets else []),
        ]
    )
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if manifest.get("parameters") == parameters(args):
            return manifest
    return generate(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=int, required=True, help="copies of every powerset (>= 1)")
    parser.add_argument("--releases", type=int, default=1, help="derived releases after the base (0..)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--source", type=Path, default=SHARED_DATA / "mids-21.0331")
    parser.add_argument("--change", type=float, default=0.05, help="fraction of powers changed per release")
    parser.add_argument("--add", type=float, default=0.005, help="fraction of powers added per release")
    parser.add_argument("--remove", type=float, default=0.005, help="fraction of powers removed per release")
    parser.add_argument(
        "--sets", type=int, default=None, help="use only this many powerset files of the source (spread)"
    )
    parser.add_argument("--force", action="store_true", help="replace OUT if it is not empty")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.scale < 1 or args.releases < 0:
        raise SystemExit("--scale must be >= 1 and --releases >= 0")
    manifest = generate(args)
    print(json.dumps({"out": str(args.out), "releases": [r["name"] for r in manifest["releases"]]}))


if __name__ == "__main__":
    main()
