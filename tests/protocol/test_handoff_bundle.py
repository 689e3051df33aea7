"""protocol/handoff.py and protocol/bundle.py: requests, bundles, sealing, H01-H05, PII reveals.

Tampered bundles are re-signed with the real gateway key (``_resign``), so the
signature is valid and only the integrity checks can catch the change.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from keys import strictjson
from keys.jose import sign_compact
from keys.keyset import KeySet, PrivateKeySet
from keys.material import PrivateKey
from protocol.bundle import (
    BUNDLE_JWS_TYP,
    BuiltBundle,
    HandoffBundle,
    SealedBundle,
    agent_views,
    build_bundle,
    open_bundle,
    open_reveals,
    participants,
    seal_bundle,
    verify_bundle_jws,
)
from protocol.canonical import canonical_digest, canonical_json, digest
from protocol.chain import ChainHead
from protocol.errors import (
    BindingMismatch,
    ChainBreak,
    DigestInvalid,
    HeadMismatch,
    InvalidArtifact,
    InvalidEnvelope,
    MalformedInput,
    NotParticipant,
    SeqViolation,
    UnknownKeyId,
    WrongType,
)
from protocol.handoff import HandoffRequest, check_request_digests
from protocol.pii import Reveal, resolve, verify_reveal
from protocol.transcript import TranscriptEntry
from tests.protocol._support import (
    ALPHA,
    BETA,
    CONVERSATION,
    GATEWAY,
    MALLORY,
    NOW,
    NOW_MS,
    PAYMENTS,
    build_chain,
    counting_salts,
    entry_fields,
    raises_exactly,
)

BUNDLE_ID = "hb_01JABCDEFGHJKMNPQRS"
QUEUE = "payments-t2"
ARGS = {"amount": 900, "order": "A-77"}
REASON = "Refund 900 EUR for ada@example.com is over the 500 EUR limit"
TRACE_ERROR = "needs approval (ada@example.com)"
PLAIN_PII = ["/request/reason_text", "/request/failure/tool_trace/*/error_type"]


def request_doc(**changes: Any) -> dict[str, Any]:
    """A complete, valid handoff request as JSON, with ``changes`` applied."""
    doc: dict[str, Any] = {
        "schema": "baton.handoff-request/v1",
        "reason_code": "refund_over_limit",
        "reason_text": REASON,
        "trigger": "authorization",
        "failure": {
            "status": "blocked",
            "exit_reason": "policy_denied",
            "error_type": None,
            "retry_count": 1,
            "failed_step": "step_7",
            "tool_trace": [
                {"tool": "payments/lookup", "status": "ok", "seq": 1, "duration_ms": 4},
                {"tool": "payments/refund.create", "status": "held", "error_type": TRACE_ERROR},
            ],
        },
        "requested_action": {
            "kind": "tool_call",
            "target": "payments/refund.create",
            "arguments": ARGS,
            "args_digest": canonical_digest(ARGS),
        },
        "allowed_decisions": ["approve", "edit", "reject", "respond", "reroute"],
        "response_schema": {"type": "object", "properties": {"amount": {"type": "number"}}},
        "priority": 2,
        "sla": {"ack_within_s": 300, "resolve_within_s": 3600, "on_expiry": "reject"},
        "idempotency_key": "idem-0001",
        "pii_paths": PLAIN_PII,
    }
    doc.update(changes)
    return doc


# --------------------------------------------------------------------------- requests


def test_request_round_trip() -> None:
    request = HandoffRequest.from_value(request_doc())
    assert request.requested_action is not None
    assert request.requested_action.args_digest == canonical_digest(ARGS)
    assert HandoffRequest.parse(request.canonical()) == request
    check_request_digests(request)


def test_minimal_request_defaults() -> None:
    request = HandoffRequest.from_value(
        {
            "reason_code": "needs_answer",
            "reason_text": "",
            "trigger": "user_request",
            "allowed_decisions": ["respond"],
            "sla": {"resolve_within_s": 60},
            "idempotency_key": "k",
        }
    )
    assert request.priority == 3
    assert request.sla.on_expiry == "reject", "silence is never consent"
    assert request.to_json()["schema"] == "baton.handoff-request/v1"
    assert request.pii_paths == ()


def _without(doc: dict[str, Any], *path: str | int) -> dict[str, Any]:
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return doc


def _nested(doc: dict[str, Any], value: Any, *path: str | int) -> dict[str, Any]:
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


INVALID_REQUESTS = {
    "unknown member": lambda: request_doc(operator_approved=True),
    "unknown member in failure": lambda: _nested(request_doc(), 1, "failure", "extra"),
    "unknown member in sla": lambda: _nested(request_doc(), "x", "sla", "on_timeout"),
    "unknown member in action": lambda: _nested(request_doc(), 1, "requested_action", "x"),
    "unknown member in trace": lambda: _nested(request_doc(), 1, "failure", "tool_trace", 0, "x"),
    "duplicate decision": lambda: request_doc(allowed_decisions=["approve", "reject", "approve"]),
    "unknown decision": lambda: request_doc(allowed_decisions=["approve", "take_over"]),
    "no decisions": lambda: request_doc(allowed_decisions=[]),
    "edit without an action": lambda: request_doc(requested_action=None),
    "edit without arguments": lambda: request_doc(
        requested_action={"kind": "answer", "arguments": None}
    ),
    "tool_call without args_digest": lambda: request_doc(
        allowed_decisions=["approve"],
        requested_action={"kind": "tool_call", "target": "p/t", "arguments": ARGS},
    ),
    "skill_call without target": lambda: request_doc(
        requested_action={"kind": "skill_call", "args_digest": canonical_digest(ARGS)}
    ),
    "priority as a string": lambda: request_doc(priority="3"),
    "priority as a bool": lambda: request_doc(priority=True),
    "priority out of range": lambda: request_doc(priority=5),
    "retry_count as a string": lambda: _nested(request_doc(), "1", "failure", "retry_count"),
    "unknown trigger": lambda: request_doc(trigger="because"),
    "reason_code not a slug": lambda: request_doc(reason_code="Refund Over Limit"),
    "idempotency key with a space": lambda: request_doc(idempotency_key="idem 1"),
    "empty idempotency key": lambda: request_doc(idempotency_key=""),
    "long idempotency key": lambda: request_doc(idempotency_key="k" * 129),
    "pointer without a slash": lambda: request_doc(pii_paths=["request/reason_text"]),
    "pointer with a bad escape": lambda: request_doc(pii_paths=["/a/~2"]),
    "expiry approves": lambda: _nested(request_doc(), "approve", "sla", "on_expiry"),
    "resolve within 59 s": lambda: _nested(request_doc(), 59, "sla", "resolve_within_s"),
    "no sla": lambda: _without(request_doc(), "sla"),
    "other schema": lambda: request_doc(schema="baton.handoff-request/v2"),
    "args_digest not a digest": lambda: _nested(
        request_doc(), "sha256:ABC", "requested_action", "args_digest"
    ),
}


@pytest.mark.parametrize("make", INVALID_REQUESTS.values(), ids=INVALID_REQUESTS.keys())
def test_invalid_requests(make: Any) -> None:
    doc = make()
    with raises_exactly(InvalidArtifact) as info:
        HandoffRequest.from_value(doc)
    assert info.value.http_status == 400
    with raises_exactly(InvalidArtifact):
        HandoffRequest.parse(json.dumps(doc))


def test_request_numbers_are_strict_on_the_wire() -> None:
    """``3.0`` is refused as a priority when parsed; ``from_value`` sees JCS's ``3``."""
    text = json.dumps(request_doc()).replace('"priority": 2', '"priority": 2.0')
    assert '"priority": 2.0' in text
    with raises_exactly(InvalidArtifact):
        HandoffRequest.parse(text)
    assert HandoffRequest.from_value(request_doc(priority=2.0)).priority == 2


def test_request_with_duplicate_members_is_malformed() -> None:
    text = json.dumps(request_doc())[:-1] + ', "priority": 1}'
    with raises_exactly(MalformedInput):
        HandoffRequest.parse(text)


def test_check_request_digests() -> None:
    wrong = request_doc()
    wrong["requested_action"]["arguments"] = {"amount": 9000, "order": "A-77"}
    with raises_exactly(BindingMismatch) as info:
        check_request_digests(HandoffRequest.from_value(wrong))
    assert info.value.http_status == 422
    reordered = request_doc()
    reordered["requested_action"]["arguments"] = {"order": "A-77", "amount": 900.0}
    check_request_digests(HandoffRequest.from_value(reordered))  # JCS: same digest
    digest_only = request_doc()
    del digest_only["requested_action"]["arguments"]
    check_request_digests(HandoffRequest.from_value(digest_only))


# --------------------------------------------------------------------------- conversations

BODY0 = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {"customer": {"name": "Ada", "email": "ada@example.com"}, "amount": 900},
    }
).encode()
BODY1 = (
    b'{"jsonrpc":"2.0","id":7,"method":"tools/call",\n'
    b' "params":{"name":"lookup","arguments":{"order":"A-77"}}}'
)
BODY2 = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 7,
        "result": {
            "customers": [{"email": "x@example.com", "id": 1}, {"email": "y@example.com", "id": 2}]
        },
    }
).encode()
BODY3 = b"refund needs approval\n"
BODY4 = b'{"truncated": '
BODIES = {
    0: ("application/json", BODY0),
    1: ("application/json; charset=utf-8", BODY1),
    2: ("application/json", BODY2),
    3: ("text/plain", BODY3),
    4: ("application/json", BODY4),
}
FULL_PII = [
    *PLAIN_PII,
    "/bodies/*/json/params/customer/email",
    "/bodies/2/json/result/customers/*/email",
]


def _with_body(fields: dict[str, Any], body: bytes | None) -> dict[str, Any]:
    if body is not None:
        fields.update(body_digest=digest(body), body_size=len(body))
    return fields


def conversation(with_bodies: bool) -> list[TranscriptEntry]:
    """alpha -> beta -> payments -> beta -> alpha, then alpha escalates."""

    def body(seq: int) -> bytes | None:
        return BODIES[seq][1] if with_bodies and seq in BODIES else None

    return build_chain(
        CONVERSATION,
        [
            _with_body(entry_fields(ALPHA, BETA, rpc_id=1, signer="kid-alpha"), body(0)),
            _with_body(
                entry_fields(BETA, PAYMENTS, protocol="mcp", method="tools/call", rpc_id=7),
                body(1),
            ),
            _with_body(
                entry_fields(
                    PAYMENTS, BETA, kind="response", protocol="mcp", method=None, rpc_id=7
                ),
                body(2),
            ),
            _with_body(
                entry_fields(BETA, ALPHA, kind="response", method=None, rpc_id=1, status=200),
                body(3),
            ),
            _with_body(entry_fields(ALPHA, BETA, kind="notification", method="x"), body(4)),
            entry_fields(ALPHA, GATEWAY, kind="handoff", method="SendMessage", verified=False),
        ],
    )


def _build(
    transcript: list[TranscriptEntry],
    request: HandoffRequest,
    bodies: dict[int, tuple[str, bytes]] | None = None,
    **changes: Any,
) -> BuiltBundle:
    kwargs: dict[str, Any] = {
        "bundle_id": BUNDLE_ID,
        "request": request,
        "queue": QUEUE,
        "conversation": CONVERSATION,
        "origin": ALPHA,
        "gateway": GATEWAY,
        "transcript": transcript,
        "bodies": bodies or {},
        "now": NOW,
        "token_bytes": counting_salts(),
    }
    kwargs.update(changes)
    return build_bundle(**kwargs)


@pytest.fixture(scope="module")
def plain_transcript() -> list[TranscriptEntry]:
    return conversation(with_bodies=False)


@pytest.fixture(scope="module")
def request_obj() -> HandoffRequest:
    return HandoffRequest.from_value(request_doc())


@pytest.fixture(scope="module")
def plain(plain_transcript: list[TranscriptEntry], request_obj: HandoffRequest) -> BuiltBundle:
    """A bundle of a real chain without bodies; PII in the request (one ``*`` path)."""
    return _build(plain_transcript, request_obj)


@pytest.fixture(scope="module")
def sealed(
    plain: BuiltBundle,
    gateway_key: PrivateKey,
    alice_enc: PrivateKeySet,
    bob_enc: PrivateKeySet,
) -> SealedBundle:
    return seal_bundle(
        plain, gateway_key=gateway_key, recipients=[alice_enc.active.public, bob_enc.active.public]
    )


# --------------------------------------------------------------------------- building


def test_bundle_contents(plain: BuiltBundle, plain_transcript: list[TranscriptEntry]) -> None:
    bundle = plain.bundle
    assert bundle.bundle_id == BUNDLE_ID
    assert (bundle.created_at, bundle.ack_by, bundle.resolve_by) == (NOW, NOW + 300, NOW + 3600)
    assert (bundle.queue, bundle.origin, bundle.gateway) == (QUEUE, ALPHA, GATEWAY)
    assert bundle.transcript == tuple(plain_transcript)
    assert bundle.head == plain_transcript[-1].head
    assert bundle.integrity.transcript_seq == 5
    assert bundle.integrity.canonicalization == "RFC8785"
    document = bundle.to_json()
    assert bundle.integrity.content_digest == canonical_digest(
        {k: v for k, v in document.items() if k != "integrity"}
    )


def test_agent_views_are_each_participants_last_entry(
    plain: BuiltBundle, plain_transcript: list[TranscriptEntry]
) -> None:
    views = {view.agent: (view.saw_through_seq, view.head) for view in plain.bundle.agent_views}
    t = plain_transcript
    assert views == {
        ALPHA: (5, t[5].hash),
        BETA: (4, t[4].hash),
        PAYMENTS: (2, t[2].hash),
        GATEWAY: (5, t[5].hash),
    }
    assert [v.agent for v in plain.bundle.agent_views] == sorted(views)
    assert agent_views(t) == plain.bundle.agent_views
    assert participants(t) == frozenset(views)


def test_pii_is_masked_with_tokens_and_commitments(plain: BuiltBundle) -> None:
    bundle = plain.bundle
    assert [(f.path, f.token) for f in bundle.masked] == [
        ("/request/reason_text", "<PII_1>"),
        ("/request/failure/tool_trace/1/error_type", "<PII_2>"),
    ]
    assert bundle.request.reason_text == "<PII_1>"
    assert bundle.request.failure is not None
    assert bundle.request.failure.tool_trace[1].error_type == "<PII_2>"
    assert b"ada@example.com" not in bundle.canonical()
    assert [(r.path, r.value) for r in plain.reveals.items] == [
        ("/request/reason_text", REASON),
        ("/request/failure/tool_trace/1/error_type", TRACE_ERROR),
    ]
    assert plain.reveals.bundle_id == BUNDLE_ID


def test_wildcard_skips_members_present_as_null(plain: BuiltBundle) -> None:
    """``*`` runs over the model's JSON, where an omitted optional member is
    present as null: tool_trace[0].error_type (never sent) stays null, with no
    token pretending a value was hidden."""
    assert plain.bundle.request.failure is not None
    assert plain.bundle.request.failure.tool_trace[0].error_type is None


def test_building_is_deterministic(
    plain_transcript: list[TranscriptEntry], request_obj: HandoffRequest, plain: BuiltBundle
) -> None:
    again = _build(plain_transcript, request_obj)
    assert again.bundle.canonical() == plain.bundle.canonical()
    other_salts = _build(plain_transcript, request_obj, token_bytes=counting_salts(1000))
    assert [f.commitment for f in other_salts.bundle.masked] != [
        f.commitment for f in plain.bundle.masked
    ]


def test_origin_must_take_part(
    plain_transcript: list[TranscriptEntry], request_obj: HandoffRequest
) -> None:
    """H01: an agent that never sent or received an entry cannot escalate it."""
    with raises_exactly(NotParticipant) as info:
        _build(plain_transcript, request_obj, origin=MALLORY)
    assert info.value.http_status == 403
    assert info.value.code == "not_participant"


def test_empty_conversation_has_no_participants(request_obj: HandoffRequest) -> None:
    with raises_exactly(NotParticipant):
        _build([], request_obj)


def test_build_refuses_a_broken_transcript(
    plain_transcript: list[TranscriptEntry], request_obj: HandoffRequest
) -> None:
    t = plain_transcript
    with raises_exactly(SeqViolation):
        _build([t[0], t[2], t[1], *t[3:]], request_obj)
    with raises_exactly(ChainBreak):
        _build(t, request_obj, conversation="ctx-other")


def test_build_refuses_bodies_that_do_not_belong(
    plain_transcript: list[TranscriptEntry], request_obj: HandoffRequest
) -> None:
    with raises_exactly(BindingMismatch):
        _build(plain_transcript, request_obj, bodies={9: ("text/plain", b"x")})
    with raises_exactly(DigestInvalid):
        _build(plain_transcript, request_obj, bodies={0: ("text/plain", b"x")})


def test_a_pii_path_that_does_not_resolve_is_refused(
    plain_transcript: list[TranscriptEntry],
) -> None:
    request = HandoffRequest.from_value(request_doc(pii_paths=["/request/no_such_member"]))
    with raises_exactly(InvalidArtifact):
        _build(plain_transcript, request)
    nothing = HandoffRequest.from_value(request_doc(pii_paths=["/request/*/no_such_member"]))
    assert _build(plain_transcript, nothing).bundle.masked == ()


# --------------------------------------------------------------------------- sealing


def test_two_operators_open_the_same_bundle(
    *,
    sealed: SealedBundle,
    plain: BuiltBundle,
    alice_enc: PrivateKeySet,
    bob_enc: PrivateKeySet,
    gateway_key: PrivateKey,
    gateway_keys: KeySet,
) -> None:
    payload = plain.bundle.canonical()
    assert sealed.bundle_id == BUNDLE_ID
    assert sealed.bundle_digest == digest(payload)
    for keys in (alice_enc, bob_enc):
        opened = open_bundle(sealed.jwe, keys, gateway_keys)
        assert opened.bundle == plain.bundle
        assert opened.bundle_digest == sealed.bundle_digest
        assert opened.signer_kid == gateway_key.kid
        assert verify_bundle_jws(opened.jws, gateway_keys).bundle == plain.bundle
    assert b"ada@example.com" not in json.dumps(sealed.jwe).encode()


def test_an_operator_outside_the_queue_cannot_open(
    sealed: SealedBundle, carol_enc: PrivateKeySet, gateway_keys: KeySet
) -> None:
    with raises_exactly(InvalidEnvelope):
        open_bundle(sealed.jwe, carol_enc, gateway_keys)
    assert sealed.reveals_jwe is not None
    with raises_exactly(InvalidEnvelope):
        open_reveals(sealed.reveals_jwe, carol_enc, BUNDLE_ID)


def test_bundle_signed_by_an_unknown_gateway_key(
    sealed: SealedBundle, alice_enc: PrivateKeySet, rogue_key: PrivateKey
) -> None:
    with raises_exactly(UnknownKeyId):
        open_bundle(sealed.jwe, alice_enc, KeySet([rogue_key.public]))


def test_bundle_and_reveal_envelopes_are_not_interchangeable(
    sealed: SealedBundle, alice_enc: PrivateKeySet, gateway_keys: KeySet
) -> None:
    assert sealed.reveals_jwe is not None
    with raises_exactly(InvalidEnvelope):
        open_bundle(sealed.reveals_jwe, alice_enc, gateway_keys)
    with raises_exactly(InvalidEnvelope):
        open_reveals(sealed.jwe, alice_enc, BUNDLE_ID)


def test_no_pii_means_no_reveal_envelope(
    plain_transcript: list[TranscriptEntry], gateway_key: PrivateKey, alice_enc: PrivateKeySet
) -> None:
    request = HandoffRequest.from_value(request_doc(pii_paths=[]))
    built = _build(plain_transcript, request)
    assert built.reveals.items == ()
    sealed = seal_bundle(built, gateway_key=gateway_key, recipients=[alice_enc.active.public])
    assert sealed.reveals_jwe is None


# --------------------------------------------------------------------------- PII reveals


def test_reveals_match_the_signed_commitments(
    sealed: SealedBundle,
    alice_enc: PrivateKeySet,
    bob_enc: PrivateKeySet,
    gateway_keys: KeySet,
) -> None:
    """The signature covers the masked view; each original checks against its commitment."""
    assert sealed.reveals_jwe is not None
    for keys in (alice_enc, bob_enc):
        opened = open_bundle(sealed.jwe, keys, gateway_keys)
        reveals = open_reveals(sealed.reveals_jwe, keys, BUNDLE_ID)
        by_path = {reveal.path: reveal for reveal in reveals.items}
        document = opened.bundle.to_json()
        for field in opened.bundle.masked:
            assert resolve(document, field.path) == [(field.path, field.token)]
            value = verify_reveal(field, by_path[field.path])
            assert value in (REASON, TRACE_ERROR)
        assert len(opened.bundle.masked) == len(reveals.items) == 2


def test_a_forged_reveal_is_refused(
    sealed: SealedBundle, alice_enc: PrivateKeySet, gateway_keys: KeySet
) -> None:
    assert sealed.reveals_jwe is not None
    opened = open_bundle(sealed.jwe, alice_enc, gateway_keys)
    real = open_reveals(sealed.reveals_jwe, alice_enc, BUNDLE_ID).items[0]
    field = opened.bundle.masked[0]
    assert verify_reveal(field, real) == REASON
    for forged in (
        Reveal(path=real.path, salt=real.salt, value="Refund 9 EUR, all fine"),
        Reveal(path=real.path, salt=real.salt, value=None),
        Reveal(path=real.path, salt="AAAAAAAAAAAAAAAAAAAAAA", value=REASON),
        Reveal(path=opened.bundle.masked[1].path, salt=real.salt, value=REASON),
        Reveal(path=real.path, salt="not base64url!", value=REASON),
    ):
        with raises_exactly(DigestInvalid) as info:
            verify_reveal(field, forged)
        assert info.value.http_status == 422


def test_reveals_are_bound_to_their_bundle(sealed: SealedBundle, alice_enc: PrivateKeySet) -> None:
    assert sealed.reveals_jwe is not None
    with raises_exactly(BindingMismatch):
        open_reveals(sealed.reveals_jwe, alice_enc, "hb_0000000000000000other")


def test_revealing_restores_the_original_request(
    sealed: SealedBundle, alice_enc: PrivateKeySet, gateway_keys: KeySet
) -> None:
    assert sealed.reveals_jwe is not None
    opened = open_bundle(sealed.jwe, alice_enc, gateway_keys)
    reveals = open_reveals(sealed.reveals_jwe, alice_enc, BUNDLE_ID)
    document = opened.bundle.to_json()
    for field, reveal in zip(opened.bundle.masked, reveals.items, strict=True):
        _set(document, field.path, verify_reveal(field, reveal))
    assert document["request"] == HandoffRequest.from_value(request_doc()).to_json()


def _set(document: Any, pointer: str, value: Any) -> None:
    *parents, last = [s.replace("~1", "/").replace("~0", "~") for s in pointer[1:].split("/")]
    node = document
    for segment in parents:
        node = node[int(segment)] if isinstance(node, list) else node[segment]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


# --------------------------------------------------------------------------- tampering


def _resign(
    document: dict[str, Any],
    key: PrivateKey,
    *,
    recompute: bool = True,
    typ: str = BUNDLE_JWS_TYP,
) -> str:
    """Sign ``document`` as the gateway would, after recomputing the content digest."""
    if recompute:
        document["integrity"]["content_digest"] = canonical_digest(
            {k: v for k, v in document.items() if k != "integrity"}
        )
    return sign_compact(canonical_json(document), key, typ=typ)


@pytest.fixture
def doc(plain: BuiltBundle) -> dict[str, Any]:
    return copy.deepcopy(plain.bundle.to_json())


def test_resigned_untouched_bundle_verifies(
    doc: dict[str, Any], plain: BuiltBundle, gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    """Control for every test below: the helper itself produces a valid bundle."""
    opened = verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)
    assert opened.bundle == plain.bundle
    assert opened.bundle_digest == digest(plain.bundle.canonical())


def test_extra_transcript_entry(
    doc: dict[str, Any],
    plain_transcript: list[TranscriptEntry],
    gateway_key: PrivateKey,
    gateway_keys: KeySet,
) -> None:
    """H02: an entry that is not in the hash chain, with the integrity head moved to it."""
    last = plain_transcript[-1]
    [extra] = build_chain(
        CONVERSATION,
        [entry_fields(BETA, ALPHA, method="approved by operator")],
        start=ChainHead(last.seq, digest(b"somewhere else")),
        ts0=NOW_MS + 50,
    )
    doc["transcript"].append(extra.to_json())
    doc["integrity"]["transcript_seq"] = extra.seq
    doc["integrity"]["transcript_head"] = extra.hash
    with raises_exactly(ChainBreak) as info:
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)
    assert info.value.http_status == 422


def test_edited_transcript_entry(
    doc: dict[str, Any], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    """H02: an entry's content changed, its hash kept."""
    doc["transcript"][1]["method"] = "tools/delete_all"
    with raises_exactly(ChainBreak):
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)


def test_dropped_last_entry(
    doc: dict[str, Any], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    """H03."""
    doc["transcript"].pop()
    with raises_exactly(HeadMismatch) as info:
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)
    assert info.value.code == "head_mismatch"


def test_reordered_entries(
    doc: dict[str, Any], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    """H04."""
    transcript = doc["transcript"]
    transcript[1], transcript[2] = transcript[2], transcript[1]
    with raises_exactly(SeqViolation):
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)


def test_transcript_of_another_conversation(
    doc: dict[str, Any], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    """H05: the bundle claims another conversation than its entries belong to."""
    doc["conversation"] = "ctx-other"
    with raises_exactly(ChainBreak):
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)


def test_agent_view_moved(
    doc: dict[str, Any], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    """PAYMENTS claimed to have seen everything; its head still names entry 2."""
    view = next(v for v in doc["agent_views"] if v["agent"] == PAYMENTS)
    view["saw_through_seq"] = 5
    with raises_exactly(BindingMismatch):
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)


def test_agent_view_off_the_chain(
    doc: dict[str, Any], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    view = doc["agent_views"][0]
    view["saw_through_seq"] = 17
    with raises_exactly(BindingMismatch):
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)


def test_masked_field_not_showing_its_token(
    doc: dict[str, Any], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    doc["request"]["reason_text"] = REASON
    with raises_exactly(DigestInvalid):
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)


def test_masked_field_with_another_token(
    doc: dict[str, Any], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    doc["request"]["reason_text"] = "<PII_2>"
    with raises_exactly(DigestInvalid):
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)


def test_content_digest_mismatch(
    doc: dict[str, Any], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    doc["queue"] = "payments-t3"
    with raises_exactly(DigestInvalid) as info:
        verify_bundle_jws(_resign(doc, gateway_key, recompute=False), gateway_keys)
    assert info.value.code == "digest_invalid"


def test_signed_with_another_type(
    doc: dict[str, Any], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    """The type is inside the signature (CVE-2022-35929): a decision-typed JWS is not a bundle."""
    with raises_exactly(WrongType):
        verify_bundle_jws(_resign(doc, gateway_key, typ="baton-decision+jws"), gateway_keys)
    with raises_exactly(WrongType):
        verify_bundle_jws(_resign(doc, gateway_key, typ="baton-handoff+jwe"), gateway_keys)


def test_signed_by_another_key(
    doc: dict[str, Any], rogue_key: PrivateKey, gateway_keys: KeySet
) -> None:
    with raises_exactly(UnknownKeyId):
        verify_bundle_jws(_resign(doc, rogue_key), gateway_keys)


def test_payload_must_be_canonical(
    doc: dict[str, Any], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    token = sign_compact(json.dumps(doc, indent=1).encode(), gateway_key, typ=BUNDLE_JWS_TYP)
    with raises_exactly(InvalidArtifact):
        verify_bundle_jws(token, gateway_keys)


def test_unknown_member_is_refused(
    doc: dict[str, Any], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    doc["operator_approved"] = True
    with raises_exactly(InvalidArtifact):
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)


# --------------------------------------------------------------------------- bodies


@pytest.fixture(scope="module")
def full_transcript() -> list[TranscriptEntry]:
    return conversation(with_bodies=True)


@pytest.fixture(scope="module")
def full(full_transcript: list[TranscriptEntry]) -> BuiltBundle:
    """JSON and non-JSON bodies, PII in bodies through ``*`` paths."""
    request = HandoffRequest.from_value(request_doc(pii_paths=FULL_PII))
    return _build(full_transcript, request, BODIES)


@pytest.mark.parametrize(
    ("media_type", "body"),
    [("application/json", b'{"a": 1}'), ("text/plain", b"hello"), ("application/json", b"{")],
    ids=["json", "text", "invalid json"],
)
def test_build_bundle_with_one_body(media_type: str, body: bytes) -> None:
    """Regression: the content digest is computed over the normalised model JSON
    (body records with their null members), exactly what verification sees."""
    transcript = build_chain(CONVERSATION, [_with_body(entry_fields(ALPHA, BETA), body)])
    request = HandoffRequest.from_value(request_doc(pii_paths=[]))
    built = _build(transcript, request, {0: (media_type, body)})
    [recorded] = built.bundle.bodies
    assert (recorded.raw is None) == (body == b'{"a": 1}')


def test_bodies_are_recorded_as_json_or_exact_bytes(full: BuiltBundle) -> None:
    bodies = full.bundle.bodies
    assert [b.seq for b in bodies] == [0, 1, 2, 3, 4]
    assert [b.media_type for b in bodies] == [m for m, _ in BODIES.values()]
    assert bodies[1].raw is None
    assert bodies[1].json_digest == canonical_digest(strictjson.loads(BODY1))
    assert bodies[1].json_ == {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "lookup", "arguments": {"order": "A-77"}},
    }
    for index, original in ((3, BODY3), (4, BODY4)):
        raw = bodies[index].raw
        assert raw is not None and bodies[index].json_digest is None
        assert base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)) == original


def test_pii_in_bodies_is_masked_through_wildcards(full: BuiltBundle) -> None:
    assert [(f.path, f.token) for f in full.bundle.masked][2:] == [
        ("/bodies/0/json/params/customer/email", "<PII_3>"),
        ("/bodies/2/json/result/customers/0/email", "<PII_4>"),
        ("/bodies/2/json/result/customers/1/email", "<PII_5>"),
    ]
    assert full.bundle.bodies[0].json_ is not None
    assert full.bundle.bodies[0].json_["params"]["customer"] == {"name": "Ada", "email": "<PII_3>"}
    payload = full.bundle.canonical()
    for secret in (b"ada@example.com", b"x@example.com", b"y@example.com"):
        assert secret not in payload


def test_fully_revealed_json_bodies_match_their_digests(
    full: BuiltBundle, gateway_key: PrivateKey, alice_enc: PrivateKeySet, gateway_keys: KeySet
) -> None:
    sealed = seal_bundle(full, gateway_key=gateway_key, recipients=[alice_enc.active.public])
    opened = open_bundle(sealed.jwe, alice_enc, gateway_keys)
    assert sealed.reveals_jwe is not None
    reveals = open_reveals(sealed.reveals_jwe, alice_enc, BUNDLE_ID)
    document = opened.bundle.to_json()
    for field, reveal in zip(opened.bundle.masked, reveals.items, strict=True):
        _set(document, field.path, verify_reveal(field, reveal))
    for body in document["bodies"]:
        if body["json_digest"] is not None:
            assert canonical_digest(body["json"]) == body["json_digest"]
    assert document["bodies"][0]["json"] == strictjson.loads(BODY0)


def test_changed_json_body(
    full: BuiltBundle, gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    doc = copy.deepcopy(full.bundle.to_json())
    doc["bodies"][1]["json"]["params"]["arguments"]["order"] = "A-78"
    with raises_exactly(DigestInvalid):
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)


def test_changed_raw_body(full: BuiltBundle, gateway_key: PrivateKey, gateway_keys: KeySet) -> None:
    doc = copy.deepcopy(full.bundle.to_json())
    doc["bodies"][3]["raw"] = base64.urlsafe_b64encode(b"refund approved\n").decode().rstrip("=")
    with raises_exactly(DigestInvalid):
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)


def test_body_moved_to_another_entry(
    full: BuiltBundle, gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    doc = copy.deepcopy(full.bundle.to_json())
    doc["bodies"][3]["seq"] = 5  # the text body, now claimed for the handoff entry
    with raises_exactly(DigestInvalid):
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)
    doc["bodies"][3]["seq"] = 42
    with raises_exactly(BindingMismatch):
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)


@pytest.mark.parametrize(
    "body",
    [b'{"amount": 12345678901234567}', b'{"amount": 1e16}', b'{"ts": 1.7e18, "ok": true}'],
    ids=["integer beyond 2**53", "1e16", "1.7e18"],
)
def test_json_that_jcs_cannot_represent_is_kept_as_bytes(body: bytes) -> None:
    """(Fails today only because of the content-digest bug above.)"""
    transcript = build_chain(CONVERSATION, [_with_body(entry_fields(ALPHA, BETA), body)])
    request = HandoffRequest.from_value(request_doc(pii_paths=[]))
    built = _build(transcript, request, {0: ("application/json", body)})
    [recorded] = built.bundle.bodies
    assert recorded.json_digest is None
    assert recorded.raw is not None
    assert base64.urlsafe_b64decode(recorded.raw + "=" * (-len(recorded.raw) % 4)) == body


def test_bundle_model_is_strict() -> None:
    assert HandoffBundle.model_config.get("extra") == "forbid"
    assert HandoffBundle.model_config.get("strict") is True


# --------------------------------------------------------------------------- review fixes


def test_overlapping_pii_paths_are_refused_up_front(
    plain_transcript: list[TranscriptEntry],
) -> None:
    """Masking an ancestor would hide the other path's token: a 400, not a 422 later."""
    request = HandoffRequest.from_value(
        request_doc(pii_paths=["/request/failure/tool_trace/1/error_type", "/request/failure"])
    )
    with raises_exactly(InvalidArtifact):
        _build(plain_transcript, request)


def test_agent_views_must_be_those_of_the_transcript(
    doc: dict[str, Any], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    """A consistent-looking view of a non-participant, or a view moved to an
    earlier entry, is caught by re-deriving the views from the chain."""
    outsider = {**doc["agent_views"][0], "agent": "spiffe://baton.local/agent/nobody"}
    with_outsider = {**doc, "agent_views": [*doc["agent_views"], outsider]}
    with raises_exactly(BindingMismatch):
        verify_bundle_jws(_resign(copy.deepcopy(with_outsider), gateway_key), gateway_keys)
    moved = copy.deepcopy(doc)
    first = moved["transcript"][0]
    moved["agent_views"][0] |= {"saw_through_seq": first["seq"], "head": first["hash"]}
    with raises_exactly(BindingMismatch):
        verify_bundle_jws(_resign(moved, gateway_key), gateway_keys)


def test_masking_a_body_member_other_than_json_keeps_the_digest_check(
    full: BuiltBundle, gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    doc = copy.deepcopy(full.bundle.to_json())
    doc["masked"].append({**doc["masked"][0], "path": "/bodies/1/media_type"})
    doc["bodies"][1]["media_type"] = doc["masked"][-1]["token"]
    doc["bodies"][1]["json"]["params"]["arguments"]["order"] = "A-78"
    with raises_exactly(DigestInvalid):
        verify_bundle_jws(_resign(doc, gateway_key), gateway_keys)
