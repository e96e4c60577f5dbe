"""Upcasters: lift a stored event payload one schema_version at a time up to the current one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from events.errors import EventDecodeError

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]

_UPCASTERS: dict[tuple[str, int], Upcaster] = {}
_CURRENT: dict[str, int] = {}


def declare(event_type: str, current_version: int) -> None:
    """Record the schema_version the code writes for event_type (done by events.types)."""
    if _CURRENT.get(event_type, current_version) != current_version:
        raise ValueError(f"{event_type} declared at two current versions")
    _CURRENT[event_type] = current_version


def current_version(event_type: str) -> int:
    """The schema_version the code writes for event_type."""
    try:
        return _CURRENT[event_type]
    except KeyError:
        raise EventDecodeError(f"unknown event type {event_type!r}") from None


def register(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Decorate a function that turns a from_version payload into a from_version + 1 payload."""

    def decorator(func: Upcaster) -> Upcaster:
        if (event_type, from_version) in _UPCASTERS:
            raise ValueError(f"two upcasters for {event_type} v{from_version}")
        _UPCASTERS[event_type, from_version] = func
        return func

    return decorator


def upcast(event_type: str, version: int, payload: Payload) -> Payload:
    """Chain upcasters from version to the current one; the input payload is not modified."""
    current = current_version(event_type)
    if version > current:
        raise EventDecodeError(
            f"{event_type} schema_version {version} is newer than this code knows"
            f" (up to {current}): upgrade powerlog to read it"
        )
    if version < 1:
        raise EventDecodeError(f"{event_type} schema_version {version} is not valid")
    while version < current:
        step = _UPCASTERS.get((event_type, version))
        if step is None:
            raise EventDecodeError(f"no upcaster for {event_type} from schema_version {version}")
        # Shallow copy so upcasters may rename keys freely without touching stored data.
        try:
            payload = step(dict(payload))
        except (KeyError, TypeError, ValueError) as exc:
            raise EventDecodeError(
                f"cannot upcast {event_type} from schema_version {version}: {exc!r}"
            ) from exc
        version += 1
        # Keep the payload's own version field in step with its shape.
        payload["schema_version"] = version
    return payload
