"""Wycheproof primitive vectors through ``keys.material`` (and, for ECDH, the JWE facade).

* Ed25519 and ECDSA P-256 (IEEE P1363 ``r||s``, the JWS ES256 encoding): each
  group's public key goes through ``PublicKey.from_jwk`` (its ``publicKeyJwk``
  plus our ``alg``), each case through ``PublicKey.verify``. Every valid case
  verifies; every invalid one fails or has its key refused.
* Ed448, ECDSA P-384/P-521, ECDH P-384/P-521 and X25519/X448: outside our
  profile, so key import must refuse every key (counted).
* ECDH P-256 (WebCrypto JWK encoding): ``keys/`` has no raw ECDH API, so the
  shared secret is checked through ``keys.jose.decrypt``: for each case the test
  builds a compact ``ECDH-ES+A256KW``/``A256GCM`` JWE whose ``epk`` is the
  vector's public key and whose key-encryption key is derived (RFC 7518 s4.6.2
  Concat KDF) from the vector's expected shared secret; decrypting it with the
  vector's private key gives the plaintext only if our stack computed the same
  secret. Invalid public keys must be refused by ``PublicKey.from_jwk``,
  ``validate_p256_point`` (for the coordinates) and ``decrypt``.
* AES key wrap: not run, see :func:`test_aes_key_wrap`.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from keys import jose
from keys.b64 import b64url_encode
from keys.errors import BadSignature, InvalidEnvelope, InvalidKey, KeysError
from keys.material import PrivateKey, PublicKey, validate_p256_point
from tests.conftest import vectors_root
from tests.vectors._util import (
    MISSING,
    Outcome,
    Tally,
    WycheproofCase,
    attempt,
    check_manifest,
    load,
    without_kid,
    wycheproof_cases,
    wycheproof_params,
)

pytestmark = pytest.mark.vectors

ED25519 = "wycheproof_ed25519_test.json"
ECDSA_P256 = "wycheproof_ecdsa_secp256r1_sha256_p1363_test.json"
ECDH_P256 = "wycheproof_ecdh_secp256r1_webcrypto_test.json"

#: Files whose every key is outside our profile: file -> (JOSE alg, coordinate bytes).
OUT_OF_PROFILE_SIGNING = {
    "wycheproof_ed448_test.json": ("Ed448", 57),
    "wycheproof_ecdsa_secp384r1_sha384_p1363_test.json": ("ES384", 48),
    "wycheproof_ecdsa_secp521r1_sha512_p1363_test.json": ("ES512", 66),
}
OUT_OF_PROFILE_ECDH = (
    "wycheproof_ecdh_secp384r1_webcrypto_test.json",
    "wycheproof_ecdh_secp521r1_webcrypto_test.json",
)
XDH = ("wycheproof_x25519_jwk_test.json", "wycheproof_x448_jwk_test.json")

_ENC = "ECDH-ES+A256KW"
_PLAINTEXT = b"Wycheproof ECDH vector, checked through keys.jose.decrypt"


def _params(names: tuple[str, ...] | list[str]) -> list[Any]:
    return [MISSING] if vectors_root() is None else [pytest.param(n, id=n[11:-10]) for n in names]


# --------------------------------------------------------------------------- signatures


def _group_jwk(group: Mapping[str, Any], size: int) -> dict[str, Any]:
    """The group's ``publicKeyJwk``; a few EC groups only give ``wx``/``wy``
    (hex), from which the same JWK is built."""
    if "publicKeyJwk" in group:
        return dict(group["publicKeyJwk"])
    key = group["publicKey"]
    crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key["curve"]]

    def coord(hex_value: str) -> str:
        return b64url_encode(int(hex_value, 16).to_bytes(size, "big"))

    return {"kty": "EC", "crv": crv, "x": coord(key["wx"]), "y": coord(key["wy"])}


@cache
def _group_key(name: str, alg: str, tc_id: int) -> Outcome:
    group = wycheproof_cases(name)[tc_id].group
    jwk = {**_group_jwk(group, 32), "alg": alg}
    return attempt("import", lambda: PublicKey.from_jwk(jwk, require_thumbprint_kid=False))


@cache
def signature_outcome(name: str, alg: str, tc_id: int) -> Outcome:
    key = _group_key(name, alg, tc_id)
    if not key.accepted:
        return key
    test = wycheproof_cases(name)[tc_id].test
    if key.value.verify(bytes.fromhex(test["sig"]), bytes.fromhex(test["msg"])):
        return Outcome(value=True)
    return Outcome(error=BadSignature("signature does not verify"), stage="verify")


def _check_signature_case(name: str, alg: str, tc_id: int) -> None:
    case = wycheproof_cases(name)[tc_id]
    result = signature_outcome(name, alg, tc_id)
    if case.expected == "valid":
        assert result.accepted, f"{case.label} {case.test['flags']}: {result.describe()}"
    else:
        assert not result.accepted, f"{case.label} {case.test['flags']} is invalid but verified"


def _signature_summary(name: str, alg: str) -> None:
    check_manifest(name)
    counts = Tally(name.removesuffix("_test.json"))
    for tc_id, case in wycheproof_cases(name).items():
        counts.add(case.label, case.expected, True, signature_outcome(name, alg, tc_id))
    refused_keys = [
        c.label for c in wycheproof_cases(name).values() if _group_key(name, alg, c.tc_id).error
    ]
    print()
    print(counts.line())
    assert counts.invalid_accepted == []
    assert counts.refused == [], f"valid cases not verified: {counts.refused}"
    assert refused_keys == [], f"in-profile keys refused at import: {refused_keys}"


@pytest.mark.parametrize("tc_id", wycheproof_params(ED25519))
def test_ed25519(vectors_dir: object, tc_id: int) -> None:
    _check_signature_case(ED25519, "Ed25519", tc_id)


def test_ed25519_summary(vectors_dir: object) -> None:
    _signature_summary(ED25519, "Ed25519")


@pytest.mark.parametrize("tc_id", wycheproof_params(ECDSA_P256))
def test_ecdsa_p256_p1363(vectors_dir: object, tc_id: int) -> None:
    _check_signature_case(ECDSA_P256, "ES256", tc_id)


def test_ecdsa_p256_p1363_summary(vectors_dir: object) -> None:
    _signature_summary(ECDSA_P256, "ES256")


@pytest.mark.parametrize("name", _params(list(OUT_OF_PROFILE_SIGNING)))
def test_signature_keys_outside_profile_refused(vectors_dir: object, name: str) -> None:
    """Ed448, P-384 and P-521: every group key is refused at import, with the
    file's own JOSE ``alg`` and without any ``alg``."""
    check_manifest(name)
    alg, size = OUT_OF_PROFILE_SIGNING[name]
    groups = load(name)["testGroups"]
    for group in groups:
        jwk = _group_jwk(group, size)
        for candidate in ({**jwk, "alg": alg}, {**jwk, "use": "sig"}):
            with pytest.raises(InvalidKey):
                PublicKey.from_jwk(candidate, require_thumbprint_kid=False)
    counts = Tally(name.removesuffix("_test.json"))
    for case in wycheproof_cases(name).values():
        counts.add(case.label, case.expected, False, Outcome(error=InvalidKey(), stage="import"))
    print()
    print(f"{counts.line()} ({len(groups)} keys refused at import)")


# --------------------------------------------------------------------------- ECDH P-256


def _concat_kdf(shared: bytes, alg: str, bits: int) -> bytes:
    """RFC 7518 s4.6.2 (NIST SP 800-56A Concat KDF, one SHA-256 round), empty apu/apv."""
    other = (
        struct.pack(">I", len(alg))
        + alg.encode("ascii")
        + struct.pack(">I", 0)
        + struct.pack(">I", 0)
        + struct.pack(">I", bits)
    )
    return hashlib.sha256(struct.pack(">I", 1) + shared + other).digest()[: bits // 8]


def _jwe_for(public: Mapping[str, Any], shared: bytes) -> list[str]:
    """The five compact-JWE segments a sender with this ECDH result would emit."""
    epk = {name: public[name] for name in ("kty", "crv", "x", "y")}
    header = {"alg": _ENC, "enc": "A256GCM", "epk": epk}
    protected = b64url_encode(json.dumps(header, separators=(",", ":")).encode("ascii"))
    cek, iv = bytes(range(32)), bytes(range(12))
    wrapped = aes_key_wrap(_concat_kdf(shared, _ENC, 256), cek)
    sealed = AESGCM(cek).encrypt(iv, _PLAINTEXT, protected.encode("ascii"))
    return [protected, *(b64url_encode(p) for p in (wrapped, iv, sealed[:-16], sealed[-16:]))]


def _decrypt_error(token: str, key: PrivateKey) -> KeysError | None:
    try:
        jose.decrypt(token, key, typ=None)
    except KeysError as exc:
        return exc
    return None


def _point_error(jwk: Mapping[str, Any]) -> KeysError | None:
    try:
        validate_p256_point(jwk)
    except KeysError as exc:
        return exc
    return None


def _recipient(case: WycheproofCase) -> PrivateKey:
    return PrivateKey.from_jwk({**without_kid(case.test["private"]), "alg": _ENC})


@cache
def ecdh_outcome(tc_id: int) -> Outcome:
    case = wycheproof_cases(ECDH_P256)[tc_id]
    shared = bytes.fromhex(case.test["shared"]) if case.test["shared"] else bytes(32)
    token = ".".join(_jwe_for(case.test["public"], shared))
    return attempt("decrypt", lambda: jose.decrypt(token, _recipient(case), typ=None).plaintext)


@pytest.mark.parametrize("tc_id", wycheproof_params(ECDH_P256))
def test_ecdh_p256(vectors_dir: object, tc_id: int) -> None:
    case = wycheproof_cases(ECDH_P256)[tc_id]
    public = case.test["public"]
    imported = attempt(
        "import",
        lambda: PublicKey.from_jwk({**public, "alg": _ENC}, require_thumbprint_kid=False),
    )
    point_error = _point_error(public)
    result = ecdh_outcome(tc_id)
    if case.expected == "valid":
        assert imported.accepted, f"{case.label}: {imported.describe()}"
        assert point_error is None, f"{case.label}: {point_error!r}"
        assert result.accepted, f"{case.label}: shared secret differs: {result.describe()}"
        assert result.value == _PLAINTEXT
        return
    assert isinstance(imported.error, InvalidKey), f"{case.label}: public key imported"
    # validate_p256_point checks the coordinates only; the ``crv`` label is the
    # caller's job (PublicKey.from_jwk and the JWE epk check both do it).
    assert isinstance(point_error, InvalidKey) or public["crv"] != "P-256", case.label
    assert isinstance(result.error, InvalidEnvelope), f"{case.label}: {result.describe()}"


def test_ecdh_p256_summary(vectors_dir: object) -> None:
    check_manifest(ECDH_P256)
    counts = Tally(ECDH_P256.removesuffix("_test.json"))
    coordinates_only = []
    for tc_id, case in wycheproof_cases(ECDH_P256).items():
        counts.add(case.label, case.expected, True, ecdh_outcome(tc_id))
        if case.expected == "invalid" and _point_error(case.test["public"]) is None:
            coordinates_only.append(case.label)
    print()
    print(f"{counts.line()} (shared secrets checked through keys.jose.decrypt)")
    print(
        f"  invalid keys whose coordinates are a P-256 point (refused on crv): {coordinates_only}"
    )
    assert counts.invalid_accepted == []
    assert counts.refused == [], f"valid ECDH cases not decrypted: {counts.refused}"


def test_ecdh_p256_jwe_tampering(vectors_dir: object) -> None:
    """Derived negatives on the first valid case: every modified part of the
    JWE (wrapped key: the AES key-wrap integrity check, E03; tag, IV,
    ciphertext, header: E04) fails with the same InvalidEnvelope."""
    case = next(c for c in wycheproof_cases(ECDH_P256).values() if c.expected == "valid")
    parts = _jwe_for(case.test["public"], bytes.fromhex(case.test["shared"]))
    key = _recipient(case)
    assert jose.decrypt(".".join(parts), key, typ=None).plaintext == _PLAINTEXT

    def flip(segment: str) -> str:
        # Change the first character: still canonical base64url, different bytes.
        return ("B" if segment[0] == "A" else "A") + segment[1:]

    variants = {
        f"modified {name}": [flip(p) if i == index else p for i, p in enumerate(parts)]
        for index, name in enumerate(("header", "encrypted_key", "iv", "ciphertext", "tag"))
    }
    variants["truncated tag"] = [*parts[:4], parts[4][:-6]]
    variants["empty encrypted_key"] = [parts[0], "", *parts[2:]]
    for label, variant in variants.items():
        error = _decrypt_error(".".join(variant), key)
        assert isinstance(error, InvalidEnvelope), f"{label}: {error!r}"


@pytest.mark.parametrize("name", _params(OUT_OF_PROFILE_ECDH))
def test_ecdh_keys_outside_profile_refused(vectors_dir: object, name: str) -> None:
    """P-384/P-521 ECDH: every recipient (private) key is refused at import, and
    so is every peer public key except the "WrongCurve" attacks whose point
    is a genuine P-256 key (invalid only against a P-384/P-521 recipient)."""
    check_manifest(name)
    cases = wycheproof_cases(name).values()
    p256_peers = []
    for case in cases:
        with pytest.raises(InvalidKey):
            PrivateKey.from_jwk({**without_kid(case.test["private"]), "alg": _ENC})
        public = {**case.test["public"], "alg": _ENC}
        if public["crv"] == "P-256":
            assert case.expected == "invalid", case.label
            p256_peers.append(case.label)
            continue
        with pytest.raises(InvalidKey):
            PublicKey.from_jwk(public, require_thumbprint_kid=False)
    print()
    print(
        f"{name.removesuffix('_test.json')}: {len(cases)} private keys and "
        f"{len(cases) - len(p256_peers)} public keys refused at import "
        f"({len(p256_peers)} P-256 peer keys of WrongCurve cases import as P-256 keys)"
    )


# --------------------------------------------------------------------------- X25519 / X448


@pytest.mark.parametrize("name", _params(XDH))
def test_xdh_keys_refused(vectors_dir: object, name: str) -> None:
    """Our profile has no X25519/X448: every public and private JWK is refused
    (so the low-order / all-zero-secret "acceptable" cases, E02, cannot arise)."""
    check_manifest(name)
    counts = Tally(name.removesuffix("_test.json"))
    for case in wycheproof_cases(name).values():
        with pytest.raises(InvalidKey):
            PublicKey.from_jwk(case.test["public"], require_thumbprint_kid=False)
        with pytest.raises(InvalidKey):
            PrivateKey.from_jwk(without_kid(case.test["private"]))
        counts.add(case.label, case.expected, False, Outcome(error=InvalidKey(), stage="import"))
    print()
    print(f"{counts.line()} (every public and private key refused at import)")
    assert counts.invalid_accepted == []


# --------------------------------------------------------------------------- AES-KW


def test_aes_key_wrap(vectors_dir: object) -> None:
    """Not run: ``wycheproof_aes_wrap_test.json`` (RFC 3394 with 128/192/256-bit
    KEKs) has no way in through ``keys/``. There is no public AES-KW API, and
    the only AES-KW use, inside ``ECDH-ES+A256KW``, takes its 256-bit KEK from
    the Concat KDF over an ECDH secret, so a vector's chosen KEK cannot be
    injected through a JWE. What ``keys/`` does with AES-KW is covered here by
    the 330 ECDH cases (each unwraps a key through ``keys.jose.decrypt``) and by
    :func:`test_ecdh_p256_jwe_tampering` (a modified wrapped key is refused,
    E03). The file is checked against MANIFEST.json so a change is noticed."""
    check_manifest("wycheproof_aes_wrap_test.json")
    pytest.skip("no public AES-KW API in keys/; see this test's docstring")
