"""SQLite implementations of the store ports (the embedded default).

One file, WAL mode, nothing to install. Writes that must be atomic across
processes run inside ``BEGIN IMMEDIATE`` transactions, which take SQLite's
write lock up front, so two gateway processes on one host sharing the file
cannot both claim a nonce. ``sqlite3`` errors become
:class:`~protocol.errors.StoreUnavailable` (fail closed).

The calls are short (tens of microseconds on a local disk) and run on the
event loop's thread; the data plane moves them to a worker thread if
measurement says so.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

from protocol.errors import StoreUnavailable

__all__ = ["SqliteNonceStore", "connect"]

_PURGE_EVERY: Final = 1024


def connect(path: Path | str) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), WAL, busy timeout."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open SQLite store {path}: {exc}") from exc
    return conn


class SqliteNonceStore:
    """:class:`~protocol.ports.NonceStore` on SQLite: a primary-key insert per claim."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._claims = 0
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS nonces ("
                " scope TEXT NOT NULL, nonce TEXT NOT NULL, expires REAL NOT NULL,"
                " PRIMARY KEY (scope, nonce)) WITHOUT ROWID"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS nonces_expires ON nonces (expires)")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot create nonce table: {exc}") from exc

    async def claim(self, scope: str, nonce: str, *, ttl_s: int, now: float) -> bool:
        """True for the first claim of ``(scope, nonce)`` while it lives."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "DELETE FROM nonces WHERE scope = ? AND nonce = ? AND expires <= ?",
                    (scope, nonce, now),
                )
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO nonces (scope, nonce, expires) VALUES (?, ?, ?)",
                    (scope, nonce, now + ttl_s),
                )
                first = cursor.rowcount == 1
                self._claims += 1
                if self._claims % _PURGE_EVERY == 0:
                    conn.execute("DELETE FROM nonces WHERE expires <= ?", (now,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"nonce store: {exc}") from exc
        return first
