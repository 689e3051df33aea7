"""OAuth 2.0 authorization-code messages with PKCE, built by authlib.

The web inbox's OIDC login (``gateway/web/oidc.py``) is a confidential client
of the authorization-code flow (RFC 6749 s4.1, OIDC Core 1.0 s3.1). This
module makes its messages and nothing else: authlib's sans-IO helpers build
the authorization request (RFC 6749 s4.1.1, with ``nonce`` from OIDC Core
s3.1.2.1), the PKCE verifier and its S256 challenge (RFC 7636 s4.1-s4.2) and
the token request body (RFC 6749 s4.1.3, RFC 7636 s4.5). The HTTP exchange
stays in the gateway (aiohttp); the ID token is verified by
:mod:`keys.bearer`. It lives in ``keys/`` because authlib, a JOSE and
cryptography library too, may only be imported here (DESIGN "Layers").

Invariants: a verifier is 64 characters of RFC 7636's unreserved alphabet
(~380 bits from the system CSPRNG); only ``S256`` is ever sent (``plain`` is
never offered, RFC 7636 s7.2); every parameter is form-encoded by authlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "VERIFIER_LENGTH",
    "authorization_url",
    "derive_secret_key",
    "new_verifier",
    "s256_challenge",
    "token_request_body",
]

#: RFC 7636 s4.1: 43 to 128 characters.
VERIFIER_LENGTH: Final = 64


def new_verifier() -> str:
    """A fresh PKCE ``code_verifier`` (RFC 7636 s4.1)."""
    return str(generate_token(VERIFIER_LENGTH))


def s256_challenge(verifier: str) -> str:
    """``BASE64URL(SHA256(ASCII(code_verifier)))`` (RFC 7636 s4.2)."""
    return str(create_s256_code_challenge(verifier))


def authorization_url(
    endpoint: str,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: Sequence[str],
    state: str,
    nonce: str,
    verifier: str,
) -> str:
    """The authorization request URI (RFC 6749 s4.1.1, OIDC Core s3.1.2.1),
    with the S256 challenge of ``verifier``; ``endpoint``'s own query kept."""
    return str(
        prepare_grant_uri(
            endpoint,
            client_id,
            "code",
            redirect_uri=redirect_uri,
            scope=" ".join(scopes),
            state=state,
            nonce=nonce,
            code_challenge=s256_challenge(verifier),
            code_challenge_method="S256",
        )
    )


def token_request_body(code: str, *, redirect_uri: str, verifier: str) -> str:
    """The ``application/x-www-form-urlencoded`` token request (RFC 6749
    s4.1.3) with the PKCE ``code_verifier`` (RFC 7636 s4.5). The client
    authenticates separately (HTTP Basic, RFC 6749 s2.3.1)."""
    return str(
        prepare_token_request(
            "authorization_code", code=code, redirect_uri=redirect_uri, code_verifier=verifier
        )
    )


def derive_secret_key(secret: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) of a shared ``secret`` for the use ``info``
    names: the same bytes in every process that holds the secret."""
    if not secret or not info:
        raise ValueError("derive_secret_key needs a secret and an info")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)
