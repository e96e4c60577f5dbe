"""`powerlog db ...`, errors and exit codes, through the console script."""

from __future__ import annotations

import json
from pathlib import Path

from migrations import schema
from tests.e2e.cli import powerlog


def test_db_upgrade_then_status_json(empty_dsn: str) -> None:
    up = powerlog("db", "upgrade", env={"DATABASE_URL": empty_dsn})
    assert up.returncode == 0, up.stderr
    assert f"schema at revision {schema.head_revision()}" in up.stdout
    st = powerlog("db", "status", "--json", env={"DATABASE_URL": empty_dsn})
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["current_revision"] == status["head_revision"] == schema.head_revision()
    assert status["up_to_date"] is True
    assert status["pg_trgm_installed"] is True
    assert status["embedded"] is False


def test_unreachable_server_is_one_line_exit_1_without_password() -> None:
    url = "postgresql://alice:s3cr3t-pw@127.0.0.1:1/nowhere"
    result = powerlog("db", "status", env={"DATABASE_URL": url})
    assert result.returncode == 1
    assert "s3cr3t-pw" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot connect to PostgreSQL at host=127.0.0.1 port=1 database=nowhere" in result.stderr


def test_invalid_database_url_names_the_variable() -> None:
    result = powerlog("db", "status", env={"DATABASE_URL": "not a url at all ="})
    assert result.returncode == 1
    assert "DATABASE_URL" in result.stderr


def test_bad_usage_exits_2() -> None:
    assert powerlog("db", "no-such-command").returncode == 2
    assert powerlog("--log-level", "loud", "db", "status").returncode == 2


def test_help_explains() -> None:
    result = powerlog("--help")
    assert result.returncode == 0
    assert "DATABASE_URL" in result.stdout
    assert "db" in result.stdout


def test_log_lines_are_json_off_a_terminal_and_never_hold_the_password(empty_dsn: str) -> None:
    url = empty_dsn.replace("user=postgres", "user=postgres password=topsecret-xyz")
    result = powerlog("db", "upgrade", env={"DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(line["event"] == "schema_upgraded" for line in lines)
    assert "topsecret-xyz" not in result.stdout + result.stderr


def test_demo_runs_on_the_embedded_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = powerlog("demo", env={"POWERLOG_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert "embedded PostgreSQL under" in result.stdout
    assert "refreshed power_build_summary (ok, 18 rows)" in result.stdout
    assert "Flares" in result.stdout and "│ powers              │   18 │" in result.stdout
    assert "Titan Weapons (beta) powers as of import 1: 3, now: 0" in result.stdout
    assert (home / "pgdata" / "PG_VERSION").exists()
    # Run again: its own database is made anew, so the story is the same.
    again = powerlog("demo", env={"POWERLOG_HOME": str(home)})
    assert again.returncode == 0, again.stderr
    assert "imported mids-21.0331: 26 events" in again.stdout
