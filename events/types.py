"""Event types (a msgspec tagged union), their JSON encoding, decoding with upcasting, and fold."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import msgspec

from events import upcasting
from events.canonical import JSON, canonical_bytes, content_hash
from events.canonical import decode as decode_json
from events.errors import CanonicalError, EventDecodeError, FoldError, PatchError
from events.patch import apply


class EntityAdded(msgspec.Struct, tag=True, frozen=True, kw_only=True):
    """A record appeared (first time, or again after a removal); hash is its content hash."""

    SCHEMA_VERSION: ClassVar[int] = 1
    kind: str
    key: str
    record: Any
    hash: str
    schema_version: int = SCHEMA_VERSION


class EntityChanged(msgspec.Struct, tag=True, frozen=True, kw_only=True):
    """A record changed: patch (RFC 6902) turns the previous record into the new one."""

    SCHEMA_VERSION: ClassVar[int] = 1
    kind: str
    key: str
    patch: list[dict[str, Any]]
    previous_hash: str
    hash: str
    schema_version: int = SCHEMA_VERSION


class EntityRemoved(msgspec.Struct, tag=True, frozen=True, kw_only=True):
    """A record disappeared (a tombstone); previous_hash is the hash it had.

    v1 named that field `hash`; v2 renamed it (see the upcaster below).
    """

    SCHEMA_VERSION: ClassVar[int] = 2
    kind: str
    key: str
    previous_hash: str
    schema_version: int = SCHEMA_VERSION


# Tagged union: a class name is its tag, written in "type" and stored as event_type.
Event = EntityAdded | EntityChanged | EntityRemoved
EVENT_TYPES: tuple[type[Event], ...] = (EntityAdded, EntityChanged, EntityRemoved)

_STRUCT_ENCODER = msgspec.json.Encoder(order="sorted")
_CLASSES: dict[str, type[Event]] = {}
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {}
for _cls in EVENT_TYPES:
    _tag = str(_cls.__struct_config__.tag)
    _CLASSES[_tag] = _cls
    _DECODERS[_tag] = msgspec.json.Decoder(_cls)
    upcasting.declare(_tag, _cls.SCHEMA_VERSION)


@upcasting.register("EntityRemoved", from_version=1)
def _removed_v1_to_v2(payload: upcasting.Payload) -> upcasting.Payload:
    payload["previous_hash"] = payload.pop("hash")
    return payload


def event_type(event: Event | type[Event]) -> str:
    """The tag stored as event_type ("EntityAdded", ...) of an event or event class."""
    return str(event.__struct_config__.tag)


def stream_id(kind: str, key: str) -> str:
    """The stream of one entity: "<kind>:<natural key>"."""
    if not kind or ":" in kind:
        raise ValueError(f"entity kind must be non-empty without ':', got {kind!r}")
    return f"{kind}:{key}"


def encode_event(event: Event, record_bytes: bytes | None = None) -> bytes:
    """The event as canonical JSON bytes (tag in "type", fields sorted).

    `record_bytes`, the canonical bytes of an EntityAdded's record that the caller already has, are
    spliced in as they are: the record is not encoded (nor checked) a second time.
    """
    if record_bytes is not None and isinstance(event, EntityAdded):
        # Every other field is a string or an int, whose msgspec form is already the canonical one.
        return _STRUCT_ENCODER.encode(msgspec.structs.replace(event, record=msgspec.Raw(record_bytes)))
    return canonical_bytes(event)


def decode_event(event_type: str, schema_version: int, data: bytes | str | dict[str, Any]) -> Event:
    """Decode a stored event, upcasting old schema versions first."""
    cls = _CLASSES.get(event_type)
    if cls is None:
        raise EventDecodeError(f"unknown event type {event_type!r}")
    try:
        if schema_version == cls.SCHEMA_VERSION:
            if isinstance(data, dict):
                event: Event = msgspec.convert(data, cls)
            else:
                event = _DECODERS[event_type].decode(data)
        else:
            payload = data if isinstance(data, dict) else decode_json(data)
            if not isinstance(payload, dict):
                raise EventDecodeError(f"{event_type} payload is not a JSON object")
            payload = upcasting.upcast(event_type, schema_version, payload)
            event = msgspec.convert(payload, cls)
    except (msgspec.DecodeError, CanonicalError) as exc:
        raise EventDecodeError(f"cannot decode {event_type} v{schema_version}: {exc}") from exc
    if event.schema_version != cls.SCHEMA_VERSION:
        raise EventDecodeError(
            f"{event_type} stored as v{schema_version} but its data says v{event.schema_version}"
        )
    return event


def fold(events: Iterable[Event]) -> JSON:
    """Replay one stream's events into its current record (None when absent or removed).

    Every hash is checked; an Added record is returned as is, not copied.
    """
    record: JSON = None
    current: str | None = None  # hash of record; None while the entity is absent
    for ev in events:
        if isinstance(ev, EntityAdded):
            if current is not None:
                raise FoldError(f"{ev.kind}:{ev.key}: added while it already exists")
            _check(ev.kind, ev.key, ev.record, ev.hash, "added record")
            record, current = ev.record, ev.hash
            continue
        if current is None:
            raise FoldError(f"{ev.kind}:{ev.key}: {event_type(ev)} with no current record")
        if ev.previous_hash != current:
            raise FoldError(
                f"{ev.kind}:{ev.key}: {event_type(ev)} expects previous hash"
                f" {ev.previous_hash}, stream is at {current}"
            )
        if isinstance(ev, EntityChanged):
            try:
                record = apply(record, ev.patch)
            except PatchError as exc:
                raise FoldError(f"{ev.kind}:{ev.key}: {exc}") from exc
            _check(ev.kind, ev.key, record, ev.hash, "patched record")
            current = ev.hash
        else:
            record, current = None, None
    return record


def _check(kind: str, key: str, record: JSON, expected: str, what: str) -> None:
    actual = content_hash(record)
    if actual != expected:
        raise FoldError(f"{kind}:{key}: {what} hashes to {actual}, event says {expected}")
