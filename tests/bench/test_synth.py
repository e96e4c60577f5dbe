"""bench/synth.py: a scaled real export and a derived release import with exactly the counts and keys its
manifest states, and the same arguments give the same bytes."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from importer.run import run_import
from store.connection import Database
from tests.conftest import REPO, SHARED_DATA

SOURCE = SHARED_DATA / "mids-21.0331"
SCALE = 2
SETS = 12  # of the source's 340 powerset files: seconds, not minutes


def _synth() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_synth", REPO / "bench" / "synth.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


synth = _synth()


def generate(out: Path, seed: int = 1, releases: int = 1) -> dict[str, Any]:
    args = synth.build_parser().parse_args(
        [
            *("--scale", str(SCALE), "--sets", str(SETS), "--releases", str(releases)),
            *("--seed", str(seed), "--source", str(SOURCE), "--out", str(out)),
        ]
    )
    manifest: dict[str, Any] = synth.generate(args)
    return manifest


def tree_digest(root: Path) -> str:
    """SHA-256 over every file's path and bytes under root (manifest included)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("synth")
    return out, generate(out)


def keys_by_type(db: Database, import_id: int) -> dict[str, dict[str, set[str]]]:
    """kind -> event type -> the natural keys import `import_id` appended events for."""
    out: dict[str, dict[str, set[str]]] = {}
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT stream_id, event_type FROM events WHERE import_id = %s", (import_id,)
        ).fetchall()
    for sid, etype in rows:
        kind, _, key = sid.partition(":")
        out.setdefault(kind, {}).setdefault(etype, set()).add(key)
    return out


def test_imports_match_the_manifest(db: Database, synthesized: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = synthesized
    base, derived = manifest["releases"]
    assert base["counts"]["powerset"]["added"] == SCALE * SETS
    assert derived["counts"]["power"]["changed"] > 0
    assert derived["counts"]["power"]["added"] > 0 and derived["counts"]["power"]["removed"] > 0

    first = run_import(db, out / base["path"])
    assert first.counts == base["counts"]
    assert first.content_hash == base["content_hash"]
    # The real I12.json's duplicated archetype comes along unscaled: kept first, warned about.
    assert [w["key"] for w in first.warnings] == ["Class_Minion_Henchman"]

    second = run_import(db, out / derived["path"])
    assert second.counts == derived["counts"]
    assert second.content_hash == derived["content_hash"]
    found = keys_by_type(db, second.import_id)
    expected = {
        kind: {
            etype: set(keys[outcome])
            for etype, outcome in (
                ("EntityChanged", "changed"),
                ("EntityAdded", "added"),
                ("EntityRemoved", "removed"),
            )
            if keys[outcome]
        }
        for kind, keys in derived["keys"].items()
        if any(keys.values())
    }
    assert found == expected
    assert set(derived["changed_fields"]) == set(derived["keys"]["power"]["changed"])


def test_scaled_copies_are_renamed_real_files(synthesized: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = synthesized
    base = out / manifest["releases"][0]["path"]
    real = sorted((base / "db").rglob("*.json"))
    copies = [p for p in real if p.stem.endswith("_s001")]
    originals = [p for p in real if not p.stem.endswith("_s001")]
    assert len(copies) == len(originals) == SETS
    for path in originals:  # copy 0 is the real file, byte for byte
        assert path.read_bytes() == (SOURCE / path.relative_to(base)).read_bytes()
    copy = synth._decode(copies[0].read_bytes())[1]
    original = synth._decode(
        (SOURCE / copies[0].relative_to(base).as_posix().replace("_s001", "")).read_bytes()
    )[1]
    assert copy["FullName"] == original["FullName"] + "_s001"
    assert [p["FullName"] for p in copy["Powers"]] == [
        p["FullName"].replace(original["FullName"] + ".", original["FullName"] + "_s001.", 1)
        for p in original["Powers"]
    ]
    assert [len(p["Effects"]) for p in copy["Powers"]] == [len(p["Effects"]) for p in original["Powers"]]


def test_same_seed_same_bytes(tmp_path: Path, synthesized: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = synthesized
    again = generate(tmp_path / "again")
    assert tree_digest(tmp_path / "again") == tree_digest(out)
    assert again == manifest
    other = generate(tmp_path / "other", seed=2)
    assert other["releases"][0]["content_hash"] == manifest["releases"][0]["content_hash"]
    assert other["releases"][1]["content_hash"] != manifest["releases"][1]["content_hash"]
