"""gateway/verify.py and ``baton verify``: handoff artifacts checked offline.

One real handoff is built once per module: a recorded conversation with JSON
bodies and PII, a bundle signed by the gateway and sealed to two operators, a
gateway-signed lifecycle (queued -> claimed -> decided -> delivered ->
acknowledged) and a decision signed by the deciding operator. The tamper
tests then change one byte at a time, at hundreds of positions of each
artifact, and check the exact reason ``verify_artifact`` (and, for a sample,
the ``baton verify`` command) gives:

* *raw* changes to the export file: a byte of the bundle (JWS or JWE), of a
  lifecycle event or of the decision as stored;
* *re-signed* changes: a byte of a transcript entry inside the bundle payload,
  of a lifecycle event's payload or of the decision's payload, signed again
  with the real key, so only the chain and binding checks can catch them.

The expected reason is derived independently of the verifier: from where the
byte sits (JOSE header, payload or signature segment; which JWE member) and
from what the changed bytes parse to with the same strict parser.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli import main
from gateway.verify import (
    EXPORT_TYPE,
    HandoffExport,
    VerificationReport,
    build_export,
    decision_digest,
    load_verification_keys,
    verify_artifact,
)
from keys import strictjson
from keys.b64 import b64url_decode, b64url_encode
from keys.errors import KeysError
from keys.files import save_jwks, save_private_jwks
from keys.jose import sign_compact
from keys.keyset import KeySet, PrivateKeySet
from keys.material import PrivateKey
from protocol.bundle import BUNDLE_JWS_TYP, SealedBundle, build_bundle, open_bundle, seal_bundle
from protocol.canonical import canonical_digest, canonical_json, digest
from protocol.chain import EMPTY, ChainHead
from protocol.decision import (
    DECISION_TYP,
    DecisionBinding,
    DecisionBody,
    make_decision_at,
    sign_decision,
)
from protocol.directory import KeyDirectory
from protocol.errors import BatonError
from protocol.handoff import HandoffRequest
from protocol.lifecycle import EVENT_TYP, LifecycleEvent, sign_event
from protocol.transcript import TranscriptEntry
from tests.protocol._support import (
    ALICE,
    ALPHA,
    BETA,
    BOB,
    CAROL,
    DETERMINISTIC,
    GATEWAY,
    NOW,
    NOW_MS,
    PAYMENTS,
    build_chain,
    counting_salts,
    entry_fields,
    json_values,
)

BUNDLE_ID = "hb_01JVERIFYEXPORT0001"
OTHER_ID = "hb_01JVERIFYEXPORT0002"
QUEUE = "payments-t2"
CONVERSATION = "a2a:ctx-verify-1"
OTHER_CONVERSATION = "a2a:ctx-verify-2"
ARGS = {"amount": 900, "order": "A-77", "currency": "EUR"}
NONCE = "decision-nonce-verify-01"
#: A month later: an export verifies long after its decision expired.
LATER = NOW + 30 * 86400


def _body(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _request_body(i: int) -> bytes:
    return _body(
        {
            "jsonrpc": "2.0",
            "id": i,
            "method": "SendMessage",
            "params": {
                "message": {
                    "role": "ROLE_USER",
                    "messageId": f"m-{i}",
                    "contextId": "ctx-verify-1",
                    "parts": [{"text": f"Refund order A-77 for ada@example.com, step {i}"}],
                },
                "customer": {"name": "Ada", "email": "ada@example.com"},
            },
        }
    )


def _tool_body(i: int) -> bytes:
    return _body(
        {
            "jsonrpc": "2.0",
            "id": i,
            "method": "tools/call",
            "params": {"name": "refund.create", "arguments": ARGS},
        }
    )


def _result_body(i: int) -> bytes:
    return _body(
        {
            "jsonrpc": "2.0",
            "id": i,
            "result": {
                "content": [{"type": "text", "text": "held: needs approval over 500 EUR"}],
                "isError": False,
            },
        }
    )


def _with_body(fields: dict[str, Any], body: bytes) -> dict[str, Any]:
    return {**fields, "body_digest": digest(body), "body_size": len(body)}


def _conversation(conversation: str) -> tuple[list[TranscriptEntry], dict[int, tuple[str, bytes]]]:
    """alpha -> beta -> payments (held) -> beta -> alpha, twice, then the handoff."""
    messages = []
    bodies: dict[int, tuple[str, bytes]] = {}
    for round_ in range(2):
        base = round_ * 4
        steps = [
            (entry_fields(ALPHA, BETA, rpc_id=base, signer="kid-alpha"), _request_body(base)),
            (
                entry_fields(BETA, PAYMENTS, protocol="mcp", method="tools/call", rpc_id=base + 1),
                _tool_body(base + 1),
            ),
            (
                entry_fields(
                    PAYMENTS, BETA, kind="response", protocol="mcp", method=None, rpc_id=base + 1
                ),
                _result_body(base + 1),
            ),
            (
                entry_fields(BETA, ALPHA, kind="response", method=None, rpc_id=base, status=200),
                _result_body(base),
            ),
        ]
        for offset, (fields, body) in enumerate(steps):
            messages.append(_with_body(fields, body))
            bodies[base + offset] = ("application/json", body)
    messages.append(entry_fields(ALPHA, GATEWAY, kind="handoff", verified=False))
    return build_chain(conversation, messages), bodies


def _request() -> HandoffRequest:
    return HandoffRequest.from_value(
        {
            "reason_code": "refund_over_limit",
            "reason_text": "Refund 900 EUR for ada@example.com is over the 500 EUR limit",
            "trigger": "authorization",
            "requested_action": {
                "kind": "tool_call",
                "target": "payments/refund.create",
                "arguments": ARGS,
                "args_digest": canonical_digest(ARGS),
            },
            "allowed_decisions": ["approve", "edit", "reject"],
            "sla": {"ack_within_s": 300, "resolve_within_s": 3600},
            "idempotency_key": "idem-verify-1",
            "pii_paths": ["/request/reason_text", "/bodies/*/json/params/customer/email"],
        }
    )


# --------------------------------------------------------------------------- the handoff


@dataclass(frozen=True)
class Keys:
    gateway: PrivateKey
    alice_sig: PrivateKey
    bob_sig: PrivateKey
    carol_sig: PrivateKey
    alice_enc: PrivateKeySet
    bob_enc: PrivateKeySet
    carol_enc: PrivateKeySet

    @property
    def gateway_keys(self) -> KeySet:
        return KeySet([self.gateway.public])

    @property
    def both(self) -> PrivateKeySet:
        """One set holding both operators' decryption keys (an auditor's)."""
        return PrivateKeySet([self.alice_enc.active, self.bob_enc.active])

    def directory(self, *, with_bob_enc: bool = True) -> KeyDirectory:
        bob = [self.bob_sig.public, *([self.bob_enc.active.public] if with_bob_enc else [])]
        return KeyDirectory(
            {
                ALICE: KeySet([self.alice_sig.public, self.alice_enc.active.public]),
                BOB: KeySet(bob),
                CAROL: KeySet([self.carol_sig.public, self.carol_enc.active.public]),
            }
        )


@dataclass(frozen=True)
class Handoff:
    keys: Keys
    payload: bytes
    entries: tuple[TranscriptEntry, ...]
    sealed: SealedBundle
    jws: str
    events: tuple[LifecycleEvent, ...]
    event_tokens: tuple[str, ...]
    decision: str

    def export(self, *, encrypted: bool = True, **changes: Any) -> bytes:
        fields: dict[str, Any] = {
            "bundle": self.sealed.jwe if encrypted else self.jws,
            "events": self.event_tokens,
            "decision": self.decision,
            "queue": QUEUE,
            "conversation": CONVERSATION,
        }
        fields.update(changes)
        return build_export(**fields)


QUEUE_OPERATORS = {QUEUE: frozenset({ALICE, BOB}), "other-queue": frozenset({CAROL})}


def _lifecycle(
    decision_token: str, *, bundle_id: str = BUNDLE_ID, actor: str = ALICE
) -> list[LifecycleEvent]:
    steps: list[dict[str, Any]] = [
        {"ts": NOW_MS + 100, "type": "queued", "actor": GATEWAY},
        {"ts": NOW_MS + 1_000, "type": "claimed", "actor": actor, "fencing_token": 1,
         "lease_until": NOW + 900},
        {"ts": NOW_MS + 2_000, "type": "decided", "actor": actor, "fencing_token": 1,
         "decision_digest": decision_digest(decision_token)},
        {"ts": NOW_MS + 3_000, "type": "delivered", "actor": GATEWAY},
        {"ts": NOW_MS + 4_000, "type": "acknowledged", "actor": ALPHA, "outcome": "executed"},
    ]  # fmt: skip
    events = []
    head = EMPTY
    for step in steps:
        event = LifecycleEvent.create(head, bundle_id=bundle_id, version=1, **step)
        events.append(event)
        head = event.head
    return events


def _decision(
    sealed: SealedBundle,
    key: PrivateKey,
    *,
    operator: str = ALICE,
    fencing_token: int = 1,
    body: dict[str, Any] | None = None,
    now: float = NOW + 1,
    ttl_s: int = 900,
) -> str:
    binding = DecisionBinding(sealed.bundle_id, sealed.bundle_digest, 1, fencing_token)
    decision = make_decision_at(
        binding,
        DecisionBody.from_value(body or {"type": "approve", "commitment": "agreed"}),
        operator=operator,
        now=now,
        nonce=NONCE,
        ttl_s=ttl_s,
    )
    return sign_decision(decision, key)


def _handoff(
    keys: Keys, *, bundle_id: str = BUNDLE_ID, conversation: str = CONVERSATION
) -> Handoff:
    entries, bodies = _conversation(conversation)
    built = build_bundle(
        bundle_id=bundle_id,
        request=_request(),
        queue=QUEUE,
        conversation=conversation,
        origin=ALPHA,
        gateway=GATEWAY,
        transcript=entries,
        bodies=bodies,
        now=NOW,
        token_bytes=counting_salts(),
    )
    sealed = seal_bundle(
        built,
        gateway_key=keys.gateway,
        recipients=[keys.alice_enc.active.public, keys.bob_enc.active.public],
    )
    jws = open_bundle(sealed.jwe, keys.alice_enc, keys.gateway_keys).jws
    decision = _decision(sealed, keys.alice_sig)
    events = _lifecycle(decision, bundle_id=bundle_id)
    return Handoff(
        keys=keys,
        payload=built.bundle.canonical(),
        entries=tuple(built.bundle.transcript),
        sealed=sealed,
        jws=jws,
        events=tuple(events),
        event_tokens=tuple(sign_event(e, keys.gateway) for e in events),
        decision=decision,
    )


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        gateway=PrivateKey.generate("Ed25519"),
        alice_sig=PrivateKey.generate("ES256"),
        bob_sig=PrivateKey.generate("ES256"),
        carol_sig=PrivateKey.generate("ES256"),
        alice_enc=PrivateKeySet.generate("ECDH-ES+A256KW"),
        bob_enc=PrivateKeySet.generate("ECDH-ES+A256KW"),
        carol_enc=PrivateKeySet.generate("ECDH-ES+A256KW"),
    )


@pytest.fixture(scope="module")
def handoff(keys: Keys) -> Handoff:
    return _handoff(keys)


def _verify(
    handoff: Handoff,
    data: bytes,
    *,
    private: PrivateKeySet | Literal["alice", "both"] | None = "alice",
    operators: KeyDirectory | KeySet | Literal["directory"] | None = "directory",
    now: float = LATER,
    expect_queue: str | None = None,
    expect_conversation: str | None = None,
) -> VerificationReport:
    """``verify_artifact`` as an operator of the queue runs it (by default with
    ALICE's decryption key and the full operator directory)."""
    keys = handoff.keys
    if private == "alice":
        private = keys.alice_enc
    elif private == "both":
        private = keys.both
    if operators == "directory":
        operators = keys.directory()
    return verify_artifact(
        data,
        gateway_keys=keys.gateway_keys,
        operator_keys=operators,
        operator_private=private,
        now=now,
        expect_queue=expect_queue,
        expect_conversation=expect_conversation,
        queue_operators=QUEUE_OPERATORS,
    )


def _code(handoff: Handoff, data: bytes, **kwargs: Any) -> str | None:
    """The error code ``verify_artifact`` raises, or None if it verifies."""
    try:
        _verify(handoff, data, **kwargs)
    except BatonError as exc:
        return exc.code
    return None


# --------------------------------------------------------------------------- what verifies


def test_export_verifies_with_one_operator_key(handoff: Handoff, keys: Keys) -> None:
    report = _verify(handoff, handoff.export())
    assert report.kind == "export"
    assert report.bundle_id == BUNDLE_ID
    assert report.content_checked and report.encrypted
    assert (report.queue, report.conversation) == (QUEUE, CONVERSATION)
    assert report.bundle_digest == handoff.sealed.bundle_digest == digest(handoff.payload)
    assert report.bundle_version == 1
    assert report.gateway_kid == keys.gateway.kid
    assert report.transcript_entries == len(handoff.entries) == 9
    assert report.transcript_head == handoff.entries[-1].hash
    assert report.recipients == (keys.alice_enc.active.kid, keys.bob_enc.active.kid)
    assert report.opened_with == (keys.alice_enc.active.kid,)
    assert report.events == ("queued", "claimed", "decided", "delivered", "acknowledged")
    assert report.decision is not None
    assert (report.decision.type, report.decision.operator) == ("approve", ALICE)
    assert report.decision.signer_kid == keys.alice_sig.kid
    assert (report.decision.fencing_token, report.decision.nonce) == (1, NONCE)
    assert report.decision.bundle_digest == handoff.sealed.bundle_digest
    [unopened] = report.unchecked
    assert "1 recipient entry no given key opens" in unopened
    text = "\n".join(report.lines())
    assert text.startswith(f"{BUNDLE_ID}: ok (handoff export, bundle version 1)")
    assert "queued -> claimed -> decided -> delivered -> acknowledged" in text
    assert f"approve by {ALICE} (key {keys.alice_sig.kid})" in text


def test_an_auditor_with_every_key_leaves_nothing_unchecked(handoff: Handoff, keys: Keys) -> None:
    report = _verify(handoff, handoff.export(), private="both")
    assert report.opened_with == report.recipients
    assert report.unchecked == ()


def test_signed_bundle_export_needs_no_private_key(handoff: Handoff) -> None:
    report = _verify(handoff, handoff.export(encrypted=False), private=None)
    assert report.content_checked and not report.encrypted
    assert report.bundle_digest == handoff.sealed.bundle_digest
    assert report.unchecked == ()


def test_without_an_operator_key_the_content_is_not_checked(handoff: Handoff) -> None:
    report = _verify(handoff, handoff.export(), private=None)
    assert not report.content_checked
    assert report.bundle_id == BUNDLE_ID  # from the gateway-signed lifecycle
    assert (report.queue, report.conversation) == (QUEUE, CONVERSATION)  # as stated
    assert report.bundle_digest is None and report.transcript_entries is None
    assert report.decision is not None and report.decision.signer_kid is not None
    assert any("bundle content" in item for item in report.unchecked)
    assert any("belong to this ciphertext" in item for item in report.unchecked)
    assert any(line.startswith("  content    not checked") for line in report.lines())


def test_without_operator_keys_the_gateway_vouches_for_the_decision(handoff: Handoff) -> None:
    report = _verify(handoff, handoff.export(), operators=None)
    assert report.content_checked
    assert report.decision is not None and report.decision.signer_kid is None
    assert any("operator's signature" in item for item in report.unchecked)
    assert any("known operator" in item for item in report.unchecked)


def test_operator_keys_without_identities(handoff: Handoff, keys: Keys) -> None:
    report = _verify(handoff, handoff.export(), operators=KeySet([keys.alice_sig.public]))
    assert report.decision is not None and report.decision.signer_kid == keys.alice_sig.kid
    assert any("which operator owns" in item for item in report.unchecked)


def test_export_format(handoff: Handoff) -> None:
    data = handoff.export()
    assert data.endswith(b"}\n") and data.count(b"\n") == 1
    export = HandoffExport.parse(data[:-1], max_bytes=len(data))
    assert export.type == EXPORT_TYPE
    assert export.canonical() == data[:-1]
    assert export.bundle == handoff.sealed.jwe
    assert export.events == handoff.event_tokens
    assert _verify(handoff, data[:-1]).bundle_id == BUNDLE_ID  # the newline is optional


def test_bare_bundle_forms(handoff: Handoff) -> None:
    jws = _verify(handoff, handoff.jws.encode(), private=None)
    assert (jws.kind, jws.content_checked, jws.events) == ("bundle", True, ())
    jwe = _verify(handoff, json.dumps(handoff.sealed.jwe).encode())
    assert (jwe.kind, jwe.encrypted, jwe.bundle_digest) == ("bundle", True, jws.bundle_digest)
    assert _code(handoff, json.dumps(handoff.sealed.jwe).encode(), private=None) == (
        "not_recipient"
    )


def test_bare_decision(handoff: Handoff, keys: Keys) -> None:
    token = handoff.decision.encode() + b"\n"
    report = _verify(handoff, token, private=None, now=NOW + 60)
    assert (report.kind, report.bundle_id, report.content_checked) == ("decision", BUNDLE_ID, False)
    assert report.decision is not None and report.decision.signer_kid == keys.alice_sig.kid
    assert report.decision.bundle_digest == handoff.sealed.bundle_digest
    assert any("verify the export" in item for item in report.unchecked)
    assert _code(handoff, token, now=NOW + 901) == "expired"
    assert _code(handoff, token, now=NOW - 60) == "not_yet_valid"
    assert _code(handoff, token, now=NOW + 60, operators=None) == "unknown_kid"
    assert _code(handoff, token, now=NOW + 60, expect_queue=QUEUE) == "binding_mismatch"
    forged = _decision(handoff.sealed, keys.bob_sig).encode()  # BOB's key, ALICE's name
    assert _code(handoff, forged, now=NOW + 60) == "identity_mismatch"


def test_load_verification_keys(tmp_path: Path, keys: Keys) -> None:
    home = _home(tmp_path, keys)
    loaded = load_verification_keys(home)
    assert [k.kid for k in loaded.gateway] == [keys.gateway.kid]
    assert loaded.operators is not None
    assert loaded.operators.owner_of(keys.alice_sig.kid) == ALICE
    assert loaded.operators.owner_of(keys.bob_enc.active.kid) == BOB
    assert CAROL not in loaded.operators  # configured, but no key folder
    assert dict(loaded.queue_operators) == QUEUE_OPERATORS


# --------------------------------------------------------------------------- moved, spliced


@pytest.mark.parametrize("encrypted", [True, False], ids=["jwe", "jws"])
@pytest.mark.parametrize(
    "expect",
    [
        {"expect_queue": "payments-t3"},
        {"expect_conversation": OTHER_CONVERSATION},
        {"expect_queue": QUEUE, "expect_conversation": OTHER_CONVERSATION},
    ],
    ids=["queue", "conversation", "both"],
)
def test_bundle_expected_elsewhere(
    handoff: Handoff, encrypted: bool, expect: dict[str, str]
) -> None:
    data = handoff.export(encrypted=encrypted)
    assert _code(handoff, data, **expect) == "binding_mismatch"
    assert _code(handoff, data, private=None, **expect) == "binding_mismatch"
    matching = {key: QUEUE if key == "expect_queue" else CONVERSATION for key in expect}
    assert _code(handoff, data, **matching) is None


@pytest.mark.parametrize("encrypted", [True, False], ids=["jwe", "jws"])
@pytest.mark.parametrize(
    "stated",
    [{"queue": "payments-t3"}, {"conversation": OTHER_CONVERSATION}],
    ids=["queue", "conversation"],
)
def test_export_with_edited_placement(
    handoff: Handoff, encrypted: bool, stated: dict[str, str]
) -> None:
    """The export re-labelled for another queue or conversation (its canonical form intact)."""
    data = handoff.export(encrypted=encrypted, **stated)
    assert _code(handoff, data) == "binding_mismatch"


def test_edited_placement_without_a_key(handoff: Handoff) -> None:
    """Without a key the stated placement is all there is: an edited conversation
    passes and the report says it was not checked; an edited queue whose
    operators did not make the decision is still caught."""
    report = _verify(handoff, handoff.export(conversation=OTHER_CONVERSATION), private=None)
    assert report.conversation == OTHER_CONVERSATION and not report.content_checked
    assert any("queue, conversation" in item for item in report.unchecked)
    assert _code(handoff, handoff.export(queue="other-queue"), private=None) == "policy_denied"


def test_bundle_of_another_conversation_with_this_lifecycle(handoff: Handoff, keys: Keys) -> None:
    """A bundle moved into this handoff's export: its lifecycle names another bundle."""
    other = _handoff(keys, bundle_id=OTHER_ID, conversation=OTHER_CONVERSATION)
    for encrypted in (True, False):
        bundle = other.sealed.jwe if encrypted else other.jws
        data = handoff.export(bundle=bundle, conversation=OTHER_CONVERSATION)
        assert _code(handoff, data) == "binding_mismatch"
    spliced = handoff.export(events=(*handoff.event_tokens[:2], *other.event_tokens[2:]))
    assert _code(handoff, spliced) == "chain_break"
    other_decision = handoff.export(decision=other.decision)
    assert _code(handoff, other_decision) == "binding_mismatch"


# --------------------------------------------------------------------------- decisions


def _with_decision(handoff: Handoff, token: str, *, actor: str = ALICE) -> bytes:
    """An export whose lifecycle records ``token`` (as a gateway would have)."""
    keys = handoff.keys
    events = _lifecycle(token, actor=actor)
    return handoff.export(events=[sign_event(e, keys.gateway) for e in events], decision=token)


def test_decision_checks(handoff: Handoff, keys: Keys) -> None:
    sealed = handoff.sealed
    cases = {
        "binding_mismatch": [
            _decision(replace(sealed, bundle_digest=digest(b"other")), keys.alice_sig),
            _decision(
                sealed,
                keys.alice_sig,
                body={"type": "approve", "commitment": "agreed", "args_digest": digest(b"x")},
            ),
        ],
        "stale_decision": [_decision(sealed, keys.alice_sig, fencing_token=2)],
        "expired": [_decision(sealed, keys.alice_sig, now=NOW - 120, ttl_s=60)],
        "not_yet_valid": [_decision(sealed, keys.alice_sig, now=NOW + 60)],
        "policy_denied": [
            _decision(
                sealed,
                keys.alice_sig,
                body={"type": "respond", "commitment": "agreed", "response": {"t": "x"}},
            )
        ],
        "identity_mismatch": [_decision(sealed, keys.bob_sig)],
        "unknown_kid": [_decision(sealed, PrivateKey.generate("ES256"))],
    }
    for code, tokens in cases.items():
        for token in tokens:
            assert _code(handoff, _with_decision(handoff, token)) == code, code
    carol = _decision(sealed, keys.carol_sig, operator=CAROL)
    assert _code(handoff, _with_decision(handoff, carol, actor=CAROL)) == "policy_denied"
    bob = _decision(sealed, keys.bob_sig, operator=BOB)  # BOB decides on ALICE's lease
    assert _code(handoff, _with_decision(handoff, bob)) == "binding_mismatch"
    assert _code(handoff, _with_decision(handoff, bob, actor=BOB)) is None


def test_decision_and_lifecycle_must_agree(handoff: Handoff, keys: Keys) -> None:
    assert _code(handoff, handoff.export(decision=None)) == "binding_mismatch"
    undecided = handoff.export(events=handoff.event_tokens[:2], decision=None)
    assert _verify(handoff, undecided).decision is None
    unrecorded = handoff.export(events=handoff.event_tokens[:2])
    assert _code(handoff, unrecorded) == "binding_mismatch"


def test_recipients(handoff: Handoff, keys: Keys) -> None:
    data = handoff.export()
    assert _code(handoff, data, private=keys.carol_enc) == "not_recipient"
    unknown_bob = keys.directory(with_bob_enc=False)
    assert _code(handoff, data, operators=unknown_bob) == "binding_mismatch"


def test_malformed_inputs(handoff: Handoff) -> None:
    export = handoff.export()
    pretty = json.dumps(json.loads(export), indent=1).encode()
    cases = {
        pretty: "invalid_artifact",
        export[:-2] + b',"extra":1}': "invalid_artifact",
        export.replace(EXPORT_TYPE.encode(), b"baton-handoff-exporT"): "invalid_artifact",
        b'{"hello":"world"}': "invalid_artifact",
        b"{": "malformed_input",
        b"": "malformed_input",
        b"\xff\xfe": "malformed_input",
        b"a.b": "malformed_jws",
        handoff.event_tokens[0].encode(): "wrong_typ",
        export + b"\n": "invalid_artifact",  # JSON allows it; the canonical form does not
    }
    for data, code in cases.items():
        assert _code(handoff, data) == code, data[:40]


# --------------------------------------------------------------------------- byte oracles

#: Replacement bytes: base64url letters (still decodable), JSON specials,
#: control and non-ASCII bytes.
REPLACEMENTS = b'AbQz09-_x=./ "\\\x00\x1f\x7f\x80\xff{}'
HEADER_CODES = frozenset(
    {
        "malformed_jws",
        "unsupported_header",
        "unsupported_crit",
        "untrusted_key",
        "compression_not_allowed",
        "alg_not_allowed",
        "unknown_kid",
        "alg_mismatch",
        "wrong_typ",
        "bad_signature",
    }
)


def _rng(seed: int) -> random.Random:
    """Reproducible positions and replacement bytes (not secrets)."""
    return random.Random(seed)  # noqa: S311


def _positions(start: int, end: int, count: int, rng: random.Random) -> list[int]:
    """Every position of short spans; otherwise both ends and a random sample."""
    span = range(start, end)
    if len(span) <= count:
        return list(span)
    if count < 40:
        return sorted(rng.sample(span, count))
    middle = rng.sample(span[16:-16], count - 32)
    return [*span[:16], *sorted(middle), *span[-16:]]


def _mutate(data: bytes, position: int, rng: random.Random) -> bytes:
    choices = [b for b in REPLACEMENTS if b != data[position]]
    return _replace(data, position, bytes([rng.choice(choices)]))


def _replace(data: bytes, position: int, byte: bytes) -> bytes:
    return data[:position] + byte + data[position + 1 :]


def _file_code(data: bytes) -> str | None:
    """The export file's own rules: strict JSON, canonical form, the schema."""
    body = data[:-1] if data.endswith(b"\n") else data
    try:
        value = strictjson.loads_object(body, max_bytes=len(body), max_depth=8)
    except KeysError as exc:
        return exc.code
    if not isinstance(value.get("type"), str) or canonical_json(value) != body:
        return "invalid_artifact"
    try:
        HandoffExport.from_value(value)
    except BatonError as exc:
        return exc.code
    return None


def _segment_code(segment: str, *, signature_bytes: int | None = None) -> str:
    """A changed payload or signature segment: undecodable, else the signature fails."""
    try:
        raw = b64url_decode(segment)
    except KeysError:
        return "malformed_jws"
    if signature_bytes is not None and len(raw) > 128:
        return "malformed_jws"
    return "bad_signature"


def _jws_codes(original: str, changed: object) -> frozenset[str]:
    """Which reasons a changed compact JWS may fail with, by the segment that changed."""
    if not isinstance(changed, str) or not changed.isascii() or changed.count(".") != 2:
        return frozenset({"malformed_jws"})
    old, new = original.split("."), changed.split(".")
    if old[0] != new[0]:
        return HEADER_CODES
    if old[1] != new[1]:
        return frozenset({_segment_code(new[1])})
    return frozenset({_segment_code(new[2], signature_bytes=64)})


def _changed_paths(old: Any, new: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(old, dict) and isinstance(new, dict) and set(old) == set(new):
        for key in old:
            yield from _changed_paths(old[key], new[key], (*path, key))
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            yield from _changed_paths(a, b, (*path, index))
    elif old != new:
        yield path


def _jwe_codes(original: dict[str, Any], changed: Any, *, opened: set[int]) -> frozenset[str]:
    """A changed sealed bundle, verified with operator keys that open the
    recipient entries ``opened`` and a directory that knows every recipient."""
    [path] = list(_changed_paths(original, changed))
    if path[:1] == ("recipients",) and len(path) >= 2 and isinstance(path[1], int):
        if path[2:] == ("header", "kid"):
            return frozenset({"binding_mismatch"})  # a recipient no operator owns
        if path[2:] == ("encrypted_key",) and path[1] not in opened:
            try:  # unauthenticated (RFC 7516 s7.2.1): only its shape is checkable
                if len(b64url_decode(changed["recipients"][path[1]]["encrypted_key"])) == 40:
                    return frozenset({"ok"})
            except KeysError:
                pass
    return frozenset({"invalid_envelope"})


@dataclass
class Tally:
    """How many positions were tried and which reasons came out."""

    tried: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    def add(self, code: str | None) -> None:
        self.tried += 1
        self.codes[code or "ok"] = self.codes.get(code or "ok", 0) + 1


def _raw_sweep(
    handoff: Handoff,
    data: bytes,
    span: tuple[int, int],
    artifact_codes: Callable[[Any], frozenset[str]],
    artifact_of: Callable[[dict[str, Any]], Any],
    *,
    count: int,
    seed: int,
    **verify: Any,
) -> Tally:
    rng = _rng(seed)
    tally = Tally()
    for position in _positions(*span, count, rng):
        mutated = _mutate(data, position, rng)
        file_code = _file_code(mutated)
        if file_code is not None:
            expected = frozenset({file_code})
        else:
            value = strictjson.loads_object(mutated.rstrip(b"\n"), max_bytes=len(mutated))
            expected = artifact_codes(artifact_of(value))
        code = _code(handoff, mutated, **verify)
        assert (code or "ok") in expected, (position, mutated[position : position + 1], code)
        tally.add(code)
    return tally


def _span_of(data: bytes, needle: bytes) -> tuple[int, int]:
    start = data.index(needle)
    assert data.find(needle, start + 1) == -1
    return start, start + len(needle)


# --------------------------------------------------------------------------- raw byte changes


def test_any_changed_byte_of_a_signed_bundle(handoff: Handoff) -> None:
    data = handoff.export(encrypted=False)
    start, end = _span_of(data, handoff.jws.encode())
    header_end = start + handoff.jws.index(".")
    signature_start = start + handoff.jws.rindex(".")
    tally = Tally()
    for span, count in (
        ((0, header_end + 2), 200),  # the export around the JWS, and its header
        ((header_end, signature_start), 250),  # the gateway-signed payload
        ((signature_start - 2, end + 2), 100),  # the signature, and what follows
    ):
        result = _raw_sweep(
            handoff,
            data,
            span,
            lambda jws: _jws_codes(handoff.jws, jws),
            lambda value: value["bundle"],
            count=count,
            seed=span[0],
            private=None,
        )
        tally.tried += result.tried
    assert tally.tried >= 400


def _jwe_spans(data: bytes, jwe: dict[str, Any]) -> list[tuple[tuple[int, int], int]]:
    start, end = _span_of(data, canonical_json(jwe))
    spans = [((start - 10, start + 200), 200)]
    for entry in jwe["recipients"]:
        spans.append((_span_of(data, canonical_json(entry)), 200))
    for member in ("iv", "tag", "protected"):
        spans.append((_span_of(data, json.dumps(jwe[member]).encode()), 40))
    ciphertext = _span_of(data, json.dumps(jwe["ciphertext"]).encode())
    spans.append((ciphertext, 120))
    spans.append(((end - 30, end + 10), 40))
    return spans


def test_any_changed_byte_of_a_sealed_bundle(handoff: Handoff, keys: Keys) -> None:
    """With every recipient's key (an auditor's view), every byte is authenticated."""
    data = handoff.export()
    jwe = handoff.sealed.jwe
    tried = 0
    for span, count in _jwe_spans(data, jwe):
        tally = _raw_sweep(
            handoff,
            data,
            span,
            lambda changed: _jwe_codes(jwe, changed, opened={0, 1}),
            lambda value: value["bundle"],
            count=count,
            seed=span[0],
            private="both",
        )
        tried += tally.tried
        assert "ok" not in tally.codes
    assert tried >= 400


def test_changed_bytes_of_a_sealed_bundle_with_one_key(handoff: Handoff) -> None:
    """With one operator's key, the other operator's wrapped key is unauthenticated
    (RFC 7516 s7.2.1): a change there that keeps its shape passes, and the report
    says that entry was checked for shape only. Everything else fails."""
    data = handoff.export()
    jwe = handoff.sealed.jwe
    bob_entry = _span_of(data, canonical_json(jwe["recipients"][1]))
    tally = _raw_sweep(
        handoff,
        data,
        bob_entry,
        lambda changed: _jwe_codes(jwe, changed, opened={0}),
        lambda value: value["bundle"],
        count=200,
        seed=7,
    )
    assert tally.codes.get("ok", 0) > 0
    assert len(tally.codes) > 2


# --------------------------------------------------------------------------- lifecycle, decision


def _event_at(index: int, export: dict[str, Any]) -> Any:
    return export["events"][index]


def test_any_changed_byte_of_a_lifecycle_event(handoff: Handoff) -> None:
    data = handoff.export(encrypted=False)
    tried = 0
    for index, token in enumerate(handoff.event_tokens):
        span = _span_of(data, token.encode())
        tally = _raw_sweep(
            handoff,
            data,
            (span[0] - 1, span[1] + 1),
            partial(_jws_codes, token),
            partial(_event_at, index),
            count=90,
            seed=index,
            private=None,
        )
        tried += tally.tried
    assert tried >= 400


@pytest.mark.parametrize(("encrypted", "count"), [(False, 10_000), (True, 200)], ids=["jws", "jwe"])
def test_any_changed_byte_of_the_decision(handoff: Handoff, encrypted: bool, count: int) -> None:
    """Every byte of the stored decision (and its quotes); a sample when sealed."""
    data = handoff.export(encrypted=encrypted)
    span = _span_of(data, handoff.decision.encode())
    tally = _raw_sweep(
        handoff,
        data,
        (span[0] - 1, span[1] + 1),
        lambda changed: _jws_codes(handoff.decision, changed),
        lambda value: value["decision"],
        count=count,
        seed=11,
        private="alice" if encrypted else None,
    )
    assert tally.tried == min(count, span[1] - span[0] + 2) >= 200
    assert {"bad_signature", "malformed_jws", "malformed_input"} <= set(tally.codes)


def test_any_changed_byte_of_a_bare_decision(handoff: Handoff) -> None:
    token = handoff.decision.encode()
    rng = _rng(5)
    tried = 0
    for position in range(len(token)):
        mutated = _mutate(token, position, rng)
        if mutated[:1] == b"{" or not re.fullmatch(rb"[A-Za-z0-9_.-]+", mutated):
            expected = frozenset({"malformed_input"})  # not even a compact JWS's alphabet
        else:
            expected = _jws_codes(handoff.decision, mutated.decode("ascii"))
        code = _code(handoff, mutated, private=None, now=NOW + 60)
        assert code in expected, (position, code)
        tried += 1
    assert tried >= 300


# --------------------------------------------------------------------------- re-signed changes


def _entry_code(original: TranscriptEntry, changed: bytes) -> str:
    """What a bundle whose entry reads ``changed`` fails with (signature valid)."""
    try:
        strictjson.loads_object(changed)
        entry = TranscriptEntry.parse(changed)
    except (KeysError, BatonError) as exc:
        return exc.code
    if entry.canonical() != changed:
        return "invalid_artifact"
    if entry.conversation != original.conversation:
        return "chain_break"
    if entry.seq != original.seq:
        return "seq_violation"
    return "chain_break"


def _positions_in(payload: bytes, part: bytes, count: int, rng: random.Random) -> list[int]:
    start, end = _span_of(payload, part)
    return [start + p for p in _positions(0, end - start, count, rng)]


def test_any_changed_byte_of_a_transcript_entry(handoff: Handoff, keys: Keys) -> None:
    """Entries edited inside the payload and the bundle signed again by the
    gateway key: the transcript chain catches what the signature cannot."""
    rng = _rng(3)
    tally = Tally()
    for index in (0, 1, 4, len(handoff.entries) - 1):
        entry = handoff.entries[index]
        original = entry.canonical()
        start = handoff.payload.index(original)
        seq_digit = start + original.index(b'"seq":') + len(b'"seq":')
        positions = _positions_in(handoff.payload, original, 110, rng)
        for position, payload in [
            *((p, _mutate(handoff.payload, p, rng)) for p in positions),
            (seq_digit, _replace(handoff.payload, seq_digit, b"7")),  # another valid seq
        ]:
            changed = payload[start : start + len(original)]
            jws = sign_compact(payload, keys.gateway, typ=BUNDLE_JWS_TYP)
            data = handoff.export(bundle=jws)
            code = _code(handoff, data, private=None)
            assert code == _entry_code(entry, changed), (index, position - start, code)
            tally.add(code)
    assert tally.tried >= 400
    assert {"chain_break", "seq_violation", "malformed_input", "invalid_artifact"} <= set(
        tally.codes
    )


def _event_code(index: int, original: LifecycleEvent, changed: bytes) -> str:
    try:
        event = LifecycleEvent.parse(changed)
    except BatonError as exc:
        return exc.code
    if event == original:
        return "invalid_artifact"  # same values, other bytes
    if event.bundle_id != original.bundle_id:
        return "binding_mismatch" if index == 0 else "chain_break"
    if event.seq != original.seq:
        return "seq_violation"
    return "chain_break"


def test_any_changed_byte_of_a_lifecycle_event_payload(handoff: Handoff, keys: Keys) -> None:
    rng = _rng(4)
    tally = Tally()
    for index, event in enumerate(handoff.events):
        payload = event.canonical()
        for position in _positions(0, len(payload), 70, rng):
            changed = _mutate(payload, position, rng)
            tokens = list(handoff.event_tokens)
            tokens[index] = sign_compact(changed, keys.gateway, typ=EVENT_TYP)
            data = handoff.export(encrypted=False, events=tokens)
            code = _code(handoff, data, private=None)
            assert code == _event_code(index, event, changed), (index, position, code)
            tally.add(code)
    assert tally.tried >= 300
    assert {"chain_break", "binding_mismatch"} <= set(tally.codes)


def test_any_changed_byte_of_a_decision_payload(handoff: Handoff, keys: Keys) -> None:
    """Re-signed by the operator's own key: still not the decision the gateway recorded."""
    payload = _payload_of(handoff.decision)
    rng = _rng(6)
    tried = 0
    for position in _positions(0, len(payload), 300, rng):
        token = sign_compact(_mutate(payload, position, rng), keys.alice_sig, typ=DECISION_TYP)
        assert _code(handoff, handoff.export(decision=token)) == "binding_mismatch"
        tried += 1
    assert tried >= 300


def _payload_of(token: str) -> bytes:
    return b64url_decode(token.split(".")[1])


def test_resigned_payloads_are_controls(handoff: Handoff, keys: Keys) -> None:
    """The re-signing helpers produce valid artifacts when nothing changes."""
    same_bundle = sign_compact(handoff.payload, keys.gateway, typ=BUNDLE_JWS_TYP)
    tokens = [sign_compact(e.canonical(), keys.gateway, typ=EVENT_TYP) for e in handoff.events]
    data = handoff.export(bundle=same_bundle, events=tokens)
    assert _verify(handoff, data, private=None).content_checked
    assert b64url_encode(_payload_of(handoff.decision)) == handoff.decision.split(".")[1]


# --------------------------------------------------------------------------- properties


@settings(DETERMINISTIC, max_examples=150)
@given(data=st.binary(max_size=400) | st.binary(max_size=40).map(lambda b: b"{" + b))
def test_arbitrary_bytes_fail_with_a_baton_error(handoff: Handoff, data: bytes) -> None:
    with pytest.raises(BatonError):
        _verify(handoff, data)


@settings(DETERMINISTIC, max_examples=150)
@given(members=st.dictionaries(st.sampled_from(sorted(HandoffExport.model_fields)), json_values))
def test_arbitrary_export_shapes_fail_with_a_baton_error(
    handoff: Handoff, members: dict[str, Any]
) -> None:
    """Canonical JSON with the export's member names and any values, a sealed-bundle
    look-alike among them."""
    for value in ({**members, "type": EXPORT_TYPE}, {**members, "recipients": members}):
        try:
            data = canonical_json(value)
        except BatonError:
            continue
        with pytest.raises(BatonError):
            _verify(handoff, data)


@settings(DETERMINISTIC, max_examples=200)
@given(edit=st.data())
def test_any_edit_of_an_export_fails(handoff: Handoff, edit: st.DataObject) -> None:
    """Insertions, deletions and replacements of up to 3 bytes anywhere in an
    export (signed or sealed, verified with every recipient's key)."""
    encrypted = edit.draw(st.booleans())
    data = handoff.export(encrypted=encrypted)
    for _ in range(edit.draw(st.integers(1, 3))):
        at = edit.draw(st.integers(0, len(data) - 1))
        op = edit.draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = edit.draw(st.binary(min_size=1, max_size=1))
        if op == "insert":
            data = data[:at] + byte + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + 1 :]
        elif byte != data[at : at + 1]:
            data = data[:at] + byte + data[at + 1 :]
    original = handoff.export(encrypted=encrypted)
    if data in (original, original[:-1]):  # unchanged, or only the optional newline gone
        return
    with pytest.raises(BatonError):
        _verify(handoff, data, private="both", operators="directory")


# --------------------------------------------------------------------------- the command


def _home(root: Path, keys: Keys) -> Path:
    """A ``baton`` folder with the public keys the verifier needs."""
    (root / "baton.toml").write_text(
        'trust_domain = "baton.local"\n\n'
        f'[[queues]]\nname = "{QUEUE}"\n\n[[queues]]\nname = "other-queue"\n\n'
        f'[[operators]]\nname = "alice"\nqueues = ["{QUEUE}"]\n\n'
        f'[[operators]]\nname = "bob"\nqueues = ["{QUEUE}"]\n\n'
        '[[operators]]\nname = "carol"\nqueues = ["other-queue"]\n'
    )
    data = root / ".baton"
    save_jwks(data / "gateway" / "jwks.json", keys.gateway_keys)
    for name, sig, enc in (
        ("alice", keys.alice_sig, keys.alice_enc),
        ("bob", keys.bob_sig, keys.bob_enc),
    ):
        folder = data / "operators" / name
        folder.mkdir(parents=True)
        save_jwks(folder / "public.jwks", KeySet([sig.public, enc.active.public]))
    save_private_jwks(root / "alice-encryption.jwks", keys.alice_enc)
    return root


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    return _home(tmp_path_factory.mktemp("verify-home"), keys)


def _run(home: Path, data: bytes, *extra: str, key: bool = True) -> int:
    path = home / "artifact"
    path.write_bytes(data)
    options = ["--operator-key", str(home / "alice-encryption.jwks")] if key else []
    return main(["verify", str(path), "--dir", str(home), *options, *extra])


def test_cli_success(
    home: Path, handoff: Handoff, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(home, handoff.export()) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{BUNDLE_ID}: ok (handoff export, bundle version 1)")
    assert f"queue {QUEUE}, conversation {CONVERSATION}" in out
    assert "9 transcript entries" in out
    assert f"approve by {ALICE} (key {keys.alice_sig.kid})" in out
    assert _run(home, handoff.export(), key=False) == 0
    assert "content    not checked" in capsys.readouterr().out
    assert _run(home, handoff.decision.encode(), key=False) == 1  # expired by now
    assert capsys.readouterr().err.startswith("baton: expired: ")


def test_cli_failures(home: Path, handoff: Handoff, capsys: pytest.CaptureFixture[str]) -> None:
    data = handoff.export()
    assert _run(home, data, "--expect-queue", "payments-t3") == 1
    assert capsys.readouterr().err.startswith("baton: binding_mismatch: ")
    assert _run(home, data, "--expect-conversation", CONVERSATION, "--expect-queue", QUEUE) == 0
    capsys.readouterr()
    assert _run(home, handoff.export(conversation=OTHER_CONVERSATION)) == 1
    err = capsys.readouterr().err
    assert err == (
        "baton: binding_mismatch: the export states another conversation than the signed bundle\n"
    )


def test_cli_changed_bytes(
    home: Path, handoff: Handoff, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sample of the sweeps above through the command: exit 1, ``baton: <code>: <reason>``."""
    rng = _rng(9)
    data = handoff.export()
    cases: list[tuple[bytes, str | None]] = []
    for needle in (
        canonical_json(handoff.sealed.jwe["recipients"][0]),
        json.dumps(handoff.sealed.jwe["ciphertext"]).encode(),
        handoff.event_tokens[2].encode(),
        handoff.decision.encode(),
    ):
        for position in _positions(*_span_of(data, needle), 15, rng):
            cases.append((_mutate(data, position, rng), None))
    entry = handoff.entries[3].canonical()
    for position in _positions_in(handoff.payload, entry, 15, rng):
        payload = _mutate(handoff.payload, position, rng)
        start = handoff.payload.index(entry)
        jws = sign_compact(payload, keys.gateway, typ=BUNDLE_JWS_TYP)
        expected = _entry_code(handoff.entries[3], payload[start : start + len(entry)])
        cases.append((handoff.export(bundle=jws), expected))
    for mutated, reason in cases:
        code = _code(handoff, mutated)
        assert code is not None and (reason is None or code == reason)
        assert _run(home, mutated) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"baton: {code}: ") and err.endswith("\n"), err
    assert len(cases) >= 75


def test_cli_usage(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(home / "missing"), "--dir", str(home)]) == 1
    assert capsys.readouterr().err.startswith("baton: ")
    with pytest.raises(SystemExit) as info:
        main(["verify"])
    assert info.value.code == 2


def test_report_of_an_undecided_handoff(handoff: Handoff) -> None:
    data = handoff.export(events=handoff.event_tokens[:1], decision=None)
    report = _verify(handoff, data)
    assert report.events == ("queued",) and report.decision is None
    assert not any(line.startswith("  decision") for line in report.lines())


def test_recorded_in_the_future(handoff: Handoff) -> None:
    assert _code(handoff, handoff.export(), now=NOW - 3) == "not_yet_valid"  # the events
    assert _code(handoff, handoff.export(), now=NOW - 10) == "not_yet_valid"  # the bundle


def test_lifecycle_of_a_later_bundle_version(handoff: Handoff, keys: Keys) -> None:
    """Events name the bundle by id and version: a v2 history for a v1 bundle."""
    queued = LifecycleEvent.create(
        ChainHead(), bundle_id=BUNDLE_ID, ts=NOW_MS + 100, type="queued", actor=GATEWAY, version=2
    )
    data = handoff.export(events=[sign_event(queued, keys.gateway)], decision=None)
    assert _code(handoff, data) == "binding_mismatch"
