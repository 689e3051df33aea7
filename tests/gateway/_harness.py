"""A real gateway between real TLS peers, for the data-plane tests.

* :class:`RecordingUpstream` - an aiohttp HTTPS server holding the ``billing``
  agent's certificate, requiring the gateway's client certificate, recording
  every request it receives (so reject tests can assert "nothing forwarded").
* :func:`write_config` - a ``baton.toml`` for a folder made by ``baton init``.
* :func:`signed_headers` - what an agent's RFC 9421 signer puts on a request.
* :func:`client_context` - an agent's TLS client context (its own certificate).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from gateway.devdata import AgentMaterial, DataFolder
from keys.httpsig import HttpRequest, content_digest, sign

TRUST_DOMAIN = "baton.local"


def _reserved_range() -> range:
    """Loopback ports the kernel never picks by itself.

    ``bind(0)`` and every outgoing ``connect()`` draw from the ephemeral range
    (``net.ipv4.ip_local_port_range``), so a port found free by ``bind(0)`` and
    released can be taken as the source port of the next client connection
    (Redis, httpx, an SDK, a child process) before the server binds it: CI saw
    exactly that (``EADDRINUSE`` on a fleet's listener). Ports outside that range
    are only ever taken by an explicit bind.
    """
    low, high = 32768, 60999
    try:
        fields = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        low, high = int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        pass
    if low - 1 - 10000 >= 2000:
        return range(10000, low)
    return range(high + 1, 65536)


_PORTS = _reserved_range()
#: Where this process's next port is tried: processes start apart, then walk.
_next_port = [_PORTS.start + (os.getpid() * 7919) % len(_PORTS)]


def free_port() -> int:
    """A loopback TCP port nothing is bound to now, outside the ephemeral range.

    The caller binds it later (often in another process), so this process hands
    each port out once per walk through the range; a port some other process holds
    (or one in TIME_WAIT) fails the test bind and is passed over.
    """
    if len(_PORTS) < 1000:  # an odd kernel setting: fall back to the kernel's choice
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(len(_PORTS)):
        port = _next_port[0]
        _next_port[0] = port + 1 if port + 1 < _PORTS.stop else _PORTS.start
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port outside the ephemeral range")


def _tls_files(tmp: Path, name: str, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    cert, key = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    key.chmod(0o600)
    return cert, key


def client_context(
    folder: DataFolder, cert_pem: bytes | None, key_pem: bytes | None, scratch: Path
) -> ssl.SSLContext:
    """TLS 1.3 client context trusting the dev CA, presenting ``cert_pem`` if given."""
    context = ssl.create_default_context(cafile=str(folder.ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert_pem is not None and key_pem is not None:
        cert, key = _tls_files(scratch, "client-" + secrets.token_hex(4), cert_pem, key_pem)
        context.load_cert_chain(str(cert), str(key))
    return context


def agent_context(folder: DataFolder, agent: AgentMaterial, scratch: Path) -> ssl.SSLContext:
    return client_context(folder, agent.cert_pem, agent.key_pem, scratch)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingUpstream:
    """An upstream agent over mTLS that records what reaches it."""

    folder: DataFolder
    agent: AgentMaterial
    scratch: Path
    received: list[Received] = field(default_factory=list)
    port: int = 0
    hold: asyncio.Event | None = None
    #: Drop this many connections mid-request (after reading it) before answering.
    drop: int = 0
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.method, request.path_qs, dict(request.headers), body))
        if self.hold is not None:
            await self.hold.wait()
        if self.drop > 0:
            self.drop -= 1
            if request.transport is not None:
                request.transport.abort()  # the connection dies before any answer
            raise ConnectionResetError("dropped by the test upstream")
        if request.path.endswith("/sse"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for index in range(3):
                data = json.dumps({"jsonrpc": "2.0", "method": "progress", "params": {"n": index}})
                await response.write(f"id: {index}\ndata: {data}\n\n".encode())
            await response.write_eof()
            return response
        if request.path.endswith("/fail"):
            return web.json_response({"error": "boom"}, status=500)
        rpc_id = None
        if body:
            rpc_id = json.loads(body).get("id")
        return web.json_response({"jsonrpc": "2.0", "id": rpc_id, "result": {"ok": True}})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(self.folder.ca_cert))
        cert, key = _tls_files(self.scratch, "upstream", self.agent.cert_pem, self.agent.key_pem)
        context.load_cert_chain(str(cert), str(key))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port or 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def write_config(
    folder: DataFolder,
    *,
    port: int,
    admin_port: int,
    upstream_port: int,
    store: str = 'kind = "sqlite"\npath = ".baton/baton.db"',
    extra: str = "",
    support_bearer: str = "none",
) -> None:
    folder.config.write_text(
        f"""
trust_domain = "{TRUST_DOMAIN}"

[gateway]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
drain_timeout_s = 10

[store]
{store}

[[agents]]
name = "support"
bearer = "{support_bearer}"

[[agents]]
name = "billing"

[[agents]]
name = "legacy"
signatures = "optional"

[[agents]]
name = "chatty"
rate_limit = {{ requests = 2, window_s = 60 }}

[[upstreams]]
name = "billing"
url = "https://127.0.0.1:{upstream_port}"
timeout_s = 5
breaker_failures = 3
breaker_reset_s = 60

[[policy.allow]]
caller = "support"
upstream = "billing"
methods = ["tools/call", "tools/list", "GET /sse", "POST /sse", "POST /fail"]

[[policy.allow]]
caller = "legacy"
upstream = "billing"
methods = ["tools/list"]

[[policy.allow]]
caller = "chatty"
upstream = "billing"
methods = ["tools/list"]
{extra}
""",
        encoding="utf-8",
    )


def rpc(method: str, rpc_id: int = 1, **params: object) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params}).encode()


def signed_headers(
    agent: AgentMaterial,
    method: str,
    url: str,
    body: bytes,
    *,
    created: int | None = None,
    nonce: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
    components: Sequence[str] | None = None,
    digest_body: bytes | None = None,
) -> list[tuple[str, str]]:
    """Headers of a request signed by ``agent``: Content-Digest + Signature(-Input)."""
    headers = [("content-type", "application/json"), *extra]
    covered = (
        list(components) if components is not None else ["@method", "@target-uri", "@authority"]
    )
    if body and components is None:
        covered.append("content-digest")
        for name, _ in extra:
            if name.lower() in ("mcp-method", "mcp-name", "a2a-version"):
                covered.append(name.lower())
    if body or digest_body is not None:
        headers.append(
            ("content-digest", content_digest(body if digest_body is None else digest_body))
        )
    when = int(dt.datetime.now(dt.UTC).timestamp()) if created is None else created
    signature_input, signature = sign(
        HttpRequest(method, url, headers),
        agent.signing.active,
        components=covered,
        created=when,
        nonce=nonce or secrets.token_urlsafe(16),
    )
    return [*headers, ("signature-input", signature_input), ("signature", signature)]


def tls_outcome(port: int, context: ssl.SSLContext) -> bytes | str:
    """Handshake, send a request, read: the HTTP bytes that came back, or the error.

    asyncio aborts a failed server handshake without flushing OpenSSL's alert
    (see ADR 0011), so a client sees the connection closed, not the alert name.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(
                    f"POST /u/billing/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Content-Length: 0\r\n\r\n".encode()
                )
                return tls.recv(100)
        except OSError as exc:  # ssl.SSLError included
            return type(exc).__name__
