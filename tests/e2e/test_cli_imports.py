"""`powerlog imports` through the console script: every import with its id, status, counts, positions and
head, including a failed one (bad JSON) and one that changed nothing."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from tests.conftest import SAMPLES
from tests.e2e.cli import powerlog

SAMPLE_EXPECTED = json.loads((SAMPLES / "expected.json").read_text())
HEAD = re.compile(r"log head (\d+:[0-9a-f]{64})")
CHANGES = ("added", "changed", "removed")


def run(dsn: str, *args: str) -> Any:
    result = powerlog(*args, env={"DATABASE_URL": dsn, "COLUMNS": "200"})
    assert "Traceback" not in result.stderr, result.stderr
    return result


def imported(dsn: str, path: Path, *args: str) -> str:
    """Import through the console script; the log head it printed."""
    result = run(dsn, "import", str(path), *args)
    assert result.returncode == 0, result.stderr
    found = HEAD.search(result.stdout)
    assert found, result.stdout
    return found.group(1)


def test_imports_lists_every_import_with_its_outcome(dsn: str, tmp_path: Path) -> None:
    first = imported(dsn, SAMPLES / "mids-20.1224", "--label", "first [cut]")
    bad = tmp_path / "bad"
    shutil.copytree(SAMPLES / "mids-21.0331", bad)
    (bad / "EnhDB.json").write_text('{"Enhancements": [{"UID": "x",}]}', encoding="utf-8")
    failed = run(dsn, "import", str(bad))
    assert failed.returncode == 1
    second = imported(dsn, SAMPLES / "mids-21.0331")
    again = imported(dsn, SAMPLES / "mids-21.0331")
    assert again == second

    result = run(dsn, "imports", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["imports"]
    assert [(r["id"], r["status"], r["release"]["version"]) for r in rows] == [
        (1, "completed", "20.1224"),
        (2, "failed", "21.0331"),  # the header was read before the bad file
        (3, "completed", "21.0331"),
        (4, "no changes", "21.0331"),
    ]
    one, two, three, four = rows
    unique = SAMPLE_EXPECTED["releases"]["mids-20.1224"]["unique_keys"]
    assert one["events"] == {k: {"added": n, "changed": 0, "removed": 0} for k, n in unique.items()}
    assert one["label"] == "first [cut]" and one["release"]["issue"] == 27
    assert (one["first_position"], one["last_position"], one["head"]) == (1, 78, first)
    assert one["total_events"] == 78 and one["source"] == str(SAMPLES / "mids-20.1224")
    # The failure names the file and the place in it; nothing was appended.
    assert len(two["errors"]) == 1 and re.match(r"EnhDB\.json: line 1, column \d+: ", two["errors"][0])
    assert (two["first_position"], two["last_position"], two["head"], two["total_events"]) == (
        None,
        None,
        None,
        0,
    )
    assert three["events"] == {k: {c: d[c] for c in CHANGES} for k, d in SAMPLE_EXPECTED["diff"].items()}
    assert (three["first_position"], three["last_position"], three["head"]) == (79, 104, second)
    assert {k: n for k, n in three["unchanged"].items()} == {
        k: d["unchanged"] for k, d in SAMPLE_EXPECTED["diff"].items()
    }
    assert (four["first_position"], four["last_position"], four["head"], four["total_events"]) == (
        None,
        None,
        second,
        0,
    )

    table = run(dsn, "imports")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    row = {int(m.group(1)): line for line in lines if (m := re.match(r"│\s+(\d+) │", line))}
    assert set(row) == {1, 2, 3, 4}
    assert "completed" in row[1] and "first [cut]" in row[1] and "+21" in row[1] and "1..78" in row[1]
    assert "failed" in row[2] and "no changes" in row[4]
    assert "~10 -3" in row[3] and "79..104" in row[3]
    assert f"import 3: {SAMPLES / 'mids-21.0331'}, log head {second}" in table.stdout
    assert f"  failed: {two['errors'][0]}" in table.stdout


def test_imports_on_an_empty_log(dsn: str) -> None:
    result = run(dsn, "imports")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no imports yet: `powerlog import PATH`"
    assert json.loads(run(dsn, "imports", "--json").stdout) == {"imports": []}
