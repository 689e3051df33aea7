"""Web-inbox login sessions, kept in the shared :class:`~protocol.ports.BindingStore`.

A session is a bearer token in the cookie ``__Host-baton-session`` (RFC 6265bis
s4.1.3.2: ``Secure``, ``Path=/``, no ``Domain``, so only this origin sets or
reads it; ``HttpOnly``, so page scripts never see it; ``SameSite=Strict``, so
other sites' requests do not carry it). Invariants:

* **token** = base64url(version 2 || method || issue time (uint64, Unix s) ||
  credential tag (8 bytes) || 256 random bits). The store keeps only its
  SHA-256 as the binding key (kind ``web-session``, owner = the operator
  identity), so a read of the store yields no usable token; the issue time,
  method and tag inside the token are trustworthy because only a token whose
  hash is bound is accepted;
* **credential tag** (:func:`credential_tag`): for a password session, a
  digest of the password hash it was begun with; the web app ends a session
  whose tag is not that of the operator's current hash (``baton operators
  passwd`` since), without any clock. OIDC sessions carry zeros;
* **idle timeout** = the binding's TTL, refreshed by every use
  (:meth:`WebSessions.resume`), never past the absolute end;
* **absolute lifetime**: a session ends ``session_max_s`` after its issue
  time however it is used;
* **ending** (logout, rotation at the next login) first records the token's
  hash under kind ``web-session-ended`` until its absolute end, then unbinds
  it; a use that refreshed the TTL concurrently sees the mark and ends it
  again, so a logout is never undone by a request in flight;
* **CSRF token** = HMAC-SHA256 of the session token under a key derived from
  the store key (:meth:`keys.atrest.StoreCipher.derive_key`), which every
  gateway process of the fleet holds: any worker computes the same CSRF
  token, and nobody without the session token can.

Everything lives in the shared store, so a session begun at one gateway
process is accepted by every other one on the same store (``--workers N``, a
Redis fleet).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from aiohttp import web

from keys.b64 import b64url_decode, b64url_encode
from keys.errors import MalformedInput
from protocol.errors import Conflict, InvalidIdentity
from protocol.identity import OperatorId, parse_operator_id, validate_name
from protocol.ports import BindingStore

__all__ = [
    "COOKIE_NAME",
    "ENDED_KIND",
    "NO_CREDENTIAL",
    "SESSION_KIND",
    "TAG_BYTES",
    "Method",
    "Session",
    "WebSessions",
    "clear_cookie",
    "credential_tag",
    "session_cookie",
    "token_of",
]

SESSION_KIND: Final = "web-session"
ENDED_KIND: Final = "web-session-ended"
COOKIE_NAME: Final = "__Host-baton-session"
#: How far ahead of this process's clock another worker's issue time may be.
_SKEW_S: Final = 60
_VERSION: Final = 2
_RANDOM_BYTES: Final = 32
TAG_BYTES: Final = 8
NO_CREDENTIAL: Final = bytes(TAG_BYTES)
_LAYOUT: Final = struct.Struct(f">BBQ{TAG_BYTES}s")
_TOKEN_BYTES: Final = _LAYOUT.size + _RANDOM_BYTES
_TOKEN_CHARS: Final = math.ceil(_TOKEN_BYTES * 4 / 3)

Method = Literal["password", "oidc"]
_METHOD_CODES: Final[dict[Method, int]] = {"password": 1, "oidc": 2}
_METHODS: Final[dict[int, Method]] = {code: method for method, code in _METHOD_CODES.items()}


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: who, how they signed in, and until when at the latest."""

    operator: str
    name: str
    method: Method
    issued_at: int
    #: The absolute end (Unix s): ``issued_at + session_max_s``.
    expires_at: int
    #: SHA-256 (hex) of the token: the binding key; names the session in logs.
    digest: str
    #: :func:`credential_tag` of the password it was begun with (zeros: OIDC).
    credential: bytes = NO_CREDENTIAL


@dataclass(frozen=True, slots=True)
class _Token:
    method: Method
    issued_at: int
    credential: bytes
    digest: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def credential_tag(password_hash: str) -> bytes:
    """8 bytes naming a stored password hash (a PHC string): equal for the
    same hash, different after ``baton operators passwd`` (a new salt). It
    says nothing of the password: the hash it digests is salted."""
    digest = hashlib.sha256(b"baton web-session credential\x00" + password_hash.encode())
    return digest.digest()[:TAG_BYTES]


def _parse(token: str) -> _Token | None:
    """The token's fields, or None for anything this module never minted."""
    if len(token) != _TOKEN_CHARS:
        return None
    try:
        raw = b64url_decode(token)
    except MalformedInput:
        return None
    if len(raw) != _TOKEN_BYTES:
        return None
    version, method, issued_at, credential = _LAYOUT.unpack_from(raw)
    if version != _VERSION or method not in _METHODS:
        return None
    return _Token(_METHODS[method], issued_at, credential, _digest(token))


class WebSessions:
    """Begin, resume and end sessions (see the module docstring)."""

    def __init__(
        self,
        bindings: BindingStore,
        *,
        secret: bytes,
        idle_timeout_s: int,
        session_max_s: int,
        randbytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the CSRF key must be at least 32 bytes")
        if not 1 <= idle_timeout_s <= session_max_s:
            raise ValueError("need 1 <= idle_timeout_s <= session_max_s")
        self._bindings = bindings
        self._secret = secret
        self.idle_timeout_s = idle_timeout_s
        self.session_max_s = session_max_s
        self._randbytes = randbytes

    def _ttl(self, issued_at: int, now: float) -> int:
        """The idle TTL, cut at the absolute end (at least 1 s: the caller
        checks the absolute end itself)."""
        left = issued_at + self.session_max_s - now
        return max(1, min(self.idle_timeout_s, math.ceil(left)))

    async def begin(
        self, name: str, method: Method, *, now: float, replacing: str | None,
        credential: bytes = NO_CREDENTIAL,
    ) -> tuple[str, Session]:  # fmt: skip
        """A new session for operator ``name``: (token, session).

        ``replacing`` is the token the browser presented, if any: it is ended
        first (session rotation: a login never keeps a token it did not mint).
        ``credential``: the :func:`credential_tag` a password login checked.
        """
        validate_name(name)
        if len(credential) != TAG_BYTES:
            raise ValueError(f"a credential tag is {TAG_BYTES} bytes")
        if replacing is not None:
            await self.end(replacing, now=now)
        issued_at = math.floor(now)
        raw = _LAYOUT.pack(_VERSION, _METHOD_CODES[method], issued_at, credential)
        token = b64url_encode(raw + self._randbytes(_RANDOM_BYTES))
        identity = str(OperatorId(name))
        digest = _digest(token)
        bound = await self._bindings.bind(
            SESSION_KIND, digest, identity, ttl_s=self._ttl(issued_at, now), now=now
        )
        if bound != identity:  # pragma: no cover - 256 random bits do not collide
            raise Conflict("session token collision")
        return token, Session(
            identity, name, method, issued_at, issued_at + self.session_max_s, digest, credential
        )

    async def resume(self, token: str, *, now: float, touch: bool = True) -> Session | None:
        """The live session ``token`` names, or None.

        ``touch`` (a request the operator made) restarts the idle timeout;
        ``touch=False`` only looks (the live queue stream re-checking its
        session: an open tab is not activity).
        """
        parsed = _parse(token)
        if parsed is None:
            return None
        end = parsed.issued_at + self.session_max_s
        if now >= end or parsed.issued_at > now + _SKEW_S:
            return None
        owner = await self._bindings.owner(SESSION_KIND, parsed.digest, now=now)
        if owner is None:
            return None
        if touch:
            ttl = self._ttl(parsed.issued_at, now)
            await self._bindings.bind(SESSION_KIND, parsed.digest, owner, ttl_s=ttl, now=now)
            if await self._bindings.owner(ENDED_KIND, parsed.digest, now=now) is not None:
                # Ended while we refreshed it: end it again (module docstring).
                await self._bindings.unbind(SESSION_KIND, parsed.digest, owner, now=now)
                return None
        try:
            name = validate_name(parse_operator_id(owner).subject)
        except InvalidIdentity:
            return None  # not written by this module
        return Session(
            owner, name, parsed.method, parsed.issued_at, end, parsed.digest, parsed.credential
        )

    async def end(self, token: str, *, now: float) -> bool:
        """End the session ``token`` names (logout); False if none was live."""
        parsed = _parse(token)
        if parsed is None:
            return False
        owner = await self._bindings.owner(SESSION_KIND, parsed.digest, now=now)
        if owner is None:
            return False
        left = math.ceil(parsed.issued_at + self.session_max_s - now) + _SKEW_S
        await self._bindings.bind(ENDED_KIND, parsed.digest, owner, ttl_s=max(1, left), now=now)
        return await self._bindings.unbind(SESSION_KIND, parsed.digest, owner, now=now)

    def csrf(self, token: str) -> str:
        """The CSRF token of session ``token`` (the same in every process)."""
        mac = hmac.new(self._secret, b"baton-csrf\x00" + token.encode("ascii"), hashlib.sha256)
        return b64url_encode(mac.digest())

    def csrf_matches(self, token: str, presented: str | None) -> bool:
        """Constant-time comparison of ``presented`` with :meth:`csrf`."""
        if presented is None or not presented.isascii():
            return False
        return hmac.compare_digest(self.csrf(token).encode(), presented.encode())

    def max_age(self, session: Session, now: float) -> int:
        """The cookie's ``Max-Age``: whole seconds to the session's absolute end
        (``session_max_s`` at login; the server enforces the end itself)."""
        return max(0, session.expires_at - math.floor(now))


def session_cookie(token: str, *, max_age: int) -> str:
    """The ``Set-Cookie`` value for a new session."""
    return f"{COOKIE_NAME}={token}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"


def clear_cookie() -> str:
    """The ``Set-Cookie`` value that removes the session cookie."""
    return f"{COOKIE_NAME}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"


def token_of(request: web.Request) -> str | None:
    """The session token the browser presented, if it looks like one."""
    token = request.cookies.get(COOKIE_NAME)
    if not token or len(token) != _TOKEN_CHARS or not token.isascii():
        return None
    return token
