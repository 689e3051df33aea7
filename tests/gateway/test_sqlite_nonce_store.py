"""SQLite NonceStore: first claim wins, across threads and processes (R01, R03, R05, R06)."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.stores.sqlite import SqliteNonceStore, connect
from protocol.errors import StoreUnavailable
from protocol.ports import NonceStore


def _claim(path: str, scope: str, nonce: str, now: float) -> bool:
    store = SqliteNonceStore(connect(path))
    return asyncio.run(store.claim(scope, nonce, ttl_s=66, now=now))


def test_is_a_nonce_store(tmp_path: Path) -> None:
    assert isinstance(SqliteNonceStore(connect(tmp_path / "n.db")), NonceStore)


def test_first_claim_only(tmp_path: Path) -> None:
    store = SqliteNonceStore(connect(tmp_path / "n.db"))
    assert asyncio.run(store.claim("k1", "n" * 22, ttl_s=66, now=1000.0))
    assert not asyncio.run(store.claim("k1", "n" * 22, ttl_s=66, now=1001.0))
    assert asyncio.run(store.claim("k2", "n" * 22, ttl_s=66, now=1001.0)), "scopes are separate"


def test_expired_nonce_is_forgotten_only_after_ttl(tmp_path: Path) -> None:
    store = SqliteNonceStore(connect(tmp_path / "n.db"))
    assert asyncio.run(store.claim("k", "abc" * 6, ttl_s=66, now=1000.0))
    assert not asyncio.run(store.claim("k", "abc" * 6, ttl_s=66, now=1065.9))
    assert asyncio.run(store.claim("k", "abc" * 6, ttl_s=66, now=1066.0))


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    assert _claim(str(path), "k", "durable-nonce-1234", 1000.0)
    assert not _claim(str(path), "k", "durable-nonce-1234", 1001.0)


def test_fifty_concurrent_threads_one_winner(tmp_path: Path) -> None:
    path = str(tmp_path / "n.db")
    SqliteNonceStore(connect(path))
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: _claim(path, "k", "race-nonce-000001", 5.0), range(50)))
    assert results.count(True) == 1


def test_fifty_claims_from_eight_processes_one_winner(tmp_path: Path) -> None:
    """Two gateway processes sharing the file accept a nonce exactly once (R05)."""
    path = str(tmp_path / "n.db")
    connect(path).close()
    # spawn, not fork: separate interpreters, as separate gateway processes are
    # (SQLite forbids carrying its state across fork()).
    with ProcessPoolExecutor(
        max_workers=8, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        futures = [pool.submit(_claim, path, "k", "race-nonce-000002", 5.0) for _ in range(50)]
        results = [f.result(timeout=60) for f in futures]
    assert results.count(True) == 1


def test_unreachable_store_fails_closed(tmp_path: Path) -> None:
    conn = connect(tmp_path / "n.db")
    store = SqliteNonceStore(conn)
    conn.close()
    with pytest.raises(StoreUnavailable):
        asyncio.run(store.claim("k", "closed-store-nonce", ttl_s=66, now=1.0))


def test_unopenable_path_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        connect(tmp_path / "missing-dir" / "n.db")


def test_purge_removes_expired_rows(tmp_path: Path) -> None:
    conn = connect(tmp_path / "n.db")
    store = SqliteNonceStore(conn)
    for i in range(1100):
        assert asyncio.run(store.claim("k", f"nonce-{i:012d}", ttl_s=10, now=float(i)))
    rows = conn.execute("SELECT COUNT(*) FROM nonces").fetchone()[0]
    assert rows < 1100
    assert isinstance(conn, sqlite3.Connection)
