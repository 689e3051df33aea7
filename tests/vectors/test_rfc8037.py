"""RFC 8037 Appendix A (OKP keys, Ed25519 JWS, X25519/X448) through ``keys/``.

``keys/`` pins Ed25519 keys to the RFC 9864 algorithm name ``Ed25519``; the
RFC's examples say ``EdDSA``. So the A.4 signature is reproduced byte for byte
by the raw primitive (``PrivateKey.sign`` over the example's JWS signing
input) and verified by ``PublicKey.verify`` (A.5), while the example *token*
is refused by ``keys.jose.verify_compact``:

* as published (no ``kid``) with :class:`UnknownKeyId`: the ``kid`` lookup
  comes before the alg pin;
* re-signed with the key's ``kid`` and ``alg: EdDSA`` with
  :class:`AlgorithmMismatch`: ``EdDSA`` is a registered JWS algorithm that is
  not the key's pinned one (``keys.material.REGISTERED_SIGNATURE_ALGS``);
  :class:`AlgorithmNotAllowed` is for ``none``, HMAC and unregistered names.

A positive control re-signs the same payload under ``alg: Ed25519`` and checks
that it verifies, so the refusals above are about the name alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pytest

from keys import jose
from keys.b64 import b64url_decode, b64url_encode
from keys.errors import (
    AlgorithmMismatch,
    AlgorithmNotAllowed,
    InvalidEnvelope,
    InvalidKey,
    KeysError,
    UnknownKeyId,
)
from keys.keyset import KeySet
from keys.material import PrivateKey, PublicKey, thumbprint
from tests.conftest import vectors_root
from tests.vectors._util import MISSING, STANDIN_P256_ENC, load

pytestmark = pytest.mark.vectors

FILE = "rfc8037_examples.json"


def _cases() -> dict[str, Mapping[str, Any]]:
    return {case["id"]: case for case in load(FILE)["cases"]}


def _negative_params() -> list[Any]:
    if vectors_root() is None:
        return [MISSING]
    return [pytest.param(case_id, id=case_id) for case_id in _cases() if case_id.startswith("neg")]


def _compact(header: Mapping[str, str], payload: bytes, key: PrivateKey) -> str:
    head = b64url_encode(json.dumps(header, separators=(",", ":")).encode("ascii"))
    body = b64url_encode(payload)
    return f"{head}.{body}.{b64url_encode(key.sign(f'{head}.{body}'.encode('ascii')))}"


def _error(action: Any) -> KeysError | None:
    try:
        action()
    except KeysError as exc:
        return exc
    return None


# --------------------------------------------------------------------------- Ed25519


def test_a1_a2_keys_import(vectors_dir: object) -> None:
    cases = _cases()
    private = PrivateKey.from_jwk(cases["A.1"]["jwk"])
    public = PublicKey.from_jwk(cases["A.2"]["jwk"])
    assert (private.alg, private.use) == ("Ed25519", "sig")
    assert private.public == public
    assert {k: v for k, v in public.to_jwk().items() if k in ("kty", "crv", "x")} == dict(
        cases["A.2"]["jwk"]
    )


def test_a3_thumbprint(vectors_dir: object) -> None:
    cases = _cases()
    expected = cases["A.3"]["expected"]
    jwk = cases["A.2"]["jwk"]
    # The vector is self-consistent: its canonical input hashes to its value.
    digest = hashlib.sha256(cases["A.3"]["thumbprint_input"].encode("ascii")).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == expected
    assert thumbprint(jwk) == expected
    key = PublicKey.from_jwk(jwk)
    assert key.thumbprint == expected
    assert key.kid == expected
    assert PublicKey.from_jwk({**jwk, "kid": expected}).kid == expected  # thumbprint kid accepted
    assert PrivateKey.from_jwk(cases["A.1"]["jwk"]).kid == expected


def test_a4_signature_reproduces(vectors_dir: object) -> None:
    case = _cases()["A.4"]
    key = PrivateKey.from_jwk(_cases()["A.1"]["jwk"])
    signing_input = case["signing_input"]
    head, body = signing_input.split(".")
    assert b64url_decode(head) == json.dumps(case["protected"], separators=(",", ":")).encode()
    assert b64url_decode(body) == case["payload"].encode("utf-8")
    signature = key.sign(signing_input.encode("ascii"))
    assert b64url_encode(signature) == case["signature"]
    assert case["compact"] == f"{signing_input}.{case['signature']}"


def test_a4_eddsa_header_is_refused_by_the_facade(vectors_dir: object) -> None:
    cases = _cases()
    private = PrivateKey.from_jwk(cases["A.1"]["jwk"])
    keys = KeySet([private.public])
    # As published: no kid, so the key lookup refuses it first.
    with pytest.raises(UnknownKeyId):
        jose.verify_compact(cases["A.4"]["compact"], keys, typ=None)
    # With our kid, the deprecated name is refused against the pinned "Ed25519".
    payload = cases["A.4"]["payload"].encode("utf-8")
    eddsa = _compact({"alg": "EdDSA", "kid": private.kid}, payload, private)
    with pytest.raises(AlgorithmMismatch):
        jose.verify_compact(eddsa, keys, typ=None)
    # Positive control: the same payload and key under the RFC 9864 name.
    ed25519 = _compact({"alg": "Ed25519", "kid": private.kid}, payload, private)
    assert jose.verify_compact(ed25519, keys, typ=None).payload == payload


def test_a5_verification(vectors_dir: object) -> None:
    case = _cases()["A.5"]
    assert case["result"] == "valid"
    key = PublicKey.from_jwk(case["public_jwk"])
    head, body, signature = case["compact"].split(".")
    assert key.verify(b64url_decode(signature), f"{head}.{body}".encode("ascii"))


# --------------------------------------------------------------------------- X25519 / X448


def _xdh_jwks(case: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Every public and private JWK an example describes."""
    if case["id"] == "A.6":
        recipient = case["recipient_jwk"]
        epk = case["epk"]
        return [
            ("public", recipient),
            ("private", {**recipient, "d": case["recipient_private_d"]}),
            ("public", epk),
            ("private", {**epk, "d": case["epk_private_d"]}),
        ]
    base = {"kty": "OKP", "crv": "X448"}
    return [
        ("public", {**base, "x": case["recipient_public_x"]}),
        ("private", {**base, "x": case["recipient_public_x"], "d": case["recipient_private_d"]}),
        ("public", {**base, "x": case["epk_x"]}),
        ("private", {**base, "x": case["epk_x"], "d": case["epk_private_d"]}),
    ]


@pytest.mark.parametrize("case_id", ["A.6", "A.7"])
def test_xdh_keys_refused(vectors_dir: object, case_id: str) -> None:
    """Our profile has no X25519/X448 (key agreement is P-256 ECDH-ES only)."""
    for kind, jwk in _xdh_jwks(_cases()[case_id]):
        with pytest.raises(InvalidKey):
            if kind == "public":
                PublicKey.from_jwk(jwk, require_thumbprint_kid=False)
            else:
                PrivateKey.from_jwk({k: v for k, v in jwk.items() if k != "kid"})


def test_a6_x25519_jwe_header_refused(vectors_dir: object) -> None:
    """A JWE carrying the A.6 header (X25519 ``epk``) never reaches decryption."""
    header = _cases()["A.6"]["jwe_header_in_rfc"]
    protected = b64url_encode(json.dumps(header).encode("ascii"))
    parts = [protected, b64url_encode(bytes(24)), b64url_encode(bytes(12)), "", "A" * 22]
    with pytest.raises(InvalidEnvelope):
        jose.decrypt(".".join(parts), PrivateKey.from_jwk(STANDIN_P256_ENC), typ=None)


# --------------------------------------------------------------------------- negatives


def _negative_error(case: Mapping[str, Any]) -> KeysError:
    """Run a derived negative; it must fail at key import or verification."""
    imported: list[PublicKey] = []
    error = _error(lambda: imported.append(PublicKey.from_jwk(case["public_jwk"])))
    if error is not None:
        return error
    key = imported[0]
    head, body, signature = case["compact"].split(".")
    assert not key.verify(b64url_decode(signature), f"{head}.{body}".encode("ascii"))
    error = _error(lambda: jose.verify_compact(case["compact"], KeySet([key]), typ=None))
    assert error is not None, f"{case['id']} was accepted"
    return error


_NEGATIVE_ERRORS: Mapping[str, type[KeysError]] = {
    "neg-1": UnknownKeyId,  # modified signature; the published header has no kid
    "neg-2": AlgorithmNotAllowed,  # alg "none" (J01) is refused before any kid lookup
    "neg-3": InvalidKey,  # X25519 key for a signature: refused at import
}


@pytest.mark.parametrize("case_id", _negative_params())
def test_derived_negatives_rejected(vectors_dir: object, case_id: str) -> None:
    case = _cases()[case_id]
    assert case["result"] == "invalid"
    error = _negative_error(case)
    assert isinstance(error, _NEGATIVE_ERRORS[case_id]), repr(error)


def test_summary(vectors_dir: object) -> None:
    cases = _cases()
    assert len(cases) == 10
    negatives = {cid: type(_negative_error(c)).__name__ for cid, c in cases.items() if "neg" in cid}
    xdh = sum(len(_xdh_jwks(cases[cid])) for cid in ("A.6", "A.7"))
    print()
    print(
        f"rfc8037_examples: {len(cases)} cases: A.1-A.3 keys and thumbprint match, "
        f"A.4 signature reproduced, A.5 verified, EdDSA-named token refused; "
        f"{xdh} X25519/X448 keys refused; {len(negatives)} derived negatives rejected "
        f"({', '.join(f'{k}: {v}' for k, v in negatives.items())})"
    )
    assert set(negatives) == set(_NEGATIVE_ERRORS)
