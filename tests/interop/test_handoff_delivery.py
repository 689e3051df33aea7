"""An agent escalates with the official a2a-sdk client, follows the handoff with
``SubscribeToTask``, receives the operator's signed decision as the task result,
verifies it with public keys alone and acknowledges what it did with it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from a2a.types import Message, Part, Role, SendMessageConfiguration, SendMessageRequest
from google.protobuf import json_format, struct_pb2

from gateway.verify import build_export, load_verification_keys, verify_artifact
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
from tests.gateway._harness import TRUST_DOMAIN
from tests.interop.a2a_peers import JSONRPC, fetch_card, open_client, send_text, subscribe
from tests.interop.conftest import Fleet, start_fleet
from tests.interop.handoff_kit import OperatorClient, handoff_request

SUPPORT = str(agent_id(TRUST_DOMAIN, "support"))
GATEWAY = str(gateway_id(TRUST_DOMAIN, "gw1"))
EXTRA = """
[[queues]]
name = "refunds"
escalate_from = ["support"]

[[operators]]
name = "alice"
queues = ["refunds"]
"""
ARGUMENTS = {"order": "o-88", "amount": 250}


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async with start_fleet(tmp_path, extra=EXTRA, operators=("alice",)) as running:
        running.handoffs.poll_s = 0.2  # another gateway's change would be read this often
        yield running


def _handoff_message(context_id: str) -> Message:
    request = handoff_request(
        "refund-o-88", arguments=ARGUMENTS, allowed=("approve", "reject"), resolve_within_s=600
    )
    data = struct_pb2.Value()
    json_format.ParseDict(request, data)
    return Message(
        role=Role.ROLE_USER,
        message_id=f"m-{uuid.uuid4()}",
        context_id=context_id,
        parts=[Part(data=data, media_type="application/baton-handoff+json")],
    )


async def test_the_agent_escalates_subscribes_verifies_and_acknowledges(fleet: Fleet) -> None:
    async with fleet.httpx_client("support") as http:
        assistant = await fetch_card(http, fleet.a2a_url)
        await send_text(http, assistant, "refund o-88 please", binding=JSONRPC, context_id="ctx-d1")
        inbox = await fetch_card(http, f"{fleet.base}/a2a/inbox/refunds")
        assert inbox.capabilities.streaming and inbox.skills[0].id == "escalate"
        request = SendMessageRequest(
            message=_handoff_message("ctx-d1"),
            configuration=SendMessageConfiguration(return_immediately=True),
        )
        async with open_client(http, inbox, binding=JSONRPC) as client:
            [sent] = [json_format.MessageToDict(e) async for e in client.send_message(request)]
        task_id = sent["task"]["id"]
        assert sent["task"]["status"]["state"] == "TASK_STATE_SUBMITTED"

        decided = asyncio.Event()

        alice = OperatorClient(
            fleet.folder, "alice", url=fleet.operator_url, queue="refunds", audience=GATEWAY
        )

        async def operator_decides(_first: Any) -> None:
            body = DecisionBody(
                type="approve", commitment="agreed", args_digest=canonical_digest(ARGUMENTS)
            )
            await alice.claim_and_decide(task_id, body)
            decided.set()

        async with asyncio.timeout(30):
            events = await subscribe(
                http, inbox, task_id, binding=JSONRPC,
                on_first=lambda first: asyncio.ensure_future(operator_decides(first)),
            )  # fmt: skip
        assert decided.is_set()
        await alice.close()
    kinds = [next(iter(event)) for event in events]
    assert kinds[0] == "task" and "artifactUpdate" in kinds and kinds[-1] == "statusUpdate"
    assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
    artifact = next(e["artifactUpdate"]["artifact"] for e in events if "artifactUpdate" in e)
    token = artifact["parts"][0]["data"]["decision"]

    # Verified with public keys only: the operators' and nothing else.
    public = KeySet.from_jwks(
        json.loads((fleet.folder.operator("alice") / "public.jwks").read_bytes())
    )
    meta = events[-1]["statusUpdate"]["metadata"]["baton"]
    decision = verify_decision_at(
        token,
        operators=KeyDirectory({"operator:alice": public}),
        binding=DecisionBinding(task_id, meta["bundleDigest"], 1, 1),
        request=DecisionTerms(("approve", "reject"), canonical_digest(ARGUMENTS)),
        now=time.time(),
    )
    assert decision.decision.type == "approve" and decision.operator == "operator:alice"

    # Receiving it was the delivery; now the agent says what it did.
    ack = {
        "jsonrpc": "2.0", "id": 9, "method": "SendMessage",
        "params": {"message": {
            "messageId": "m-ack", "role": "ROLE_USER", "contextId": "ctx-d1", "taskId": task_id,
            "parts": [{"data": {"outcome": "executed"}, "mediaType": "application/baton-ack+json"}],
        }},
    }  # fmt: skip
    async with fleet.httpx_client("support") as http:
        answer = await http.post(
            f"{fleet.base}/a2a/inbox/refunds", json=ack, headers={"a2a-version": "1.0"}
        )
        again = await http.post(
            f"{fleet.base}/a2a/inbox/refunds", json=ack, headers={"a2a-version": "1.0"}
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["task"]["metadata"]["baton"]["status"] == "acknowledged"
    assert again.status_code == 409, "acknowledged twice"

    tokens = list(await fleet.stores.inbox.events(task_id))
    gateway_keys = KeySet.from_jwks(json.loads((fleet.folder.gateway / "jwks.json").read_bytes()))
    lifecycle, _ = verify_events(tokens, gateway_keys, bundle_id=task_id)
    assert [e.type for e in lifecycle] == [
        "queued",
        "claimed",
        "decided",
        "delivered",
        "acknowledged",
    ]
    assert lifecycle[-1].actor == SUPPORT and lifecycle[-1].outcome == "executed"
    record = await fleet.stores.inbox.get(task_id)
    assert record is not None
    export = build_export(
        bundle=json.loads(record.sealed_bundle)["jwe"], events=tokens, decision=record.decision,
        queue="refunds", conversation="a2a:ctx-d1",
    )  # fmt: skip
    keys = load_verification_keys(fleet.folder.root)
    report = verify_artifact(
        export, gateway_keys=keys.gateway, operator_keys=keys.operators,
        operator_private=fleet.folder.load_operator("alice").encryption, now=time.time(),
        expect_conversation="a2a:ctx-d1", expect_queue="refunds",
        queue_operators=keys.queue_operators,
    )  # fmt: skip
    assert report.kind == "export" and report.content_checked
    assert report.events[-1] == "acknowledged" and report.decision is not None
