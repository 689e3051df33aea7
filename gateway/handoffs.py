"""Handoff lifecycle: one place that changes a bundle's state and signs the event.

The inbox A2A agent (``gateway/inbox.py``), the operator API
(``gateway/operator_api.py``) and the approval gate (``gateway/gate.py``) all
act on bundles through :class:`Handoffs`, so every transition follows one rule:

    the store moves first (atomically: claim, release, decide and the status
    moves are compare-and-set in every backend), then the signed lifecycle
    event is appended to the bundle's own chain, then the audit event.

A move the store refuses (a second claim, a stale decision, a delivered
approval consumed twice) changes nothing and appends nothing. The lifecycle
chain is verifiable offline (``protocol.lifecycle.verify_events``): event
types follow ``TRANSITIONS``; a lease that lapsed is taken over by the next
``claimed`` event (no event is written when the sweeper returns it to the
queue: its holder can no longer act under its fencing token anyway).

What the gateway keeps in clear beside the ciphertext (``sealed_bundle`` is a
JSON object ``{jwe, reveals, terms}``) is only what it needs to act without
opening the bundle: the allowed decisions, the digest of the arguments asked
about, the response schema (a ``respond`` decision is validated against it
before it is recorded), trigger, priority and reason code, and, for a held
call, which call it holds. Arguments, transcript bodies and PII exist only
inside the JWE. Records stored before ``response_schema`` was kept read it
as ``None`` (no schema).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
from collections.abc import Callable, Collection, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.config import QueueConfig
from gateway.proxy import Gateway, RequestContext
from gateway.verify import decision_digest
from keys.jose import verify_compact
from keys.keyset import KeySet
from keys.material import PublicKey
from keys.strictjson import loads_object
from protocol.bundle import build_bundle, seal_bundle
from protocol.chain import EMPTY, ChainHead
from protocol.decision import DecisionBinding, DecisionTerms, HandoffDecision, verify_decision_at
from protocol.directory import KeyDirectory
from protocol.errors import (
    ChainConflict,
    Conflict,
    Forbidden,
    PolicyDenied,
    StaleDecision,
    TaskNotFound,
    translating,
)
from protocol.handoff import HandoffRequest
from protocol.lifecycle import EVENT_TYP, LifecycleEvent, sign_event
from protocol.ports import InboxRecord, InboxStatus, InboxStore

__all__ = [
    "GATE_KEY_PREFIX",
    "GRANT_KIND",
    "Gated",
    "Handoffs",
    "Terms",
    "gate_key",
    "sealed_parts",
    "summary",
    "terms_of",
]

#: Idempotency keys of handoffs the approval gate opens; agents may not use it.
GATE_KEY_PREFIX: Final = "baton-gate:"
#: Binding kind: an edited call's gate key -> the handoff whose edit allows it.
GRANT_KIND: Final = "approval-grant"
_BODY_MEDIA_TYPE: Final = "application/json"
_APPEND_ATTEMPTS: Final = 32
#: The version of every bundle the gateway builds (``build_bundle``'s default).
#: Lifecycle events name the bundle version they are about; the store's record
#: version counts state moves (decide, status changes) and is not that.
BUNDLE_VERSION: Final = 1
_SWEEP_PAGE: Final = 100


@dataclass(frozen=True, slots=True)
class Gated:
    """The call a gate handoff holds (kept in clear: no arguments, only their digest)."""

    caller: str
    upstream: str
    target_kind: str
    target: str
    args_digest: str

    def to_json(self) -> dict[str, str]:
        return {
            "caller": self.caller,
            "upstream": self.upstream,
            "target_kind": self.target_kind,
            "target": self.target,
            "args_digest": self.args_digest,
        }


def gate_key(gated: Gated) -> str:
    """The idempotency key of the handoff holding exactly this call."""
    material = "\x1f".join(
        (gated.caller, gated.upstream, gated.target_kind, gated.target, gated.args_digest)
    )
    return GATE_KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Terms:
    """The clear-text part of a stored handoff (see the module docstring)."""

    decision: DecisionTerms
    trigger: str
    priority: int
    reason_code: str
    gated: Gated | None = None

    @classmethod
    def of(cls, request: HandoffRequest, gated: Gated | None) -> Terms:
        return cls(
            DecisionTerms.of(request),
            request.trigger,
            request.priority,
            request.reason_code,
            gated,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed_decisions": list(self.decision.allowed_decisions),
            "args_digest": self.decision.args_digest,
            "response_schema": None
            if self.decision.response_schema is None
            else dict(self.decision.response_schema),
            "trigger": self.trigger,
            "priority": self.priority,
            "reason_code": self.reason_code,
            "gated": None if self.gated is None else self.gated.to_json(),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Terms:
        gated = value.get("gated")
        return cls(
            DecisionTerms(
                tuple(value["allowed_decisions"]),
                value.get("args_digest"),
                value.get("response_schema"),  # None in records stored before it was kept
            ),
            str(value["trigger"]),
            int(value["priority"]),
            str(value["reason_code"]),
            None if gated is None else Gated(**gated),
        )


def sealed_parts(record: InboxRecord) -> dict[str, Any]:
    """``{jwe, reveals, terms}`` of a stored record (written by this module only)."""
    return loads_object(record.sealed_bundle, max_bytes=len(record.sealed_bundle) + 1)


def terms_of(record: InboxRecord) -> Terms:
    return Terms.from_json(sealed_parts(record)["terms"])


def summary(record: InboxRecord, terms: Terms | None = None) -> dict[str, Any]:
    """What an operator's list shows without opening the bundle."""
    terms = terms or terms_of(record)
    lease = record.lease
    return {
        "bundle_id": record.bundle_id,
        "queue": record.queue,
        "conversation": record.conversation,
        "origin": record.origin,
        "status": record.status,
        "version": record.version,
        "bundle_digest": record.bundle_digest,
        "created_at": record.created_at,
        "resolve_by": record.resolve_by,
        "lease": None
        if lease is None
        else {"owner": lease.owner, "until": lease.until, "fencing_token": lease.fencing_token},
        "decided": record.decision is not None,
        **terms.to_json(),
    }


class Handoffs:
    """Every state change of a handoff (see the module docstring)."""

    def __init__(
        self,
        gateway: Gateway,
        store: InboxStore,
        *,
        queues: Mapping[str, QueueConfig],
        recipients: Mapping[str, Sequence[PublicKey]],
        deciders: Mapping[str, KeyDirectory],
        token: Callable[[int], str] = secrets.token_urlsafe,
        poll_s: float = 2.0,
    ) -> None:
        self.gateway = gateway
        #: How often a subscriber re-reads the store (changes made by other gateways).
        self.poll_s = poll_s
        self.store = store
        self.queues = queues
        self._recipients = recipients
        self._deciders = deciders
        self._token = token
        runtime = gateway.runtime
        self._identity = runtime.identity
        self._signing_key = runtime.signing.active
        self._gateway_keys: KeySet = runtime.signing.public()
        self._locks: dict[str, asyncio.Lock] = {}
        #: Called (in the background) with a handoff that got its outcome:
        #: decided or expired. The inbox pushes it to the agent's webhook.
        self.on_outcome: Callable[[InboxRecord], Coroutine[Any, Any, None]] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._queue_watchers: dict[str, set[asyncio.Event]] = {}

    # ------------------------------------------------------------------ open
    def queue(self, name: str) -> QueueConfig:
        queue = self.queues.get(name)
        if queue is None:
            raise PolicyDenied(f"no queue {name!r}")
        if not self._recipients.get(name):
            raise PolicyDenied(f"queue {name!r} has no operators to encrypt to")
        return queue

    async def open(
        self,
        ctx: RequestContext,
        *,
        handoff: HandoffRequest,
        queue: QueueConfig,
        conversation: str,
        origin: str,
        now: float,
        bundle_id: str | None = None,
        gated: Gated | None = None,
    ) -> tuple[InboxRecord, bool]:
        """Build, sign, seal and store a bundle once per ``(queue, idempotency_key)``.

        Raises :class:`~protocol.errors.NotParticipant` before anything is
        stored when ``origin`` takes no part in ``conversation`` (H01). Returns
        the stored record and whether this call created it; a key already
        used for another conversation is a :class:`Conflict`.
        """
        transcripts = self.gateway.stores.transcripts
        entries = list(await transcripts.read(conversation))
        bodies: dict[int, tuple[str, bytes]] = {}
        for entry in entries:
            if entry.body_size:
                recorded = await transcripts.read_body(conversation, entry.seq)
                if recorded is not None:
                    bodies[entry.seq] = (_BODY_MEDIA_TYPE, recorded)
        bundle_id = bundle_id or "hb_" + self._token(24)
        built = build_bundle(
            bundle_id=bundle_id,
            request=handoff,
            queue=queue.name,
            conversation=conversation,
            origin=origin,
            gateway=self._identity,
            transcript=entries,
            bodies=bodies,
            now=int(now),
        )  # raises NotParticipant before anything is stored (H01)
        sealed = seal_bundle(
            built, gateway_key=self._signing_key, recipients=self._recipients[queue.name]
        )
        parts = {
            "jwe": sealed.jwe,
            "reveals": sealed.reveals_jwe,
            "terms": Terms.of(handoff, gated).to_json(),
        }
        record = InboxRecord(
            bundle_id=bundle_id,
            queue=queue.name,
            conversation=conversation,
            idempotency_key=handoff.idempotency_key,
            origin=origin,
            status="queued",
            version=1,
            bundle_digest=sealed.bundle_digest,
            sealed_bundle=json.dumps(parts, separators=(",", ":")),
            created_at=now,
            resolve_by=now + handoff.sla.resolve_within_s,
        )
        stored, created = await self.store.create(record)
        if not created and stored.conversation != conversation:
            # The key names another conversation's handoff: never hand that one out.
            raise Conflict("idempotency key already used for another conversation")
        await self._announce(ctx, stored, trigger=handoff.trigger, now=now)
        return stored, created

    async def _announce(
        self, ctx: RequestContext, record: InboxRecord, *, trigger: str, now: float
    ) -> None:
        """The ``queued`` lifecycle event and the ``handoff.created`` audit
        event of a stored bundle, each written exactly once (H06).

        Both steps are idempotent and run on every :meth:`open` of the bundle,
        not only the one that stored it: after a fault or a crash between the
        store and the audit log, the agent's retry (same idempotency key)
        writes what is missing, and concurrent or repeated opens write nothing
        twice (``queued`` only on an empty chain, the audit event under the
        ``once`` key ``handoff.created:<bundle>``, checked atomically by the
        audit store).
        """
        await self._append(record, "queued", actor=self._identity, now=now, first=True)
        await self.gateway.audit(
            ctx, now, event="handoff.created", outcome="accepted", reason=None,
            detail=f"{record.bundle_id} queue={record.queue} from={record.origin} "
            f"trigger={trigger}",
            once=f"handoff.created:{record.bundle_id}",
        )  # fmt: skip

    # ----------------------------------------------------------- operators
    async def get(self, bundle_id: str, queue: str) -> InboxRecord:
        record = await self.store.get(bundle_id)
        if record is None or record.queue != queue:
            raise TaskNotFound(f"no handoff {bundle_id} in queue {queue}")
        return record

    async def claim(
        self, ctx: RequestContext, operator: str, bundle_id: str, queue: str, now: float
    ) -> InboxRecord:
        """Take (or renew) the lease: exactly one owner; a new fencing token."""
        config = self.queue(queue)
        await self.get(bundle_id, queue)
        lease = await self.store.claim(bundle_id, operator, lease_s=config.lease_s, now=now)
        record = await self.get(bundle_id, queue)
        await self._append(
            record, "claimed", actor=operator, now=now,
            fencing_token=lease.fencing_token, lease_until=int(lease.until),
        )  # fmt: skip
        await self._audit(ctx, now, "handoff.claimed", f"{bundle_id} by {operator}")
        return record

    async def release(
        self,
        ctx: RequestContext,
        operator: str,
        bundle_id: str,
        queue: str,
        *,
        fencing_token: int,
        now: float,
    ) -> InboxRecord:
        record = await self.get(bundle_id, queue)
        if record.lease is None or record.lease.owner != operator:
            raise Conflict(f"{operator} holds no lease on {bundle_id}")
        await self.store.release(bundle_id, fencing_token=fencing_token, now=now)
        released = await self.get(bundle_id, queue)
        await self._append(
            released, "released", actor=operator, now=now, fencing_token=fencing_token
        )
        await self._audit(ctx, now, "handoff.released", f"{bundle_id} by {operator}")
        return released

    async def decide(
        self,
        ctx: RequestContext,
        operator: str,
        bundle_id: str,
        queue: str,
        *,
        token: str,
        now: float,
    ) -> tuple[InboxRecord, HandoffDecision]:
        """Verify the operator's signed decision and record it exactly once.

        The decision must be signed by ``operator`` (who sent the command),
        one of the queue's deciders, under the lease ``operator`` holds now,
        for the current version and digest, of an allowed type and, for an
        approval, for the arguments asked about. A second or stale decision
        is :class:`StaleDecision` (409) and changes nothing.
        """
        self.queue(queue)
        record = await self.get(bundle_id, queue)
        lease = record.lease
        if record.status != "claimed" or lease is None:
            raise StaleDecision(f"{bundle_id} is {record.status}, not claimed")
        if lease.owner != operator:
            raise StaleDecision(f"{bundle_id} is claimed by someone else")
        terms = terms_of(record)
        decision = verify_decision_at(
            token,
            operators=self._deciders[queue],
            binding=DecisionBinding(
                bundle_id, record.bundle_digest, record.version, lease.fencing_token
            ),
            request=terms.decision,
            now=now,
        )
        if decision.operator != operator:
            raise Forbidden("a decision is sent by the operator who signed it")
        if decision.decision.type == "reroute" and decision.decision.reroute_queue not in (
            self.queues
        ):
            raise PolicyDenied(f"reroute to unknown queue {decision.decision.reroute_queue!r}")
        decided = await self.store.decide(
            bundle_id, fencing_token=lease.fencing_token, version=record.version,
            decision=token, now=now,
        )  # fmt: skip
        body = decision.decision
        if terms.gated is not None and body.type == "edit" and body.args_digest is not None:
            # Only the edited call may pass: its own key now names this handoff.
            edited = Gated(
                terms.gated.caller, terms.gated.upstream, terms.gated.target_kind,
                terms.gated.target, body.args_digest,
            )  # fmt: skip
            ttl_s = max(1, int(decision.exp - now) + 24 * 3600)
            await self.gateway.stores.bindings.bind(
                GRANT_KIND, gate_key(edited), bundle_id, ttl_s=ttl_s, now=now
            )
        await self._append(
            decided, "decided", actor=operator, now=now,
            fencing_token=lease.fencing_token, decision_digest=decision_digest(token),
        )  # fmt: skip
        await self._audit(
            ctx, now, "handoff.decided", f"{bundle_id} {decision.decision.type} by {operator}"
        )
        self._outcome(decided)
        return decided, decision

    async def reveal(
        self,
        ctx: RequestContext,
        operator: str,
        bundle_id: str,
        queue: str,
        *,
        reason: str,
        paths: Sequence[str],
        now: float,
    ) -> dict[str, Any] | None:
        """The encrypted PII originals, to an operator allowed to see them,
        after the reveal (who, which bundle, which paths, why) is audited."""
        if operator not in self.gateway.runtime.revealers:
            raise Forbidden(f"{operator} may not reveal PII")
        record = await self.get(bundle_id, queue)
        reveals = sealed_parts(record).get("reveals")
        shown = ",".join(paths) if paths else "*"
        await self._audit(
            ctx, now, "handoff.pii_revealed",
            f"{bundle_id} by {operator} paths={shown} reason={reason}"[:1000],
        )  # fmt: skip
        return reveals if isinstance(reveals, dict) else None

    # --------------------------------------------------------------- agents
    async def _move(self, record: InboxRecord, status: InboxStatus, now: float) -> InboxRecord:
        """Compare-and-set the status (:meth:`InboxStore.set_status`: a move
        another caller already made raises :class:`Conflict`); the record as now stored."""
        await self.store.set_status(record.bundle_id, status, now=now)
        moved = await self.store.get(record.bundle_id)
        if moved is None:  # pragma: no cover - records are never deleted
            raise TaskNotFound(record.bundle_id)
        return moved

    async def deliver(self, record: InboxRecord, now: float, *, note: str) -> InboxRecord:
        """``decided``/``expired``/``cancelled`` -> ``delivered``, once: of two
        deliveries one wins; the other raises :class:`Conflict`, appends nothing."""
        delivered = await self._move(record, "delivered", now)
        await self._append(delivered, "delivered", actor=self._identity, now=now, note=note)
        return delivered

    async def acknowledge(
        self, record: InboxRecord, *, actor: str, outcome: str, now: float, note: str | None
    ) -> InboxRecord:
        """``delivered`` -> ``acknowledged``: the agent says whether it executed."""
        acknowledged = await self._move(record, "acknowledged", now)
        await self._append(
            acknowledged, "acknowledged", actor=actor, now=now, outcome=outcome, note=note
        )
        return acknowledged

    async def cancel(self, record: InboxRecord, *, actor: str, now: float) -> InboxRecord:
        """An open handoff withdrawn by the agent that escalated: ``cancelled``
        (a held call it was for never passes)."""
        cancelled = await self._move(record, "cancelled", now)
        await self._append(cancelled, "cancelled", actor=actor, now=now)
        return cancelled

    async def expire(self, record: InboxRecord, now: float) -> InboxRecord:
        """Expire one due bundle now (fail closed: the queue's ``on_expiry``)."""
        expired = await self._move(record, "expired", now)
        await self._expired(expired, now)
        return expired

    def _outcome(self, record: InboxRecord) -> None:
        """Run :attr:`on_outcome` in the background: an agent's slow or failing
        webhook never delays or fails an operator's decision or a sweep."""
        if self.on_outcome is None:
            return
        task = asyncio.create_task(self.on_outcome(record))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Wait (bounded) for outcome deliveries still running, then cancel them."""
        if self._background:
            _, pending = await asyncio.wait(tuple(self._background), timeout=5)
            for task in pending:
                task.cancel()

    async def _expired(self, record: InboxRecord, now: float) -> None:
        on_expiry = self.queues[record.queue].on_expiry if record.queue in self.queues else "reject"
        await self._append(
            record, "expired", actor=self._identity, now=now, reason=f"on_expiry={on_expiry}"
        )
        await self.gateway.recorder.event(
            ts=int(now * 1000), event="handoff.expired", outcome="rejected",
            reason="expired", request_id="sweep", peer=None, artifact_sha256=None,
            detail=f"{record.bundle_id} queue={record.queue} on_expiry={on_expiry}",
        )  # fmt: skip
        self._outcome(record)

    async def sweep(self, now: float) -> tuple[int, int]:
        """Return lapsed leases to their queues and expire due bundles.

        Returns (requeued, expired). Every backend moves each bundle
        atomically, so several gateways sweeping at once expire a bundle once.
        """
        requeued = expired = 0
        for name in self.queues:
            returned = await self.store.requeue_lapsed(name, now=now, limit=_SWEEP_PAGE)
            if returned:
                self._notify_queue(name)  # no event is appended for a lapsed lease
            requeued += len(returned)
            for record in await self.store.expire_due(name, now=now, limit=_SWEEP_PAGE):
                await self._expired(record, now)
                expired += 1
        return requeued, expired

    # ------------------------------------------------------------ watching
    async def wait_for_change(self, bundle_id: str, *, timeout_s: float) -> bool:
        """Wait until this process appends an event to ``bundle_id``, at most
        ``timeout_s``; True if it did. Another gateway's change is seen by the
        caller re-reading the store after a timeout (so a watcher polls at
        ``timeout_s`` and is woken at once for local changes)."""
        event = asyncio.Event()
        watchers = self._watchers.setdefault(bundle_id, set())
        watchers.add(event)
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            watchers.discard(event)
            if not watchers:
                self._watchers.pop(bundle_id, None)

    def _notify(self, bundle_id: str) -> None:
        for event in self._watchers.get(bundle_id, ()):
            event.set()

    @contextlib.contextmanager
    def watching_queues(self, queues: Collection[str]) -> Iterator[asyncio.Event]:
        """An event this process sets whenever a bundle of one of ``queues``
        changes here (an appended lifecycle event, a lapsed lease returned by
        the sweep); the watcher clears it. As with :meth:`wait_for_change`,
        other gateways' changes are seen only by re-reading the store."""
        event = asyncio.Event()
        for queue in queues:
            self._queue_watchers.setdefault(queue, set()).add(event)
        try:
            yield event
        finally:
            for queue in queues:
                watchers = self._queue_watchers.get(queue)
                if watchers is not None:
                    watchers.discard(event)
                    if not watchers:
                        del self._queue_watchers[queue]

    def _notify_queue(self, queue: str) -> None:
        for event in self._queue_watchers.get(queue, ()):
            event.set()

    # ------------------------------------------------------------- events
    async def events(self, bundle_id: str) -> Sequence[str]:
        return await self.store.events(bundle_id)

    async def _append(
        self, record: InboxRecord, type_: str, *, actor: str, now: float, first: bool = False,
        **fields: Any,
    ) -> None:  # fmt: skip
        """Compare-and-append the next signed event; re-read and retry on a race.

        Appends for one bundle are serialised in this process (a lock per
        bundle) and compare-and-set across processes. A ``claimed`` event whose
        fencing token is not above the last recorded one is dropped: a later
        claim (a renewal or takeover) already superseded that lease, and the
        chain keeps its tokens strictly increasing. With ``first``, the event
        is appended only to an empty chain (the ``queued`` event: whoever
        loses the race finds it there and writes nothing).
        """
        lock = self._locks.setdefault(record.bundle_id, asyncio.Lock())
        try:
            async with lock:
                await self._append_locked(
                    record, type_, actor=actor, now=now, first=first, **fields
                )
        finally:
            if not lock.locked() and not lock._waiters:
                self._locks.pop(record.bundle_id, None)

    async def _append_locked(
        self, record: InboxRecord, type_: str, *, actor: str, now: float, first: bool,
        **fields: Any,
    ) -> None:  # fmt: skip
        for _ in range(_APPEND_ATTEMPTS):
            tokens = await self.store.events(record.bundle_id)
            if first and tokens:
                return
            head: ChainHead = EMPTY
            last_ts = 0
            last_fence = 0
            for token in tokens[-1:]:
                with translating():
                    verified = verify_compact(token, self._gateway_keys, typ=EVENT_TYP)
                last = LifecycleEvent.parse(verified.payload)
                head, last_ts = last.head, last.ts
            if type_ == "claimed" and tokens:
                last_fence = await self._last_fence(tokens)
                if fields.get("fencing_token", 0) <= last_fence:
                    return  # superseded by a claim already recorded
            event = LifecycleEvent.create(
                head,
                bundle_id=record.bundle_id,
                ts=max(int(now * 1000), last_ts),
                type=type_,
                actor=actor,
                version=BUNDLE_VERSION,
                **{key: value for key, value in fields.items() if value is not None},
            )
            try:
                await self.store.append_event(
                    record.bundle_id, sign_event(event, self._signing_key), seq=len(tokens)
                )
                self._notify(record.bundle_id)
                self._notify_queue(record.queue)
                return
            except ChainConflict:
                continue
        raise ChainConflict(f"{record.bundle_id}: lifecycle append kept losing races")

    async def _last_fence(self, tokens: Sequence[str]) -> int:
        for token in reversed(tokens):
            with translating():
                verified = verify_compact(token, self._gateway_keys, typ=EVENT_TYP)
            event = LifecycleEvent.parse(verified.payload)
            if event.fencing_token is not None:
                return event.fencing_token
        return 0

    async def _audit(self, ctx: RequestContext, now: float, event: str, detail: str) -> None:
        await self.gateway.audit(
            ctx, now, event=event, outcome="accepted", reason=None, detail=detail[:1000]
        )
