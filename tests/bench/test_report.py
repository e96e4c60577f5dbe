"""bench/report.py: the targets table of docs/benchmarks.md from a tiny run's results, exactly (no database)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import REPO


def _report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", REPO / "bench" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _step(seconds: float, rss: float) -> dict[str, float]:
    return {"seconds": seconds, "peak_rss_mb": rss}


def _scale(scale: int, rss: float, **extra: Any) -> dict[str, Any]:
    return {
        "scale": scale,
        "powers": 3046 * scale,
        "source_mb": round(67.6 * scale, 1),
        "steps": {
            "first import": _step(9.0 * scale, rss),
            "incremental import": _step(4.0 * scale, 80 + 10 * scale),
            "project (incremental)": _step(2.0 * scale, 90),
            "rebuild": _step(4.0 * scale, 100),
        },
        **extra,
    }


def _write(results: Path) -> None:
    results.mkdir()
    main = {
        "name": "tiny",
        "label": "a fixture",
        "server_version": "15.20 (Debian)",
        "source": "mids-21.0331",
        "seed": 1,
        "date": "2026-11-30",
        "machine": {"nproc": 2, "ram_gb": 8.0, "cpu": "Test CPU"},
        "packages": {
            "psycopg": "3.3.9",
            "SQLAlchemy": "2.1.9",
            "msgspec": "0.23.0",
            "eventsourcing": "9.5.6",
        },
        "scales": [
            _scale(
                3,
                320,
                import_ceiling={"seconds": 9.0},
                rebuild_ceiling={"seconds": 11.0},
                ratios={
                    "first_import_vs_ceiling": 0.333,
                    "first_import_reported_vs_ceiling": 0.4,
                    "rebuild_vs_ceiling": 0.917,
                },
            ),
            _scale(
                1,
                250,
                # A run whose rebuild ceiling built the history tables too gives both ratios.
                rebuild_ceiling={"seconds": 4.0, "read_tables_seconds": 3.5},
                ratios={
                    "no-change re-import (shortcut) vs first": 0.1,
                    "no-change re-import (shortcut) reported vs first": 0.04,
                    "rebuild_vs_ceiling": 1.0,
                    "rebuild_vs_read_tables_ceiling": 0.875,
                    "append_vs_peer": 1.5,
                },
            ),
        ],
    }
    (results / "run-tiny.json").write_text(json.dumps(main))
    failed = {**main, "scales": [{**_scale(30, 280), "failed": "powerlog project failed (1): out of memory"}]}
    (results / "run-tiny-s30.json").write_text(json.dumps(failed))
    (results / "run-tinyother.json").write_text(json.dumps({**main, "scales": [_scale(10, 1)]}))
    (results / "growth-visible-tiny.json").write_text(
        json.dumps(
            {
                "scale": 1,
                "releases": 3,
                "tables_ms": [500, 700, 900],
                "tables_p50_ms": 700,
                "tables_p99_ms": 900,
                "view_p50_ms": 1000,
                "view_p99_ms": 1500,
            }
        )
    )


def test_targets_table(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _write(results)
    out = tmp_path / "docs" / "benchmarks.md"
    _report().main(["--run", "tiny", "--results", str(results), "--out", str(out), "--no-plot"])
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    targets = rows[
        1 : rows.index("| scale | powers | source MB | step | seconds | peak RSS MB | ceiling s |")
    ]
    assert targets == [
        "| 1 | peak RSS, first import | 250 MB | <= 300 MB | met |",
        "| 1 | peak RSS, incremental import | 90 MB | <= 300 MB | met |",
        "| 1 | peak RSS, project (incremental) | 90 MB | <= 300 MB | met |",
        "| 1 | peak RSS, rebuild | 100 MB | <= 300 MB | met |",
        "| 1 | no-change re-import (shortcut) / first import | 10% | <= 15% | met |",
        # On the times the imports report (no start-up): shown, not counted.
        "| 1 | no-change re-import (shortcut) / first import, the times they report | 4% | reference (no start-up) | — |",
        "| 1 | rebuild / same-work ceiling (read and history tables) | 1.00 | >= 0.8 | met |",
        # With the history tables in the ceiling, the read tables alone do less work: a reference only.
        "| 1 | rebuild / read-tables-only ceiling | 0.88 | reference (less work: no history tables) | — |",
        "| 1 | append / eventsourcing (events/s ratio) | 1.50 | >= 2.0 | **missed** |",
        "| 3 | peak RSS, first import | 320 MB | <= 300 MB | **missed** |",
        "| 3 | peak RSS, incremental import | 110 MB | <= 300 MB | met |",
        "| 3 | peak RSS, project (incremental) | 90 MB | <= 300 MB | met |",
        "| 3 | peak RSS, rebuild | 100 MB | <= 300 MB | met |",
        "| 3 | first import / bare COPY (time ratio) | 0.33 | >= 0.3 | met |",
        "| 3 | first import, the time it reports (no start-up) / bare COPY | 0.40 | reference (no start-up) | — |",
        # A run from before the history tables were in the ceiling: its one ratio is the read tables'.
        "| 3 | rebuild / read-tables-only ceiling | 0.92 | >= 0.8 | met |",
        "| 30 | peak RSS, first import | 280 MB | <= 300 MB | met |",
        "| 30 | peak RSS, incremental import | 380 MB | <= 300 MB | **missed** |",
        "| 30 | peak RSS, project (incremental) | 90 MB | <= 300 MB | met |",
        "| 30 | peak RSS, rebuild | 100 MB | <= 300 MB | met |",
        "| 30 | run | failed: powerlog project failed (1): out of memory | every step runs | **missed** |",
        "| 1 → 30 | peak RSS growth, first import | 1.12x | < 1.3x (1 → 120) | met |",
        "| 1 → 30 | peak RSS growth, incremental import | 4.22x | < 1.3x (1 → 120) | **missed** |",
        "| 1 → 30 | peak RSS growth, project (incremental) | 1.00x | < 1.3x (1 → 120) | met |",
        "| 1 → 30 | peak RSS growth, rebuild | 1.00x | < 1.3x (1 → 120) | met |",
        "| 1 | import commit → read tables visible (follow), p99 of 3 | 0.90 s | <= 1.0 s | met |",
    ]
    assert "18 of 23 met." in text
    assert "- Machine: 2 CPUs (Test CPU), 8.0 GB RAM\n" in text
    assert "- Packages: psycopg 3.3.9, SQLAlchemy 2.1.9, msgspec 0.23.0, eventsourcing 9.5.6\n" in text
    assert "- PostgreSQL 15.20 (Debian)\n" in text and "- Date of the run: 2026-11-30\n" in text
    # The -s30 part is merged in scale order; another run whose name starts the same is not.
    assert "| 3 | 9,138 | 202.8 | first import | 27.00 | 320 | 9.00 |" in text
    assert "run-tinyother" not in text and "| 10 |" not in text


def test_scales_of_another_run_fill_in_what_the_run_lacks(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _write(results)
    earlier = json.loads((results / "run-tiny.json").read_text())
    earlier["scales"] = [_scale(3, 999), _scale(120, 260)]  # its scale 3 is the run's own: not taken
    (results / "run-earlier.json").write_text(json.dumps(earlier))
    out = tmp_path / "benchmarks.md"
    report = _report()
    report.main(
        ["--run", "tiny", "--with", "earlier", "--results", str(results), "--out", str(out), "--no-plot"]
    )
    text = out.read_text()
    assert (
        "from `bench/results/run-tiny.json`, `bench/results/run-tiny-s30.json`, `bench/results/run-earlier.json`"
        in text
    )
    assert "| 120 | peak RSS, first import | 260 MB | <= 300 MB | met |" in text
    assert "| 1 → 120 | peak RSS growth, first import | 1.04x | < 1.3x (1 → 120) | met |" in text
    assert "999" not in text
    with pytest.raises(SystemExit, match=r"run-missing\.json not found"):
        report.main(["--run", "tiny", "--with", "missing", "--results", str(results), "--out", str(out)])


def test_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    results = tmp_path / "results"
    _write(results)
    out, png = tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "benchmarks.png"
    _report().main(["--run", "tiny", "--results", str(results), "--out", str(out), "--plot", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![time and peak RSS against scale](benchmarks.png)" in out.read_text()


def test_growth_lines_of_the_view(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _write(results)
    view = {
        "scale": 3,
        "fresh_mb": 31.0,
        "after_refreshes_mb": [32.5, 34.1, 103.3],
        "after_vacuum_mb": 104.8,
        "plain_refresh_rebuilt_mb": 32.0,
        "vacuumed_each": {
            "after_refreshes_mb": [32.2, 33.9, 33.1],
            "refresh_s": [1.2, 1.4, 1.3],
            "vacuum_s": [0.05, 0.07, 0.06],
            "reads": {"point_ms": 0.4, "range_ms": 0.15},
        },
    }
    # Another run's view, for the part the run's own growth results lack.
    (results / "growth-view-later.json").write_text(json.dumps(view))
    out = tmp_path / "benchmarks.md"
    growth = ["--growth", "tiny", "--growth", "later"]
    _report().main(["--run", "tiny", *growth, "--results", str(results), "--out", str(out), "--no-plot"])
    text = out.read_text()
    assert (
        "`bench/results/run-tiny.json`, `bench/results/run-tiny-s30.json` and"
        " `bench/results/growth-view-later.json`, `bench/results/growth-visible-tiny.json`."
    ) in text
    assert (
        "- The view after 3 concurrent refreshes (`growth-view`, scale 3): 103.3 MB against 31.0 MB fresh;"
        " 104.8 MB after VACUUM, 32.0 MB after a plain refresh.\n"
    ) in text
    assert (
        "- The view with a VACUUM after each of 3 concurrent refreshes (`growth-view`, from the plain refresh's"
        " build): 33.1 MB after the last (largest 33.9 MB); refresh median 1.30 s, VACUUM median 0.060 s.\n"
    ) in text


def test_a_growth_just_under_the_target_shows_a_third_decimal(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _write(results)
    close = json.loads((results / "run-tiny.json").read_text())
    close["scales"] = [_scale(1, 250), _scale(120, 324.7)]  # 1.2988x
    (results / "run-close.json").write_text(json.dumps(close))
    out = tmp_path / "benchmarks.md"
    _report().main(["--run", "close", "--results", str(results), "--out", str(out), "--no-plot"])
    assert "| 1 → 120 | peak RSS growth, first import | 1.299x | < 1.3x (1 → 120) | met |" in out.read_text()
