"""Bearer JWT verification for agents (RFC 7519, RFC 8725, RFC 8705).

Agents may authenticate with a bearer JWT from a configured issuer: an OIDC
identity provider or SPIRE (JWT-SVIDs). Real issuers sign with ``RS256`` and
``PS256`` as well as ``ES256`` and ``EdDSA``, so their keys are an
:class:`IssuerKey`, separate from Baton's own :class:`keys.material.PublicKey`.

Keys are parsed and checked once, when a :class:`BearerIssuer` is built
(RFC 8725 s3.10: ``kid`` only ever names an in-memory key; no ``jku``, no
file, no URL). Each token then passes these steps, in this order:

1. size cap, ASCII, exactly three segments (RFC 7515 s7.1; threats J02, X08);
2. strict base64url for every segment (RFC 7515 s2; J17) and strict JSON for
   header and claims, duplicate member names rejected (RFC 7519 s7.2 step 4,
   RFC 8725 s3.2; J15);
3. header allow-list: ``alg``, ``kid``, ``typ`` only. ``zip`` is refused
   outright; ``crit`` and ``b64`` are refused (RFC 7515 s4.1.11, RFC 7797;
   J10-J11); ``jku``/``x5u``/``x5c``/``jwk`` never create trust
   (RFC 8725 s3.10; J07-J09); ``x5t`` hints are ignored; anything else is refused;
4. ``alg`` must be exactly the algorithm pinned to the key named by ``kid``
   (RFC 8725 s3.1, s2.1; J01, J03, J04); ``typ``, when present, must be an
   allowed type (RFC 8725 s3.11; J18);
5. the signature, checked by PyJWT with ``algorithms=[pinned alg]`` and the
   prepared key object (RFC 7515 s5.2);
6. claims, checked here on the strictly parsed object rather than by PyJWT
   (which has no injectable clock and accepts any overlap of audience lists):
   ``iss`` exact (RFC 8725 s3.8; J14), ``aud`` exactly our one audience
   (RFC 8725 s3.9; J13), ``exp``/``nbf``/``iat`` with a leeway and a maximum
   lifetime (RFC 7519 s4.1.4-s4.1.6; J12), ``sub`` present (and equal to the
   mTLS identity when the caller says so; M06);
7. certificate binding: ``cnf.x5t#S256`` must match the presented client
   certificate, and a bound token is refused without it (RFC 8705 s3.1; M07).

Every failure raises a :class:`keys.errors.KeysError` subclass; exceptions of
PyJWT and ``cryptography`` are translated (``raise ... from exc``).
"""

from __future__ import annotations

import hmac
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypedDict, Unpack

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.types import Options

from keys import strictjson
from keys.b64 import b64url_decode
from keys.errors import (
    AlgorithmMismatch,
    AlgorithmNotAllowed,
    BadAudience,
    BadIssuer,
    BadSignature,
    IdentityMismatch,
    InvalidKey,
    MalformedInput,
    MalformedJws,
    NotYetValid,
    TokenExpired,
    TooLarge,
    UnknownKeyId,
    WrongType,
)
from keys.jose import check_header_names
from keys.material import REGISTERED_SIGNATURE_ALGS

__all__ = [
    "BEARER_ALGS",
    "BearerClaims",
    "BearerIssuer",
    "BearerOptions",
    "IssuerKey",
    "IssuerPublicKey",
    "is_roca_modulus",
    "verify_bearer",
    "verify_bearer_at",
]

IssuerPublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

#: Algorithms an issuer key may be pinned to. ``EdDSA`` is PyJWT's name for
#: Ed25519 signatures (RFC 8037 s3.1).
BEARER_ALGS: Final = frozenset({"ES256", "EdDSA", "RS256", "PS256"})

_MAX_KID: Final = 128
_KID_CHARS: Final = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces
_MAX_KEYS: Final = 64
_MAX_HEADER_B64: Final = 2048
_MAX_CLAIMS_DEPTH: Final = 16
#: 9999-12-31T23:59:59Z. Bounds NumericDates so arithmetic on them stays exact.
_MAX_NUMERIC_DATE: Final = 253_402_300_799

_UNTRUSTED_KEY_HEADERS: Final = frozenset({"jku", "x5u", "x5c", "jwk"})
#: ``x5t``/``x5t#S256`` are certificate thumbprint *hints* that some issuers
#: (Microsoft Entra) always send. They are allowed and ignored: the key is
#: chosen by ``kid`` from the configured set, never by a hint.
_ALLOWED_HEADERS: Final = frozenset({"alg", "kid", "typ", "x5t", "x5t#S256"})
_CNF_X5T: Final = "x5t#S256"

_P256_COORD: Final = 32
_ED25519_KEY: Final = 32
_FIXED_SIGNATURE_SIZE: Final = 64  # ES256 (RFC 7518 s3.4) and Ed25519 (RFC 8032 s5.1.6)
_RSA_EXPONENT: Final = 65537
_RSA_MIN_BITS: Final = 2048  # RFC 7518 s3.3, s3.5
_RSA_MAX_BITS: Final = 8192

_JWK_PUBLIC_MEMBERS: Final = {
    "EC": frozenset({"crv", "x", "y"}),
    "OKP": frozenset({"crv", "x"}),
    "RSA": frozenset({"n", "e"}),
}
_JWK_COMMON_MEMBERS: Final = frozenset({"kty", "kid", "alg", "use", "key_ops"})
#: Certificate metadata some issuers publish next to the key. Never used and
#: never trusted: the key is the JWK's own public members.
_JWK_IGNORED_MEMBERS: Final = frozenset({"x5c", "x5t", "x5t#S256"})
_JWK_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

# PyJWT checks the signature only; every claim is checked in this module.
_PYJWT_OPTIONS: Final[Options] = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
    "enforce_minimum_key_length": True,
}


# --------------------------------------------------------------------------- ROCA

#: The small primes of the ROCA detector (Nemec et al., "The Return of
#: Coppersmith's Attack", CCS 2017; github.com/crocs-muni/roca, ``detect.py``).
_ROCA_PRIMES: Final = (
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71,
    73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151,
    157, 163, 167,
)  # fmt: skip


def _subgroup_mask(prime: int) -> int:
    """Bit ``k`` set iff ``k`` is in the subgroup of (Z/pZ)* generated by 65537."""
    generator = _RSA_EXPONENT % prime
    mask, element = 0, 1
    while not mask >> element & 1:
        mask |= 1 << element
        element = element * generator % prime
    return mask


#: ``(prime, mask)`` pairs; the masks equal the detector's published ``prints``.
_ROCA_MASKS: Final = tuple((prime, _subgroup_mask(prime)) for prime in _ROCA_PRIMES)


def is_roca_modulus(modulus: int) -> bool:
    """True when ``modulus`` carries the ROCA fingerprint (CVE-2017-15361).

    Infineon's RSALib built primes as ``k*M + (65537**a mod M)``, so the
    modulus is congruent to a power of 65537 modulo every small prime of
    ``M``. For each prime of the detector's list, ``n mod p`` must lie in the
    subgroup generated by 65537 mod p; a random modulus passes all 38 tests
    with negligible probability, so passing them all flags the key.
    """
    return all(mask >> (modulus % prime) & 1 for prime, mask in _ROCA_MASKS)


# --------------------------------------------------------------------------- keys


def _is_valid_kid(kid: object) -> bool:
    """RFC 8725 s3.10 (J05-J06): a short printable-ASCII string, only ever a map key."""
    return isinstance(kid, str) and len(kid) <= _MAX_KID and bool(_KID_CHARS.fullmatch(kid))


def _check_kid(kid: object) -> str:
    if not isinstance(kid, str) or not _is_valid_kid(kid):
        raise InvalidKey(f"kid must be 1-{_MAX_KID} printable ASCII characters")
    return kid


def _check_rsa(key: rsa.RSAPublicKey) -> None:
    """RFC 7518 s3.3: at least 2048 bits; plus e = 65537 and no ROCA modulus (J21)."""
    numbers = key.public_numbers()
    if numbers.e != _RSA_EXPONENT:
        raise InvalidKey(f"RSA public exponent must be {_RSA_EXPONENT}")
    if numbers.n % 2 == 0:
        raise InvalidKey("RSA modulus is even")
    bits = numbers.n.bit_length()
    if not _RSA_MIN_BITS <= bits <= _RSA_MAX_BITS:
        raise InvalidKey(f"RSA modulus of {bits} bits outside {_RSA_MIN_BITS}-{_RSA_MAX_BITS}")
    if is_roca_modulus(numbers.n):
        raise InvalidKey("RSA modulus has the ROCA fingerprint (CVE-2017-15361)")


def _check_key_for_alg(alg: str, key: object) -> None:
    if alg not in BEARER_ALGS:
        raise InvalidKey(f"alg {alg!r} is not one of {sorted(BEARER_ALGS)}")
    if alg == "ES256":
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise InvalidKey("ES256 needs a P-256 public key")
    elif alg == "EdDSA":
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise InvalidKey("EdDSA needs an Ed25519 public key")
    elif not isinstance(key, rsa.RSAPublicKey):
        raise InvalidKey(f"{alg} needs an RSA public key")
    else:
        _check_rsa(key)


def _jwk_bytes(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise InvalidKey(f"JWK member {name!r} missing or not a string")
    try:
        return b64url_decode(value)
    except MalformedInput as exc:
        raise InvalidKey(f"JWK member {name!r} is not canonical base64url") from exc


def _jwk_fixed(jwk: Mapping[str, Any], name: str, size: int) -> bytes:
    raw = _jwk_bytes(jwk, name)
    if len(raw) != size:
        raise InvalidKey(f"JWK member {name!r} has {len(raw)} bytes, expected {size}")
    return raw


def _jwk_uint(jwk: Mapping[str, Any], name: str) -> int:
    """A Base64urlUInt (RFC 7518 s2): non-empty, minimum number of octets."""
    raw = _jwk_bytes(jwk, name)
    if not raw or (len(raw) > 1 and raw[0] == 0):
        raise InvalidKey(f"JWK member {name!r} is not a minimal Base64urlUInt")
    return int.from_bytes(raw, "big")


def _jwk_members(jwk: Mapping[str, Any]) -> str:
    """Check the member names; return ``kty``. Symmetric and private keys are refused."""
    kty = jwk.get("kty")
    if kty == "oct":
        raise InvalidKey("symmetric (oct) keys are never accepted for bearer tokens")
    if not isinstance(kty, str) or kty not in _JWK_PUBLIC_MEMBERS:
        raise InvalidKey(f"unsupported kty {kty!r}: only EC, OKP and RSA")
    private = set(jwk) & _JWK_PRIVATE_MEMBERS
    if private:
        raise InvalidKey(f"JWK carries private members {sorted(private)}")
    allowed = _JWK_PUBLIC_MEMBERS[kty] | _JWK_COMMON_MEMBERS | _JWK_IGNORED_MEMBERS
    unknown = set(jwk) - allowed
    if unknown:
        raise InvalidKey(f"JWK members not allowed: {sorted(unknown)}")
    return kty


def _jwk_use(jwk: Mapping[str, Any]) -> None:
    """``use`` must be ``sig`` and ``key_ops`` only ``verify``/``sign`` (RFC 7517 s4.2-s4.3)."""
    if "use" in jwk and jwk["use"] != "sig":
        raise InvalidKey(f"JWK use {jwk['use']!r} is not 'sig'")
    if "key_ops" in jwk:
        ops = jwk["key_ops"]
        if (
            not isinstance(ops, list)
            or "verify" not in ops
            or len(set(ops)) != len(ops)
            or not set(ops) <= {"verify", "sign"}
        ):
            raise InvalidKey(f"JWK key_ops {ops!r} do not allow 'verify'")


def _jwk_alg(jwk: Mapping[str, Any], kty: str) -> str:
    """The pinned algorithm: ``alg`` if present, else derived from the curve.

    RSA keys must state ``alg``: RS256 and PS256 share a key type, and
    guessing would let a header choose the padding (RFC 8725 s3.1).
    """
    alg = jwk.get("alg")
    crv = jwk.get("crv")
    if kty == "EC":
        if crv != "P-256":
            raise InvalidKey(f"EC curve {crv!r} is not P-256")
        expected: tuple[str, ...] = ("ES256",)
    elif kty == "OKP":
        if crv != "Ed25519":
            raise InvalidKey(f"OKP curve {crv!r} is not Ed25519")
        expected = ("EdDSA",)
    else:
        if alg is None:
            raise InvalidKey("RSA JWK must state 'alg' (RS256 or PS256)")
        expected = ("RS256", "PS256")
    if alg is None:
        return expected[0]
    if alg not in expected:
        raise InvalidKey(f"JWK alg {alg!r} does not match key type {kty}/{crv}")
    return str(alg)


def _jwk_public_key(jwk: Mapping[str, Any], kty: str) -> IssuerPublicKey:
    try:
        if kty == "EC":
            x = int.from_bytes(_jwk_fixed(jwk, "x", _P256_COORD), "big")
            y = int.from_bytes(_jwk_fixed(jwk, "y", _P256_COORD), "big")
            # Raises ValueError for a point that is not on P-256.
            return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        if kty == "OKP":
            raw = _jwk_fixed(jwk, "x", _ED25519_KEY)
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
        e = _jwk_uint(jwk, "e")
        if e != _RSA_EXPONENT:  # before building: cryptography accepts e = 3
            raise InvalidKey(f"RSA public exponent must be {_RSA_EXPONENT}")
        return rsa.RSAPublicNumbers(e, _jwk_uint(jwk, "n")).public_key()
    except (ValueError, TypeError) as exc:
        raise InvalidKey(f"{kty} JWK does not describe a valid public key") from exc


@dataclass(frozen=True, slots=True)
class IssuerKey:
    """One issuer verification key, pinned to one algorithm for its life.

    Built once at start-up (usually with :meth:`from_jwk`); construction
    checks that ``public_key`` fits ``alg`` and, for RSA, the hygiene rules of
    threat J21. ``public_key`` is the ``cryptography`` object PyJWT verifies
    with, so nothing on the request path parses key material.
    """

    kid: str
    alg: str
    public_key: IssuerPublicKey = field(repr=False, hash=False)

    def __post_init__(self) -> None:
        _check_kid(self.kid)
        _check_key_for_alg(self.alg, self.public_key)

    @property
    def signature_size(self) -> int:
        """Exact signature length in bytes (RFC 7518 s3.4; RFC 8017 s8.2.2 step 1)."""
        if isinstance(self.public_key, rsa.RSAPublicKey):
            return (self.public_key.key_size + 7) // 8
        return _FIXED_SIGNATURE_SIZE

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> IssuerKey:
        """Import a public JWK (RFC 7517 s4, RFC 7518 s6, RFC 8037 s2).

        Accepts EC P-256 (``ES256``), OKP Ed25519 (``EdDSA``) and RSA
        (``RS256``/``PS256``, ``alg`` required). Refuses symmetric keys, any
        private member, unknown members, ``use`` other than ``sig``, an ``alg``
        that contradicts the key, RSA keys under 2048 bits, ``e != 65537`` and
        ROCA moduli. Every failure is :class:`InvalidKey`.
        """
        if not isinstance(jwk, Mapping):
            raise InvalidKey("JWK is not an object")
        kty = _jwk_members(jwk)
        kid = _check_kid(jwk.get("kid"))
        _jwk_use(jwk)
        alg = _jwk_alg(jwk, kty)
        return cls(kid=kid, alg=alg, public_key=_jwk_public_key(jwk, kty))


# --------------------------------------------------------------------------- issuer


class BearerOptions(TypedDict, total=False):
    """Optional settings of :class:`BearerIssuer`, for :meth:`BearerIssuer.from_jwks`."""

    leeway_s: int
    max_lifetime_s: int
    allowed_typ: frozenset[str]
    max_token_bytes: int


def _jwks_keys(jwks: object) -> dict[str, IssuerKey]:
    """RFC 7517 s5: exactly ``{"keys": [...]}``, non-empty, unique ``kid`` (J21)."""
    if not isinstance(jwks, Mapping) or set(jwks) != {"keys"}:
        raise InvalidKey("JWKS must be an object with exactly one member, 'keys'")
    members = jwks["keys"]
    if not isinstance(members, list) or not members:
        raise InvalidKey("JWKS 'keys' must be a non-empty array")
    if len(members) > _MAX_KEYS:
        raise InvalidKey(f"JWKS holds more than {_MAX_KEYS} keys")
    keys: dict[str, IssuerKey] = {}
    for jwk in members:
        key = IssuerKey.from_jwk(jwk)
        if key.kid in keys:
            raise InvalidKey(f"duplicate kid {key.kid!r} in JWKS")
        keys[key.kid] = key
    return keys


def _positive_int(name: str, value: object, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}")


def _non_empty_str(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")


def _typ_set(value: object) -> None:
    if not isinstance(value, frozenset) or not all(isinstance(t, str) and t for t in value):
        raise ValueError("allowed_typ must be a frozenset of non-empty strings")


@dataclass(frozen=True, slots=True)
class BearerIssuer:
    """A trusted token issuer and the rules its tokens must follow.

    ``issuer`` is compared by exact string equality (RFC 8725 s3.8);
    ``audience`` is the gateway's own, and a token must name it and nothing
    else (RFC 8725 s3.9). ``keys`` maps ``kid`` to key and is frozen at
    construction. Misconfigured options raise :class:`ValueError`; a bad key
    set raises :class:`InvalidKey`.
    """

    issuer: str
    audience: str
    keys: Mapping[str, IssuerKey] = field(hash=False)
    leeway_s: int = 30
    max_lifetime_s: int = 3600
    allowed_typ: frozenset[str] = frozenset({"JWT", "at+jwt"})
    max_token_bytes: int = 8192

    def __post_init__(self) -> None:
        _non_empty_str("issuer", self.issuer)
        _non_empty_str("audience", self.audience)
        _positive_int("leeway_s", self.leeway_s, allow_zero=True)
        _positive_int("max_lifetime_s", self.max_lifetime_s)
        _positive_int("max_token_bytes", self.max_token_bytes)
        _typ_set(self.allowed_typ)
        object.__setattr__(self, "keys", MappingProxyType(_checked_keys(self.keys)))

    @classmethod
    def from_jwks(
        cls,
        issuer: str,
        audience: str,
        jwks: Mapping[str, Any],
        **options: Unpack[BearerOptions],
    ) -> BearerIssuer:
        """Build from the issuer's public JWKS (taken from pinned configuration)."""
        return cls(issuer=issuer, audience=audience, keys=_jwks_keys(jwks), **options)


def _checked_keys(keys: object) -> dict[str, IssuerKey]:
    if not isinstance(keys, Mapping) or not keys:
        raise InvalidKey("an issuer needs at least one key")
    if len(keys) > _MAX_KEYS:
        raise InvalidKey(f"an issuer holds more than {_MAX_KEYS} keys")
    for kid, key in keys.items():
        if not isinstance(key, IssuerKey) or key.kid != kid:
            raise InvalidKey(f"keys[{kid!r}] is not an IssuerKey with that kid")
    return dict(keys)


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, slots=True)
class BearerClaims:
    """The verified claims of a bearer JWT.

    ``expires_at`` is rounded down and ``not_before`` up, so fractional
    NumericDates (RFC 7519 s2) never widen the validity window.
    ``cnf_x5t_s256`` is the bound certificate thumbprint (RFC 8705 s3.1).
    """

    subject: str
    issuer: str
    audience: str
    expires_at: int
    issued_at: int | None
    not_before: int | None
    jwt_id: str | None
    cnf_x5t_s256: str | None
    claims: Mapping[str, Any] = field(hash=False)


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class _Parsed:
    text: str
    key: IssuerKey
    claims: dict[str, Any]


def _as_text(token: str | bytes, max_bytes: int) -> str:
    if not isinstance(token, (str, bytes)):
        raise MalformedJws("token is not text")
    if len(token) > max_bytes:
        raise TooLarge(f"token of {len(token)} bytes exceeds cap {max_bytes}")
    if isinstance(token, bytes):
        try:
            return token.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedJws("token is not ASCII") from None
    if not token.isascii():
        raise MalformedJws("token is not ASCII")
    return token


def _decode_json_segment(segment: str, name: str, max_len: int, depth: int) -> dict[str, Any]:
    try:
        raw = b64url_decode(segment, max_len=max_len)
        return strictjson.loads_object(raw, max_bytes=max_len, max_depth=depth)
    except MalformedInput as exc:
        raise MalformedJws(f"{name}: {exc.detail}") from exc


def _check_header_names(header: Mapping[str, Any]) -> None:
    """RFC 7515 s4.1: only ``alg``, ``kid``, ``typ`` (and ignored ``x5t`` hints)."""
    check_header_names(header, _ALLOWED_HEADERS, untrusted_sources=_UNTRUSTED_KEY_HEADERS)


def _pinned_key(header: Mapping[str, Any], keys: Mapping[str, IssuerKey]) -> IssuerKey:
    """RFC 8725 s3.1 and s3.10: the key comes from ``kid`` in memory, and the
    algorithm from the key; the header's ``alg`` must merely agree."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in REGISTERED_SIGNATURE_ALGS:
        raise AlgorithmNotAllowed(f"JWT alg {alg!r} is not allowed")
    if "kid" in header:
        kid = header["kid"]
        if not _is_valid_kid(kid):
            raise UnknownKeyId("kid not a string, empty, too long or not printable ASCII")
        key = keys.get(kid)
        if key is None:
            raise UnknownKeyId("kid not in the issuer's key set")
    elif len(keys) == 1:
        (key,) = keys.values()
    else:
        raise UnknownKeyId("kid missing and the issuer has several keys")
    if alg != key.alg:
        raise AlgorithmMismatch(f"JWT alg {alg!r} but key is pinned to {key.alg!r}")
    return key


def _normalise_typ(typ: str) -> str:
    """RFC 7515 s4.1.9: case-insensitive; ``application/`` is implied without a ``/``."""
    lowered = typ.lower()
    prefix = "application/"
    if lowered.startswith(prefix) and "/" not in lowered[len(prefix) :]:
        return lowered[len(prefix) :]
    return lowered


def _check_typ(header: Mapping[str, Any], allowed: frozenset[str]) -> None:
    """RFC 8725 s3.11: a ``typ``, when present, must be one this issuer may use (J18)."""
    if "typ" not in header:
        return
    typ = header["typ"]
    if not isinstance(typ, str) or _normalise_typ(typ) not in {_normalise_typ(t) for t in allowed}:
        raise WrongType(f"typ {typ!r} is not an allowed bearer token type")


def _decode_signature(segment: str, key: IssuerKey) -> None:
    """Strict base64url, then the exact length for the pinned key (J02, J19)."""
    if not segment:
        raise MalformedJws("signature segment is empty")
    try:
        signature = b64url_decode(segment)  # the token cap already bounds it
    except MalformedInput as exc:
        raise MalformedJws(f"signature: {exc.detail}") from exc
    if len(signature) != key.signature_size:
        raise BadSignature(f"{key.alg} signature of {len(signature)} bytes")


def _parse(token: str | bytes, issuer: BearerIssuer) -> _Parsed:
    """Steps 1-4 of the module docstring: everything that runs before any crypto."""
    text = _as_text(token, issuer.max_token_bytes)
    parts = text.split(".")
    if len(parts) != 3:
        raise MalformedJws(f"JWT has {len(parts)} segments, expected 3")
    header_b64, claims_b64, signature_b64 = parts
    header = _decode_json_segment(header_b64, "header", _MAX_HEADER_B64, 4)
    _check_header_names(header)
    key = _pinned_key(header, issuer.keys)
    _check_typ(header, issuer.allowed_typ)
    claims = _decode_json_segment(claims_b64, "claims", issuer.max_token_bytes, _MAX_CLAIMS_DEPTH)
    _decode_signature(signature_b64, key)
    return _Parsed(text=text, key=key, claims=claims)


def _verify_signature(parsed: _Parsed) -> None:
    """RFC 7515 s5.2 by PyJWT, with the algorithm list fixed to the pinned one."""
    try:
        jwt.decode(
            parsed.text,
            parsed.key.public_key,
            algorithms=[parsed.key.alg],
            options=_PYJWT_OPTIONS,
        )
    except jwt.InvalidSignatureError as exc:
        raise BadSignature("JWT signature does not verify") from exc
    except jwt.PyJWTError as exc:
        raise MalformedJws(f"PyJWT refused the token: {type(exc).__name__}") from exc
    except (ValueError, TypeError) as exc:
        raise BadSignature(f"signature check failed: {type(exc).__name__}") from exc


# --------------------------------------------------------------------------- claims


def _check_issuer(claims: Mapping[str, Any], expected: str) -> str:
    """RFC 7519 s4.1.1, RFC 8725 s3.8: exact string equality, no prefix or
    normalisation (J14; CVE-2024-53861)."""
    iss = claims.get("iss")
    if not isinstance(iss, str) or iss != expected:
        raise BadIssuer("iss is missing or not the configured issuer")
    return iss


def _check_audience(claims: Mapping[str, Any], expected: str) -> str:
    """RFC 7519 s4.1.3, RFC 8725 s3.9: ``aud`` is our audience, alone (J13).

    A string equal to ours, or a one-element array of it. A token that also
    names another audience could be replayed there, so it is refused.
    """
    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if not isinstance(aud, str) or aud != expected:
        raise BadAudience("aud is missing, not ours, or names more than one audience")
    return aud


def _numeric_date(claims: Mapping[str, Any], name: str) -> int | float | None:
    """RFC 7519 s2 NumericDate: a JSON number (not a bool or string), in range."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedJws(f"{name} is not a number")
    if not 0 <= value <= _MAX_NUMERIC_DATE:
        raise MalformedJws(f"{name} is out of range")
    return value


@dataclass(frozen=True, slots=True)
class _Times:
    expires_at: int
    issued_at: int | None
    not_before: int | None


def _check_times(claims: Mapping[str, Any], issuer: BearerIssuer, now: float) -> _Times:
    """RFC 7519 s4.1.4-s4.1.6 with leeway S (J12).

    Expired when ``now >= exp + S``; not yet valid when ``now < nbf - S`` or
    ``iat > now + S``. The lifetime ``exp - iat`` (or ``exp - now`` without
    ``iat``, plus S for clock skew) must not exceed ``max_lifetime_s``: a
    long-lived bearer token is a long-lived stolen credential (RFC 8725 s3.10
    advice on short expiry; SPIFFE JWT-SVID s3).
    """
    leeway = issuer.leeway_s
    exp = _numeric_date(claims, "exp")
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")
    if exp is None:
        raise TokenExpired("exp claim missing")
    if now >= exp + leeway:
        raise TokenExpired("token has expired")
    if nbf is not None and now < nbf - leeway:
        raise NotYetValid("nbf is in the future")
    if iat is not None and iat > now + leeway:
        raise NotYetValid("iat is in the future")
    lifetime = exp - iat if iat is not None else exp - now - leeway
    if lifetime > issuer.max_lifetime_s:
        raise TokenExpired(f"token lifetime exceeds {issuer.max_lifetime_s} s")
    return _Times(
        expires_at=math.floor(exp),
        issued_at=None if iat is None else math.floor(iat),
        not_before=None if nbf is None else math.ceil(nbf),
    )


def _check_subject(claims: Mapping[str, Any], expected: str | None) -> str:
    """RFC 7519 s4.1.2: required here. With mTLS, the same identity (RFC 8705 s3; M06)."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise MalformedJws("sub is missing or not a non-empty string")
    if expected is not None and sub != expected:
        raise IdentityMismatch("token subject differs from the authenticated peer")
    return sub


def _optional_string(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if name in claims and not isinstance(value, str):
        raise MalformedJws(f"{name} is not a string")
    return value


def _bound_thumbprint(claims: Mapping[str, Any]) -> str | None:
    """``cnf.x5t#S256`` (RFC 8705 s3.1, RFC 7800 s3.1), validated as the base64url
    of a SHA-256 digest. Any other confirmation method (``jkt`` for DPoP,
    ``jwk``...) is refused: this module cannot check it, and ignoring it would
    turn a sender-constrained token back into a bearer token."""
    if "cnf" not in claims:
        return None
    cnf = claims["cnf"]
    if not isinstance(cnf, Mapping) or not cnf:
        raise MalformedJws("cnf is not a non-empty object")
    other = set(cnf) - {_CNF_X5T}
    if other:
        raise IdentityMismatch(f"unsupported confirmation methods {sorted(other)}")
    thumbprint = cnf[_CNF_X5T]
    if not isinstance(thumbprint, str):
        raise MalformedJws("cnf.x5t#S256 is not a string")
    try:
        digest = b64url_decode(thumbprint, max_len=43)
    except MalformedInput as exc:
        raise MalformedJws("cnf.x5t#S256 is not canonical base64url") from exc
    if len(digest) != 32:
        raise MalformedJws("cnf.x5t#S256 is not a SHA-256 digest")
    return thumbprint


def _check_binding(claims: Mapping[str, Any], presented: str | None) -> str | None:
    """RFC 8705 s3.1 (M07): a bound token needs its certificate, and a token
    presented over mTLS must be bound to that certificate."""
    bound = _bound_thumbprint(claims)
    if presented is None:
        if bound is not None:
            raise IdentityMismatch("certificate-bound token presented without a certificate")
        return None
    if bound is None:
        raise IdentityMismatch("token is not bound to the presented certificate")
    if not hmac.compare_digest(bound.encode("ascii"), presented.encode("utf-8")):
        raise IdentityMismatch("token is bound to another certificate")
    return bound


# --------------------------------------------------------------------------- API


def verify_bearer_at(
    token: str | bytes,
    issuer: BearerIssuer,
    *,
    now: float,
    client_cert_x5t_s256: str | None = None,
    expected_subject: str | None = None,
) -> BearerClaims:
    """Verify a bearer JWT (RFC 7519 s7.2, RFC 8725 s3) at time ``now`` (Unix seconds).

    ``client_cert_x5t_s256`` is the base64url SHA-256 thumbprint of the mTLS
    client certificate, when one was presented (RFC 8705 s3.1);
    ``expected_subject`` is the identity that certificate proved (RFC 8705 s3).
    Raises a :class:`KeysError` subclass on any failure; ``ValueError`` only for
    a non-finite ``now``.
    """
    if not math.isfinite(now):
        raise ValueError("now must be a finite number of seconds")
    parsed = _parse(token, issuer)
    _verify_signature(parsed)
    claims = parsed.claims
    iss = _check_issuer(claims, issuer.issuer)
    aud = _check_audience(claims, issuer.audience)
    times = _check_times(claims, issuer, now)
    sub = _check_subject(claims, expected_subject)
    bound = _check_binding(claims, client_cert_x5t_s256)
    return BearerClaims(
        subject=sub,
        issuer=iss,
        audience=aud,
        expires_at=times.expires_at,
        issued_at=times.issued_at,
        not_before=times.not_before,
        jwt_id=_optional_string(claims, "jti"),
        cnf_x5t_s256=bound,
        claims=MappingProxyType(claims),
    )


def verify_bearer(
    token: str | bytes,
    issuer: BearerIssuer,
    *,
    client_cert_x5t_s256: str | None = None,
    expected_subject: str | None = None,
) -> BearerClaims:
    """:func:`verify_bearer_at` with the system clock (:func:`time.time`)."""
    return verify_bearer_at(
        token,
        issuer,
        now=time.time(),
        client_cert_x5t_s256=client_cert_x5t_s256,
        expected_subject=expected_subject,
    )
