"""Shared helpers for the agent-helper tests: a recording HTTP server, gateway-side checks.

:class:`RecordingServer` is a real aiohttp server on 127.0.0.1 (an ephemeral
port) that keeps each request exactly as it arrived: method, raw request
target, field lines and body bytes. :func:`verify_as_gateway` checks a
recorded request the way gateway/proxy.py ``_verify_signature`` does.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from aiohttp import web

from keys.httpsig import (
    HttpRequest,
    SignaturePolicy,
    VerifiedSignature,
    content_digest,
    sign,
    verify,
)
from keys.keyset import KeySet
from keys.material import PrivateKey

#: Mirrors gateway/proxy.py ``ROUTING_HEADERS`` (not imported: the gateway module
#: pulls in the whole data plane): covered whenever present.
ROUTING_HEADERS = ("mcp-method", "mcp-name", "a2a-version")


@dataclass(frozen=True, slots=True)
class Recorded:
    method: str
    host: str
    raw_path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


@dataclass
class RecordingServer:
    port: int = 0
    received: list[Recorded] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.BaseRequest) -> web.Response:
        self.received.append(
            Recorded(
                method=request.method,
                host=request.host,
                raw_path=request.raw_path,
                headers=tuple(request.headers.items()),
                body=await request.read(),
            )
        )
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})


@asynccontextmanager
async def recording_server() -> AsyncIterator[RecordingServer]:
    """Serve on 127.0.0.1 with no routing at all: every target reaches ``handle``."""
    server = RecordingServer()
    runner = web.ServerRunner(web.Server(server.handle))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = int(runner.addresses[0][1])
    try:
        yield server
    finally:
        await runner.cleanup()


def gateway_policy(recorded: Recorded) -> SignaturePolicy:
    """The policy gateway/proxy.py builds: base components plus the routing headers present."""
    present = frozenset(name for name in ROUTING_HEADERS if recorded.header(name) is not None)
    return SignaturePolicy(
        required_components=frozenset({"@method", "@target-uri", "@authority"}) | present
    )


def verify_as_gateway(
    recorded: Recorded, keys: KeySet, *, body: bytes | None = None, scheme: str = "http"
) -> VerifiedSignature:
    """Verify like the gateway: target ``{scheme}://{Host lowercased}{raw path}``.

    The gateway listens on TLS and writes ``https``; the recording server is
    plain HTTP, so the tests pass the scheme the client actually used.
    """
    message = HttpRequest(
        recorded.method, f"{scheme}://{recorded.host.lower()}{recorded.raw_path}", recorded.headers
    )
    return verify(
        message, keys, gateway_policy(recorded), body=recorded.body if body is None else body
    )


def gateway_signed(
    key: PrivateKey,
    method: str,
    url: str,
    body: bytes,
    *,
    caller: str,
    created: int,
    nonce: str,
    components: tuple[str, ...] | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> list[tuple[str, str]]:
    """Headers the gateway puts on a forwarded request (gateway/proxy.py ``_forward``)."""
    headers: list[tuple[str, str]] = [*extra, ("baton-caller", caller)]
    covered = components or ("@method", "@target-uri", "@authority", "baton-caller")
    if body:
        headers.append(("content-digest", content_digest(body)))
        if components is None:
            covered = (*covered, "content-digest")
    signature_input, signature = sign(
        HttpRequest(method, url, headers), key, components=covered, created=created, nonce=nonce
    )
    return [*headers, ("signature-input", signature_input), ("signature", signature)]


# --------------------------------------------------------------------------- end to end

#: What gateway/proxy.py never forwards from the caller and writes itself.
_GATEWAY_OWNED = frozenset({"signature", "signature-input", "content-digest", "baton-caller"})


async def read_asgi_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


class GatewayStandIn:
    """ASGI stand-in for the gateway's data plane, signatures only.

    Checks each request's agent signature with :func:`verify_as_gateway`
    (what gateway/proxy.py ``_verify_signature`` demands), records what it
    covered, then re-signs as ``_forward`` does: the caller's signature
    fields dropped, ``Baton-Caller`` added, ``Content-Digest`` with a body,
    the gateway's key and a fresh nonce.
    """

    def __init__(self, app: Any, *, agent_keys: KeySet, gateway_key: PrivateKey, caller: str):
        self.app = app
        self.agent_keys = agent_keys
        self.gateway_key = gateway_key
        self.caller = caller
        self.checked: list[tuple[str, ...]] = []
        self._nonces = itertools.count()

    def _resign(
        self, method: str, url: str, fields: list[tuple[str, str]], body: bytes
    ) -> list[tuple[bytes, bytes]]:
        headers = [(k, v) for k, v in fields if k not in _GATEWAY_OWNED]
        headers += gateway_signed(
            self.gateway_key,
            method,
            url,
            body,
            caller=self.caller,
            created=int(time.time()),
            nonce=f"stand-in-nonce-{next(self._nonces):08d}",
            extra=tuple(headers),
        )[len(headers) :]
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await read_asgi_body(receive)
        fields = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        host = dict(fields)["host"]
        query = scope["query_string"].decode("latin-1")
        target = scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
        recorded = Recorded(scope["method"], host, target, tuple(fields), body)
        self.checked.append(verify_as_gateway(recorded, self.agent_keys).covered)
        headers = self._resign(scope["method"], f"http://{host}{target}", fields, body)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app({**scope, "headers": headers}, replay, send)


def bind_loopback() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serve_asgi(app: Any, sock: socket.socket) -> AsyncIterator[str]:
    """uvicorn on ``sock`` in this event loop; yields the origin. Listening when
    entered (``startup`` returns after the lifespan and the listener are up)."""
    config = uvicorn.Config(app, lifespan="on", ws="none", log_level="warning")
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await server.shutdown(sockets=[sock])
        sock.close()
