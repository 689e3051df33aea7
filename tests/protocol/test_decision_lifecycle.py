"""protocol/decision.py and protocol/lifecycle.py: operator decisions and the signed event chain."""

from __future__ import annotations

from typing import Any

import pytest

from keys.jose import sign_compact
from keys.keyset import KeySet
from keys.material import PrivateKey
from protocol.canonical import canonical_digest, canonical_json, digest
from protocol.chain import ChainHead
from protocol.decision import (
    DECISION_TYP,
    DecisionBinding,
    DecisionBody,
    HandoffDecision,
    make_decision_at,
    sign_decision,
    verify_decision_at,
)
from protocol.directory import KeyDirectory
from protocol.errors import (
    BindingMismatch,
    ChainBreak,
    Conflict,
    IdentityMismatch,
    InvalidArtifact,
    NotYetValid,
    PolicyDenied,
    SeqViolation,
    StaleDecision,
    TokenExpired,
    UnknownKeyId,
    WrongType,
)
from protocol.handoff import HandoffRequest
from protocol.lifecycle import (
    EVENT_TYP,
    TRANSITIONS,
    LifecycleEvent,
    check_transition,
    sign_event,
    verify_events,
)
from tests.protocol._support import ALICE, ALPHA, BOB, CAROL, GATEWAY, NOW, NOW_MS, raises_exactly

BUNDLE_ID = "hb_01JABCDEFGHJKMNPQRS"
ARGS = {"amount": 900, "order": "A-77"}
EDITED = {"amount": 500, "order": "A-77"}
BINDING = DecisionBinding(
    bundle_id=BUNDLE_ID,
    bundle_digest=digest(b"the signed bundle payload"),
    bundle_version=1,
    fencing_token=3,
)
NONCE = "decision-nonce-00000001"


def _request(allowed: list[str] | None = None, **action: Any) -> HandoffRequest:
    return HandoffRequest.from_value(
        {
            "reason_code": "refund_over_limit",
            "reason_text": "over the limit",
            "trigger": "authorization",
            "requested_action": {
                "kind": "tool_call",
                "target": "payments/refund.create",
                "arguments": ARGS,
                "args_digest": canonical_digest(ARGS),
                **action,
            },
            "allowed_decisions": allowed or ["approve", "edit", "reject", "respond", "reroute"],
            "sla": {"resolve_within_s": 3600},
            "idempotency_key": "idem-0001",
        }
    )


REQUEST = _request()

BODIES: dict[str, dict[str, Any]] = {
    "approve": {"type": "approve", "commitment": "agreed"},
    "approve with digest": {
        "type": "approve",
        "commitment": "agreed",
        "args_digest": canonical_digest(ARGS),
    },
    "edit": {
        "type": "edit",
        "commitment": "agreed",
        "arguments": EDITED,
        "args_digest": canonical_digest(EDITED),
        "message": "partial refund",
    },
    "reject": {"type": "reject", "commitment": "refused", "message": "not eligible"},
    "respond": {"type": "respond", "commitment": "agreed", "response": {"text": "ask for ID"}},
    "reroute": {"type": "reroute", "commitment": "agreed", "reroute_queue": "payments-t3"},
}


@pytest.fixture(scope="module")
def operators(alice_sig: PrivateKey, bob_sig: PrivateKey) -> KeyDirectory:
    return KeyDirectory({ALICE: KeySet([alice_sig.public]), BOB: KeySet([bob_sig.public])})


def _decision(body: dict[str, Any], **changes: Any) -> HandoffDecision:
    decision = make_decision_at(
        BINDING, DecisionBody.from_value(body), operator=ALICE, now=NOW, nonce=NONCE
    )
    return decision.model_copy(update=changes) if changes else decision


def _verify(
    token: str,
    operators: KeyDirectory,
    *,
    binding: DecisionBinding = BINDING,
    request: HandoffRequest = REQUEST,
    now: float = NOW,
) -> HandoffDecision:
    return verify_decision_at(token, operators=operators, binding=binding, request=request, now=now)


def _signed_raw(claims: dict[str, Any], key: PrivateKey, typ: str = DECISION_TYP) -> str:
    return sign_compact(canonical_json(claims), key, typ=typ)


# --------------------------------------------------------------------------- decisions


@pytest.mark.parametrize("name", BODIES)
def test_each_decision_type_round_trips(
    name: str, operators: KeyDirectory, alice_sig: PrivateKey
) -> None:
    decision = _decision(BODIES[name])
    assert (decision.iat, decision.exp) == (NOW, NOW + 900)
    assert decision.operator == ALICE
    assert decision.to_json()["schema"] == "baton.handoff-decision/v1"
    verified = _verify(sign_decision(decision, alice_sig), operators)
    assert verified == decision
    assert verified.decision.type == BODIES[name]["type"]


def test_default_nonce_is_fresh() -> None:
    body = DecisionBody.from_value(BODIES["reject"])
    one = make_decision_at(BINDING, body, operator=ALICE, now=NOW)
    two = make_decision_at(BINDING, body, operator=ALICE, now=NOW)
    assert one.nonce != two.nonce


@pytest.mark.parametrize(
    "binding",
    [
        DecisionBinding(BUNDLE_ID, BINDING.bundle_digest, 2, 3),
        DecisionBinding(BUNDLE_ID, BINDING.bundle_digest, 1, 4),
        DecisionBinding(BUNDLE_ID, BINDING.bundle_digest, 1, 2),
    ],
    ids=["newer version", "newer fencing token", "older fencing token"],
)
def test_stale_decisions(
    binding: DecisionBinding, operators: KeyDirectory, alice_sig: PrivateKey
) -> None:
    token = sign_decision(_decision(BODIES["approve"]), alice_sig)
    with raises_exactly(StaleDecision) as info:
        _verify(token, operators, binding=binding)
    assert info.value.http_status == 409


@pytest.mark.parametrize(
    "binding",
    [
        DecisionBinding("hb_01JOTHERBUNDLE00000", BINDING.bundle_digest, 1, 3),
        DecisionBinding(BUNDLE_ID, digest(b"another payload"), 1, 3),
    ],
    ids=["other bundle", "other digest"],
)
def test_decision_about_another_bundle(
    binding: DecisionBinding, operators: KeyDirectory, alice_sig: PrivateKey
) -> None:
    token = sign_decision(_decision(BODIES["approve"]), alice_sig)
    with raises_exactly(BindingMismatch) as info:
        _verify(token, operators, binding=binding)
    assert info.value.http_status == 422


def test_operator_key_outside_the_directory(operators: KeyDirectory, rogue_key: PrivateKey) -> None:
    token = sign_decision(_decision(BODIES["approve"]), rogue_key)
    with raises_exactly(UnknownKeyId):
        _verify(token, operators)


def test_key_of_another_operator(operators: KeyDirectory, bob_sig: PrivateKey) -> None:
    """BOB signs a decision that names ALICE."""
    token = sign_decision(_decision(BODIES["approve"]), bob_sig)
    with raises_exactly(IdentityMismatch) as info:
        _verify(token, operators)
    assert info.value.http_status == 401


def test_operator_not_serving_the_queue(operators: KeyDirectory, bob_sig: PrivateKey) -> None:
    """A decision naming an operator absent from the directory, signed by a listed key."""
    token = sign_decision(_decision(BODIES["approve"], operator=CAROL), bob_sig)
    with raises_exactly(IdentityMismatch):
        _verify(token, operators)


def test_validity_window(operators: KeyDirectory, alice_sig: PrivateKey) -> None:
    decision = _decision(BODIES["approve"])
    token = sign_decision(decision, alice_sig)
    assert _verify(token, operators, now=NOW + 899.5) == decision
    with raises_exactly(TokenExpired):
        _verify(token, operators, now=NOW + 900)
    assert _verify(token, operators, now=NOW - 5) == decision
    with raises_exactly(NotYetValid):
        _verify(token, operators, now=NOW - 6)


def test_type_not_allowed(operators: KeyDirectory, alice_sig: PrivateKey) -> None:
    request = _request(allowed=["approve", "reject"])
    for name in ("respond", "reroute"):
        token = sign_decision(_decision(BODIES[name]), alice_sig)
        with raises_exactly(PolicyDenied) as info:
            _verify(token, operators, request=request)
        assert info.value.http_status == 403
    reject = _decision(BODIES["reject"])
    assert _verify(sign_decision(reject, alice_sig), operators, request=request) == reject


def test_approval_of_other_arguments(operators: KeyDirectory, alice_sig: PrivateKey) -> None:
    body = {**BODIES["approve"], "args_digest": canonical_digest({"amount": 9000})}
    token = sign_decision(_decision(body), alice_sig)
    with raises_exactly(BindingMismatch):
        _verify(token, operators)


def test_edit_must_change_the_arguments(operators: KeyDirectory, alice_sig: PrivateKey) -> None:
    body = {
        "type": "edit",
        "commitment": "agreed",
        "arguments": {"order": "A-77", "amount": 900},
        "args_digest": canonical_digest(ARGS),
    }
    token = sign_decision(_decision(body), alice_sig)
    with raises_exactly(BindingMismatch):
        _verify(token, operators)


def test_decision_with_another_type(operators: KeyDirectory, alice_sig: PrivateKey) -> None:
    decision = _decision(BODIES["approve"])
    for typ in (EVENT_TYP, "baton-handoff+jws", "JWT"):
        with raises_exactly(WrongType):
            _verify(sign_compact(decision.canonical(), alice_sig, typ=typ), operators)


@pytest.mark.parametrize(
    "change",
    [
        {"exp": NOW + 24 * 3600 + 1},
        {"exp": NOW},
        {"fencing_token": 0},
        {"bundle_version": 0},
        {"nonce": "short"},
        {"bundle_id": "bundle-1"},
        {"extra": True},
        {"fencing_token": "3"},
    ],
    ids=[
        "ttl over a day",
        "exp=iat",
        "fence 0",
        "version 0",
        "short nonce",
        "bad bundle id",
        "unknown member",
        "fence as string",
    ],
)
def test_signed_decision_must_be_valid(
    change: dict[str, Any], operators: KeyDirectory, alice_sig: PrivateKey
) -> None:
    claims = {**_decision(BODIES["approve"]).to_json(), **change}
    with raises_exactly(InvalidArtifact) as info:
        _verify(_signed_raw(claims, alice_sig), operators)
    assert info.value.http_status == 400


def test_an_agent_cannot_be_the_deciding_operator(
    operators: KeyDirectory, alice_sig: PrivateKey
) -> None:
    """H08: the operator claim must be an ``operator:`` identity."""
    claims = {**_decision(BODIES["approve"]).to_json(), "operator": ALPHA}
    with raises_exactly(InvalidArtifact):
        _verify(_signed_raw(claims, alice_sig), operators)


INVALID_BODIES = {
    "reject that agrees": {"type": "reject", "commitment": "agreed"},
    "approve that refuses": {"type": "approve", "commitment": "refused"},
    "edit without digest": {"type": "edit", "commitment": "agreed", "arguments": EDITED},
    "edit with the wrong digest": {
        "type": "edit",
        "commitment": "agreed",
        "arguments": EDITED,
        "args_digest": canonical_digest(ARGS),
    },
    "approve with arguments": {"type": "approve", "commitment": "agreed", "arguments": EDITED},
    "reroute without queue": {"type": "reroute", "commitment": "agreed"},
    "queue without reroute": {"type": "approve", "commitment": "agreed", "reroute_queue": "q"},
    "respond without response": {"type": "respond", "commitment": "agreed"},
    "unknown type": {"type": "take_over", "commitment": "agreed"},
}


@pytest.mark.parametrize("body", INVALID_BODIES.values(), ids=INVALID_BODIES.keys())
def test_invalid_decision_bodies(body: dict[str, Any]) -> None:
    with raises_exactly(InvalidArtifact):
        DecisionBody.from_value(body)


# --------------------------------------------------------------------------- lifecycle

_LEASE_UNTIL = NOW + 300


def _events(*steps: dict[str, Any], bundle_id: str = BUNDLE_ID) -> list[LifecycleEvent]:
    events: list[LifecycleEvent] = []
    head = ChainHead()
    for offset, step in enumerate(steps):
        event = LifecycleEvent.create(
            head, bundle_id=bundle_id, ts=NOW_MS + offset, version=1, **step
        )
        events.append(event)
        head = event.head
    return events


QUEUED = {"type": "queued", "actor": GATEWAY}
CLAIM_1 = {"type": "claimed", "actor": ALICE, "fencing_token": 1, "lease_until": _LEASE_UNTIL}
RELEASED = {"type": "released", "actor": ALICE, "fencing_token": 1, "reason": "shift ended"}
CLAIM_2 = {"type": "claimed", "actor": BOB, "fencing_token": 2, "lease_until": _LEASE_UNTIL}
DECIDED = {
    "type": "decided",
    "actor": BOB,
    "fencing_token": 2,
    "decision_digest": digest(b"decision jws"),
}
DELIVERED = {"type": "delivered", "actor": GATEWAY}
ACKED = {"type": "acknowledged", "actor": ALPHA, "outcome": "executed"}


def _sign_all(events: list[LifecycleEvent], key: PrivateKey) -> list[str]:
    return [sign_event(event, key) for event in events]


def test_a_legal_history_verifies(gateway_key: PrivateKey, gateway_keys: KeySet) -> None:
    events = _events(QUEUED, CLAIM_1, RELEASED, CLAIM_2, DECIDED, DELIVERED, ACKED)
    verified, head = verify_events(
        _sign_all(events, gateway_key), gateway_keys, bundle_id=BUNDLE_ID
    )
    assert verified == events
    assert head == events[-1].head
    assert [e.type for e in verified] == [
        "queued",
        "claimed",
        "released",
        "claimed",
        "decided",
        "delivered",
        "acknowledged",
    ]


@pytest.mark.parametrize(
    "steps",
    [
        (QUEUED,),
        (QUEUED, {"type": "expired", "actor": GATEWAY}, DELIVERED, {**ACKED, "outcome": "failed"}),
        (QUEUED, CLAIM_1, {"type": "cancelled", "actor": ALPHA}, DELIVERED),
        (QUEUED, CLAIM_1, {**CLAIM_2, "fencing_token": 5}, DECIDED | {"fencing_token": 5}),
        (QUEUED, CLAIM_1, {"type": "expired", "actor": GATEWAY}),
    ],
    ids=[
        "queued only",
        "expired and delivered",
        "cancelled",
        "lease lapsed, re-claimed",
        "expired while claimed",
    ],
)
def test_other_legal_histories(
    steps: tuple[dict[str, Any], ...], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    events = _events(*steps)
    verified, _ = verify_events(_sign_all(events, gateway_key), gateway_keys, bundle_id=BUNDLE_ID)
    assert verified == events


ILLEGAL_HISTORIES = {
    "decision by someone other than the holder": (QUEUED, CLAIM_2, DECIDED | {"actor": ALICE}),
    "decision under the previous lease": (QUEUED, CLAIM_1, CLAIM_2, DECIDED | {"fencing_token": 1}),
    "release without the fencing token": (QUEUED, CLAIM_1, {**RELEASED, "fencing_token": None}),
    "decided before claimed": (QUEUED, DECIDED),
    "not starting with queued": (CLAIM_1,),
    "queued twice": (QUEUED, QUEUED),
    "claim without fencing token": (QUEUED, {**CLAIM_1, "fencing_token": None}),
    "claim without lease": (QUEUED, {**CLAIM_1, "lease_until": None}),
    "same fencing token twice": (QUEUED, CLAIM_1, RELEASED, {**CLAIM_2, "fencing_token": 1}),
    "decreasing fencing token": (QUEUED, {**CLAIM_1, "fencing_token": 4}, CLAIM_2),
    "decided without digest": (QUEUED, CLAIM_1, {**DECIDED, "decision_digest": None}),
    "acknowledged without outcome": (
        QUEUED,
        CLAIM_1,
        DECIDED,
        DELIVERED,
        {**ACKED, "outcome": None},
    ),
    "acknowledged before delivered": (QUEUED, CLAIM_1, DECIDED, ACKED),
    "decided after release": (QUEUED, CLAIM_1, RELEASED, DECIDED),
    "decided twice": (QUEUED, CLAIM_1, DECIDED, DECIDED),
    "anything after acknowledged": (QUEUED, CLAIM_1, DECIDED, DELIVERED, ACKED, DELIVERED),
    "claimed after decided": (QUEUED, CLAIM_1, DECIDED, CLAIM_2),
}


@pytest.mark.parametrize("steps", ILLEGAL_HISTORIES.values(), ids=ILLEGAL_HISTORIES.keys())
def test_illegal_histories_are_refused(
    steps: tuple[dict[str, Any], ...], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    tokens = _sign_all(_events(*steps), gateway_key)
    with raises_exactly(Conflict) as info:
        verify_events(tokens, gateway_keys, bundle_id=BUNDLE_ID)
    assert info.value.http_status == 409


def _event(event_type: str) -> LifecycleEvent:
    fields: dict[str, Any] = {"type": event_type, "actor": GATEWAY}
    if event_type == "claimed":
        fields.update(fencing_token=1, lease_until=_LEASE_UNTIL)
    if event_type == "decided":
        fields.update(decision_digest=digest(b"d"))
    if event_type == "acknowledged":
        fields.update(outcome="executed")
    [event] = _events(fields)
    return event


@pytest.mark.parametrize("previous", list(TRANSITIONS), ids=str)
def test_transition_table(previous: str | None) -> None:
    """Every (state, event) pair: allowed exactly when the table says so."""
    for event_type in (
        TRANSITIONS["queued"] | TRANSITIONS["claimed"] | {"queued", "delivered", "acknowledged"}
    ):
        event = _event(event_type)
        if event_type in TRANSITIONS[previous]:
            check_transition(previous, event)
        else:
            with raises_exactly(Conflict):
                check_transition(previous, event)


def test_tampered_event_breaks_the_chain(gateway_key: PrivateKey, gateway_keys: KeySet) -> None:
    """An event re-signed by the gateway key with edited content but its old hash."""
    events = _events(QUEUED, CLAIM_1, DECIDED | {"actor": ALICE, "fencing_token": 1}, DELIVERED)
    events[2] = events[2].model_copy(update={"actor": BOB})
    with raises_exactly(ChainBreak):
        verify_events(_sign_all(events, gateway_key), gateway_keys, bundle_id=BUNDLE_ID)


def test_dropped_event_is_a_seq_violation(gateway_key: PrivateKey, gateway_keys: KeySet) -> None:
    events = _events(QUEUED, CLAIM_1, RELEASED, CLAIM_2)
    tokens = _sign_all(events, gateway_key)
    with raises_exactly(SeqViolation):
        verify_events([tokens[0], tokens[1], tokens[3]], gateway_keys, bundle_id=BUNDLE_ID)


def test_event_of_another_bundle(gateway_key: PrivateKey, gateway_keys: KeySet) -> None:
    other = _events(QUEUED, bundle_id="hb_01JOTHERBUNDLE00000")
    with raises_exactly(ChainBreak):
        verify_events(_sign_all(other, gateway_key), gateway_keys, bundle_id=BUNDLE_ID)


def test_event_signed_with_another_type(gateway_key: PrivateKey, gateway_keys: KeySet) -> None:
    events = _events(QUEUED, CLAIM_1)
    tokens = _sign_all(events, gateway_key)
    tokens[1] = sign_compact(events[1].canonical(), gateway_key, typ=DECISION_TYP)
    with raises_exactly(WrongType):
        verify_events(tokens, gateway_keys, bundle_id=BUNDLE_ID)


def test_event_signed_by_an_operator(alice_sig: PrivateKey, gateway_keys: KeySet) -> None:
    """Only the gateway writes the lifecycle; an operator key is not in its key set."""
    tokens = _sign_all(_events(QUEUED), alice_sig)
    with raises_exactly(UnknownKeyId):
        verify_events(tokens, gateway_keys, bundle_id=BUNDLE_ID)


def test_empty_history(gateway_keys: KeySet) -> None:
    events, head = verify_events([], gateway_keys, bundle_id=BUNDLE_ID)
    assert events == []
    assert head == ChainHead()


def test_invalid_event_payload(gateway_key: PrivateKey, gateway_keys: KeySet) -> None:
    [event] = _events(QUEUED)
    bad = {**event.to_json(), "type": "approved"}
    token = sign_compact(canonical_json(bad), gateway_key, typ=EVENT_TYP)
    with raises_exactly(InvalidArtifact):
        verify_events([token], gateway_keys, bundle_id=BUNDLE_ID)


def _timed(*steps: tuple[int, dict[str, Any]]) -> list[LifecycleEvent]:
    events: list[LifecycleEvent] = []
    head = ChainHead()
    for ts, step in steps:
        event = LifecycleEvent.create(head, bundle_id=BUNDLE_ID, ts=ts, version=1, **step)
        events.append(event)
        head = event.head
    return events


def test_decision_after_the_lease_expired_is_refused(
    gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    late = (_LEASE_UNTIL + 1) * 1000
    events = _timed((NOW_MS, QUEUED), (NOW_MS + 1, CLAIM_2), (late, DECIDED))
    with raises_exactly(Conflict):
        verify_events(_sign_all(events, gateway_key), gateway_keys, bundle_id=BUNDLE_ID)
    on_time = _timed((NOW_MS, QUEUED), (NOW_MS + 1, CLAIM_2), (_LEASE_UNTIL * 1000, DECIDED))
    assert verify_events(_sign_all(on_time, gateway_key), gateway_keys, bundle_id=BUNDLE_ID)


def test_timestamps_may_not_go_backwards(gateway_key: PrivateKey, gateway_keys: KeySet) -> None:
    events = _timed((NOW_MS, QUEUED), (NOW_MS - 1, CLAIM_1))
    with raises_exactly(Conflict):
        verify_events(_sign_all(events, gateway_key), gateway_keys, bundle_id=BUNDLE_ID)
