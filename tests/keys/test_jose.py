"""The strict JWS/JWE facade: every rule of keys/jose.py's docstring, one test each.

Malformed objects are built by hand (header JSON -> base64url) and then
*correctly signed* with a real key wherever the rule under test is not the
signature itself, so only the rule can reject them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from keys import jose
from keys.b64 import b64url_decode, b64url_encode
from keys.errors import (
    AlgorithmMismatch,
    AlgorithmNotAllowed,
    BadSignature,
    CompressionNotAllowed,
    InvalidEnvelope,
    InvalidKey,
    KeysError,
    MalformedJws,
    TooLarge,
    UnknownKeyId,
    UnsupportedCrit,
    UnsupportedHeader,
    UntrustedKey,
    WrongType,
)
from keys.keyset import KeySet
from keys.material import ENCRYPTION_ALG, PrivateKey

TYP = "test+jws"


@pytest.fixture(scope="module")
def ed() -> PrivateKey:
    return PrivateKey.generate("Ed25519")


@pytest.fixture(scope="module")
def es() -> PrivateKey:
    return PrivateKey.generate("ES256")


@pytest.fixture(scope="module")
def keys(ed: PrivateKey, es: PrivateKey) -> KeySet:
    return KeySet([ed.public, es.public])


def forge(header: dict[str, Any], payload: bytes, key: PrivateKey) -> str:
    """A compact JWS with an arbitrary header, validly signed by ``key``."""
    head = b64url_encode(json.dumps(header).encode())
    body = b64url_encode(payload)
    return f"{head}.{body}.{b64url_encode(key.sign(f'{head}.{body}'.encode()))}"


# ------------------------------------------------------------------ JWS compact


@pytest.mark.parametrize("alg", ["Ed25519", "ES256"])
def test_compact_round_trip(alg: str) -> None:
    key = PrivateKey.generate(alg)
    token = jose.sign_compact(b'{"hello":"world"}', key, typ=TYP, cty="json")
    verified = jose.verify_compact(token, KeySet([key.public]), typ=TYP)
    assert verified.payload == b'{"hello":"world"}'
    assert verified.key == key.public
    assert verified.header == {"alg": alg, "kid": key.kid, "typ": TYP, "cty": "json"}


@pytest.mark.parametrize(
    ("header_update", "error"),
    [
        ({"alg": "none"}, AlgorithmNotAllowed),
        ({"alg": "None"}, AlgorithmNotAllowed),
        ({"alg": "HS256"}, AlgorithmNotAllowed),
        ({"alg": "EdDSA"}, AlgorithmMismatch),  # registered, but not the pinned alg
        ({"alg": "RS256"}, AlgorithmMismatch),
        ({"alg": "XS256"}, AlgorithmNotAllowed),
        ({"alg": 5}, AlgorithmNotAllowed),
        ({"alg": "ES256"}, AlgorithmMismatch),
        ({"kid": "../../dev/null"}, UnknownKeyId),
        ({"kid": "x" * 200}, UnknownKeyId),
        ({"kid": "x" * 10_000}, MalformedJws),  # over the header cap: never parsed
        ({"kid": 7}, UnknownKeyId),
        ({"jku": "https://attacker.example/jwks"}, UntrustedKey),
        ({"x5u": "https://attacker.example/cert"}, UntrustedKey),
        ({"x5c": ["MIIB"]}, UntrustedKey),
        ({"jwk": {"kty": "OKP"}}, UntrustedKey),
        ({"crit": ["x"], "x": 1}, UnsupportedCrit),
        ({"b64": False, "crit": ["b64"]}, UnsupportedCrit),
        ({"b64": False}, UnsupportedCrit),
        ({"zip": "DEF"}, CompressionNotAllowed),
        ({"foo": "bar"}, UnsupportedHeader),
        ({"typ": "other+jws"}, WrongType),
    ],
)
def test_compact_rejects_header(
    ed: PrivateKey, keys: KeySet, header_update: dict[str, Any], error: type[KeysError]
) -> None:
    header = {"alg": "Ed25519", "kid": ed.kid, "typ": TYP, **header_update}
    with pytest.raises(error):
        jose.verify_compact(forge(header, b"{}", ed), keys, typ=TYP)


def test_missing_kid_rejected(ed: PrivateKey, keys: KeySet) -> None:
    with pytest.raises(UnknownKeyId):
        jose.verify_compact(forge({"alg": "Ed25519", "typ": TYP}, b"{}", ed), keys, typ=TYP)


def test_hmac_with_public_key_bytes_rejected(es: PrivateKey, keys: KeySet) -> None:
    """J03: an HS256 MAC keyed with the public key never reaches a MAC check."""
    head = b64url_encode(json.dumps({"alg": "HS256", "kid": es.kid, "typ": TYP}).encode())
    body = b64url_encode(b"{}")
    secret = json.dumps(es.public.to_jwk()).encode()
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256)
    with pytest.raises(AlgorithmNotAllowed):
        jose.verify_compact(f"{head}.{body}.{b64url_encode(mac.digest())}", keys, typ=TYP)


def test_duplicate_header_member_rejected(ed: PrivateKey, keys: KeySet) -> None:
    raw = f'{{"alg":"Ed25519","kid":"{ed.kid}","typ":"{TYP}","alg":"none"}}'.encode()
    head, body = b64url_encode(raw), b64url_encode(b"{}")
    token = f"{head}.{body}.{b64url_encode(ed.sign(f'{head}.{body}'.encode()))}"
    with pytest.raises(MalformedJws, match="duplicate"):
        jose.verify_compact(token, keys, typ=TYP)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + ".",
        lambda t: ".".join(t.split(".")[:2]),
        lambda t: t.rsplit(".", 1)[0] + ".",
        lambda t: t.replace(".", "..", 1),
        lambda t: t.split(".")[0] + "=." + ".".join(t.split(".")[1:]),
        lambda t: t.replace("-", "+").replace("_", "/") if ("-" in t or "_" in t) else t + "+",
        lambda t: t[:10] + " " + t[10:],
    ],
)
def test_structural_mutations_rejected(ed: PrivateKey, keys: KeySet, mangle: Any) -> None:
    token = jose.sign_compact(b"{}", ed, typ=TYP)
    with pytest.raises((MalformedJws, BadSignature)):
        jose.verify_compact(mangle(token), keys, typ=TYP)


def test_signature_and_payload_tampering(ed: PrivateKey, es: PrivateKey, keys: KeySet) -> None:
    for key in (ed, es):
        head, body, sig = jose.sign_compact(b'{"n":1}', key, typ=TYP).split(".")
        other = b64url_encode(b'{"n":2}')
        with pytest.raises(BadSignature):
            jose.verify_compact(f"{head}.{other}.{sig}", keys, typ=TYP)
        raw = bytearray(b64url_decode(sig))
        raw[0] ^= 1
        with pytest.raises(BadSignature):
            jose.verify_compact(f"{head}.{body}.{b64url_encode(bytes(raw))}", keys, typ=TYP)


def test_es256_psychic_signature_rejected(es: PrivateKey, keys: KeySet) -> None:
    """J19 / CVE-2022-21449: r = s = 0."""
    head = b64url_encode(json.dumps({"alg": "ES256", "kid": es.kid, "typ": TYP}).encode())
    body = b64url_encode(b"{}")
    with pytest.raises(BadSignature):
        jose.verify_compact(f"{head}.{body}.{b64url_encode(bytes(64))}", keys, typ=TYP)


def test_size_cap_before_parsing(ed: PrivateKey, keys: KeySet) -> None:
    token = jose.sign_compact(b"x" * 2000, ed, typ=TYP)
    with pytest.raises(TooLarge):
        jose.verify_compact(token, keys, typ=TYP, max_bytes=1000)


def test_encryption_key_cannot_verify(keys: KeySet) -> None:
    enc = PrivateKey.generate(ENCRYPTION_ALG)
    header = {"alg": "ES256", "kid": enc.kid, "typ": TYP}
    head = b64url_encode(json.dumps(header).encode())
    token = f"{head}.{b64url_encode(b'{}')}.{b64url_encode(bytes(64))}"
    with pytest.raises(AlgorithmMismatch):
        jose.verify_compact(token, KeySet([enc.public]), typ=TYP)


# ------------------------------------------------------------------ JWS general JSON


def test_general_round_trip(ed: PrivateKey, es: PrivateKey, keys: KeySet) -> None:
    obj = jose.sign_general(b"payload", [ed, es], typ=TYP)
    results = jose.verify_general(obj, keys, typ=TYP)
    assert [r.key.kid for r in results] == [ed.kid, es.kid]
    assert jose.verify_general(json.dumps(obj), keys, typ=TYP)[0].payload == b"payload"


def test_general_all_signatures_must_verify(ed: PrivateKey, keys: KeySet) -> None:
    stranger = PrivateKey.generate("Ed25519")
    obj = jose.sign_general(b"payload", [ed, stranger], typ=TYP)
    with pytest.raises(UnknownKeyId):
        jose.verify_general(obj, keys, typ=TYP)


def test_general_rejects_unprotected_header(ed: PrivateKey, keys: KeySet) -> None:
    obj = jose.sign_general(b"payload", [ed], typ=TYP)
    obj["signatures"][0]["header"] = {"kid": ed.kid}
    with pytest.raises(UnsupportedHeader):
        jose.verify_general(obj, keys, typ=TYP)


def test_general_rejects_same_key_twice(ed: PrivateKey, keys: KeySet) -> None:
    obj = jose.sign_general(b"payload", [ed], typ=TYP)
    obj["signatures"].append(dict(obj["signatures"][0]))
    with pytest.raises(MalformedJws, match="twice"):
        jose.verify_general(obj, keys, typ=TYP)


def test_general_rejects_flattened_and_extra_members(ed: PrivateKey, keys: KeySet) -> None:
    obj = jose.sign_general(b"payload", [ed], typ=TYP)
    flattened = {"payload": obj["payload"], **obj["signatures"][0]}
    with pytest.raises(MalformedJws):
        jose.verify_general(flattened, keys, typ=TYP)
    with pytest.raises(MalformedJws):
        jose.verify_general({**obj, "extra": 1}, keys, typ=TYP)
    with pytest.raises(MalformedJws):
        jose.verify_general({**obj, "signatures": []}, keys, typ=TYP)


# ------------------------------------------------------------------ JWE


@pytest.fixture(scope="module")
def recipients() -> list[PrivateKey]:
    return [PrivateKey.generate(ENCRYPTION_ALG) for _ in range(3)]


def test_jwe_every_recipient_decrypts(recipients: list[PrivateKey]) -> None:
    obj = jose.encrypt_general(b"secret" * 100, [r.public for r in recipients], typ="t")
    assert len(obj["recipients"]) == 3
    for key in recipients:
        result = jose.decrypt(obj, key, typ="t")
        assert result.plaintext == b"secret" * 100
        assert result.header == {"enc": "A256GCM", "typ": "t"}


def test_jwe_non_recipient_and_wrong_typ(recipients: list[PrivateKey]) -> None:
    obj = jose.encrypt_general(b"secret", [recipients[0].public], typ="t")
    with pytest.raises(InvalidEnvelope):
        jose.decrypt(obj, recipients[1], typ="t")
    with pytest.raises(InvalidEnvelope):
        jose.decrypt(obj, recipients[0], typ="other")


def _flip(text: str) -> str:
    raw = bytearray(b64url_decode(text))
    raw[len(raw) // 2] ^= 0x01
    return b64url_encode(bytes(raw))


def _flip_member(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return {**obj, name: _flip(obj[name])}


@pytest.mark.parametrize(
    "tamper",
    [
        lambda o: {**o, "ciphertext": _flip(o["ciphertext"])},
        lambda o: {**o, "tag": _flip(o["tag"])},
        lambda o: {**o, "tag": o["tag"][:-4]},
        lambda o: {**o, "iv": _flip(o["iv"])},
        lambda o: {**o, "protected": b64url_encode(b'{"enc":"A256GCM","typ":"t","cty":"x"}')},
        lambda o: {
            **o,
            "recipients": [
                {**o["recipients"][0], "encrypted_key": _flip(o["recipients"][0]["encrypted_key"])}
            ],
        },
        lambda o: {**o, "aad": "AAAA"},
        lambda o: {**o, "unprotected": {"x": 1}},
        lambda o: {k: v for k, v in o.items() if k != "tag"},
    ],
)
def test_jwe_tampering_gives_one_error(recipients: list[PrivateKey], tamper: Any) -> None:
    obj = jose.encrypt_general(b"secret", [recipients[0].public], typ="t")
    with pytest.raises(InvalidEnvelope) as caught:
        jose.decrypt(tamper(obj), recipients[0], typ="t")
    assert caught.value.code == "invalid_envelope"


def _with_recipient_header(obj: dict[str, Any], **update: Any) -> dict[str, Any]:
    entry = obj["recipients"][0]
    return {**obj, "recipients": [{**entry, "header": {**entry["header"], **update}}]}


def test_jwe_invalid_curve_epk_rejected(recipients: list[PrivateKey]) -> None:
    """E01: an ephemeral key that is not a P-256 point never reaches ECDH."""
    obj = jose.encrypt_general(b"secret", [recipients[0].public], typ="t")
    epk = dict(obj["recipients"][0]["header"]["epk"])
    epk["y"] = b64url_encode(b"\x00" * 31 + b"\x01")
    with pytest.raises(InvalidEnvelope):
        jose.decrypt(_with_recipient_header(obj, epk=epk), recipients[0], typ="t")
    with pytest.raises(InvalidEnvelope):
        jose.decrypt(
            _with_recipient_header(obj, epk={**epk, "crv": "P-384"}), recipients[0], typ="t"
        )
    with pytest.raises(InvalidEnvelope):
        jose.decrypt(
            _with_recipient_header(obj, epk={**epk, "d": epk["x"]}), recipients[0], typ="t"
        )


@pytest.mark.parametrize(
    "update",
    [
        {"alg": "RSA1_5"},
        {"alg": "ECDH-ES"},
        {"alg": "PBES2-HS256+A128KW", "p2c": 10**9},
        {"jwk": {}},
    ],
)
def test_jwe_recipient_header_policy(recipients: list[PrivateKey], update: dict[str, Any]) -> None:
    obj = jose.encrypt_general(b"secret", [recipients[0].public], typ="t")
    with pytest.raises(InvalidEnvelope):
        jose.decrypt(_with_recipient_header(obj, **update), recipients[0], typ="t")


def test_jwe_zip_has_its_own_code(recipients: list[PrivateKey]) -> None:
    obj = jose.encrypt_general(b"secret", [recipients[0].public], typ="t")
    zipped = {**obj, "protected": b64url_encode(b'{"enc":"A256GCM","typ":"t","zip":"DEF"}')}
    with pytest.raises(CompressionNotAllowed):
        jose.decrypt(zipped, recipients[0], typ="t")


def test_jwe_other_enc_refused(recipients: list[PrivateKey]) -> None:
    obj = jose.encrypt_general(b"secret", [recipients[0].public], typ="t")
    cbc = {**obj, "protected": b64url_encode(b'{"enc":"A128CBC-HS256","typ":"t"}')}
    with pytest.raises(InvalidEnvelope):
        jose.decrypt(cbc, recipients[0], typ="t")


def test_jwe_size_cap(recipients: list[PrivateKey]) -> None:
    obj = jose.encrypt_general(b"x" * 5000, [recipients[0].public], typ="t")
    with pytest.raises((InvalidEnvelope, TooLarge)):
        jose.decrypt(json.dumps(obj), recipients[0], typ="t", max_bytes=4000)


def test_jwe_refuses_signing_keys_and_duplicates(
    recipients: list[PrivateKey], ed: PrivateKey
) -> None:
    with pytest.raises(InvalidKey):
        jose.encrypt_general(b"x", [ed.public], typ="t")
    with pytest.raises(InvalidKey):
        jose.encrypt_general(b"x", [recipients[0].public, recipients[0].public], typ="t")
    with pytest.raises(InvalidKey):
        jose.decrypt({}, ed, typ="t")
