"""`diff`'s field counts, read from the patches' paths when one change lies between the two imports, equal
those of folding every record at both imports; a field changed and changed back between them is not counted."""

from __future__ import annotations

from itertools import permutations
from pathlib import Path
from typing import Any

import psycopg

from events import canonical_bytes
from importer.run import run_import
from projections.diff import diff_imports, top_level_differences
from store import asof, imports
from store.connection import Database
from tests.conftest import SAMPLES, settings_for
from tests.projections.test_temporal import FLARES, derive


def folded_fields(conn: psycopg.Connection[Any], before: int, after: int) -> dict[str, dict[str, int]]:
    """Per kind, how many entities present at both imports differ in each top-level field: every record
    folded from the log at both positions."""
    _, pos_a = imports.state(conn, before)
    _, pos_b = imports.state(conn, after)
    sids = [r[0] for r in conn.execute("SELECT stream_id FROM streams ORDER BY stream_id").fetchall()]
    old, new = dict(asof.fold_streams(conn, sids, pos_a)), dict(asof.fold_streams(conn, sids, pos_b))
    out: dict[str, dict[str, int]] = {}
    for sid in sids:
        a, b = old[sid], new[sid]
        if a is None or b is None or canonical_bytes(a) == canonical_bytes(b):
            continue
        fields = out.setdefault(sid.partition(":")[0], {})
        for f in top_level_differences(a, b):
            fields[f] = fields.get(f, 0) + 1
    return out


def _flares(edit: dict[str, Any]) -> Any:
    def apply(docs: dict[str, Any]) -> None:
        powers = docs["db/Player/Class_Blaster_Blaster_Ranged.Fire_Blast.json"]["Powers"]
        next(p for p in powers if p["FullName"] == FLARES).update(edit)

    return apply


def test_field_counts_equal_a_fold_of_every_record(dsn: str, tmp_path: Path) -> None:
    old = SAMPLES / "mids-20.1224"
    db = Database(settings_for(dsn))
    try:
        run_import(db, old)
        # Import 2 renames Flares and moves its level; import 3 renames it back and changes its cost.
        run_import(db, derive(old, tmp_path / "v2", _flares({"DisplayName": "Flares 2", "Level": 2})))
        run_import(db, derive(old, tmp_path / "v3", _flares({"Level": 2, "EndCost": 9.5})))
        run_import(db, SAMPLES / "mids-21.0331")
        with db.connect(autocommit=True) as conn:
            between_1_and_3 = diff_imports(conn, 1, 3, kind="power")
            assert between_1_and_3.kinds["power"].counts()["changed"] == 1
            assert between_1_and_3.kinds["power"].fields == {"EndCost": 1, "Level": 1}
            assert diff_imports(conn, 2, 3, kind="power").kinds["power"].fields == {
                "DisplayName": 1,
                "EndCost": 1,
            }
            for before, after in permutations(range(1, 5), 2):
                result = diff_imports(conn, before, after)
                fields = {k: d.fields for k, d in result.kinds.items() if d.fields}
                assert fields == folded_fields(conn, before, after), (before, after)
    finally:
        db.close()
