"""Bearer JWT verification (keys/bearer.py): threats J01-J21, M06, M07.

Tokens are minted here: with PyJWT for the happy paths (interoperability) and
by hand, segment by segment, for malformed cases. The clock is always injected
through ``now``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, reduce
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from keys import strictjson
from keys.b64 import b64url_decode, b64url_encode
from keys.bearer import (
    BearerClaims,
    BearerIssuer,
    IssuerKey,
    is_roca_modulus,
    verify_bearer,
    verify_bearer_at,
)
from keys.errors import (
    AlgorithmMismatch,
    AlgorithmNotAllowed,
    BadAudience,
    BadIssuer,
    BadSignature,
    CompressionNotAllowed,
    IdentityMismatch,
    InvalidKey,
    KeysError,
    MalformedJws,
    NotYetValid,
    TokenExpired,
    TooLarge,
    UnknownKeyId,
    UnsupportedCrit,
    UnsupportedHeader,
    UntrustedKey,
    WrongType,
)

NOW = 1_750_000_000
ISS = "https://idp.example.com"
AUD = "https://gateway.baton.local"
SUB = "spiffe://baton.local/agent/alpha"
ALGS = ("ES256", "EdDSA", "RS256", "PS256")
DROP = object()  # claim/header override meaning "leave this member out"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Signer:
    kid: str
    alg: str
    private: PrivateKey

    @property
    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        jwk: dict[str, Any]
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ed25519.Ed25519PublicKey):
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
            jwk["alg"] = self.alg
        return {**jwk, "kid": self.kid}

    def sign(self, data: bytes) -> bytes:
        key = self.private
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        if self.alg == "PS256":
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            return key.sign(data, pss, hashes.SHA256())
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


@cache
def signers() -> dict[str, Signer]:
    """One signer per algorithm, plus a second ES256 key; generated once."""
    return {
        "ES256": Signer("es-1", "ES256", ec.generate_private_key(ec.SECP256R1())),
        "EdDSA": Signer("ed-1", "EdDSA", ed25519.Ed25519PrivateKey.generate()),
        "RS256": Signer("rs-1", "RS256", rsa.generate_private_key(65537, 2048)),
        "PS256": Signer("ps-1", "PS256", rsa.generate_private_key(65537, 2048)),
        "ES256-other": Signer("es-2", "ES256", ec.generate_private_key(ec.SECP256R1())),
    }


def signer(name: str = "ES256") -> Signer:
    return signers()[name]


def make_issuer(*names: str, **options: Any) -> BearerIssuer:
    chosen = names or ALGS
    jwks = {"keys": [signer(name).jwk for name in chosen]}
    return BearerIssuer.from_jwks(ISS, AUD, jwks, **options)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": SUB,
        "iat": NOW - 10,
        "exp": NOW + 300,
        "jti": "jti-1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


def header_for(s: Signer, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"alg": s.alg, "kid": s.kid, "typ": "JWT"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


def _json(value: Mapping[str, Any] | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    return json.dumps(value, separators=(",", ":")).encode()


def compact(
    header: Mapping[str, Any] | bytes,
    payload: Mapping[str, Any] | bytes,
    s: Signer | None = None,
    *,
    signature: bytes | None = None,
) -> str:
    """Hand-built compact JWS; signed by ``s`` unless ``signature`` is given."""
    signing_input = f"{b64url_encode(_json(header))}.{b64url_encode(_json(payload))}"
    if signature is None:
        signature = (s or signer()).sign(signing_input.encode())
    return f"{signing_input}.{b64url_encode(signature)}"


def token(name: str = "ES256", /, **claim_overrides: Any) -> str:
    s = signer(name)
    return compact(header_for(s), claims(**claim_overrides), s)


def fresh_private_key(alg: str) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(65537, 2048)


@cache
def default_issuer() -> BearerIssuer:
    return make_issuer()


def verify(tok: str | bytes, issuer: BearerIssuer | None = None, **kwargs: Any) -> BearerClaims:
    return verify_bearer_at(tok, issuer or default_issuer(), now=kwargs.pop("now", NOW), **kwargs)


def thumb(label: str) -> str:
    """A certificate thumbprint (RFC 8705 s3.1) for a stand-in certificate."""
    return b64url_encode(hashlib.sha256(label.encode()).digest())


# --------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("alg", ALGS)
def test_pyjwt_minted_token_verifies(alg: str) -> None:
    s = signer(alg)
    tok = jwt.encode(claims(), s.private, algorithm=alg, headers={"kid": s.kid, "typ": "JWT"})
    result = verify(tok)
    assert result == BearerClaims(
        subject=SUB,
        issuer=ISS,
        audience=AUD,
        expires_at=NOW + 300,
        issued_at=NOW - 10,
        not_before=None,
        jwt_id="jti-1",
        cnf_x5t_s256=None,
        claims=result.claims,
    )
    assert dict(result.claims) == claims()


@pytest.mark.parametrize("alg", ALGS)
def test_hand_minted_token_verifies_as_str_and_bytes(alg: str) -> None:
    tok = token(alg)
    assert verify(tok).subject == SUB
    assert verify(tok.encode("ascii")).subject == SUB


def test_claims_mapping_is_read_only() -> None:
    result = verify(token())
    with pytest.raises(TypeError):
        result.claims["sub"] = "someone-else"  # type: ignore[index]


def test_one_element_audience_list_accepted() -> None:
    assert verify(token(aud=[AUD])).audience == AUD


def test_fractional_dates_round_towards_a_shorter_window() -> None:
    result = verify(token(exp=NOW + 10.7, nbf=NOW - 5.5, iat=NOW - 5.5))
    assert (result.expires_at, result.not_before, result.issued_at) == (NOW + 10, NOW - 5, NOW - 6)


def test_missing_kid_accepted_when_issuer_has_one_key() -> None:
    s = signer()
    tok = compact(header_for(s, kid=DROP), claims(), s)
    assert verify(tok, make_issuer("ES256")).subject == SUB


def test_missing_kid_refused_when_issuer_has_several_keys() -> None:
    s = signer()
    with pytest.raises(UnknownKeyId):
        verify(compact(header_for(s, kid=DROP), claims(), s))


@pytest.mark.parametrize("typ", [DROP, "JWT", "jwt", "at+jwt", "AT+JWT", "application/at+jwt"])
def test_allowed_typ_values(typ: object) -> None:
    s = signer()
    assert verify(compact(header_for(s, typ=typ), claims(), s)).subject == SUB


@pytest.mark.parametrize(
    "typ", ["dpop+jwt", "baton-envelope+jws", "application/x/jwt", "", 1, None]
)
def test_other_typ_values_refused(typ: object) -> None:
    """RFC 8725 s3.11 (J18): another artifact's type is never a bearer token."""
    s = signer()
    with pytest.raises(WrongType):
        verify(compact(header_for(s, typ=typ), claims(), s))


def test_verify_bearer_uses_the_system_clock() -> None:
    now = int(time.time())
    tok = token(iat=now, exp=now + 300)
    assert verify_bearer(tok, make_issuer()).subject == SUB
    with pytest.raises(TokenExpired):
        verify_bearer(token(iat=now - 1000, exp=now - 600), make_issuer())


def test_non_finite_clock_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="finite"):
        verify_bearer_at(token(), make_issuer(), now=float("nan"))


# --------------------------------------------------------------------------- J01-J06


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", [b"", b"\x00" * 64])
def test_j01_alg_none_refused(alg: str, signature: bytes) -> None:
    s = signer()
    tok = compact(header_for(s, alg=alg), claims(), signature=signature)
    with pytest.raises(AlgorithmNotAllowed):
        verify(tok)


@pytest.mark.parametrize("alg", [DROP, None, "", 256, ["ES256"]])
def test_j01_missing_or_non_string_alg_refused(alg: object) -> None:
    s = signer()
    with pytest.raises(AlgorithmNotAllowed):
        verify(compact(header_for(s, alg=alg), claims(), s))


def _j02_cases() -> list[str]:
    good = token()
    head, body, sig = good.split(".")
    return [
        "",
        head,
        f"{head}.{body}",  # missing separator and signature
        f"{head}.{body}.",  # empty signature segment
        f"{head}..{sig}",  # empty payload
        f".{body}.{sig}",  # empty header
        f"{head}.{body}.{sig}.",  # extra separator
        f"{head}.{body}.{sig}.{sig}",  # extra component
        f"{head}.{body}{sig}",
        json.dumps({"payload": body, "signatures": [{"protected": head, "signature": sig}]}),
    ]


@pytest.mark.parametrize("index", range(len(_j02_cases())))
def test_j02_signature_stripping_and_wrong_segment_count(index: int) -> None:
    with pytest.raises(MalformedJws):
        verify(_j02_cases()[index])


@pytest.mark.parametrize("target", ["RS256", "ES256", "EdDSA"])
@pytest.mark.parametrize("hs", ["HS256", "HS384", "HS512"])
def test_j03_hmac_with_public_key_bytes_refused(target: str, hs: str) -> None:
    """The classic key confusion: an HMAC keyed with the public key's bytes."""
    s = signer(target)
    pem = s.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[hs]
    head = b64url_encode(_json(header_for(s, alg=hs)))
    body = b64url_encode(_json(claims()))
    mac = hmac.new(pem, f"{head}.{body}".encode(), digest).digest()
    with pytest.raises(AlgorithmNotAllowed):
        verify(f"{head}.{body}.{b64url_encode(mac)}")


@pytest.mark.parametrize(
    ("key_name", "header_alg"),
    [("RS256", "PS256"), ("PS256", "RS256"), ("ES256", "EdDSA"), ("EdDSA", "ES256")],
)
def test_j04_supported_alg_other_than_the_pinned_one(key_name: str, header_alg: str) -> None:
    s = signer(key_name)
    other = next(x for x in signers().values() if x.alg == header_alg)
    # Signed correctly for header_alg, but with a key the kid does not name.
    tok = compact(header_for(s, alg=header_alg), claims(), other)
    with pytest.raises(AlgorithmMismatch):
        verify(tok)


@pytest.mark.parametrize("alg", ["ES384", "ES512", "RS384", "PS512", "ES256K", "Ed25519"])
def test_j04_registered_alg_other_than_the_pinned_one_is_a_mismatch(alg: str) -> None:
    """security.md J04: "ES384 on an ES256 key" is ``alg_mismatch``."""
    s = signer()
    with pytest.raises(AlgorithmMismatch):
        verify(compact(header_for(s, alg=alg), claims(), s))


@pytest.mark.parametrize("alg", ["es256", "none", "HS256", "XS256", ""])
def test_j04_unregistered_alg_refused(alg: str) -> None:
    s = signer()
    with pytest.raises(AlgorithmNotAllowed):
        verify(compact(header_for(s, alg=alg), claims(), s))


@pytest.mark.parametrize("name", ["x5t", "x5t#S256"])
def test_thumbprint_hints_are_ignored_not_trusted(name: str) -> None:
    """Entra sends ``x5t``; it must neither break verification nor select a key."""
    s = signer()
    assert verify(compact(header_for(s, **{name: thumb("cert")}), claims(), s)).subject == SUB
    stranger = Signer(s.kid, s.alg, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(BadSignature):
        verify(compact(header_for(s, **{name: thumb("cert")}), claims(), stranger))


def test_j04_pss_signature_under_rs256_header_fails() -> None:
    """Padding confusion: a valid PS256 signature presented as RS256 (J20 class)."""
    rs = signer("RS256")
    pss_signer = Signer(rs.kid, "PS256", rs.private)
    with pytest.raises(BadSignature):
        verify(compact(header_for(rs), claims(), pss_signer))


@pytest.mark.parametrize(
    "kid",
    ["../../dev/null", "/proc/self/cmdline", "..\\..\\windows\\win.ini", "file:///etc/passwd"],
)
def test_j05_kid_path_traversal_is_only_a_map_lookup(kid: str) -> None:
    s = signer()
    with pytest.raises(UnknownKeyId):
        verify(compact(header_for(s, kid=kid), claims(), s))


@pytest.mark.parametrize(
    "kid",
    [
        "' OR '1'='1",
        "x; rm -rf /",
        "$(id)",
        "k" * 129,
        "",
        "es 1",
        "es-1\n",
        "es-\u00e91",
        123,
        None,
        ["es-1"],
        {"kid": "es-1"},
        True,
    ],
)
def test_j06_malformed_or_hostile_kid(kid: object) -> None:
    s = signer()
    with pytest.raises(UnknownKeyId):
        verify(compact(header_for(s, kid=kid), claims(), s))


def test_j06_kid_of_128_characters_is_a_valid_lookup() -> None:
    s = signer()
    long_signer = Signer("k" * 128, "ES256", s.private)
    issuer = BearerIssuer.from_jwks(ISS, AUD, {"keys": [long_signer.jwk]})
    assert verify(compact(header_for(long_signer), claims(), long_signer), issuer).subject == SUB


def test_j06_huge_kid_stopped_by_size_caps() -> None:
    s = signer()
    with pytest.raises(TooLarge):
        verify(compact(header_for(s, kid="k" * 10_000), claims(), s))
    # Under the token cap but over the header cap.
    with pytest.raises(MalformedJws):
        verify(compact(header_for(s, kid="k" * 3_000), claims(), s))


# --------------------------------------------------------------------------- J07-J11


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record (and refuse) any outbound connection attempt (J07)."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise AssertionError("outbound connection attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def _attacker_jwk() -> dict[str, Any]:
    attacker = Signer("attacker", "ES256", ec.generate_private_key(ec.SECP256R1()))
    return {k: v for k, v in attacker.jwk.items() if k != "kid"}


HEADER_CASES: list[tuple[str, Callable[[], object], type[KeysError]]] = [
    ("jku", lambda: "https://attacker.example/jwks.json", UntrustedKey),
    ("x5u", lambda: "https://attacker.example/cert.pem", UntrustedKey),
    ("x5c", lambda: ["MIIBszCCAVmgAwIBAgIUXXXX"], UntrustedKey),
    ("jwk", _attacker_jwk, UntrustedKey),
    ("crit", lambda: ["exp"], UnsupportedCrit),
    ("b64", lambda: False, UnsupportedCrit),
    ("zip", lambda: "DEF", CompressionNotAllowed),
    ("cty", lambda: "JWT", UnsupportedHeader),
    ("nonce", lambda: "n-1", UnsupportedHeader),
    ("iss", lambda: ISS, UnsupportedHeader),
]


@pytest.mark.parametrize(("name", "value", "error"), HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_j07_to_j11_header_parameters_outside_the_allow_list(
    no_network: list[object], name: str, value: Callable[[], object], error: type[KeysError]
) -> None:
    s = signer()
    with pytest.raises(error):
        verify(compact(header_for(s, **{name: value()}), claims(), s))
    assert no_network == []


def test_j09_embedded_jwk_with_matching_signature_refused() -> None:
    """The attacker signs with their own key and embeds it; the kid is ours."""
    attacker = Signer("es-1", "ES256", ec.generate_private_key(ec.SECP256R1()))
    embedded = {k: v for k, v in attacker.jwk.items() if k != "kid"}
    with pytest.raises(UntrustedKey):
        verify(compact(header_for(attacker, jwk=embedded), claims(), attacker))


def test_j11_b64_false_with_crit_refused() -> None:
    s = signer()
    head = header_for(s, b64=False, crit=["b64"])
    with pytest.raises(UnsupportedCrit):
        verify(compact(head, claims(), s))


# --------------------------------------------------------------------------- J12


def test_j12_exp_edge_with_leeway_60() -> None:
    issuer = make_issuer(leeway_s=60)
    exp = NOW + 300
    tok = token(exp=exp)
    assert verify(tok, issuer, now=exp + 59).expires_at == exp
    with pytest.raises(TokenExpired):
        verify(tok, issuer, now=exp + 60)


def test_j12_exp_edge_without_leeway() -> None:
    issuer = make_issuer(leeway_s=0)
    exp = NOW + 300
    assert verify(token(exp=exp), issuer, now=exp - 1).subject == SUB
    with pytest.raises(TokenExpired):
        verify(token(exp=exp), issuer, now=exp)


def test_j12_exp_in_the_past() -> None:
    with pytest.raises(TokenExpired):
        verify(token(iat=NOW - 3000, exp=NOW - 600))


def test_j12_missing_exp() -> None:
    with pytest.raises(TokenExpired):
        verify(token(exp=DROP))


def test_j12_nbf_edge_with_leeway_60() -> None:
    issuer = make_issuer(leeway_s=60)
    assert verify(token(nbf=NOW + 60), issuer).not_before == NOW + 60
    with pytest.raises(NotYetValid):
        verify(token(nbf=NOW + 61), issuer)


def test_j12_iat_in_the_future_edge_with_leeway_60() -> None:
    issuer = make_issuer(leeway_s=60)
    assert verify(token(iat=NOW + 60), issuer).issued_at == NOW + 60
    with pytest.raises(NotYetValid):
        verify(token(iat=NOW + 61), issuer)


def test_j12_lifetime_over_the_maximum_refused() -> None:
    issuer = make_issuer(max_lifetime_s=3600)
    assert verify(token(iat=NOW, exp=NOW + 3600), issuer).subject == SUB
    with pytest.raises(TokenExpired, match="lifetime"):
        verify(token(iat=NOW, exp=NOW + 3601), issuer)


def test_j12_lifetime_without_iat_measured_from_now_plus_leeway() -> None:
    issuer = make_issuer(max_lifetime_s=3600, leeway_s=30)
    assert verify(token(iat=DROP, exp=NOW + 3630), issuer).issued_at is None
    with pytest.raises(TokenExpired, match="lifetime"):
        verify(token(iat=DROP, exp=NOW + 3631), issuer)


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [str(NOW + 60), True, False, None, [NOW], {"t": NOW}, -1, 10**13])
def test_j12_numeric_dates_must_be_numbers_in_range(name: str, value: object) -> None:
    with pytest.raises(MalformedJws):
        verify(token(**{name: value}))


# --------------------------------------------------------------------------- J13, J14


@pytest.mark.parametrize(
    "aud",
    [
        DROP,
        "https://other.example",
        AUD + "/",
        AUD.upper(),
        [AUD, "https://other.example"],
        ["https://other.example", AUD],
        [AUD, AUD],
        [],
        [[AUD]],
        None,
        42,
        {"aud": AUD},
    ],
)
def test_j13_audience_must_be_exactly_ours(aud: object) -> None:
    with pytest.raises(BadAudience):
        verify(token(aud=aud))


@pytest.mark.parametrize(
    "iss",
    [
        DROP,
        "https://idp.example.com.evil",
        "https://idp.example.com/",
        "https://idp.example.co",
        "https://IDP.example.com",
        "http://idp.example.com",
        " https://idp.example.com",
        [ISS],
        None,
    ],
)
def test_j14_issuer_exact_equality(iss: object) -> None:
    with pytest.raises(BadIssuer):
        verify(token(iss=iss))


# --------------------------------------------------------------------------- J15, J17


def test_j15_duplicate_alg_in_header() -> None:
    s = signer()
    raw = b'{"alg":"ES256","alg":"none","kid":"es-1"}'
    with pytest.raises(MalformedJws, match="duplicate"):
        verify(compact(raw, claims(), s))


def test_j15_duplicate_sub_in_claims() -> None:
    s = signer()
    body = _json(claims())[:-1] + b',"sub":"spiffe://baton.local/agent/mallory"}'
    assert body.count(b'"sub"') == 2
    with pytest.raises(MalformedJws, match="duplicate"):
        verify(compact(header_for(s), body, s))


@pytest.mark.parametrize(
    "raw",
    [b"[]", b'"JWT"', b"{", b'{"alg":"ES256",}', b"\xef\xbb\xbf{}", b'{"alg":NaN}', b"\xff"],
)
def test_header_that_is_not_a_strict_json_object(raw: bytes) -> None:
    with pytest.raises(MalformedJws):
        verify(compact(raw, claims(), signer()))


@pytest.mark.parametrize("raw", [b"[]", b"null", b"{", b'{"exp":1e999}', b'{"sub":"\\ud800"}'])
def test_claims_that_are_not_a_strict_json_object(raw: bytes) -> None:
    s = signer()
    with pytest.raises(MalformedJws):
        verify(compact(header_for(s), raw, s))


def _with_remainder_two(value: Mapping[str, Any]) -> bytes:
    """JSON whose base64url form has length 2 mod 4, so it has unused tail bits."""
    raw = _json(value)
    while len(raw) % 3 != 1:
        raw += b" "
    return raw


def _j17_base_token() -> tuple[str, list[str]]:
    s = signer()
    tok = compact(_with_remainder_two(header_for(s)), _with_remainder_two(claims()), s)
    parts = tok.split(".")
    assert all(len(p) % 4 == 2 for p in parts)
    return tok, parts


def _set_tail_bits(segment: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(segment[-1])
    assert last & 0b1111 == 0
    return segment[:-1] + alphabet[last | 1]


J17_MUTATIONS: dict[str, Callable[[str], str]] = {
    "padding": lambda seg: seg + "==",
    "one-pad": lambda seg: seg + "=",
    "plus": lambda seg: "+" + seg[1:],
    "slash": lambda seg: seg[:-2] + "/" + seg[-1],
    "space": lambda seg: seg[:5] + " " + seg[5:],
    "newline": lambda seg: seg[:5] + "\n" + seg[5:],
    "trailing-tab": lambda seg: seg + "\t",
    "tail-bits": _set_tail_bits,
}


@pytest.mark.parametrize("segment", [0, 1, 2], ids=["header", "claims", "signature"])
@pytest.mark.parametrize("mutation", list(J17_MUTATIONS))
def test_j17_non_canonical_base64url(segment: int, mutation: str) -> None:
    good, parts = _j17_base_token()
    assert verify(good).subject == SUB
    parts[segment] = J17_MUTATIONS[mutation](parts[segment])
    with pytest.raises(MalformedJws):
        verify(".".join(parts))


@pytest.mark.parametrize("segment", [0, 1, 2], ids=["header", "claims", "signature"])
def test_j17_tail_bits_are_invisible_to_a_lenient_decoder(segment: int) -> None:
    """Why the check matters: the mutated segment decodes to the same bytes."""
    _, parts = _j17_base_token()
    mutated = _set_tail_bits(parts[segment])
    assert base64.urlsafe_b64decode(mutated + "==") == b64url_decode(parts[segment])


# --------------------------------------------------------------------------- J19, signatures

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _es256_signature() -> tuple[str, int, int]:
    s = signer()
    good = compact(header_for(s), claims(), s)
    raw = b64url_decode(good.rsplit(".", 1)[1])
    return good, int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")


def _with_rs(good: str, r: int, s: int) -> str:
    signing_input = good.rsplit(".", 1)[0]
    return f"{signing_input}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@pytest.mark.parametrize(
    "case",
    ["r=s=0", "r=0", "s=0", "r=n", "s=n", "r=s=n", "r=2^256-1", "s=n+s", "r=1,s=1"],
)
def test_j19_ecdsa_special_values(case: str) -> None:
    good, r, s = _es256_signature()
    assert verify(good).subject == SUB
    r2, s2 = {
        "r=s=0": (0, 0),
        "r=0": (0, s),
        "s=0": (r, 0),
        "r=n": (P256_N, s),
        "s=n": (r, P256_N),
        "r=s=n": (P256_N, P256_N),
        "r=2^256-1": (2**256 - 1, s),
        "s=n+s": (r, (P256_N + s) % 2**256),
        "r=1,s=1": (1, 1),
    }[case]
    with pytest.raises(BadSignature):
        verify(_with_rs(good, r2, s2))


@pytest.mark.parametrize("length", [0, 1, 63, 65, 70, 72, 128])
def test_j19_es256_signature_of_wrong_length(length: int) -> None:
    good, _, _ = _es256_signature()
    forged = good.rsplit(".", 1)[0] + "." + b64url_encode(bytes([1]) * length)
    expected: type[KeysError] = MalformedJws if length == 0 else BadSignature
    with pytest.raises(expected):
        verify(forged)


def test_j19_der_encoded_es256_signature_refused() -> None:
    s = signer()
    signing_input = compact(header_for(s), claims(), s).rsplit(".", 1)[0]
    assert isinstance(s.private, ec.EllipticCurvePrivateKey)
    der = s.private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(BadSignature):
        verify(f"{signing_input}.{b64url_encode(der)}")


@pytest.mark.parametrize("alg", ALGS)
def test_signature_by_another_key_or_over_other_claims_fails(alg: str) -> None:
    s = signer(alg)
    imposter = Signer(s.kid, alg, fresh_private_key(alg))
    with pytest.raises(BadSignature):
        verify(compact(header_for(s), claims(), imposter))
    head, _, sig = token(alg).split(".")
    swapped = b64url_encode(_json(claims(sub="spiffe://baton.local/agent/mallory")))
    with pytest.raises(BadSignature):
        verify(f"{head}.{swapped}.{sig}")


def test_rsa_signature_of_wrong_length() -> None:
    signing_input = token("RS256").rsplit(".", 1)[0]
    for length in (255, 257, 512):
        with pytest.raises(BadSignature):
            verify(signing_input + "." + b64url_encode(bytes([1]) * length))


# --------------------------------------------------------------------------- other claims


@pytest.mark.parametrize("sub", [DROP, "", None, 7, ["a"], {"id": "a"}])
def test_subject_required(sub: object) -> None:
    with pytest.raises(MalformedJws):
        verify(token(sub=sub))


@pytest.mark.parametrize("jti", [7, None, ["j"]])
def test_jti_must_be_a_string(jti: object) -> None:
    with pytest.raises(MalformedJws):
        verify(token(jti=jti))


def test_token_over_the_size_cap() -> None:
    tok = token()
    issuer = make_issuer(max_token_bytes=len(tok) - 1)
    with pytest.raises(TooLarge):
        verify(tok, issuer)
    assert verify(tok, make_issuer(max_token_bytes=len(tok))).subject == SUB


@pytest.mark.parametrize("tok", ["\u00e9" + token(), token().encode() + b"\xff", b"\xc3\xa9"])
def test_non_ascii_token(tok: str | bytes) -> None:
    with pytest.raises(MalformedJws):
        verify(tok)


# --------------------------------------------------------------------------- M06, M07


def test_m06_subject_must_match_the_certificate_identity() -> None:
    assert verify(token(), expected_subject=SUB).subject == SUB
    with pytest.raises(IdentityMismatch):
        verify(token(), expected_subject="spiffe://baton.local/agent/bravo")


def test_m07_bound_token_with_its_certificate() -> None:
    cert = thumb("cert-A")
    result = verify(token(cnf={"x5t#S256": cert}), client_cert_x5t_s256=cert)
    assert result.cnf_x5t_s256 == cert


def test_m07_bound_to_another_certificate() -> None:
    tok = token(cnf={"x5t#S256": thumb("cert-X")})
    with pytest.raises(IdentityMismatch):
        verify(tok, client_cert_x5t_s256=thumb("cert-Y"), expected_subject=SUB)


def test_m07_bound_token_without_a_certificate() -> None:
    with pytest.raises(IdentityMismatch):
        verify(token(cnf={"x5t#S256": thumb("cert-X")}))


def test_m07_unbound_token_over_mtls() -> None:
    with pytest.raises(IdentityMismatch):
        verify(token(), client_cert_x5t_s256=thumb("cert-A"))


def test_m07_presented_thumbprint_compared_safely_even_when_odd() -> None:
    tok = token(cnf={"x5t#S256": thumb("cert-X")})
    with pytest.raises(IdentityMismatch):
        verify(tok, client_cert_x5t_s256="\u00e9t\u00e9")


@pytest.mark.parametrize(
    "cnf",
    [{"jkt": thumb("dpop-key")}, {"x5t#S256": thumb("c"), "jkt": thumb("k")}, {"jwk": {}}],
)
def test_m07_confirmation_methods_we_cannot_check_are_refused(cnf: object) -> None:
    """A DPoP-bound token (RFC 9449 s6) must not be accepted as a plain bearer token."""
    with pytest.raises(IdentityMismatch):
        verify(token(cnf=cnf))


@pytest.mark.parametrize(
    "cnf",
    [
        {},
        None,
        "x",
        ["x5t#S256"],
        {"x5t#S256": 5},
        {"x5t#S256": thumb("c") + "="},
        {"x5t#S256": b64url_encode(b"\x00" * 20)},
        {"x5t#S256": thumb("c").replace("-", "+").replace("_", "/") + "+"},
    ],
)
def test_malformed_cnf(cnf: object) -> None:
    with pytest.raises(MalformedJws):
        verify(token(cnf=cnf), client_cert_x5t_s256=thumb("c"))


# --------------------------------------------------------------------------- robustness


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_arbitrary_input_raises_only_keys_errors(garbage: str | bytes) -> None:
    with pytest.raises(KeysError):
        verify(garbage)


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(st.data())
def test_mutated_token_raises_only_keys_errors(data: st.DataObject) -> None:
    good = token(data.draw(st.sampled_from(ALGS)))
    position = data.draw(st.integers(0, len(good) - 1))
    replacement = data.draw(st.sampled_from("AQgw-_.=+/ x0"))
    mutated = good[:position] + replacement + good[position + 1 :]
    if mutated == good:
        return
    with pytest.raises(KeysError):
        verify(mutated)


# --------------------------------------------------------------------------- IssuerKey, JWKS


@pytest.mark.parametrize("alg", ALGS)
def test_issuer_key_from_jwk(alg: str) -> None:
    s = signer(alg)
    key = IssuerKey.from_jwk(s.jwk)
    assert (key.kid, key.alg) == (s.kid, alg)
    assert key == IssuerKey.from_jwk(s.jwk)
    assert hash(key) == hash(IssuerKey.from_jwk(s.jwk))
    assert "n=" not in repr(key) and "public_key" not in repr(key)


def test_issuer_key_alg_derived_from_curve() -> None:
    for name, alg in (("ES256", "ES256"), ("EdDSA", "EdDSA")):
        jwk = {k: v for k, v in signer(name).jwk.items() if k != "alg"}
        assert IssuerKey.from_jwk(jwk).alg == alg


def test_issuer_key_ignores_certificate_metadata() -> None:
    jwk = {**signer("RS256").jwk, "x5c": ["MIIB"], "x5t": "abc", "x5t#S256": "def", "use": "sig"}
    assert IssuerKey.from_jwk(jwk).alg == "RS256"


def _rsa_jwk(n: int, e: int = 65537, **extra: Any) -> dict[str, Any]:
    def uint(value: int) -> str:
        return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": uint(n), "e": uint(e), **extra}


def _bad_jwks() -> dict[str, Callable[[], Any]]:
    ec_jwk = signer("ES256").jwk
    ed_jwk = signer("EdDSA").jwk
    rs_jwk = signer("RS256").jwk
    rs_n = int.from_bytes(b64url_decode(rs_jwk["n"]), "big")
    y = int.from_bytes(b64url_decode(ec_jwk["y"]), "big")
    return {
        "private-d": lambda: {**ec_jwk, "d": b64url_encode(b"\x01" * 32)},
        "private-rsa": lambda: {**rs_jwk, "d": "AQAB", "p": "AQAB"},
        "oct": lambda: {"kty": "oct", "kid": "h", "alg": "HS256", "k": "c2VjcmV0"},
        "oct-no-k": lambda: {"kty": "oct", "kid": "h", "alg": "HS256"},
        "no-kty": lambda: {k: v for k, v in ec_jwk.items() if k != "kty"},
        "kty-lower": lambda: {**ec_jwk, "kty": "ec"},
        "p384": lambda: {**ec_jwk, "crv": "P-384"},
        "secp256k1": lambda: {**ec_jwk, "crv": "secp256k1"},
        "ed448": lambda: {**ed_jwk, "crv": "Ed448"},
        "x25519": lambda: {**ed_jwk, "crv": "X25519"},
        "ec-alg-rs256": lambda: {**ec_jwk, "alg": "RS256"},
        "ec-alg-es384": lambda: {**ec_jwk, "alg": "ES384"},
        "ed-alg-ed25519": lambda: {**ed_jwk, "alg": "Ed25519"},
        "rsa-alg-es256": lambda: {**rs_jwk, "alg": "ES256"},
        "rsa-alg-rs512": lambda: {**rs_jwk, "alg": "RS512"},
        "rsa-no-alg": lambda: {k: v for k, v in rs_jwk.items() if k != "alg"},
        "use-enc": lambda: {**ec_jwk, "use": "enc"},
        "key-ops-encrypt": lambda: {**ec_jwk, "key_ops": ["encrypt"]},
        "key-ops-sign-only": lambda: {**ec_jwk, "key_ops": ["sign"]},
        "key-ops-not-list": lambda: {**ec_jwk, "key_ops": "verify"},
        "x5u": lambda: {**ec_jwk, "x5u": "https://attacker.example/cert"},
        "unknown-member": lambda: {**ec_jwk, "issuer": ISS},
        "rsa-with-crv": lambda: {**rs_jwk, "crv": "P-256"},
        "no-kid": lambda: {k: v for k, v in ec_jwk.items() if k != "kid"},
        "kid-129": lambda: {**ec_jwk, "kid": "k" * 129},
        "kid-space": lambda: {**ec_jwk, "kid": "a b"},
        "kid-int": lambda: {**ec_jwk, "kid": 1},
        "kid-empty": lambda: {**ec_jwk, "kid": ""},
        "point-off-curve": lambda: {**ec_jwk, "y": b64url_encode(((y + 1) % 2**256).to_bytes(32))},
        "x-31-bytes": lambda: {**ec_jwk, "x": b64url_encode(b"\x01" * 31)},
        "x-padded": lambda: {**ec_jwk, "x": ec_jwk["x"] + "="},
        "x-missing": lambda: {k: v for k, v in ec_jwk.items() if k != "x"},
        "x-not-string": lambda: {**ec_jwk, "x": 5},
        "ed-x-33-bytes": lambda: {**ed_jwk, "x": b64url_encode(b"\x01" * 33)},
        "n-leading-zero": lambda: {
            **rs_jwk,
            "n": b64url_encode(b"\x00" + b64url_decode(rs_jwk["n"])),
        },
        "n-empty": lambda: {**rs_jwk, "n": ""},
        "e-1": lambda: _rsa_jwk(rs_n, 1),
        "e-3": lambda: _rsa_jwk(rs_n, 3),
        "e-65539": lambda: _rsa_jwk(rs_n, 65539),
        "e-leading-zero": lambda: {**rs_jwk, "e": "AAEAAQ"},
        "rsa-8200-bits": lambda: _rsa_jwk((1 << 8199) | 0xFFFF_FFFF_0001),
        "rsa-even-modulus": lambda: _rsa_jwk(rs_n + 1),
        "not-an-object": lambda: ["kty", "EC"],
    }


@pytest.mark.parametrize("case", list(_bad_jwks()))
def test_issuer_key_from_jwk_refuses(case: str) -> None:
    with pytest.raises(InvalidKey):
        IssuerKey.from_jwk(_bad_jwks()[case]())


def test_rsa_key_under_2048_bits_refused() -> None:
    small = Signer("small", "RS256", rsa.generate_private_key(65537, 1024))  # noqa: S505
    with pytest.raises(InvalidKey, match="1024 bits"):
        IssuerKey.from_jwk(small.jwk)
    n2047 = (1 << 2046) | 0xC0FFEE1  # odd, 2047 bits
    with pytest.raises(InvalidKey, match="2047 bits"):
        IssuerKey.from_jwk(_rsa_jwk(n2047))


def test_rsa_key_with_exponent_3_refused_by_jwk_and_by_constructor() -> None:
    weak = rsa.generate_private_key(3, 2048).public_key()
    with pytest.raises(InvalidKey, match="exponent"):
        IssuerKey.from_jwk(_rsa_jwk(weak.public_numbers().n, 3))
    with pytest.raises(InvalidKey, match="exponent"):
        IssuerKey(kid="weak", alg="RS256", public_key=weak)


@pytest.mark.parametrize(
    ("alg", "key"),
    [
        ("ES256", lambda: rsa.generate_private_key(65537, 2048).public_key()),
        ("ES256", lambda: ec.generate_private_key(ec.SECP384R1()).public_key()),
        ("EdDSA", lambda: ec.generate_private_key(ec.SECP256R1()).public_key()),
        ("RS256", lambda: ed25519.Ed25519PrivateKey.generate().public_key()),
        ("HS256", lambda: ec.generate_private_key(ec.SECP256R1()).public_key()),
        ("none", lambda: ec.generate_private_key(ec.SECP256R1()).public_key()),
    ],
)
def test_issuer_key_constructor_checks_alg_against_key(alg: str, key: Callable[[], Any]) -> None:
    with pytest.raises(InvalidKey):
        IssuerKey(kid="k", alg=alg, public_key=key())


def test_from_jwks_refuses_bad_sets() -> None:
    ec_jwk = signer("ES256").jwk
    other = signer("ES256-other").jwk
    oct_jwk = {"kty": "oct", "kid": "h", "alg": "HS256", "k": "c2VjcmV0"}
    bad: list[object] = [
        {"keys": []},
        {},
        {"keys": ec_jwk},
        {"keys": [ec_jwk], "extra": 1},
        {"keys": [ec_jwk, {**other, "kid": ec_jwk["kid"]}]},  # duplicate kid
        {"keys": [ec_jwk, ec_jwk]},
        {"keys": [oct_jwk, ec_jwk]},  # mixed symmetric and public (Wycheproof tc1)
        {"keys": [ec_jwk, "not-an-object"]},
        {"keys": [{**other, "kid": f"k{i}"} for i in range(65)]},
        [ec_jwk],
    ]
    for jwks in bad:
        with pytest.raises(InvalidKey):
            BearerIssuer.from_jwks(ISS, AUD, jwks)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"issuer": ""},
        {"audience": ""},
        {"leeway_s": -1},
        {"leeway_s": True},
        {"max_lifetime_s": 0},
        {"max_token_bytes": 0},
        {"allowed_typ": {"JWT"}},
        {"allowed_typ": frozenset({""})},
    ],
)
def test_bearer_issuer_refuses_bad_options(options: dict[str, Any]) -> None:
    keys = {"es-1": IssuerKey.from_jwk(signer().jwk)}
    base: dict[str, Any] = {"issuer": ISS, "audience": AUD, "keys": keys, **options}
    with pytest.raises(ValueError):
        BearerIssuer(**base)


def test_bearer_issuer_keys_are_checked_and_frozen() -> None:
    key = IssuerKey.from_jwk(signer().jwk)
    with pytest.raises(InvalidKey):
        BearerIssuer(ISS, AUD, {})
    with pytest.raises(InvalidKey):
        BearerIssuer(ISS, AUD, {"wrong-kid": key})
    with pytest.raises(InvalidKey):
        BearerIssuer(ISS, AUD, {"es-1": "not a key"})  # type: ignore[dict-item]
    source = {"es-1": key}
    issuer = BearerIssuer(ISS, AUD, source)
    source.clear()
    assert list(issuer.keys) == ["es-1"]
    with pytest.raises(TypeError):
        issuer.keys["x"] = key  # type: ignore[index]
    assert hash(issuer) == hash(BearerIssuer(ISS, AUD, {"es-1": key}))


# --------------------------------------------------------------------------- ROCA (J21)

ROCA_PRIMES = (
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79,
    83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
)  # fmt: skip
# The "prints" of crocs-muni/roca detect.py, one bitmask per prime above.
ROCA_PRINTS = (
    6, 30, 126, 1026, 5658, 107286, 199410, 8388606, 536870910, 2147483646, 67109890,
    2199023255550, 8796093022206, 140737488355326, 5310023542746834, 576460752303423486,
    1455791217086302986, 147573952589676412926, 20052041432995567486,
    6041388139249378920330, 207530445072488465666, 9671406556917033397649406,
    618970019642690137449562110, 79228162521181866724264247298,
    2535301200456458802993406410750, 1760368345969468176824550810518,
    50079290986288516948354744811034, 473022961816146413042658758988474,
    10384593717069655257060992658440190, 144390480366845522447407333004847678774,
    2722258935367507707706996859454145691646, 174224571863520493293247799005065324265470,
    696898287454081973172991196020261297061886,
    713623846352979940529142984724747568191373310,
    1800793591454480341970779146165214289059119882,
    126304807362733370595828809000324029340048915994,
    11692013098647223345629478661730264157247460343806,
    187072209578355573530071658587684226515959365500926,
)  # fmt: skip
ROCA_M = reduce(lambda a, b: a * b, ROCA_PRIMES)


def _crt_one_except(prime: int, residue: int) -> int:
    """The n < M with n = residue (mod prime) and n = 1 modulo every other prime."""
    others = ROCA_M // prime
    return (1 + others * ((residue - 1) * pow(others, -1, prime) % prime)) % ROCA_M


def test_roca_detector_agrees_with_the_published_fingerprints() -> None:
    """Residue by residue, prime by prime, against the reference detector's table."""
    assert len(ROCA_PRIMES) == len(ROCA_PRINTS) == 38
    for prime, prints in zip(ROCA_PRIMES, ROCA_PRINTS, strict=True):
        for residue in range(prime):
            n = _crt_one_except(prime, residue)
            assert is_roca_modulus(n) == bool(prints >> residue & 1), (prime, residue)


def _synthetic_roca_modulus(bits: int = 2048) -> int:
    """A modulus of the RSALib form: congruent to a power of 65537 modulo M."""
    n = pow(65537, 12345, ROCA_M) + ((1 << (bits - 1)) // ROCA_M + 1) * ROCA_M
    return n if n % 2 else n + ROCA_M


def test_roca_synthetic_modulus_refused() -> None:
    n = _synthetic_roca_modulus()
    assert n.bit_length() == 2048
    assert is_roca_modulus(n)
    assert not is_roca_modulus(n + 2)
    with pytest.raises(InvalidKey, match="ROCA"):
        IssuerKey.from_jwk(_rsa_jwk(n))


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_roca_generated_keys_are_not_flagged(alg: str) -> None:
    key = signer(alg).private.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert not is_roca_modulus(key.public_numbers().n)


def _wycheproof_jwk_groups(vectors_dir: Path) -> dict[int, dict[str, Any]]:
    path = vectors_dir / "wycheproof_json_web_key_test.json"
    doc = strictjson.loads_object(path.read_bytes(), max_bytes=1 << 22)
    groups: dict[int, dict[str, Any]] = {}
    for group in doc["testGroups"]:
        for test in group["tests"]:
            groups[test["tcId"]] = group
    return groups


@pytest.mark.vectors
def test_wycheproof_roca_key_refused_and_normal_2048_bit_key_accepted(vectors_dir: Path) -> None:
    groups = _wycheproof_jwk_groups(vectors_dir)
    roca = groups[7]["public"]["keys"][0]
    assert roca["kid"] == "kid-rsa-roca-sign"
    with pytest.raises(InvalidKey, match="ROCA"):
        IssuerKey.from_jwk(roca)
    with pytest.raises(InvalidKey, match="ROCA"):
        BearerIssuer.from_jwks(ISS, AUD, groups[7]["public"])
    normal = groups[5]["public"]["keys"][0]
    key = IssuerKey.from_jwk(normal)
    assert isinstance(key.public_key, rsa.RSAPublicKey)
    assert key.public_key.key_size == 2048
    assert (key.kid, key.alg) == ("kid-rsa-sign", "RS256")
    assert BearerIssuer.from_jwks(ISS, AUD, groups[5]["public"]).keys["kid-rsa-sign"] == key


@pytest.mark.vectors
def test_wycheproof_key_sets_only_the_plain_rsa_key_is_accepted(vectors_dir: Path) -> None:
    """Every Wycheproof JWK set is refused except tcId 5's public RS256 key:
    symmetric keys (tc 1-4, 10-18, 25-26), RSA with use=enc (6), ROCA (7),
    1024-bit (8), e=1 (9), EC alg/curve/point/kty mismatches (19-24)."""
    accepted = set()
    for tc_id, group in _wycheproof_jwk_groups(vectors_dir).items():
        jwks = group.get("public", group["private"])
        try:
            BearerIssuer.from_jwks(ISS, AUD, jwks)
        except InvalidKey:
            continue
        accepted.add(tc_id)
    assert accepted == {5}
