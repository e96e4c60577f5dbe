"""One settings object, built once from the environment and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import psycopg
from psycopg import conninfo

from store.errors import SettingsError


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not value > 0:
        raise SettingsError(f"{name}={raw!r} must be greater than 0")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name) or choices[0]
    if raw not in choices:
        raise SettingsError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
    return raw


@dataclass(frozen=True)
class Settings:
    """What powerlog reads from the environment; see README "Settings"."""

    database_url: str | None
    """`DATABASE_URL`: a real server. None means the embedded server under `home`."""
    home: Path
    """`POWERLOG_HOME`: where the embedded server keeps its data directory."""
    pool_size: int
    """`POWERLOG_POOL_SIZE`: connections in the pool."""
    lock_timeout_s: float
    """`POWERLOG_LOCK_TIMEOUT`: seconds to wait for another writer before failing."""
    refresh_interval_s: float
    """`POWERLOG_REFRESH_INTERVAL`: seconds between scheduler ticks."""
    refresh_nice: int
    """`POWERLOG_REFRESH_NICE`: CPU niceness given to a refreshing backend on this machine (0: leave it)."""
    max_export_bytes: int
    """`POWERLOG_MAX_EXPORT_BYTES`: refuse archives that unpack to more than this."""
    import_batch: int
    """`POWERLOG_IMPORT_BATCH`: events per COPY inside an import's one transaction."""
    project_batch: int
    """`POWERLOG_PROJECT_BATCH`: log positions applied per projection transaction."""
    view_refresh: str
    """`POWERLOG_VIEW_REFRESH`: "project" (`powerlog project` refreshes the view) or "scheduler"."""
    stall_threshold_s: float = 300.0
    """`POWERLOG_STALL_THRESHOLD`: seconds a daemon may be stalled or disconnected before /healthz fails."""
    swap_lock_timeout_s: float = 0.5
    """`POWERLOG_SWAP_LOCK_TIMEOUT`: the longest a rebuild's swap waits for a table (readers queue behind it)."""
    swap_attempts: int = 20
    """`POWERLOG_SWAP_ATTEMPTS`: how often a rebuild tries its swap, with backoff, before it gives up."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build and validate the settings; an invalid value fails here, naming its variable."""
        env = os.environ if env is None else env
        url = env.get("DATABASE_URL") or None
        if url is not None:
            try:
                conninfo.conninfo_to_dict(url)
            except psycopg.ProgrammingError:
                raise SettingsError(
                    "DATABASE_URL is not a PostgreSQL connection string "
                    "(expected e.g. postgresql://user@host:5432/dbname)"
                ) from None
        home_raw = env.get("POWERLOG_HOME")
        home = Path(home_raw).expanduser() if home_raw else Path(platformdirs.user_data_dir("powerlog"))
        return cls(
            database_url=url,
            home=home,
            pool_size=_int(env, "POWERLOG_POOL_SIZE", 4),
            lock_timeout_s=_float(env, "POWERLOG_LOCK_TIMEOUT", 600.0),
            refresh_interval_s=_float(env, "POWERLOG_REFRESH_INTERVAL", 30.0),
            refresh_nice=_int(env, "POWERLOG_REFRESH_NICE", 10, minimum=0),
            max_export_bytes=_int(env, "POWERLOG_MAX_EXPORT_BYTES", 2 * 1024**3),
            import_batch=_int(env, "POWERLOG_IMPORT_BATCH", 5000),
            project_batch=_int(env, "POWERLOG_PROJECT_BATCH", 10_000),
            view_refresh=_choice(env, "POWERLOG_VIEW_REFRESH", ("project", "scheduler")),
            stall_threshold_s=_float(env, "POWERLOG_STALL_THRESHOLD", 300.0),
            swap_lock_timeout_s=_float(env, "POWERLOG_SWAP_LOCK_TIMEOUT", 0.5),
            swap_attempts=_int(env, "POWERLOG_SWAP_ATTEMPTS", 20),
        )
