"""protocol/canonical.py: RFC 8785 (JCS) bytes and the digests over them.

Examples are taken from the RFC text (s3.2.2, s3.2.3, Appendix B); the
reference implementation ``rfc8785`` is the oracle for the properties.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import pytest
import rfc8785
from hypothesis import example, given
from hypothesis import strategies as st

from keys import strictjson
from protocol.canonical import (
    DIGEST_PREFIX,
    canonical_digest,
    canonical_json,
    digest,
    is_digest,
    require_plain_json,
)
from protocol.errors import InvalidArtifact
from tests.protocol._support import DETERMINISTIC, SAFE_INT, json_text, json_values, raises_exactly

# --------------------------------------------------------------------------- RFC examples


def test_rfc8785_section_3_2_2_example() -> None:
    """The full input/output example of RFC 8785 s3.2.2 (numbers, escapes, literals)."""
    source = r"""{
      "numbers": [333333333.33333329, 1E30, 4.50,
                  2e-3, 0.000000000000000000000000001],
      "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
      "literals": [null, true, false]
    }"""
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    ).encode()
    assert canonical_json(strictjson.loads(source)) == expected


def test_rfc8785_section_3_2_3_sorting_example() -> None:
    """Members sorted by UTF-16 code units: the emoji (D83D DE00) precedes U+FB33."""
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    ).encode()
    assert canonical_json(value) == expected


def test_non_bmp_key_sorts_before_uffxx_key() -> None:
    """Code-point order (Python's) and UTF-16 order (JCS's) disagree exactly here."""
    value = {"\uff61": 1, "\U0001f600": 2, "z": 3}
    assert canonical_json(value) == '{"z":3,"\U0001f600":2,"\uff61":1}'.encode()
    assert sorted(value) == ["z", "\uff61", "\U0001f600"], "Python order differs"
    nested = {"outer": [{"\uffff": 0, "\U00010000": 1}]}
    assert canonical_json(nested) == '{"outer":[{"\U00010000":1,"\uffff":0}]}'.encode()


# RFC 8785 Appendix B: IEEE 754 bit patterns and their JCS serialisation.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]

#: Appendix B values that JCS prints as plain digits of 16+ places. Baton refuses
#: them (ADR 0004, decision 4): they would read back as integers beyond 2**53.
APPENDIX_B_INTEGRAL = [
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
]


def _double(bits: str) -> float:
    return float(struct.unpack(">d", bytes.fromhex(bits))[0])


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_rfc8785_appendix_b_numbers(bits: str, expected: str) -> None:
    value = _double(bits)
    assert canonical_json([value]) == f"[{expected}]".encode()
    assert canonical_json({"n": value}) == f'{{"n":{expected}}}'.encode()
    assert canonical_json(value) == expected.encode()


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B_INTEGRAL)
def test_integral_doubles_beyond_2_53_are_refused(bits: str, expected: str) -> None:
    value = _double(bits)
    assert bytes(rfc8785.dumps(value)) == expected.encode(), "what JCS would print"
    assert isinstance(strictjson.loads(expected), int), "and what it would read back as"
    for placed in (value, [value], {"n": value}, {"a": [1, {"b": value}]}):
        with raises_exactly(InvalidArtifact):
            canonical_json(placed)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e21, "1e+21"),
        (1.5e300, "1.5e+300"),
        (2.0**53 - 1, "9007199254740991"),
        (1e-7, "1e-7"),
        (1e-6, "0.000001"),
        (-0.0, "0"),
        (100.0, "100"),
        (1.0, "1"),
        (-1.5, "-1.5"),
        (0.1, "0.1"),
        (SAFE_INT, "9007199254740991"),
        (-SAFE_INT, "-9007199254740991"),
        (10**15, "1000000000000000"),
    ],
)
def test_numbers_in_ecmascript_form(value: float, expected: str) -> None:
    assert canonical_json([value, {"k": value}]) == f'[{expected},{{"k":{expected}}}]'.encode()


def test_top_level_scalars_are_canonicalised_like_nested_ones() -> None:
    """A bare number gets the ECMAScript form too, not Python's repr.

    Baton canonicalises bare values: ``pii.commitment`` hashes ``JCS(value)``
    of a masked field and ``handoff`` digests ``arguments``; a JCS verifier
    (the inbox in the browser) computes ``1`` where Python's repr is ``1.0``.
    """
    values = [1.0, -0.0, 1e-7, 100.0, 2.5e-8]
    produced = {repr(v): canonical_json(v) for v in values}
    expected = {repr(v): bytes(rfc8785.dumps(v)) for v in values}
    assert expected == {
        "1.0": b"1",
        "-0.0": b"0",
        "1e-07": b"1e-7",
        "100.0": b"100",
        "2.5e-08": b"2.5e-8",
    }
    assert produced == expected


@pytest.mark.parametrize("value", [2**53, -(2**53), 2**53 + 1, 10**16, -(10**20)])
def test_integers_outside_the_exact_range_are_refused(value: int) -> None:
    """I-JSON (RFC 7493 s2.2): integers beyond +/-(2**53 - 1) have no exact double."""
    for wrapped in ([value], {"n": value}, {"a": [1, {"b": value}]}):
        with raises_exactly(InvalidArtifact):
            canonical_json(wrapped)


def test_top_level_integer_outside_the_exact_range_is_refused() -> None:
    """Also when the integer is the whole value (no preceding ``[``, ``,`` or ``:``)."""
    with pytest.raises(rfc8785.IntegerDomainError):
        rfc8785.dumps(2**53)
    with raises_exactly(InvalidArtifact):
        canonical_json(2**53)


# --------------------------------------------------------------------------- strings


def _expected_escape(code: int) -> str:
    short = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
    return short.get(code, f"\\u{code:04x}")


@pytest.mark.parametrize("code", range(0x20))
def test_control_characters_use_the_mandatory_escapes(code: int) -> None:
    text = f"a{chr(code)}b"
    assert canonical_json(text) == f'"a{_expected_escape(code)}b"'.encode()
    assert (
        canonical_json({text: text})
        == f'{{"a{_expected_escape(code)}b":"a{_expected_escape(code)}b"}}'.encode()
    )


def test_other_characters_are_not_escaped() -> None:
    text = "\"\\/\x7f\u0080\u2028\u2029\u00e9\U0001f600<>&'"
    assert (
        canonical_json(text) == ('"\\"\\\\/\x7f\u0080\u2028\u2029\u00e9\U0001f600<>&\'"').encode()
    )


def test_literals_and_whitespace() -> None:
    assert canonical_json(None) == b"null"
    assert canonical_json(True) == b"true"
    assert canonical_json(False) == b"false"
    assert canonical_json({"b": [1, 2, {}], "a": []}) == b'{"a":[],"b":[1,2,{}]}'
    assert canonical_json("") == b'""'


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        [float("nan")],
        {"x": float("inf")},
        "\ud800",
        {"a": "lone \udfff"},
        {"\ud83d": 1},
        ["\U0001f600", "\ud800"],
        b"bytes",
        {1, 2},
        object(),
        {"a": b"bytes"},
    ],
    ids=repr,
)
def test_unrepresentable_values_are_refused(value: Any) -> None:
    with raises_exactly(InvalidArtifact) as info:
        canonical_json(value)
    assert info.value.http_status == 400


def test_non_string_keys_are_a_precondition_checked_at_python_entry_points() -> None:
    """``canonical_json`` does not walk values for key types (ADR 0004,
    consequences); ``require_plain_json`` is the check for Python-built JSON."""
    bad: list[Any] = [{1: "a"}, {True: 1}, {None: 0}, {"x": {2.5: 1}}, (1, 2)]
    for value in bad:
        with raises_exactly(InvalidArtifact):
            require_plain_json(value)
    good: list[Any] = [{"a": [1, {"b": None}]}, [], "x", 1.5, None]
    for value in good:
        require_plain_json(value)


# --------------------------------------------------------------------------- digests


def test_digest_format() -> None:
    empty = digest(b"")
    assert empty == DIGEST_PREFIX + hashlib.sha256(b"").hexdigest()
    assert empty == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert is_digest(empty)


def test_canonical_digest_ignores_member_order() -> None:
    one = canonical_digest({"b": 1, "a": [1.0, "x"]})
    two = canonical_digest({"a": [1, "x"], "b": 1})
    assert one == two == digest(b'{"a":[1,"x"],"b":1}')


@pytest.mark.parametrize(
    "value",
    [
        "sha256:" + "A" * 64,
        "sha256:" + "0" * 63,
        "sha256:" + "0" * 65,
        "SHA256:" + "0" * 64,
        "sha512:" + "0" * 64,
        "0" * 64,
        "sha256:" + "0" * 64 + "\n",
        "sha256:" + "g" * 64,
        None,
        b"sha256:" + b"0" * 64,
        64,
    ],
)
def test_is_digest_refuses_malformed(value: object) -> None:
    assert is_digest(value) is False


# --------------------------------------------------------------------------- properties

_EDGE_FLOATS = [1.0, -0.0, 1e-7, 1e21, 100.0, 5e-324, 1.7976931348623157e308]


@DETERMINISTIC
@given(json_values)
@example(1.0)
@example(-0.0)
@example({"\uff61": 0, "\U0001f600": [1e-7, 1e21]})
def test_matches_the_reference_implementation(value: Any) -> None:
    """For every JSON value Baton accepts, the fast path and rfc8785 agree byte for byte."""
    assert canonical_json(value) == bytes(rfc8785.dumps(value))


@DETERMINISTIC
@given(st.lists(json_values, max_size=4) | st.dictionaries(json_text, json_values, max_size=4))
@example([*_EDGE_FLOATS, SAFE_INT, -SAFE_INT])
@example({"\U0001f600": "a", "\uffee": "b", "\x00": "\x1f"})
def test_matches_the_reference_inside_containers(value: Any) -> None:
    assert canonical_json(value) == bytes(rfc8785.dumps(value))
    assert canonical_digest(value) == digest(bytes(rfc8785.dumps(value)))


_OUT_OF_RANGE = st.integers(min_value=2**53) | st.integers(max_value=-(2**53))
_CONTEXTS = st.sampled_from(["bare", "list", "object", "nested"])


def _place(value: Any, context: str) -> Any:
    return {
        "bare": value,
        "list": [0, value],
        "object": {"k": value},
        "nested": {"a": [{"b": value}]},
    }[context]


@DETERMINISTIC
@given(_OUT_OF_RANGE, _CONTEXTS)
@example(2**53, "bare")
@example(-(2**53), "list")
def test_refuses_the_same_integers_as_the_reference(value: int, context: str) -> None:
    placed = _place(value, context)
    with pytest.raises(rfc8785.IntegerDomainError):
        rfc8785.dumps(placed)
    with raises_exactly(InvalidArtifact):
        canonical_json(placed)


@DETERMINISTIC
@given(json_values)
def test_round_trips_through_the_strict_parser(value: Any) -> None:
    assert strictjson.loads(canonical_json(value)) == value


@DETERMINISTIC
@given(json_values)
@example({"amount": 1e15 + 0.5, "t": 2.0**53 - 1})
def test_canonical_output_is_a_fixed_point(value: Any) -> None:
    """What a verifier re-parses and re-canonicalises comes out byte-identical
    (``parse_record``, ``verify_bundle_jws`` rely on it)."""
    text = canonical_json(value)
    assert canonical_json(strictjson.loads(text)) == text


@DETERMINISTIC
@given(
    st.floats(min_value=2.0**53, max_value=1e21, exclude_max=True).map(float.__floor__).map(float),
    st.booleans(),
    _CONTEXTS,
)
def test_integral_doubles_without_an_exact_form_are_refused(
    magnitude: float, negative: bool, context: str
) -> None:
    value = -magnitude if negative else magnitude
    with raises_exactly(InvalidArtifact):
        canonical_json(_place(value, context))
