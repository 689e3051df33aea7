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

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol, runtime_checkable

from protocol.audit import AuditEvent
from protocol.chain import ChainHead
from protocol.transcript import TranscriptEntry

__all__ = [
    "BINDING_KIND",
    "MAX_BINDING_TEXT",
    "MAX_BINDING_TTL_S",
    "AuditLog",
    "BindingStore",
    "InboxRecord",
    "InboxStatus",
    "InboxStore",
    "Lease",
    "NonceStore",
    "RateDecision",
    "RateLimiter",
    "TranscriptStore",
    "check_binding",
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


#: A binding ``kind``: a short token naming one namespace of handles.
BINDING_KIND: Final = re.compile(r"[a-z0-9-]{1,32}")
#: Longest ``key`` and ``owner`` a binding accepts, in characters.
MAX_BINDING_TEXT: Final = 1024
#: Longest binding lifetime (ten years), far inside what Redis PEXPIRE and float times hold.
MAX_BINDING_TTL_S: Final = 10 * 366 * 86400


@runtime_checkable
class BindingStore(Protocol):
    """Who owns a handle the gateway handed out (session id, task id, request state).

    A handle is not a credential: MCP 2025-11-25 Security Best Practices
    ("Session Hijacking": session ids SHOULD be bound to the user) and the
    2026-07-28 revision (server-minted state handles, e.g. MRTR
    ``requestState``, must be bound to the verified user), and A2A v1.0 s13.1
    (tasks are scoped to their caller; others must not learn they exist).
    The gateway binds each handle to the verified identity that obtained it
    and answers not-found to everyone else.

    ``(kind, key)`` names a binding; kinds are separate namespaces. Every
    method checks its arguments with :func:`check_binding` (``ValueError``)
    before touching the backend. A binding lives while ``now < expires_at``,
    ``expires_at`` being the ``now`` of the bind that last set it plus its
    ``ttl_s``, measured by the injected clock in every backend; an expired
    binding counts as absent.
    """

    async def bind(self, kind: str, key: str, owner: str, *, ttl_s: int, now: float) -> str:
        """Bind ``(kind, key)`` to ``owner`` unless a live binding exists; return
        the owner bound now.

        Atomic across processes: of N concurrent binds of one key with
        different owners, all N return the same owner (the first). Re-binding
        by the same owner refreshes the TTL (``expires_at = now + ttl_s``); a
        bind by another owner changes nothing while the binding lives. Expired
        bindings count as absent, so the next bind takes them over.
        """
        ...

    async def owner(self, kind: str, key: str, *, now: float) -> str | None:
        """The owner of the live binding of ``(kind, key)``, or None."""
        ...

    async def unbind(self, kind: str, key: str, owner: str, *, now: float) -> bool:
        """Remove the binding if ``owner`` holds it (live); True if removed.

        Never removes another owner's binding (atomic compare-and-delete);
        False for an absent or expired binding.
        """
        ...


def check_binding(
    kind: str, key: str, owner: str | None = None, *, now: float, ttl_s: int | None = None
) -> None:
    """Raise ``ValueError`` unless the arguments of a :class:`BindingStore` call are valid.

    ``kind`` matches :data:`BINDING_KIND`; ``key`` and ``owner`` are 1 to
    :data:`MAX_BINDING_TEXT` characters that encode as UTF-8 (no lone
    surrogates); ``now`` is finite; ``ttl_s``, when given, is in
    ``1..MAX_BINDING_TTL_S``. These are programming errors, never store
    failures: cheap checks (types are the type checker's job), done before
    any I/O.
    """
    if not BINDING_KIND.fullmatch(kind):
        raise ValueError("binding kind must match [a-z0-9-]{1,32}")
    _check_text("binding key", key)
    if owner is not None:
        _check_text("binding owner", owner)
    if not math.isfinite(now):
        raise ValueError("now must be a finite number")
    if ttl_s is not None and not 1 <= ttl_s <= MAX_BINDING_TTL_S:
        raise ValueError(f"ttl_s must be in 1..{MAX_BINDING_TTL_S}")


def _check_text(what: str, value: str) -> None:
    if not 1 <= len(value) <= MAX_BINDING_TEXT:
        raise ValueError(f"{what} must be 1..{MAX_BINDING_TEXT} characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{what} must be valid Unicode (no lone surrogates)") from None
