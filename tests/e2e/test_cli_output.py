"""What the command line prints: text users wrote (labels with markup, terminal codes, bytes that are not
UTF-8), Ctrl-C in an import, and the libraries' log lines."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
from psycopg_pool import ConnectionPool

from cli import logs
from store.faults import ENV as FAULT_ENV
from store.faults import SIGNAL_ENV
from tests.conftest import SAMPLES
from tests.e2e.cli import BIN, powerlog

OLD, NEW = SAMPLES / "mids-20.1224", SAMPLES / "mids-21.0331"
ANSI = "\x1b[31mred\x1b[0m\u202eevil"
ANSI_SHOWN = "\\x1b[31mred\\x1b[0m\\u202eevil"


def run_bytes(*args: str | bytes, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """The console script with arguments as raw bytes, as a shell passes them."""
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env.update(env)
    return subprocess.run(
        [str(BIN), *args], capture_output=True, env=full_env, timeout=300, stdin=subprocess.DEVNULL
    )


def said(stderr: str) -> list[str]:
    """What the command said, without its JSON log lines."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


def rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def test_labels_print_as_text_with_terminal_codes_escaped(dsn: str) -> None:
    env = {"DATABASE_URL": dsn, "COLUMNS": "250"}
    first = powerlog("import", str(OLD), "--label", "[/]", env=env)
    assert first.returncode == 0, first.stderr
    status = powerlog("status", env=env)
    assert status.returncode == 0, status.stderr
    assert "(\\[/], release" not in status.stdout and "([/], release 20.1224)" in status.stdout
    second = powerlog("import", str(NEW), "--label", ANSI, env=env)
    assert second.returncode == 0, second.stderr
    assert rows(dsn, "SELECT label FROM imports ORDER BY id") == [("[/]",), (ANSI,)]  # stored as given
    [(changed,)] = rows(dsn, "SELECT min(key) FROM streams WHERE kind = 'power' AND version = 2")
    outputs = {
        "status": powerlog("status", env=env),
        "history": powerlog("history", "power", changed, env=env),
        "diff": powerlog("diff", "1", "2", env=env),
    }
    for name, out in outputs.items():
        assert out.returncode == 0, (name, out.stderr)
        assert "\x1b" not in out.stdout + out.stderr and "\u202e" not in out.stdout, name
        assert ANSI_SHOWN in out.stdout, (name, out.stdout)
    assert "[/]" in outputs["history"].stdout and "[/]" in outputs["diff"].stdout


def test_a_label_that_is_not_utf8_is_refused_and_nothing_is_written(dsn: str) -> None:
    result = run_bytes("import", str(OLD), "--label", b"caf\xe9", env={"DATABASE_URL": dsn, "COLUMNS": "200"})
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr and "UnicodeEncodeError" not in stderr
    assert "--label" in stderr and "is not valid UTF-8" in stderr and "caf\\xe9" in stderr
    assert rows(dsn, "SELECT count(*) FROM imports") == [(0,)]
    assert rows(dsn, "SELECT count(*) FROM events") == [(0,)]
    key = run_bytes("history", "power", b"Fire\xff", env={"DATABASE_URL": dsn})
    assert key.returncode == 2 and b"is not valid UTF-8" in key.stderr and b"Traceback" not in key.stderr


def test_an_export_whose_path_is_not_utf8_imports_and_its_path_prints_escaped(
    dsn: str, tmp_path: Path
) -> None:
    export = os.fsencode(tmp_path) + b"/release-\xff"
    shutil.copytree(OLD, os.fsdecode(export))
    result = run_bytes("import", export, env={"DATABASE_URL": dsn})
    assert result.returncode == 0, result.stderr
    [(path,)] = rows(dsn, "SELECT source_path FROM imports")
    assert path.endswith("/release-\\xff")
    bad = run_bytes("import", export + b"-missing", env={"DATABASE_URL": dsn})
    assert bad.returncode == 1 and b"Traceback" not in bad.stderr
    [line] = said(bad.stderr.decode())
    assert line.startswith("error: ") and "release-\\xff-missing" in line


@pytest.mark.parametrize("point", ["after_batch:2", "before_commit"])
def test_ctrl_c_in_an_import_says_nothing_was_written(dsn: str, point: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"DATABASE_URL": dsn, "POWERLOG_IMPORT_BATCH": "10", FAULT_ENV: point, SIGNAL_ENV: "INT"})
    # As from a terminal: a test run in the background inherits SIGINT ignored, and Python keeps it so.
    result = subprocess.run(
        [str(BIN), "import", str(OLD)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert result.returncode == 130, result.stderr
    assert "fault_injected" in result.stderr  # the SIGINT came where it was meant to
    assert said(result.stderr) == ["interrupted: the import was rolled back; nothing was written to the log"]
    assert rows(dsn, "SELECT count(*) FROM events") == [(0,)]
    assert rows(dsn, "SELECT count(*) FROM imports") == [(0,)]
    again = powerlog("import", str(OLD), env={"DATABASE_URL": dsn})
    assert again.returncode == 0, again.stderr


def test_a_pool_warning_is_a_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    """psycopg's pool reports failed connections through the stdlib logger `psycopg.pool`: off a terminal
    that must be a JSON line like every other, without the password."""
    logs.configure("info", json=True)
    try:
        pool = ConnectionPool(
            "postgresql://someone:pw-secret@127.0.0.1:1/nowhere",
            min_size=1,
            open=False,
            reconnect_timeout=0.5,
            name="probe",
        )
        pool.open(wait=False)
        seen = ""
        deadline = time.monotonic() + 30
        while "probe" not in seen:
            seen += capsys.readouterr().err
            assert time.monotonic() < deadline, "the pool logged no warning"
            time.sleep(0.05)
        pool.close()
        seen += capsys.readouterr().err
    finally:
        root = logging.getLogger()
        if logs._handler is not None:
            root.removeHandler(logs._handler)
            logs._handler = None
        structlog.reset_defaults()
    lines = [line for line in seen.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line, or this raises
    pool_lines = [p for p in parsed if p.get("logger", "").startswith("psycopg.pool")]
    assert pool_lines and all(p["level"] == "warning" for p in pool_lines), parsed
    assert "error connecting in 'probe'" in pool_lines[0]["event"]
    assert "pw-secret" not in seen
    assert sys.stderr is not None


def test_lines_logged_by_two_threads_at_once_stay_whole_json_lines(tmp_path: Path) -> None:
    """structlog (the main thread) and the stdlib handler (a pool's or APScheduler's thread) write to the
    same stderr: no line may land inside another."""
    script = (
        "import logging, sys, threading, structlog\n"
        "from cli import logs\n"
        "sys.setswitchinterval(1e-6)\n"
        "logs.configure('info', json=True)\n"
        "def stdlib():\n"
        "    for i in range(3000): logging.getLogger('psycopg.pool').warning('pool line %d', i)\n"
        "t = threading.Thread(target=stdlib); t.start()\n"
        "for i in range(3000): structlog.get_logger().info('main_line', i=i)\n"
        "t.join()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    parsed = [json.loads(line) for line in lines]  # every line whole, or this raises
    assert len(parsed) == 6000
    assert sum(p["event"] == "main_line" for p in parsed) == 3000
