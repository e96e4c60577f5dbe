"""Reading real and sample exports: counts, spot values, order, both parse paths, archives, content hash."""

from __future__ import annotations

import hashlib
import json
import shutil
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from importer import KINDS, ReadLimits, SourceRecord, open_export, read_export
from importer.jsonread import parse_file
from tests.importer.helpers import (
    FIRE_BLAST,
    REAL_DATA,
    RELEASES,
    SAMPLES,
    STREAMING,
    dump,
    load,
    make_tar,
    make_zip,
    read_all,
)

EXPECTED = json.loads((REAL_DATA / "expected.json").read_text())
SAMPLE_EXPECTED = json.loads((SAMPLES / "expected.json").read_text())
HENCHMAN_FIRST = "I12.json: $.Archetypes[17]"
HENCHMAN_SECOND = "I12.json: $.Archetypes[42]"


def effects(records: list[SourceRecord]) -> int:
    return sum(len(r.record.get("Effects", [])) for r in records if r.kind == "power")


@pytest.mark.parametrize("release", RELEASES)
def test_real_release_counts_warning_and_spot_values(release: str) -> None:
    expected = EXPECTED["releases"][release]
    with capture_logs() as logs, read_export(REAL_DATA / release) as reader:
        records = list(reader)
        assert reader.counts == expected["unique_keys"]
        assert reader.duplicates == expected["duplicate_records"]
        assert [w.as_dict() for w in reader.warnings] == [
            {
                "event": "duplicate_key",
                "kind": "archetype",
                "key": "Class_Minion_Henchman",
                "first": HENCHMAN_FIRST,
                "second": HENCHMAN_SECOND,
            }
        ]
        assert reader.header.version == float(release.removeprefix("mids-"))
        assert reader.header.issue == 27
        assert reader.complete
    assert Counter(r.kind for r in records) == expected["unique_keys"]
    assert effects(records) == expected["effects"]
    duplicate_logs = [entry for entry in logs if entry["event"] == "duplicate_key"]
    assert duplicate_logs == [
        {
            "event": "duplicate_key",
            "log_level": "warning",
            "kind": "archetype",
            "key": "Class_Minion_Henchman",
            "first": HENCHMAN_FIRST,
            "second": HENCHMAN_SECOND,
        }
    ]
    flares = next(r for r in records if r.key == "Blaster_Ranged.Fire_Blast.Flares")
    spot = expected["flares"]
    assert flares.kind == "power"
    assert flares.location == f"{FIRE_BLAST}: $.Powers[0]"
    assert flares.record["Level"] == spot["level_available"]
    assert flares.record["EndCost"] == spot["endurance_cost"]
    assert flares.record["RechargeTime"] == spot["recharge_time"]
    assert flares.record["Accuracy"] == spot["accuracy"]
    assert len(flares.record["Effects"]) == spot["effects"]
    damage = sum(e["Scale"] for e in flares.record["Effects"] if e["EffectType"] == 3)
    assert damage == pytest.approx(spot["damage_scale"])
    if "fire_blast_powers_up_to_level_20" in expected:
        fire = [r for r in records if r.kind == "power" and r.key.startswith("Blaster_Ranged.Fire_Blast.")]
        assert sum(1 for r in fire if r.record["Level"] <= 20) == expected["fire_blast_powers_up_to_level_20"]


def test_real_release_streamed_gives_the_same_records_and_hash() -> None:
    path = REAL_DATA / "mids-21.0331"
    with read_export(path) as whole, read_export(path, STREAMING) as streamed:
        assert list(whole) == list(streamed)
        assert whole.content_hash == streamed.content_hash
        assert whole.warnings == streamed.warnings


def _canonical(record: Any) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def test_real_diff_between_releases_matches_expected() -> None:
    old, new = (
        {(r.kind, r.key): _canonical(r.record) for r in read_all(REAL_DATA / name)} for name in RELEASES
    )
    for kind in KINDS:
        a = {k: v for k, v in old.items() if k[0] == kind}
        b = {k: v for k, v in new.items() if k[0] == kind}
        changed = sum(1 for k in a.keys() & b.keys() if a[k] != b[k])
        assert {
            "added": len(b.keys() - a.keys()),
            "removed": len(a.keys() - b.keys()),
            "changed": changed,
            "unchanged": len(a.keys() & b.keys()) - changed,
        } == EXPECTED["diff_20.1224_to_21.0331"][kind], kind


def test_real_release_zip_equals_directory(tmp_path: Path) -> None:
    path = REAL_DATA / "mids-20.1224"
    archive = make_zip(path, tmp_path / "real.zip")
    with read_export(path) as directory, read_export(archive) as zipped:
        assert list(directory) == list(zipped)
        assert directory.content_hash == zipped.content_hash


@pytest.mark.parametrize("release", RELEASES)
def test_sample_counts_and_records_are_the_source_objects(release: str) -> None:
    expected = SAMPLE_EXPECTED["releases"][release]
    root = SAMPLES / release
    with read_export(root) as reader:
        records = list(reader)
        assert reader.counts == expected["unique_keys"]
        assert reader.duplicates == expected["duplicate_records"]
    assert effects(records) == expected["effects"]
    # Nothing dropped or changed: each record is the source object (a powerset minus its Powers).
    for r in records:
        file, _, where = r.location.partition(": ")
        source = load(root / file)
        if r.kind == "powerset":
            assert where == "$"
            assert r.record == {k: v for k, v in source.items() if k != "Powers"}
        else:
            array, index = where.removeprefix("$.").rstrip("]").split("[")
            assert r.record == source[array][int(index)]
            assert r.record is not source[array][int(index)]


def test_sample_diff_matches_sample_expected() -> None:
    old, new = (
        {(r.kind, r.key): _canonical(r.record) for r in read_all(SAMPLES / name)} for name in RELEASES
    )
    for kind in KINDS:
        a = {k for k in old if k[0] == kind}
        b = {k for k in new if k[0] == kind}
        changed = sum(1 for k in a & b if old[k] != new[k])
        got = {
            "added": len(b - a),
            "removed": len(a - b),
            "changed": changed,
            "unchanged": len(a & b) - changed,
        }
        assert got == SAMPLE_EXPECTED["diff"][kind], kind


def test_order_is_archetypes_then_db_sorted_then_enhancements() -> None:
    records = read_all(SAMPLES / "mids-20.1224")
    kinds = [r.kind for r in records]
    first_power_file = [r.location.partition(":")[0] for r in records if r.kind in ("powerset", "power")]
    assert kinds == sorted(kinds, key=lambda k: {"archetype": 0, "powerset": 1, "power": 1}.get(k, 2))
    assert first_power_file == sorted(first_power_file)
    assert kinds.index("enhancement") < kinds.index("enhancement_set")
    assert records[0].location == "I12.json: $.Archetypes[0]"
    assert records[0].key == "Class_Blaster"
    powerset = records[kinds.index("powerset")]
    assert powerset.location == f"{FIRE_BLAST}: $"
    assert powerset.key == "Blaster_Ranged.Fire_Blast"
    assert "Powers" not in powerset.record
    assert records[kinds.index("powerset") + 1].key.startswith("Blaster_Ranged.Fire_Blast.")
    assert records[-1].kind == "enhancement_set"
    assert records[-1].location.startswith("EnhDB.json: $.EnhancementSets[")


@pytest.mark.parametrize("release", RELEASES)
def test_sample_streamed_equals_whole(release: str) -> None:
    assert read_all(SAMPLES / release) == read_all(SAMPLES / release, STREAMING)


@pytest.mark.parametrize("prefix", ["", "mids-20.1224/"])
def test_directory_zip_and_tar_give_identical_records(tmp_path: Path, prefix: str) -> None:
    root = SAMPLES / "mids-20.1224"
    archives = [
        make_zip(root, tmp_path / "e.zip", prefix),
        make_tar(root, tmp_path / "e.tar.gz", prefix),
        make_tar(root, tmp_path / "e.tgz", prefix),
    ]
    with read_export(root) as reader:
        expected = list(reader)
        expected_hash = reader.content_hash
    for archive in archives:
        with read_export(archive) as reader:
            assert list(reader) == expected, archive.name
            assert reader.content_hash == expected_hash
            assert reader.source == str(archive)


def test_tar_temporary_directory_is_removed(tmp_path: Path) -> None:
    archive = make_tar(SAMPLES / "mids-20.1224", tmp_path / "e.tar.gz")
    reader = read_export(archive)
    extracted = Path(reader._export._root)  # type: ignore[attr-defined]
    assert extracted.is_dir()
    for _ in reader:
        pass
    assert not extracted.exists()


def test_content_hash_is_the_documented_one(sample: Path) -> None:
    with read_export(sample) as reader:
        with pytest.raises(RuntimeError):
            _ = reader.content_hash
        list(reader)
        got = reader.content_hash
    names = ["I12.json", "EnhDB.json", "PowerSets.json", "PowerPools.json"]
    names += [p.relative_to(sample).as_posix() for p in (sample / "db").rglob("*.json")]
    lines = "".join(f"{n}\0{hashlib.sha256((sample / n).read_bytes()).hexdigest()}\n" for n in sorted(names))
    assert got == hashlib.sha256(lines.encode()).hexdigest()

    # Files that are not part of the export do not count; any byte of one that is does.
    (sample / "README.txt").write_text("notes")
    with read_export(sample) as reader:
        list(reader)
        assert reader.content_hash == got
    notes = sample / "PowerPools.json"
    notes.write_bytes(notes.read_bytes() + b"\n")
    with read_export(sample) as reader:
        list(reader)
        assert reader.content_hash != got


def test_lookup_notes_are_not_records_and_may_be_absent(sample: Path) -> None:
    expected = read_all(sample)
    (sample / "PowerSets.json").unlink()
    (sample / "PowerPools.json").unlink()
    assert read_all(sample) == expected


def test_bom_is_accepted_in_both_paths(sample: Path) -> None:
    expected = read_all(sample)
    for rel in ("I12.json", FIRE_BLAST, "EnhDB.json"):
        path = sample / rel
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_all(sample) == expected
    assert read_all(sample, STREAMING) == expected


def test_powerset_files_at_any_depth_under_db(sample: Path) -> None:
    deep = sample / "db" / "Other" / "Epic" / "Pool"
    deep.mkdir(parents=True)
    shutil.copyfile(sample / FIRE_BLAST, deep / "_Pool.Fire.json")
    document = load(deep / "_Pool.Fire.json")
    document["FullName"] = "Pool.Fire"
    for power in document["Powers"]:
        power["FullName"] = "Pool.Fire." + power["FullName"].rsplit(".", 1)[1]
    dump(document, deep / "_Pool.Fire.json")
    (sample / "db" / "Player" / "notes.txt").write_text("not a powerset")
    records = read_all(sample)
    files = [r.location.partition(":")[0] for r in records if r.kind == "powerset"]
    assert files[0] == "db/Other/Epic/Pool/_Pool.Fire.json"
    assert len(files) == SAMPLE_EXPECTED["releases"]["mids-20.1224"]["unique_keys"]["powerset"] + 1
    assert sum(1 for r in records if r.key.startswith("Pool.Fire.")) == len(document["Powers"])


def test_links_inside_the_export_are_followed(sample: Path) -> None:
    target = sample / "db" / "Player" / "Class_Defender_Boosts.Amp_Up_Defender.json"
    (sample / "db" / "Player" / "zz_link.json").symlink_to(target)
    with read_export(sample) as reader:
        list(reader)
        # The linked file is the same powerset again: first kept, the link's copy reported.
        assert reader.duplicates["powerset"] == 1
        assert reader.warnings[-1].second == "db/Player/zz_link.json: $.Powers[0]"


def test_key_order_in_a_streamed_powerset_does_not_matter(sample: Path) -> None:
    path = sample / FIRE_BLAST
    document = load(path)
    powers = document.pop("Powers")
    dump({"Powers": powers, **document}, path)
    assert read_all(sample, STREAMING) == read_all(sample)


def test_unusual_but_valid_json_reads_the_same_both_ways(sample: Path) -> None:
    path = sample / FIRE_BLAST
    text = path.read_text(encoding="utf-8")
    extra = '"Extra": {"pair": "\\ud83d\\ude00", "big": 9223372036854775807, "tiny": 5e-324, "neg": -0.0, "s": "a\\\\ud800"},'
    path.write_text(text.replace('"Powers": [', extra + '"Powers": [', 1), encoding="utf-8")
    whole = read_all(sample)
    assert whole == read_all(sample, STREAMING)
    fire = next(r for r in whole if r.kind == "powerset" and r.key == "Blaster_Ranged.Fire_Blast")
    assert fire.record["Extra"]["pair"] == "\U0001f600"
    assert fire.record["Extra"]["s"] == "a\\ud800"


def test_a_reader_is_read_once_and_closes_at_the_end(sample: Path) -> None:
    reader = read_export(sample)
    first = list(reader)
    assert first
    with pytest.raises(RuntimeError):
        iter(reader)


def test_small_files_whole_and_big_ones_streamed_in_one_export(sample: Path) -> None:
    limits = ReadLimits(whole_parse_max_bytes=30_000)
    assert read_all(sample, limits) == read_all(sample)


def test_streaming_holds_one_item_not_the_whole_file(sample: Path) -> None:
    path = sample / FIRE_BLAST
    document = load(path)
    flares = document["Powers"][0]
    document["Powers"] = [{**flares, "FullName": f"{document['FullName']}.Copy{i}"} for i in range(150)]
    dump(document, path)
    peaks = []
    for limits in (ReadLimits(), STREAMING):
        with open_export(sample, limits) as export:
            tracemalloc.start()
            try:
                count = sum(1 for _ in parse_file(export, FIRE_BLAST, ("Powers",), limits).items)
                peaks.append(tracemalloc.get_traced_memory()[1])
            finally:
                tracemalloc.stop()
        assert count == 150
    whole, streamed = peaks
    assert streamed < whole / 10, peaks


def test_read_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        ReadLimits(max_depth=0)
    with pytest.raises(ValueError, match="whole_parse_max_bytes"):
        ReadLimits(whole_parse_max_bytes=1.5)  # type: ignore[arg-type]
