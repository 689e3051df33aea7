"""``baton sidecar``: a loopback forward proxy that gives an agent its identity on the wire.

Some clients cannot present a client certificate or sign requests: a tool
that only takes a URL (the MCP conformance suite, an inspector, ``curl``), or
an SDK the :class:`~adapters.agent.RequestSigner` does not plug into. The
sidecar runs beside such an agent, on the same host, and does for it what the
SDK helpers do in process:

* every request to ``http://127.0.0.1:PORT/<path>`` goes to
  ``<gateway>/<path>`` over TLS 1.3 with the agent's certificate (the gateway's
  certificate checked against the dev CA and its host name);
* it gets ``Content-Digest`` (RFC 9530) and a fresh RFC 9421 signature by the
  agent's key, covering ``@method @target-uri @authority``, the digest and
  each routing header present (``mcp-method``, ``mcp-name``, ``a2a-version``),
  the same profile as :class:`~adapters.agent.RequestSigner`;
* responses stream back unbuffered (SSE passes event by event).

It is an agent's key on a socket, so it is guarded like one: it listens on a
loopback address only, answers only to ``Host: 127.0.0.1:PORT`` /
``localhost:PORT`` (421 otherwise) and refuses a browser ``Origin`` that is not
allowed (403): a web page in a browser on the same machine cannot use it
(DNS rebinding). The sidecar is that boundary: an ``Origin`` it allowed is not
forwarded, so the gateway (which refuses every browser origin by default) sees
an agent request. It never follows redirects and drops hop-by-hop fields, and
any ``Signature``, ``Signature-Input`` or ``Content-Digest`` the client sent.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from aiohttp import web
from yarl import URL

from keys.httpsig import HttpRequest, content_digest, sign
from keys.material import PrivateKey

__all__ = ["Sidecar", "SidecarConfig", "agent_tls_context", "sidecar_app"]

ROUTING_HEADERS: Final = ("mcp-method", "mcp-name", "a2a-version")
_HOP_BY_HOP: Final = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "proxy-authorization", "proxy-authenticate", "host", "content-length",
        "signature", "signature-input", "content-digest", "origin",
    }
)  # fmt: skip
_MAX_BODY: Final = 16 << 20


@dataclass(frozen=True)
class SidecarConfig:
    """Where to listen, where the gateway is, and who the agent is."""

    gateway_url: str
    listen_host: str
    listen_port: int
    signing_key: PrivateKey
    tls: ssl.SSLContext
    allowed_origins: frozenset[str] = field(default_factory=frozenset)
    clock: Callable[[], float] = time.time
    token: Callable[[int], str] = secrets.token_urlsafe

    def __post_init__(self) -> None:
        host = self.listen_host
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the sidecar listens on loopback only, not {host!r}")
        if not self.gateway_url.startswith("https://"):
            raise ValueError("the gateway URL must be https://")


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"code": code, "message": message}}
    return web.Response(status=status, body=json.dumps(body), content_type="application/json")


class Sidecar:
    """The proxy itself; :meth:`handle` per request, one pooled session to the gateway."""

    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        self._base = config.gateway_url.rstrip("/")
        port = config.listen_port
        self._hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.config.tls),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _signed_headers(
        self, method: str, url: str, fields: Iterable[tuple[str, str]], body: bytes
    ) -> list[tuple[str, str]]:
        headers = [(name, value) for name, value in fields if name.lower() not in _HOP_BY_HOP]
        covered = ["@method", "@target-uri", "@authority"]
        if body:
            headers.append(("content-digest", content_digest(body)))
            covered.append("content-digest")
        present = {name.lower() for name, _ in headers}
        covered += [name for name in ROUTING_HEADERS if name in present]
        signature_input, signature = sign(
            HttpRequest(method, url, headers),
            self.config.signing_key,
            components=covered,
            created=int(self.config.clock()),
            nonce=self.config.token(16),
        )
        return [*headers, ("signature-input", signature_input), ("signature", signature)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("host", "").lower() not in self._hosts:
            return _error(421, "misdirected_request", "misdirected request")
        origins = request.headers.getall("origin", [])
        if origins and (len(origins) > 1 or origins[0].lower() not in self.config.allowed_origins):
            return _error(403, "origin_rejected", "forbidden")
        if (request.content_length or 0) > _MAX_BODY:
            return _error(413, "payload_too_large", "payload too large")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "payload_too_large", "payload too large")
        url = self._base + request.raw_path  # path and query exactly as the client sent them
        headers = self._signed_headers(request.method, url, request.headers.items(), body)
        try:
            upstream = await self.session().request(
                request.method,
                URL(url, encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(502, "gateway_unreachable", f"gateway unreachable: {type(exc).__name__}")
        out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                out.headers.add(name, value)
        try:
            await out.prepare(request)
            async for chunk in upstream.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            # The client went away mid-stream: closing our side is all there is to do.
            return out
        finally:
            upstream.release()


def sidecar_app(config: SidecarConfig) -> web.Application:
    """The sidecar's aiohttp application (every path proxied)."""
    app = web.Application(client_max_size=_MAX_BODY)
    sidecar = Sidecar(config)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        yield
        await sidecar.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_route("*", "/{tail:.*}", sidecar.handle)
    return app


def agent_tls_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    """TLS 1.3 client context: the dev CA as the only anchor, the agent's certificate."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert_file, key_file)
    return context
