"""A cap on the connections one client address holds open (threat X05).

aiohttp accepts every connection it is offered; an idle keep-alive connection
costs a file descriptor, TLS state and a handler until ``idle_timeout_s``.
One address opening hundreds of them starves everyone else. :class:`CappedSite`
works as :class:`aiohttp.web.TCPSite` does, with two additions:

* each accepted connection is counted against its peer address
  (:class:`AddressCounts`); one over ``per_address`` is answered with a
  ``429 too_many_connections`` written straight to the transport and closed,
  before aiohttp sees it (no handler, no parser, no request read);
* with TLS, a handshake must finish within ``handshake_timeout_s`` (asyncio's
  default is 60 s), which bounds the connections that never become HTTP.

Invariants: an :class:`AddressCounts` holds, per address, the number of open
connections from it that this site admitted; a refused connection never reaches the
handler and is not counted; the count is per process (with
``workers > 1`` or ``reuse_port`` each process has its own). With TLS the
count starts when the handshake completes (asyncio gives the application
protocol its transport then); the handshake deadline covers the time before.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from typing import Final

from aiohttp import web

from protocol.errors import ConnectionLimited

__all__ = ["AddressCounts", "CappedSite"]

_REFUSAL: Final = ConnectionLimited("per-address connection cap")


def _refusal_bytes() -> bytes:
    body = json.dumps({"error": _REFUSAL.public()}, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {_REFUSAL.http_status} Too Many Requests\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_REFUSAL_BYTES: Final = _refusal_bytes()


class AddressCounts:
    """Open connections per peer address, at most ``limit`` each."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the per-address connection limit must be at least 1")
        self.limit = limit
        self._held: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        """Count one more connection from ``address``; False (nothing counted) at the limit."""
        held = self._held.get(address, 0)
        if held >= self.limit:
            return False
        self._held[address] = held + 1
        return True

    def release(self, address: str) -> None:
        held = self._held.get(address, 0) - 1
        if held > 0:
            self._held[address] = held
        else:
            self._held.pop(address, None)


class _Counted(asyncio.Protocol):
    """Passes every protocol callback to ``inner`` once the connection is admitted."""

    __slots__ = ("_address", "_admitted", "_counts", "_inner", "_refused")

    def __init__(
        self, inner: asyncio.Protocol, counts: AddressCounts, refused: Callable[[], None]
    ) -> None:
        self._inner = inner
        self._counts = counts
        self._refused = refused
        self._address = ""
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._counts.acquire(self._address):
            self._refused()
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(_REFUSAL_BYTES)
            transport.close()
            return
        self._admitted = True
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._counts.release(self._address)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()


class CappedSite(web.BaseSite):
    """A TCP site whose peers may each hold at most ``per_address`` connections."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        per_address: int,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
        reuse_port: bool | None = None,
        handshake_timeout_s: float = 10.0,
        refused: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self._handshake_timeout_s = handshake_timeout_s
        self._on_refused = refused
        self._counts = AddressCounts(per_address)

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:  # pragma: no cover - BaseSite checked it at construction
            raise RuntimeError("the runner was cleaned up before its site started")
        counts, refused = self._counts, self._on_refused

        def protocol() -> asyncio.Protocol:
            return _Counted(server(), counts, refused)

        self._server = await asyncio.get_running_loop().create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_port=self._reuse_port,
            ssl_handshake_timeout=self._handshake_timeout_s if self._ssl_context else None,
        )
