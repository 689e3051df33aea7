"""A bundle's lifecycle: signed events in the bundle's own hash chain.

::

    queued --> claimed --> decided --> delivered --> acknowledged
      |  ^        |  ^                    ^
      |  |        v  | (lease lapsed:     |
      |  +--- released  re-claim)         |
      +--> expired / cancelled -----------+ (an expiry is delivered as a reject)

Each transition is a :class:`LifecycleEvent` chained like transcript entries
(``protocol/chain.py``) and signed by the gateway (compact JWS, ``typ``
``baton-event+jws``). :func:`verify_events` checks signatures, the chain and
that every step is a legal transition, so an exported history is evidence on
its own: who claimed, under which fencing token, who decided, when the agent
acknowledged and whether it executed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Final, Literal

from pydantic import Field

from keys.jose import sign_compact, verify_compact
from keys.keyset import KeySet
from keys.material import PrivateKey
from protocol.chain import EMPTY, ChainedRecord, ChainHead, verify_links
from protocol.errors import Conflict, translating
from protocol.model import Digest, Identity, ShortText, Text

__all__ = [
    "EVENT_TYP",
    "TRANSITIONS",
    "EventType",
    "LifecycleEvent",
    "check_transition",
    "sign_event",
    "verify_events",
]

EVENT_TYP: Final = "baton-event+jws"

EventType = Literal[
    "queued",
    "claimed",
    "released",
    "decided",
    "delivered",
    "acknowledged",
    "expired",
    "cancelled",
]

#: state -> events that may follow it (``None``: the empty history).
TRANSITIONS: Final[dict[str | None, frozenset[str]]] = {
    None: frozenset({"queued"}),
    "queued": frozenset({"claimed", "expired", "cancelled"}),
    "claimed": frozenset({"claimed", "released", "decided", "expired", "cancelled"}),
    "released": frozenset({"claimed", "expired", "cancelled"}),
    "decided": frozenset({"delivered"}),
    "expired": frozenset({"delivered"}),
    "cancelled": frozenset({"delivered"}),
    "delivered": frozenset({"acknowledged"}),
    "acknowledged": frozenset(),
}


class LifecycleEvent(ChainedRecord):
    """One transition. ``ts`` is Unix time in milliseconds."""

    chain_key: ClassVar[str | None] = "bundle_id"

    bundle_id: str = Field(pattern=r"^hb_[A-Za-z0-9_-]{16,64}$")
    ts: int = Field(ge=0)
    type: EventType
    actor: Identity
    version: int = Field(ge=1)
    fencing_token: int | None = Field(default=None, ge=1)
    lease_until: int | None = Field(default=None, ge=0)
    decision_digest: Digest | None = None
    outcome: Literal["executed", "failed"] | None = None
    reason: ShortText | None = None
    note: Text | None = None


def check_transition(previous: str | None, event: LifecycleEvent) -> None:
    """Raise :class:`Conflict` unless ``event`` may follow state ``previous``."""
    if event.type not in TRANSITIONS[previous]:
        raise Conflict(f"{event.type} cannot follow {previous or 'nothing'}")
    if event.type == "claimed" and (event.fencing_token is None or event.lease_until is None):
        raise Conflict("a claim names its fencing token and lease expiry")
    if event.type == "decided" and event.decision_digest is None:
        raise Conflict("a decision event names the decision's digest")
    if event.type == "acknowledged" and event.outcome is None:
        raise Conflict("an acknowledgement says whether the action executed")


def sign_event(event: LifecycleEvent, gateway_key: PrivateKey) -> str:
    """Compact JWS by the gateway."""
    with translating():
        return sign_compact(event.canonical(), gateway_key, typ=EVENT_TYP)


def verify_events(
    tokens: Sequence[str], gateway_keys: KeySet, *, bundle_id: str
) -> tuple[list[LifecycleEvent], ChainHead]:
    """Verify a whole event history; return the events and the chain head."""
    events = []
    for token in tokens:
        with translating():
            verified = verify_compact(token, gateway_keys, typ=EVENT_TYP)
        events.append(LifecycleEvent.parse(verified.payload))
    head = verify_links(events, start=EMPTY, scope=bundle_id)
    state: str | None = None
    lease: LifecycleEvent | None = None  # the live claim, if any
    last_fence = 0
    last_ts = 0
    for event in events:
        check_transition(state, event)
        if event.ts < last_ts:
            raise Conflict("event timestamps go backwards")
        last_ts = event.ts
        if event.type == "claimed" and event.fencing_token is not None:
            if event.fencing_token <= last_fence:
                raise Conflict("fencing tokens must strictly increase")
            last_fence = event.fencing_token
            lease = event
        elif event.type in ("decided", "released"):
            _check_under_lease(event, lease)
            lease = None
        state = event.type
    return events, head


def _check_under_lease(event: LifecycleEvent, lease: LifecycleEvent | None) -> None:
    """A decision or release is made by the lease holder, under its fencing
    token, before the lease ran out (``ts`` is in ms, ``lease_until`` in s)."""
    if lease is None or lease.lease_until is None:  # pragma: no cover - transitions forbid it
        raise Conflict(f"{event.type} without a claim")
    if event.actor != lease.actor:
        raise Conflict(f"{event.type} by someone other than the lease holder")
    if event.fencing_token != lease.fencing_token:
        raise Conflict(f"{event.type} under a fencing token that is not the current one")
    if event.ts > lease.lease_until * 1000:
        raise Conflict(f"{event.type} after the lease expired")
