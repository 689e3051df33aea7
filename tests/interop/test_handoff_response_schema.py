"""Response schemas end to end (``protocol/schema.py``): the gateway refuses a
handoff whose ``response_schema`` asks for a check Baton does not make, and a
``respond`` decision whose response does not fit, before anything is recorded;
``baton inbox decide`` refuses to sign such a response in the first place.

The fleet is the interop one (official a2a-sdk agent, the gateway on real TLS,
operator listener); operators send signed commands (``OperatorClient``) or run
``baton inbox`` in process.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.handoffs import Terms, sealed_parts, terms_of
from keys.keyset import KeySet
from protocol.decision import DecisionBinding, DecisionBody, verify_decision_at
from protocol.directory import KeyDirectory
from protocol.errors import ResponseInvalid
from protocol.identity import gateway_id
from protocol.lifecycle import verify_events
from tests.gateway._harness import TRUST_DOMAIN
from tests.interop.a2a_peers import JSONRPC, fetch_card, send_text
from tests.interop.conftest import Fleet, start_fleet
from tests.interop.handoff_kit import OperatorClient, handoff_message

GATEWAY = str(gateway_id(TRUST_DOMAIN, "gw1"))
QUEUES = """
[[queues]]
name = "refunds"
escalate_from = ["support"]

[[operators]]
name = "alice"
queues = ["refunds"]
"""
A2A = {"a2a-version": "1.0"}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["amount"],
    "additionalProperties": False,
    "properties": {
        "amount": {"type": "integer", "minimum": 0, "maximum": 250},
        "note": {"type": "string", "maxLength": 40},
    },
}


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async with start_fleet(tmp_path, extra=QUEUES, operators=("alice",)) as running:
        yield running


async def _escalate(fleet: Fleet, key: str, schema: dict[str, Any]) -> Any:
    context_id = "ctx-" + key
    async with fleet.httpx_client("support") as http:
        card = await fetch_card(http, fleet.a2a_url)
        await send_text(http, card, "refund o-77 please", binding=JSONRPC, context_id=context_id)
        message = handoff_message(
            key, context_id, allowed=("respond", "reject"), response_schema=schema
        )
        return await http.post(
            f"{fleet.base}/a2a/inbox/refunds",
            json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                  "params": {"message": message}},
            headers=A2A,
        )  # fmt: skip


async def _lifecycle(fleet: Fleet, bundle_id: str) -> list[str]:
    gateway = KeySet.from_jwks(json.loads((fleet.folder.gateway / "jwks.json").read_bytes()))
    tokens = list(await fleet.stores.inbox.events(bundle_id))
    events, _ = verify_events(tokens, gateway, bundle_id=bundle_id)
    return [event.type for event in events]


def _respond(response: Any) -> DecisionBody:
    return DecisionBody(type="respond", commitment="agreed", response=response)


async def test_a_schema_with_an_unsupported_keyword_is_refused_at_escalation(
    fleet: Fleet,
) -> None:
    pattern = {"type": "object", "properties": {"iban": {"type": "string", "pattern": "^DE"}}}
    response = await _escalate(fleet, "k-pattern", pattern)
    assert response.status_code == 400, response.text
    [info] = response.json()["error"]["data"]
    assert info["reason"] == "INVALID_SCHEMA"
    assert (info["metadata"]["pointer"], info["metadata"]["keyword"]) == (
        "/properties/iban",
        "pattern",
    )
    assert list(await fleet.stores.inbox.list("refunds")) == []
    rejected = [e.reason for e in await fleet.audit_events() if e.outcome == "rejected"]
    assert rejected == ["invalid_schema"]


async def test_a_response_that_does_not_fit_is_refused_before_anything_is_recorded(
    fleet: Fleet,
) -> None:
    created = await _escalate(fleet, "k-fit", SCHEMA)
    assert created.status_code == 200, created.text
    bundle_id = created.json()["result"]["task"]["id"]
    record = await fleet.stores.inbox.get(bundle_id)
    assert record is not None
    assert terms_of(record).decision.response_schema == SCHEMA  # kept in clear beside the JWE

    alice = OperatorClient(
        fleet.folder, "alice", url=fleet.operator_url, queue="refunds", audience=GATEWAY
    )
    try:
        bundle = (await alice.ok("claim", bundle_id=bundle_id))["bundle"]
        assert bundle["response_schema"] == SCHEMA
        for response, pointer, keyword in [
            ({"amount": -5}, "/amount", "minimum"),
            ({"amount": 10, "tip": 1}, "/tip", "additionalProperties"),
            ({"note": "no amount"}, "", "required"),
            ("250", "", "type"),
        ]:
            answer = await alice.send(
                "decide", bundle_id=bundle_id, decision=alice.decision(bundle, _respond(response))
            )
            assert answer.status_code == 400, answer.text
            error = answer.json()["error"]
            assert error["code"] == "response_invalid"
            assert error["baton"] == {"pointer": pointer, "keyword": keyword}
            # Refused before the store moved: no decision, no lifecycle event.
            record = await fleet.stores.inbox.get(bundle_id)
            assert record is not None and record.status == "claimed" and record.decision is None
            assert await _lifecycle(fleet, bundle_id) == ["queued", "claimed"]
        refusals = [e.reason for e in await fleet.audit_events() if e.reason == "response_invalid"]
        assert len(refusals) == 4

        token = alice.decision(bundle, _respond({"amount": 250.0, "note": "half now"}))
        await alice.ok("decide", bundle_id=bundle_id, decision=token)
    finally:
        await alice.close()
    assert await _lifecycle(fleet, bundle_id) == ["queued", "claimed", "decided"]
    # The agent checks the same thing offline, from the signed request's schema.
    public = KeySet.from_jwks(
        json.loads((fleet.folder.operator("alice") / "public.jwks").read_bytes())
    )
    decided = await fleet.stores.inbox.get(bundle_id)
    assert decided is not None
    terms = terms_of(decided).decision
    verified = verify_decision_at(
        token,
        operators=KeyDirectory({"operator:alice": public}),
        binding=DecisionBinding(bundle_id, bundle["bundle_digest"], 1, 1),
        request=terms,
        now=time.time(),
    )
    assert verified.decision.response == {"amount": 250.0, "note": "half now"}
    tighter = type(terms)(terms.allowed_decisions, None, {"properties": {"amount": {"maximum": 1}}})
    with pytest.raises(ResponseInvalid) as info:
        verify_decision_at(
            token,
            operators=KeyDirectory({"operator:alice": public}),
            binding=DecisionBinding(bundle_id, bundle["bundle_digest"], 1, 1),
            request=tighter,
            now=time.time(),
        )
    assert (info.value.pointer, info.value.keyword) == ("/amount", "maximum")


async def test_records_stored_without_a_response_schema_read_as_none(fleet: Fleet) -> None:
    created = await _escalate(fleet, "k-old", SCHEMA)
    record = await fleet.stores.inbox.get(created.json()["result"]["task"]["id"])
    assert record is not None
    stored = dict(sealed_parts(record)["terms"])
    assert stored.pop("response_schema") == SCHEMA
    old = Terms.from_json(stored)  # what a record written before this change holds
    assert old.decision.response_schema is None
    assert old.decision.allowed_decisions == ("respond", "reject")
    assert old.to_json()["response_schema"] is None


async def test_baton_inbox_refuses_to_sign_a_response_that_does_not_fit(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    created = await _escalate(fleet, "k-cli", SCHEMA)
    bundle_id = created.json()["result"]["task"]["id"]

    async def baton(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        prefix = ("inbox", "--dir", str(fleet.folder.root), "--url", fleet.operator_url)
        args = [*prefix, "--operator", "alice", *argv]
        code = await asyncio.wait_for(asyncio.to_thread(main, args), timeout=30)
        out, err = capsys.readouterr()
        return code, out, err

    assert (await baton("claim", bundle_id))[0] == 0
    code, out, err = await baton(
        "decide", bundle_id, "respond", "--response", '{"amount": 9, "note": "' + "x" * 41 + '"}'
    )
    assert (code, out) == (1, "")
    assert err.startswith("baton: response_invalid: --response does not fit the response schema")
    assert '"/note"' in err and "maxLength" in err and "Traceback" not in err
    audited = [e.event for e in await fleet.audit_events() if e.event == "handoff.decided"]
    assert audited == [] and await _lifecycle(fleet, bundle_id) == ["queued", "claimed"]

    code, out, err = await baton("decide", bundle_id, "respond", "--response", '{"amount": 9}')
    assert code == 0, err
    assert await _lifecycle(fleet, bundle_id) == ["queued", "claimed", "decided"]
