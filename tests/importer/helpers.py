"""Paths to the real releases and the samples, and helpers to read exports and build archives."""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from importer import ReadLimits, SourceRecord, read_export

REPO = Path(__file__).resolve().parents[2]
REAL_DATA = REPO.parent / "shared" / "data"
SAMPLES = REPO / "samples"
RELEASES = ("mids-20.1224", "mids-21.0331")
FIRE_BLAST = "db/Player/Class_Blaster_Blaster_Ranged.Fire_Blast.json"

# Files bigger than 1 byte are streamed: every file goes through the ijson path.
STREAMING = ReadLimits(whole_parse_max_bytes=1)


def read_all(path: Path | str, limits: ReadLimits | None = None, strict: bool = False) -> list[SourceRecord]:
    """Every record of an export."""
    with read_export(path, limits or ReadLimits(), strict) as reader:
        return list(reader)


def load(path: Path) -> Any:
    """A JSON file as the source holds it."""
    return json.loads(path.read_bytes().decode("utf-8-sig"))


def dump(value: Any, path: Path) -> None:
    """Write JSON the way the exports do."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False), encoding="utf-8")


def make_zip(root: Path, out: Path, prefix: str = "") -> Path:
    """Zip a directory export; `prefix` puts it in a top folder."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(root).as_posix())
    return out


def make_tar(root: Path, out: Path, prefix: str = "") -> Path:
    """Tar and gzip a directory export; `prefix` puts it in a top folder."""
    with tarfile.open(out, "w:gz", compresslevel=1) as tf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                tf.add(path, prefix + path.relative_to(root).as_posix())
    return out
