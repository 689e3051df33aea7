"""Catalogue 1.5, handoff to humans (H01-H13), against the real running gateway.

Each case runs on a fleet (``handoffkit.py``): the gateway with the inbox A2A
agent, the operator listener, the official a2a-sdk agent and MCP server as
upstreams, SQLite, real TLS. Escalations go through ``/a2a/inbox/<queue>`` as
any A2A client sends them, operators act through signed operator commands, and
bundles are checked where they are verified: ``protocol.bundle`` (open and
verify), ``gateway.verify`` (what ``baton verify`` runs) and the operator's
client (``gateway.inbox_client``, what ``baton inbox show`` runs).

Baton's codes where they differ from the catalogue's suggestion:

* H06: a repeated escalation (same ``idempotency_key``) is *idempotent*: it
  answers the same task and opens no second ticket (A2A s13.2), rather than
  409; a bundle id stored under another key is ``409 duplicate_bundle``.
* H09: a held call resumed without a decision is ``403 approval_required``
  (the catalogue's ``no_release``); after its one use, ``approval_refused``.
* H10: a decision replayed or sent by another operator is ``409 stale_decision``.
* H11: the escalation quota is the agent's rate limit (``429 rate_limited``,
  ``Retry-After``); there is no separate per-tenant quota (one tenant per gateway).
* H12: the claim is refused and recorded as the agent's content (``from`` is the
  agent in every transcript entry; the lifecycle records no decision); Baton
  does not add a separate "flagged" marker to such content.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway.handoffs import sealed_parts
from gateway.inbox_client import connect, load_client_config
from gateway.verify import build_export, load_verification_keys, verify_artifact
from keys.jose import sign_compact
from protocol.bundle import MAX_BUNDLE_BYTES, open_reveals, verify_bundle_jws
from protocol.canonical import canonical_digest
from protocol.chain import ChainHead
from protocol.decision import DecisionBody
from protocol.errors import BatonError, DuplicateBundle
from protocol.identity import agent_id
from protocol.lifecycle import verify_events
from protocol.operator import make_command_at, sign_command
from protocol.transcript import TranscriptEntry
from tests.gateway._harness import TRUST_DOMAIN
from tests.interop.conftest import Fleet, start_fleet
from tests.interop.handoff_kit import OperatorClient
from tests.security.handoffkit import (
    EXTRA,
    GATEWAY,
    OPERATORS,
    OTHER_QUEUE,
    QUEUE,
    assert_refused,
    converse,
    db_path,
    escalate,
    escalated,
    forwarded,
    gateway_keys,
    inbox_rpc,
    opened,
    replace_sealed,
    stored_jwe,
    tables,
    tamper,
)

SUPPORT = str(agent_id(TRUST_DOMAIN, "support"))


#: One fleet for the module (starting one costs seconds): every case uses its
#: own conversation and idempotency keys, and every check is relative.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    root = tmp_path_factory.mktemp("handoff")
    async with start_fleet(root, extra=EXTRA, operators=OPERATORS) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ops(fleet: Fleet) -> AsyncIterator[dict[str, OperatorClient]]:
    clients = {
        name: OperatorClient(
            fleet.folder,
            name,
            url=fleet.operator_url,
            queue=OTHER_QUEUE if name == "carol" else QUEUE,
            audience=GATEWAY,
        )
        for name in OPERATORS
    }
    yield clients
    for client in clients.values():
        await client.close()


# --------------------------------------------------------------------------- H01
@pytest.mark.threat("H01")
async def test_a_non_participant_cannot_escalate(fleet: Fleet) -> None:
    await converse(fleet, "ctx-h01")
    await assert_refused(
        fleet, escalate(fleet, "other", "k-h01", "ctx-h01"), status=403, code="not_participant"
    )


@pytest.mark.threat("H01")
async def test_an_escalation_of_a_conversation_that_does_not_exist_creates_nothing(
    fleet: Fleet,
) -> None:
    await assert_refused(
        fleet, escalate(fleet, "support", "k-none", "ctx-never"), status=403,
        code="not_participant",
    )  # fmt: skip


@pytest.mark.threat("H01")
async def test_an_unsigned_escalation_is_refused_before_anything(fleet: Fleet) -> None:
    await converse(fleet, "ctx-h01u")
    message = {"message": {"messageId": "m", "role": "ROLE_USER", "contextId": "ctx-h01u",
                           "parts": []}}  # fmt: skip
    async with fleet.httpx_client("support", signed=False) as http:
        send = http.post(
            f"{fleet.base}/a2a/inbox/{QUEUE}",
            json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": message},
            headers={"a2a-version": "1.0"},
        )
        answer = await assert_refused(
            fleet, send, status=401, code="signature_missing", authenticated=False
        )
    assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.threat("H01")
async def test_an_agent_not_listed_for_the_queue_is_refused(fleet: Fleet) -> None:
    """``other`` takes part in the conversation but may not escalate to disputes;
    an unknown queue gets the same answer (queues are not enumerable)."""
    await converse(fleet, "ctx-h01q", agent="other")
    for queue in (OTHER_QUEUE, "no-such-queue"):
        await assert_refused(
            fleet, escalate(fleet, "other", f"k-{queue}", "ctx-h01q", queue=queue),
            status=403, code="policy_denied",
        )  # fmt: skip


# ----------------------------------------------------------------------- H02-H04
def _forge_entry(document: dict[str, Any], *, prev: str) -> dict[str, Any]:
    """A well-formed entry appended after the last one, linking to ``prev``."""
    last = document["transcript"][-1]
    fields = {k: v for k, v in last.items() if k not in ("seq", "prev", "hash")}
    fields["sender"] = fields.pop("from")
    fields["body_digest"] = canonical_digest({"text": "operator approved the refund"})
    entry = TranscriptEntry.create(ChainHead(last["seq"], prev), **fields)
    return entry.to_json()


def _inject(document: dict[str, Any]) -> None:
    document["transcript"].append(_forge_entry(document, prev="sha256:" + "ab" * 32))


def _edit(document: dict[str, Any]) -> None:
    document["transcript"][0]["body_size"] = 1


def _truncate(document: dict[str, Any]) -> None:
    del document["transcript"][-1]


def _reorder(document: dict[str, Any]) -> None:
    transcript = document["transcript"]
    transcript[0], transcript[1] = transcript[1], transcript[0]


TAMPERING = [
    pytest.param(_inject, "chain_break", id="H02-injected"),
    pytest.param(_edit, "chain_break", id="H02-edited"),
    pytest.param(_truncate, "head_mismatch", id="H03-truncated"),
    pytest.param(_reorder, "seq_violation", id="H04-reordered"),
]


@pytest.mark.threat("H02", "H03", "H04")
@pytest.mark.parametrize(("edit", "code"), TAMPERING)
async def test_a_tampered_transcript_is_refused_wherever_a_bundle_is_verified(
    fleet: Fleet, ops: dict[str, OperatorClient], edit: Any, code: str
) -> None:
    """Re-signed with the gateway's own key, so only the hash chain can tell."""
    context = "ctx-tamper-" + edit.__name__.strip("_")
    bundle_id = await escalated(fleet, "k-" + context, context)
    bundle = await opened(fleet, bundle_id)
    assert len(bundle.bundle.transcript) >= 4
    jws, jwe = tamper(fleet, bundle, edit)
    keys = gateway_keys(fleet)
    # protocol.bundle: the offline check every consumer runs.
    with pytest.raises(BatonError) as caught:
        verify_bundle_jws(jws, keys)
    assert caught.value.code == code
    # gateway.verify (`baton verify FILE`): the export of the tampered bundle.
    verification = load_verification_keys(fleet.folder.root)
    export = build_export(
        bundle=jws, events=list(await fleet.stores.inbox.events(bundle_id)), decision=None,
        queue=QUEUE, conversation="a2a:" + context,
    )  # fmt: skip
    with pytest.raises(BatonError) as caught:
        verify_artifact(
            export, gateway_keys=verification.gateway, operator_keys=verification.operators,
            operator_private=None, now=time.time(),
        )  # fmt: skip
    assert caught.value.code == code
    # The operator's client: the gateway (or its store) hands out the tampered
    # ciphertext; nothing of it reaches the operator.
    replace_sealed(fleet, bundle_id, jwe)
    config = load_client_config(fleet.folder.root, "alice", url=fleet.operator_url)
    async with connect(config) as client:
        with pytest.raises(BatonError) as caught:
            await client.show(bundle_id, QUEUE)
    assert caught.value.code == code


@pytest.mark.threat("H02")
async def test_an_entry_injected_into_the_stored_transcript_stops_the_escalation(
    fleet: Fleet,
) -> None:
    """An entry written behind the gateway's back (not chained to the head)
    never reaches a bundle: the escalation is refused 422, nothing is created."""
    await converse(fleet, "ctx-h02s")
    conversation = "a2a:ctx-h02s"
    entries = list(await fleet.stores.transcripts.read(conversation))
    last = entries[-1].to_json()
    fields = {k: v for k, v in last.items() if k not in ("seq", "prev", "hash")}
    fields["sender"] = fields.pop("from")
    forged = TranscriptEntry.create(ChainHead(last["seq"], "sha256:" + "cd" * 32), **fields)
    with sqlite3.connect(db_path(fleet)) as db:
        db.execute(
            "INSERT INTO transcript_entries (conversation, seq, hash, record, body)"
            " VALUES (?, ?, ?, ?, NULL)",
            (conversation, forged.seq, forged.hash, forged.canonical()),
        )
    await assert_refused(
        fleet, escalate(fleet, "support", "k-h02s", "ctx-h02s"), status=422, code="chain_break"
    )


# --------------------------------------------------------------------------- H05
@pytest.mark.threat("H05")
async def test_a_bundle_is_bound_to_its_conversation_and_queue(fleet: Fleet) -> None:
    bundle_id = await escalated(fleet, "k-h05", "ctx-h05")
    verification = load_verification_keys(fleet.folder.root)
    jwe = await stored_jwe(fleet, bundle_id)
    events = list(await fleet.stores.inbox.events(bundle_id))

    alice = fleet.folder.load_operator("alice").encryption

    def check(export: bytes, **expect: str) -> str:
        with pytest.raises(BatonError) as caught:
            verify_artifact(
                export, gateway_keys=verification.gateway, operator_keys=verification.operators,
                operator_private=alice, now=time.time(), **expect,
            )  # fmt: skip
        return caught.value.code

    honest = build_export(bundle=jwe, events=events, decision=None, queue=QUEUE,
                          conversation="a2a:ctx-h05")  # fmt: skip
    # Attached to a handoff of another conversation, or presented as another queue's.
    assert check(honest, expect_conversation="a2a:ctx-other") == "binding_mismatch"
    assert check(honest, expect_queue=OTHER_QUEUE) == "binding_mismatch"
    for queue, conversation in ((OTHER_QUEUE, "a2a:ctx-h05"), (QUEUE, "a2a:ctx-other")):
        relabelled = build_export(
            bundle=jwe, events=events, decision=None, queue=queue, conversation=conversation
        )
        assert check(relabelled) == "binding_mismatch"


@pytest.mark.threat("H05")
async def test_the_operator_client_refuses_another_bundles_ciphertext(fleet: Fleet) -> None:
    """The gateway lists bundle A but hands out B's (valid, signed) ciphertext."""
    first = await escalated(fleet, "k-h05a", "ctx-h05a")
    second = await escalated(fleet, "k-h05b", "ctx-h05b")
    replace_sealed(fleet, first, await stored_jwe(fleet, second))
    config = load_client_config(fleet.folder.root, "alice", url=fleet.operator_url)
    async with connect(config) as client:
        with pytest.raises(BatonError) as caught:
            await client.show(first, QUEUE)
    assert caught.value.code == "binding_mismatch"


@pytest.mark.threat("H05")
async def test_another_bundles_reveal_set_is_refused(fleet: Fleet) -> None:
    pii = ["/request/requested_action/arguments/order"]
    first = await escalated(fleet, "k-h05r1", "ctx-h05r1", pii_paths=pii)
    second = await escalated(fleet, "k-h05r2", "ctx-h05r2", pii_paths=pii)
    record = await fleet.stores.inbox.get(second)
    assert record is not None
    reveals = sealed_parts(record)["reveals"]
    alice = fleet.folder.load_operator("alice")
    with pytest.raises(BatonError) as caught:
        open_reveals(reveals, alice.encryption, first)
    assert caught.value.code == "binding_mismatch"


@pytest.mark.threat("H05")
async def test_an_idempotency_key_cannot_carry_a_handoff_to_another_conversation(
    fleet: Fleet,
) -> None:
    await escalated(fleet, "k-h05k", "ctx-h05k1")
    await converse(fleet, "ctx-h05k2")
    await assert_refused(
        fleet, escalate(fleet, "support", "k-h05k", "ctx-h05k2"), status=409, code="conflict"
    )


@pytest.mark.threat("H05")
async def test_an_operator_cannot_act_on_another_queues_bundle(
    fleet: Fleet, ops: dict[str, OperatorClient]
) -> None:
    bundle_id = await escalated(fleet, "k-h05q", "ctx-h05q")
    carol = ops["carol"]
    # carol's own queue does not hold it; naming refunds she does not serve is 403.
    await assert_refused(
        fleet, carol.send("show", bundle_id=bundle_id), status=404, code="task_not_found",
        event="operator.rejected",
    )  # fmt: skip
    forged = make_command_at(
        "claim", operator=carol.identity, audience=GATEWAY, queue=QUEUE, bundle_id=bundle_id,
        now=time.time(),
    )  # fmt: skip
    await assert_refused(
        fleet, carol.post(sign_command(forged, carol.material.signing.active)), status=403,
        code="forbidden", event="operator.rejected",
    )  # fmt: skip


# --------------------------------------------------------------------------- H06
@pytest.mark.threat("H06")
async def test_the_same_escalation_again_opens_no_second_ticket(fleet: Fleet) -> None:
    bundle_id = await escalated(fleet, "k-h06", "ctx-h06")
    events = list(await fleet.stores.inbox.events(bundle_id))
    for _ in range(3):
        again = await escalate(fleet, "support", "k-h06", "ctx-h06")
        assert again.status_code == 200, again.text
        assert again.json()["result"]["task"]["id"] == bundle_id
    records = await fleet.stores.inbox.list(QUEUE, limit=1000)
    assert [r.bundle_id for r in records if r.conversation == "a2a:ctx-h06"] == [bundle_id]
    assert list(await fleet.stores.inbox.events(bundle_id)) == events
    created = [
        e for e in await fleet.audit_events()
        if e.event == "handoff.created" and bundle_id in (e.detail or "")
    ]  # fmt: skip
    assert len(created) == 1


@pytest.mark.threat("H06")
async def test_a_bundle_id_stored_under_another_key_is_a_duplicate(fleet: Fleet) -> None:
    """The store's own guard: bundle ids are unique whatever the idempotency key."""
    bundle_id = await escalated(fleet, "k-h06d", "ctx-h06d")
    record = await fleet.stores.inbox.get(bundle_id)
    assert record is not None
    before = await tables(fleet)
    copy = dataclasses.replace(record, idempotency_key="k-other")
    with pytest.raises(DuplicateBundle) as caught:
        await fleet.stores.inbox.create(copy)
    assert caught.value.code == "duplicate_bundle" and caught.value.http_status == 409
    assert await tables(fleet) == before, "a duplicate was stored"


# --------------------------------------------------------------------------- H07
@pytest.mark.threat("H07")
async def test_pii_is_masked_and_revealed_only_to_a_cleared_operator_audited(
    fleet: Fleet, ops: dict[str, OperatorClient]
) -> None:
    pii = ("/request/requested_action/arguments/order",)
    bundle_id = await escalated(fleet, "k-h07", "ctx-h07", pii_paths=pii)
    # The redacted view: what show hands bob opens without the original.
    shown = await ops["bob"].ok("show", bundle_id=bundle_id)
    assert shown["has_reveals"] is True
    bundle = await opened(fleet, bundle_id, "bob")
    order = bundle.bundle.request.requested_action.arguments["order"]  # type: ignore[index]
    assert order != "o-77" and "o-77" not in bundle.jws
    # bob has no clearance: 403, audited, nothing handed out.
    await assert_refused(
        fleet, ops["bob"].send("reveal", bundle_id=bundle_id, reason="curious", paths=pii),
        status=403, code="forbidden", event="operator.rejected",
    )  # fmt: skip
    # alice may; the reveal itself (who, which bundle, which paths, why) is audited.
    audit_before = len(await fleet.audit_events())
    revealed = await ops["alice"].ok("reveal", bundle_id=bundle_id, reason="refund check",
                                     paths=pii)  # fmt: skip
    alice = fleet.folder.load_operator("alice")
    reveal_set = open_reveals(revealed["reveals"], alice.encryption, bundle_id)
    assert "o-77" in reveal_set.canonical().decode()
    [event] = (await fleet.audit_events())[audit_before:]
    assert event.event == "handoff.pii_revealed" and event.outcome == "accepted"
    assert "refund check" in (event.detail or "") and "o-77" not in (event.detail or "")


# --------------------------------------------------------------------------- H08
@pytest.mark.threat("H08")
async def test_an_agent_credential_is_no_operator_credential(
    fleet: Fleet, ops: dict[str, OperatorClient]
) -> None:
    """The operator API takes operator-signed commands only; an agent's key,
    whatever operator the command claims to be from, is unknown there, and a
    command naming another operator than its signer is refused."""
    await escalated(fleet, "k-h08", "ctx-h08")
    alice, bob = ops["alice"], ops["bob"]
    support = fleet.folder.load_agent(TRUST_DOMAIN, "support")
    claims = make_command_at("list", operator=alice.identity, audience=GATEWAY, queue=QUEUE,
                             now=time.time())  # fmt: skip
    await assert_refused(
        fleet, alice.post(sign_command(claims, support.signing.active)), status=401,
        code="unknown_kid", event="operator.rejected", authenticated=False,
    )  # fmt: skip
    as_bob = make_command_at("list", operator=bob.identity, audience=GATEWAY, queue=QUEUE,
                             now=time.time())  # fmt: skip
    await assert_refused(
        fleet, alice.post(sign_command(as_bob, alice.material.signing.active)), status=401,
        code="identity_mismatch", event="operator.rejected", authenticated=False,
    )  # fmt: skip


@pytest.mark.threat("H08")
async def test_an_agent_on_the_operator_listener_with_its_certificate_gets_nothing(
    fleet: Fleet,
) -> None:
    """mTLS as an agent and an agent-signed body: still no operator."""
    support = fleet.folder.load_agent(TRUST_DOMAIN, "support")
    claims = make_command_at("list", operator="operator:alice", audience=GATEWAY, queue=QUEUE,
                             now=time.time())  # fmt: skip
    async with fleet.httpx_client("support") as http:
        send = http.post(
            f"{fleet.operator_url}/inbox/api",
            content=sign_command(claims, support.signing.active),
            headers={"content-type": "application/baton-operator-command+jws"},
        )
        await assert_refused(
            fleet, send, status=401, code="unknown_kid", event="operator.rejected",
            authenticated=False,
        )  # fmt: skip


# --------------------------------------------------------------------------- H09
def _held_message(order: str, **metadata: Any) -> dict[str, Any]:
    return {
        "messageId": "m-" + order,
        "role": "ROLE_USER",
        "contextId": "ctx-" + order,
        "parts": [{"text": f"refund {order}"}],
        "metadata": {"skill": "echo", **metadata},
    }


async def _send_held(fleet: Fleet, message: dict[str, Any]) -> Any:
    async with fleet.httpx_client("support") as http:
        return await http.post(
            f"{fleet.a2a_url}/",
            json={"jsonrpc": "2.0", "id": 7, "method": "SendMessage",
                  "params": {"message": message}},
            headers={"a2a-version": "1.0"},
        )  # fmt: skip


@pytest.mark.threat("H09")
async def test_a_held_call_does_not_resume_without_a_decision(
    fleet: Fleet, ops: dict[str, OperatorClient]
) -> None:
    first = await _send_held(fleet, _held_message("o-h09"))
    assert first.status_code == 403, first.text
    [info] = first.json()["error"]["data"]
    assert info["reason"] == "APPROVAL_REQUIRED"
    bundle_id = info["metadata"]["handoff"]
    sent = forwarded(fleet)
    # Queued, then claimed: neither state is a grant. Nothing is written.
    await assert_refused(fleet, _send_held(fleet, _held_message("o-h09")), status=403,
                         code="approval_required")  # fmt: skip
    await ops["alice"].ok("claim", bundle_id=bundle_id)
    await assert_refused(fleet, _send_held(fleet, _held_message("o-h09")), status=403,
                         code="approval_required")  # fmt: skip
    assert forwarded(fleet) == sent


# --------------------------------------------------------------------------- H10
@pytest.mark.threat("H10")
async def test_a_decision_is_used_once_by_its_own_operator(
    fleet: Fleet, ops: dict[str, OperatorClient]
) -> None:
    first = await _send_held(fleet, _held_message("o-h10"))
    bundle_id = first.json()["error"]["data"][0]["metadata"]["handoff"]
    alice, bob = ops["alice"], ops["bob"]
    bundle = (await alice.ok("claim", bundle_id=bundle_id))["bundle"]
    approve = DecisionBody(type="approve", commitment="agreed", args_digest=bundle["args_digest"])
    token = alice.decision(bundle, approve)
    # Another operator, with alice's token or its own: not the lease holder.
    for decision in (token, bob.decision(bundle, approve)):
        await assert_refused(
            fleet, bob.send("decide", bundle_id=bundle_id, decision=decision), status=409,
            code="stale_decision", event="operator.rejected",
        )  # fmt: skip
    await alice.ok("decide", bundle_id=bundle_id, decision=token)
    # The held call passes once; then the ticket is closed.
    passed = await _send_held(fleet, _held_message("o-h10"))
    assert passed.status_code == 200, passed.text
    await assert_refused(fleet, _send_held(fleet, _held_message("o-h10")), status=403,
                         code="approval_refused")  # fmt: skip
    # The decision replayed after the close, by its author or anyone.
    for operator in (alice, bob):
        await assert_refused(
            fleet, operator.send("decide", bundle_id=bundle_id, decision=token), status=409,
            code="stale_decision", event="operator.rejected",
        )  # fmt: skip
    # And the very command replayed: its nonce is spent.
    command = alice.command("list")
    assert (await alice.post(command)).status_code == 200
    await assert_refused(fleet, alice.post(command), status=401, code="replay_detected",
                         event="operator.rejected")  # fmt: skip


# --------------------------------------------------------------------------- H11
@pytest.mark.threat("H11")
async def test_a_handoff_flood_is_refused_429(tmp_path: Path) -> None:
    """The agent's own rate limit counts escalations. The gateway's clock is
    held at one instant: the flood cannot straddle a window boundary."""
    limited = EXTRA + "\n[rate_limit]\nrequests = 6\nwindow_s = 600\n"
    instant = float(int(time.time()))
    async with start_fleet(
        tmp_path, extra=limited, operators=OPERATORS, clock=lambda: instant
    ) as fleet:
        await converse(fleet, "ctx-h11", turns=1)  # 2 requests: card, message
        statuses = []
        for i in range(4):
            answer = await escalate(fleet, "support", f"flood-{i}", "ctx-h11")
            statuses.append(answer.status_code)
        assert statuses == [200] * 4
        answer = await assert_refused(
            fleet, escalate(fleet, "support", "flood-x", "ctx-h11"), status=429,
            code="rate_limited",
        )  # fmt: skip
        assert int(answer.headers["retry-after"]) > 0
        assert len(await fleet.stores.inbox.list(QUEUE)) == 4


@pytest.mark.threat("H11")
async def test_queue_quotas_limit_escalations_beside_the_agents_rate_limit(
    tmp_path: Path,
) -> None:
    """``agent_escalations`` 2 and ``queue_escalations`` 3 per 600 s on the
    queue: ``support``'s third escalation is 429 (nothing created, one audit
    event) while ``other`` may still escalate; the queue's fourth escalation, by
    anyone, is 429; the other queue is not limited."""
    allowed = 'escalate_from = ["support", "other"]\n'
    quotas = (
        "agent_escalations = { requests = 2, window_s = 600 }\n"
        "queue_escalations = { requests = 3, window_s = 600 }\n"
    )
    extra = EXTRA.replace(allowed, allowed + quotas)
    assert extra != EXTRA
    instant = float(int(time.time()))
    async with start_fleet(
        tmp_path, extra=extra, operators=OPERATORS, clock=lambda: instant
    ) as fleet:
        await converse(fleet, "ctx-quota", turns=1)
        await converse(fleet, "ctx-quota-other", turns=1, agent="other")
        for i in range(2):
            assert (await escalate(fleet, "support", f"q-{i}", "ctx-quota")).status_code == 200
        answer = await assert_refused(
            fleet, escalate(fleet, "support", "q-x", "ctx-quota"), status=429, code="rate_limited"
        )
        assert int(answer.headers["retry-after"]) > 0
        assert (await escalate(fleet, "other", "q-o1", "ctx-quota-other")).status_code == 200
        await assert_refused(
            fleet, escalate(fleet, "other", "q-o2", "ctx-quota-other"), status=429,
            code="rate_limited",
        )  # fmt: skip
        assert len(await fleet.stores.inbox.list(QUEUE)) == 3
        elsewhere = await escalate(fleet, "support", "q-d", "ctx-quota", queue=OTHER_QUEUE)
        assert elsewhere.status_code == 200


# --------------------------------------------------------------------------- H12
@pytest.mark.threat("H12")
async def test_an_agent_saying_operator_approved_is_not_an_approval(
    fleet: Fleet, ops: dict[str, OperatorClient]
) -> None:
    first = await _send_held(fleet, _held_message("o-h12"))
    bundle_id = first.json()["error"]["data"][0]["metadata"]["handoff"]
    claims = {"approved": True, "approved_by": "operator:alice", "decision": "approve"}
    # In the held call's own metadata: still held, nothing forwarded.
    await assert_refused(
        fleet, _send_held(fleet, _held_message("o-h12", baton=claims)), status=403,
        code="approval_required",
    )  # fmt: skip
    # As a "decision" the agent sends on the handoff's task: not an artefact it
    # may send (only an acknowledgement, and only after a real decision).
    support = fleet.folder.load_agent(TRUST_DOMAIN, "support")
    forged = sign_compact(b'{"decision":"approve"}', support.signing.active,
                          typ="baton-decision+jws")  # fmt: skip
    message = {
        "messageId": "m-forged",
        "role": "ROLE_USER",
        "taskId": bundle_id,
        "contextId": "ctx-o-h12",
        "parts": [{"data": {"decision": forged}, "mediaType": "application/baton-decision+jws"},
                  {"text": "operator approved X"}],
    }  # fmt: skip
    await assert_refused(
        fleet, inbox_rpc(fleet, "support", "SendMessage", {"message": message}), status=400,
        code="invalid_request",
    )  # fmt: skip
    record = await fleet.stores.inbox.get(bundle_id)
    assert record is not None and record.decision is None and record.status == "queued"
    # The operator sees the claim as what it is: content the agent sent, and
    # the lifecycle, signed by the gateway, records no decision.
    bundle = await opened(fleet, bundle_id)
    assert bundle.bundle.origin == SUPPORT
    assert {e.sender for e in bundle.bundle.transcript} == {SUPPORT}
    events, _ = verify_events(
        list(await fleet.stores.inbox.events(bundle_id)), gateway_keys(fleet), bundle_id=bundle_id
    )
    assert [e.type for e in events] == ["queued"]


# --------------------------------------------------------------------------- H13
@pytest.mark.threat("H13")
async def test_an_oversized_escalation_is_refused_413(tmp_path: Path) -> None:
    small = EXTRA + "\n[limits]\nmax_body_bytes = 65536\n"
    async with start_fleet(tmp_path, extra=small, operators=OPERATORS) as fleet:
        await converse(fleet, "ctx-h13", turns=1)
        big = {"order": "o-77", "amount": 250, "note": "x" * 70_000}
        await assert_refused(
            fleet, escalate(fleet, "support", "k-h13", "ctx-h13", arguments=big), status=413,
            code="payload_too_large", authenticated=False,
        )  # fmt: skip
        assert list(await fleet.stores.inbox.list(QUEUE)) == []


@pytest.mark.threat("H13")
async def test_an_oversized_operator_command_or_bundle_is_refused(
    fleet: Fleet, ops: dict[str, OperatorClient]
) -> None:
    await assert_refused(
        fleet, ops["alice"].post("a" * (256 * 1024 + 1)), status=413, code="payload_too_large",
        event="operator.rejected", authenticated=False,
    )  # fmt: skip
    with pytest.raises(BatonError) as caught:
        verify_bundle_jws("e" * (MAX_BUNDLE_BYTES * 2) + ".e.e", gateway_keys(fleet))
    assert caught.value.code == "payload_too_large"
