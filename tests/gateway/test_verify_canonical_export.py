"""gateway/verify.py ``_canonical_export``: the export's canonical-form check
serialises the sealed bundle's ciphertext on its own (issue 5); the bytes must
be those of ``canonical_json`` of the whole export, whatever it holds."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.verify import _canonical_export
from keys.b64 import b64url_encode
from protocol.canonical import canonical_json

_JWE = {
    "protected": "eyJlbmMiOiJBMjU2R0NNIn0",
    "recipients": [{"header": {"alg": "ECDH-ES+A256KW", "kid": "k1"}, "encrypted_key": "AAAA"}],
    "iv": "AAAAAAAAAAAAAAAA",
    "ciphertext": b64url_encode(bytes(range(256)) * 64),
    "tag": "AAAAAAAAAAAAAAAAAAAAAA",
}


def _export(bundle: Any) -> dict[str, Any]:
    return {
        "type": "baton-handoff-export",
        "bundle": bundle,
        "events": ["a.b.c"],
        "decision": None,
        "queue": "payments-t2",
        "conversation": "ctx-\U0001f600-\uffff",
    }


@pytest.mark.parametrize(
    "bundle",
    [
        _JWE,
        {**_JWE, "ciphertext": ""},
        {**_JWE, "ciphertext": 'needs "escapes" \\ and \x1f and \x7f and \u00e9'},
        {**_JWE, "ciphertext": 12},
        {k: v for k, v in _JWE.items() if k != "ciphertext"},
        {**_JWE, "zzz": [1.5, None], "\U0001f600": 1, "\uff61": 2},
        "header.payload.signature",
        None,
    ],
    ids=["jwe", "empty", "escapes", "not a string", "no ciphertext", "odd members", "jws", "null"],
)
def test_canonical_export_is_canonical_json(bundle: Any) -> None:
    value = _export(bundle)
    assert _canonical_export(value) == canonical_json(value)
