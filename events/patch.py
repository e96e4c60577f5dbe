"""RFC 6902 JSON Patch (add/remove/replace) between two JSON values, deep and type-aware."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import msgspec

from events.errors import PatchError

JSON = Any
Op = dict[str, Any]

_OPS = frozenset({"add", "remove", "replace"})
_BAD_TILDE = re.compile(r"~(?![01])")
# Only used to compare subtrees that Python's == already calls equal: unlike ==,
# it tells 1, 1.0 and true apart (and 0.0 from -0.0), in C.
_COMPARE = msgspec.json.Encoder(order="deterministic")


def escape(token: str) -> str:
    """Escape one reference token for a JSON Pointer (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    """Undo `escape`; "~1" is decoded before "~0" so "~01" stays "~1"."""
    return token.replace("~1", "/").replace("~0", "~")


_NULL, _BOOL, _INT, _FLOAT, _STR, _ARRAY, _OBJECT, _OTHER = range(8)
_CONTAINERS = (_ARRAY, _OBJECT)


def _kind(value: JSON) -> int:
    # bool before int: bool is an int subclass but a different JSON value.
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int):
        return _INT
    if isinstance(value, float):
        return _FLOAT
    if isinstance(value, str):
        return _STR
    if isinstance(value, (list, tuple)):
        return _ARRAY
    if isinstance(value, dict):
        return _OBJECT
    return _OTHER


def same(a: JSON, b: JSON) -> bool:
    """True when a and b have the same canonical JSON (1, 1.0 and True all differ)."""
    kind = _kind(a)
    if kind != _kind(b) or a != b:
        return False
    if kind == _FLOAT:
        return a != 0.0 or math.copysign(1.0, a) == math.copysign(1.0, b)
    if kind in _CONTAINERS:
        return bool(_COMPARE.encode(a) == _COMPARE.encode(b))
    return True


def diff(a: JSON, b: JSON) -> list[Op]:
    """JSON Patch turning a into b: dicts by key, lists by index; [] when they are the same.

    Op values are copies, so later changes to b do not leak into the patch.
    """
    ops: list[Op] = []
    _diff(a, b, "", ops)
    return ops


def _diff(a: JSON, b: JSON, path: str, ops: list[Op]) -> None:
    if same(a, b):
        return
    kind = _kind(a)
    if kind != _kind(b) or kind not in _CONTAINERS:
        ops.append({"op": "replace", "path": path, "value": _copy(b)})
    elif kind == _OBJECT:
        # Sorted keys: equal inputs give the same patch whatever their insertion order.
        for key in sorted(a):
            if key not in b:
                ops.append({"op": "remove", "path": f"{path}/{escape(key)}"})
            else:
                _diff(a[key], b[key], f"{path}/{escape(key)}", ops)
        for key in sorted(b):
            if key not in a:
                ops.append({"op": "add", "path": f"{path}/{escape(key)}", "value": _copy(b[key])})
    else:
        common = min(len(a), len(b))
        for i in range(common):
            _diff(a[i], b[i], f"{path}/{i}", ops)
        for i in range(common, len(b)):
            ops.append({"op": "add", "path": f"{path}/{i}", "value": _copy(b[i])})
        # From the end backwards so each index is still valid when removed.
        for i in range(len(a) - 1, common - 1, -1):
            ops.append({"op": "remove", "path": f"{path}/{i}"})


def _copy(value: JSON) -> JSON:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


def apply(doc: JSON, patch: Iterable[Op], *, in_place: bool = False) -> JSON:
    """Return a new document with patch applied; doc and patch are left untouched.

    With `in_place` the patch is applied to doc itself (what is returned may still be another object, for
    a patch that replaces the whole document): for a caller that owns doc, such as a record just decoded
    from the database, copying it first costs more than the patch (a real power is some 1,000 objects)."""
    result = doc if in_place else _copy(doc)
    for op in patch:
        result = _apply_op(result, op)
    return result


def _apply_op(doc: JSON, op: Any) -> JSON:
    if not isinstance(op, dict):
        raise PatchError(f"patch op must be an object, got {type(op).__name__}", "")
    path = op.get("path")
    if not isinstance(path, str):
        raise PatchError("patch op has no string 'path'", repr(path))
    name = op.get("op")
    if name not in _OPS:
        raise PatchError(f"unsupported patch op {name!r}", path)
    if name != "remove" and "value" not in op:
        raise PatchError(f"{name} op has no 'value'", path)
    parts = tokens(path)
    if not parts:
        if name == "remove":
            raise PatchError("cannot remove the whole document", path)
        return _copy(op["value"])
    parent = doc
    for token in parts[:-1]:
        parent = _child(parent, token, path)
    last = parts[-1]
    if isinstance(parent, dict):
        if name == "add":
            parent[last] = _copy(op["value"])
        elif last not in parent:
            raise PatchError(f"no member {last!r} to {name}", path)
        elif name == "remove":
            del parent[last]
        else:
            parent[last] = _copy(op["value"])
    elif isinstance(parent, list):
        if name == "add":
            index = len(parent) if last == "-" else _index(last, len(parent) + 1, path)
            parent.insert(index, _copy(op["value"]))
        else:
            index = _index(last, len(parent), path)
            if name == "remove":
                del parent[index]
            else:
                parent[index] = _copy(op["value"])
    else:
        raise PatchError(f"cannot {name} inside a {type(parent).__name__}", path)
    return doc


def tokens(pointer: str) -> list[str]:
    """The reference tokens of a JSON Pointer, unescaped; none for "" (the whole document)."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError("JSON Pointer must be empty or start with '/'", pointer)
    return [_token(t, pointer) for t in pointer[1:].split("/")]


def resolve(doc: JSON, pointer: str) -> JSON:
    """The value at a JSON Pointer in doc; `PatchError` when the path does not exist there."""
    node = doc
    for token in tokens(pointer):
        node = _child(node, token, pointer)
    return node


def _token(token: str, path: str) -> str:
    if "~" in token and _BAD_TILDE.search(token):
        raise PatchError("'~' must be followed by 0 or 1 in a JSON Pointer", path)
    return unescape(token)


def _child(parent: JSON, token: str, path: str) -> JSON:
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"no member {token!r}", path)
        return parent[token]
    if isinstance(parent, list):
        return parent[_index(token, len(parent), path)]
    raise PatchError(f"cannot descend into a {type(parent).__name__}", path)


def _index(token: str, bound: int, path: str) -> int:
    # RFC 6901: decimal digits, no leading zeros, no sign.
    if not token.isascii() or not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f"invalid array index {token!r}", path)
    index = int(token)
    if index >= bound:
        raise PatchError(f"array index {index} out of range", path)
    return index
