"""Hypothesis strategies for JSON values shared by the events tests."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st

# Few, colliding keys so random pairs share structure; "~" and "/" need escaping.
KEYS = st.sampled_from(["a", "b", "~", "/", "a/b", "~0", "~1", "m~n/", "", "é", "日本", "0", "-"]) | st.text(
    max_size=4
)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | FLOATS
    | st.text(max_size=8)
    | st.sampled_from([0, 1, 1.0, True, False, 0.0, -0.0])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25,
)
# Type flips that Python's == cannot see but canonical JSON can.
_LOOKALIKES: list[Any] = [0, 0.0, -0.0, False, 1, 1.0, True]


def _mutate(value: Any, draw: Any) -> Any:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(JSON_VALUES)
    if isinstance(value, bool | int | float) and choice < 5:
        return draw(st.sampled_from(_LOOKALIKES))
    if isinstance(value, dict):
        out = {k: (_mutate(v, draw) if draw(st.booleans()) else v) for k, v in value.items()}
        for k in draw(st.lists(st.sampled_from(sorted(out)), max_size=2)) if out else []:
            out.pop(k, None)
        out.update(draw(st.dictionaries(KEYS, JSON_VALUES, max_size=2)))
        return out
    if isinstance(value, list):
        out_list = [(_mutate(v, draw) if draw(st.booleans()) else v) for v in value]
        cut = draw(st.integers(0, len(out_list)))
        return out_list[:cut] + draw(st.lists(JSON_VALUES, max_size=3))
    return value


@st.composite
def json_pairs(draw: Any) -> tuple[Any, Any]:
    """Two JSON values: independent, or the second a deep mutation of the first."""
    a = draw(JSON_VALUES)
    b = _mutate(a, draw) if draw(st.booleans()) else draw(JSON_VALUES)
    return a, b


def reorder(value: Any, rnd: random.Random) -> Any:
    """The same JSON value rebuilt with every dict's keys inserted in a shuffled order."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: reorder(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [reorder(v, rnd) for v in value]
    return value
