"""Fast paths in keys/, each checked against the straightforward code it replaced.

* ``strictjson._depth_exceeds`` drops strings with ``bytes.replace`` before the
  regular expression (issue 5: 7 ms -> 1.5 ms on a 1.4 MB bundle payload);
  the oracle is the true nesting depth of the parsed value.
* ``jose._check_segment`` checks a base64url member without decoding it (the
  JWE ciphertext, which joserfc decodes itself); the oracle is
  :func:`keys.b64.b64url_decode` accepting or refusing the same string.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from keys import jose, strictjson
from keys.b64 import b64url_decode, b64url_encode
from keys.errors import InvalidEnvelope, KeysError, MalformedInput, TooDeep
from keys.material import ENCRYPTION_ALG, PrivateKey

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=400)

# --------------------------------------------------------------------------- depth


def _depth(value: Any) -> int:
    """Nesting depth of a parsed value: 0 for a scalar, 1 for ``[]``."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


#: Strings that stress the string-dropping step: brackets, quotes, escapes,
#: backslashes before quotes, adjacent strings, non-ASCII bytes.
_NASTY = st.sampled_from(
    ["", "[", "]", "{", "}", "[[", "]]", "{[", '"', '\\"', "\\", '\\"]', "\u00e9[", "\U0001f600{"]
)
_TEXT = st.lists(_NASTY | st.text(max_size=4), max_size=4).map("".join)
_VALUES = st.recursive(
    st.none() | st.integers(-5, 5) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=40,
)


@PROPERTY
@given(_VALUES, st.integers(min_value=0, max_value=12), st.booleans())
@example({"[[[": ["]]]", {"{": "}"}]}, 2, True)
@example(['"[', '"]', ["[]"]], 1, False)
@example([[[[["\\"]]]]], 4, True)
def test_depth_check_agrees_with_the_parsed_depth(value: Any, limit: int, as_bytes: bool) -> None:
    text = json.dumps(value, ensure_ascii=False)
    exceeds = strictjson._depth_exceeds(text, limit, text.encode() if as_bytes else None)
    assert exceeds == (_depth(value) > limit)


@pytest.mark.parametrize("ascii_only", [True, False])
def test_depth_limit_with_brackets_in_every_string(ascii_only: bool) -> None:
    """The replace step only ever removes empty strings; strings full of
    brackets go through the regular expression and still do not count."""
    filler = "[{" * 40 if ascii_only else "\u00e9[{" * 40
    value: Any = filler
    for _ in range(strictjson.DEFAULT_MAX_DEPTH):
        value = [filler, value, "", '"']
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert strictjson.loads(text) == value
    with pytest.raises(TooDeep):
        strictjson.loads(json.dumps([value]).encode())


def test_depth_check_on_text_given_as_str_with_a_lone_surrogate() -> None:
    """``str`` input is encoded with surrogatepass for the scan only."""
    value: Any = "\ud800"
    for _ in range(70):
        value = [value]
    with pytest.raises((TooDeep, MalformedInput)):
        strictjson.loads(json.dumps(value, ensure_ascii=False))


# --------------------------------------------------------------------------- base64url


def _accepted(segment: str) -> bool:
    try:
        b64url_decode(segment, max_len=64)
    except MalformedInput:
        return False
    return True


def _checked(segment: str) -> bool:
    try:
        jose._check_segment(segment, "ciphertext", InvalidEnvelope, 64)
    except InvalidEnvelope:
        return False
    return True


_B64_CHARS = st.sampled_from([*"AQgwBEIM048Zaz_-", "=", "+", "/", " ", "\n", "\u00e9", "."])


@PROPERTY
@given(st.text(_B64_CHARS, max_size=70) | st.binary(max_size=48).map(b64url_encode))
@example("")
@example("A")
@example("AB")
@example("AQ")
@example("AAB")
@example("AAE")
@example("AAAA=")
@example("A" * 65)
def test_ciphertext_check_accepts_exactly_what_b64url_decode_accepts(segment: str) -> None:
    assert _checked(segment) == _accepted(segment)


@pytest.mark.parametrize("segment", [None, 7, b"AAAA"])
def test_ciphertext_check_refuses_non_strings(segment: object) -> None:
    with pytest.raises(InvalidEnvelope):
        jose._check_segment(segment, "ciphertext", InvalidEnvelope, 64)


@pytest.fixture(scope="module")
def recipient() -> PrivateKey:
    return PrivateKey.generate(ENCRYPTION_ALG)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c + "=",
        lambda c: c[:-1] + "+",
        lambda c: c[:-1] + "\u00e9",
        lambda c: c + "A",  # one character more: length 1 mod 4, or a changed tail
        lambda c: c[: len(c) // 2] + "." + c[len(c) // 2 + 1 :],
        lambda c: c[: len(c) // 2] + " " + c[len(c) // 2 :],
    ],
)
def test_a_malformed_ciphertext_is_refused(recipient: PrivateKey, tamper: Any) -> None:
    obj = jose.encrypt_general(b"secret " * 50, [recipient.public], typ="t")
    with pytest.raises(InvalidEnvelope):
        jose.decrypt({**obj, "ciphertext": tamper(obj["ciphertext"])}, recipient, typ="t")


def test_non_zero_trailing_bits_in_the_ciphertext_are_refused(recipient: PrivateKey) -> None:
    """Two encodings of one ciphertext: only the canonical one is accepted (J17)."""
    obj = jose.encrypt_general(b"x" * 31, [recipient.public], typ="t")  # 31 bytes: 2 spare bits
    ciphertext = obj["ciphertext"]
    assert len(ciphertext) % 4 == 2
    alphabet = jose._B64URL_ALPHABET.decode()
    sloppy = ciphertext[:-1] + alphabet[alphabet.index(ciphertext[-1]) | 1]
    with pytest.raises(KeysError):
        b64url_decode(sloppy)
    with pytest.raises(InvalidEnvelope):
        jose.decrypt({**obj, "ciphertext": sloppy}, recipient, typ="t")
    assert jose.decrypt(obj, recipient, typ="t").plaintext == b"x" * 31
