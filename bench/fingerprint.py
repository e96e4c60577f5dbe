"""Time the read tables' fingerprint on an existing, projected database: the first form (SHA-256 over
`string_agg` of every row, per table), the v2 full pass (sum of per-row digests) and the v2 carry-forward
the projector records after an import (the import's history versions only).

    DATABASE_URL=postgresql://... .venv/bin/python bench/fingerprint.py [--name NAME] [--label TEXT] [--repeat 3]

Writes results/fingerprint-NAME.{md,json}. The database must have been projected up to an import (its
last projected import is the one the carry-forward is timed for).
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

import psycopg
from common import Timer, write_results
from psycopg import sql

from projections import fingerprint as fp
from projections.projector import checkpoint
from projections.tables import LIVE_SCHEMA, READ_TABLES
from store import imports

_FIRST_FORM = (
    "SELECT encode(sha256(convert_to(coalesce(string_agg(t::text, E'\\n' ORDER BY t.id), ''), 'UTF8')), 'hex')"
    " FROM {} t"
)


def _first_form(conn: psycopg.Connection[Any], table: str) -> float | str:
    """Seconds, or the error PostgreSQL gave."""
    try:
        with conn.transaction(), Timer() as t:
            conn.execute(sql.SQL(_FIRST_FORM).format(sql.Identifier(LIVE_SCHEMA, table))).fetchone()
        return round(t.seconds, 3)
    except psycopg.Error as exc:
        return " ".join(str(exc).split())[:200]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", required=True)
    parser.add_argument("--label", default="")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        position = checkpoint(conn)
        last = imports.ending_at(conn, position)
        rows = {
            t: int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0])  # type: ignore[index]
            for t in READ_TABLES
        }
        mb = {
            t: round(
                int(conn.execute("SELECT sum(octet_length(t::text)) FROM " + t + " t").fetchone()[0] or 0)  # type: ignore[index]
                / 1e6,
                1,
            )
            for t in READ_TABLES
        }
        timings: dict[str, list[float]] = {"v2 full": [], "v2 carry-forward": []}
        first: dict[str, list[float | str]] = {t: [] for t in READ_TABLES}
        for _ in range(args.repeat):
            for t in READ_TABLES:
                first[t].append(_first_form(conn, t))
            with conn.transaction(), Timer() as full:
                value = fp.fingerprint(conn)
            timings["v2 full"].append(full.seconds)
            if last is not None:
                with conn.transaction(), Timer() as carried:
                    forward = fp.after_import(conn, LIVE_SCHEMA, last.id)
                timings["v2 carry-forward"].append(carried.seconds)
                assert forward == value, "the carried-forward fingerprint differs from the full pass"
    result = {
        "name": args.name,
        "label": args.label,
        "server_version": version,
        "checkpoint": position,
        "import": None if last is None else last.id,
        "rows": rows,
        "text_mb": mb,
        "first_form_s": {
            t: (
                statistics.median(v)
                if all(isinstance(x, float) for x in v)
                else next(x for x in v if isinstance(x, str))
            )
            for t, v in first.items()
        },
        "v2_s": {k: round(statistics.median(v), 3) for k, v in timings.items() if v},
    }
    lines = [
        f"# Fingerprint timings `{args.name}` (`bench/fingerprint.py`)",
        "",
        args.label,
        "",
        f"PostgreSQL {version}; checkpoint {position:,}; median of {args.repeat}.",
        "",
        "| table | rows | text MB | first form (string_agg) s |",
        "|---|---|---|---|",
        *(f"| {t} | {rows[t]:,} | {mb[t]} | {result['first_form_s'][t]} |" for t in READ_TABLES),
        "",
        "| v2 | seconds |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in result["v2_s"].items()),
        "",
    ]
    path = write_results(f"fingerprint-{args.name}", result, "\n".join(lines))
    print(path.read_text())


if __name__ == "__main__":
    main()
