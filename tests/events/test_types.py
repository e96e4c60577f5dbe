"""Event types: encoding, decoding with upcasting, and folding a stream."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from events import (
    EVENT_TYPES,
    EntityAdded,
    EntityChanged,
    EntityRemoved,
    Event,
    EventDecodeError,
    FoldError,
    canonical_bytes,
    content_hash,
    current_version,
    decode_event,
    diff,
    encode_event,
    event_type,
    fold,
    register,
    stream_id,
    upcast,
    upcasting,
)

V1 = {"a": 1, "effects": [{"scale": 1.5}], "tiny": 1e-05}
V2 = {"a": 1.0, "effects": [{"scale": 2.0}, {"scale": 0.5}]}
V3 = {"a": True, "effects": []}


def added(record: Any) -> EntityAdded:
    return EntityAdded(kind="power", key="P", record=record, hash=content_hash(record))


def changed(old: Any, new: Any) -> EntityChanged:
    return EntityChanged(
        kind="power", key="P", patch=diff(old, new), previous_hash=content_hash(old), hash=content_hash(new)
    )


def removed(old: Any) -> EntityRemoved:
    return EntityRemoved(kind="power", key="P", previous_hash=content_hash(old))


def stored(ev: Event) -> tuple[str, int, bytes]:
    return event_type(ev), ev.schema_version, encode_event(ev)


def test_versions_and_tags() -> None:
    assert [event_type(cls) for cls in EVENT_TYPES] == ["EntityAdded", "EntityChanged", "EntityRemoved"]
    assert added(V1).schema_version == EntityAdded.SCHEMA_VERSION == 1
    assert changed(V1, V2).schema_version == EntityChanged.SCHEMA_VERSION == 1
    assert removed(V1).schema_version == EntityRemoved.SCHEMA_VERSION == 2
    assert current_version("EntityRemoved") == 2
    with pytest.raises(AttributeError):
        added(V1).hash = "x"  # type: ignore[misc]


def test_stream_id() -> None:
    assert stream_id("power", "Blaster_Ranged.Fire_Blast.Flares") == "power:Blaster_Ranged.Fire_Blast.Flares"
    with pytest.raises(ValueError):
        stream_id("po:wer", "k")


@pytest.mark.parametrize("ev", [added(V1), changed(V1, V2), removed(V2)])
def test_encode_decode_round_trip(ev: Event) -> None:
    data = encode_event(ev)
    assert data == canonical_bytes(msgspec.to_builtins(ev))
    assert json.loads(data)["type"] == event_type(ev)
    for form in (data, data.decode(), json.loads(data)):
        assert decode_event(event_type(ev), ev.schema_version, form) == ev


def test_v1_removed_is_upcast_on_read() -> None:
    payload = {"kind": "power", "key": "P", "hash": "abc"}
    for form in (
        json.dumps(payload).encode(),
        payload,
        {**payload, "type": "EntityRemoved", "schema_version": 1},
    ):
        ev = decode_event("EntityRemoved", 1, form)
        assert ev == EntityRemoved(kind="power", key="P", previous_hash="abc")
        assert ev.schema_version == 2
    assert payload == {"kind": "power", "key": "P", "hash": "abc"}
    assert upcast("EntityRemoved", 1, payload) == {
        "kind": "power",
        "key": "P",
        "previous_hash": "abc",
        "schema_version": 2,
    }
    assert upcast("EntityRemoved", 2, {"x": 1}) == {"x": 1}


def test_every_old_version_has_an_upcaster() -> None:
    for cls in EVENT_TYPES:
        tag = event_type(cls)
        for version in range(1, cls.SCHEMA_VERSION):
            assert (tag, version) in upcasting._UPCASTERS


@pytest.mark.parametrize(
    ("etype", "version", "data", "message"),
    [
        ("EntityRemoved", 3, b'{"kind":"power","key":"P","previous_hash":"h"}', "newer than this code knows"),
        (
            "EntityAdded",
            2,
            b'{"kind":"power","key":"P","record":{},"hash":"h"}',
            "newer than this code knows",
        ),
        ("EntityRemoved", 0, b"{}", "not valid"),
        ("EntityMoved", 1, b"{}", "unknown event type"),
        ("EntityRemoved", 1, b'{"kind":"power","key":"P"}', "cannot upcast"),
        ("EntityRemoved", 1, b"[1]", "not a JSON object"),
        ("EntityRemoved", 1, b"{nope", "invalid JSON"),
        ("EntityRemoved", 2, b"{nope", "cannot decode"),
        ("EntityAdded", 1, b'{"kind":"power","key":"P","hash":"h"}', "missing required field"),
        (
            "EntityAdded",
            1,
            b'{"type":"EntityRemoved","kind":"power","key":"P","previous_hash":"h"}',
            "Invalid value",
        ),
        (
            "EntityAdded",
            1,
            b'{"kind":"power","key":"P","record":{},"hash":"h","schema_version":7}',
            "data says v7",
        ),
    ],
)
def test_undecodable_events_raise(etype: str, version: int, data: bytes, message: str) -> None:
    with pytest.raises(EventDecodeError, match=message):
        decode_event(etype, version, data)


def test_registering_an_upcaster_twice_is_refused() -> None:
    with pytest.raises(ValueError):
        register("EntityRemoved", 1)(lambda payload: payload)


def test_fold_replays_a_stream_through_storage() -> None:
    events: list[Event] = [added(V1), changed(V1, V2), changed(V2, V3), removed(V3), added(V2)]
    decoded = [decode_event(*stored(ev)) for ev in events]
    for n, expected in enumerate([None, V1, V2, V3, None, V2]):
        result = fold(decoded[:n])
        assert canonical_bytes(result) == canonical_bytes(expected)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        (
            [
                added(V1),
                EntityChanged(
                    kind="power",
                    key="P",
                    patch=diff(V1, V2),
                    previous_hash=content_hash(V1),
                    hash=content_hash(V3),
                ),
            ],
            "hashes to",
        ),
        ([EntityAdded(kind="power", key="P", record=V1, hash=content_hash(V2))], "hashes to"),
        ([added(V1), changed(V2, V3)], "expects previous hash"),
        ([changed(V1, V2)], "no current record"),
        ([added(V1), removed(V1), removed(V1)], "no current record"),
        ([added(V1), added(V1)], "already exists"),
        (
            [
                added(V1),
                EntityChanged(
                    kind="power",
                    key="P",
                    patch=[{"op": "remove", "path": "/zz"}],
                    previous_hash=content_hash(V1),
                    hash="h",
                ),
            ],
            "/zz",
        ),
    ],
)
def test_fold_rejects_inconsistent_streams(events: list[Event], message: str) -> None:
    with pytest.raises(FoldError, match=message):
        fold(events)


def test_fold_catches_a_type_only_change() -> None:
    # 1 -> 1.0 changes the hash; a patch that drops that change must not fold.
    bad = EntityChanged(
        kind="power", key="P", patch=[], previous_hash=content_hash({"a": 1}), hash=content_hash({"a": 1.0})
    )
    with pytest.raises(FoldError):
        fold([added({"a": 1}), bad])


def test_encode_event_with_record_bytes_equals_the_canonical_form() -> None:
    from events import EntityAdded, canonical_bytes, content_hash, encode_event

    for record in ({"a": 1.0e-6, "b": [None, 2.5e16], "s": 'é\u0000\n"\\'}, {}, {"x": {"y": [1, True, 0.1]}}):
        ev = EntityAdded(kind="power", key="K\u2028é3e4", record=record, hash=content_hash(record))
        assert encode_event(ev, canonical_bytes(record)) == canonical_bytes(ev) == encode_event(ev)
