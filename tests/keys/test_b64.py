"""Strict base64url and padded base64 (RFC 7515 s2, RFC 4648, threat J17)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys.b64 import b64decode_std, b64encode_std, b64url_decode, b64url_encode
from keys.errors import MalformedInput


@given(st.binary(max_size=200))
def test_b64url_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text
    assert b64url_decode(text) == data
    assert b64url_decode(text.encode()) == data


@given(st.binary(min_size=1, max_size=64))
def test_b64url_accepts_only_the_canonical_encoding(data: bytes) -> None:
    """Flipping any unused trailing bit gives a string that must be refused."""
    text = b64url_encode(data)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused_bits = {2: 4, 3: 2}.get(len(text) % 4, 0)
    last = alphabet.index(text[-1])
    for bit in range(unused_bits):
        variant = text[:-1] + alphabet[last ^ (1 << bit)]
        with pytest.raises(MalformedInput):
            b64url_decode(variant)


@pytest.mark.parametrize(
    "text",
    ["YQ==", "YQ=", "a+b", "a/b", "YW J", "YW\nJ", "Y", "YQ\x00", "\u00e9AA", "YR"],
)
def test_b64url_rejects(text: str) -> None:
    with pytest.raises(MalformedInput):
        b64url_decode(text)


def test_b64url_size_cap_applies_before_decoding() -> None:
    with pytest.raises(MalformedInput, match="size cap"):
        b64url_decode("A" * 101, max_len=100)
    assert b64url_decode("AAAA", max_len=4) == b"\x00\x00\x00"


def test_b64url_rejects_non_ascii_bytes() -> None:
    with pytest.raises(MalformedInput):
        b64url_decode("é".encode())


@given(st.binary(max_size=100))
def test_std_round_trip_with_and_without_padding(data: bytes) -> None:
    text = b64encode_std(data)
    assert text == base64.b64encode(data).decode()
    assert b64decode_std(text) == data
    assert b64decode_std(text.rstrip("=")) == data


@pytest.mark.parametrize("text", ["YQ===", "Y=Q=", "YW-x", "YW_x", "YR==", "a b="])
def test_std_rejects(text: str) -> None:
    with pytest.raises(MalformedInput):
        b64decode_std(text)
