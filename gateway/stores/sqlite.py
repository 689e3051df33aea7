"""SQLite implementations of the store ports (the embedded default).

One file, WAL mode, nothing to install. Writes that must be atomic across
processes run inside ``BEGIN IMMEDIATE`` transactions, which take SQLite's
write lock up front, so two gateway processes on one host sharing the file
cannot both claim a nonce, both extend one chain head, or both spend the last
unit of a rate limit. ``sqlite3`` errors become
:class:`~protocol.errors.StoreUnavailable` (fail closed); nothing from
``sqlite3`` escapes.

Tables (created on first use, ``IF NOT EXISTS``):

``nonces(scope, nonce, expires)``
    primary key ``(scope, nonce)``; a row lives until the injected ``now``
    reaches ``expires``.
``transcript_entries(conversation, seq, hash, record, body)``
    primary key ``(conversation, seq)``; ``record`` is the entry's canonical
    bytes, ``body`` the sealed body or NULL. The head is the row with the
    greatest ``seq``, read inside the same transaction that inserts.
``audit_events(seq, hash, record)``
    the one audit chain; ``seq`` is the primary key.
``audit_once(key, seq)``
    idempotency keys of audit events appended with ``once``; checked and
    written in the append's own transaction.
``rate_windows(key, window, count, expires)``
    primary key ``(key, window)``; ``window`` is ``floor(now / window_s)``.
``bindings(kind, key, owner, expires_at)``
    primary key ``(kind, key)``; the owner of a handle while the injected
    ``now`` is before ``expires_at``.
``inbox_bundles(bundle_id, queue, ..., fence, lease_owner, lease_until, lease_token, decision)``
    primary key ``bundle_id``, ``UNIQUE (queue, idempotency_key)``; the
    handoff record (ciphertext only), the last fencing token issued and the
    lease (set exactly when the status is ``claimed``).
``inbox_events(bundle_id, seq, event)``
    primary key ``(bundle_id, seq)``; the bundle's signed lifecycle events.

Every time here is the injected ``now``: the store never reads a clock.

Connections: open one per process (SQLite state must never cross ``fork()``;
workers open their own) and use it from one thread. Every write goes through
the connection's :class:`GroupCommit`, which runs the writes queued during one
event-loop turn in one transaction on the loop's thread (they are short: tens
of microseconds each), so the stores sharing a connection never interleave
transactions. WAL checkpoints, the one step that fsyncs, run on a worker
thread (:class:`Checkpointer`).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from gateway.stores.common import (
    Window,
    check_rate_args,
    check_ttl,
    decide,
    load_record,
    open_body,
    read_span,
    require_extends,
    require_hash,
    seal_body,
    stored_seq,
)
from keys.atrest import StoreCipher
from protocol.audit import AuditEvent
from protocol.chain import GENESIS, ChainHead
from protocol.errors import (
    ChainConflict,
    Conflict,
    DuplicateBundle,
    NotFound,
    StaleDecision,
    StoreUnavailable,
)
from protocol.ports import (
    INBOX_STATUSES,
    OPEN_STATUSES,
    STATUS_TRANSITIONS,
    InboxRecord,
    InboxStatus,
    Lease,
    RateDecision,
    check_binding,
    check_inbox_call,
    check_inbox_page,
    check_inbox_record,
    check_opaque,
    check_status_target,
    counter_in_range,
    storable_inbox_id,
)
from protocol.transcript import TranscriptEntry

__all__ = [
    "SqliteAuditLog",
    "SqliteBindingStore",
    "SqliteInboxStore",
    "SqliteNonceStore",
    "SqliteRateLimiter",
    "SqliteTranscriptStore",
    "connect",
    "create_private_file",
]

T = TypeVar("T")

#: How often a batch retries a write lock another process holds, and for how long.
_LOCK_RETRY_S: Final = 0.0005
_LOCK_DEADLINE_S: Final = 5.0

_PURGE_EVERY: Final = 1024


def create_private_file(path: Path) -> None:
    """Create ``path`` with mode 0600 if it does not exist (SQLite keeps the
    mode for its ``-wal`` and ``-shm`` files). An existing file is left as is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreUnavailable(f"cannot create SQLite store {path}: {exc}") from exc
    os.close(fd)


class GroupCommit:
    """Writes submitted during one event-loop iteration share one transaction.

    A write is a function of the connection that either raises before it
    writes anything, or writes with single statements (each atomic on its
    own); its outcome (value or exception) is delivered only after the
    shared ``COMMIT``, so nothing is reported done before it is durable. A
    ``sqlite3`` failure anywhere fails the whole batch closed
    (:class:`StoreUnavailable`, all rolled back).

    Why: each SQLite transaction costs a lock round and a WAL commit; under
    load the data plane's writes (nonce, request entry, audit event, response
    entry) from many concurrent requests are committed together, and worker
    processes sharing the file take the write lock far less often.
    ``what`` names the write in the error a failed batch reports.

    Waiting for the write lock never blocks the event loop: the connection's
    busy timeout is 0, and a batch that finds the lock taken (another
    process is committing) is retried every :data:`_LOCK_RETRY_S` seconds
    while the loop serves other requests, until :data:`_LOCK_DEADLINE_S`
    after its oldest write arrived (then it fails closed). SQLite's own busy
    handler would sleep the whole process for at least a millisecond.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._queue: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._what: dict[int, str] = {}
        self._scheduled = False
        self._since = 0.0

    async def run(self, what: str, write: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._queue:
            self._since = loop.time()
        self._queue.append((write, future))
        self._what[id(future)] = what
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _begin(self) -> bool:
        """Take the write lock now, or schedule a retry and return False."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            loop = asyncio.get_running_loop()
            busy = exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if busy and loop.time() - self._since < _LOCK_DEADLINE_S:
                self._scheduled = True
                loop.call_later(_LOCK_RETRY_S, self._flush)
                return False
            raise
        return True

    def _flush(self) -> None:
        self._scheduled = False
        try:
            if not self._begin():
                return
        except sqlite3.Error as exc:
            self._fail(self._queue, self._what, exc)
            self._queue, self._what = [], {}
            return
        batch, self._queue = self._queue, []
        whats, self._what = self._what, {}
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            with _in_transaction(self._conn) as conn:
                for write, future in batch:
                    try:
                        outcomes.append((future, write(conn), None))
                    except sqlite3.Error:
                        raise
                    except Exception as exc:  # the write's own refusal; it wrote nothing
                        outcomes.append((future, None, exc))
        except sqlite3.Error as exc:
            self._fail(batch, whats, exc)
            return
        for future, value, refusal in outcomes:
            if future.done():  # cancelled by its caller; the write stands
                continue
            if refusal is not None:
                future.set_exception(refusal)
            else:
                future.set_result(value)

    @staticmethod
    def _fail(
        batch: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]],
        whats: dict[int, str],
        exc: sqlite3.Error,
    ) -> None:
        for _, future in batch:
            if not future.done():
                what = whats.get(id(future), "write")
                unavailable = StoreUnavailable(f"SQLite {what}: {exc}")
                unavailable.__cause__ = exc
                future.set_exception(unavailable)


class _Connection(sqlite3.Connection):
    """A connection that carries its :class:`GroupCommit`."""

    group_commit: GroupCommit


def _group_commit(conn: sqlite3.Connection) -> GroupCommit:
    if not isinstance(conn, _Connection):
        raise TypeError("open SQLite stores with gateway.stores.sqlite.connect()")
    return conn.group_commit


def _set_wal(conn: sqlite3.Connection, attempts: int = 200) -> None:
    """Switch to WAL. On a brand-new file, processes opening it together can
    get ``database is locked`` at once (the busy timeout does not apply to
    this step), so retry for up to about two seconds at start-up."""
    for attempt in range(attempts):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or attempt == attempts - 1:
                raise
            time.sleep(0.01)


def connect(path: Path | str, *, autocheckpoint: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), WAL, busy timeout.

    ``autocheckpoint=False`` leaves WAL checkpoints to a :class:`Checkpointer`.
    """
    try:
        conn = sqlite3.connect(
            path,
            isolation_level=None,
            check_same_thread=False,
            timeout=5.0,
            factory=_Connection,
        )
        conn.group_commit = GroupCommit(conn)
        _set_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA journal_size_limit=67108864")  # truncate the WAL to 64 MiB
        if not autocheckpoint:
            conn.execute("PRAGMA wal_autocheckpoint=0")
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open SQLite store {path}: {exc}") from exc
    return conn


class Checkpointer:
    """WAL checkpoints on a worker thread, with a connection of their own.

    A checkpoint copies the write-ahead log into the database and, with
    ``synchronous=NORMAL``, is the one step that calls ``fsync``. SQLite runs
    it inside whichever commit crosses ``wal_autocheckpoint``, which on the
    event loop stalls every request in flight for the length of an fsync
    (milliseconds). The serving connection therefore turns automatic
    checkpoints off and this task runs a ``PASSIVE`` checkpoint (it never
    blocks writers or readers) every ``interval_s`` seconds off the loop.
    """

    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            with suppress(sqlite3.Error):  # a failed checkpoint is retried next time
                await asyncio.to_thread(self._conn.execute, "PRAGMA wal_checkpoint(PASSIVE)")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with suppress(sqlite3.Error):
            await asyncio.to_thread(self._conn.execute, "PRAGMA wal_checkpoint(PASSIVE)")
        self._conn.close()


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn any ``sqlite3`` failure in the block into :class:`StoreUnavailable`."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"{what}: {exc}") from exc


def _rollback(conn: sqlite3.Connection) -> None:
    """Undo an open transaction; a failure here is already being reported."""
    with suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.execute("ROLLBACK")


@contextmanager
def _in_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """The open transaction: committed if the block returns, rolled back if
    it raises or the commit fails."""
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _create(conn: sqlite3.Connection, what: str, *statements: str) -> None:
    with _translated(f"cannot create {what} table"):
        for statement in statements:
            conn.execute(statement)


# Compare-and-append as ONE statement (atomic under SQLite's write lock, no
# BEGIN/SELECT/COMMIT round): the chain has no gaps and (chain, seq) is a
# primary key, so "row seq-1 exists with hash == prev, and row seq does not"
# is exactly "the head is (seq-1, prev)". OR IGNORE turns the taken-seq case
# into rowcount 0; a first record needs prev == GENESIS (checked in Python).
_INSERT_FIRST_ENTRY: Final = (
    "INSERT OR IGNORE INTO transcript_entries (conversation, seq, hash, record, body)"
    " VALUES (?, ?, ?, ?, ?)"
)
_INSERT_NEXT_ENTRY: Final = (
    "INSERT OR IGNORE INTO transcript_entries (conversation, seq, hash, record, body)"
    " SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM transcript_entries"
    " WHERE conversation = ? AND seq = ? AND hash = ?)"
)
_INSERT_FIRST_EVENT: Final = (
    "INSERT OR IGNORE INTO audit_events (seq, hash, record) VALUES (?, ?, ?)"
)
_INSERT_NEXT_EVENT: Final = (
    "INSERT OR IGNORE INTO audit_events (seq, hash, record) SELECT ?, ?, ?"
    " WHERE EXISTS (SELECT 1 FROM audit_events WHERE seq = ? AND hash = ?)"
)
_INSERT_ONCE: Final = "INSERT OR IGNORE INTO audit_once (key, seq) VALUES (?, ?)"


class SqliteNonceStore:
    """:class:`~protocol.ports.NonceStore` on SQLite: a primary-key insert per claim.

    A claim lives until the injected ``now`` reaches ``now_at_claim + ttl_s``.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._writes = _group_commit(conn)
        self._claims = 0
        _create(
            conn,
            "nonce",
            "CREATE TABLE IF NOT EXISTS nonces ("
            " scope TEXT NOT NULL, nonce TEXT NOT NULL, expires REAL NOT NULL,"
            " PRIMARY KEY (scope, nonce)) WITHOUT ROWID",
            "CREATE INDEX IF NOT EXISTS nonces_expires ON nonces (expires)",
        )

    async def claim(self, scope: str, nonce: str, *, ttl_s: int, now: float) -> bool:
        """True for the first claim of ``(scope, nonce)`` while it lives.

        One statement, so one atomic step under SQLite's write lock: insert, or
        take over a row whose ``expires`` has passed; a live row is left alone
        (``rowcount`` 0: a replay).
        """
        check_ttl(ttl_s)
        self._claims += 1
        purge = self._claims % _PURGE_EVERY == 0

        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO nonces (scope, nonce, expires) VALUES (?, ?, ?)"
                " ON CONFLICT (scope, nonce) DO UPDATE SET expires = excluded.expires"
                " WHERE nonces.expires <= ?",
                (scope, nonce, now + ttl_s, now),
            )
            if purge:
                conn.execute("DELETE FROM nonces WHERE expires <= ?", (now,))
            return cursor.rowcount == 1

        return await self._writes.run("nonce store", write)


class SqliteTranscriptStore:
    """:class:`~protocol.ports.TranscriptStore` on SQLite.

    Invariants: for every conversation the rows form one chain ``0..head.seq``
    without gaps (each insert happens in the transaction that checked it
    extends the head); a row's ``record`` is its entry's canonical bytes and
    ``body`` is the body sealed with ``cipher`` under
    :func:`~gateway.stores.common.body_aad`, or NULL.
    """

    def __init__(self, conn: sqlite3.Connection, cipher: StoreCipher) -> None:
        self._conn = conn
        self._writes = _group_commit(conn)
        self._cipher = cipher
        _create(
            conn,
            "transcript",
            "CREATE TABLE IF NOT EXISTS transcript_entries ("
            " conversation TEXT NOT NULL, seq INTEGER NOT NULL CHECK (seq >= 0),"
            " hash TEXT NOT NULL, record BLOB NOT NULL, body BLOB,"
            " PRIMARY KEY (conversation, seq))",
        )

    async def head(self, conversation: str) -> ChainHead:
        """The newest entry's ``(seq, hash)``; ``ChainHead()`` when empty."""
        with _translated("transcript head"):
            return _transcript_head(self._conn, conversation)

    async def append(self, entry: TranscriptEntry, body: bytes | None) -> None:
        """Compare-and-append in one ``BEGIN IMMEDIATE`` transaction, body included."""
        require_hash(entry)
        conversation = entry.conversation
        sealed = None if body is None else seal_body(self._cipher, conversation, entry.seq, body)
        record = entry.canonical()
        if entry.seq == 0 and entry.prev != GENESIS:
            raise ChainConflict("a first entry must link to GENESIS")
        row = (conversation, entry.seq, entry.hash, record, sealed)

        def write(conn: sqlite3.Connection) -> None:
            if entry.seq == 0:
                inserted = conn.execute(_INSERT_FIRST_ENTRY, row).rowcount
            else:
                predecessor = (conversation, entry.seq - 1, entry.prev)
                inserted = conn.execute(_INSERT_NEXT_ENTRY, row + predecessor).rowcount
            if inserted != 1:  # nothing was written
                raise ChainConflict(
                    f"append at seq {entry.seq} does not extend the head; re-read and retry"
                )

        await self._writes.run("transcript append", write)

    async def append_next(
        self,
        conversation: str,
        build: Callable[[ChainHead], TranscriptEntry],
        body: bytes | None,
    ) -> TranscriptEntry:
        """Build the next entry on the head *inside* the write transaction and store it.

        The head is read under SQLite's write lock (earlier writes of the same
        group commit included), so the append cannot conflict, across
        processes either. ``build`` must return an entry of ``conversation``
        that extends the head it is given; if it raises, nothing is written.
        """

        def write(conn: sqlite3.Connection) -> TranscriptEntry:
            head = _transcript_head(conn, conversation)
            entry = build(head)
            if entry.conversation != conversation:
                raise ValueError("built entry belongs to another conversation")
            require_extends(head, entry)
            require_hash(entry)
            sealed = (
                None if body is None else seal_body(self._cipher, conversation, entry.seq, body)
            )
            row = (conversation, entry.seq, entry.hash, entry.canonical(), sealed)
            if conn.execute(_INSERT_FIRST_ENTRY, row).rowcount != 1:  # pragma: no cover
                raise ChainConflict("the head moved inside the write lock")
            return entry

        return await self._writes.run("transcript append", write)

    async def read(
        self, conversation: str, *, after_seq: int = -1, limit: int = 1000
    ) -> Sequence[TranscriptEntry]:
        """Entries with ``seq > after_seq`` in order, at most ``limit``."""
        span = read_span(after_seq, limit)
        if span is None:
            return ()
        with _translated("transcript read"):
            rows = self._conn.execute(
                "SELECT seq, record FROM transcript_entries"
                " WHERE conversation = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                (conversation, *span),
            ).fetchall()
        return tuple(
            load_record(TranscriptEntry, bytes(data), seq=seq, scope=conversation)
            for seq, data in rows
        )

    async def read_body(self, conversation: str, seq: int) -> bytes | None:
        """The decrypted body of entry ``seq``; None if it had none (or no such entry)."""
        if not stored_seq(seq):
            return None
        with _translated("transcript body read"):
            row = self._conn.execute(
                "SELECT body FROM transcript_entries WHERE conversation = ? AND seq = ?",
                (conversation, seq),
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return open_body(self._cipher, conversation, seq, bytes(row[0]))


def _transcript_head(conn: sqlite3.Connection, conversation: str) -> ChainHead:
    row = conn.execute(
        "SELECT seq, hash FROM transcript_entries WHERE conversation = ? ORDER BY seq DESC LIMIT 1",
        (conversation,),
    ).fetchone()
    return ChainHead() if row is None else ChainHead(int(row[0]), str(row[1]))


class SqliteAuditLog:
    """:class:`~protocol.ports.AuditLog` on SQLite: one chain ``0..head.seq``, no gaps."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._writes = _group_commit(conn)
        _create(
            conn,
            "audit",
            "CREATE TABLE IF NOT EXISTS audit_events ("
            " seq INTEGER PRIMARY KEY CHECK (seq >= 0), hash TEXT NOT NULL,"
            " record BLOB NOT NULL)",
        )
        _create(
            conn,
            "audit once",
            "CREATE TABLE IF NOT EXISTS audit_once ("
            " key TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID",
        )

    async def head(self) -> ChainHead:
        with _translated("audit head"):
            return _audit_head(self._conn)

    async def append(self, event: AuditEvent, *, once: str | None = None) -> bool:
        """Compare-and-append in one ``BEGIN IMMEDIATE`` transaction; with
        ``once``, nothing when that key is already in ``audit_once``."""
        require_hash(event)
        record = event.canonical()
        if event.seq == 0 and event.prev != GENESIS:
            raise ChainConflict("a first event must link to GENESIS")
        row = (event.seq, event.hash, record)

        def write(conn: sqlite3.Connection) -> bool:
            if once is not None and _recorded(conn, once):
                return False
            if event.seq == 0:
                inserted = conn.execute(_INSERT_FIRST_EVENT, row).rowcount
            else:
                inserted = conn.execute(
                    _INSERT_NEXT_EVENT, (*row, event.seq - 1, event.prev)
                ).rowcount
            if inserted != 1:  # nothing was written
                raise ChainConflict(
                    f"audit append at seq {event.seq} does not extend the head; re-read and retry"
                )
            if once is not None:
                conn.execute(_INSERT_ONCE, (once, event.seq))
            return True

        return await self._writes.run("audit append", write)

    async def append_next(
        self, build: Callable[[ChainHead], AuditEvent], *, once: str | None = None
    ) -> AuditEvent | None:
        """Build the next event on the head inside the write transaction (see
        :meth:`SqliteTranscriptStore.append_next`); None, and nothing written,
        when ``once`` is already recorded."""

        def write(conn: sqlite3.Connection) -> AuditEvent | None:
            if once is not None and _recorded(conn, once):
                return None
            head = _audit_head(conn)
            event = build(head)
            require_extends(head, event)
            require_hash(event)
            row = (event.seq, event.hash, event.canonical())
            if conn.execute(_INSERT_FIRST_EVENT, row).rowcount != 1:  # pragma: no cover
                raise ChainConflict("the head moved inside the write lock")
            if once is not None:
                conn.execute(_INSERT_ONCE, (once, event.seq))
            return event

        return await self._writes.run("audit append", write)

    async def read(self, *, after_seq: int = -1, limit: int = 1000) -> Sequence[AuditEvent]:
        span = read_span(after_seq, limit)
        if span is None:
            return ()
        with _translated("audit read"):
            rows = self._conn.execute(
                "SELECT seq, record FROM audit_events WHERE seq BETWEEN ? AND ? ORDER BY seq",
                span,
            ).fetchall()
        return tuple(load_record(AuditEvent, bytes(data), seq=seq) for seq, data in rows)


def _recorded(conn: sqlite3.Connection, once: str) -> bool:
    return conn.execute("SELECT 1 FROM audit_once WHERE key = ?", (once,)).fetchone() is not None


def _audit_head(conn: sqlite3.Connection) -> ChainHead:
    row = conn.execute("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
    return ChainHead() if row is None else ChainHead(int(row[0]), str(row[1]))


class SqliteRateLimiter:
    """:class:`~protocol.ports.RateLimiter` on SQLite: fixed windows of the injected clock.

    The read of the counter and its increment share one ``BEGIN IMMEDIATE``
    transaction; a refused hit is not counted. Rows of past windows are purged
    now and then.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._writes = _group_commit(conn)
        self._hits = 0
        _create(
            conn,
            "rate",
            "CREATE TABLE IF NOT EXISTS rate_windows ("
            " key TEXT NOT NULL, window INTEGER NOT NULL, count INTEGER NOT NULL,"
            " expires REAL NOT NULL, PRIMARY KEY (key, window)) WITHOUT ROWID",
            "CREATE INDEX IF NOT EXISTS rate_windows_expires ON rate_windows (expires)",
        )

    async def hit(
        self, key: str, *, limit: int, window_s: float, now: float, cost: int = 1
    ) -> RateDecision:
        """Count ``cost`` against ``key`` in the window holding ``now`` if it fits."""
        check_rate_args(limit, cost)
        window = Window.at(now, window_s)

        def write(conn: sqlite3.Connection) -> RateDecision:
            row = conn.execute(
                "SELECT count FROM rate_windows WHERE key = ? AND window = ?",
                (key, window.index),
            ).fetchone()
            decision, count_it = decide(
                0 if row is None else int(row[0]), cost=cost, limit=limit, window=window
            )
            if count_it:
                conn.execute(
                    "INSERT INTO rate_windows (key, window, count, expires) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (key, window) DO UPDATE SET count = count + excluded.count",
                    (key, window.index, cost, now + window.keep_ms / 1000),
                )
            self._purge(conn, now)
            return decision

        return await self._writes.run("rate limiter", write)

    def _purge(self, conn: sqlite3.Connection, now: float) -> None:
        self._hits += 1
        if self._hits % _PURGE_EVERY == 0:
            conn.execute("DELETE FROM rate_windows WHERE expires <= ?", (now,))


class SqliteBindingStore:
    """:class:`~protocol.ports.BindingStore` on SQLite: one row per ``(kind, key)``.

    A row is live while the injected ``now`` is before ``expires_at``. Binds
    and unbinds are single statements run by the connection's group commit
    (under SQLite's write lock, so atomic across processes sharing the file);
    the owner of a lost bind is read back in the same transaction. Expired
    rows are taken over by the next bind and purged now and then.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._writes = _group_commit(conn)
        self._binds = 0
        _create(
            conn,
            "binding",
            "CREATE TABLE IF NOT EXISTS bindings ("
            " kind TEXT NOT NULL, key TEXT NOT NULL, owner TEXT NOT NULL,"
            " expires_at REAL NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID",
            "CREATE INDEX IF NOT EXISTS bindings_expires_at ON bindings (expires_at)",
        )

    async def bind(self, kind: str, key: str, owner: str, *, ttl_s: int, now: float) -> str:
        """Insert, refresh (same owner) or take over an expired row in one
        upsert; a live row of another owner is left alone and its owner returned."""
        check_binding(kind, key, owner, now=now, ttl_s=ttl_s)
        self._binds += 1
        purge = self._binds % _PURGE_EVERY == 0

        def write(conn: sqlite3.Connection) -> str:
            cursor = conn.execute(
                "INSERT INTO bindings (kind, key, owner, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (kind, key) DO UPDATE"
                " SET owner = excluded.owner, expires_at = excluded.expires_at"
                " WHERE bindings.owner = excluded.owner OR bindings.expires_at <= ?",
                (kind, key, owner, now + ttl_s, now),
            )
            if cursor.rowcount == 1:
                bound = owner
            else:  # a live binding of another owner, read under the same write lock
                row = conn.execute(
                    "SELECT owner FROM bindings WHERE kind = ? AND key = ?", (kind, key)
                ).fetchone()
                bound = str(row[0])
            if purge:
                conn.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
            return bound

        return await self._writes.run("binding store", write)

    async def owner(self, kind: str, key: str, *, now: float) -> str | None:
        """The owner of the live row, or None."""
        check_binding(kind, key, now=now)
        with _translated("binding store"):
            row = self._conn.execute(
                "SELECT owner FROM bindings WHERE kind = ? AND key = ? AND expires_at > ?",
                (kind, key, now),
            ).fetchone()
        return None if row is None else str(row[0])

    async def unbind(self, kind: str, key: str, owner: str, *, now: float) -> bool:
        """Compare-and-delete in one statement: only a live row held by ``owner``."""
        check_binding(kind, key, owner, now=now)

        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "DELETE FROM bindings WHERE kind = ? AND key = ? AND owner = ? AND expires_at > ?",
                (kind, key, owner, now),
            )
            return cursor.rowcount == 1

        return await self._writes.run("binding store", write)


# Inbox statements, each a literal (no SQL is assembled at run time).
_INBOX_TABLES: Final = (
    "CREATE TABLE IF NOT EXISTS inbox_bundles ("
    " bundle_id TEXT PRIMARY KEY, queue TEXT NOT NULL, conversation TEXT NOT NULL,"
    " idempotency_key TEXT NOT NULL, origin TEXT NOT NULL,"
    " status TEXT NOT NULL CHECK (status IN"
    " ('queued', 'claimed', 'decided', 'delivered', 'acknowledged', 'expired', 'cancelled')),"
    " version INTEGER NOT NULL CHECK (version >= 1), bundle_digest TEXT NOT NULL,"
    " sealed_bundle TEXT NOT NULL, created_at REAL NOT NULL, resolve_by REAL NOT NULL,"
    " fence INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_until REAL,"
    " lease_token INTEGER, decision TEXT,"
    " UNIQUE (queue, idempotency_key),"
    " CHECK ((status = 'claimed') = (lease_owner IS NOT NULL)),"
    " CHECK ((lease_owner IS NULL) = (lease_until IS NULL)),"
    " CHECK ((lease_owner IS NULL) = (lease_token IS NULL)))",
    "CREATE INDEX IF NOT EXISTS inbox_by_created ON inbox_bundles (queue, created_at, bundle_id)",
    "CREATE INDEX IF NOT EXISTS inbox_by_status"
    " ON inbox_bundles (queue, status, created_at, bundle_id)",
    "CREATE INDEX IF NOT EXISTS inbox_by_deadline ON inbox_bundles (queue, resolve_by, bundle_id)",
    "CREATE INDEX IF NOT EXISTS inbox_by_lease"
    " ON inbox_bundles (queue, lease_until, bundle_id) WHERE lease_until IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS inbox_events ("
    " bundle_id TEXT NOT NULL, seq INTEGER NOT NULL CHECK (seq >= 0),"
    " event TEXT NOT NULL, PRIMARY KEY (bundle_id, seq))",
)
_INBOX_INSERT: Final = (
    "INSERT INTO inbox_bundles (bundle_id, queue, conversation, idempotency_key, origin,"
    " status, version, bundle_digest, sealed_bundle, created_at, resolve_by)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_INBOX_SELECT: Final = (
    "SELECT bundle_id, queue, conversation, idempotency_key, origin, status, version,"
    " bundle_digest, sealed_bundle, created_at, resolve_by, lease_owner, lease_until,"
    " lease_token, decision FROM inbox_bundles"
)
_INBOX_BY_ID: Final = _INBOX_SELECT + " WHERE bundle_id = ?"
_INBOX_BY_KEY: Final = _INBOX_SELECT + " WHERE queue = ? AND idempotency_key = ?"
_INBOX_LIST: Final = _INBOX_SELECT + " WHERE queue = ? ORDER BY created_at, bundle_id LIMIT ?"
_INBOX_LIST_STATUS: Final = (
    _INBOX_SELECT + " WHERE queue = ? AND status = ? ORDER BY created_at, bundle_id LIMIT ?"
)
_INBOX_CLAIM_STATE: Final = (
    "SELECT status, resolve_by, lease_owner, lease_until, fence FROM inbox_bundles"
    " WHERE bundle_id = ?"
)
_INBOX_LEASE_STATE: Final = (
    "SELECT status, lease_token, lease_until, version, resolve_by FROM inbox_bundles"
    " WHERE bundle_id = ?"
)
_INBOX_STATUS_STATE: Final = "SELECT status, resolve_by FROM inbox_bundles WHERE bundle_id = ?"
_INBOX_CLAIM: Final = (
    "UPDATE inbox_bundles SET status = 'claimed', fence = ?, lease_owner = ?,"
    " lease_until = ?, lease_token = ? WHERE bundle_id = ?"
)
_INBOX_REQUEUE: Final = (
    "UPDATE inbox_bundles SET status = 'queued', lease_owner = NULL, lease_until = NULL,"
    " lease_token = NULL WHERE bundle_id = ?"
)
_INBOX_DECIDE: Final = (
    "UPDATE inbox_bundles SET status = 'decided', decision = ?, version = version + 1,"
    " lease_owner = NULL, lease_until = NULL, lease_token = NULL WHERE bundle_id = ?"
)
_INBOX_OUTCOME: Final = (
    "UPDATE inbox_bundles SET status = ?, version = version + 1, lease_owner = NULL,"
    " lease_until = NULL, lease_token = NULL WHERE bundle_id = ?"
)
_INBOX_LAPSED: Final = (
    "SELECT bundle_id FROM inbox_bundles WHERE queue = ? AND status = 'claimed'"
    " AND lease_until <= ? ORDER BY lease_until, bundle_id LIMIT ?"
)
_INBOX_DUE: Final = (
    "SELECT bundle_id FROM inbox_bundles WHERE queue = ? AND status IN ('queued', 'claimed')"
    " AND resolve_by <= ? ORDER BY resolve_by, bundle_id LIMIT ?"
)
_INBOX_EVENT_COUNT: Final = "SELECT coalesce(max(seq) + 1, 0) FROM inbox_events WHERE bundle_id = ?"
_INBOX_EVENT_INSERT: Final = "INSERT INTO inbox_events (bundle_id, seq, event) VALUES (?, ?, ?)"
_INBOX_EVENTS: Final = "SELECT event FROM inbox_events WHERE bundle_id = ? ORDER BY seq"


class SqliteInboxStore:
    """:class:`~protocol.ports.InboxStore` on SQLite: one row per bundle, one per event.

    ``inbox_bundles`` holds the record, the last fencing token issued
    (``fence``, kept when a lease is dropped so that the next claim's token is
    larger) and the lease columns, which ``CHECK`` constraints keep set
    exactly when the status is ``claimed``. ``(queue, idempotency_key)`` is
    ``UNIQUE``, so an idempotent create is one ``INSERT ... ON CONFLICT DO
    NOTHING`` and the stored row is read back in the same transaction.
    ``inbox_events`` is keyed by ``(bundle_id, seq)``; an append compares
    ``seq`` with the stored count under the write lock.

    Every write is one function run by the connection's group commit, under
    SQLite's write lock (so atomic across processes sharing the file): it
    reads the row, decides with the injected ``now``, and either raises
    before it writes anything or writes. Reads are single ``SELECT``
    statements. The sealed bundle, the decision and the events are stored as
    given and never parsed.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._writes = _group_commit(conn)
        _create(conn, "inbox", *_INBOX_TABLES)

    async def create(self, record: InboxRecord) -> tuple[InboxRecord, bool]:
        """Insert, or read back the record already stored under the key."""
        check_inbox_record(record)
        row = (
            record.bundle_id,
            record.queue,
            record.conversation,
            record.idempotency_key,
            record.origin,
            record.status,
            record.version,
            record.bundle_digest,
            record.sealed_bundle,
            record.created_at,
            record.resolve_by,
        )

        def write(conn: sqlite3.Connection) -> tuple[InboxRecord, bool]:
            if conn.execute(_INBOX_INSERT, row).rowcount == 1:
                return _inbox_record(_inbox_row(conn, record.bundle_id)), True
            stored = conn.execute(_INBOX_BY_KEY, (record.queue, record.idempotency_key)).fetchone()
            if stored is None:  # the insert hit the bundle_id key instead
                raise DuplicateBundle("bundle id is stored under another idempotency key")
            return _inbox_record(stored), False

        return await self._writes.run("inbox create", write)

    async def get(self, bundle_id: str) -> InboxRecord | None:
        """One ``SELECT`` by primary key."""
        if not storable_inbox_id(bundle_id):
            return None
        with _translated("inbox read"):
            row = self._conn.execute(_INBOX_BY_ID, (bundle_id,)).fetchone()
        return None if row is None else _inbox_record(row)

    async def list(
        self, queue: str, *, status: InboxStatus | None = None, limit: int = 100
    ) -> Sequence[InboxRecord]:
        """One ``SELECT`` on the ``(queue[, status], created_at, bundle_id)`` index."""
        check_inbox_page(queue, limit=limit, status=status)
        if limit <= 0:
            return ()
        with _translated("inbox list"):
            if status is None:
                rows = self._conn.execute(_INBOX_LIST, (queue, limit)).fetchall()
            else:
                rows = self._conn.execute(_INBOX_LIST_STATUS, (queue, status, limit)).fetchall()
        return tuple(_inbox_record(row) for row in rows)

    async def claim(self, bundle_id: str, owner: str, *, lease_s: float, now: float) -> Lease:
        """Read the row under the write lock; take, take over or renew the lease."""
        check_inbox_call(bundle_id, now=now, owner=owner, lease_s=lease_s)
        until = float(now + lease_s)

        def write(conn: sqlite3.Connection) -> Lease:
            status, resolve_by, holder, held_until, fence = _inbox_state(
                conn, _INBOX_CLAIM_STATE, bundle_id
            )
            if status not in OPEN_STATUSES:
                raise Conflict(f"bundle is {status}, no longer open")
            if not now < resolve_by:
                raise Conflict("bundle is past its resolve_by")
            if status == "claimed" and now < held_until and holder != owner:
                raise Conflict("another owner holds a live lease")
            token = int(fence) + 1
            conn.execute(_INBOX_CLAIM, (token, owner, until, token, bundle_id))
            return Lease(owner, until, token)

        return await self._writes.run("inbox claim", write)

    async def release(self, bundle_id: str, *, fencing_token: int, now: float) -> None:
        """Drop the live lease named by ``fencing_token``; the bundle is queued again."""
        check_inbox_call(bundle_id, now=now)
        if not counter_in_range(fencing_token):
            raise Conflict("fencing token is not current")

        def write(conn: sqlite3.Connection) -> None:
            status, token, held_until, _, _ = _inbox_state(conn, _INBOX_LEASE_STATE, bundle_id)
            if status != "claimed" or token != fencing_token or not now < held_until:
                raise Conflict("fencing token is not the live lease's")
            conn.execute(_INBOX_REQUEUE, (bundle_id,))

        await self._writes.run("inbox release", write)

    async def decide(
        self, bundle_id: str, *, fencing_token: int, version: int, decision: str, now: float
    ) -> InboxRecord:
        """Check lease, token, version and deadline under the write lock, then record."""
        check_inbox_call(bundle_id, now=now)
        check_opaque("decision", decision)
        if not (counter_in_range(fencing_token) and counter_in_range(version)):
            raise StaleDecision("fencing token or version is not current")

        def write(conn: sqlite3.Connection) -> InboxRecord:
            status, token, held_until, stored_version, resolve_by = _inbox_state(
                conn, _INBOX_LEASE_STATE, bundle_id
            )
            if status != "claimed":
                raise StaleDecision(f"bundle is {status}, not claimed")
            if token != fencing_token:
                raise StaleDecision("fencing token is not the current lease's")
            if not now < held_until:
                raise StaleDecision("the lease lapsed")
            if stored_version != version:
                raise StaleDecision("version is not current")
            if not now < resolve_by:
                raise StaleDecision("bundle is past its resolve_by")
            conn.execute(_INBOX_DECIDE, (decision, bundle_id))
            return _inbox_record(_inbox_row(conn, bundle_id))

        return await self._writes.run("inbox decide", write)

    async def set_status(self, bundle_id: str, status: InboxStatus, *, now: float) -> None:
        """Move along :data:`~protocol.ports.STATUS_TRANSITIONS` under the write lock."""
        check_inbox_call(bundle_id, now=now)
        check_status_target(status)

        def write(conn: sqlite3.Connection) -> None:
            current, resolve_by = _inbox_state(conn, _INBOX_STATUS_STATE, bundle_id)
            if current not in STATUS_TRANSITIONS[status]:
                raise Conflict(f"a bundle that is {current} cannot become {status}")
            if status == "expired" and now < resolve_by:
                raise Conflict("bundle is not due yet")
            conn.execute(_INBOX_OUTCOME, (status, bundle_id))

        await self._writes.run("inbox status", write)

    async def append_event(self, bundle_id: str, event: str, *, seq: int) -> None:
        """Compare-and-append: stored iff ``seq`` is the number of events stored."""
        check_inbox_call(bundle_id)
        check_opaque("event", event)
        if not counter_in_range(seq):
            raise ChainConflict(f"event seq {seq} is not the next position")

        def write(conn: sqlite3.Connection) -> None:
            _inbox_state(conn, _INBOX_STATUS_STATE, bundle_id)
            (length,) = conn.execute(_INBOX_EVENT_COUNT, (bundle_id,)).fetchone()
            if length != seq:
                raise ChainConflict(f"event seq {seq}, but {length} stored; re-read and retry")
            conn.execute(_INBOX_EVENT_INSERT, (bundle_id, seq, event))

        await self._writes.run("inbox event append", write)

    async def events(self, bundle_id: str) -> Sequence[str]:
        """One ``SELECT`` on the ``(bundle_id, seq)`` key."""
        if not storable_inbox_id(bundle_id):
            return ()
        with _translated("inbox events"):
            rows = self._conn.execute(_INBOX_EVENTS, (bundle_id,)).fetchall()
        return tuple(str(event) for (event,) in rows)

    async def requeue_lapsed(
        self, queue: str, *, now: float, limit: int = 100
    ) -> Sequence[InboxRecord]:
        """One transaction: pick the lapsed leases, drop them, read the rows back."""
        check_inbox_page(queue, limit=limit, now=now)
        if limit <= 0:
            return ()

        def write(conn: sqlite3.Connection) -> tuple[InboxRecord, ...]:
            lapsed = conn.execute(_INBOX_LAPSED, (queue, now, limit)).fetchall()
            for (bundle_id,) in lapsed:
                conn.execute(_INBOX_REQUEUE, (bundle_id,))
            return tuple(_inbox_record(_inbox_row(conn, bundle_id)) for (bundle_id,) in lapsed)

        return await self._writes.run("inbox requeue", write)

    async def expire_due(
        self, queue: str, *, now: float, limit: int = 100
    ) -> Sequence[InboxRecord]:
        """One transaction: pick the due open bundles, expire them, read them back."""
        check_inbox_page(queue, limit=limit, now=now)
        if limit <= 0:
            return ()

        def write(conn: sqlite3.Connection) -> tuple[InboxRecord, ...]:
            due = conn.execute(_INBOX_DUE, (queue, now, limit)).fetchall()
            for (bundle_id,) in due:
                conn.execute(_INBOX_OUTCOME, ("expired", bundle_id))
            return tuple(_inbox_record(_inbox_row(conn, bundle_id)) for (bundle_id,) in due)

        return await self._writes.run("inbox expiry", write)


def _inbox_state(conn: sqlite3.Connection, query: str, bundle_id: str) -> Any:
    """The row ``query`` selects for ``bundle_id``; :class:`NotFound` if there is none."""
    row = conn.execute(query, (bundle_id,)).fetchone()
    if row is None:
        raise NotFound("no such bundle")
    return row


def _inbox_row(conn: sqlite3.Connection, bundle_id: str) -> Any:
    """The full row of a bundle (read under the write lock that just wrote it)."""
    return _inbox_state(conn, _INBOX_BY_ID, bundle_id)


def _inbox_record(row: Any) -> InboxRecord:
    """A stored row as a record; a status the store cannot have written fails closed."""
    (
        bundle_id,
        queue,
        conversation,
        idempotency_key,
        origin,
        status,
        version,
        bundle_digest,
        sealed_bundle,
        created_at,
        resolve_by,
        lease_owner,
        lease_until,
        lease_token,
        decision,
    ) = row
    if status not in INBOX_STATUSES:
        raise StoreUnavailable("inbox record has an unknown status (edited file?)")
    lease = None
    if lease_token is not None:
        lease = Lease(str(lease_owner), float(lease_until), int(lease_token))
    return InboxRecord(
        bundle_id=str(bundle_id),
        queue=str(queue),
        conversation=str(conversation),
        idempotency_key=str(idempotency_key),
        origin=str(origin),
        status=cast("InboxStatus", status),
        version=int(version),
        bundle_digest=str(bundle_digest),
        sealed_bundle=str(sealed_bundle),
        created_at=float(created_at),
        resolve_by=float(resolve_by),
        lease=lease,
        decision=None if decision is None else str(decision),
    )
