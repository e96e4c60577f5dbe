"""`powerlog refresh`, `powerlog scheduler run|status`: in process, in a subprocess, and via the console script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
import structlog
import typer
from typer.testing import CliRunner

from cli import context
from cli.logs import configure
from cli.scheduler import app, refresh_command
from store import locks
from store.errors import LockBusy
from tests.e2e.cli import powerlog
from tests.scheduler.data import advance, blocked_refresher, outcomes, populate, tables_locked, wait_until

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def cli_env(dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point cli.context at the test database (it caches per process) and send logs to stderr, as the CLI does."""
    monkeypatch.setenv("DATABASE_URL", dsn)
    context.settings.cache_clear()
    context.database.cache_clear()
    saved = structlog.get_config()
    configure("info", json=True)
    yield
    structlog.configure(**saved)
    context.database().close()
    context.settings.cache_clear()
    context.database.cache_clear()


def _refresh_app() -> typer.Typer:
    # What cli/main.py does with refresh_command; a second command keeps typer from flattening the app.
    wrapper = typer.Typer()
    wrapper.command(name="refresh")(refresh_command)
    wrapper.add_typer(app, name="scheduler")
    return wrapper


def test_refresh_command(cli_env: None, conn: psycopg.Connection[Any]) -> None:
    populate(conn, 250)
    advance(conn, 9)
    cli = _refresh_app()
    result = runner.invoke(cli, ["refresh", "--if-stale"])
    assert result.exit_code == 0, result.stdout
    assert "refreshed power_build_summary (concurrently): 250 rows at source position 9 in" in result.stdout
    result = runner.invoke(cli, ["refresh", "--if-stale"])
    assert result.exit_code == 0 and "up to date; nothing to refresh" in result.stdout
    result = runner.invoke(cli, ["refresh", "--plain", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) | {"refresh_id": 0, "duration_ms": 0} == {
        "outcome": "ok",
        "mode": "plain",
        "refresh_id": 0,
        "rows": 250,
        "duration_ms": 0,
        "source_position": 9,
        "error": None,
        "reason": None,
    }
    assert outcomes(conn) == ["ok", "ok"]


def test_refresh_command_fails_when_another_process_refreshes(
    cli_env: None, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("SELECT pg_advisory_lock(%s)", (locks.REFRESH.key,))
    result = runner.invoke(_refresh_app(), ["refresh"])
    assert result.exit_code == 1
    assert isinstance(result.exception, LockBusy)  # cli.main.run prints it as one line, exit 1
    assert "another process is refreshing power_build_summary" in str(result.exception)


def test_scheduler_status_command(cli_env: None, conn: psycopg.Connection[Any]) -> None:
    result = runner.invoke(_refresh_app(), ["scheduler", "status"])
    assert result.exit_code == 0, result.stdout
    assert "never" in result.stdout and "up to date" in result.stdout
    populate(conn, 10)
    advance(conn, 3)
    runner.invoke(_refresh_app(), ["refresh"])
    result = runner.invoke(_refresh_app(), ["scheduler", "status", "--json"])
    figures = json.loads(result.stdout)
    assert (figures["last_refresh_rows"], figures["refreshed_position"], figures["stale"]) == (10, 3, False)


def test_scheduler_run_rejects_bad_flags(cli_env: None) -> None:
    for flag in ("--interval", "--misfire-grace"):
        result = runner.invoke(_refresh_app(), ["scheduler", "run", flag, "0"])
        assert result.exit_code == 2
        assert "must be greater than 0" in result.stderr


def _read_events(stream: IO[str], until: str) -> list[dict[str, Any]]:
    events = []
    for line in stream:
        if line.startswith("{"):
            events.append(json.loads(line))
            if events[-1]["event"] == until:
                return events
    raise AssertionError(f"the scheduler ended without logging {until}: {events}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_scheduler_run_stops_on_signal_after_the_running_refresh(
    dsn: str, conn: psycopg.Connection[Any], sig: signal.Signals
) -> None:
    populate(conn, 500)
    advance(conn, 2)
    code = "from cli.logs import configure; configure('info', True); from cli.scheduler import app; app()"
    env = {**os.environ, "DATABASE_URL": dsn}
    with tables_locked(dsn):
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "run", "--interval", "0.2"],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stderr is not None
            wait_until(lambda: blocked_refresher(conn), "the scheduler's REFRESH to wait on powers")
            proc.send_signal(sig)
            _read_events(proc.stderr, until="scheduler_stopping")
            assert proc.poll() is None  # it waits for the refresh, which waits for our lock
            assert outcomes(conn) == ["running"]
        except BaseException:
            proc.kill()
            raise
    # Lock released: the refresh completes, then the process exits.
    events = _read_events(proc.stderr, until="scheduler_stopped")
    assert proc.wait(timeout=30) == 0
    assert outcomes(conn) == ["ok"]
    assert "refresh_done" in [e["event"] for e in events]


@pytest.fixture(scope="module")
def wired() -> None:
    if powerlog("scheduler", "--help").returncode != 0:
        pytest.skip("`scheduler` and `refresh` are not wired into cli/main.py yet")


def test_console_script_refresh_and_status(wired: None, dsn: str, conn: psycopg.Connection[Any]) -> None:
    populate(conn, 40)
    advance(conn, 5)
    env = {"DATABASE_URL": dsn}
    done = powerlog("refresh", "--if-stale", env=env)
    assert done.returncode == 0, done.stderr
    assert "refreshed power_build_summary (concurrently): 40 rows at source position 5" in done.stdout
    again = powerlog("refresh", "--if-stale", env=env)
    assert again.returncode == 0 and "nothing to refresh" in again.stdout
    st = powerlog("scheduler", "status", "--json", env=env)
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["refreshed_position"] == 5
    help_text = powerlog("scheduler", "run", "--help").stdout
    assert "--interval" in help_text and "--misfire-grace" in help_text


def test_console_script_refresh_busy_is_one_line_exit_1(
    wired: None, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("SELECT pg_advisory_lock(%s)", (locks.REFRESH.key,))
    busy = powerlog("refresh", env={"DATABASE_URL": dsn})
    assert busy.returncode == 1
    assert "another process is refreshing power_build_summary" in busy.stderr
    assert "Traceback" not in busy.stderr
