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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol, runtime_checkable

from protocol.audit import AuditEvent
from protocol.chain import ChainHead
from protocol.transcript import TranscriptEntry

__all__ = [
    "BINDING_KIND",
    "INBOX_STATUSES",
    "MAX_BINDING_TEXT",
    "MAX_BINDING_TTL_S",
    "MAX_INBOX_COUNTER",
    "MAX_INBOX_PAGE",
    "MAX_LEASE_S",
    "OPEN_STATUSES",
    "STATUS_TRANSITIONS",
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
    "check_inbox_call",
    "check_inbox_page",
    "check_inbox_record",
    "check_opaque",
    "check_status_target",
    "counter_in_range",
    "storable_inbox_id",
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

    async def append(self, event: AuditEvent, *, once: str | None = None) -> bool:
        """Compare-and-append, as :meth:`TranscriptStore.append`; True when written.

        ``once`` is an idempotency key: when an event was already appended
        under it, nothing is written and the answer is False. The check and
        the append are one atomic step, so of any number of writers (retries,
        concurrent requests, other gateways) exactly one writes.
        """
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

#: Every :data:`InboxStatus`, in lifecycle order.
INBOX_STATUSES: Final[tuple[InboxStatus, ...]] = (
    "queued",
    "claimed",
    "decided",
    "delivered",
    "acknowledged",
    "expired",
    "cancelled",
)
#: Statuses of an *open* bundle: it can be claimed and decided until its ``resolve_by``.
OPEN_STATUSES: Final[frozenset[InboxStatus]] = frozenset({"queued", "claimed"})
#: What :meth:`InboxStore.set_status` may do: target status -> statuses it may follow.
#: The other moves need a lease and go through ``claim``, ``release`` and ``decide``.
STATUS_TRANSITIONS: Final[Mapping[InboxStatus, frozenset[InboxStatus]]] = {
    "expired": OPEN_STATUSES,
    "cancelled": OPEN_STATUSES,
    "delivered": frozenset({"decided", "expired", "cancelled"}),
    "acknowledged": frozenset({"delivered"}),
}
#: Longest lease a claim may take, in seconds (the queue configuration's upper bound).
MAX_LEASE_S: Final = 24 * 3600
#: Most records one ``list``, ``requeue_lapsed`` or ``expire_due`` call returns.
MAX_INBOX_PAGE: Final = 1000
#: Largest version, fencing token or event position a store keeps (exact in every backend:
#: SQLite int64, Redis integers, Lua doubles).
MAX_INBOX_COUNTER: Final = (1 << 53) - 1


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a bundle and until when. ``fencing_token`` strictly increases
    with every successful claim of the bundle (renewals included), so a holder
    whose lease lapsed, or who renewed it, cannot act under the old token."""

    owner: str
    until: float
    fencing_token: int


@dataclass(frozen=True, slots=True)
class InboxRecord:
    """A handoff as the inbox stores it. The bundle is ciphertext only.

    Invariants every store keeps: ``lease`` is set exactly when ``status`` is
    ``"claimed"``; ``decision`` is set once, by :meth:`InboxStore.decide`,
    and kept through ``delivered`` and ``acknowledged``; ``version`` never
    goes down. ``sealed_bundle`` and ``decision`` are opaque strings (a JWE
    and a JWS) that no store parses.
    """

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
    """Handoff bundles, their leases, decisions and lifecycle events
    (DESIGN "Human handoff": ``queued -> claimed (lease, fencing token) ->
    decided -> delivered -> acknowledged``, plus released, expired, cancelled).

    **Clock.** Every decision about time uses the caller's ``now`` (Unix
    seconds), in every backend; no store reads a clock. A lease is *live*
    while ``now < lease.until`` and *lapsed* from ``lease.until`` on. A bundle
    is *open* while its status is in :data:`OPEN_STATUSES` and
    ``now < resolve_by``; from ``resolve_by`` on it is *due*: it can no longer
    be claimed or decided, only expired or cancelled (fail closed: at any one
    ``now`` a bundle is either decidable or expirable, never both).

    **Lapsed leases** stay in the record (status ``"claimed"``) until the next
    :meth:`claim` takes them over or :meth:`requeue_lapsed` returns them to
    ``"queued"``; ``get`` and ``list`` take no ``now`` and report what is
    stored. A lapsed lease cannot act: ``release`` and ``decide`` refuse it.

    **Versions.** ``version`` (from the created record, >= 1) increases by one
    with every outcome the store records: :meth:`decide`, :meth:`set_status`,
    :meth:`expire_due`. Lease moves (claim, release, requeue) leave it alone;
    the fencing token orders those.

    **Errors.** Each mutating step is atomic across every process sharing the
    store and either happens entirely or raises and changes nothing. An
    unknown ``bundle_id`` is :class:`~protocol.errors.NotFound` for every
    method but ``get`` (None) and ``events`` (empty). Arguments of the other
    methods outside their domain (:func:`check_inbox_record`,
    :func:`check_inbox_call`, :func:`check_inbox_page`) raise ``ValueError``
    before any I/O. A backend failure is
    :class:`~protocol.errors.StoreUnavailable`, never a default.
    """

    async def create(self, record: InboxRecord) -> tuple[InboxRecord, bool]:
        """Insert unless a record with the same ``(queue, idempotency_key)``
        exists; return ``(stored record, created?)``. Atomic: N concurrent
        creates with one key store one record, exactly one caller gets
        ``created? = True`` and every caller gets that record's ``bundle_id``
        (a handoff fired twice is handled once). The record must be new:
        ``status`` ``"queued"``, no lease, no decision. A ``bundle_id`` that
        is already stored under another ``(queue, idempotency_key)`` raises
        :class:`~protocol.errors.DuplicateBundle` and stores nothing."""
        ...

    async def get(self, bundle_id: str) -> InboxRecord | None:
        """The stored record, or None if there is none. An id no record can
        have (:func:`storable_inbox_id` is False: ids arrive from callers, e.g.
        as an A2A task id) is None without touching the backend."""
        ...

    async def list(
        self, queue: str, *, status: InboxStatus | None = None, limit: int = 100
    ) -> Sequence[InboxRecord]:
        """Records of ``queue`` (with ``status``, if given), ordered by
        ``created_at`` then ``bundle_id``, at most ``limit``
        (1..:data:`MAX_INBOX_PAGE`; 0 or less: none). Every record returned has
        ``status`` as read; a record that changes status while the list is
        read may be left out."""
        ...

    async def claim(self, bundle_id: str, owner: str, *, lease_s: float, now: float) -> Lease:
        """Take the lease if free or lapsed (or renew it for its owner), with a
        new fencing token: the bundle's previous token plus one, so tokens
        strictly increase across every claim, renewals and takeovers alike,
        and the old token stops working. The lease runs to ``now + lease_s``
        (``0 < lease_s <= MAX_LEASE_S``); the status becomes ``"claimed"``.
        Raises :class:`~protocol.errors.Conflict` if another owner holds a live
        lease or the bundle is no longer open (decided, closed, or due). Of N
        concurrent claims by different owners exactly one succeeds."""
        ...

    async def release(self, bundle_id: str, *, fencing_token: int, now: float) -> None:
        """Give the lease back: the bundle returns to ``"queued"`` with no lease.
        :class:`~protocol.errors.Conflict` unless ``fencing_token`` is the live
        lease's (a lapsed lease is already free and cannot be released)."""
        ...

    async def decide(
        self, bundle_id: str, *, fencing_token: int, version: int, decision: str, now: float
    ) -> InboxRecord:
        """Record the (already verified) signed decision exactly once: only if
        the lease with ``fencing_token`` is live, ``version`` is current and
        the bundle is not due. The status becomes ``"decided"``, the lease is
        dropped, ``version`` increases; the record as stored is returned. A
        second or stale decision (status not claimed, another or lapsed token,
        old version, past ``resolve_by``) raises
        :class:`~protocol.errors.StaleDecision` and changes nothing."""
        ...

    async def set_status(self, bundle_id: str, status: InboxStatus, *, now: float) -> None:
        """Move the bundle to ``status`` along :data:`STATUS_TRANSITIONS`
        (``expired`` or ``cancelled`` from an open status, dropping any lease;
        ``delivered`` after an outcome; ``acknowledged`` after delivery);
        ``version`` increases. ``"expired"`` also needs ``resolve_by <= now``.
        Any other move raises :class:`~protocol.errors.Conflict` and changes
        nothing; a target outside :data:`STATUS_TRANSITIONS` (``queued``,
        ``claimed``, ``decided``: they need a lease) is a ``ValueError``."""
        ...

    async def append_event(self, bundle_id: str, event: str, *, seq: int) -> None:
        """Compare-and-append a signed lifecycle event (JWS, opaque) at
        position ``seq``: stored iff ``seq`` equals the number of events
        stored, else :class:`~protocol.errors.ChainConflict` and nothing
        stored (the caller re-reads :meth:`events` and retries, as with
        :meth:`TranscriptStore.append`). Concurrent appends never fork or
        leave a gap; the chain's hashes are checked by
        ``protocol.lifecycle.verify_events``, not by the store."""
        ...

    async def events(self, bundle_id: str) -> Sequence[str]:
        """The stored events in ``seq`` order; empty for an unknown bundle
        (and, as in :meth:`get`, for an id no record can have)."""
        ...

    async def requeue_lapsed(
        self, queue: str, *, now: float, limit: int = 100
    ) -> Sequence[InboxRecord]:
        """Return bundles of ``queue`` whose lease lapsed (``until <= now``) to
        ``"queued"`` with no lease, earliest lease end first (then
        ``bundle_id``), at most ``limit``; return them as stored now. Each bundle moves
        atomically; the bundle's next claim still gets a larger fencing token."""
        ...

    async def expire_due(
        self, queue: str, *, now: float, limit: int = 100
    ) -> Sequence[InboxRecord]:
        """Expire open bundles of ``queue`` that are due (``resolve_by <= now``),
        earliest deadline first (then ``bundle_id``), at most ``limit``, exactly
        as ``set_status(bundle_id, "expired", now=now)`` would (lease dropped,
        ``version`` + 1); return them as stored now. The caller records each
        ``expired`` event and delivers the fail-closed outcome
        (``sla.on_expiry``)."""
        ...


def check_inbox_record(record: InboxRecord) -> None:
    """Raise ``ValueError`` unless ``record`` may be passed to :meth:`InboxStore.create`.

    Ids and names (``bundle_id``, ``queue``, ``conversation``,
    ``idempotency_key``, ``origin``, ``bundle_digest``) are 1 to
    :data:`MAX_BINDING_TEXT` characters of valid Unicode; ``sealed_bundle``
    is a non-empty opaque string; ``version`` is 1..:data:`MAX_INBOX_COUNTER`;
    times are finite; the record is new (``"queued"``, no lease, no decision).
    """
    for what in ("bundle_id", "queue", "conversation", "idempotency_key", "origin"):
        _check_text(what, getattr(record, what))
    _check_text("bundle_digest", record.bundle_digest)
    check_opaque("sealed_bundle", record.sealed_bundle)
    if not 1 <= record.version <= MAX_INBOX_COUNTER:
        raise ValueError(f"version must be in 1..{MAX_INBOX_COUNTER}")
    if not (math.isfinite(record.created_at) and math.isfinite(record.resolve_by)):
        raise ValueError("created_at and resolve_by must be finite numbers")
    if record.status != "queued" or record.lease is not None or record.decision is not None:
        raise ValueError("a new inbox record is queued, without a lease or a decision")


def check_inbox_call(
    bundle_id: str,
    *,
    now: float | None = None,
    owner: str | None = None,
    lease_s: float | None = None,
) -> None:
    """Raise ``ValueError`` unless the arguments of an :class:`InboxStore`
    call on one bundle are valid: ``bundle_id`` and ``owner`` as in
    :func:`check_inbox_record`, ``now`` finite, ``lease_s`` in
    ``(0, MAX_LEASE_S]``. Programming errors, checked before any I/O."""
    _check_text("bundle_id", bundle_id)
    if owner is not None:
        _check_text("lease owner", owner)
    if now is not None and not math.isfinite(now):
        raise ValueError("now must be a finite number")
    if lease_s is not None and not (math.isfinite(lease_s) and 0 < lease_s <= MAX_LEASE_S):
        raise ValueError(f"lease_s must be in (0, {MAX_LEASE_S}]")


def storable_inbox_id(bundle_id: str) -> bool:
    """Whether a record could have ``bundle_id`` (see :func:`check_inbox_record`)."""
    try:
        _check_text("bundle_id", bundle_id)
    except ValueError:
        return False
    return True


def check_inbox_page(
    queue: str, *, limit: int, status: InboxStatus | None = None, now: float | None = None
) -> None:
    """Raise ``ValueError`` unless the arguments of ``list``, ``requeue_lapsed``
    or ``expire_due`` are valid (``limit`` at most :data:`MAX_INBOX_PAGE`)."""
    _check_text("queue", queue)
    if status is not None and status not in INBOX_STATUSES:
        raise ValueError(f"unknown inbox status {status!r}")
    if limit > MAX_INBOX_PAGE:
        raise ValueError(f"limit must be at most {MAX_INBOX_PAGE}")
    if now is not None and not math.isfinite(now):
        raise ValueError("now must be a finite number")


def check_status_target(status: InboxStatus) -> None:
    """``ValueError`` unless :meth:`InboxStore.set_status` may move a bundle to ``status``."""
    if status not in STATUS_TRANSITIONS:
        raise ValueError(f"set_status cannot move a bundle to {status!r}")


def check_opaque(what: str, value: str) -> None:
    """An opaque string the store keeps verbatim: non-empty, valid Unicode."""
    if not value:
        raise ValueError(f"{what} must not be empty")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{what} must be valid Unicode (no lone surrogates)") from None


def counter_in_range(value: int) -> bool:
    """Whether ``value`` could be a stored version, fencing token or event
    position; others can never be current, so stores refuse them without I/O."""
    return 0 <= value <= MAX_INBOX_COUNTER


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
