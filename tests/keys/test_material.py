"""Key generation, JWK import/export and RFC 7638 thumbprints."""

from __future__ import annotations

import pytest

from keys.b64 import b64url_encode
from keys.errors import InvalidKey
from keys.material import ENCRYPTION_ALG, PrivateKey, PublicKey, thumbprint, validate_p256_point

ALGS = ("Ed25519", "ES256", ENCRYPTION_ALG)


@pytest.fixture(scope="module", params=ALGS)
def key(request: pytest.FixtureRequest) -> PrivateKey:
    return PrivateKey.generate(request.param)


def test_rfc7638_example_thumbprint() -> None:
    # RFC 7638 s3.1 example key (public RSA members are not needed: we use the
    # RFC 8037 A.3 Ed25519 example, whose thumbprint the RFC states).
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_kid_is_thumbprint_and_pinned_alg(key: PrivateKey) -> None:
    jwk = key.public.to_jwk()
    assert key.kid == thumbprint(jwk) == key.public.thumbprint
    assert jwk["alg"] == key.alg
    assert jwk["use"] == ("enc" if key.alg == ENCRYPTION_ALG else "sig")
    assert "d" not in jwk


def test_private_jwk_round_trip(key: PrivateKey) -> None:
    again = PrivateKey.from_jwk(key.to_private_jwk())
    assert again.kid == key.kid
    assert again.public == key.public


def test_public_jwk_round_trip(key: PrivateKey) -> None:
    assert PublicKey.from_jwk(key.public.to_jwk()) == key.public


def test_repr_never_shows_private_material(key: PrivateKey) -> None:
    d = key.to_private_jwk()["d"]
    assert d not in repr(key)
    assert d not in repr(key.public)


@pytest.mark.parametrize("alg", ["Ed25519", "ES256"])
def test_sign_verify(alg: str) -> None:
    key = PrivateKey.generate(alg)
    signature = key.sign(b"message")
    assert key.public.verify(signature, b"message")
    assert not key.public.verify(signature, b"messagE")
    assert not key.public.verify(signature[:-1], b"message")
    assert not key.public.verify(bytes(len(signature)), b"message")


def test_es256_signature_is_raw_r_s() -> None:
    key = PrivateKey.generate("ES256")
    assert len(key.sign(b"x")) == 64


def test_encryption_keys_do_not_sign() -> None:
    key = PrivateKey.generate(ENCRYPTION_ALG)
    with pytest.raises(InvalidKey):
        key.sign(b"x")
    with pytest.raises(InvalidKey):
        key.public.verify(b"x" * 64, b"x")
    with pytest.raises(InvalidKey):
        _ = key.public.httpsig_alg


def test_httpsig_names() -> None:
    assert PrivateKey.generate("Ed25519").public.httpsig_alg == "ed25519"
    assert PrivateKey.generate("ES256").public.httpsig_alg == "ecdsa-p256-sha256"


def _public(alg: str) -> dict[str, str]:
    return PrivateKey.generate(alg).public.to_jwk()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda j: {**j, "d": j["x"]}, "private key material"),
        (lambda j: {**j, "alg": "none"}, "not allowed"),
        (lambda j: {**j, "alg": "HS256"}, "not allowed"),
        (lambda j: {**j, "alg": "EdDSA"}, "not allowed"),
        (lambda j: {**j, "alg": "ES256"}, "cannot be used"),
        (lambda j: {**j, "use": "enc"}, "contradicts"),
        (lambda j: {**j, "kid": "other"}, "thumbprint"),
        (lambda j: {**j, "x5c": ["MIIB"]}, "not allowed"),
        (lambda j: {**j, "jku": "https://evil"}, "not allowed"),
        (lambda j: {**j, "kty": "oct", "k": "AAAA"}, "not allowed"),
        (lambda j: {**j, "crv": "Ed448"}, "unsupported key type"),
        (lambda j: {**j, "x": j["x"] + "A"}, "base64url|bytes"),
        (lambda j: {**j, "x": j["x"][:-1] + "="}, "base64url"),
        (lambda j: {**j, "key_ops": ["encrypt"]}, "key_ops"),
        (lambda j: {k: v for k, v in j.items() if k != "x"}, "missing"),
    ],
)
def test_public_import_rejects_ed25519(mutate: object, reason: str) -> None:
    jwk = mutate(_public("Ed25519"))  # type: ignore[operator]
    with pytest.raises(InvalidKey, match=reason):
        PublicKey.from_jwk(jwk)


def test_p256_import_needs_alg_or_use() -> None:
    jwk = _public("ES256")
    bare = {k: v for k, v in jwk.items() if k not in ("alg", "use", "kid")}
    with pytest.raises(InvalidKey, match="could sign or encrypt"):
        PublicKey.from_jwk(bare)
    assert PublicKey.from_jwk({**bare, "use": "enc"}).alg == ENCRYPTION_ALG
    assert PublicKey.from_jwk({**bare, "use": "sig"}).alg == "ES256"


def test_point_not_on_curve_is_refused() -> None:
    jwk = _public("ES256")
    y = bytearray(32)
    y[-1] = 1
    bad = {**jwk, "y": b64url_encode(bytes(y))}
    bad.pop("kid")
    with pytest.raises(InvalidKey, match="not on P-256"):
        PublicKey.from_jwk(bad)
    with pytest.raises(InvalidKey):
        validate_p256_point(bad)
    validate_p256_point(jwk)


def test_foreign_kid_allowed_only_when_asked() -> None:
    jwk = {**_public("ES256"), "kid": "issuer-key-1"}
    with pytest.raises(InvalidKey):
        PublicKey.from_jwk(jwk)
    key = PublicKey.from_jwk(jwk, require_thumbprint_kid=False)
    assert key.kid == "issuer-key-1"
    assert key.thumbprint != key.kid


def test_private_import_checks_public_members_match() -> None:
    one, two = PrivateKey.generate("ES256"), PrivateKey.generate("ES256")
    mixed = {**one.to_private_jwk(), "d": two.to_private_jwk()["d"]}
    with pytest.raises(InvalidKey, match="do not match"):
        PrivateKey.from_jwk(mixed)


def test_generate_refuses_unknown_alg() -> None:
    with pytest.raises(InvalidKey):
        PrivateKey.generate("RS256")
