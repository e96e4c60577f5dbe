"""Canonical JSON: json.dumps' sorted compact UTF-8 form, produced by msgspec where that is identical."""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from events import CanonicalError, EntityAdded, canonical_bytes, content_hash, decode
from events.canonical import _ENCODER, _may_differ
from tests.events.strategies import FLOATS, JSON_VALUES, reorder


def reference(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@given(JSON_VALUES)
def test_matches_json_dumps(value: Any) -> None:
    assert canonical_bytes(value) == reference(value)


@given(st.lists(FLOATS | st.integers(), max_size=8))
def test_matches_json_dumps_for_any_float(values: list[Any]) -> None:
    assert canonical_bytes(values) == reference(values)
    for v in values:
        assert canonical_bytes(v) == reference(v)
        assert canonical_bytes({"k": -abs(v)}) == reference({"k": -abs(v)})


@given(JSON_VALUES)
def test_fast_path_never_misses_a_difference(value: Any) -> None:
    # The guard may raise false alarms but must flag every output that json.dumps would write differently.
    out = _ENCODER.encode(value)
    if out != reference(value):
        assert _may_differ(out)


@pytest.mark.parametrize(
    "value",
    [
        1.0,
        1e16,
        -1e16,
        1.2345e17,
        1e-5,
        -1e-5,
        1.5e-5,
        1e-6,
        1e-9,
        1e-10,
        5e-324,
        1.7976931348623157e308,
        0.0001,
        9999999999999998.0,
    ],
)
def test_exponent_notation_follows_python(value: float) -> None:
    for v in (value, [value], {"x": value}, [1, value], {"x": [value]}):
        assert canonical_bytes(v) == reference(v)
    assert canonical_bytes(value) == repr(value).encode()


@given(JSON_VALUES, st.randoms(use_true_random=False))
def test_independent_of_key_insertion_order(value: Any, rnd: random.Random) -> None:
    assert canonical_bytes(reorder(value, rnd)) == canonical_bytes(value)


def test_form() -> None:
    value = {"b": [1, 1.0, True, None], "a": {"é": "日本", "z": -0.0}, "A": "\n\u2028"}
    assert (
        canonical_bytes(value) == '{"A":"\\n\u2028","a":{"z":-0.0,"é":"日本"},"b":[1,1.0,true,null]}'.encode()
    )
    assert content_hash(value) == hashlib.sha256(canonical_bytes(value)).hexdigest()
    assert canonical_bytes(1) != canonical_bytes(1.0) != canonical_bytes(True)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_raise(bad: float) -> None:
    for v in (bad, [bad], {"a": {"b": [1, bad]}}, [None, bad]):
        with pytest.raises(CanonicalError):
            canonical_bytes(v)
    with pytest.raises(CanonicalError):
        canonical_bytes(EntityAdded(kind="power", key="k", record={"x": bad}, hash=""))


def test_null_without_nan_is_fine() -> None:
    assert canonical_bytes({"a": None, "b": [None]}) == b'{"a":null,"b":[null]}'


@pytest.mark.parametrize("bad", [{1: "int key"}, "\ud800", object(), {"a": None, "b": object()}])
def test_unencodable_values_raise(bad: Any) -> None:
    with pytest.raises(CanonicalError):
        canonical_bytes(bad)


def test_non_json_types_lower_the_same_on_both_paths() -> None:
    assert canonical_bytes({"s": {2, 1}}) == b'{"s":[1,2]}'
    assert canonical_bytes({"s": {2, 1}, "n": None}) == b'{"n":null,"s":[1,2]}'


def test_structs_encode_sorted_with_their_tag() -> None:
    ev = EntityAdded(kind="power", key="k", record={"b": 1e-05, "a": 1}, hash="h")
    expected = reference(msgspec.to_builtins(ev))
    assert canonical_bytes(ev) == expected
    assert b'"type":"EntityAdded"' in expected


@given(JSON_VALUES)
def test_decode_round_trips(value: Any) -> None:
    data = canonical_bytes(value)
    assert canonical_bytes(decode(data)) == data


@pytest.mark.parametrize("bad", [b"{nope", b"[1e400]", b"NaN"])
def test_decode_rejects_bad_json(bad: bytes) -> None:
    with pytest.raises(CanonicalError):
        decode(bad)
