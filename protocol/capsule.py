"""End-to-end context capsules: context the gateway carries but cannot read.

A capsule is sign-then-encrypt (RFC 7520 s6 nesting):

1. the sender signs claims ``{iss, aud, conv, nonce, iat, exp, cty, payload}``
   as a compact JWS (``typ`` ``baton-capsule+jws``) with its signing key;
2. that JWS is encrypted as a JWE, general JSON serialization, one recipient
   entry per recipient key (``ECDH-ES+A256KW``, ``A256GCM``; ``typ``
   ``baton-capsule+jwe``, ``cty`` ``baton-capsule+jws``).

The gateway sees the JWE's recipient ``kid`` values and ciphertext only. A
recipient that opens a capsule checks, in order: it decrypts under one of its
own keys; the inner signature verifies under a key the directory knows; that
key's owner is ``iss`` (and, if the caller knows who delivered it, the
delivering peer: threat E09); ``aud`` names the opener (so a capsule cannot be
re-sent to someone else); ``conv`` is the conversation it arrived in; and it
is within ``iat``/``exp``. The ``nonce`` is returned so the caller can claim
it in a :class:`~protocol.ports.NonceStore` (scope ``capsule:<iss>``).

Media type on the wire: ``application/baton-capsule+jose``.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import Field, model_validator

from keys.b64 import b64url_encode
from keys.errors import KeysError
from keys.jose import (
    decrypt,
    encrypt_general,
    parse_json_object,
    recipient_key,
    sign_compact,
    verify_compact,
)
from keys.keyset import KeySet, PrivateKeySet
from keys.material import PrivateKey
from protocol.canonical import require_plain_json
from protocol.directory import KeyDirectory
from protocol.errors import (
    BindingMismatch,
    IdentityMismatch,
    InvalidEnvelope,
    NotRecipient,
    translating,
)
from protocol.model import BatonModel, Identity, JsonData, Nonce, ShortText
from protocol.replay import check_lifetime

__all__ = [
    "CAPSULE_JWE_TYP",
    "CAPSULE_JWS_TYP",
    "CAPSULE_MEDIA_TYPE",
    "CapsuleClaims",
    "OpenedCapsule",
    "open_capsule",
    "open_capsule_at",
    "seal_capsule",
    "seal_capsule_at",
]

CAPSULE_MEDIA_TYPE: Final = "application/baton-capsule+jose"
CAPSULE_JWS_TYP: Final = "baton-capsule+jws"
CAPSULE_JWE_TYP: Final = "baton-capsule+jwe"
MAX_TTL_S: Final = 7 * 24 * 3600
_MAX_CAPSULE: Final = 4 << 20


class CapsuleClaims(BatonModel):
    """The signed content of a capsule."""

    iss: Identity
    aud: tuple[Identity, ...] = Field(min_length=1, max_length=32)
    conv: ShortText = Field(min_length=1)
    nonce: Nonce
    iat: int = Field(ge=0)
    exp: int = Field(ge=0)
    cty: ShortText | None = None
    payload: JsonData

    @model_validator(mode="after")
    def _check(self) -> CapsuleClaims:
        if len(set(self.aud)) != len(self.aud):
            raise ValueError("aud lists a recipient twice")
        if not self.iat < self.exp <= self.iat + MAX_TTL_S:
            raise ValueError(f"exp must be after iat and at most {MAX_TTL_S}s later")
        return self


@dataclass(frozen=True, slots=True)
class OpenedCapsule:
    """A capsule that passed every check in the module docstring."""

    claims: CapsuleClaims
    sender_kid: str

    @property
    def payload(self) -> JsonData:
        return self.claims.payload


def seal_capsule_at(
    payload: JsonData,
    *,
    sender: str,
    signing_key: PrivateKey,
    recipients: Mapping[str, KeySet],
    conversation: str,
    now: float,
    ttl_s: int = 300,
    nonce: str | None = None,
    cty: str | None = None,
) -> dict[str, Any]:
    """Seal ``payload`` from ``sender`` to every identity in ``recipients``
    (identity -> its encryption keys; each key gets a recipient entry).

    ``nonce`` defaults to 128 random bits. Returns the JWE as a JSON object.
    """
    require_plain_json(payload)
    iat = math.floor(now)
    claims = CapsuleClaims.build(
        iss=sender,
        aud=tuple(recipients),
        conv=conversation,
        nonce=nonce or b64url_encode(secrets.token_bytes(16)),
        iat=iat,
        exp=iat + ttl_s,
        cty=cty,
        payload=payload,
    )
    keys = [key for keyset in recipients.values() for key in keyset]
    with translating():
        inner = sign_compact(claims.canonical(), signing_key, typ=CAPSULE_JWS_TYP)
        return encrypt_general(
            inner.encode("ascii"), keys, typ=CAPSULE_JWE_TYP, cty=CAPSULE_JWS_TYP
        )


def seal_capsule(payload: JsonData, **kwargs: Any) -> dict[str, Any]:
    """:func:`seal_capsule_at` with the current time."""
    return seal_capsule_at(payload, now=time.time(), **kwargs)


def open_capsule_at(
    capsule: Mapping[str, Any] | str | bytes,
    *,
    me: str,
    my_keys: PrivateKeySet,
    senders: KeyDirectory,
    now: float,
    conversation: str | None = None,
    delivered_by: str | None = None,
    skew_s: int = 5,
) -> OpenedCapsule:
    """Open and check a capsule addressed to ``me`` (see the module docstring)."""
    try:
        envelope = parse_json_object(capsule, _MAX_CAPSULE)
    except KeysError as exc:  # one public body for every envelope failure (E01-E04)
        raise InvalidEnvelope(f"capsule is not a JWE JSON object: {exc.detail}") from exc
    with translating():
        key = recipient_key(envelope, my_keys)
        plaintext = decrypt(envelope, key, typ=CAPSULE_JWE_TYP, max_bytes=_MAX_CAPSULE)
        verified = verify_compact(plaintext.plaintext, senders.all_keys, typ=CAPSULE_JWS_TYP)
    claims = CapsuleClaims.parse(verified.payload)
    owner = senders.owner_of(verified.key.kid)
    if owner != claims.iss:
        raise IdentityMismatch("capsule signed by a key that is not the issuer's")
    if delivered_by is not None and delivered_by != claims.iss:
        raise BindingMismatch("capsule delivered by someone other than its issuer (E09)")
    if me not in claims.aud:
        raise NotRecipient("capsule audience does not name the opener")
    if conversation is not None and claims.conv != conversation:
        raise BindingMismatch("capsule belongs to another conversation")
    check_lifetime(claims.iat, claims.exp, now=now, skew_s=skew_s, what="capsule")
    return OpenedCapsule(claims=claims, sender_kid=verified.key.kid)


def open_capsule(capsule: Mapping[str, Any] | str | bytes, **kwargs: Any) -> OpenedCapsule:
    """:func:`open_capsule_at` with the current time."""
    return open_capsule_at(capsule, now=time.time(), **kwargs)
