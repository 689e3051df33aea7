"""Approval-gated calls end to end: the official ``mcp`` client calls a held tool,
operators claim and decide through the operator API (signed commands), the
agent reads and verifies the decision with the official ``a2a-sdk`` client, and
the held call passes exactly once (or, after an edit, only as edited; after a
reject or an expiry, never).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import MCPError
from mcp_types import InputRequiredResult

from gateway.handoffs import summary
from keys.keyset import KeySet
from protocol.canonical import canonical_digest
from protocol.decision import (
    DecisionBinding,
    DecisionBody,
    DecisionTerms,
    verify_decision_at,
)
from protocol.directory import KeyDirectory
from protocol.identity import agent_id, gateway_id
from protocol.lifecycle import verify_events
from protocol.operator import make_command_at, sign_command
from tests.gateway._harness import TRUST_DOMAIN
from tests.interop.a2a_peers import JSONRPC, fetch_card, get_task
from tests.interop.conftest import Fleet, start_fleet
from tests.interop.handoff_kit import OperatorClient
from tests.interop.mcp_peers import http_client, mcp_client

SUPPORT = str(agent_id(TRUST_DOMAIN, "support"))
GATEWAY = str(gateway_id(TRUST_DOMAIN, "gw1"))
QUEUE = "payments-approvals"
EXTRA = f"""
[[queues]]
name = "{QUEUE}"
escalate_from = ["support"]
lease_s = 60

[[operators]]
name = "alice"
queues = ["{QUEUE}"]

[[operators]]
name = "bob"
queues = ["{QUEUE}"]

[[policy.allow]]
caller = "support"
upstream = "payments"
methods = ["tools/call"]
tools = ["refund"]

[[policy.require_approval]]
upstream = "payments"
queue = "{QUEUE}"
tools = ["refund"]
reason = "refunds need a person"

[[policy.allow]]
caller = "support"
upstream = "assistant"
methods = ["SendMessage"]
skills = ["echo"]

[[policy.require_approval]]
upstream = "assistant"
queue = "{QUEUE}"
skills = ["echo"]
"""


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async with start_fleet(tmp_path, extra=EXTRA, operators=("alice", "bob")) as running:
        yield running


def _refunds(fleet: Fleet) -> int:
    """How many refund calls reached the MCP server (past its gateway verifier)."""
    return sum(
        1
        for method, _, headers in fleet.mcp_seen.requests
        if method == "POST" and headers.get("mcp-name") == "refund"
    )


@pytest.fixture
async def operators(fleet: Fleet) -> AsyncIterator[tuple[OperatorClient, OperatorClient]]:
    alice, bob = (
        OperatorClient(fleet.folder, name, url=fleet.operator_url, queue=QUEUE, audience=GATEWAY)
        for name in ("alice", "bob")
    )
    yield alice, bob
    await alice.close()
    await bob.close()


async def _held(fleet: Fleet, arguments: dict[str, Any]) -> InputRequiredResult:
    async with (
        http_client(fleet.context("support"), fleet.signer("support")) as http,
        mcp_client(fleet.mcp_url, http, mode="auto") as client,
    ):
        result = await client.session.call_tool("refund", arguments, allow_input_required=True)
    assert isinstance(result, InputRequiredResult), result
    return result


async def _call(
    fleet: Fleet, arguments: dict[str, Any], *, state: str | None = None, mode: str = "auto"
) -> Any:
    async with (
        http_client(fleet.context("support"), fleet.signer("support")) as http,
        mcp_client(fleet.mcp_url, http, mode=mode) as client,
    ):
        try:
            return await client.session.call_tool(
                "refund", arguments, request_state=state, allow_input_required=True
            )
        except MCPError as exc:  # inside the client: its task groups would wrap it
            return exc


async def _refused(fleet: Fleet, arguments: dict[str, Any], *, mode: str = "auto") -> Any:
    """The ``error.data`` of a refused call."""
    answer = await _call(fleet, arguments, mode=mode)
    assert isinstance(answer, MCPError), answer
    return answer.error.data


def _operator_keys(fleet: Fleet) -> KeyDirectory:
    return KeyDirectory(
        {
            f"operator:{name}": KeySet.from_jwks(
                json.loads((fleet.folder.operator(name) / "public.jwks").read_bytes())
            )
            for name in ("alice", "bob")
        }
    )


def _gateway_keys(fleet: Fleet) -> KeySet:
    return KeySet.from_jwks(json.loads((fleet.folder.gateway / "jwks.json").read_bytes()))


async def test_an_approved_refund_passes_exactly_once_and_the_agent_verifies_the_decision(
    fleet: Fleet, operators: tuple[OperatorClient, OperatorClient]
) -> None:
    alice, bob = operators
    arguments = {"order": "o-1", "amount": 250}
    held = await _held(fleet, arguments)
    handoff = held.meta["io.baton/handoff"]  # type: ignore[index]
    bundle_id = handoff["handoff"]
    assert handoff["queue"] == QUEUE and held.request_state == handoff["request_state"]
    assert _refunds(fleet) == 0, "a held call reached the tool"
    # Holding again finds the same handoff and opens no other.
    again = await _held(fleet, arguments)
    assert again.meta["io.baton/handoff"]["handoff"] == bundle_id  # type: ignore[index]
    assert [r.bundle_id for r in await fleet.stores.inbox.list(QUEUE)] == [bundle_id]

    # Operators: 20 concurrent claims, one owner wins.
    claims = await asyncio.gather(
        *((alice if i % 2 else bob).send("claim", bundle_id=bundle_id) for i in range(20))
    )
    won = [c.json()["bundle"]["lease"]["owner"] for c in claims if c.status_code == 200]
    assert won and len(set(won)) == 1, [c.status_code for c in claims]
    lost = [c for c in claims if c.status_code != 200]
    assert lost and {c.json()["error"]["code"] for c in lost} == {"conflict"}
    winner, loser = (alice, bob) if won[0] == alice.identity else (bob, alice)
    shown = (await winner.send("show", bundle_id=bundle_id)).json()
    bundle = shown["bundle"]
    assert bundle["lease"]["owner"] == winner.identity and bundle["gated"]["target"] == "refund"
    assert bundle["args_digest"] == canonical_digest(arguments)
    assert "o-1" not in json.dumps(shown["bundle"]), "arguments in clear beside the bundle"

    # The loser cannot decide, even with a well-formed decision of its own.
    approve = DecisionBody(type="approve", commitment="agreed", args_digest=bundle["args_digest"])
    stolen = await loser.send(
        "decide", bundle_id=bundle_id, decision=loser.decision(bundle, approve)
    )
    assert stolen.status_code == 409 and stolen.json()["error"]["code"] == "stale_decision"
    events_before = list(await fleet.stores.inbox.events(bundle_id))
    untouched = await fleet.stores.inbox.get(bundle_id)
    assert untouched is not None and untouched.decision is None and untouched.status == "claimed"
    assert list(await fleet.stores.inbox.events(bundle_id)) == events_before, "refusal wrote"
    token = winner.decision(bundle, approve)
    decided = await winner.send("decide", bundle_id=bundle_id, decision=token)
    assert decided.status_code == 200, decided.text
    after_decision = list(await fleet.stores.inbox.events(bundle_id))
    # The same decision again, or a second one: refused.
    replayed = await winner.send("decide", bundle_id=bundle_id, decision=token)
    assert replayed.status_code == 409 and replayed.json()["error"]["code"] == "stale_decision"
    second = await winner.send(
        "decide", bundle_id=bundle_id, decision=winner.decision(bundle, approve)
    )
    assert second.status_code == 409
    assert list(await fleet.stores.inbox.events(bundle_id)) == after_decision, "refusal wrote"

    # The agent reads the decision as the task's result (official a2a-sdk client)
    # and verifies it with public keys alone.
    async with fleet.httpx_client("support") as http:
        card = await fetch_card(http, f"{fleet.base}/a2a/inbox/{QUEUE}")
        task = await get_task(http, card, bundle_id, binding=JSONRPC)
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    parts = {a["name"]: a["parts"][0]["data"] for a in task["artifacts"]}
    meta = task["metadata"]["baton"]
    verified = verify_decision_at(
        parts["decision"]["decision"],
        operators=_operator_keys(fleet),
        binding=DecisionBinding(
            bundle_id, meta["bundleDigest"], 1, bundle["lease"]["fencing_token"]
        ),
        request=DecisionTerms(("approve", "edit", "reject"), canonical_digest(arguments)),
        now=time.time(),
    )
    assert verified.operator == winner.identity and verified.decision.type == "approve"

    # The held call passes once, with the gateway's requestState; then never again.
    passed = await _call(fleet, arguments, state=held.request_state)
    assert passed.content[0].text == "refunded 250 on o-1", passed
    assert _refunds(fleet) == 1
    settled = list(await fleet.stores.inbox.events(bundle_id))
    assert (await _refused(fleet, arguments))["code"] == "approval_refused"
    assert _refunds(fleet) == 1, "an approval was used twice"
    assert list(await fleet.stores.inbox.events(bundle_id)) == settled, "a refusal wrote"

    # The lifecycle, verifiable offline: queued, claimed..., decided, delivered, acknowledged.
    events, _ = verify_events(
        list(await fleet.stores.inbox.events(bundle_id)), _gateway_keys(fleet), bundle_id=bundle_id
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "queued" and kinds[-3:] == ["decided", "delivered", "acknowledged"]
    assert events[-1].outcome == "executed"
    record = await fleet.stores.inbox.get(bundle_id)
    assert record is not None and summary(record)["status"] == "acknowledged"


async def test_an_edit_lets_only_the_edited_call_pass(
    fleet: Fleet, operators: tuple[OperatorClient, OperatorClient]
) -> None:
    alice, _ = operators
    asked = {"order": "o-2", "amount": 900}
    held = await _held(fleet, asked)
    bundle_id = held.meta["io.baton/handoff"]["handoff"]  # type: ignore[index]
    bundle = (await alice.send("claim", bundle_id=bundle_id)).json()["bundle"]
    edited = {"order": "o-2", "amount": 100}
    body = DecisionBody(
        type="edit", commitment="agreed", arguments=edited, args_digest=canonical_digest(edited)
    )
    decided = await alice.send("decide", bundle_id=bundle_id, decision=alice.decision(bundle, body))
    assert decided.status_code == 200, decided.text
    assert (await _refused(fleet, asked))["code"] == "approval_refused"
    passed = await _call(fleet, edited)
    assert passed.content[0].text == "refunded 100 on o-2", passed
    assert (await _refused(fleet, edited))["code"] == "approval_refused"
    assert _refunds(fleet) == 1


async def test_a_reject_or_an_expiry_never_passes_and_a_lapsed_lease_returns(
    fleet: Fleet, operators: tuple[OperatorClient, OperatorClient]
) -> None:
    alice, bob = operators
    rejected_args = {"order": "o-3", "amount": 300}
    held = await _held(fleet, rejected_args)
    rejected_id = held.meta["io.baton/handoff"]["handoff"]  # type: ignore[index]
    bundle = (await alice.send("claim", bundle_id=rejected_id)).json()["bundle"]
    body = DecisionBody(type="reject", commitment="refused", message="over the limit")
    assert (
        await alice.send("decide", bundle_id=rejected_id, decision=alice.decision(bundle, body))
    ).status_code == 200
    for _ in range(2):
        assert (await _refused(fleet, rejected_args))["code"] == "approval_refused"

    # A lapsed lease returns the bundle to the queue: another operator takes it.
    expiring_args = {"order": "o-4", "amount": 400}
    expiring = (await _held(fleet, expiring_args)).meta["io.baton/handoff"]["handoff"]  # type: ignore[index]
    lease = (await alice.send("claim", bundle_id=expiring)).json()["bundle"]["lease"]
    requeued, _ = await fleet.handoffs.sweep(lease["until"] + 1)
    assert requeued == 1
    record = await fleet.stores.inbox.get(expiring)
    assert record is not None and record.status == "queued" and record.lease is None
    # Past the SLA, it expires (fail closed: reject) and the call never passes.
    _, expired = await fleet.handoffs.sweep(record.resolve_by + 1)
    assert expired == 1
    late = await bob.send("claim", bundle_id=expiring)
    assert late.status_code == 409
    assert (await _refused(fleet, expiring_args))["code"] == "approval_refused"
    assert _refunds(fleet) == 0


async def test_older_mcp_gets_a_structured_error_naming_the_handoff(fleet: Fleet) -> None:
    data = await _refused(fleet, {"order": "o-5", "amount": 500}, mode="legacy")
    # Not "retryable" in Baton's sense (a transient fault): retry once a person decided.
    assert data["code"] == "approval_required" and data["retryable"] is False
    assert data["baton"]["queue"] == QUEUE and data["baton"]["handoff"].startswith("hb_g")
    assert _refunds(fleet) == 0


async def test_operator_commands_are_single_use_and_for_this_gateway_only(
    fleet: Fleet, operators: tuple[OperatorClient, OperatorClient]
) -> None:
    alice, _ = operators
    token = alice.command("list")
    first = await alice.post(token)
    assert first.status_code == 200 and first.json() == {"bundles": []}
    replay = await alice.post(token)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "replay_detected"
    elsewhere = make_command_at(
        "list", operator=alice.identity, audience=str(gateway_id(TRUST_DOMAIN, "gw2")),
        queue=QUEUE, now=time.time(),
    )  # fmt: skip
    other = await alice.post(sign_command(elsewhere, alice.material.signing.active))
    assert other.status_code == 401 and other.json()["error"]["code"] == "bad_audience"
    # H08: an agent's credential is no operator's, whatever the command claims.
    support = fleet.folder.load_agent(TRUST_DOMAIN, "support")
    forged = alice.command("list")  # signed by alice; now the same claims signed by support
    claims = make_command_at(
        "list", operator=alice.identity, audience=GATEWAY, queue=QUEUE, now=time.time()
    )
    impersonated = await alice.post(sign_command(claims, support.signing.active))
    assert impersonated.status_code == 401
    assert impersonated.json()["error"]["code"] == "unknown_kid"
    assert (await alice.post(forged)).status_code == 200


async def test_a2a_gets_a_structured_error_naming_the_handoff_and_the_agent_is_not_reached(
    fleet: Fleet,
) -> None:
    message = {
        "messageId": "m-held",
        "role": "ROLE_USER",
        "contextId": "ctx-held",
        "parts": [{"text": "refund o-6"}],
        "metadata": {"skill": "echo"},
    }
    before = len(fleet.a2a_seen.requests)
    async with fleet.httpx_client("support") as http:
        answer = await http.post(
            f"{fleet.a2a_url}/",
            json={
                "jsonrpc": "2.0",
                "id": 7,
                "method": "SendMessage",
                "params": {"message": message},
            },
            headers={"a2a-version": "1.0"},
        )
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["code"] == -32081
    [info] = error["data"]
    assert info["reason"] == "APPROVAL_REQUIRED"
    assert info["metadata"]["queue"] == QUEUE and info["metadata"]["handoff"].startswith("hb_g")
    assert len(fleet.a2a_seen.requests) == before, "a held message reached the agent"
    [record] = await fleet.stores.inbox.list(QUEUE)
    assert record.bundle_id == info["metadata"]["handoff"] and record.origin == SUPPORT
