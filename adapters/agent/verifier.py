"""Verify the gateway's signed requests in front of an agent's ASGI app.

The gateway calls an upstream agent with its own RFC 9421 signature
(gateway/proxy.py ``_forward``): covered components exactly ``@method``,
``@target-uri``, ``@authority``, ``baton-caller`` and, with a body,
``content-digest``; parameters ``created``, ``keyid``, ``nonce``, ``alg``;
label ``baton``. ``Baton-Caller`` names the agent the gateway authenticated.
:class:`GatewayVerifier` is a pure ASGI middleware (no framework import)
that lets through only requests the gateway signed, once::

    app = GatewayVerifier(mcp_or_a2a_app, gateway_keys=gw_jwks, authority="agent-b:9001")

For each HTTP request, in this order (DESIGN.md "Message integrity and replay"):

1. buffer the body, refusing more than ``max_body_bytes`` (413) before it is
   all read;
2. ``Host`` must be one of ``authority`` (the host[:port] the gateway uses to
   reach this agent; threat R04: a request signed for another agent is not
   accepted here);
3. :func:`keys.httpsig.verify` under :data:`GATEWAY_POLICY` with the gateway's
   key set, including ``Content-Digest`` against the buffered bytes
   (RFC 9421 s3.2, RFC 9530 s2);
4. ``created`` inside the window and skew (:func:`protocol.replay.check_freshness`);
5. the nonce claimed in ``nonce_cache``, scoped by ``keyid``, only after the
   signature verified (:func:`protocol.replay.claim_nonce`, threat R09).

Then the app runs with ``scope["state"]["baton_caller"]`` (Starlette:
``request.state.baton_caller``) and ``scope["baton"]`` (a :class:`VerifiedCall`),
and receives the same body bytes through a replaying ``receive``. Its
responses, streaming or not, pass through untouched: only requests are
verified. On any failure the app is never called and the answer is the
error's status (401 for every signature and replay failure, 413 for a body
over the cap, 503 when a shared nonce store is down) with
``{"error": {"code": ..., "message": ...}}``: the stable code and the public
message, never the internal reason.

Lifespan and websocket scopes pass through unverified, as do requests whose
path is in ``exempt_paths`` (e.g. ``/.well-known/agent-card.json``).

The target URI rebuilt here is ``scheme://{Host}{raw_path}[?{query_string}]``,
which is what the gateway signed when its upstream URL is this agent's
origin. ``scheme`` defaults to the ASGI scope's (``https`` under a TLS server);
pass ``scheme="https"`` when TLS ends in a proxy in front of the app. An
empty query (``/x?``) cannot be told apart from none in ASGI and fails closed.
``Baton-Conversation`` and ``traceparent`` are not covered by the gateway's
signature: treat them as hints, not facts.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from keys.errors import KeysError
from keys.httpsig import HttpRequest, SignaturePolicy, verify
from keys.keyset import KeySet
from protocol.errors import (
    BadAudience,
    BatonError,
    InsufficientCoverage,
    MalformedSignature,
    PayloadTooLarge,
    StoreUnavailable,
    from_keys_error,
)
from protocol.ports import NonceStore
from protocol.replay import FreshnessPolicy, check_freshness, claim_nonce

__all__ = [
    "CALLER_HEADER",
    "GATEWAY_POLICY",
    "GatewayVerifier",
    "NonceCache",
    "VerifiedCall",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The field in which the gateway states the verified caller (DESIGN.md "Identities").
CALLER_HEADER: Final = "baton-caller"
#: What the gateway's upstream signature must cover (gateway/proxy.py ``_UPSTREAM_COMPONENTS``);
#: ``content-digest`` is required as well whenever there is a body.
GATEWAY_POLICY: Final = SignaturePolicy(
    label="baton",
    required_components=frozenset({"@method", "@target-uri", "@authority", CALLER_HEADER}),
    required_params=frozenset({"created", "nonce", "keyid"}),
    require_digest_with_body=True,
)
DEFAULT_MAX_BODY: Final = 1 << 20
DEFAULT_MAX_NONCES: Final = 100_000
_AUTHORITY: Final = re.compile(r"(?:\[[0-9a-f:.]+\]|[a-z0-9._~!$&'()*+,;=%-]+)(?::[0-9]{1,5})?")


@dataclass(frozen=True, slots=True)
class VerifiedCall:
    """A request the gateway signed: who it says called, with which key, when.

    ``caller`` is the ``Baton-Caller`` value, covered by the verified signature.
    """

    caller: str
    keyid: str
    nonce: str
    created: int


class NonceCache:
    """In-memory :class:`~protocol.ports.NonceStore` for a single-process agent.

    Invariants: a ``(scope, nonce)`` pair claimed at ``now`` with ``ttl_s`` is
    refused until ``now + ttl_s``; at most ``max_entries`` live pairs are kept,
    and when that many are live a new claim raises
    :class:`~protocol.errors.StoreUnavailable` (503) instead of forgetting a
    live nonce (which would reopen a replay window). Time is the ``now`` each
    claim passes in (the verifier's injected clock). A claim does no ``await``,
    so it is atomic on one event loop; it is not thread-safe.

    A multi-process or multi-host agent must share one store across its
    processes (the gateway's Redis or SQLite ``NonceStore``, passed as
    ``nonce_cache``): otherwise each process accepts a replayed nonce once.
    """

    __slots__ = ("_entries", "_max")

    def __init__(self, *, max_entries: int = DEFAULT_MAX_NONCES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._entries: dict[tuple[str, str], float] = {}
        self._max = max_entries

    def _purge(self, now: float) -> None:
        """Drop expired pairs from the front. With one TTL and a clock that does
        not go back, insertion order is expiry order; otherwise purging merely
        stops early, which never forgets a live pair."""
        entries = self._entries
        while entries:
            oldest = next(iter(entries))
            if entries[oldest] > now:
                return
            del entries[oldest]

    async def claim(self, scope: str, nonce: str, *, ttl_s: int, now: float) -> bool:
        """True for the first claim of ``(scope, nonce)`` while it lives, else False."""
        self._purge(now)
        key = (scope, nonce)
        expiry = self._entries.get(key)
        if expiry is not None:
            if expiry > now:
                return False
            del self._entries[key]
        if len(self._entries) >= self._max:
            raise StoreUnavailable(f"nonce cache holds {self._max} live nonces")
        self._entries[key] = now + ttl_s
        return True

    def __len__(self) -> int:
        return len(self._entries)


def _authorities(authority: str | Iterable[str]) -> frozenset[str]:
    names = [authority] if isinstance(authority, str) else list(authority)
    lowered = frozenset(name.strip().lower() for name in names)
    if not lowered:
        raise ValueError("at least one authority is required")
    for name in lowered:
        if not _AUTHORITY.fullmatch(name):
            raise ValueError(f"authority {name!r} is not host[:port]")
    return lowered


def _field_lines(scope: Scope) -> list[tuple[str, str]]:
    """ASGI header pairs (lowercase bytes) as text; bytes map 1:1 (latin-1)."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]


def _single(fields: list[tuple[str, str]], name: str) -> str | None:
    """The one value of ``name``; two lines of it is an error."""
    values = [value for field, value in fields if field == name]
    if len(values) > 1:
        raise MalformedSignature(f"{name} sent {len(values)} times")
    return values[0].strip(" \t") if values else None


def _target(scope: Scope, scheme: str, host: str) -> str:
    """``scheme://host`` + the request target as received (RFC 9110 s7.1)."""
    raw = scope.get("raw_path") or str(scope.get("path", "/")).encode("utf-8")
    raw_path, _, raw_query = bytes(raw).partition(b"?")
    query = scope.get("query_string") or raw_query
    target = raw_path.decode("latin-1") or "/"
    if query:
        target += "?" + bytes(query).decode("latin-1")
    return f"{scheme}://{host}{target}"


def _error_body(error: BatonError) -> bytes:
    public = {"code": error.code, "message": error.public_message}
    return json.dumps({"error": public}, separators=(",", ":")).encode("utf-8")


async def _reject(send: Send, error: BatonError) -> None:
    body = _error_body(error)
    await send(
        {
            "type": "http.response.start",
            "status": error.http_status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _ClientGone(Exception):
    """The client disconnected before the body was complete."""


class GatewayVerifier:
    """ASGI middleware: only gateway-signed, fresh, first-use requests reach ``app``.

    ``gateway_keys`` is the gateway's published key set (its
    ``/.well-known/jwks.json``, fetched and parsed with ``KeySet.from_jwks`` by
    the caller, or ``keys.files.load_jwks``); retired keys in it still verify.
    ``nonce_cache`` is any :class:`~protocol.ports.NonceStore`; the default is
    a private :class:`NonceCache`. See the module docstring for the checks and
    their order.
    """

    __slots__ = (
        "_app",
        "_authorities",
        "_clock",
        "_exempt",
        "_freshness",
        "_keys",
        "_max_body",
        "_nonces",
        "_scheme",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        gateway_keys: KeySet,
        authority: str | Iterable[str],
        clock: Callable[[], float] = time.time,
        window_s: int = 60,
        skew_s: int = 5,
        nonce_cache: NonceStore | None = None,
        exempt_paths: Iterable[str] = (),
        max_body_bytes: int = DEFAULT_MAX_BODY,
        scheme: str | None = None,
    ) -> None:
        if not len(gateway_keys):
            raise ValueError("gateway_keys is empty")
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must be non-negative")
        if scheme is not None and scheme not in ("http", "https"):
            raise ValueError("scheme must be 'http' or 'https'")
        self._app = app
        self._keys = gateway_keys
        self._authorities = _authorities(authority)
        self._clock = clock
        self._freshness = FreshnessPolicy(window_s=window_s, skew_s=skew_s)
        self._nonces: NonceStore = NonceCache() if nonce_cache is None else nonce_cache
        self._exempt = frozenset([exempt_paths] if isinstance(exempt_paths, str) else exempt_paths)
        self._max_body = max_body_bytes
        self._scheme = scheme

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self._exempt:
            await self._app(scope, receive, send)
            return
        fields = _field_lines(scope)
        try:
            body = await self._read_body(fields, receive)
            call = await self._verify(scope, fields, body)
        except _ClientGone:
            return
        except BatonError as error:
            await _reject(send, error)
            return
        await self._app(_with_call(scope, call), _replaying(body, receive), send)

    async def _read_body(self, fields: list[tuple[str, str]], receive: Receive) -> bytes:
        """The whole body, capped before it is all buffered (413)."""
        declared = _single(fields, "content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise PayloadTooLarge(f"declared body of {declared} bytes over {self._max_body}")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            if message["type"] != "http.request":
                continue
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self._max_body:
                raise PayloadTooLarge(f"body over {self._max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _verify(
        self, scope: Scope, fields: list[tuple[str, str]], body: bytes
    ) -> VerifiedCall:
        """Steps 2-5 of the module docstring; raises the first failure."""
        host = _single(fields, "host")
        if host is None or host.lower() not in self._authorities:
            raise BadAudience(f"request addressed to {host!r}, not this agent")
        scheme = self._scheme or str(scope.get("scheme", "http"))
        message = HttpRequest(str(scope["method"]), _target(scope, scheme, host.lower()), fields)
        try:
            verified = verify(message, self._keys, GATEWAY_POLICY, body=body)
        except KeysError as exc:
            raise from_keys_error(exc) from exc
        caller = _single(fields, CALLER_HEADER)
        if not caller:  # covered, so present; an empty value names nobody
            raise InsufficientCoverage("Baton-Caller is empty")
        now = self._clock()
        check_freshness(verified.created, verified.expires, now=now, policy=self._freshness)
        await claim_nonce(self._nonces, verified, now=now, policy=self._freshness)
        if verified.nonce is None or verified.created is None:  # pragma: no cover - checked above
            raise InsufficientCoverage("created or nonce missing")
        return VerifiedCall(
            caller=caller, keyid=verified.keyid, nonce=verified.nonce, created=verified.created
        )


def _with_call(scope: Scope, call: VerifiedCall) -> Scope:
    """A copy of ``scope`` carrying ``call``; the server's ``state`` dict is not mutated."""
    state = dict(scope.get("state") or {})
    state["baton_caller"] = call.caller
    return {**scope, "state": state, "baton": call}


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` that yields ``body`` once as one message, then defers to the server
    (which reports ``http.disconnect`` when the client goes)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
