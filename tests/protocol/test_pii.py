"""protocol/pii.py: JSON Pointer resolution with ``*``, masking, salted commitments."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys.b64 import b64url_encode
from protocol.errors import DigestInvalid, InvalidArtifact
from protocol.pii import MAX_MASKED, MaskedField, Reveal, commitment, mask, resolve, verify_reveal
from tests.protocol._support import DETERMINISTIC, counting_salts, json_values, raises_exactly

DOC: dict[str, Any] = {
    "user": {"name": "Ada", "email": "ada@example.com", "phones": ["+44 1", "+44 2"]},
    "a/b": {"c~d": "escaped"},
    "list": [{"email": "x@example.com"}, {"email": "y@example.com"}, {"other": 1}],
    "n": 1.0,
}


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        ("/user/email", [("/user/email", "ada@example.com")]),
        ("/user/phones/1", [("/user/phones/1", "+44 2")]),
        ("/a~1b/c~0d", [("/a~1b/c~0d", "escaped")]),
        (
            "/list/*/email",
            [("/list/0/email", "x@example.com"), ("/list/1/email", "y@example.com")],
        ),
        ("/user/phones/*", [("/user/phones/0", "+44 1"), ("/user/phones/1", "+44 2")]),
        ("/*/c~0d", [("/a~1b/c~0d", "escaped")]),
        ("/user/missing", []),
        ("/user/phones/2", []),
        ("/user/phones/01", []),
        ("/user/phones/-", []),
        ("/user/email/x", []),
        ("/list/*/nothing", []),
    ],
)
def test_resolve(pointer: str, expected: list[tuple[str, Any]]) -> None:
    assert resolve(DOC, pointer) == expected


def test_resolve_root_and_star_over_members() -> None:
    assert resolve(DOC, "") == [("", DOC)]
    assert [path for path, _ in resolve(DOC, "/*")] == ["/user", "/a~1b", "/list", "/n"]
    assert [path for path, _ in resolve(DOC, "/*/*/email")] == [
        "/list/0/email",
        "/list/1/email",
    ]


def test_mask_replaces_values_with_tokens() -> None:
    document = copy.deepcopy(DOC)
    salts = counting_salts()
    result = mask(document, ["/user/email", "/list/*/email"], token_bytes=salts)
    assert result.document is document, "masked in place"
    assert document["user"]["email"] == "<PII_1>"
    assert [item.get("email") for item in document["list"]] == ["<PII_2>", "<PII_3>", None]
    assert [(f.path, f.token) for f in result.masked] == [
        ("/user/email", "<PII_1>"),
        ("/list/0/email", "<PII_2>"),
        ("/list/1/email", "<PII_3>"),
    ]
    assert [(r.path, r.value) for r in result.reveals] == [
        ("/user/email", "ada@example.com"),
        ("/list/0/email", "x@example.com"),
        ("/list/1/email", "y@example.com"),
    ]
    for index, (field, reveal) in enumerate(zip(result.masked, result.reveals, strict=True)):
        salt = (index + 1).to_bytes(16, "big")
        assert reveal.salt == b64url_encode(salt)
        expected = hashlib.sha256(salt + f'"{reveal.value}"'.encode()).hexdigest()
        assert field.commitment == "sha256:" + expected
        assert verify_reveal(field, reveal) == reveal.value


def test_commitment_hashes_salt_then_jcs() -> None:
    salt = bytes(16)
    assert (
        commitment(salt, {"b": 1, "a": [1.0]})
        == "sha256:" + hashlib.sha256(salt + b'{"a":[1],"b":1}').hexdigest()
    )
    assert commitment(salt, 1.0) == "sha256:" + hashlib.sha256(salt + b"1").hexdigest()
    assert commitment(salt, "x") != commitment(b"\x01" + bytes(15), "x")


def test_a_value_is_masked_once() -> None:
    document = copy.deepcopy(DOC)
    result = mask(document, ["/user/email", "/user/*", "/user/email"], token_bytes=counting_salts())
    paths = [f.path for f in result.masked]
    assert paths == ["/user/email", "/user/name", "/user/phones"]
    assert document["user"] == {"name": "<PII_2>", "email": "<PII_1>", "phones": "<PII_3>"}


def test_masking_escaped_members_and_whole_subtrees() -> None:
    document = copy.deepcopy(DOC)
    result = mask(document, ["/a~1b/c~0d", "/list/2"], token_bytes=counting_salts())
    assert document["a/b"] == {"c~d": "<PII_1>"}
    assert document["list"][2] == "<PII_2>"
    assert result.reveals[1].value == {"other": 1}


def test_unresolvable_paths() -> None:
    with raises_exactly(InvalidArtifact):
        mask(copy.deepcopy(DOC), ["/user/missing"])
    with raises_exactly(InvalidArtifact):
        mask(copy.deepcopy(DOC), ["user/email"])
    assert mask(copy.deepcopy(DOC), ["/*/missing"]).masked == ()


def test_the_whole_document_cannot_be_masked() -> None:
    with raises_exactly(InvalidArtifact):
        mask(copy.deepcopy(DOC), [""])


def test_mask_count_is_capped() -> None:
    document = {"items": list(range(MAX_MASKED + 1))}
    with raises_exactly(InvalidArtifact):
        mask(document, ["/items/*"], token_bytes=counting_salts())
    assert len(mask({"items": list(range(MAX_MASKED))}, ["/items/*"]).masked) == MAX_MASKED


def test_default_salts_are_random() -> None:
    one = mask({"a": "x"}, ["/a"]).masked[0].commitment
    two = mask({"a": "x"}, ["/a"]).masked[0].commitment
    assert one != two


def test_verify_reveal_refusals() -> None:
    document = {"a": "secret", "b": "other"}
    result = mask(document, ["/a", "/b"], token_bytes=counting_salts())
    field, reveal = result.masked[0], result.reveals[0]
    cases = [
        Reveal(path=reveal.path, salt=reveal.salt, value="guess"),
        Reveal(path=reveal.path, salt=result.reveals[1].salt, value="secret"),
        Reveal(path="/b", salt=reveal.salt, value="secret"),
        Reveal(path=reveal.path, salt="**", value="secret"),
        Reveal(path=reveal.path, salt=reveal.salt + "=", value="secret"),
    ]
    for forged in cases:
        with raises_exactly(DigestInvalid):
            verify_reveal(field, forged)
    tampered = MaskedField(path=field.path, token=field.token, commitment="sha256:" + "0" * 64)
    with raises_exactly(DigestInvalid):
        verify_reveal(tampered, reveal)


@settings(DETERMINISTIC, max_examples=100)
@given(value=json_values, guess=json_values, salt=st.binary(min_size=16, max_size=16))
def test_a_commitment_opens_only_to_its_value(value: Any, guess: Any, salt: bytes) -> None:
    result = mask({"field": value}, ["/field"], token_bytes=lambda n: salt[:n])
    field, reveal = result.masked[0], result.reveals[0]
    assert verify_reveal(field, reveal) == value
    forged = Reveal(path=reveal.path, salt=reveal.salt, value=guess)
    if commitment(salt, guess) == commitment(salt, value):
        assert verify_reveal(field, forged) == guess  # JCS-equal values (1 and 1.0)
    else:
        with raises_exactly(DigestInvalid):
            verify_reveal(field, forged)
