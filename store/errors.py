"""Typed errors of the store: callers catch meaning, not driver classes."""

from events.errors import PowerlogError


class SettingsError(PowerlogError):
    """An environment variable holds a value powerlog cannot use."""


class ServerUnavailable(PowerlogError):
    """The PostgreSQL server cannot be reached (the message never holds a password)."""


class SchemaError(PowerlogError):
    """The database is missing something powerlog needs (a migration, an extension)."""


class ConcurrencyError(PowerlogError):
    """An append expected a stream version that is no longer current."""


class ChainError(PowerlogError):
    """The log's hash chain does not verify: it was altered outside powerlog."""

    def __init__(self, position: int, message: str) -> None:
        self.position = position
        super().__init__(message)


class LockBusy(PowerlogError):
    """Another process holds a lock this command needs and we were asked not to wait."""


class UnknownImport(PowerlogError):
    """An import id that names no completed import: there is none, or it failed and left nothing."""


class LogIncomplete(ChainError):
    """The log no longer reaches the head its last completed import recorded: events were cut from it."""
