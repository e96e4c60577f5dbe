"""JSON Patch: diff/apply round trips exactly (canonically), type-aware, RFC 6902/6901 conformant."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events import PatchError, apply, canonical_bytes, diff, same
from tests.events.strategies import JSON_VALUES, json_pairs, reorder


@given(json_pairs())
def test_apply_diff_gives_b_exactly(pair: tuple[Any, Any]) -> None:
    a, b = pair
    a_before, b_before = canonical_bytes(a), canonical_bytes(b)
    patch = diff(a, b)
    result = apply(a, patch)
    assert result == b
    # == alone cannot see 1 vs 1.0 vs True; canonical bytes can.
    assert canonical_bytes(result) == canonical_bytes(b)
    assert canonical_bytes(a) == a_before and canonical_bytes(b) == b_before
    assert (patch == []) == (canonical_bytes(a) == canonical_bytes(b))


@given(json_pairs())
def test_applied_in_place_the_result_is_the_same_and_the_patch_untouched(pair: tuple[Any, Any]) -> None:
    a, b = pair
    patch = diff(a, b)
    patch_before = canonical_bytes(patch)
    mine = copy.deepcopy(a)
    result = apply(mine, patch, in_place=True)
    assert canonical_bytes(result) == canonical_bytes(b)
    if isinstance(a, dict) and isinstance(b, dict):
        assert result is mine  # no copy of the document was made
    assert canonical_bytes(patch) == patch_before


@given(JSON_VALUES, st.randoms(use_true_random=False))
def test_no_diff_with_itself_or_a_reordered_copy(value: Any, rnd: random.Random) -> None:
    assert diff(value, value) == []
    assert diff(value, reorder(value, rnd)) == []
    assert diff(value, copy.deepcopy(value)) == []


@given(json_pairs(), st.randoms(use_true_random=False))
def test_patch_ignores_key_insertion_order(pair: tuple[Any, Any], rnd: random.Random) -> None:
    a, b = pair
    assert diff(reorder(a, rnd), reorder(b, rnd)) == diff(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [(1, 1.0), (1, True), (1.0, True), (0, False), (0.0, -0.0), ([1], [True]), ({"x": [1.0]}, {"x": [1]})],
)
def test_type_changes_python_calls_equal_are_replaced(a: Any, b: Any) -> None:
    assert a == b and not same(a, b)
    patch = diff(a, b)
    assert [op["op"] for op in patch] == ["replace"]
    assert canonical_bytes(apply(a, patch)) == canonical_bytes(b)


def test_deep_paths_and_escaping() -> None:
    a = {"a/b": {"m~n": [1, 2, 3]}, "keep": {"x": 1}, "gone": 0}
    b = {"a/b": {"m~n": [1, 5]}, "keep": {"x": 1}, "new": [None]}
    patch = diff(a, b)
    assert patch == [
        {"op": "replace", "path": "/a~1b/m~0n/1", "value": 5},
        {"op": "remove", "path": "/a~1b/m~0n/2"},
        {"op": "remove", "path": "/gone"},
        {"op": "add", "path": "/new", "value": [None]},
    ]
    assert [op["path"] for op in patch] == ["/a~1b/m~0n/1", "/a~1b/m~0n/2", "/gone", "/new"]
    assert apply(a, patch) == b


def test_list_tail_removed_from_the_end() -> None:
    patch = diff([0, 1, 2, 3], [9])
    assert [op["path"] for op in patch] == ["/0", "/3", "/2", "/1"]
    assert apply([0, 1, 2, 3], patch) == [9]
    assert diff([0], [0, 1, 2]) == [
        {"op": "add", "path": "/1", "value": 1},
        {"op": "add", "path": "/2", "value": 2},
    ]


def test_whole_document_replace() -> None:
    assert diff({"a": 1}, [1]) == [{"op": "replace", "path": "", "value": [1]}]
    assert apply({"a": 1}, [{"op": "replace", "path": "", "value": [1]}]) == [1]


def test_neither_input_nor_patch_is_shared_with_the_result() -> None:
    a: dict[str, Any] = {"l": [1, {"x": 1}]}
    b: dict[str, Any] = {"l": [1, {"x": 2}], "n": {"deep": [1]}}
    patch = diff(a, b)
    b["n"]["deep"].append(2)
    result = apply(a, patch)
    assert result == {"l": [1, {"x": 2}], "n": {"deep": [1]}}
    result["l"][1]["y"] = 3
    result["n"]["deep"].append(3)
    assert a == {"l": [1, {"x": 1}]}
    assert apply(a, patch)["n"] == {"deep": [1]}


# RFC 6902 appendix A examples (the add/remove/replace ones).
@pytest.mark.parametrize(
    ("doc", "patch", "expected"),
    [
        ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"baz": "qux", "foo": "bar"}),
        (
            {"foo": ["bar", "baz"]},
            [{"op": "add", "path": "/foo/1", "value": "qux"}],
            {"foo": ["bar", "qux", "baz"]},
        ),
        ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
        ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),
        (
            {"baz": "qux", "foo": "bar"},
            [{"op": "replace", "path": "/baz", "value": "boo"}],
            {"baz": "boo", "foo": "bar"},
        ),
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
            {"foo": "bar", "child": {"grandchild": {}}},
        ),
        (
            {"foo": ["bar"]},
            [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
            {"foo": ["bar", ["abc", "def"]]},
        ),
        ({"/": 9, "~1": 10}, [{"op": "replace", "path": "/~01", "value": 0}], {"/": 9, "~1": 0}),
    ],
)
def test_rfc6902_examples(doc: Any, patch: list[dict[str, Any]], expected: Any) -> None:
    assert apply(doc, patch) == expected


@pytest.mark.parametrize(
    ("doc", "op", "path"),
    [
        ({"a": 1}, {"op": "remove", "path": "/b"}, "/b"),
        ({"a": 1}, {"op": "replace", "path": "/b", "value": 1}, "/b"),
        ({"a": {"b": 1}}, {"op": "add", "path": "/x/y", "value": 1}, "/x/y"),
        ({"a": [1]}, {"op": "replace", "path": "/a/1", "value": 1}, "/a/1"),
        ({"a": [1]}, {"op": "add", "path": "/a/2", "value": 1}, "/a/2"),
        ({"a": [1]}, {"op": "remove", "path": "/a/01"}, "/a/01"),
        ({"a": [1]}, {"op": "remove", "path": "/a/-1"}, "/a/-1"),
        ({"a": [1]}, {"op": "remove", "path": "/a/-"}, "/a/-"),
        ({"a": [1]}, {"op": "remove", "path": "/a/x"}, "/a/x"),
        ({"a": 1}, {"op": "add", "path": "/a/b", "value": 1}, "/a/b"),
        ({"a": 1}, {"op": "remove", "path": "/a~2"}, "/a~2"),
        ({"a": 1}, {"op": "remove", "path": "a"}, "a"),
        ({"a": 1}, {"op": "remove", "path": ""}, ""),
        ({"a": 1}, {"op": "move", "from": "/a", "path": "/b"}, "/b"),
        ({"a": 1}, {"op": "add", "path": "/b"}, "/b"),
    ],
)
def test_bad_patches_raise_with_the_path(doc: Any, op: dict[str, Any], path: str) -> None:
    before = canonical_bytes(doc)
    with pytest.raises(PatchError) as info:
        apply(doc, [op])
    assert info.value.path == path
    assert repr(path) in str(info.value)
    assert canonical_bytes(doc) == before


def test_malformed_ops_raise() -> None:
    with pytest.raises(PatchError):
        apply({}, ["not an op"])  # type: ignore[list-item]
    with pytest.raises(PatchError):
        apply({}, [{"op": "add", "value": 1}])
