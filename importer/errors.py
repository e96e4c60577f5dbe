"""Errors raised while reading an export."""

from events.errors import PowerlogError


class ImportInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGINT) stopped an import before it committed: nothing of it was written."""


class ImportInputError(PowerlogError):
    """The export is not what powerlog expects: names the file, where in it, and what was expected."""

    def __init__(self, file: str, location: str, expected: str) -> None:
        self.file = file
        self.location = location
        self.expected = expected
        where = f"{file}: {location}" if location else file
        super().__init__(f"{where}: {expected}")
