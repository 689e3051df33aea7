"""The recorder over real SQLite stores: records built under the write lock
(group commit) never fork a chain, within a process or across processes."""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from gateway.inspect import verify_audit, verify_conversation
from gateway.recorder import Recorder
from gateway.stores import Stores, open_stores
from gateway.stores import sqlite as sqlite_stores
from gateway.stores.sqlite import GroupCommit, connect
from keys.atrest import StoreCipher
from protocol.canonical import digest
from protocol.errors import StoreUnavailable

SUPPORT = "spiffe://baton.local/agent/support"
BILLING = "spiffe://baton.local/agent/billing"
KEY = b"k" * 32


def _entry_fields(n: int, body: bytes) -> dict[str, object]:
    return {
        "body_digest": digest(body),
        "body_size": len(body),
        "conversation": "conv",
        "ts": 1_700_000_000_000 + n,
        "sender": SUPPORT,
        "to": BILLING,
        "protocol": "jsonrpc",
        "kind": "request",
        "method": f"m{n}",
        "verified": False,
    }


async def _record(stores: Stores, count: int, tag: int) -> None:
    recorder = Recorder(stores.transcripts, stores.audit)

    async def one(n: int) -> None:
        body = f"body {tag}/{n}".encode()
        await recorder.entry(body, **_entry_fields(n, body))
        await recorder.event(ts=1, event="request.accepted", outcome="accepted", detail=f"{tag}")

    await asyncio.gather(*(one(n) for n in range(count)))


async def test_appends_built_under_the_write_lock_never_fork(tmp_path: Path) -> None:
    stores = await open_stores("sqlite", path=tmp_path / "b.db", url=None, cipher=StoreCipher(KEY))
    try:
        await _record(stores, 200, 0)
        assert (await verify_conversation(stores.transcripts, "conv")).records == 200
        assert (await verify_audit(stores.audit)).records == 200
    finally:
        await stores.close()


def _worker(path: str, tag: int) -> None:
    async def run() -> None:
        stores = await open_stores("sqlite", path=Path(path), url=None, cipher=StoreCipher(KEY))
        try:
            await _record(stores, 60, tag)
        finally:
            await stores.close()

    asyncio.run(run())


async def test_appends_from_four_processes_never_fork(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    await (await open_stores("sqlite", path=path, url=None, cipher=StoreCipher(KEY))).close()
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_worker, str(path), tag) for tag in range(4)]
        for future in futures:
            future.result(timeout=120)
    stores = await open_stores("sqlite", path=path, url=None, cipher=StoreCipher(KEY))
    try:
        assert (await verify_conversation(stores.transcripts, "conv")).records == 240
        assert (await verify_audit(stores.audit)).records == 240
    finally:
        await stores.close()


async def test_a_refused_write_does_not_spoil_its_batch(tmp_path: Path) -> None:
    conn = connect(tmp_path / "g.db")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    commit = GroupCommit(conn)

    def insert(k: int) -> int:
        def write(c: object) -> int:
            if k == 2:
                raise ValueError("refused before writing")
            return int(conn.execute("INSERT INTO t VALUES (?)", (k,)).rowcount)

        return write  # type: ignore[return-value]

    results = await asyncio.gather(
        *(commit.run("t", insert(k)) for k in range(4)),  # type: ignore[arg-type]
        return_exceptions=True,
    )
    assert [type(r).__name__ if isinstance(r, Exception) else r for r in results] == [
        1,
        1,
        "ValueError",
        1,
    ]
    assert [row[0] for row in conn.execute("SELECT k FROM t ORDER BY k")] == [0, 1, 3]
    conn.close()


async def test_a_held_write_lock_is_waited_for_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "lock.db"
    stores = await open_stores("sqlite", path=path, url=None, cipher=StoreCipher(KEY))
    other = connect(path)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process is committing
        claim = asyncio.ensure_future(stores.nonces.claim("k", "n" * 22, ttl_s=66, now=1.0))
        ticks = 0
        while ticks < 50:  # the loop keeps running while the claim waits for the lock
            await asyncio.sleep(0)
            ticks += 1
        assert not claim.done()
        other.execute("COMMIT")
        assert await asyncio.wait_for(claim, timeout=5) is True
    finally:
        other.close()
        await stores.close()


async def test_a_write_lock_held_past_the_deadline_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_stores, "_LOCK_DEADLINE_S", 0.05)
    path = tmp_path / "lock.db"
    stores = await open_stores("sqlite", path=path, url=None, cipher=StoreCipher(KEY))
    other = connect(path)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(stores.nonces.claim("k", "n" * 22, ttl_s=66, now=1.0), timeout=5)
        other.execute("ROLLBACK")
        assert await stores.nonces.claim("k", "n" * 22, ttl_s=66, now=1.0), "nothing was stored"
    finally:
        other.close()
        await stores.close()


def _open_and_close(path: str) -> str:
    connect(path).close()
    return "ok"


def test_processes_opening_a_new_file_together_all_get_wal(tmp_path: Path) -> None:
    path = str(tmp_path / "new.db")
    with ProcessPoolExecutor(8, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_open_and_close, [path] * 16, timeout=120))
    assert results == ["ok"] * 16
    conn = connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
