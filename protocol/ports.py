"""Store ports: the only way state reaches the protocol core.

Each port is a :class:`typing.Protocol` with two implementations in
``gateway/`` (SQLite, the embedded default, and Redis, for fleets), held to
one contract test suite. The docstrings below *are* the contract: every
implementation must give the stated atomicity, and must raise
:class:`~protocol.errors.StoreUnavailable` (never return a default) when it
cannot reach its backend, so that the gateway fails closed.

Times are passed in (``now``, Unix seconds as ``float``) rather than read
from a clock inside the store, so behaviour is deterministic under test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from protocol.audit import AuditEvent
from protocol.chain import ChainHead
from protocol.transcript import TranscriptEntry

__all__ = [
    "AuditLog",
    "InboxRecord",
    "InboxStatus",
    "InboxStore",
    "Lease",
    "NonceStore",
    "RateDecision",
    "RateLimiter",
    "TranscriptStore",
]


@runtime_checkable
class NonceStore(Protocol):
    """One-time nonces (RFC 9421 s7.2.2)."""

    async def claim(self, scope: str, nonce: str, *, ttl_s: int, now: float) -> bool:
        """Record ``(scope, nonce)`` for ``ttl_s`` seconds.

        Returns True for the first claim and False for every later one while
        the record lives. Atomic across all processes sharing the store: of N
        concurrent claims of one nonce exactly one returns True (Redis
        ``SET NX EX``; SQLite ``INSERT`` on a primary key in one transaction).
        """
        ...


@runtime_checkable
class TranscriptStore(Protocol):
    """Per-conversation hash chains plus the bodies they describe."""

    async def head(self, conversation: str) -> ChainHead:
        """The current head; ``ChainHead()`` (seq -1, GENESIS) when empty."""
        ...

    async def append(self, entry: TranscriptEntry, body: bytes | None) -> None:
        """Compare-and-append: store ``entry`` iff ``entry.seq == head.seq + 1``
        and ``entry.prev == head.hash``, atomically with its body (encrypted
        at rest). Otherwise raise :class:`~protocol.errors.ChainConflict` and
        store nothing; the caller re-reads the head and retries. Concurrent
        appends to one conversation therefore never fork the chain."""
        ...

    async def read(
        self, conversation: str, *, after_seq: int = -1, limit: int = 1000
    ) -> Sequence[TranscriptEntry]:
        """Entries with ``seq > after_seq`` in order, at most ``limit``."""
        ...

    async def read_body(self, conversation: str, seq: int) -> bytes | None:
        """The decrypted body of entry ``seq``, or None if it had none."""
        ...


@runtime_checkable
class AuditLog(Protocol):
    """The append-only audit chain (one chain per store)."""

    async def head(self) -> ChainHead: ...

    async def append(self, event: AuditEvent) -> None:
        """Compare-and-append, as :meth:`TranscriptStore.append`."""
        ...

    async def read(self, *, after_seq: int = -1, limit: int = 1000) -> Sequence[AuditEvent]: ...


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Outcome of one rate-limit check."""

    allowed: bool
    remaining: int
    retry_after_s: float


@runtime_checkable
class RateLimiter(Protocol):
    """Fixed or sliding window counters, shared fleet-wide when the store is."""

    async def hit(
        self, key: str, *, limit: int, window_s: float, now: float, cost: int = 1
    ) -> RateDecision:
        """Count ``cost`` against ``key``; atomic (one Lua script / one transaction)."""
        ...


InboxStatus = Literal[
    "queued", "claimed", "decided", "delivered", "acknowledged", "expired", "cancelled"
]


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a bundle and until when. ``fencing_token`` strictly increases
    with every successful claim of the bundle, so a holder whose lease lapsed
    cannot act after someone else claimed it."""

    owner: str
    until: float
    fencing_token: int


@dataclass(frozen=True, slots=True)
class InboxRecord:
    """A handoff as the inbox stores it. The bundle is ciphertext only."""

    bundle_id: str
    queue: str
    conversation: str
    idempotency_key: str
    origin: str
    status: InboxStatus
    version: int
    bundle_digest: str
    sealed_bundle: str
    created_at: float
    resolve_by: float
    lease: Lease | None = None
    decision: str | None = None


@runtime_checkable
class InboxStore(Protocol):
    """Handoff bundles, their leases, decisions and lifecycle events."""

    async def create(self, record: InboxRecord) -> tuple[InboxRecord, bool]:
        """Insert unless a record with the same ``(queue, idempotency_key)``
        exists; return ``(stored record, created?)``. Atomic: N concurrent
        creates with one key store one record."""
        ...

    async def get(self, bundle_id: str) -> InboxRecord | None: ...

    async def list(
        self, queue: str, *, status: InboxStatus | None = None, limit: int = 100
    ) -> Sequence[InboxRecord]: ...

    async def claim(self, bundle_id: str, owner: str, *, lease_s: float, now: float) -> Lease:
        """Take the lease if free or lapsed (or renew it for its owner), with a
        new fencing token. Raises :class:`~protocol.errors.Conflict` if
        another owner holds a live lease or the bundle is no longer open."""
        ...

    async def release(self, bundle_id: str, *, fencing_token: int, now: float) -> None:
        """Give the lease back; Conflict unless ``fencing_token`` is current."""
        ...

    async def decide(
        self, bundle_id: str, *, fencing_token: int, version: int, decision: str, now: float
    ) -> InboxRecord:
        """Record the (already verified) signed decision exactly once: only if
        the lease with ``fencing_token`` is live and ``version`` is current.
        A second or stale decision raises
        :class:`~protocol.errors.StaleDecision`."""
        ...

    async def set_status(self, bundle_id: str, status: InboxStatus, *, now: float) -> None: ...

    async def append_event(self, bundle_id: str, event: str, *, seq: int) -> None:
        """Compare-and-append a signed lifecycle event (JWS) at position ``seq``."""
        ...

    async def events(self, bundle_id: str) -> Sequence[str]: ...
