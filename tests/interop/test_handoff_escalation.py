"""Escalation to the inbox A2A agent, end to end through the gateway.

``support`` talks to the ``assistant`` agent (official a2a-sdk on both ends),
then escalates that conversation to the ``refunds`` queue with a plain A2A
``SendMessage`` carrying an ``application/baton-handoff+json`` data part. The
bundle is stored as ciphertext that only the queue's operator opens; repeats
are one handoff; a non-participant creates nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from keys.keyset import KeySet
from protocol.bundle import open_bundle
from protocol.identity import agent_id
from protocol.lifecycle import verify_events
from tests.gateway._harness import TRUST_DOMAIN
from tests.interop.a2a_peers import JSONRPC, fetch_card, send_text
from tests.interop.conftest import Fleet, start_fleet
from tests.interop.handoff_kit import handoff_message

SUPPORT = str(agent_id(TRUST_DOMAIN, "support"))
QUEUES = """
[[queues]]
name = "refunds"
escalate_from = ["support", "other"]

[[operators]]
name = "alice"
queues = ["refunds"]
"""


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async with start_fleet(tmp_path, extra=QUEUES, operators=("alice",)) as running:
        yield running


async def _escalate(fleet: Fleet, agent: str, key: str, context_id: str) -> Any:
    async with fleet.httpx_client(agent) as http:
        response = await http.post(
            f"{fleet.base}/a2a/inbox/refunds",
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "SendMessage",
                "params": {"message": handoff_message(key, context_id)},
            },
            headers={"a2a-version": "1.0"},
        )
    return response


async def _conversation(fleet: Fleet, context_id: str) -> None:
    async with fleet.httpx_client("support") as http:
        card = await fetch_card(http, fleet.a2a_url)
        await send_text(http, card, "refund o-77 please", binding=JSONRPC, context_id=context_id)


async def test_escalation_creates_one_encrypted_bundle_the_operator_can_open(
    fleet: Fleet,
) -> None:
    await _conversation(fleet, "ctx-h1")
    response = await _escalate(fleet, "support", "key-1", "ctx-h1")
    assert response.status_code == 200, response.text
    task = response.json()["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_SUBMITTED"
    assert task["id"].startswith("hb_") and task["contextId"] == "ctx-h1"
    # The same key again, and five at once: one handoff, one task.
    again = await asyncio.gather(
        *(_escalate(fleet, "support", "key-1", "ctx-h1") for _ in range(5))
    )
    assert {r.json()["result"]["task"]["id"] for r in again} == {task["id"]}
    records = await fleet.stores.inbox.list("refunds")
    assert [r.bundle_id for r in records] == [task["id"]]
    [record] = records
    assert "refund o-77" not in record.sealed_bundle, "the gateway stored plaintext"
    alice = fleet.folder.load_operator("alice")
    gateway = KeySet.from_jwks(json.loads((fleet.folder.gateway / "jwks.json").read_bytes()))
    opened = open_bundle(json.loads(record.sealed_bundle)["jwe"], alice.encryption, gateway)
    bundle = opened.bundle
    assert (bundle.queue, bundle.conversation, bundle.origin) == ("refunds", "a2a:ctx-h1", SUPPORT)
    assert len(bundle.transcript) >= 2 and opened.bundle_digest == record.bundle_digest
    events = await fleet.stores.inbox.events(task["id"])
    assert len(events) == 1  # the signed "queued" event
    # The escalating agent follows its task; another agent cannot see it.
    async with fleet.httpx_client("support") as http:
        got = await http.post(
            f"{fleet.base}/a2a/inbox/refunds",
            json={"jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": task["id"]}},
            headers={"a2a-version": "1.0"},
        )
    assert got.json()["result"]["id"] == task["id"]
    async with fleet.httpx_client("other") as http:
        hidden = await http.post(
            f"{fleet.base}/a2a/inbox/refunds",
            json={"jsonrpc": "2.0", "id": 3, "method": "GetTask", "params": {"id": task["id"]}},
            headers={"a2a-version": "1.0"},
        )
    assert hidden.json()["error"]["code"] == -32001


async def test_a_non_participant_cannot_escalate_and_nothing_is_created(fleet: Fleet) -> None:
    await _conversation(fleet, "ctx-h2")
    response = await _escalate(fleet, "other", "key-2", "ctx-h2")
    assert response.status_code == 403
    assert response.json()["error"]["data"][0]["reason"] == "NOT_PARTICIPANT"
    assert list(await fleet.stores.inbox.list("refunds")) == []
    rejected = [e.reason for e in await fleet.audit_events() if e.outcome == "rejected"]
    assert rejected == ["not_participant"]


async def test_an_agent_not_allowed_on_the_queue_is_refused(fleet: Fleet) -> None:
    async with fleet.httpx_client("payments") as http:
        response = await http.post(
            f"{fleet.base}/a2a/inbox/refunds",
            json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                  "params": {"message": handoff_message("k", "ctx")}},
            headers={"a2a-version": "1.0"},
        )  # fmt: skip
    assert response.status_code == 403
    assert response.json()["error"]["data"][0]["reason"] == "POLICY_DENIED"
    assert list(await fleet.stores.inbox.list("refunds")) == []
    assert [(e.outcome, e.reason) for e in await fleet.audit_events()] == [
        ("rejected", "policy_denied")
    ]


async def test_the_escalating_agent_can_cancel_until_someone_decides(fleet: Fleet) -> None:
    await _conversation(fleet, "ctx-h3")
    task = (await _escalate(fleet, "support", "key-3", "ctx-h3")).json()["result"]["task"]
    cancel = {"jsonrpc": "2.0", "id": 4, "method": "CancelTask", "params": {"id": task["id"]}}
    async with fleet.httpx_client("other") as http:
        hidden = await http.post(
            f"{fleet.base}/a2a/inbox/refunds", json=cancel, headers={"a2a-version": "1.0"}
        )
    assert hidden.json()["error"]["code"] == -32001  # not its handoff: not found
    async with fleet.httpx_client("support") as http:
        done = await http.post(
            f"{fleet.base}/a2a/inbox/refunds", json=cancel, headers={"a2a-version": "1.0"}
        )
        again = await http.post(
            f"{fleet.base}/a2a/inbox/refunds", json=cancel, headers={"a2a-version": "1.0"}
        )
    assert done.status_code == 200, done.text
    assert done.json()["result"]["status"]["state"] == "TASK_STATE_CANCELED"
    assert again.status_code == 409
    record = await fleet.stores.inbox.get(task["id"])
    assert record is not None and record.status == "cancelled"
    gateway = KeySet.from_jwks(json.loads((fleet.folder.gateway / "jwks.json").read_bytes()))
    events, _ = verify_events(
        list(await fleet.stores.inbox.events(task["id"])), gateway, bundle_id=task["id"]
    )
    assert [(e.type, e.actor) for e in events][-1] == ("cancelled", SUPPORT)
    # Too late to claim: a cancelled handoff is closed.
    assert list(await fleet.handoffs.store.list("refunds", status="queued")) == []


async def test_a_handoff_flood_is_rate_limited(tmp_path: Path) -> None:
    """H11: escalations count against the agent's rate limit like any request.
    The gateway's clock is held at one instant, so the flood cannot straddle a
    window boundary (signatures stay fresh: the test takes seconds, not 5)."""
    limited = QUEUES + "\n[rate_limit]\nrequests = 6\nwindow_s = 600\n"
    instant = float(int(time.time()))
    async with start_fleet(
        tmp_path, extra=limited, operators=("alice",), clock=lambda: instant
    ) as fleet:
        await _conversation(fleet, "ctx-flood")
        answers = [await _escalate(fleet, "support", f"flood-{i}", "ctx-flood") for i in range(8)]
        statuses = [a.status_code for a in answers]
        assert 429 in statuses and statuses.index(429) > 0, statuses
        assert answers[statuses.index(429)].headers.get("retry-after"), "no Retry-After"
        created = len(await fleet.stores.inbox.list("refunds"))
        assert created == statuses.count(200) < 8


async def test_two_agents_escalating_one_query_get_one_handoff(fleet: Fleet) -> None:
    """Several participants of one conversation fire the same handoff: handled once."""
    await _conversation(fleet, "ctx-h5")
    async with fleet.httpx_client("other") as http:
        card = await fetch_card(http, fleet.a2a_url)
        await send_text(http, card, "me too", binding=JSONRPC, context_id="ctx-h5")
    answers = await asyncio.gather(
        *(_escalate(fleet, agent, "query-5", "ctx-h5") for agent in ("support", "other") * 3)
    )
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    ids = {a.json()["result"]["task"]["id"] for a in answers}
    assert len(ids) == 1
    [record] = await fleet.stores.inbox.list("refunds")
    assert record.bundle_id in ids and len(await fleet.stores.inbox.events(record.bundle_id)) == 1
    created = [e for e in await fleet.audit_events() if e.event == "handoff.created"]
    assert len(created) == 1
