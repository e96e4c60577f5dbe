"""The root of powerlog's typed errors: the CLI turns any of them into one line and exit 1."""


class PowerlogError(Exception):
    """An error a user can act on; its message is shown as is."""


class CanonicalError(PowerlogError):
    """A value has no canonical JSON form (NaN, infinity, non-str key, unsupported type)."""


class PatchError(PowerlogError):
    """A JSON Patch cannot be applied; `path` is the JSON Pointer of the failing op."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(f"{message} at {path!r}")
        self.path = path


class EventDecodeError(PowerlogError):
    """A stored event cannot be decoded or upcast to a current event type."""


class FoldError(PowerlogError):
    """A stream's events do not fold: out-of-order event or hash mismatch."""
