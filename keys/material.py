"""Key material: generation, JWK import/export and RFC 7638 thumbprint key ids.

Baton uses exactly three kinds of asymmetric key, each pinned to one
algorithm for its whole life (RFC 8725 s3.1: the algorithm comes from the key,
never from a header):

========================  =======  ==================  ==============================
key                       ``use``  JOSE ``alg``        RFC 9421 ``alg``
========================  =======  ==================  ==============================
Ed25519 signing           sig      ``Ed25519`` (9864)  ``ed25519``
P-256 signing             sig      ``ES256``           ``ecdsa-p256-sha256``
P-256 key agreement       enc      ``ECDH-ES+A256KW``  n/a (content ``A256GCM``)
========================  =======  ==================  ==============================

``EdDSA`` (RFC 8037) is deprecated by RFC 9864 in favour of the fully
specified ``Ed25519``; Baton emits and accepts only the latter in its own
artifacts. RSA, HMAC and every other key type are refused at import.

A key's ``kid`` is its RFC 7638 SHA-256 thumbprint, so a ``kid`` names exactly
one key and can be recomputed by anyone holding the public part. Key objects are
built once (at load) and carry the parsed ``cryptography`` and ``joserfc``
objects, so nothing on the request path parses key material again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from joserfc.jwk import ECKey, OKPKey

from keys.b64 import b64url_decode, b64url_encode
from keys.errors import InvalidKey, MalformedInput

__all__ = [
    "CONTENT_ENCRYPTION",
    "ENCRYPTION_ALG",
    "HTTPSIG_ALG_NAMES",
    "REGISTERED_SIGNATURE_ALGS",
    "SIGNING_ALGS",
    "KeyUse",
    "PrivateKey",
    "PublicKey",
    "thumbprint",
    "validate_p256_point",
]

KeyUse = Literal["sig", "enc"]

SIGNING_ALGS: Final = frozenset({"Ed25519", "ES256"})
#: Registered JWS signature algorithms (RFC 7518 s3.1, RFC 8037, RFC 8812, RFC 9864).
#: A header naming one of these that is not the key's pinned algorithm is an
#: ``alg_mismatch``; ``none``, HMAC and anything unregistered are ``alg_not_allowed``.
REGISTERED_SIGNATURE_ALGS: Final = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "ES256K",
        "EdDSA",
        "Ed25519",
        "Ed448",
    }
)
ENCRYPTION_ALG: Final = "ECDH-ES+A256KW"
CONTENT_ENCRYPTION: Final = "A256GCM"
#: RFC 9421 s6.2 algorithm names for our JOSE signing algorithms.
HTTPSIG_ALG_NAMES: Final = {"Ed25519": "ed25519", "ES256": "ecdsa-p256-sha256"}

_P256_COORD = 32
_PUBLIC_MEMBERS: Final = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y")}
_ALLOWED_JWK_MEMBERS: Final = frozenset(
    {"kty", "crv", "x", "y", "d", "kid", "alg", "use", "key_ops"}
)
_KEY_OPS: Final = {
    "sig": ({"sign", "verify"}, {"verify"}),
    "enc": ({"deriveKey", "deriveBits", "unwrapKey"}, {"deriveKey", "deriveBits", "wrapKey"}),
}

_PublicCrypto = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
_PrivateCrypto = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 s3 SHA-256 thumbprint of the required public members, base64url."""
    kty = jwk.get("kty")
    if kty not in _PUBLIC_MEMBERS:
        raise InvalidKey(f"no thumbprint rule for kty {kty!r}")
    members = {name: jwk[name] for name in _PUBLIC_MEMBERS[kty]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("ascii")
    return b64url_encode(hashlib.sha256(canonical).digest())


def _default_alg(kty: str, use: KeyUse) -> str:
    if kty == "OKP":
        return "Ed25519"
    return "ES256" if use == "sig" else ENCRYPTION_ALG


def _use_of(alg: str) -> KeyUse:
    return "enc" if alg == ENCRYPTION_ALG else "sig"


def _check_shape(jwk: Mapping[str, Any]) -> tuple[str, str, KeyUse]:
    """Validate a JWK's members; return ``(kty, alg, use)``.

    Rejects unknown members (``x5c``, ``x5u``, ``jku``... never create trust),
    kty/curve outside our three kinds, and ``alg``/``use``/``key_ops`` that
    contradict each other or the key type.
    """
    extra = set(jwk) - _ALLOWED_JWK_MEMBERS
    if extra:
        raise InvalidKey(f"JWK members not allowed: {sorted(extra)}")
    kty: str
    match jwk.get("kty"), jwk.get("crv"):
        case ("OKP", "Ed25519"):
            kty = "OKP"
        case ("EC", "P-256"):
            kty = "EC"
        case (other_kty, other_crv):
            raise InvalidKey(
                f"unsupported key type {other_kty!r}/{other_crv!r}: only Ed25519 and P-256"
            )
    for name in _PUBLIC_MEMBERS[kty]:
        if not isinstance(jwk.get(name), str):
            raise InvalidKey(f"JWK member {name!r} missing or not a string")
    use = jwk.get("use")
    alg = jwk.get("alg")
    if use is not None and use not in ("sig", "enc"):
        raise InvalidKey(f"JWK use {use!r} is neither 'sig' nor 'enc'")
    if alg is not None and alg not in SIGNING_ALGS | {ENCRYPTION_ALG}:
        raise InvalidKey(f"JWK alg {alg!r} is not allowed")
    if alg is None and use is None and kty == "EC":
        raise InvalidKey("P-256 JWK must state 'alg' or 'use': it could sign or encrypt")
    if alg is None:
        alg = _default_alg(kty, use or "sig")
    if kty == "OKP" and alg != "Ed25519":
        raise InvalidKey(f"Ed25519 key cannot be used with alg {alg!r}")
    if kty == "EC" and alg not in ("ES256", ENCRYPTION_ALG):
        raise InvalidKey(f"P-256 key cannot be used with alg {alg!r}")
    pinned_use = _use_of(alg)
    if use is not None and use != pinned_use:
        raise InvalidKey(f"JWK use {use!r} contradicts alg {alg!r}")
    key_ops = jwk.get("key_ops")
    if key_ops is not None:
        private_ops, public_ops = _KEY_OPS[pinned_use]
        if (
            not isinstance(key_ops, list)
            or not key_ops
            or len(set(key_ops)) != len(key_ops)
            or not set(key_ops) <= (private_ops | public_ops)
        ):
            raise InvalidKey(f"JWK key_ops {key_ops!r} contradict use {pinned_use!r}")
    return kty, alg, pinned_use


def _decode_coord(value: str, size: int, name: str) -> bytes:
    try:
        raw = b64url_decode(value)
    except MalformedInput as exc:
        raise InvalidKey(f"JWK member {name!r} is not canonical base64url") from exc
    if len(raw) != size:
        raise InvalidKey(f"JWK member {name!r} has {len(raw)} bytes, expected {size}")
    return raw


def _public_from_jwk(kty: str, jwk: Mapping[str, Any]) -> _PublicCrypto:
    if kty == "OKP":
        return ed25519.Ed25519PublicKey.from_public_bytes(_decode_coord(jwk["x"], 32, "x"))
    x = int.from_bytes(_decode_coord(jwk["x"], _P256_COORD, "x"), "big")
    y = int.from_bytes(_decode_coord(jwk["y"], _P256_COORD, "y"), "big")
    try:
        # Validates that (x, y) is on the curve: invalid-curve points (E01) fail here.
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except ValueError as exc:
        raise InvalidKey("EC point is not on P-256") from exc


def _public_jwk(crypto: _PublicCrypto) -> dict[str, str]:
    if isinstance(crypto, ed25519.Ed25519PublicKey):
        raw = crypto.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}
    numbers = crypto.public_numbers()
    if not isinstance(numbers.curve, ec.SECP256R1):
        raise InvalidKey("only P-256 EC keys are supported")
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(numbers.x.to_bytes(_P256_COORD, "big")),
        "y": b64url_encode(numbers.y.to_bytes(_P256_COORD, "big")),
    }


def validate_p256_point(jwk: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidKey` unless ``x``/``y`` are a point on P-256 (invalid-curve
    defence for ephemeral ECDH keys, RFC 7518 s4.6, threat E01)."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise InvalidKey("not a P-256 EC JWK")
    if not isinstance(jwk.get("x"), str) or not isinstance(jwk.get("y"), str):
        raise InvalidKey("EC JWK needs string 'x' and 'y'")
    _public_from_jwk("EC", jwk)


class PublicKey:
    """A verification or encryption-recipient key with its pinned algorithm.

    Invariants: ``kid`` is the RFC 7638 thumbprint of the public members (or,
    for keys imported with ``require_thumbprint_kid=False``, the issuer's own
    ``kid``); ``alg`` is one of :data:`SIGNING_ALGS` or :data:`ENCRYPTION_ALG`
    and never changes.
    """

    __slots__ = ("_crypto", "_jose", "_jwk", "alg", "kid", "thumbprint", "use")

    def __init__(self, crypto: _PublicCrypto, alg: str, kid: str | None = None) -> None:
        jwk = _public_jwk(crypto)
        if alg not in SIGNING_ALGS | {ENCRYPTION_ALG}:
            raise InvalidKey(f"alg {alg!r} is not allowed")
        if (jwk["kty"] == "OKP") != (alg == "Ed25519"):
            raise InvalidKey(f"alg {alg!r} does not fit key type {jwk['kty']}")
        self._crypto = crypto
        self.alg: str = alg
        self.use: KeyUse = _use_of(alg)
        self.thumbprint: str = thumbprint(jwk)
        self.kid: str = kid if kid is not None else self.thumbprint
        self._jwk = {**jwk, "kid": self.kid, "alg": alg, "use": self.use}
        jose_cls = OKPKey if jwk["kty"] == "OKP" else ECKey
        self._jose = jose_cls.import_key(dict(self._jwk))

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any], *, require_thumbprint_kid: bool = True) -> PublicKey:
        """Import a public JWK strictly. A ``d`` member is refused (wrong file?)."""
        if "d" in jwk:
            raise InvalidKey("private key material where a public key was expected")
        kty, alg, _ = _check_shape(jwk)
        key = cls(_public_from_jwk(kty, jwk), alg, kid=None)
        kid = jwk.get("kid")
        if kid is None:
            return key
        if not isinstance(kid, str) or not kid or len(kid) > 128:
            raise InvalidKey("JWK kid must be a non-empty string of at most 128 characters")
        if kid != key.thumbprint:
            if require_thumbprint_kid:
                raise InvalidKey("JWK kid is not the RFC 7638 thumbprint of the key")
            return cls(key._crypto, alg, kid=kid)
        return key

    @property
    def crypto_key(self) -> _PublicCrypto:
        """The ``cryptography`` object (for ``keys/`` internals)."""
        return self._crypto

    @property
    def jose_key(self) -> OKPKey | ECKey:
        """The pre-imported ``joserfc`` key (for ``keys/`` internals)."""
        return self._jose

    @property
    def httpsig_alg(self) -> str:
        """RFC 9421 algorithm name; only for signing keys."""
        try:
            return HTTPSIG_ALG_NAMES[self.alg]
        except KeyError:
            raise InvalidKey("encryption keys do not sign HTTP messages") from None

    def to_jwk(self) -> dict[str, str]:
        """Public JWK with ``kid``, ``alg`` and ``use``."""
        return dict(self._jwk)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Raw signature check: Ed25519, or ES256 as 64-byte ``r||s`` (RFC 7518 s3.4)."""
        if self.use != "sig":
            raise InvalidKey("encryption key used to verify")
        try:
            if isinstance(self._crypto, ed25519.Ed25519PublicKey):
                self._crypto.verify(signature, message)
            else:
                if len(signature) != 2 * _P256_COORD:
                    return False
                r = int.from_bytes(signature[:_P256_COORD], "big")
                s = int.from_bytes(signature[_P256_COORD:], "big")
                self._crypto.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self._jwk == other._jwk

    def __hash__(self) -> int:
        return hash((self.kid, self.alg))

    def __repr__(self) -> str:
        return f"PublicKey(kid={self.kid!r}, alg={self.alg!r})"


class PrivateKey:
    """A signing or decryption key. Its public half is :attr:`public`.

    ``repr`` never shows key material; :meth:`to_private_jwk` is the only way
    out and is used solely to write 0600 key files.
    """

    __slots__ = ("_crypto", "_jose", "public")

    def __init__(self, crypto: _PrivateCrypto, alg: str) -> None:
        self._crypto = crypto
        self.public = PublicKey(crypto.public_key(), alg)
        private_jwk: dict[str, str | list[str]] = {**self.public.to_jwk(), "d": self._d()}
        jose_cls = OKPKey if isinstance(crypto, ed25519.Ed25519PrivateKey) else ECKey
        self._jose = jose_cls.import_key(private_jwk)

    @classmethod
    def generate(cls, alg: str) -> PrivateKey:
        """New key for ``alg`` in ``{"Ed25519", "ES256", "ECDH-ES+A256KW"}``."""
        if alg == "Ed25519":
            return cls(ed25519.Ed25519PrivateKey.generate(), alg)
        if alg in ("ES256", ENCRYPTION_ALG):
            return cls(ec.generate_private_key(ec.SECP256R1()), alg)
        raise InvalidKey(f"cannot generate a key for alg {alg!r}")

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PrivateKey:
        """Import a private JWK; the public members must match ``d``."""
        kty, alg, _ = _check_shape(jwk)
        d = jwk.get("d")
        if not isinstance(d, str):
            raise InvalidKey("private JWK without 'd'")
        crypto: _PrivateCrypto
        if kty == "OKP":
            crypto = ed25519.Ed25519PrivateKey.from_private_bytes(_decode_coord(d, 32, "d"))
        else:
            scalar = int.from_bytes(_decode_coord(d, _P256_COORD, "d"), "big")
            try:
                crypto = ec.derive_private_key(scalar, ec.SECP256R1())
            except ValueError as exc:
                raise InvalidKey("P-256 private scalar out of range") from exc
        key = cls(crypto, alg)
        claimed = {name: jwk[name] for name in _PUBLIC_MEMBERS[kty]}
        actual = {name: key.public.to_jwk()[name] for name in _PUBLIC_MEMBERS[kty]}
        if claimed != actual:
            raise InvalidKey("private JWK: public members do not match the private key")
        kid = jwk.get("kid")
        if kid is not None and kid != key.kid:
            raise InvalidKey("private JWK kid is not the RFC 7638 thumbprint")
        return key

    @property
    def kid(self) -> str:
        return self.public.kid

    @property
    def alg(self) -> str:
        return self.public.alg

    @property
    def use(self) -> KeyUse:
        return self.public.use

    @property
    def crypto_key(self) -> _PrivateCrypto:
        return self._crypto

    @property
    def jose_key(self) -> OKPKey | ECKey:
        return self._jose

    def _d(self) -> str:
        if isinstance(self._crypto, ed25519.Ed25519PrivateKey):
            raw = self._crypto.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            return b64url_encode(raw)
        value = self._crypto.private_numbers().private_value
        return b64url_encode(value.to_bytes(_P256_COORD, "big"))

    def sign(self, message: bytes) -> bytes:
        """Raw signature: Ed25519, or ES256 as 64-byte ``r||s``."""
        if self.use != "sig":
            raise InvalidKey("encryption key used to sign")
        if isinstance(self._crypto, ed25519.Ed25519PrivateKey):
            return self._crypto.sign(message)
        r, s = decode_dss_signature(self._crypto.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(_P256_COORD, "big") + s.to_bytes(_P256_COORD, "big")

    def to_private_jwk(self) -> dict[str, str]:
        """Private JWK. Only for writing 0600 key files and operator key export."""
        return {**self.public.to_jwk(), "d": self._d()}

    def __repr__(self) -> str:
        return f"PrivateKey(kid={self.kid!r}, alg={self.alg!r})"
