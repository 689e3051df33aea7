"""protocol/audit.py: the audit log is a hash chain of escaped, secret-free events."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.audit import AuditEvent
from protocol.canonical import canonical_json, digest
from protocol.chain import ChainHead, parse_record, verify_links
from protocol.errors import ChainBreak, InvalidArtifact, Stale
from tests.protocol._support import ALPHA, NOW_MS, raises_exactly


def _log(*events: dict[str, Any]) -> list[AuditEvent]:
    chain: list[AuditEvent] = []
    head = ChainHead()
    for offset, fields in enumerate(events):
        event = AuditEvent.create(head, ts=NOW_MS + offset, **fields)
        chain.append(event)
        head = event.head
    return chain


REJECTED = {
    "event": "request.rejected",
    "outcome": "rejected",
    "reason": Stale.code,
    "request_id": "req-1",
    "peer": ALPHA,
    "artifact_sha256": digest(b"the offending token"),
    "detail": Stale("created 12 is older than the 60s window").diagnostics(),
}


def test_events_chain_and_verify() -> None:
    log = _log(
        REJECTED,
        {"event": "handoff.claimed", "outcome": "accepted", "peer": "operator:alice"},
        {"event": "key.rotated", "outcome": "info"},
    )
    assert verify_links(log) == log[-1].head
    for event in log:
        assert parse_record(AuditEvent, event.canonical()) == event
    edited = log[0].model_copy(update={"outcome": "accepted"})
    with raises_exactly(ChainBreak):
        verify_links([edited, *log[1:]])


def test_hostile_detail_is_escaped_in_the_record() -> None:
    """I07: no raw CR/LF or ANSI escapes reach a log line."""
    detail = "bad kid\r\nINFO forged line\x1b[31m red \x00"
    [event] = _log({**REJECTED, "detail": detail})
    line = event.canonical()
    for raw in (b"\r", b"\n", b"\x1b", b"\x00"):
        assert raw not in line
    assert b"\\r\\n" in line and b"\\u001b" in line
    assert parse_record(AuditEvent, line).detail == detail


@pytest.mark.parametrize(
    "change",
    [
        {"outcome": "maybe"},
        {"artifact_sha256": "the token itself"},
        {"detail": "x" * 4001},
        {"event": "e" * 257},
        {"ts": -1},
        {"secret": "sk-1"},
    ],
    ids=[
        "outcome",
        "artifact not a digest",
        "detail too long",
        "event too long",
        "ts",
        "unknown member",
    ],
)
def test_invalid_events(change: dict[str, Any]) -> None:
    [event] = _log(REJECTED)
    with raises_exactly(InvalidArtifact):
        AuditEvent.parse(canonical_json({**event.to_json(), **change}))


def test_peer_must_be_an_identity() -> None:
    [event] = _log(REJECTED)
    with raises_exactly(InvalidArtifact):
        AuditEvent.parse(canonical_json({**event.to_json(), "peer": "alpha"}))
