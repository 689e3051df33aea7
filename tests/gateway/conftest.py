"""A running gateway (in this process, real TLS, real SQLite) between real peers."""

from __future__ import annotations

import datetime as dt
import io
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from gateway.app import STORES, AppOptions, admin_app, capped_site, gateway_app
from gateway.config import load
from gateway.devdata import AgentMaterial, DataFolder, init_data_folder
from gateway.metrics import Metrics
from gateway.runtime import load_runtime
from gateway.stores import Stores
from gateway.tls import server_context
from protocol.audit import AuditEvent
from tests.gateway._harness import (
    TRUST_DOMAIN,
    RecordingUpstream,
    agent_context,
    free_port,
    signed_headers,
    write_config,
)

AGENTS = ("support", "billing", "legacy", "chatty")


@dataclass
class Running:
    """A gateway under test and everything around it."""

    folder: DataFolder
    scratch: Path
    upstream: RecordingUpstream
    app: web.Application
    port: int
    admin_port: int
    metrics: Metrics

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def stores(self) -> Stores:
        return self.app[STORES]

    def agent(self, name: str) -> AgentMaterial:
        return self.folder.load_agent(TRUST_DOMAIN, name)

    def context(self, name: str) -> ssl.SSLContext:
        return agent_context(self.folder, self.agent(name), self.scratch)

    async def send(
        self,
        name: str,
        path: str,
        body: bytes,
        *,
        method: str = "POST",
        headers: Sequence[tuple[str, str]] | None = None,
        context: ssl.SSLContext | None = None,
        **sign_options: object,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request from agent ``name``; signed unless ``headers`` is given."""
        url = self.base + path
        if headers is None:
            headers = signed_headers(self.agent(name), method, url, body, **sign_options)  # type: ignore[arg-type]
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context or self.context(name))
            ) as session,
            session.request(
                method,
                URL(url, encoded=True),  # exactly the bytes that were signed
                data=io.BytesIO(body) if body else None,
                headers=list(headers),
            ) as response,
        ):
            return response.status, dict(response.headers), await response.read()

    async def audit_events(self) -> list[AuditEvent]:
        return list(await self.stores.audit.read())


async def start_gateway(
    tmp_path: Path,
    *,
    extra: str = "",
    support_bearer: str = "none",
    store: str | None = None,
    files: dict[str, bytes] | None = None,
    upstream_agent: str = "billing",
    clock: Callable[[], float] | None = None,
) -> tuple[Running, list[web.AppRunner]]:
    folder = init_data_folder(
        tmp_path / "home",
        trust_domain=TRUST_DOMAIN,
        force=False,
        now=dt.datetime.now(dt.UTC),
        agents=AGENTS,
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for name, data in (files or {}).items():
        (folder.root / name).write_bytes(data)
    upstream = RecordingUpstream(folder, folder.load_agent(TRUST_DOMAIN, upstream_agent), scratch)
    await upstream.start()
    port, admin_port = free_port(), free_port()
    options = {} if store is None else {"store": store}
    write_config(
        folder,
        port=port,
        admin_port=admin_port,
        upstream_port=upstream.port,
        extra=extra,
        support_bearer=support_bearer,
        **options,  # type: ignore[arg-type]
    )
    runtime = load_runtime(load(folder.config), folder.root)
    metrics = Metrics()
    app = gateway_app(runtime, metrics, AppOptions() if clock is None else AppOptions(clock=clock))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tls = server_context(
        cert_file=runtime.cert_file,
        key_file=runtime.key_file,
        ca_file=runtime.ca_file,
        require_client_cert=runtime.config.gateway.client_auth == "required",
    )
    # As `baton serve` listens: the per-address connection cap (X05).
    await capped_site(
        runner, "127.0.0.1", port, limits=runtime.config.limits, ssl_context=tls, metrics=metrics
    ).start()
    admin = web.AppRunner(admin_app(app, metrics), access_log=None)
    await admin.setup()
    await web.TCPSite(admin, "127.0.0.1", admin_port).start()
    running = Running(folder, scratch, upstream, app, port, admin_port, metrics)
    return running, [admin, runner]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Running]:
    running, runners = await start_gateway(tmp_path)
    try:
        yield running
    finally:
        for runner in runners:
            await runner.cleanup()
        await running.upstream.stop()
