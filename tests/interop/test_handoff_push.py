"""A decision pushed to the escalating agent's webhook: checked against the queue's
``webhook_hosts``, signed by the gateway, carrying the agent's own token; a 2xx
answer is the delivery."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from keys.httpsig import HttpRequest, verify
from keys.keyset import KeySet
from protocol.decision import DecisionBody
from protocol.identity import gateway_id
from tests.gateway._harness import TRUST_DOMAIN
from tests.interop.a2a_peers import JSONRPC, fetch_card, send_text
from tests.interop.conftest import Fleet, start_fleet
from tests.interop.handoff_kit import OperatorClient, handoff_message
from tests.interop.test_a2a_push import (
    DELIVERY_POLICY,
    TRUST_LOOPBACK_WEBHOOKS,
    Webhook,
    serve_webhook,
)

GATEWAY = str(gateway_id(TRUST_DOMAIN, "gw1"))
EXTRA = """
[[queues]]
name = "refunds"
escalate_from = ["support"]
webhook_hosts = ["127.0.0.1"]

[[operators]]
name = "alice"
queues = ["refunds"]
"""


@pytest.fixture
async def pushing(tmp_path: Path) -> AsyncIterator[tuple[Fleet, Webhook]]:
    async with (
        start_fleet(
            tmp_path, extra=EXTRA, operators=("alice",), gateway_extra=TRUST_LOOPBACK_WEBHOOKS
        ) as fleet,
        serve_webhook(fleet) as webhook,
    ):
        yield fleet, webhook


def _escalation(context_id: str, key: str, webhook_url: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {
            "message": handoff_message(
                key, context_id, arguments={"order": "o-9", "amount": 120},
                allowed=("approve", "reject"), resolve_within_s=600,
            ),
            "configuration": {
                "taskPushNotificationConfig": {"url": webhook_url, "token": "agent-token"}
            },
        },
    }  # fmt: skip


async def test_the_decision_is_pushed_signed_to_the_agents_webhook(
    pushing: tuple[Fleet, Webhook],
) -> None:
    fleet, webhook = pushing
    target = f"https://127.0.0.1:{webhook.port}/handoffs"
    async with fleet.httpx_client("support") as http:
        card = await fetch_card(http, fleet.a2a_url)
        await send_text(http, card, "refund o-9", binding=JSONRPC, context_id="ctx-p1")
        sent = await http.post(
            f"{fleet.base}/a2a/inbox/refunds",
            json=_escalation("ctx-p1", "push-1", target),
            headers={"a2a-version": "1.0"},
        )
    assert sent.status_code == 200, sent.text
    task_id = sent.json()["result"]["task"]["id"]
    alice = OperatorClient(
        fleet.folder, "alice", url=fleet.operator_url, queue="refunds", audience=GATEWAY
    )
    body = DecisionBody(type="reject", commitment="refused", message="not this time")
    token = await alice.claim_and_decide(task_id, body)
    await alice.close()
    async with asyncio.timeout(10):
        while not webhook.received:
            webhook.arrived.clear()
            await webhook.arrived.wait()
    path, received, pushed = webhook.received[0]
    headers = {name.lower(): value for name, value in received.items()}
    assert path == "/handoffs" and headers["x-a2a-notification-token"] == "agent-token"
    gateway_keys = KeySet.from_jwks(json.loads((fleet.folder.gateway / "jwks.json").read_bytes()))
    verify(
        HttpRequest("POST", target, list(headers.items())),
        gateway_keys,
        DELIVERY_POLICY,
        body=pushed,
    )
    task = json.loads(pushed)["task"]
    assert task["id"] == task_id and task["status"]["state"] == "TASK_STATE_COMPLETED"
    decision = next(a for a in task["artifacts"] if a["name"] == "decision")
    assert decision["parts"][0]["data"]["decision"] == token
    # The push was the delivery (bounded wait: it is recorded after the webhook's 2xx).
    async with asyncio.timeout(10):
        while (record := await fleet.stores.inbox.get(task_id)) is None or (
            record.status != "delivered"
        ):
            await fleet.handoffs.wait_for_change(task_id, timeout_s=0.5)
    assert "agent-token" not in json.dumps(
        [await fleet.stores.bindings.owner("inbox-push", task_id, now=time.time())]
    ), "the webhook token is stored in clear"


async def test_a_webhook_outside_the_queues_hosts_is_refused_and_nothing_is_created(
    pushing: tuple[Fleet, Webhook],
) -> None:
    fleet, _ = pushing
    async with fleet.httpx_client("support") as http:
        card = await fetch_card(http, fleet.a2a_url)
        await send_text(http, card, "refund o-9", binding=JSONRPC, context_id="ctx-p2")
        refused = await http.post(
            f"{fleet.base}/a2a/inbox/refunds",
            json=_escalation("ctx-p2", "push-2", "https://169.254.169.254/latest/meta-data/"),
            headers={"a2a-version": "1.0"},
        )
    assert refused.status_code == 400
    assert refused.json()["error"]["data"][0]["reason"] == "UNSAFE_WEBHOOK"
    assert list(await fleet.stores.inbox.list("refunds")) == []
