"""Signed operator commands (protocol/operator.py): who, for which gateway, until when."""

from __future__ import annotations

from typing import Any

import pytest

from keys.jose import sign_compact
from keys.keyset import KeySet
from keys.material import PrivateKey
from protocol.decision import DECISION_TYP
from protocol.directory import KeyDirectory
from protocol.errors import (
    BadAudience,
    BadSignature,
    IdentityMismatch,
    InvalidArtifact,
    NotYetValid,
    TokenExpired,
    UnknownKeyId,
    WrongType,
)
from protocol.operator import make_command_at, sign_command, verify_command_at

GATEWAY = "spiffe://example.org/gateway/gw1"
ALICE, BOB = "operator:alice", "operator:bob"
NOW = 1_800_000_000.0


@pytest.fixture
def directory(alice_sig: PrivateKey, bob_sig: PrivateKey) -> KeyDirectory:
    return KeyDirectory({ALICE: KeySet([alice_sig.public]), BOB: KeySet([bob_sig.public])})


def _command(**fields: Any) -> Any:
    values: dict[str, Any] = {
        "operator": ALICE,
        "audience": GATEWAY,
        "queue": "refunds",
        "now": NOW,
    }
    values.update(fields)
    op = values.pop("op", "list")
    return make_command_at(op, **values)


def test_a_command_verifies_for_its_gateway_and_names_its_signer(
    alice_sig: PrivateKey, directory: KeyDirectory
) -> None:
    token = sign_command(_command(op="claim", bundle_id="hb_" + "a" * 24), alice_sig)
    verified = verify_command_at(token, operators=directory, audience=GATEWAY, now=NOW + 1)
    assert verified.command.operator == ALICE and verified.command.op == "claim"
    assert verified.kid == alice_sig.kid


def test_a_command_for_another_gateway_is_refused(
    alice_sig: PrivateKey, directory: KeyDirectory
) -> None:
    token = sign_command(_command(audience="spiffe://example.org/gateway/gw2"), alice_sig)
    with pytest.raises(BadAudience):
        verify_command_at(token, operators=directory, audience=GATEWAY, now=NOW)


@pytest.mark.parametrize(("offset", "error"), [(60, TokenExpired), (-10, NotYetValid)])
def test_a_command_is_good_only_in_its_window(
    alice_sig: PrivateKey, directory: KeyDirectory, offset: float, error: type[Exception]
) -> None:
    token = sign_command(_command(), alice_sig)
    with pytest.raises(error):
        verify_command_at(token, operators=directory, audience=GATEWAY, now=NOW + offset)


def test_bob_cannot_sign_for_alice(bob_sig: PrivateKey, directory: KeyDirectory) -> None:
    token = sign_command(_command(operator=ALICE), bob_sig)
    with pytest.raises(IdentityMismatch):
        verify_command_at(token, operators=directory, audience=GATEWAY, now=NOW)


def test_unknown_keys_other_types_and_changed_bytes_are_refused(
    alice_sig: PrivateKey, rogue_key: PrivateKey, directory: KeyDirectory
) -> None:
    with pytest.raises(UnknownKeyId):
        verify_command_at(
            sign_command(_command(), rogue_key), operators=directory, audience=GATEWAY, now=NOW
        )
    decision_typed = sign_compact(_command().canonical(), alice_sig, typ=DECISION_TYP)
    with pytest.raises(WrongType):
        verify_command_at(decision_typed, operators=directory, audience=GATEWAY, now=NOW)
    token = sign_command(_command(), alice_sig)
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(BadSignature):
        verify_command_at(
            f"{head}.{payload}.{flipped}", operators=directory, audience=GATEWAY, now=NOW
        )


@pytest.mark.parametrize(
    "fields",
    [
        {"op": "claim"},  # no bundle
        {"op": "list", "bundle_id": "hb_" + "a" * 24},  # list takes none
        {"op": "release", "bundle_id": "hb_" + "a" * 24},  # no fencing token
        {"op": "decide", "bundle_id": "hb_" + "a" * 24},  # no decision
        {"op": "reveal", "bundle_id": "hb_" + "a" * 24, "reason": "  "},  # no reason
        {"op": "claim", "bundle_id": "hb_" + "a" * 24, "status": "queued"},
        {"ttl_s": 301},
        {"operator": "spiffe://example.org/agent/support"},
    ],
)
def test_malformed_commands_are_not_built(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidArtifact):
        _command(**fields)
