"""Store implementations of the ports in ``protocol/ports.py``, and the factory.

:func:`open_stores` opens one backend and returns the five stores the data
plane needs (nonces, transcripts, audit, rate limits, handle bindings) and
the handoff inbox, plus ``ping`` (for ``/readyz``) and ``close``. Both backends hold to one contract
suite (``tests/gateway/stores``).

* ``sqlite``: one file (created 0600 if absent), one connection shared by the
  stores. Open it in the process that uses it; never across ``fork()``.
* ``redis``: one ``redis.asyncio.Redis`` client with short socket timeouts, no
  automatic retries (a retried append, nonce claim or inbox step whose first
  attempt did land would be misreported) and no background health checks, so a stopped
  Redis yields :class:`~protocol.errors.StoreUnavailable` within the timeout
  instead of hanging. Opening does not connect; ``ping`` does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.stores import redis as redis_stores
from gateway.stores import sqlite as sqlite_stores
from keys.atrest import StoreCipher
from protocol.errors import ConfigurationError, StoreUnavailable
from protocol.ports import (
    AuditLog,
    BindingStore,
    InboxStore,
    NonceStore,
    RateLimiter,
    TranscriptStore,
)

__all__ = ["REDIS_TIMEOUT_S", "StoreKind", "Stores", "open_stores", "redis_client"]

StoreKind = Literal["sqlite", "redis"]

#: socket connect and read timeout for Redis: the longest a request waits on a dead store.
REDIS_TIMEOUT_S: Final = 2.0


@dataclass
class Stores:
    """The stores of one backend. ``ping`` raises StoreUnavailable when the
    backend is unreachable; ``close`` releases it (idempotent)."""

    nonces: NonceStore
    transcripts: TranscriptStore
    audit: AuditLog
    rates: RateLimiter
    bindings: BindingStore
    inbox: InboxStore
    ping: Callable[[], Awaitable[None]]
    close: Callable[[], Awaitable[None]]


async def open_stores(
    kind: StoreKind,
    *,
    path: Path | None,
    url: str | None,
    cipher: StoreCipher,
    prefix: str = redis_stores.DEFAULT_PREFIX,
) -> Stores:
    """Open the ``kind`` backend: SQLite at ``path`` or Redis at ``url``.

    Raises :class:`ConfigurationError` when the argument ``kind`` needs is
    missing or malformed, :class:`StoreUnavailable` when a SQLite file cannot
    be created or opened. ``prefix`` applies to Redis keys only.
    """
    if kind == "sqlite":
        if path is None:
            raise ConfigurationError("store kind 'sqlite' needs a path")
        return await _open_sqlite(path, cipher)
    if kind == "redis":
        if not url:
            raise ConfigurationError("store kind 'redis' needs a url")
        return await _open_redis(url, cipher, prefix)
    raise ConfigurationError(f"unknown store kind {kind!r}")


async def _open_sqlite(path: Path, cipher: StoreCipher) -> Stores:
    sqlite_stores.create_private_file(path)
    conn = sqlite_stores.connect(path, autocheckpoint=False)
    try:
        checkpointer = sqlite_stores.Checkpointer(path)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreUnavailable(f"cannot open SQLite store {path}: {exc}") from exc
    checkpointer.start()

    async def close() -> None:
        await checkpointer.stop()
        await _sqlite_close(conn)

    try:
        stores = Stores(
            nonces=sqlite_stores.SqliteNonceStore(conn),
            transcripts=sqlite_stores.SqliteTranscriptStore(conn, cipher),
            audit=sqlite_stores.SqliteAuditLog(conn),
            rates=sqlite_stores.SqliteRateLimiter(conn),
            bindings=sqlite_stores.SqliteBindingStore(conn),
            inbox=sqlite_stores.SqliteInboxStore(conn),
            ping=lambda: _sqlite_ping(conn),
            close=close,
        )
        # From here on the group commit waits for the write lock without
        # blocking the event loop (see GroupCommit); tables exist by now.
        conn.execute("PRAGMA busy_timeout=0")
    except BaseException:
        await close()
        raise
    return stores


async def _sqlite_ping(conn: sqlite3.Connection) -> None:
    """Read the schema page: fails when the connection is closed or the file unreadable."""
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"SQLite store: {exc}") from exc


async def _sqlite_close(conn: sqlite3.Connection) -> None:
    conn.close()


def redis_client(url: str) -> Redis:
    """A client for the stores: short timeouts, no retries, no health-check pings.

    The URL may hold a password, so it never appears in an error message.
    """
    try:
        return Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )
    except ValueError as exc:
        raise ConfigurationError("store url is not a valid redis:// or rediss:// URL") from exc


async def _open_redis(url: str, cipher: StoreCipher, prefix: str) -> Stores:
    client = redis_client(url)
    try:
        return Stores(
            nonces=redis_stores.RedisNonceStore(client, prefix),
            transcripts=redis_stores.RedisTranscriptStore(client, cipher, prefix),
            audit=redis_stores.RedisAuditLog(client, prefix),
            rates=redis_stores.RedisRateLimiter(client, prefix),
            bindings=redis_stores.RedisBindingStore(client, prefix),
            inbox=redis_stores.RedisInboxStore(client, prefix),
            ping=lambda: redis_stores.ping(client),
            close=client.aclose,
        )
    except BaseException:
        await client.aclose()
        raise
