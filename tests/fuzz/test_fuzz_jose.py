"""Fuzz properties: JWS (compact and general JSON) and JWE (general JSON and compact).

Byte-mutated and structure-mutated objects, and JWS whose header is arbitrary
JSON *validly signed* by a pinned key (so only the header rules can refuse
it): ``keys/jose.py`` accepts only what was signed or encrypted (the payload
or plaintext of the samples) or raises a ``KeysError``; ``recipient_key``
sees parsed JSON of any shape.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import jose
from keys.b64 import b64url_encode
from keys.errors import KeysError
from tests.fuzz.strategies import FUZZ, json_mutated, json_values, mutated
from tests.fuzz.targets import ED, ES, SIG_KEYS, TARGETS, TYP, samples


def _inputs(name: str) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=512) | mutated(samples(name)) | json_mutated(samples(name))


@pytest.mark.threat("J02", "J15", "J16", "J17")
@FUZZ
@given(data=_inputs("jws"))
def test_jws_verifies_or_refuses(data: bytes) -> None:
    TARGETS["jws"](data)


_HEADER_NAMES = ["alg", "kid", "typ", "cty", "crit", "b64", "zip", "jku", "jwk", "x5c", "x5u",
                 "x5t", "enc", "epk", "nonce", "url"]  # fmt: skip
_ALGS = ["Ed25519", "EdDSA", "ES256", "ES384", "HS256", "none", "None", "RS256", "PS256", ""]


@st.composite
def _headers(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(st.sampled_from([ED, ES]))
    header: dict[str, Any] = {
        "alg": draw(st.sampled_from([key.alg, *_ALGS]) | json_values),
        "kid": draw(st.sampled_from([key.kid, ED.kid, ES.kid, "../../dev/null", "x" * 200])
                    | json_values),
        "typ": draw(st.sampled_from([TYP, "JWT", "fuzz+JWS"]) | json_values),
    }  # fmt: skip
    for name in draw(st.lists(st.sampled_from(_HEADER_NAMES), max_size=3)):
        header[name] = draw(json_values)
    for name in draw(st.lists(st.sampled_from(["alg", "kid", "typ"]), max_size=2)):
        header.pop(name, None)
    return header


@pytest.mark.threat("J01", "J04", "J05", "J06", "J07", "J08", "J09", "J10", "J11", "J18", "E05")
@FUZZ
@given(header=_headers(), key=st.sampled_from([ED, ES]), payload=st.binary(max_size=64))
def test_validly_signed_jws_with_any_header(
    header: dict[str, Any], key: Any, payload: bytes
) -> None:
    head = b64url_encode(json.dumps(header).encode())
    body = b64url_encode(payload)
    token = f"{head}.{body}.{b64url_encode(key.sign(f'{head}.{body}'.encode()))}"
    try:
        verified = jose.verify_compact(token, SIG_KEYS, typ=TYP)
    except KeysError:
        return
    # Accepted: then the header was exactly what the rules allow.
    assert set(verified.header) <= {"alg", "kid", "typ", "cty"}
    assert verified.header["alg"] == key.alg == verified.key.alg
    assert verified.header["kid"] == key.kid
    assert verified.header["typ"] == TYP
    assert verified.payload == payload


@pytest.mark.threat("E01", "E03", "E04", "E05", "E07")
@FUZZ
@given(data=_inputs("jwe"))
def test_jwe_decrypts_or_refuses(data: bytes) -> None:
    TARGETS["jwe"](data)


@pytest.mark.threat("E01", "E04", "E09")
@FUZZ
@given(data=_inputs("capsule"))
def test_capsule_opens_or_refuses(data: bytes) -> None:
    TARGETS["capsule"](data)
