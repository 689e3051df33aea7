"""The gateway between the official SDKs: real TLS, real signatures, real stores.

The ``fleet`` fixture starts, all on 127.0.0.1 and free ports:

* an MCP server (``mcp`` 2.3 ``MCPServer``, both eras on ``/mcp``) and an A2A
  agent (``a2a-sdk`` 1.3, JSON-RPC + HTTP+JSON + v0.3), each under uvicorn with
  its own SPIFFE certificate, requiring the gateway's client certificate, and
  each behind :class:`~adapters.agent.GatewayVerifier`, so every request that
  reaches an SDK server carries a verified gateway signature;
* the gateway (in this process, SQLite store), routing ``/u/payments`` to the
  MCP server and ``/u/assistant`` to the A2A agent.

Agents ``support`` and ``other`` call through it with their own certificates
and :class:`~adapters.agent.RequestSigner` on the SDKs' HTTP clients.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiohttp import web

from adapters.agent import GatewayVerifier, RequestSigner
from gateway.app import (
    HANDOFFS,
    STORES,
    AppOptions,
    admin_app,
    capped_site,
    gateway_app,
    operator_app,
)
from gateway.config import load
from gateway.devdata import DataFolder, init_data_folder, write_operator
from gateway.handoffs import Handoffs
from gateway.metrics import Metrics
from gateway.runtime import load_runtime
from gateway.stores import Stores
from gateway.tls import operator_context, server_context
from keys.keyset import KeySet
from protocol.audit import AuditEvent
from tests.gateway._harness import TRUST_DOMAIN, agent_context, free_port
from tests.interop.mcp_peers import build_mcp_server, mcp_app

AGENTS = ("support", "other", "payments", "assistant", "hooks")
MCP_METHODS = [
    "initialize", "notifications/initialized", "ping", "tools/list", "tools/call",
    "resources/list", "resources/read", "prompts/list", "prompts/get", "server/discover",
    "(listen)", "(terminate)", "(response)", "notifications/cancelled",
]  # fmt: skip


def _bound_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@dataclass
class Recorded:
    """What reached an SDK server (after the verifier): method, path, headers."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def wrap(self, app: Any) -> Any:
        async def recording(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                self.requests.append((scope["method"], scope["path"], headers))
            await app(scope, receive, send)

        return recording


@asynccontextmanager
async def serve_upstream(
    folder: DataFolder, name: str, build: Callable[[int], Any], scratch: Path, *, port: int = 0
) -> AsyncIterator[tuple[int, Recorded]]:
    """``build(port)`` as an mTLS upstream holding agent ``name``'s certificate,
    on ``port`` (0: a free one)."""
    sock = _bound_socket(port)
    port = sock.getsockname()[1]
    agent = folder.load_agent(TRUST_DOMAIN, name)
    cert, key = scratch / f"{name}.pem", scratch / f"{name}.key"
    cert.write_bytes(agent.cert_pem)
    key.write_bytes(agent.key_pem)
    key.chmod(0o600)
    recorded = Recorded()
    gateway_keys = KeySet.from_jwks(json.loads((folder.gateway / "jwks.json").read_bytes()))
    app = GatewayVerifier(
        recorded.wrap(build(port)), gateway_keys=gateway_keys, authority=f"127.0.0.1:{port}"
    )
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        ssl_ca_certs=str(folder.ca_cert),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield port, recorded
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task
        sock.close()


def _config(
    port: int,
    admin: int,
    mcp_port: int,
    a2a_port: int,
    *,
    webhooks: str,
    gateway_extra: str,
    assistant_extra: str = "",
    operator: int = 8444,
) -> str:
    methods = json.dumps(MCP_METHODS)
    return f"""
trust_domain = "{TRUST_DOMAIN}"

[gateway]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
operator_listen = "127.0.0.1:{operator}"
drain_timeout_s = 5
{gateway_extra}

[store]
kind = "sqlite"
path = ".baton/baton.db"

[[agents]]
name = "support"

[[agents]]
name = "other"

[[agents]]
name = "payments"

[[agents]]
name = "assistant"

[[upstreams]]
name = "payments"
url = "https://127.0.0.1:{mcp_port}"
protocol = "mcp"
timeout_s = 10

[[upstreams]]
name = "assistant"
url = "https://127.0.0.1:{a2a_port}"
protocol = "a2a"
timeout_s = 10
webhook_hosts = {webhooks}
{assistant_extra}

[[policy.allow]]
caller = "support"
upstream = "payments"
methods = {methods}
tools = ["echo", "add", "confirm_refund"]
resources = ["docs://*"]
prompts = ["apology"]

[[policy.allow]]
caller = "other"
upstream = "payments"
methods = {methods}
tools = ["echo", "confirm_refund"]

[[policy.allow]]
caller = "support"
upstream = "assistant"
methods = ["*"]

[[policy.allow]]
caller = "other"
upstream = "assistant"
methods = ["*"]
"""


@dataclass
class Fleet:
    folder: DataFolder
    scratch: Path
    app: web.Application
    port: int
    mcp_port: int
    a2a_port: int
    mcp_seen: Recorded
    a2a_seen: Recorded
    a2a_control: Any = None
    operator_port: int = 0
    #: Operator name -> its one-time web-inbox password (``write_operator``).
    passwords: dict[str, str] = field(default_factory=dict)
    #: The ``payments`` upstream's MCP server (tests change its tools live).
    mcp_server: Any = None

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def operator_url(self) -> str:
        """The operator listener (TLS, no client certificate)."""
        return f"https://127.0.0.1:{self.operator_port}"

    @property
    def handoffs(self) -> Handoffs:
        return self.app[HANDOFFS]

    @property
    def mcp_url(self) -> str:
        return f"{self.base}/u/payments/mcp"

    @property
    def a2a_url(self) -> str:
        return f"{self.base}/u/assistant"

    @property
    def stores(self) -> Stores:
        return self.app[STORES]

    def context(self, name: str) -> ssl.SSLContext:
        return agent_context(self.folder, self.folder.load_agent(TRUST_DOMAIN, name), self.scratch)

    def signer(self, name: str) -> RequestSigner:
        return RequestSigner(self.folder.load_agent(TRUST_DOMAIN, name).signing.active)

    def httpx_client(self, name: str, *, signed: bool = True) -> httpx.AsyncClient:
        """An ``httpx`` client (what a2a-sdk uses) for agent ``name``."""
        return httpx.AsyncClient(
            verify=self.context(name),
            auth=self.signer(name) if signed else None,
            timeout=httpx.Timeout(10.0, read=30.0),
        )

    async def audit_events(self) -> list[AuditEvent]:
        return list(await self.stores.audit.read())


def _a2a_builder(
    holder: dict[str, Any], push_http: httpx.AsyncClient | None
) -> Callable[[int], Any]:
    from tests.interop.a2a_peers import build_a2a_app, control_of

    def build(port: int) -> Any:
        app = build_a2a_app(f"https://127.0.0.1:{port}", push_http=push_http)
        holder["control"] = control_of(app)
        return app

    return build


@asynccontextmanager
async def start_fleet(
    tmp_path: Path,
    *,
    webhooks: tuple[str, ...] = ("hooks.example.com",),
    gateway_extra: str = "",
    assistant_extra: str = "",
    push: bool = False,
    a2a_app: Callable[[int], Any] | None = None,
    extra: str = "",
    operators: tuple[str, ...] = (),
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[Fleet]:
    """The fleet; ``push=True`` gives the A2A agent a push sender that reaches the
    gateway as agent ``assistant`` (its certificate and signature)."""
    folder = init_data_folder(
        tmp_path / "home",
        trust_domain=TRUST_DOMAIN,
        force=False,
        now=dt.datetime.now(dt.UTC),
        agents=AGENTS,
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    holder: dict[str, Any] = {}
    mcp_server = build_mcp_server()
    push_http = None
    if push:
        assistant = folder.load_agent(TRUST_DOMAIN, "assistant")
        push_http = httpx.AsyncClient(
            verify=agent_context(folder, assistant, scratch),
            auth=RequestSigner(assistant.signing.active),
            timeout=httpx.Timeout(10.0),
        )
    async with (
        serve_upstream(folder, "payments", lambda _port: mcp_app(mcp_server), scratch) as (
            mcp_port,
            mcp_seen,
        ),
        serve_upstream(
            folder, "assistant", a2a_app or _a2a_builder(holder, push_http), scratch
        ) as (
            a2a_port,
            a2a_seen,
        ),
    ):
        port, admin_port, operator_port = free_port(), free_port(), free_port()
        folder.config.write_text(
            _config(
                port,
                admin_port,
                mcp_port,
                a2a_port,
                webhooks=json.dumps(list(webhooks)),
                gateway_extra=gateway_extra,
                assistant_extra=assistant_extra,
                operator=operator_port,
            )
            + extra,
            encoding="utf-8",
        )
        passwords = {
            operator: write_operator(folder, operator, now=dt.datetime.now(dt.UTC))
            for operator in operators
        }
        runtime = load_runtime(load(folder.config), folder.root)
        metrics = Metrics()
        options = AppOptions(sweep_interval_s=0, clock=clock or time.time)
        app = gateway_app(runtime, metrics, options)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        tls = server_context(
            cert_file=runtime.cert_file,
            key_file=runtime.key_file,
            ca_file=runtime.ca_file,
            require_client_cert=True,
        )
        limits = runtime.config.limits
        await capped_site(
            runner, "127.0.0.1", port, limits=limits, ssl_context=tls, metrics=metrics
        ).start()
        admin = web.AppRunner(admin_app(app, metrics), access_log=None)
        await admin.setup()
        await web.TCPSite(admin, "127.0.0.1", admin_port).start()
        operator_runner = web.AppRunner(operator_app(app), access_log=None)
        await operator_runner.setup()
        operator_tls = operator_context(cert_file=runtime.cert_file, key_file=runtime.key_file)
        await capped_site(
            operator_runner, "127.0.0.1", operator_port, limits=limits, ssl_context=operator_tls
        ).start()
        try:
            yield Fleet(
                folder,
                scratch,
                app,
                port,
                mcp_port,
                a2a_port,
                mcp_seen,
                a2a_seen,
                holder.get("control"),
                operator_port,
                passwords,
                mcp_server,
            )
        finally:
            await operator_runner.cleanup()
            await admin.cleanup()
            await runner.cleanup()
            if push_http is not None:
                await push_http.aclose()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async with start_fleet(tmp_path) as running:
        yield running
