"""Helpers for the store contract suite: how to (re)open a backend, build
chained records, append with retry, and look at what a backend stored raw.

Everything a spawned process needs is picklable (:class:`StoreSpec`) and
importable from here, so worker processes open their own store.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from redis.asyncio import Redis

from gateway.stores import Stores, open_stores, redis_client
from gateway.stores import redis as layout
from keys.atrest import StoreCipher
from protocol.audit import AuditEvent
from protocol.chain import ChainHead
from protocol.errors import ChainConflict
from protocol.ports import AuditLog, TranscriptStore
from protocol.transcript import TranscriptEntry

Kind = Literal["sqlite", "redis"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MAX_ATTEMPTS = 1000
ALICE = "spiffe://baton.local/agent/alice"
BOB = "spiffe://baton.local/agent/bob"


def redis_url() -> str:
    return os.environ.get("BATON_REDIS_URL", DEFAULT_REDIS_URL)


def fresh_prefix() -> str:
    return f"baton-test-{secrets.token_hex(8)}:"


@dataclass(frozen=True)
class StoreSpec:
    """Everything needed to open the same store again, in this or another process."""

    kind: Kind
    path: str | None
    url: str | None
    prefix: str
    key: bytes

    @property
    def cipher(self) -> StoreCipher:
        return StoreCipher(self.key)

    async def open(self, *, key: bytes | None = None) -> Stores:
        """A new :class:`Stores` over the same data (optionally with another store key)."""
        return await open_stores(
            self.kind,
            path=Path(self.path) if self.path else None,
            url=self.url,
            cipher=StoreCipher(key or self.key),
            prefix=self.prefix,
        )


def entry(
    head: ChainHead, conversation: str, *, ts: int = 1, kind: str = "request"
) -> TranscriptEntry:
    """A valid transcript entry extending ``head``."""
    return TranscriptEntry.create(
        head,
        conversation=conversation,
        ts=ts,
        sender=ALICE,
        to=BOB,
        protocol="mcp",
        kind=kind,
        method="tools/call",
        verified=True,
    )


def event(head: ChainHead, *, name: str = "test_event") -> AuditEvent:
    """A valid audit event extending ``head``."""
    return AuditEvent.create(head, ts=1, event=name, outcome="info", peer=ALICE)


async def append_entry(
    store: TranscriptStore, conversation: str, body: bytes | None, *, ts: int = 0
) -> int:
    """Read the head, build the next entry (stamped ``ts``), append; retry on
    ChainConflict. Returns the number of conflicts met.

    Between reading the head and appending it yields to the event loop
    (``sleep(0)``, a yield, not a wait), so in-process appenders really race:
    SQLite calls never suspend otherwise.
    """
    for attempt in range(MAX_ATTEMPTS):
        head = await store.head(conversation)
        record = entry(head, conversation, ts=ts)
        await asyncio.sleep(0)
        try:
            await store.append(record, body)
        except ChainConflict:
            continue
        return attempt
    raise AssertionError(f"no append after {MAX_ATTEMPTS} attempts")


async def append_event(log: AuditLog) -> int:
    """As :func:`append_entry`, for the audit log."""
    for attempt in range(MAX_ATTEMPTS):
        record = event(await log.head(), name=f"attempt-{attempt}")
        await asyncio.sleep(0)
        try:
            await log.append(record)
        except ChainConflict:
            continue
        return attempt
    raise AssertionError(f"no audit append after {MAX_ATTEMPTS} attempts")


# ------------------------------------------------------------------ raw access
class RawSqlite:
    """Reads and edits the SQLite file behind the store's back."""

    def __init__(self, path: str) -> None:
        self._path = path

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self._path, isolation_level=None, timeout=5.0)) as conn:
            yield conn

    async def body(self, conversation: str, seq: int) -> bytes | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT body FROM transcript_entries WHERE conversation = ? AND seq = ?",
                (conversation, seq),
            ).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    async def set_body(self, conversation: str, seq: int, sealed: bytes) -> None:
        with self._conn() as conn:
            conn.execute(
                "UPDATE transcript_entries SET body = ? WHERE conversation = ? AND seq = ?",
                (sealed, conversation, seq),
            )

    async def record(self, conversation: str, seq: int) -> bytes | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT record FROM transcript_entries WHERE conversation = ? AND seq = ?",
                (conversation, seq),
            ).fetchone()
        return None if row is None else bytes(row[0])

    async def set_record(self, conversation: str, seq: int, data: bytes) -> None:
        with self._conn() as conn:
            conn.execute(
                "UPDATE transcript_entries SET record = ? WHERE conversation = ? AND seq = ?",
                (data, conversation, seq),
            )

    async def nonce_ttl(self, scope: str, nonce: str, *, now: float) -> float | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT expires FROM nonces WHERE scope = ? AND nonce = ?", (scope, nonce)
            ).fetchone()
        return None if row is None else float(row[0]) - now

    async def rate_ttl(self, key: str, window: int, *, now: float) -> float | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT expires FROM rate_windows WHERE key = ? AND window = ?", (key, window)
            ).fetchone()
        return None if row is None else float(row[0]) - now


class RawRedis:
    """Reads and edits the Redis keys behind the store's back (layout of ADR 0010)."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    async def body(self, conversation: str, seq: int) -> bytes | None:
        value = await self._client.hget(
            layout.transcript_body_key(self._prefix, conversation), str(seq)
        )
        assert value is None or isinstance(value, bytes)
        return value

    async def set_body(self, conversation: str, seq: int, sealed: bytes) -> None:
        await self._client.hset(
            layout.transcript_body_key(self._prefix, conversation), str(seq), sealed
        )

    async def record(self, conversation: str, seq: int) -> bytes | None:
        value = await self._client.lindex(
            layout.transcript_keys(self._prefix, conversation).log, seq
        )
        assert value is None or isinstance(value, bytes)
        return value

    async def set_record(self, conversation: str, seq: int, data: bytes) -> None:
        log = layout.transcript_keys(self._prefix, conversation).log
        await self._client.lset(log, seq, cast("str", data))  # bytes work; the stub says str

    async def nonce_ttl(self, scope: str, nonce: str, *, now: float) -> float | None:
        return await self._ttl(layout.nonce_key(self._prefix, scope, nonce))

    async def rate_ttl(self, key: str, window: int, *, now: float) -> float | None:
        return await self._ttl(layout.rate_key(self._prefix, key, window))

    async def _ttl(self, key: str) -> float | None:
        pttl = await self._client.pttl(key)
        return None if pttl == -2 else pttl / 1000  # -1 (no expiry) stays visible as < 0


Raw = RawSqlite | RawRedis


async def delete_prefix(client: Redis, prefix: str) -> None:
    """Delete every key under ``prefix`` (the test's own keys only)."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
    if keys:
        await client.delete(*keys)


async def redis_reachable(url: str) -> str | None:
    """None if Redis at ``url`` answers PING, else the reason."""
    client = redis_client(url)
    try:
        await client.ping()
    except Exception as exc:  # any failure means "not usable for the suite"
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return None
