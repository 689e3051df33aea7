"""The strict JSON parser used for everything that comes from outside."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import strictjson
from keys.errors import MalformedInput, TooDeep, TooLarge

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_round_trip_matches_stdlib(value: object) -> None:
    text = json.dumps(value)
    assert strictjson.loads(text) == json.loads(text)
    assert strictjson.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"a":1,"a":2}', "duplicate"),
        (b'{"alg":"ES256","x":{"k":1,"k":1}}', "duplicate"),
        (b"NaN", "constant"),
        (b"[Infinity]", "constant"),
        (b"[-Infinity]", "constant"),
        (b"[1e400]", "infinity"),
        (b'"\\ud800"', "surrogate"),
        (b'["\\udc00x"]', "surrogate"),
        (b"\xef\xbb\xbf{}", "byte-order mark"),
        (b'"\xff"', "UTF-8"),
        (b"[1] [2]", "trailing"),
        (b"", "invalid JSON"),
        (b"[1,]", "invalid JSON"),
        (b"{'a':1}", "invalid JSON"),
        (b'"\x01"', "invalid JSON"),
    ],
)
def test_rejects(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedInput, match=reason):
        strictjson.loads(data)


def test_accepts_valid_surrogate_pairs_and_whitespace() -> None:
    assert strictjson.loads(' \n\t["\\ud83d\\ude00"] \r\n') == ["\U0001f600"]


def test_escaped_backslash_before_u_is_not_a_surrogate() -> None:
    assert strictjson.loads('"\\\\ud800"') == "\\ud800"


def test_depth_limit_is_exact() -> None:
    assert strictjson.loads("[" * 64 + "]" * 64, max_depth=64) == strictjson.loads(
        "[" * 64 + "]" * 64
    )
    with pytest.raises(TooDeep):
        strictjson.loads("[" * 65 + "]" * 65, max_depth=64)
    with pytest.raises(TooDeep):
        strictjson.loads('{"a":' * 9 + "1" + "}" * 9, max_depth=8)
    assert strictjson.loads('{"a":' * 8 + "1" + "}" * 8, max_depth=8)


@pytest.mark.parametrize("depth", [2, 7, 64])
def test_depth_limit_with_alternating_arrays_and_objects(depth: int) -> None:
    """``[{"a":[{...}]}]``: each level is one bracket, whatever its kind."""

    def nested(levels: int) -> str:
        text = "1"
        for level in range(levels):
            text = f"[{text}]" if level % 2 else f'{{"a":{text}}}'
        return text

    assert strictjson.loads(nested(depth), max_depth=depth) is not None
    with pytest.raises(TooDeep):
        strictjson.loads(nested(depth + 1), max_depth=depth)


def test_brackets_inside_strings_do_not_count_towards_depth() -> None:
    assert strictjson.loads('["[[[[[[[[[[", "\\"]]]]"]', max_depth=1) == ["[[[[[[[[[[", '"]]]]']


def test_very_deep_input_is_too_deep_not_a_crash() -> None:
    with pytest.raises(TooDeep):
        strictjson.loads("[" * 100_000 + "]" * 100_000)


def test_size_cap_is_checked_first() -> None:
    with pytest.raises(TooLarge):
        strictjson.loads(b"[" + b"1," * 600 + b"1]", max_bytes=1000)


def test_loads_object_requires_an_object() -> None:
    assert strictjson.loads_object(b'{"a":[]}') == {"a": []}
    with pytest.raises(MalformedInput, match="not an object"):
        strictjson.loads_object(b"[]")
