"""Events: canonical JSON and hashes, JSON Patch, event types, upcasting and fold.

The bottom layer of powerlog: it imports no other powerlog package.
"""

from events.canonical import JSON, canonical_bytes, content_hash, decode
from events.errors import (
    CanonicalError,
    EventDecodeError,
    FoldError,
    PatchError,
    PowerlogError,
)
from events.patch import apply, diff, resolve, same, tokens
from events.types import (
    EVENT_TYPES,
    EntityAdded,
    EntityChanged,
    EntityRemoved,
    Event,
    decode_event,
    encode_event,
    event_type,
    fold,
    stream_id,
)
from events.upcasting import current_version, register, upcast

__all__ = [
    "EVENT_TYPES",
    "JSON",
    "CanonicalError",
    "EntityAdded",
    "EntityChanged",
    "EntityRemoved",
    "Event",
    "EventDecodeError",
    "FoldError",
    "PatchError",
    "PowerlogError",
    "apply",
    "canonical_bytes",
    "content_hash",
    "current_version",
    "decode",
    "decode_event",
    "diff",
    "encode_event",
    "event_type",
    "fold",
    "register",
    "resolve",
    "same",
    "stream_id",
    "tokens",
    "upcast",
]
