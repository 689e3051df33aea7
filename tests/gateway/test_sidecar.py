"""``baton sidecar``: a plain-HTTP client on loopback reaches the gateway as a signed agent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway.sidecar import SidecarConfig, agent_tls_context, sidecar_app
from protocol.identity import agent_id
from tests.gateway._harness import TRUST_DOMAIN, free_port, rpc
from tests.gateway.conftest import Running

SUPPORT = str(agent_id(TRUST_DOMAIN, "support"))


@pytest.fixture
async def sidecar(gw: Running) -> AsyncIterator[str]:
    port = free_port()
    folder = gw.folder
    config = SidecarConfig(
        gateway_url=gw.base,
        listen_host="127.0.0.1",
        listen_port=port,
        signing_key=gw.agent("support").signing.active,
        tls=agent_tls_context(
            str(folder.ca_cert),
            str(folder.agent("support") / "tls.pem"),
            str(folder.agent("support") / "tls.key"),
        ),
    )
    runner = web.AppRunner(sidecar_app(config), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers or {}) as response,
    ):
        return response.status, await response.read()


async def test_plain_client_is_signed_and_authenticated_as_the_agent(
    gw: Running, sidecar: str
) -> None:
    body = rpc("tools/call", 4, name="refund")
    status, answer = await _post(
        sidecar + "/u/billing/mcp?q=a%2Fb",
        body,
        {"content-type": "application/json", "baton-conversation": "conv-sidecar"},
    )
    assert status == 200, answer
    assert json.loads(answer)["result"] == {"ok": True}
    [received] = gw.upstream.received
    # (the recording upstream shows the query decoded; the gateway verified the
    # signature over the raw %2F form, or the request would not be here)
    assert (received.path, received.body) == ("/mcp?q=a/b", body)
    assert received.headers["baton-caller"] == SUPPORT
    [request, _] = await gw.stores.transcripts.read("conv-sidecar")
    assert request.verified and request.signer == gw.agent("support").signing.active.kid


async def test_stream_passes_through(gw: Running, sidecar: str) -> None:
    status, answer = await _post(sidecar + "/u/billing/sse", rpc("tools/call", 3))
    assert status == 200
    assert answer.count(b"data: ") == 3


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"host": "evil.example:80"}, 421), ({"origin": "https://evil.example"}, 403)],
)
async def test_sidecar_refuses_other_hosts_and_origins(
    gw: Running, sidecar: str, headers: dict[str, str], status: int
) -> None:
    got, _ = await _post(sidecar + "/u/billing/mcp", rpc("tools/list"), headers)
    assert got == status
    assert gw.upstream.received == []
    assert await gw.audit_events() == [], "the gateway was never reached"


def test_sidecar_listens_on_loopback_only(gw: Running) -> None:
    with pytest.raises(ValueError, match="loopback"):
        SidecarConfig(
            gateway_url=gw.base,
            listen_host="0.0.0.0",  # noqa: S104 - the point of the test
            listen_port=1,
            signing_key=gw.agent("support").signing.active,
            tls=agent_tls_context(
                str(gw.folder.ca_cert),
                str(gw.folder.agent("support") / "tls.pem"),
                str(gw.folder.agent("support") / "tls.key"),
            ),
        )


async def test_an_allowed_origin_is_checked_by_the_sidecar_and_not_forwarded(
    gw: Running,
) -> None:
    port = free_port()
    folder = gw.folder
    config = SidecarConfig(
        gateway_url=gw.base,
        listen_host="127.0.0.1",
        listen_port=port,
        signing_key=gw.agent("support").signing.active,
        tls=agent_tls_context(
            str(folder.ca_cert),
            str(folder.agent("support") / "tls.pem"),
            str(folder.agent("support") / "tls.key"),
        ),
        allowed_origins=frozenset({f"http://127.0.0.1:{port}"}),
    )
    runner = web.AppRunner(sidecar_app(config), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        status, _ = await _post(
            f"http://127.0.0.1:{port}/u/billing/mcp",
            rpc("tools/list"),
            {"origin": f"http://127.0.0.1:{port}", "content-type": "application/json"},
        )
    finally:
        await runner.cleanup()
    assert status == 200
    [received] = gw.upstream.received
    assert "origin" not in {name.lower() for name in received.headers}
