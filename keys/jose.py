"""Strict JWS and JWE over joserfc.

joserfc does the JWE cryptography (RFC 7516 s5, RFC 7518 s4.6 and s5.3), the
pinned key's primitive (``keys/material.py``) the JWS signature (RFC 7515 s5);
this module decides what is *allowed* before any of it runs. Every inbound
object passes these checks first, in this order:

1. size caps on the whole object and on each part (threat X08);
2. strict base64url for every segment: no padding, no ``+``/``/``, no
   non-zero trailing bits (RFC 7515 s2, threat J17);
3. strict JSON for every header: duplicate member names rejected (J15);
4. header allow-list: ``zip`` is refused outright (E05); ``crit`` and
   ``b64`` are refused (we implement no extensions, RFC 7515 s4.1.11, J10-J11);
   ``jku``/``x5u``/``x5c``/``jwk``/``x5t`` never create trust (J07-J09);
   anything else unknown is refused; unprotected headers are refused (J16);
5. ``kid`` must name a key in the caller's in-memory :class:`KeySet` (J05-J06)
   and ``alg`` must equal that key's pinned algorithm (J01, J03, J04);
6. ``typ`` must be the artifact type the caller expects (RFC 8725 s3.11, J18).

Every JWE failure raises :class:`InvalidEnvelope` with one generic message
(only ``zip`` has its own code), so decryption is not an oracle (E01-E04).

Once steps 1-6 pass, a JWS signature is checked by the pinned key's primitive
on the exact signing input (RFC 7515 s5.2 step 8); handing the already parsed
object back to joserfc would only parse it a second time. JWS are signed the
same way, by the key's primitive, byte for byte as joserfc would write them.

Supported shapes: JWS compact and general JSON; JWE general JSON (what we
emit: one recipient entry per key, ``ECDH-ES+A256KW`` + ``A256GCM``, which
browsers' WebCrypto can open) and, for interoperability tests, compact JWE.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwe import FlattenedJSONSerialization, GeneralJSONEncryption, JWERegistry

from keys import strictjson
from keys.b64 import b64url_decode, b64url_encode
from keys.errors import (
    AlgorithmMismatch,
    AlgorithmNotAllowed,
    BadSignature,
    CompressionNotAllowed,
    InvalidEnvelope,
    InvalidKey,
    KeysError,
    MalformedInput,
    MalformedJws,
    TooLarge,
    UnsupportedCrit,
    UnsupportedHeader,
    UntrustedKey,
    WrongType,
)
from keys.keyset import KeySet, PrivateKeySet
from keys.material import (
    CONTENT_ENCRYPTION,
    ENCRYPTION_ALG,
    REGISTERED_SIGNATURE_ALGS,
    PrivateKey,
    PublicKey,
    validate_p256_point,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "UNTRUSTED_KEY_HEADERS",
    "Decrypted",
    "VerifiedJws",
    "check_header_names",
    "decrypt",
    "encrypt_general",
    "parse_json_object",
    "recipient_key",
    "sign_compact",
    "sign_compact_bytes",
    "sign_general",
    "verify_compact",
    "verify_general",
]

DEFAULT_MAX_BYTES: Final = 4 << 20
MAX_HEADER_B64: Final = 2048
MAX_SIGNATURES: Final = 8
MAX_RECIPIENTS: Final = 32
_MAX_SIG_B64: Final = 128  # 64-byte Ed25519 / ES256 signatures

UNTRUSTED_KEY_HEADERS: Final = frozenset({"jku", "x5u", "x5c", "jwk", "x5t", "x5t#S256"})
_JWS_ALLOWED: Final = frozenset({"alg", "kid", "typ", "cty"})
_JWE_PROTECTED_ALLOWED: Final = frozenset({"enc", "typ", "cty"})
_JWE_RECIPIENT_ALLOWED: Final = frozenset({"alg", "kid", "epk"})
_JWE_COMPACT_ALLOWED: Final = _JWE_PROTECTED_ALLOWED | _JWE_RECIPIENT_ALLOWED
_EPK_MEMBERS: Final = frozenset({"kty", "crv", "x", "y"})


def _jwe_registry(max_ciphertext: int) -> JWERegistry:
    registry = JWERegistry(
        algorithms=[ENCRYPTION_ALG, CONTENT_ENCRYPTION],
        verify_all_recipients=False,
        strict_check_header=True,
        max_recipients=1,
    )
    registry.max_ciphertext_length = max_ciphertext
    return registry


_JWE_REGISTRY: Final = _jwe_registry(DEFAULT_MAX_BYTES)


@dataclass(frozen=True, slots=True)
class VerifiedJws:
    """A JWS whose signature verified under a pinned key.

    ``header`` is the protected header, ``key`` the key that verified it.
    """

    payload: bytes
    header: Mapping[str, Any]
    key: PublicKey


# --------------------------------------------------------------------------- helpers


def _as_text(value: str | bytes, max_bytes: int, error: type[KeysError]) -> str:
    if len(value) > max_bytes:
        raise TooLarge(f"JOSE object of {len(value)} bytes exceeds cap {max_bytes}")
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise error("JOSE object is not ASCII") from None
    return value


def _as_ascii(value: str | bytes, max_bytes: int, error: type[KeysError]) -> bytes:
    """:func:`_as_text` for an ASCII token, as bytes."""
    if len(value) > max_bytes:
        raise TooLarge(f"JOSE object of {len(value)} bytes exceeds cap {max_bytes}")
    if isinstance(value, str):
        return value.encode("ascii")
    if not value.isascii():
        raise error("JOSE object is not ASCII")
    return value


def _decode_header(segment: str, error: type[KeysError]) -> dict[str, Any]:
    try:
        raw = b64url_decode(segment, max_len=MAX_HEADER_B64)
        return strictjson.loads_object(raw, max_bytes=MAX_HEADER_B64, max_depth=4)
    except MalformedInput as exc:
        raise error(f"header: {exc.detail}") from exc


def _decode_segment(segment: object, name: str, error: type[KeysError], max_len: int) -> bytes:
    if not isinstance(segment, str):
        raise error(f"{name}: not a string")
    return _decode_b64(segment, name, error, max_len)


def _decode_b64(segment: str | bytes, name: str, error: type[KeysError], max_len: int) -> bytes:
    try:
        return b64url_decode(segment, max_len=max_len)
    except MalformedInput as exc:
        raise error(f"{name}: {exc.detail}") from exc


def check_header_names(
    header: Mapping[str, Any],
    allowed: frozenset[str],
    *,
    untrusted_sources: frozenset[str] = UNTRUSTED_KEY_HEADERS,
) -> None:
    """Step 4 of the module docstring, with the most specific code first.

    Shared with ``keys/bearer.py``, which allows the ``x5t`` hints as ignored names.
    """
    names = set(header)
    if "zip" in names:
        raise CompressionNotAllowed("zip header present")
    if "crit" in names or "b64" in names:
        raise UnsupportedCrit("crit/b64 present: no JOSE extensions are implemented")
    untrusted = names & untrusted_sources
    if untrusted:
        raise UntrustedKey(f"header names a key source: {sorted(untrusted)}")
    unknown = names - allowed
    if unknown:
        raise UnsupportedHeader(f"header parameters not allowed: {sorted(unknown)}")


def _check_typ(header: Mapping[str, Any], typ: str | None) -> None:
    if typ is not None and header.get("typ") != typ:
        raise WrongType(f"typ is {header.get('typ')!r}, expected {typ!r}")


def _pinned_key(header: Mapping[str, Any], keys: KeySet) -> PublicKey:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in REGISTERED_SIGNATURE_ALGS:
        raise AlgorithmNotAllowed(f"JWS alg {alg!r} is not allowed")
    key = keys.get(header.get("kid"))
    if key.use != "sig":
        raise AlgorithmMismatch("kid names an encryption key")
    if alg != key.alg:
        raise AlgorithmMismatch(f"JWS alg {alg!r} but key is pinned to {key.alg!r}")
    return key


def parse_json_object(value: str | bytes | Mapping[str, Any], max_bytes: int) -> dict[str, Any]:
    """A JOSE JSON serialization given as text, bytes or an already parsed mapping."""
    if isinstance(value, Mapping):
        return dict(value)
    if len(value) > max_bytes:
        raise TooLarge(f"JOSE object of {len(value)} bytes exceeds cap {max_bytes}")
    return strictjson.loads_object(value, max_bytes=max_bytes, max_depth=8)


# --------------------------------------------------------------------------- JWS


def _header_for(key: PrivateKey, typ: str, cty: str | None) -> dict[str, str]:
    if key.use != "sig":
        raise InvalidKey("encryption key used to sign")
    header = {"alg": key.alg, "kid": key.kid, "typ": typ}
    if cty is not None:
        header["cty"] = cty
    return header


def sign_compact(payload: bytes, key: PrivateKey, *, typ: str, cty: str | None = None) -> str:
    """JWS compact serialization (RFC 7515 s7.1) with ``alg``, ``kid``, ``typ``."""
    return sign_compact_bytes(payload, key, typ=typ, cty=cty).decode("ascii")


#: For ``bytes.translate``: the standard base64 alphabet to the URL-safe one.
_TO_URL_SAFE: Final = bytes.maketrans(b"+/", b"-_")


def sign_compact_bytes(
    payload: bytes, key: PrivateKey, *, typ: str, cty: str | None = None
) -> bytes:
    """:func:`sign_compact` as ASCII bytes, for a caller that encrypts the
    token next (``protocol/bundle.py``).

    The bytes joserfc's ``serialize_compact`` writes (the tests compare):
    the header as compact JSON, base64url without padding, the signature by
    the key's primitive (as :func:`sign_general` makes it), built in as few
    copies of the payload as it takes (a bundle payload is megabytes, and
    each copy costs its page faults): its base64, the signing input, the
    token.
    """
    header_b64 = b64url_encode(_compact_json(_header_for(key, typ, cty))).encode("ascii")
    encoded = binascii.b2a_base64(payload, newline=False)
    # The header is base64url already; "." and it are left as they are, and
    # "=" occurs only as the payload's padding.
    signing_input = b"".join((header_b64, b".", encoded)).translate(_TO_URL_SAFE, b"=")
    signature = b64url_encode(key.sign(signing_input)).encode("ascii")
    return b"".join((signing_input, b".", signature))


def verify_compact(
    token: str | bytes,
    keys: KeySet,
    *,
    typ: str | None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> VerifiedJws:
    """Verify a compact JWS under the rules of the module docstring.

    ``typ=None`` skips the type check; only use it where the caller checks
    the type itself (vector tests).
    """
    if isinstance(token, str) and not token.isascii():
        # Refused below, by whichever segment holds the character.
        text = _as_text(token, max_bytes, MalformedJws)
        parts = text.split(".")
        if len(parts) != 3:
            raise MalformedJws(f"compact JWS has {len(parts)} segments, expected 3")
        header_b64, payload_b64, signature_b64 = parts
        return _verify_segments(
            header_b64,
            payload_b64,
            signature_b64,
            lambda: f"{header_b64}.{payload_b64}".encode("ascii"),
            keys,
            typ=typ,
            max_bytes=max_bytes,
        )
    # ASCII: as bytes, cut at the dots, so that a bundle's megabytes are not
    # copied into a str, three segments and a rebuilt signing input.
    data = _as_ascii(token, max_bytes, MalformedJws)
    dots = data.count(b".")
    if dots != 2:
        raise MalformedJws(f"compact JWS has {dots + 1} segments, expected 3")
    first, last = data.index(b"."), data.rindex(b".")
    return _verify_segments(
        data[:first].decode("ascii"),
        data[first + 1 : last],
        data[last + 1 :],
        lambda: data[:last],  # the signing input, as it travelled
        keys,
        typ=typ,
        max_bytes=max_bytes,
    )


def _verify_segments(
    header_b64: str,
    payload_b64: str | bytes,
    signature_b64: str | bytes,
    signing_input: Callable[[], bytes],
    keys: KeySet,
    *,
    typ: str | None,
    max_bytes: int,
) -> VerifiedJws:
    """Steps 2-6 of the module docstring and the signature, in that order."""
    header = _decode_header(header_b64, MalformedJws)
    check_header_names(header, _JWS_ALLOWED)
    key = _pinned_key(header, keys)
    _check_typ(header, typ)
    payload = _decode_b64(payload_b64, "payload", MalformedJws, max_bytes)
    signature = _decode_b64(signature_b64, "signature", MalformedJws, _MAX_SIG_B64)
    if not key.verify(signature, signing_input()):
        raise BadSignature("JWS signature does not verify")
    return VerifiedJws(payload=payload, header=header, key=key)


def sign_general(
    payload: bytes, keys: Sequence[PrivateKey], *, typ: str, cty: str | None = None
) -> dict[str, Any]:
    """JWS general JSON serialization (RFC 7515 s7.2.1), one signature per key,
    every header parameter protected."""
    if not keys or len(keys) > MAX_SIGNATURES:
        raise InvalidKey(f"between 1 and {MAX_SIGNATURES} signing keys required")
    payload_b64 = b64url_encode(payload)
    signatures = []
    for key in keys:
        header_b64 = b64url_encode(
            _compact_json(_header_for(key, typ, cty)),
        )
        signature = key.sign(f"{header_b64}.{payload_b64}".encode("ascii"))
        signatures.append({"protected": header_b64, "signature": b64url_encode(signature)})
    return {"payload": payload_b64, "signatures": signatures}


def verify_general(
    value: str | bytes | Mapping[str, Any],
    keys: KeySet,
    *,
    typ: str | None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[VerifiedJws]:
    """Verify every signature of a general JSON JWS; all must verify.

    Returns one :class:`VerifiedJws` per signature, in order. A signature by a
    key outside ``keys`` fails the whole object: partial acceptance would let
    an attacker append signatures (threat J16).
    """
    try:
        obj = parse_json_object(value, max_bytes)
    except TooLarge:
        raise
    except MalformedInput as exc:
        raise MalformedJws(f"general JWS: {exc.detail}") from exc
    if set(obj) != {"payload", "signatures"}:
        raise MalformedJws("general JWS must have exactly 'payload' and 'signatures'")
    signatures = obj["signatures"]
    if not isinstance(signatures, list) or not 1 <= len(signatures) <= MAX_SIGNATURES:
        raise MalformedJws(f"between 1 and {MAX_SIGNATURES} signatures required")
    payload_b64 = obj["payload"]
    payload = _decode_segment(payload_b64, "payload", MalformedJws, max_bytes)
    results = []
    seen: set[str] = set()
    for member in signatures:
        if not isinstance(member, Mapping):
            raise MalformedJws("signature member is not an object")
        if "header" in member:
            raise UnsupportedHeader("unprotected JWS header present")
        if set(member) != {"protected", "signature"}:
            raise MalformedJws("signature member must have 'protected' and 'signature'")
        header_b64 = member["protected"]
        if not isinstance(header_b64, str):
            raise MalformedJws("protected header is not a string")
        header = _decode_header(header_b64, MalformedJws)
        check_header_names(header, _JWS_ALLOWED)
        key = _pinned_key(header, keys)
        _check_typ(header, typ)
        if key.kid in seen:
            raise MalformedJws("the same key signed twice")
        seen.add(key.kid)
        signature = _decode_segment(member["signature"], "signature", MalformedJws, _MAX_SIG_B64)
        if not key.verify(signature, f"{header_b64}.{payload_b64}".encode("ascii")):
            raise BadSignature("JWS signature does not verify")
        results.append(VerifiedJws(payload=payload, header=header, key=key))
    return results


def _compact_json(value: Mapping[str, Any]) -> bytes:
    """Compact JSON for headers we emit (ASCII only, no whitespace)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


# --------------------------------------------------------------------------- JWE


def encrypt_general(
    plaintext: bytes,
    recipients: Iterable[PublicKey],
    *,
    typ: str,
    cty: str | None = None,
) -> dict[str, Any]:
    """JWE general JSON serialization (RFC 7516 s7.2.1) to several recipients.

    Content: ``A256GCM`` under one random CEK. Per recipient: ``ECDH-ES+A256KW``
    with a fresh ephemeral P-256 key (RFC 7518 s4.6), the recipient's ``kid``
    in its per-recipient header.
    """
    keys = list(recipients)
    if not keys or len(keys) > MAX_RECIPIENTS:
        raise InvalidKey(f"between 1 and {MAX_RECIPIENTS} recipients required")
    kids = [key.kid for key in keys]
    if len(set(kids)) != len(kids):
        raise InvalidKey("duplicate recipient key")
    protected: dict[str, str] = {"enc": CONTENT_ENCRYPTION, "typ": typ}
    if cty is not None:
        protected["cty"] = cty
    obj = GeneralJSONEncryption(protected, plaintext)
    for key in keys:
        if key.alg != ENCRYPTION_ALG:
            raise InvalidKey(f"key {key.kid} is not an encryption key")
        obj.add_recipient({"alg": ENCRYPTION_ALG, "kid": key.kid}, key.jose_key)
    registry = JWERegistry(
        algorithms=[ENCRYPTION_ALG, CONTENT_ENCRYPTION], max_recipients=MAX_RECIPIENTS
    )
    registry.max_ciphertext_length = max(len(plaintext) + 16, registry.max_ciphertext_length)
    return dict(jwe.encrypt_json(obj, None, registry=registry))


def _check_epk(epk: object) -> None:
    if not isinstance(epk, Mapping) or set(epk) != _EPK_MEMBERS:
        raise InvalidEnvelope("epk must be a public P-256 JWK")
    if epk.get("kty") != "EC" or epk.get("crv") != "P-256":
        raise InvalidEnvelope("epk is not on P-256")
    try:
        validate_p256_point(epk)
    except KeysError as exc:
        raise InvalidEnvelope("epk is not a valid P-256 point") from exc


def _check_recipient_header(header: Mapping[str, Any], key: PublicKey) -> None:
    if header.get("alg") != ENCRYPTION_ALG:
        raise InvalidEnvelope("recipient alg is not ECDH-ES+A256KW")
    if header.get("kid") != key.kid:
        raise InvalidEnvelope("recipient kid does not name our key")
    _check_epk(header.get("epk"))


def _to_flattened(
    obj: dict[str, Any], key: PrivateKey, max_bytes: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pick our recipient entry of a general JWE; return (flattened, protected)."""
    allowed = {"protected", "recipients", "iv", "ciphertext", "tag"}
    if "unprotected" in obj or "aad" in obj:
        raise InvalidEnvelope("unprotected header or aad present")
    if set(obj) != allowed:
        raise InvalidEnvelope("general JWE members are not exactly the expected ones")
    protected_b64 = obj["protected"]
    if not isinstance(protected_b64, str):
        raise InvalidEnvelope("protected header is not a string")
    protected = _decode_header(protected_b64, InvalidEnvelope)
    check_header_names(protected, _JWE_PROTECTED_ALLOWED)
    if protected.get("enc") != CONTENT_ENCRYPTION:
        raise InvalidEnvelope("enc is not A256GCM")
    recipients = obj["recipients"]
    if not isinstance(recipients, list) or not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise InvalidEnvelope("bad recipients array")
    mine = None
    for entry in recipients:
        if not isinstance(entry, Mapping) or set(entry) != {"header", "encrypted_key"}:
            raise InvalidEnvelope("recipient entry must have 'header' and 'encrypted_key'")
        header = entry["header"]
        if not isinstance(header, Mapping):
            raise InvalidEnvelope("recipient header is not an object")
        check_header_names(header, _JWE_RECIPIENT_ALLOWED)
        if header.get("kid") == key.kid:
            if mine is not None:
                raise InvalidEnvelope("two recipient entries for one key")
            mine = entry
    if mine is None:
        raise InvalidEnvelope("no recipient entry for this key")
    _check_recipient_header(mine["header"], key.public)
    flattened = {
        "protected": protected_b64,
        "header": dict(mine["header"]),
        "encrypted_key": mine["encrypted_key"],
        "iv": obj["iv"],
        "ciphertext": obj["ciphertext"],
        "tag": obj["tag"],
    }
    _decode_parts(flattened, max_bytes)
    return flattened, protected


def _decode_parts(flattened: Mapping[str, Any], max_bytes: int) -> None:
    """Strict base64url for every binary member before joserfc sees them."""
    _decode_segment(flattened["encrypted_key"], "encrypted_key", InvalidEnvelope, 64)
    _decode_segment(flattened["iv"], "iv", InvalidEnvelope, 16)
    _decode_segment(flattened["tag"], "tag", InvalidEnvelope, 22)
    _check_segment(flattened["ciphertext"], "ciphertext", InvalidEnvelope, max_bytes)


_B64URL_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _check_segment(segment: object, name: str, error: type[KeysError], max_len: int) -> None:
    """Exactly the checks of :func:`_decode_segment`, without decoding: for a
    member joserfc decodes itself (the ciphertext, megabytes for a bundle).

    :func:`~keys.b64.b64url_decode` accepts a string iff every character is in
    the URL-safe alphabet, its length is not 1 mod 4, and the last character
    leaves no non-zero trailing bits (RFC 7515 s2). The alphabet is checked
    here over the whole string (one C-level ``translate``); the length and the
    trailing bits depend only on the final quantum, which is decoded strictly.
    """
    if not isinstance(segment, str):
        raise error(f"{name}: not a string")
    if len(segment) > max_len:
        raise error(f"{name}: base64url: input over size cap")
    if not segment.isascii() or segment.encode("ascii").translate(None, _B64URL_ALPHABET):
        raise error(f"{name}: base64url: character outside the URL-safe alphabet")
    _decode_segment(segment[-(len(segment) % 4 or 4) :], name, error, max_len)


@dataclass(frozen=True, slots=True)
class Decrypted:
    """Plaintext plus the protected header it was bound to."""

    plaintext: bytes
    header: Mapping[str, Any]


def decrypt(
    value: str | bytes | Mapping[str, Any],
    key: PrivateKey,
    *,
    typ: str | None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Decrypted:
    """Decrypt a JWE addressed to ``key`` (general JSON, or compact).

    Every failure is :class:`InvalidEnvelope` (or its subclass for ``zip``),
    with the cause only in ``detail``.
    """
    if key.alg != ENCRYPTION_ALG:
        raise InvalidKey("not an encryption key")
    try:
        if isinstance(value, (str, bytes)) and value[:1] not in ("{", b"{"):
            flattened, header = _compact_to_flattened(value, key, max_bytes)
        else:
            obj = parse_json_object(value, max_bytes)
            flattened, header = _to_flattened(obj, key, max_bytes)
        _check_typ(header, typ)
    except CompressionNotAllowed:
        raise
    except KeysError as exc:
        raise InvalidEnvelope(exc.detail) from exc
    try:
        result = jwe.decrypt_json(
            cast(FlattenedJSONSerialization, flattened),
            key.jose_key,
            registry=_registry_for(max_bytes),
        )
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidEnvelope(f"decryption failed: {type(exc).__name__}") from exc
    if result.plaintext is None:  # pragma: no cover - joserfc always sets it
        raise InvalidEnvelope("no plaintext")
    return Decrypted(plaintext=result.plaintext, header=header)


def recipient_key(jwe: Mapping[str, Any], keys: PrivateKeySet) -> PrivateKey:
    """Our key (active first, then retired) named by a recipient entry of a
    general-JSON JWE; :class:`InvalidEnvelope` if none is."""
    recipients = jwe.get("recipients")
    kids = set()
    if isinstance(recipients, list):
        for entry in recipients:
            header = entry.get("header") if isinstance(entry, Mapping) else None
            kid = header.get("kid") if isinstance(header, Mapping) else None
            if isinstance(kid, str):  # attacker JSON: a list or object kid is no kid
                kids.add(kid)
    for key in (keys.active, *keys.retired):
        if key.kid in kids:
            return key
    raise InvalidEnvelope("not encrypted to any of our keys")


def _registry_for(max_bytes: int) -> JWERegistry:
    return _JWE_REGISTRY if max_bytes == DEFAULT_MAX_BYTES else _jwe_registry(max_bytes)


def _compact_to_flattened(
    value: str | bytes, key: PrivateKey, max_bytes: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    text = _as_text(value, max_bytes, InvalidEnvelope)
    parts = text.split(".")
    if len(parts) != 5:
        raise InvalidEnvelope("compact JWE must have 5 segments")
    protected_b64, encrypted_key, iv, ciphertext, tag = parts
    header = _decode_header(protected_b64, InvalidEnvelope)
    check_header_names(header, _JWE_COMPACT_ALLOWED)
    if header.get("enc") != CONTENT_ENCRYPTION:
        raise InvalidEnvelope("enc is not A256GCM")
    if header.get("alg") != ENCRYPTION_ALG:
        raise InvalidEnvelope("alg is not ECDH-ES+A256KW")
    if "kid" in header and header["kid"] != key.kid:
        raise InvalidEnvelope("kid does not name our key")
    _check_epk(header.get("epk"))
    flattened = {
        "protected": protected_b64,
        "encrypted_key": encrypted_key,
        "iv": iv,
        "ciphertext": ciphertext,
        "tag": tag,
    }
    _decode_parts(flattened, max_bytes)
    return flattened, header
