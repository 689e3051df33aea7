"""Catalogue 1.1, JWT/JWS (J01-J21), at the gateway surface that consumes JWTs.

Bearer tokens are the JWTs the data plane consumes: ``support`` (over its own
mTLS certificate, with a valid RFC 9421 signature) sends
``Authorization: Bearer <token>`` from the pinned issuer ``https://idp.test``
(``gw_bearer``: an ES256 key in a local JWKS file; J20 adds an RS256 issuer).
The token is checked at the authenticate step, before the signature and the
nonce, so every reject leaves the nonce unclaimed and writes only its audit
event (``invariants.assert_rejected``). The raw token never reaches the audit
log or the upstream.

Baton's stable codes where the catalogue suggests none or another (sound:
the most specific check that fired, decided before any cryptography):
``kid`` with forbidden characters, too long or not a string -> ``unknown_kid``
(never a lookup); ``jku``/``x5u``/``x5c``/``jwk`` -> ``untrusted_key``;
``crit`` and ``b64`` -> ``unsupported_crit``; duplicate members, JSON
serialization, non-canonical base64url -> ``malformed_jws``; a wrong-length
or out-of-range ECDSA signature -> ``bad_signature``; the leeway is Baton's
default ``leeway_s = 30`` (the catalogue's example uses 60).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config import ConfigError, load
from gateway.runtime import load_runtime
from keys.b64 import b64url_encode
from keys.keyset import KeySet
from keys.material import PrivateKey
from keys.x509 import pem_chain_to_der
from tests.gateway._harness import rpc
from tests.security.conftest import (
    BEARER_ISSUER,
    BILLING,
    GATEWAY,
    IDP_ISSUER,
    SUPPORT,
    SecGateway,
    launch,
    shutdown,
)
from tests.security.invariants import assert_rejected

PATH = "/u/billing/mcp"
LEEWAY = 30
#: The P-256 group order (SEC 2 s2.4.2).
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _b64(data: bytes) -> str:
    return b64url_encode(data)


def _claims(gw: SecGateway, **over: object) -> dict[str, Any]:
    now = int(gw.clock.now)
    claims: dict[str, Any] = {
        "iss": IDP_ISSUER,
        "sub": SUPPORT,
        "aud": GATEWAY,
        "iat": now,
        "exp": now + 300,
        "cnf": {"x5t#S256": gw.thumbprint("support")},
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def craft(
    gw: SecGateway,
    *,
    header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
    header_raw: bytes | None = None,
    claims_raw: bytes | None = None,
    key: PrivateKey | None = None,
    signature: bytes | None = None,
) -> str:
    """A compact JWS with exactly these bytes, signed by ``key`` (the IdP's)
    unless ``signature`` is given."""
    signer = key or gw.idp
    assert signer is not None
    if header_raw is None:
        header = header if header is not None else {"alg": "ES256", "kid": signer.kid}
        header_raw = json.dumps(header).encode()
    if claims_raw is None:
        claims_raw = json.dumps(claims if claims is not None else _claims(gw)).encode()
    signing_input = f"{_b64(header_raw)}.{_b64(claims_raw)}"
    sig = signer.sign(signing_input.encode()) if signature is None else signature
    return f"{signing_input}.{_b64(sig)}"


def _send(gw: SecGateway, token: str) -> Any:
    return gw.send(
        "support",
        PATH,
        rpc("tools/list"),
        extra=[("authorization", f"Bearer {token}")],
    )


async def _rejected(gw: SecGateway, token: str, code: str) -> None:
    await assert_rejected(gw, _send(gw, token), status=401, code=code, secrets=[token])


async def _accepted(gw: SecGateway, token: str) -> None:
    status, _, body = await _send(gw, token)
    assert status == 200, body
    headers = {k.lower(): v for k, v in gw.upstream.received[-1].headers.items()}
    assert "authorization" not in headers and token not in json.dumps(headers)


def _idp_header(gw: SecGateway, **extra: object) -> dict[str, Any]:
    assert gw.idp is not None
    return {"alg": "ES256", "kid": gw.idp.kid, "typ": "JWT", **extra}


@pytest.mark.threat("J04")
async def test_baseline_token_is_accepted(gw_bearer: SecGateway) -> None:
    """The crafting helpers make tokens the gateway accepts: every reject below
    differs from this one in the single property under test."""
    await _accepted(gw_bearer, craft(gw_bearer, header=_idp_header(gw_bearer)))
    await _accepted(gw_bearer, gw_bearer.token())


# ---------------------------------------------------------------- J01-J04 alg
@pytest.mark.threat("J01")
@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none(gw_bearer: SecGateway, alg: str) -> None:
    gw = gw_bearer
    token = craft(gw, header=_idp_header(gw, alg=alg), signature=b"")
    await _rejected(gw, token, "alg_not_allowed")
    await _rejected(gw, token.rsplit(".", 1)[0] + ".", "alg_not_allowed")


@pytest.mark.threat("J02")
@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.rsplit(".", 1)[0],  # missing third segment
        lambda t: t.rsplit(".", 1)[0] + ".",  # empty signature
        lambda t: t.replace(".", "", 1),  # a separator missing
        lambda t: t + ".AAAA",  # an extra component
        lambda t: t + ".",
    ],
    ids=["two-segments", "empty-signature", "no-separator", "extra-component", "trailing-dot"],
)
async def test_signature_stripping(gw_bearer: SecGateway, mutate: Any) -> None:
    await _rejected(gw_bearer, mutate(gw_bearer.token()), "malformed_jws")


@pytest.mark.threat("J03")
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_with_the_public_key_as_secret(gw_bearer: SecGateway, alg: str) -> None:
    """The classic key confusion: a MAC keyed with the issuer's public key bytes."""
    gw = gw_bearer
    assert gw.idp is not None
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    jwk = json.dumps(gw.idp.public.to_jwk()).encode()
    pem = gw.idp.public.crypto_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (jwk, pem):
        header = _b64(json.dumps(_idp_header(gw, alg=alg)).encode())
        claims = _b64(json.dumps(_claims(gw)).encode())
        mac = hmac.new(secret, f"{header}.{claims}".encode(), digest).digest()
        await _rejected(gw, f"{header}.{claims}.{_b64(mac)}", "alg_not_allowed")


@pytest.mark.threat("J04")
@pytest.mark.parametrize("alg", ["ES384", "ES512", "PS256", "RS256", "EdDSA"])
async def test_header_alg_is_not_the_keys(gw_bearer: SecGateway, alg: str) -> None:
    """The key is pinned to ES256; the header may only agree with it."""
    gw = gw_bearer
    await _rejected(gw, craft(gw, header=_idp_header(gw, alg=alg)), "alg_mismatch")


# ---------------------------------------------------------------- J05-J09 key
@pytest.mark.threat("J05")
@pytest.mark.parametrize(
    "kid", ["../../dev/null", "/proc/self/cmdline", "..\\..\\windows\\win.ini", "file:///etc"]
)
async def test_kid_path_traversal(gw_bearer: SecGateway, kid: str) -> None:
    gw = gw_bearer
    await _rejected(gw, craft(gw, header=_idp_header(gw, kid=kid)), "unknown_kid")


@pytest.mark.threat("J06")
@pytest.mark.parametrize(
    "kid",
    ["' OR '1'='1", "x; rm -rf /", "$(id)", "k" * 129, "", "a b", "k\u00e9", 7, None, ["k"]],
    ids=["sql", "shell", "subst", "129", "empty", "space", "non-ascii", "int", "null", "list"],
)
async def test_kid_injection_size_and_type(gw_bearer: SecGateway, kid: object) -> None:
    gw = gw_bearer
    await _rejected(gw, craft(gw, header=_idp_header(gw, kid=kid)), "unknown_kid")


@pytest.mark.threat("J06")
async def test_kid_of_some_kilobytes_is_refused_before_parsing(gw_bearer: SecGateway) -> None:
    """A 4 KB kid: over the 2 KiB cap on a JWT header, refused before decoding."""
    gw = gw_bearer
    await _rejected(gw, craft(gw, header=_idp_header(gw, kid="k" * 4_000)), "malformed_jws")


@pytest.mark.threat("J06")
async def test_kid_of_ten_kilobytes_gets_a_generic_answer(gw_bearer: SecGateway) -> None:
    """Over Baton's header cap: its own 431, audited (aiohttp's parser caps are
    set above Baton's, ``gateway.app.parser_limits``, as ``baton serve`` does)."""
    gw = gw_bearer
    token = craft(gw, header=_idp_header(gw, kid="k" * 10_000))
    await assert_rejected(gw, _send(gw, token), status=431, code="headers_too_large")


class _Egress:
    """A plain HTTP server standing for the attacker's JWKS host; counts requests."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.hits = 0
        self.jwks = jwks
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, _request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response(self.jwks)

    async def __aenter__(self) -> _Egress:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/jwks.json"
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.mark.threat("J07")
async def test_jku_is_never_fetched(gw_bearer: SecGateway) -> None:
    gw = gw_bearer
    attacker = PrivateKey.generate("ES256")
    async with _Egress(KeySet([attacker.public]).to_jwks()) as egress:
        header = {"alg": "ES256", "kid": attacker.kid, "typ": "JWT", "jku": egress.url}
        await _rejected(gw, craft(gw, header=header, key=attacker), "untrusted_key")
        # Even naming the real issuer's kid, jku is refused (it never adds trust).
        await _rejected(gw, craft(gw, header=_idp_header(gw, jku=egress.url)), "untrusted_key")
        assert egress.hits == 0, "the gateway fetched an attacker-named JWKS"


@pytest.mark.threat("J08")
async def test_x5u_and_x5c_do_not_create_trust(gw_bearer: SecGateway) -> None:
    gw = gw_bearer
    chain = base64.b64encode(pem_chain_to_der(gw.agent("support").cert_pem)[0]).decode()
    async with _Egress({}) as egress:
        for extra in ({"x5u": egress.url}, {"x5c": [chain]}):
            await _rejected(gw, craft(gw, header=_idp_header(gw, **extra)), "untrusted_key")
        assert egress.hits == 0


@pytest.mark.threat("J09")
async def test_embedded_jwk_is_not_trusted(gw_bearer: SecGateway) -> None:
    gw = gw_bearer
    attacker = PrivateKey.generate("ES256")
    header = {"alg": "ES256", "typ": "JWT", "jwk": attacker.public.to_jwk()}
    await _rejected(gw, craft(gw, header=header, key=attacker), "untrusted_key")
    header["kid"] = attacker.kid
    await _rejected(gw, craft(gw, header=header, key=attacker), "untrusted_key")


# ------------------------------------------------------------ J10-J11 headers
@pytest.mark.threat("J10")
@pytest.mark.parametrize("crit", [["x"], ["exp"], [], "x"])
async def test_unknown_crit(gw_bearer: SecGateway, crit: object) -> None:
    gw = gw_bearer
    await _rejected(gw, craft(gw, header=_idp_header(gw, crit=crit, x=1)), "unsupported_crit")


@pytest.mark.threat("J11")
async def test_unencoded_payload(gw_bearer: SecGateway) -> None:
    """``b64: false`` with or without ``crit``: no route takes RFC 7797 payloads."""
    gw = gw_bearer
    for extra in ({"b64": False}, {"b64": False, "crit": ["b64"]}):
        await _rejected(gw, craft(gw, header=_idp_header(gw, **extra)), "unsupported_crit")


# -------------------------------------------------------------- J12-J14 claims
@pytest.mark.threat("J12")
async def test_exp_edge_with_leeway(gw_bearer: SecGateway) -> None:
    """Accept at ``exp + S - 1``, reject at ``exp + S`` (S = leeway_s = 30)."""
    gw = gw_bearer
    now = int(gw.clock.now)
    token = craft(gw, claims=_claims(gw, iat=now - 100, exp=now - LEEWAY + 1))
    await _accepted(gw, token)
    token = craft(gw, claims=_claims(gw, iat=now - 100, exp=now - LEEWAY))
    await _rejected(gw, token, "expired")


@pytest.mark.threat("J12")
async def test_time_claims(gw_bearer: SecGateway) -> None:
    gw = gw_bearer
    now = int(gw.clock.now)
    cases = [
        (_claims(gw, iat=now - 600, exp=now - 300), "expired"),
        (_claims(gw, exp=None), "expired"),
        (_claims(gw, nbf=now + LEEWAY + 1), "not_yet_valid"),
        (_claims(gw, iat=now + LEEWAY + 1, exp=now + 600), "not_yet_valid"),
        (_claims(gw, iat=now, exp=now + 86_400), "expired"),  # lifetime over max_lifetime_s
        (_claims(gw, exp=str(now + 300)), "malformed_jws"),
    ]
    for claims, code in cases:
        await _rejected(gw, craft(gw, claims=claims), code)


@pytest.mark.threat("J13")
@pytest.mark.parametrize(
    "aud",
    [
        "spiffe://baton.local/gateway/other",
        None,
        [GATEWAY, "spiffe://baton.local/agent/billing"],
        [],
        GATEWAY + "/",
        GATEWAY.upper(),
    ],
    ids=["other", "missing", "multi", "empty-list", "suffix", "case"],
)
async def test_audience(gw_bearer: SecGateway, aud: object) -> None:
    gw = gw_bearer
    await _rejected(gw, craft(gw, claims=_claims(gw, aud=aud)), "bad_audience")


@pytest.mark.threat("J13")
async def test_single_element_audience_list_is_ours(gw_bearer: SecGateway) -> None:
    await _accepted(gw_bearer, craft(gw_bearer, claims=_claims(gw_bearer, aud=[GATEWAY])))


@pytest.mark.threat("J14")
@pytest.mark.parametrize(
    "iss",
    [
        "https://idp.test.evil",
        "https://idp.test/",
        "https://IDP.test",
        "https://evil/https://idp.test",
        "idp.test",
        None,
    ],
)
async def test_issuer_is_compared_exactly(gw_bearer: SecGateway, iss: str | None) -> None:
    gw = gw_bearer
    await _rejected(gw, craft(gw, claims=_claims(gw, iss=iss)), "bad_issuer")


# ------------------------------------------------------------ J15-J17 parsing
@pytest.mark.threat("J15")
async def test_duplicate_members(gw_bearer: SecGateway) -> None:
    gw = gw_bearer
    assert gw.idp is not None
    kid = gw.idp.kid
    header = f'{{"alg":"ES256","alg":"none","kid":"{kid}"}}'.encode()
    await _rejected(gw, craft(gw, header_raw=header), "malformed_jws")
    claims = json.dumps(_claims(gw)).encode()
    twice = claims[:-1] + f', "sub": "{BILLING}"}}'.encode()
    await _rejected(gw, craft(gw, claims_raw=twice), "malformed_jws")


@pytest.mark.threat("J16")
async def test_json_serialization_and_multiple_signatures(gw_bearer: SecGateway) -> None:
    gw = gw_bearer
    protected, payload, signature = gw.token().split(".")
    flattened = {"protected": protected, "payload": payload, "signature": signature}
    general = {
        "payload": payload,
        "signatures": [
            {"protected": protected, "signature": signature},
            {"protected": protected, "header": {"kid": "x"}, "signature": signature},
        ],
    }
    for document in (flattened, {**flattened, "header": {"kid": "x"}}, general):
        await _rejected(gw, json.dumps(document, separators=(",", ":")), "malformed_jws")


@pytest.mark.threat("J17")
async def test_non_canonical_base64url(gw_bearer: SecGateway) -> None:
    gw = gw_bearer
    protected, payload, signature = gw.token().split(".")
    std = base64.b64encode(base64.urlsafe_b64decode(signature + "==")).decode()
    variants = [
        f"{protected}=.{payload}.{signature}",  # padding
        f"{protected}.{payload}.{signature}==",
        f"{protected}.{payload}.{std}" if std != signature else None,  # + and /
        f"{protected}.{payload[:10]} {payload[10:]}.{signature}",  # whitespace
        f"{protected}.{payload}.{signature[:-1]}{_trailing_bits(signature[-1])}",
    ]
    for token in filter(None, variants):
        await _rejected(gw, token, "malformed_jws")


def _trailing_bits(last: str) -> str:
    """The same final character with its unused low bits set (86 chars: 2 unused)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return alphabet[alphabet.index(last) | 0b11]


# ------------------------------------------------------------ J18-J20 content
@pytest.mark.threat("J18")
@pytest.mark.parametrize("typ", ["JOSE", "baton-capsule+jws", "dpop+jwt", "baton-handoff+jws"])
async def test_other_artifact_types_are_not_bearer_tokens(gw_bearer: SecGateway, typ: str) -> None:
    """An Agent Card JWS (``typ`` ``JOSE``), a capsule's inner JWS, a DPoP
    proof or a bundle presented as the bearer token."""
    gw = gw_bearer
    await _rejected(gw, craft(gw, header=_idp_header(gw, typ=typ)), "wrong_typ")


@pytest.mark.threat("J19")
@pytest.mark.parametrize(
    "signature",
    [
        bytes(64),  # r = s = 0 (CVE-2022-21449)
        P256_N.to_bytes(32, "big") * 2,  # r = s = n
        (P256_N + 1).to_bytes(32, "big") + (1).to_bytes(32, "big"),  # r > n
        (1).to_bytes(32, "big") + (2**256 - 1).to_bytes(32, "big"),  # s > n
        bytes(63),  # wrong length
        bytes(65),
        bytes(72),  # DER-sized
    ],
    ids=["zero", "n", "r-over-n", "s-over-n", "63", "65", "72"],
)
async def test_ecdsa_special_values(gw_bearer: SecGateway, signature: bytes) -> None:
    gw = gw_bearer
    await _rejected(gw, craft(gw, signature=signature), "bad_signature")


_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
_SHA256_NO_NULL = bytes.fromhex("302f300b0609608648016503040201" + "0420")


def _pkcs1_token(private: rsa.RSAPrivateKey, kid: str, claims: dict[str, Any], encode: Any) -> str:
    """RS256 with a hand-built encoded message ``EM`` (RFC 8017 s9.2), signed raw."""
    header = _b64(json.dumps({"alg": "RS256", "kid": kid, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    digest = hashlib.sha256(f"{header}.{body}".encode()).digest()
    numbers = private.private_numbers()
    size = (numbers.public_numbers.n.bit_length() + 7) // 8
    em = encode(digest, size)
    assert len(em) == size
    m = int.from_bytes(em, "big")
    s = pow(m, numbers.d, numbers.public_numbers.n)
    return f"{header}.{body}.{_b64(s.to_bytes(size, 'big'))}"


def _em(prefix: bytes, ff: int | None = None, tail: bytes = b"") -> Any:
    def encode(digest: bytes, size: int) -> bytes:
        t = prefix + digest + tail
        pad = size - len(t) - 3 if ff is None else ff
        em = b"\x00\x01" + b"\xff" * pad + b"\x00" + t
        return em + bytes(size - len(em)) if len(em) < size else em

    return encode


def _garbage_in_padding(digest: bytes, size: int) -> bytes:
    t = _SHA256_DIGEST_INFO + digest
    pad = size - len(t) - 3
    return b"\x00\x01" + b"\xff" * (pad - 9) + b"\x00" * 8 + b"\xff" + b"\x00" + t


@pytest.mark.threat("J20")
async def test_rsa_pkcs1_padding_variants(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_numbers()

    def uint(value: int) -> str:
        return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    kid = "rsa-1"
    jwks = {"keys": [{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                      "n": uint(public.n), "e": uint(public.e)}]}  # fmt: skip
    gw = await launch(
        tmp_path,
        extra=BEARER_ISSUER,
        support_bearer="optional",
        files={"idp.jwks": json.dumps(jwks).encode()},
    )
    try:
        claims = _claims(gw)
        # Positive control: the same hand-built path with correct padding passes.
        await _accepted(gw, _pkcs1_token(private, kid, claims, _em(_SHA256_DIGEST_INFO)))
        variants = [
            _em(_SHA256_NO_NULL),  # DigestInfo without the NULL parameters
            _em(_SHA256_DIGEST_INFO, ff=7, tail=b""),  # padding short of 8 bytes
            _em(_SHA256_DIGEST_INFO, tail=b"\x00" * 4),  # trailing garbage after the hash
            _em(b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x02\x05\x00\x04\x20"),
            _garbage_in_padding,
        ]
        for encode in variants:
            token = _pkcs1_token(private, kid, claims, encode)
            await _rejected(gw, token, "bad_signature")
    finally:
        await shutdown(gw)


# ------------------------------------------------------------------ J21 keys
def _rsa_jwk(kid: str, *, bits: int = 2048, e: int = 65537) -> dict[str, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    n = private.public_key().public_numbers().n

    def uint(value: int) -> str:
        return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "kid": kid, "alg": "RS256", "n": uint(n), "e": uint(e)}


@pytest.mark.threat("J21")
@pytest.mark.parametrize(
    "jwks",
    [
        lambda: {"keys": [_rsa_jwk("small", bits=1024)]},
        lambda: {"keys": [_rsa_jwk("e1", e=1)]},
        lambda: {"keys": [_rsa_jwk("e3", e=3)]},
        lambda: {"keys": [{"kty": "oct", "kid": "secret", "alg": "HS256", "k": _b64(b"s" * 32)}]},
        lambda: {"keys": [_rsa_jwk("same"), _rsa_jwk("same")]},
        lambda: {"keys": [PrivateKey.generate("ES256").to_private_jwk()]},
        lambda: {"keys": []},
    ],
    ids=["rsa-1024", "e-1", "e-3", "secret-key", "duplicate-kid", "private-key", "empty"],
)
async def test_bad_issuer_keyset_stops_the_gateway_at_load(tmp_path: Path, jwks: Any) -> None:
    """The gateway does not start: ``load_runtime`` (what ``baton serve`` and
    ``baton check-config`` run) refuses the configuration and names the key."""
    good = KeySet([PrivateKey.generate("ES256").public]).to_jwks()
    gw = await launch(
        tmp_path,
        extra=BEARER_ISSUER,
        support_bearer="optional",
        files={"idp.jwks": json.dumps(good).encode()},
    )
    try:
        (gw.folder.root / "idp.jwks").write_bytes(json.dumps(jwks()).encode())
        with pytest.raises(ConfigError) as info:
            load_runtime(load(gw.folder.config), gw.folder.root)
        assert "bearer_issuers[0].jwks_file" in str(info.value)
    finally:
        await shutdown(gw)
