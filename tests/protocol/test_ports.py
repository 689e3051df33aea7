"""protocol/ports.py: the store ports are runtime-checkable Protocols with the documented shape."""

from __future__ import annotations

import dataclasses
import inspect
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from gateway.stores.sqlite import SqliteNonceStore, connect
from protocol import ports
from protocol.ports import (
    AuditLog,
    InboxRecord,
    InboxStore,
    Lease,
    NonceStore,
    RateDecision,
    RateLimiter,
    TranscriptStore,
)

#: port -> {method: keyword-only parameter names}
SHAPES: dict[type[Any], dict[str, set[str]]] = {
    NonceStore: {"claim": {"ttl_s", "now"}},
    TranscriptStore: {
        "head": set(),
        "append": set(),
        "read": {"after_seq", "limit"},
        "read_body": set(),
    },
    AuditLog: {"head": set(), "append": {"once"}, "read": {"after_seq", "limit"}},
    RateLimiter: {"hit": {"limit", "window_s", "now", "cost"}},
    InboxStore: {
        "create": set(),
        "get": set(),
        "list": {"status", "limit"},
        "claim": {"lease_s", "now"},
        "release": {"fencing_token", "now"},
        "decide": {"fencing_token", "version", "decision", "now"},
        "set_status": {"now"},
        "append_event": {"seq"},
        "events": set(),
        "requeue_lapsed": {"now", "limit"},
        "expire_due": {"now", "limit"},
    },
}


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(tmp_path / "n.db")
    yield connection
    connection.close()


def test_sqlite_nonce_store_is_a_nonce_store(conn: sqlite3.Connection) -> None:
    store = SqliteNonceStore(conn)
    assert isinstance(store, NonceStore)
    assert not isinstance(store, TranscriptStore)
    assert not isinstance(store, RateLimiter)


def test_sqlite_claim_has_the_port_signature() -> None:
    port = inspect.signature(NonceStore.claim)
    impl = inspect.signature(SqliteNonceStore.claim)
    assert [(p.name, p.kind) for p in impl.parameters.values()] == [
        (p.name, p.kind) for p in port.parameters.values()
    ]
    assert inspect.iscoroutinefunction(SqliteNonceStore.claim)


def test_ports_are_exported() -> None:
    for name in ("AuditLog", "InboxStore", "NonceStore", "RateLimiter", "TranscriptStore"):
        assert name in ports.__all__


@pytest.mark.parametrize("port", list(SHAPES), ids=lambda p: p.__name__)
def test_port_shape(port: type[Any]) -> None:
    assert Protocol in port.__mro__
    assert getattr(port, "_is_runtime_protocol", False), "runtime_checkable"
    for method, keyword_only in SHAPES[port].items():
        function = getattr(port, method)
        assert inspect.iscoroutinefunction(function), f"{port.__name__}.{method} is async"
        parameters = inspect.signature(function).parameters.values()
        assert next(iter(parameters)).name == "self"
        assert {p.name for p in parameters if p.kind is p.KEYWORD_ONLY} == keyword_only
    assert not isinstance(object(), port)


@pytest.mark.parametrize("port", list(SHAPES), ids=lambda p: p.__name__)
def test_an_object_with_the_methods_conforms(port: type[Any]) -> None:
    """Structural typing: any class with the method names passes ``isinstance``,
    and one missing a method does not."""
    methods = SHAPES[port]

    async def anything(*args: Any, **kwargs: Any) -> None:
        return None

    complete = type("Complete", (), dict.fromkeys(methods, anything))
    assert isinstance(complete(), port)
    first = next(iter(methods))
    partial = type("Partial", (), {m: anything for m in methods if m != first})
    assert not isinstance(partial(), port)


def test_value_types_are_frozen() -> None:
    lease = Lease(owner="operator:alice", until=1.0, fencing_token=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lease.fencing_token = 2  # type: ignore[misc]
    decision = RateDecision(allowed=True, remaining=3, retry_after_s=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.allowed = False  # type: ignore[misc]
    record = InboxRecord(
        bundle_id="hb_01JABCDEFGHJKMNPQRS",
        queue="q",
        conversation="c",
        idempotency_key="k",
        origin="spiffe://td/agent/a",
        status="queued",
        version=1,
        bundle_digest="sha256:" + "0" * 64,
        sealed_bundle="{}",
        created_at=0.0,
        resolve_by=60.0,
    )
    assert record.lease is None and record.decision is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = "claimed"  # type: ignore[misc]
