"""A2A push notifications through the gateway's relay, with the official SDK on both ends.

The caller configures a webhook; the SDK agent is handed a relay URL of the
gateway's instead, and its own push sender (``BasePushNotificationSender``)
posts there with the agent's certificate and signature. The gateway checks
the destination again at connect time, never follows redirects, records the
notification and delivers it signed with its own key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from keys.httpsig import HttpRequest, SignaturePolicy, verify
from keys.keyset import KeySet
from protocol.identity import agent_id
from tests.gateway._harness import TRUST_DOMAIN, free_port
from tests.interop.a2a_peers import JSONRPC, fetch_card, send_text
from tests.interop.conftest import Fleet, start_fleet

ASSISTANT = str(agent_id(TRUST_DOMAIN, "assistant"))
DELIVERY_POLICY = SignaturePolicy(
    required_components=frozenset(
        {"@method", "@target-uri", "@authority", "content-digest", "baton-caller"}
    )
)


@dataclass
class Webhook:
    """An HTTPS webhook receiver on 127.0.0.1 (dev-CA certificate), recording requests."""

    port: int = 0
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append((request.path, dict(request.headers), await request.read()))
        self.arrived.set()
        if request.path == "/redirect":
            raise web.HTTPFound("https://169.254.169.254/latest/meta-data/")
        return web.json_response({})


@contextlib.asynccontextmanager
async def serve_webhook(fleet: Fleet) -> AsyncIterator[Webhook]:
    """A :class:`Webhook` on 127.0.0.1 with the ``hooks`` agent's dev-CA certificate."""
    hooks = fleet.folder.load_agent(TRUST_DOMAIN, "hooks")
    cert, key = fleet.scratch / "hooks.pem", fleet.scratch / "hooks.key"
    cert.write_bytes(hooks.cert_pem)
    key.write_bytes(hooks.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    webhook = Webhook(port=free_port())
    app = web.Application()
    app.router.add_post("/{tail:.*}", webhook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", webhook.port, ssl_context=context).start()
    try:
        yield webhook
    finally:
        await runner.cleanup()


#: Lets the gateway deliver to the loopback webhook with its dev-CA certificate.
TRUST_LOOPBACK_WEBHOOKS = (
    'webhook_trusted_networks = ["127.0.0.1/32"]\nwebhook_ca_file = ".baton/ca/ca.pem"'
)


@pytest.fixture
async def push_fleet(tmp_path: Path) -> AsyncIterator[tuple[Fleet, Webhook]]:
    async with (
        start_fleet(
            tmp_path, push=True, webhooks=("127.0.0.1",), gateway_extra=TRUST_LOOPBACK_WEBHOOKS
        ) as fleet,
        serve_webhook(fleet) as webhook,
    ):
        yield fleet, webhook


def _relay_urls(fleet: Fleet) -> list[str]:
    """Webhook URLs the A2A agent was given (in what reached it)."""
    found = []
    for request in fleet.a2a_control.requests:
        if request.method == "POST" and request.body:
            config = json.loads(request.body).get("params", {}).get("configuration", {})
            url = config.get("taskPushNotificationConfig", {}).get("url")
            if url:
                found.append(url)
    return found


async def _send_with_webhook(fleet: Fleet, text: str, url: str) -> str | None:
    async with fleet.httpx_client("support") as http:
        card = await fetch_card(http, fleet.a2a_url)
        [answer] = await send_text(
            http,
            card,
            text,
            binding=JSONRPC,
            return_immediately=True,
            push_url=url,
            push_token="tok-123",
        )
    return str(answer["task"]["id"]) if "task" in answer else None


async def test_notifications_are_relayed_checked_and_signed_by_the_gateway(
    push_fleet: tuple[Fleet, Webhook],
) -> None:
    fleet, webhook = push_fleet
    target = f"https://127.0.0.1:{webhook.port}/notify"
    task_id = await _send_with_webhook(fleet, "wait:notify me", target)
    assert task_id is not None
    [relay] = _relay_urls(fleet)
    assert relay.startswith(f"{fleet.base}/push/"), relay
    assert str(webhook.port) not in relay, "the agent learned the caller's webhook"
    await fleet.a2a_control.wait_parked(task_id)
    fleet.a2a_control.release(task_id)
    async with asyncio.timeout(10):
        while not any(task_id.encode() in body for _, _, body in webhook.received):
            webhook.arrived.clear()
            await webhook.arrived.wait()
    path, received_headers, body = webhook.received[-1]
    headers = {name.lower(): value for name, value in received_headers.items()}
    assert path == "/notify"
    assert headers["x-a2a-notification-token"] == "tok-123"
    assert headers["baton-caller"] == ASSISTANT
    gateway_keys = KeySet.from_jwks(json.loads((fleet.folder.gateway / "jwks.json").read_bytes()))
    verify(
        HttpRequest("POST", target, list(headers.items())), gateway_keys, DELIVERY_POLICY, body=body
    )
    # The notification is recorded in the task's conversation, from the agent.
    context_id = next(iter(json.loads(body).values()))["contextId"]
    entries = await fleet.stores.transcripts.read(f"a2a:{context_id}")
    notes = [e for e in entries if e.kind == "notification"]
    assert notes and all((n.sender, n.verified) == (ASSISTANT, True) for n in notes)
    events = await fleet.audit_events()
    assert any(e.event == "push.accepted" for e in events)
    assert not [e for e in events if e.outcome == "rejected"]


async def test_a_webhook_redirect_is_not_followed(push_fleet: tuple[Fleet, Webhook]) -> None:
    fleet, webhook = push_fleet
    task_id = await _send_with_webhook(
        fleet, "wait:redirect me", f"https://127.0.0.1:{webhook.port}/redirect"
    )
    assert task_id is not None
    await fleet.a2a_control.wait_parked(task_id)
    fleet.a2a_control.release(task_id)
    async with asyncio.timeout(10):
        while not any(e.reason == "upstream_error" for e in await fleet.audit_events()):
            webhook.arrived.clear()
            await asyncio.wait_for(webhook.arrived.wait(), timeout=5)
    assert {path for path, _, _ in webhook.received} == {"/redirect"}, "a redirect was followed"


async def test_only_the_upstream_given_a_relay_may_use_it(
    push_fleet: tuple[Fleet, Webhook],
) -> None:
    fleet, webhook = push_fleet
    await _send_with_webhook(fleet, "msg:no task", f"https://127.0.0.1:{webhook.port}/notify")
    [relay] = _relay_urls(fleet)
    async with fleet.httpx_client("other") as http:
        stolen = await http.post(relay, json={"statusUpdate": {}})
        unknown = await http.post(f"{fleet.base}/push/nonexistent", json={})
    assert (stolen.status_code, unknown.status_code) == (404, 404)
    assert webhook.received == []
    rejected = [e.reason for e in await fleet.audit_events() if e.outcome == "rejected"]
    assert rejected == ["not_found", "not_found"]
