"""The InboxStore contract (``protocol/ports.py``), run against SQLite and Redis.

Idempotent create (in one process and across four); exactly one lease holder
with strictly increasing fencing tokens; release and decide only under the
live lease, once, at the current version and before the deadline; status
moves along ``STATUS_TRANSITIONS`` only; lifecycle events are a
compare-and-append chain; sweeps return lapsed leases to the queue and expire
due bundles. Time is the injected ``now`` in both backends. A differential
property test runs random operation sequences on both backends and requires
identical outcomes. Dead or tampered backends fail closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math
import multiprocessing.queues
import multiprocessing.synchronize
import os
import random
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.crc import key_slot

from gateway.stores import REDIS_TIMEOUT_S, Stores, open_stores, redis_client
from gateway.stores.redis import (
    INBOX_INDEXES,
    inbox_events_key,
    inbox_idempotency_key,
    inbox_index_key,
    inbox_keys,
    inbox_record_key,
)
from keys.atrest import StoreCipher
from protocol.errors import (
    BatonError,
    ChainConflict,
    Conflict,
    DuplicateBundle,
    NotFound,
    StaleDecision,
    StoreUnavailable,
)
from protocol.lifecycle import TRANSITIONS
from protocol.ports import (
    INBOX_STATUSES,
    MAX_BINDING_TEXT,
    MAX_INBOX_COUNTER,
    MAX_INBOX_PAGE,
    MAX_LEASE_S,
    STATUS_TRANSITIONS,
    InboxRecord,
    InboxStatus,
    InboxStore,
    Lease,
    check_inbox_call,
)
from tests.gateway.stores.conftest import Backend
from tests.gateway.stores.support import (
    StoreSpec,
    delete_prefix,
    fresh_prefix,
    redis_reachable,
    redis_url,
)
from tests.gateway.stores.test_contract import _shares, _spawned
from tests.gateway.stores.workers import _run

QUEUE = "refunds"
OTHER_QUEUE = "payments"
ALICE = "operator:alice"
BOB = "operator:bob"
CAROL = "operator:carol"
T0 = 1_000_000.0  # the injected clock: nowhere near the wall clock, on purpose
DEADLINE = T0 + 3600.0
PROCESSES = 4
CONCURRENT = 50
CLAIMANTS = 20
REDIS_ONLY = pytest.mark.parametrize("backend", ["redis"], indirect=True)
JWS = "eyJhbGciOiJFZERTQSIsInR5cCI6ImJhdG9uLWV2ZW50K2p3cyJ9.eyJzZXEiOjB9.c2ln"


def bundle_id(n: int) -> str:
    return f"hb_{n:020d}"


def record(
    n: int = 1,
    *,
    queue: str = QUEUE,
    key: str | None = None,
    created_at: float = T0,
    resolve_by: float = DEADLINE,
    sealed: str = "eyJhbGciOiJFQ0RILUVTIn0..iv.ciphertext.tag",
) -> InboxRecord:
    """A new handoff record; the idempotency key defaults to one per bundle."""
    return InboxRecord(
        bundle_id=bundle_id(n),
        queue=queue,
        conversation="conv-7f3a",
        idempotency_key=key or f"idem-{n}",
        origin="spiffe://baton.local/agent/support",
        status="queued",
        version=1,
        bundle_digest="sha256:" + "ab" * 32,
        sealed_bundle=sealed,
        created_at=created_at,
        resolve_by=resolve_by,
    )


async def stored(inbox: InboxStore, bundle: str) -> InboxRecord:
    found = await inbox.get(bundle)
    assert found is not None
    return found


async def refused(call: Awaitable[object]) -> str:
    """The error code ``call`` raises (it must raise a BatonError)."""
    with pytest.raises(BatonError) as raised:
        await call
    return raised.value.code


# ---------------------------------------------------------------- the port
def test_inbox_store_implements_its_port(backend: Backend) -> None:
    inbox = backend.stores.inbox
    assert isinstance(inbox, InboxStore)
    for name, method in inspect.getmembers(InboxStore, inspect.isfunction):
        if name.startswith("_"):
            continue
        impl = getattr(type(inbox), name)
        assert inspect.iscoroutinefunction(impl), name
        want = [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]
        got = [(p.name, p.kind, p.default) for p in inspect.signature(impl).parameters.values()]
        assert got == want, name


def test_status_moves_are_lifecycle_transitions() -> None:
    """Every move set_status allows is a legal event in the bundle's signed
    chain (``protocol.lifecycle.TRANSITIONS``); a stored ``queued`` stands for
    both the ``queued`` and the ``released`` event state."""
    for target, sources in STATUS_TRANSITIONS.items():
        for source in sources:
            states = ("queued", "released") if source == "queued" else (source,)
            for state in states:
                assert target in TRANSITIONS[state], (state, target)


# ---------------------------------------------------------------- create / get
@pytest.mark.parametrize(
    "sealed",
    [
        "not json at all {",
        '{"looks": "like json", "but": "is opaque"}',
        "ünïcödé 会話 \x00 NUL inside \u2028",
        "x" * 200_000,
    ],
)
async def test_create_stores_the_record_verbatim(backend: Backend, sealed: str) -> None:
    """The sealed bundle is opaque ciphertext: stored and returned byte for byte."""
    inbox = backend.stores.inbox
    new = record(created_at=1712345678.123456789, resolve_by=1712349278.987654321, sealed=sealed)
    assert await inbox.create(new) == (new, True)
    assert await inbox.get(new.bundle_id) == new


async def test_get_of_an_unknown_bundle_is_none(backend: Backend) -> None:
    inbox = backend.stores.inbox
    assert await inbox.get(bundle_id(404)) is None
    assert list(await inbox.events(bundle_id(404))) == []


async def test_create_is_idempotent_on_queue_and_key(backend: Backend) -> None:
    inbox = backend.stores.inbox
    first = record(1, key="same")
    assert await inbox.create(first) == (first, True)
    again = record(2, key="same", created_at=T0 + 5)
    assert await inbox.create(again) == (first, False)
    assert await inbox.get(again.bundle_id) is None, "the second bundle was not stored"
    assert [r.bundle_id for r in await inbox.list(QUEUE)] == [first.bundle_id]


async def test_the_same_key_in_another_queue_is_another_bundle(backend: Backend) -> None:
    inbox = backend.stores.inbox
    assert (await inbox.create(record(1, key="k")))[1]
    assert (await inbox.create(record(2, key="k", queue=OTHER_QUEUE)))[1]
    assert [r.bundle_id for r in await inbox.list(QUEUE)] == [bundle_id(1)]
    assert [r.bundle_id for r in await inbox.list(OTHER_QUEUE)] == [bundle_id(2)]


async def test_a_bundle_id_under_another_key_is_a_duplicate(backend: Backend) -> None:
    inbox = backend.stores.inbox
    first = record(1, key="k1")
    await inbox.create(first)
    for clash in (record(1, key="k2"), record(1, key="k1", queue=OTHER_QUEUE)):
        with pytest.raises(DuplicateBundle):
            await inbox.create(clash)
    assert await inbox.get(first.bundle_id) == first
    assert list(await inbox.list(OTHER_QUEUE)) == [], "nothing stored"
    assert (await inbox.create(record(2, key="k2")))[1], "the refused key stayed free"


async def test_a_returned_duplicate_shows_the_stored_state(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record(1, key="k"))
    lease = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0)
    again, created = await inbox.create(record(9, key="k"))
    assert not created
    assert again.bundle_id == bundle_id(1)
    assert (again.status, again.lease) == ("claimed", lease)


async def test_concurrent_creates_store_one_record(backend: Backend) -> None:
    inbox = backend.stores.inbox
    outcomes = await asyncio.gather(
        *(inbox.create(record(n, key="fired-twice")) for n in range(CONCURRENT))
    )
    assert [created for _, created in outcomes].count(True) == 1
    assert len({rec for rec, _ in outcomes}) == 1, "every caller got the same record"
    stored_records = await inbox.list(QUEUE)
    assert list(stored_records) == [outcomes[0][0]]


def create_many(
    spec: StoreSpec,
    numbers: list[int],
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue[tuple[str, object]],
) -> None:
    """Worker (spawned process): concurrent creates with one idempotency key;
    reports ``(bundle id returned, created?)`` for each."""

    async def work(stores: Stores) -> list[tuple[str, bool]]:
        creates = (stores.inbox.create(record(n, key="across-processes")) for n in numbers)
        return [(rec.bundle_id, created) for rec, created in await asyncio.gather(*creates)]

    _run(spec, barrier, results, work)


async def test_creates_in_four_processes_store_one_record(backend: Backend) -> None:
    starts = [sum(_shares(CONCURRENT, PROCESSES)[:p]) for p in range(PROCESSES)]
    jobs = [
        (backend.spec, list(range(start, start + n)))
        for start, n in zip(starts, _shares(CONCURRENT, PROCESSES), strict=True)
    ]
    results = await asyncio.to_thread(_spawned, create_many, jobs)
    outcomes = [outcome for result in results for outcome in result]
    assert len(outcomes) == CONCURRENT
    assert [created for _, created in outcomes].count(True) == 1
    assert len({bundle for bundle, _ in outcomes}) == 1
    listed = await backend.stores.inbox.list(QUEUE)
    assert [r.bundle_id for r in listed] == [outcomes[0][0]]


# ---------------------------------------------------------------- list
async def test_list_orders_by_created_at_then_bundle_id(backend: Backend) -> None:
    inbox = backend.stores.inbox
    times = {5: T0 + 2, 3: T0 + 1, 9: T0 + 1, 1: T0 + 3, 7: T0, 2: T0 + 1}
    for n, created_at in times.items():
        await inbox.create(record(n, created_at=created_at))
    await inbox.create(record(4, queue=OTHER_QUEUE, created_at=T0 - 1))
    order = [bundle_id(n) for n in (7, 2, 3, 9, 5, 1)]
    assert [r.bundle_id for r in await inbox.list(QUEUE)] == order
    assert [r.bundle_id for r in await inbox.list(QUEUE, limit=3)] == order[:3]
    assert list(await inbox.list(QUEUE, limit=0)) == []
    assert list(await inbox.list(QUEUE, limit=-5)) == []
    assert list(await inbox.list("no-such-queue")) == []


async def test_list_filters_by_status(backend: Backend) -> None:
    inbox = backend.stores.inbox
    for n in range(1, 5):
        await inbox.create(record(n, created_at=T0 + n))
    await inbox.claim(bundle_id(3), ALICE, lease_s=60, now=T0)
    await inbox.claim(bundle_id(1), BOB, lease_s=60, now=T0)
    await inbox.set_status(bundle_id(4), "cancelled", now=T0)
    claimed = await inbox.list(QUEUE, status="claimed")
    assert [(r.bundle_id, r.lease and r.lease.owner) for r in claimed] == [
        (bundle_id(1), BOB),
        (bundle_id(3), ALICE),
    ]
    assert [r.bundle_id for r in await inbox.list(QUEUE, status="queued")] == [bundle_id(2)]
    assert [r.bundle_id for r in await inbox.list(QUEUE, status="cancelled")] == [bundle_id(4)]
    assert list(await inbox.list(QUEUE, status="decided")) == []
    assert [r.status for r in await inbox.list(QUEUE)] == [
        "claimed",
        "queued",
        "claimed",
        "cancelled",
    ]


# ---------------------------------------------------------------- claim
async def test_claim_takes_the_lease(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    lease = await inbox.claim(bundle_id(1), ALICE, lease_s=900, now=T0)
    assert lease == Lease(ALICE, T0 + 900, 1)
    now = await stored(inbox, bundle_id(1))
    assert (now.status, now.lease, now.version) == ("claimed", lease, 1)


async def test_another_owner_cannot_take_a_live_lease(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    lease = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0)
    for now in (T0, T0 + 30, T0 + 59.999):
        with pytest.raises(Conflict):
            await inbox.claim(bundle_id(1), BOB, lease_s=60, now=now)
    assert (await stored(inbox, bundle_id(1))).lease == lease, "the refused claim wrote nothing"


async def test_renewal_gets_a_new_token_and_the_old_one_dies(backend: Backend) -> None:
    """The port: "renew it for its owner, with a new fencing token"."""
    inbox = backend.stores.inbox
    await inbox.create(record())
    first = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0)
    renewed = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0 + 50)
    assert renewed == Lease(ALICE, T0 + 110, first.fencing_token + 1)
    assert (await stored(inbox, bundle_id(1))).lease == renewed
    with pytest.raises(Conflict):
        await inbox.release(bundle_id(1), fencing_token=first.fencing_token, now=T0 + 51)
    with pytest.raises(StaleDecision):
        await inbox.decide(
            bundle_id(1), fencing_token=first.fencing_token, version=1, decision=JWS, now=T0 + 51
        )
    with pytest.raises(Conflict):  # the renewed lease lives until T0 + 110
        await inbox.claim(bundle_id(1), BOB, lease_s=60, now=T0 + 100)


async def test_a_lapsed_lease_is_taken_over_with_a_larger_token(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    alices = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0)
    bobs = await inbox.claim(bundle_id(1), BOB, lease_s=60, now=T0 + 60)  # until <= now
    assert bobs.owner == BOB
    assert bobs.fencing_token > alices.fencing_token
    with pytest.raises(Conflict):
        await inbox.release(bundle_id(1), fencing_token=alices.fencing_token, now=T0 + 61)
    with pytest.raises(StaleDecision):
        await inbox.decide(
            bundle_id(1), fencing_token=alices.fencing_token, version=1, decision=JWS, now=T0 + 61
        )
    with pytest.raises(Conflict):
        await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0 + 61)
    assert (await stored(inbox, bundle_id(1))).lease == bobs


async def test_the_lapsed_owner_may_claim_again(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    first = await inbox.claim(bundle_id(1), ALICE, lease_s=10, now=T0)
    again = await inbox.claim(bundle_id(1), ALICE, lease_s=10, now=T0 + 500)
    assert again == Lease(ALICE, T0 + 510, first.fencing_token + 1)


async def test_twenty_concurrent_claims_one_owner(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    owners = [f"operator:op-{i}" for i in range(CLAIMANTS)]
    outcomes = await asyncio.gather(
        *(inbox.claim(bundle_id(1), owner, lease_s=60, now=T0) for owner in owners),
        return_exceptions=True,
    )
    leases = [o for o in outcomes if isinstance(o, Lease)]
    assert len(leases) == 1, outcomes
    assert all(isinstance(o, Conflict) for o in outcomes if not isinstance(o, Lease)), outcomes
    assert leases[0].fencing_token == 1
    assert (await stored(inbox, bundle_id(1))).lease == leases[0]


def claim_many(
    spec: StoreSpec,
    owners: list[str],
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue[tuple[str, object]],
) -> None:
    """Worker (spawned process): concurrent claims of bundle 1, one per owner;
    reports the owners whose claim succeeded (a Conflict is a loss)."""

    async def work(stores: Stores) -> list[str]:
        async def one(owner: str) -> str | None:
            try:
                lease = await stores.inbox.claim(bundle_id(1), owner, lease_s=60, now=T0)
            except Conflict:
                return None
            return lease.owner

        won = await asyncio.gather(*(one(owner) for owner in owners))
        return [owner for owner in won if owner is not None]

    _run(spec, barrier, results, work)


async def test_claims_in_four_processes_one_owner(backend: Backend) -> None:
    await backend.stores.inbox.create(record())
    jobs = [
        (backend.spec, [f"operator:p{p}-{i}" for i in range(n)])
        for p, n in enumerate(_shares(CLAIMANTS, PROCESSES))
    ]
    results = await asyncio.to_thread(_spawned, claim_many, jobs)
    winners = [owner for result in results for owner in result]
    assert len(winners) == 1, winners
    lease = (await stored(backend.stores.inbox, bundle_id(1))).lease
    assert lease is not None
    assert (lease.owner, lease.fencing_token) == (winners[0], 1)


async def test_a_bundle_past_its_deadline_cannot_be_claimed(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record(resolve_by=T0 + 100))
    await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0 + 99.5)
    with pytest.raises(Conflict):
        await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0 + 100)
    with pytest.raises(Conflict):
        await inbox.claim(bundle_id(1), BOB, lease_s=60, now=T0 + 200)


@pytest.mark.parametrize("closed", ["decided", "cancelled", "expired", "delivered"])
async def test_a_closed_bundle_cannot_be_claimed(backend: Backend, closed: InboxStatus) -> None:
    inbox = backend.stores.inbox
    await bring_to(inbox, closed)
    before = await stored(inbox, bundle_id(1))
    with pytest.raises(Conflict):
        await inbox.claim(bundle_id(1), CAROL, lease_s=60, now=T0 + 1)
    assert await inbox.get(bundle_id(1)) == before


async def test_fencing_tokens_strictly_increase_across_reopening(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    tokens = []
    for i in range(3):
        lease = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0 + i)
        tokens.append(lease.fencing_token)
        await inbox.release(bundle_id(1), fencing_token=lease.fencing_token, now=T0 + i)
    again = await backend.spec.open()
    try:
        tokens.append(
            (await again.inbox.claim(bundle_id(1), BOB, lease_s=60, now=T0)).fencing_token
        )
        assert await again.inbox.get(bundle_id(1)) == await inbox.get(bundle_id(1))
    finally:
        await again.close()
    assert tokens == [1, 2, 3, 4]


# ---------------------------------------------------------------- release
async def test_release_returns_the_bundle_to_the_queue(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    lease = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0)
    await inbox.release(bundle_id(1), fencing_token=lease.fencing_token, now=T0 + 1)
    after = await stored(inbox, bundle_id(1))
    assert (after.status, after.lease, after.version) == ("queued", None, 1)
    assert [r.bundle_id for r in await inbox.list(QUEUE, status="queued")] == [bundle_id(1)]
    bobs = await inbox.claim(bundle_id(1), BOB, lease_s=60, now=T0 + 2)
    assert bobs.fencing_token == lease.fencing_token + 1


async def test_release_needs_the_live_lease_token(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    lease = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0)
    for token in (lease.fencing_token + 1, 0, -1, 1 << 70):
        with pytest.raises(Conflict):
            await inbox.release(bundle_id(1), fencing_token=token, now=T0 + 1)
    with pytest.raises(Conflict):  # lapsed: already free, cannot be released
        await inbox.release(bundle_id(1), fencing_token=lease.fencing_token, now=T0 + 60)
    assert (await stored(inbox, bundle_id(1))).lease == lease, "nothing changed"
    await inbox.release(bundle_id(1), fencing_token=lease.fencing_token, now=T0 + 59)
    with pytest.raises(Conflict):
        await inbox.release(bundle_id(1), fencing_token=lease.fencing_token, now=T0 + 59)


# ---------------------------------------------------------------- decide
async def test_decide_records_the_decision_once(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    lease = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0)
    decided = await inbox.decide(
        bundle_id(1), fencing_token=lease.fencing_token, version=1, decision=JWS, now=T0 + 1
    )
    assert dataclasses.replace(record(), status="decided", version=2, decision=JWS) == decided
    assert await inbox.get(bundle_id(1)) == decided
    for version in (1, 2):
        with pytest.raises(StaleDecision):
            await inbox.decide(
                bundle_id(1),
                fencing_token=lease.fencing_token,
                version=version,
                decision="a second decision",
                now=T0 + 2,
            )
    assert await inbox.get(bundle_id(1)) == decided


STALE: dict[str, tuple[int, int, float]] = {
    # (fencing token offset from the live one, version, now)
    "another token": (1, 1, T0 + 1),
    "an older token": (-1, 1, T0 + 1),
    "an old version": (0, 0, T0 + 1),
    "a future version": (0, 2, T0 + 1),
    "a lapsed lease": (0, 1, T0 + 60),
    "far too big a token": (1 << 60, 1, T0 + 1),
}


@pytest.mark.parametrize("case", list(STALE))
async def test_stale_decisions_are_refused(backend: Backend, case: str) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    await inbox.claim(bundle_id(1), BOB, lease_s=60, now=T0 - 100)  # token 1 lapses
    lease = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0)  # token 2
    before = await stored(inbox, bundle_id(1))
    offset, version, now = STALE[case]
    with pytest.raises(StaleDecision):
        await inbox.decide(
            bundle_id(1),
            fencing_token=lease.fencing_token + offset,
            version=version,
            decision=JWS,
            now=now,
        )
    assert await inbox.get(bundle_id(1)) == before


async def test_a_decision_past_the_deadline_is_stale(backend: Backend) -> None:
    """Fail closed: at resolve_by the bundle expires; a decision can no longer win."""
    inbox = backend.stores.inbox
    await inbox.create(record(resolve_by=T0 + 30))
    lease = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0)
    with pytest.raises(StaleDecision):
        await inbox.decide(
            bundle_id(1), fencing_token=lease.fencing_token, version=1, decision=JWS, now=T0 + 30
        )
    await inbox.set_status(bundle_id(1), "expired", now=T0 + 30)


@pytest.mark.parametrize("status", ["queued", "released", "cancelled", "expired"])
async def test_a_bundle_without_a_lease_cannot_be_decided(backend: Backend, status: str) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record(resolve_by=T0 + 10))
    lease = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0)
    if status == "released":
        await inbox.release(bundle_id(1), fencing_token=lease.fencing_token, now=T0)
    elif status == "queued":
        await inbox.requeue_lapsed(QUEUE, now=T0 + 60)
    else:
        await inbox.set_status(bundle_id(1), status, now=T0 + 10)  # type: ignore[arg-type]
    with pytest.raises(StaleDecision):
        await inbox.decide(
            bundle_id(1), fencing_token=lease.fencing_token, version=1, decision=JWS, now=T0 + 1
        )


async def test_two_operators_racing_one_wins(backend: Backend) -> None:
    """Alice's lease lapsed and Bob claimed; both decide at once: Bob wins."""
    inbox = backend.stores.inbox
    await inbox.create(record())
    alices = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0)
    bobs = await inbox.claim(bundle_id(1), BOB, lease_s=60, now=T0 + 60)
    outcomes = await asyncio.gather(
        inbox.decide(
            bundle_id(1), fencing_token=alices.fencing_token, version=1, decision="a", now=T0 + 61
        ),
        inbox.decide(
            bundle_id(1), fencing_token=bobs.fencing_token, version=1, decision="b", now=T0 + 61
        ),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], StaleDecision)
    assert isinstance(outcomes[1], InboxRecord)
    assert outcomes[1].decision == "b"
    assert (await stored(inbox, bundle_id(1))).decision == "b"


async def test_racing_decisions_under_one_lease_one_wins(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    lease = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0)
    outcomes = await asyncio.gather(
        *(
            inbox.decide(
                bundle_id(1),
                fencing_token=lease.fencing_token,
                version=1,
                decision=f"decision-{i}",
                now=T0 + 1,
            )
            for i in range(CLAIMANTS)
        ),
        return_exceptions=True,
    )
    won = [o for o in outcomes if isinstance(o, InboxRecord)]
    assert len(won) == 1, outcomes
    assert all(isinstance(o, StaleDecision) for o in outcomes if o is not won[0])
    assert (await stored(inbox, bundle_id(1))).decision == won[0].decision


async def test_decision_and_expiry_racing_one_wins(backend: Backend) -> None:
    """A gateway whose clock is past the deadline expires while another decides."""
    inbox = backend.stores.inbox
    await inbox.create(record(resolve_by=T0 + 30))
    lease = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0)
    outcomes = await asyncio.gather(
        inbox.decide(
            bundle_id(1), fencing_token=lease.fencing_token, version=1, decision=JWS, now=T0 + 29
        ),
        inbox.set_status(bundle_id(1), "expired", now=T0 + 31),
        return_exceptions=True,
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failures) == 1, outcomes
    assert isinstance(failures[0], Conflict)
    final = await stored(inbox, bundle_id(1))
    assert final.status == ("decided" if failures[0] is outcomes[1] else "expired")
    assert final.version == 2


# ---------------------------------------------------------------- set_status
async def bring_to(inbox: InboxStore, status: InboxStatus, n: int = 1) -> None:
    """Create bundle ``n`` (due at T0 + 10) and move it to ``status`` through the port."""
    await inbox.create(record(n, resolve_by=T0 + 10))
    if status == "queued":
        return
    lease = await inbox.claim(bundle_id(n), ALICE, lease_s=60, now=T0)
    if status == "claimed":
        return
    if status in ("expired", "cancelled"):
        await inbox.set_status(bundle_id(n), status, now=T0 + 10)
        return
    await inbox.decide(
        bundle_id(n), fencing_token=lease.fencing_token, version=1, decision=JWS, now=T0
    )
    for step in ("delivered", "acknowledged"):
        if status == "decided" or (status == "delivered" and step == "acknowledged"):
            return
        await inbox.set_status(bundle_id(n), step, now=T0 + 1)


@pytest.mark.parametrize("target", list(STATUS_TRANSITIONS))
@pytest.mark.parametrize("current", INBOX_STATUSES)
async def test_set_status_follows_the_transitions(
    backend: Backend, current: InboxStatus, target: InboxStatus
) -> None:
    inbox = backend.stores.inbox
    await bring_to(inbox, current)
    before = await stored(inbox, bundle_id(1))
    assert before.status == current
    if current not in STATUS_TRANSITIONS[target]:
        with pytest.raises(Conflict):
            await inbox.set_status(bundle_id(1), target, now=T0 + 20)
        assert await inbox.get(bundle_id(1)) == before, "a refused move changes nothing"
        return
    await inbox.set_status(bundle_id(1), target, now=T0 + 20)
    after = await stored(inbox, bundle_id(1))
    assert after == dataclasses.replace(
        before, status=target, version=before.version + 1, lease=None
    )
    assert [r.bundle_id for r in await inbox.list(QUEUE, status=target)] == [bundle_id(1)]
    assert list(await inbox.list(QUEUE, status=current)) == []


async def test_expiry_waits_for_the_deadline(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record(resolve_by=T0 + 10))
    with pytest.raises(Conflict):
        await inbox.set_status(bundle_id(1), "expired", now=T0 + 9.999)
    await inbox.set_status(bundle_id(1), "cancelled", now=T0)  # no deadline for a cancel
    assert (await stored(inbox, bundle_id(1))).status == "cancelled"


@pytest.mark.parametrize("target", ["queued", "claimed", "decided", "released", ""])
async def test_set_status_refuses_moves_that_need_a_lease(backend: Backend, target: str) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    with pytest.raises(ValueError):
        await inbox.set_status(bundle_id(1), target, now=T0)  # type: ignore[arg-type]
    assert (await stored(inbox, bundle_id(1))).status == "queued"


async def test_cancelling_a_claimed_bundle_kills_its_lease(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    lease = await inbox.claim(bundle_id(1), ALICE, lease_s=60, now=T0)
    await inbox.set_status(bundle_id(1), "cancelled", now=T0 + 1)
    with pytest.raises(StaleDecision):
        await inbox.decide(
            bundle_id(1), fencing_token=lease.fencing_token, version=2, decision=JWS, now=T0 + 2
        )
    with pytest.raises(Conflict):
        await inbox.release(bundle_id(1), fencing_token=lease.fencing_token, now=T0 + 2)
    assert list(await inbox.requeue_lapsed(QUEUE, now=T0 + 100)) == []


# ---------------------------------------------------------------- events
async def test_events_are_compare_and_append(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record(1))
    await inbox.create(record(2))
    chain = [f"{JWS}.{i}" for i in range(3)] + ["ünïcödé event \x00"]
    for seq, event in enumerate(chain):
        await inbox.append_event(bundle_id(1), event, seq=seq)
    for seq in (0, 3, 5, -1, 1 << 60):
        with pytest.raises(ChainConflict):
            await inbox.append_event(bundle_id(1), "a fork", seq=seq)
    assert list(await inbox.events(bundle_id(1))) == chain
    assert list(await inbox.events(bundle_id(2))) == [], "each bundle has its own chain"
    await inbox.append_event(bundle_id(2), "first", seq=0)
    assert list(await inbox.events(bundle_id(2))) == ["first"]


async def test_concurrent_appends_at_one_position_one_wins(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    outcomes = await asyncio.gather(
        *(inbox.append_event(bundle_id(1), f"event-{i}", seq=0) for i in range(CLAIMANTS)),
        return_exceptions=True,
    )
    assert outcomes.count(None) == 1, outcomes
    assert all(isinstance(o, ChainConflict) for o in outcomes if o is not None)
    winner = outcomes.index(None)
    assert list(await inbox.events(bundle_id(1))) == [f"event-{winner}"]


async def test_racing_appenders_build_one_chain(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())

    async def append(i: int) -> int:
        for attempt in range(1000):
            seq = len(await inbox.events(bundle_id(1)))
            await asyncio.sleep(0)  # a yield, so that appenders really interleave
            try:
                await inbox.append_event(bundle_id(1), f"event-{i}", seq=seq)
            except ChainConflict:
                continue
            return attempt
        raise AssertionError("no append after 1000 attempts")

    conflicts = await asyncio.gather(*(append(i) for i in range(CLAIMANTS)))
    assert sum(conflicts) > 0, "the appenders did not race"
    chain = list(await inbox.events(bundle_id(1)))
    assert sorted(chain) == sorted(f"event-{i}" for i in range(CLAIMANTS)), "no gap, no fork"


async def test_events_of_an_unknown_bundle_are_refused(backend: Backend) -> None:
    inbox = backend.stores.inbox
    with pytest.raises(NotFound):
        await inbox.append_event(bundle_id(404), JWS, seq=0)
    assert list(await inbox.events(bundle_id(404))) == []


# ---------------------------------------------------------------- unknown bundles
UNKNOWN: dict[str, Callable[[InboxStore], Awaitable[object]]] = {
    "claim": lambda s: s.claim(bundle_id(404), ALICE, lease_s=60, now=T0),
    "release": lambda s: s.release(bundle_id(404), fencing_token=1, now=T0),
    "decide": lambda s: s.decide(bundle_id(404), fencing_token=1, version=1, decision=JWS, now=T0),
    "set_status": lambda s: s.set_status(bundle_id(404), "cancelled", now=T0),
    "append_event": lambda s: s.append_event(bundle_id(404), JWS, seq=0),
}


@pytest.mark.parametrize("call", list(UNKNOWN))
async def test_steps_on_an_unknown_bundle_are_not_found(backend: Backend, call: str) -> None:
    assert await refused(UNKNOWN[call](backend.stores.inbox)) == NotFound.code
    assert list(await backend.stores.inbox.list(QUEUE)) == []


# ---------------------------------------------------------------- sweeps
async def test_requeue_lapsed_returns_bundles_to_the_queue(backend: Backend) -> None:
    inbox = backend.stores.inbox
    for n in range(1, 6):
        await inbox.create(record(n, created_at=T0 + n))
    await inbox.create(record(9, queue=OTHER_QUEUE))
    await inbox.claim(bundle_id(9), ALICE, lease_s=10, now=T0)
    leases = {
        n: await inbox.claim(bundle_id(n), ALICE, lease_s=s, now=T0)
        for n, s in ((1, 30), (2, 10), (3, 20), (4, 500))
    }
    moved = await inbox.requeue_lapsed(QUEUE, now=T0 + 30)
    assert [r.bundle_id for r in moved] == [bundle_id(n) for n in (2, 3, 1)], "oldest lease first"
    assert all(r.status == "queued" and r.lease is None and r.version == 1 for r in moved)
    assert [r.bundle_id for r in await inbox.list(QUEUE, status="queued")] == [
        bundle_id(n) for n in (1, 2, 3, 5)
    ]
    assert (await stored(inbox, bundle_id(4))).lease == leases[4], "a live lease stays"
    assert (await stored(inbox, bundle_id(9))).status == "claimed", "another queue's stays"
    assert list(await inbox.requeue_lapsed(QUEUE, now=T0 + 30)) == []
    again = await inbox.claim(bundle_id(1), BOB, lease_s=10, now=T0 + 31)
    assert again.fencing_token > leases[1].fencing_token
    with pytest.raises(StaleDecision):
        await inbox.decide(
            bundle_id(2), fencing_token=leases[2].fencing_token, version=1, decision=JWS, now=T0
        )


async def test_requeue_lapsed_honours_its_limit(backend: Backend) -> None:
    inbox = backend.stores.inbox
    for n in range(1, 5):
        await inbox.create(record(n))
        await inbox.claim(bundle_id(n), ALICE, lease_s=n, now=T0)
    assert list(await inbox.requeue_lapsed(QUEUE, now=T0 + 10, limit=0)) == []
    first = await inbox.requeue_lapsed(QUEUE, now=T0 + 10, limit=3)
    assert [r.bundle_id for r in first] == [bundle_id(n) for n in (1, 2, 3)]
    rest = await inbox.requeue_lapsed(QUEUE, now=T0 + 10, limit=3)
    assert [r.bundle_id for r in rest] == [bundle_id(4)]


async def test_expire_due_fails_open_bundles_closed(backend: Backend) -> None:
    inbox = backend.stores.inbox
    deadlines = {1: T0 + 30, 2: T0 + 10, 3: T0 + 20, 4: T0 + 20, 5: T0 + 31}
    for n, resolve_by in deadlines.items():
        await inbox.create(record(n, resolve_by=resolve_by))
    await inbox.create(record(6, resolve_by=T0 + 5))
    await inbox.create(record(7, queue=OTHER_QUEUE, resolve_by=T0))
    lease = await inbox.claim(bundle_id(3), ALICE, lease_s=60, now=T0)
    done = await inbox.claim(bundle_id(6), ALICE, lease_s=60, now=T0)
    await inbox.decide(
        bundle_id(6), fencing_token=done.fencing_token, version=1, decision=JWS, now=T0
    )
    expired = await inbox.expire_due(QUEUE, now=T0 + 30)
    assert [r.bundle_id for r in expired] == [bundle_id(n) for n in (2, 3, 4, 1)]
    assert all(r.status == "expired" and r.lease is None and r.version == 2 for r in expired)
    assert (await stored(inbox, bundle_id(5))).status == "queued", "not due yet"
    assert (await stored(inbox, bundle_id(6))).status == "decided", "decided stays decided"
    assert (await stored(inbox, bundle_id(7))).status == "queued", "another queue's stays"
    assert list(await inbox.expire_due(QUEUE, now=T0 + 30)) == []
    with pytest.raises(StaleDecision):
        await inbox.decide(
            bundle_id(3), fencing_token=lease.fencing_token, version=1, decision=JWS, now=T0 + 1
        )
    assert [r.bundle_id for r in await inbox.expire_due(QUEUE, now=T0 + 31, limit=5)] == [
        bundle_id(5)
    ]


async def test_closed_bundles_do_not_crowd_the_expiry_sweep(backend: Backend) -> None:
    """Decided and cancelled bundles leave the deadline index, so a sweep with
    a small limit still reaches the open bundle that is due."""
    inbox = backend.stores.inbox
    for n in range(1, 4):
        await inbox.create(record(n, resolve_by=T0 + 10))
    lease = await inbox.claim(bundle_id(1), ALICE, lease_s=5, now=T0)
    await inbox.decide(
        bundle_id(1), fencing_token=lease.fencing_token, version=1, decision=JWS, now=T0
    )
    await inbox.set_status(bundle_id(2), "cancelled", now=T0)
    expired = await inbox.expire_due(QUEUE, now=T0 + 10, limit=1)
    assert [r.bundle_id for r in expired] == [bundle_id(3)]
    assert list(await inbox.requeue_lapsed(QUEUE, now=T0 + 10, limit=1)) == [], (
        "a decided bundle's lease left the lease index"
    )


async def test_expire_due_honours_its_limit(backend: Backend) -> None:
    inbox = backend.stores.inbox
    for n in range(1, 5):
        await inbox.create(record(n, resolve_by=T0 + n))
    assert list(await inbox.expire_due(QUEUE, now=T0 + 10, limit=-1)) == []
    first = await inbox.expire_due(QUEUE, now=T0 + 10, limit=2)
    assert [r.bundle_id for r in first] == [bundle_id(1), bundle_id(2)]
    assert [r.bundle_id for r in await inbox.list(QUEUE, status="queued")] == [
        bundle_id(3),
        bundle_id(4),
    ]


# ---------------------------------------------------------------- clock, durability
async def test_time_is_the_injected_clock(backend: Backend) -> None:
    """Far in the past and far in the future of the wall clock, on both backends."""
    inbox = backend.stores.inbox
    for n, base in ((1, 5.0), (2, 4.0e12)):
        await inbox.create(record(n, created_at=base, resolve_by=base + 100))
        lease = await inbox.claim(bundle_id(n), ALICE, lease_s=10, now=base)
        with pytest.raises(Conflict):
            await inbox.claim(bundle_id(n), BOB, lease_s=10, now=base + 9.5)
        assert (await inbox.claim(bundle_id(n), BOB, lease_s=10, now=base + 10)).fencing_token == (
            lease.fencing_token + 1
        )


@REDIS_ONLY
async def test_redis_inbox_keys_have_no_ttl(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await bring_to(inbox, "decided")
    await inbox.append_event(bundle_id(1), JWS, seq=0)
    await bring_to(inbox, "claimed", n=2)
    async with _raw_redis(backend.spec) as client:
        keys = [key async for key in client.scan_iter(match=f"{backend.spec.prefix}inbox:*")]
        assert len(keys) >= 6
        assert {await client.pttl(key) for key in keys} == {-1}


async def test_the_inbox_survives_reopening(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await bring_to(inbox, "decided")
    await inbox.append_event(bundle_id(1), JWS, seq=0)
    before = await inbox.get(bundle_id(1))
    again = await backend.spec.open()
    try:
        assert await again.inbox.get(bundle_id(1)) == before
        assert list(await again.inbox.events(bundle_id(1))) == [JWS]
        assert (await again.inbox.create(record(2, key="idem-1")))[0] == before
    finally:
        await again.close()


# ---------------------------------------------------------------- fail closed
CALLS: dict[str, Callable[[InboxStore], Awaitable[object]]] = {
    "create": lambda s: s.create(record()),
    "get": lambda s: s.get(bundle_id(1)),
    "list": lambda s: s.list(QUEUE),
    "list by status": lambda s: s.list(QUEUE, status="queued"),
    "claim": lambda s: s.claim(bundle_id(1), ALICE, lease_s=60, now=T0),
    "release": lambda s: s.release(bundle_id(1), fencing_token=1, now=T0),
    "decide": lambda s: s.decide(bundle_id(1), fencing_token=1, version=1, decision=JWS, now=T0),
    "set_status": lambda s: s.set_status(bundle_id(1), "cancelled", now=T0),
    "append_event": lambda s: s.append_event(bundle_id(1), JWS, seq=0),
    "events": lambda s: s.events(bundle_id(1)),
    "requeue_lapsed": lambda s: s.requeue_lapsed(QUEUE, now=T0),
    "expire_due": lambda s: s.expire_due(QUEUE, now=T0),
}


@pytest.mark.parametrize("call", list(CALLS))
async def test_unreachable_backend_fails_closed(dead_stores: Stores, call: str) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        await CALLS[call](dead_stores.inbox)
    assert raised.value.__cause__ is not None, "raised from the backend's exception"
    assert time.monotonic() - started < 2 * REDIS_TIMEOUT_S + 1, "failed fast, no hang"


BAD_CALLS: dict[str, Callable[[InboxStore], Awaitable[object]]] = {
    "create: claimed": lambda s: s.create(dataclasses.replace(record(), status="claimed")),
    "create: leased": lambda s: s.create(dataclasses.replace(record(), lease=Lease(ALICE, 1, 1))),
    "create: decided": lambda s: s.create(dataclasses.replace(record(), decision=JWS)),
    "create: version 0": lambda s: s.create(dataclasses.replace(record(), version=0)),
    "create: huge version": lambda s: s.create(
        dataclasses.replace(record(), version=MAX_INBOX_COUNTER + 1)
    ),
    "create: nan time": lambda s: s.create(dataclasses.replace(record(), created_at=math.nan)),
    "create: inf deadline": lambda s: s.create(dataclasses.replace(record(), resolve_by=math.inf)),
    "create: empty queue": lambda s: s.create(dataclasses.replace(record(), queue="")),
    "create: empty bundle": lambda s: s.create(dataclasses.replace(record(), sealed_bundle="")),
    "create: surrogate key": lambda s: s.create(
        dataclasses.replace(record(), idempotency_key="k\ud800")
    ),
    "create: long id": lambda s: s.create(
        dataclasses.replace(record(), bundle_id="hb_" + "x" * MAX_BINDING_TEXT)
    ),
    "list: unknown status": lambda s: s.list(QUEUE, status="released"),  # type: ignore[arg-type]
    "list: page too big": lambda s: s.list(QUEUE, limit=MAX_INBOX_PAGE + 1),
    "claim: zero lease": lambda s: s.claim(bundle_id(1), ALICE, lease_s=0, now=T0),
    "claim: long lease": lambda s: s.claim(bundle_id(1), ALICE, lease_s=MAX_LEASE_S + 1, now=T0),
    "claim: nan lease": lambda s: s.claim(bundle_id(1), ALICE, lease_s=math.nan, now=T0),
    "claim: empty owner": lambda s: s.claim(bundle_id(1), "", lease_s=60, now=T0),
    "claim: nan now": lambda s: s.claim(bundle_id(1), ALICE, lease_s=60, now=math.nan),
    "release: inf now": lambda s: s.release(bundle_id(1), fencing_token=1, now=math.inf),
    "decide: empty decision": lambda s: s.decide(
        bundle_id(1), fencing_token=1, version=1, decision="", now=T0
    ),
    "decide: surrogate": lambda s: s.decide(
        bundle_id(1), fencing_token=1, version=1, decision="\udc80", now=T0
    ),
    "set_status: to claimed": lambda s: s.set_status(bundle_id(1), "claimed", now=T0),
    "append_event: empty": lambda s: s.append_event(bundle_id(1), "", seq=0),
    "requeue_lapsed: nan now": lambda s: s.requeue_lapsed(QUEUE, now=math.nan),
    "expire_due: empty queue": lambda s: s.expire_due("", now=T0),
}


@pytest.mark.parametrize("call", list(BAD_CALLS))
async def test_invalid_arguments_are_refused_before_any_io(dead_stores: Stores, call: str) -> None:
    """ValueError, not StoreUnavailable, even though the backend is gone."""
    with pytest.raises(ValueError):
        await BAD_CALLS[call](dead_stores.inbox)


@pytest.mark.parametrize("bundle", ["", "hb_\ud800", "x" * (MAX_BINDING_TEXT + 1)])
async def test_reads_of_ids_no_record_can_have_find_nothing(
    dead_stores: Stores, bundle: str
) -> None:
    """Ids arrive from callers (an A2A task id): an impossible one is simply
    unknown, answered without touching the (here: dead) backend."""
    assert await dead_stores.inbox.get(bundle) is None
    assert list(await dead_stores.inbox.events(bundle)) == []


@pytest.mark.parametrize("call", [c for c in BAD_CALLS if c.startswith("create")])
async def test_a_refused_create_writes_nothing(backend: Backend, call: str) -> None:
    with pytest.raises(ValueError):
        await BAD_CALLS[call](backend.stores.inbox)
    assert list(await backend.stores.inbox.list(QUEUE)) == []
    assert await backend.stores.inbox.get(bundle_id(1)) is None


@asynccontextmanager
async def _raw_redis(spec: StoreSpec) -> AsyncIterator[Redis]:
    """A client of the test's Redis, to look behind the store's back."""
    assert spec.url is not None
    client = redis_client(spec.url)
    try:
        yield client
    finally:
        await client.aclose()


TAMPERING: dict[str, tuple[str, dict[str, Any]]] = {
    # field -> (operation, mapping to write over the record hash), or deleted fields
    "no version": ("hdel", {"version": ""}),
    "no status": ("hdel", {"status": ""}),
    "no queue": ("hdel", {"queue": ""}),
    "version not a number": ("hset", {"version": "two"}),
    "unknown status": ("hset", {"status": "released"}),
    "lease on a queued bundle": ("hset", {"lease_owner": ALICE}),
}


@REDIS_ONLY
@pytest.mark.parametrize("tamper", list(TAMPERING))
@pytest.mark.parametrize("call", ["get", "list", "claim", "set_status", "expire_due"])
async def test_a_tampered_redis_record_fails_closed(
    backend: Backend, tamper: str, call: str
) -> None:
    """An edited record is never read as absent or as something else."""
    inbox = backend.stores.inbox
    await inbox.create(record(resolve_by=T0))
    key = inbox_record_key(backend.spec.prefix, bundle_id(1))
    operation, fields = TAMPERING[tamper]
    async with _raw_redis(backend.spec) as client:
        if operation == "hdel":
            await client.hdel(key, *fields)
        else:
            for field, value in fields.items():
                await client.hset(key, field, value)
        before = await client.hgetall(key)
        with pytest.raises(StoreUnavailable):
            await CALLS[call](inbox)
        assert await client.hgetall(key) == before, "nothing written"


@REDIS_ONLY
@pytest.mark.parametrize("field", ["origin", "sealed_bundle", "queue"])
@pytest.mark.parametrize("call", ["get", "list"])
async def test_a_redis_record_that_is_not_utf8_fails_closed(
    backend: Backend, field: str, call: str
) -> None:
    await backend.stores.inbox.create(record())
    async with _raw_redis(backend.spec) as client:
        key = inbox_record_key(backend.spec.prefix, bundle_id(1))
        await client.hset(key, field, b"\xff\xfe")
    with pytest.raises(StoreUnavailable):
        await CALLS[call](backend.stores.inbox)


@REDIS_ONLY
async def test_an_index_naming_a_missing_record_fails_closed(backend: Backend) -> None:
    inbox = backend.stores.inbox
    await inbox.create(record())
    async with _raw_redis(backend.spec) as client:
        await client.delete(inbox_record_key(backend.spec.prefix, bundle_id(1)))
    with pytest.raises(StoreUnavailable):
        await inbox.list(QUEUE)
    with pytest.raises(StoreUnavailable):
        await inbox.create(record(2, key="idem-1"))


# ---------------------------------------------------------------- Redis key layout
ODD = ["refunds", "a:b", "{x}", "}{", "ünï", "x" * 300, "#abc", "sp ace", "a\x00b"]


@pytest.mark.parametrize("queue", ODD)
@pytest.mark.parametrize("bundle", [bundle_id(1), "{inbox}", "b:x:y", "ü" * 200])
def test_inbox_keys_live_in_one_cluster_slot(queue: str, bundle: str) -> None:
    keys = [
        *inbox_keys("baton:", bundle, queue),
        inbox_events_key("baton:", bundle),
        inbox_idempotency_key("baton:", queue),
        inbox_index_key("baton:", queue, "all"),
    ]
    assert len({key_slot(key.encode()) for key in keys}) == 1
    for key in keys:
        assert key.startswith("baton:inbox:{inbox}:")
        assert key.count("{") == 1 and key.count("}") == 1, "no forged hash tag"


def test_inbox_index_names_are_checked() -> None:
    assert set(INBOX_INDEXES) == {*INBOX_STATUSES, "due", "leases"}
    with pytest.raises(ValueError):
        inbox_index_key("p:", QUEUE, "released")


_ANY = st.text(st.characters(exclude_categories=()), min_size=1, max_size=200)


@given(
    first=st.tuples(_ANY, st.sampled_from([*INBOX_INDEXES, "all"])),
    second=st.tuples(_ANY, st.sampled_from([*INBOX_INDEXES, "all"])),
)
def test_distinct_queues_get_distinct_index_keys(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    """Attacker-influenced queue names cannot reach another queue's index."""
    a, b = inbox_index_key("p:", *first), inbox_index_key("p:", *second)
    assert (a == b) == (first == second)


@given(first=_ANY, second=_ANY)
def test_distinct_bundles_get_distinct_keys(first: str, second: str) -> None:
    keys = {
        inbox_record_key("p:", first),
        inbox_events_key("p:", first),
        inbox_record_key("p:", second),
        inbox_events_key("p:", second),
    }
    assert len(keys) == (2 if first == second else 4)


@given(bundle=_ANY, owner=_ANY)
def test_check_inbox_call_accepts_exactly_valid_text(bundle: str, owner: str) -> None:
    def valid(text: str) -> bool:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return len(text) <= MAX_BINDING_TEXT

    try:
        check_inbox_call(bundle, owner=owner, now=0.0, lease_s=1.0)
    except ValueError:
        assert not (valid(bundle) and valid(owner))
    else:
        assert valid(bundle) and valid(owner)


# ---------------------------------------------------------------- differential
_BUNDLES = 3
_LAST = -1  # a step's target: the bundle the last successful claim took
_STEPS = 30
Step = tuple[tuple[Any, ...], float]


def _random_steps(rng: random.Random) -> list[Step]:
    """A sequence of operations and clock advances, drawn with weights that
    keep bundles open and leased long enough for decisions to happen.
    (Hypothesis draws the seed; uniform draws explore this state space far
    better than list strategies, which favour short, simple sequences.)"""

    def pick(*choices: Any) -> Any:
        return rng.choice(choices)

    def target() -> int:
        return int(pick(_LAST, _LAST, _LAST, 0, 1, _BUNDLES))

    def offset() -> int:
        return int(pick(0, 0, 0, 0, 0, -1, 1))

    makers: list[Callable[[], tuple[Any, ...]]] = [
        lambda: ("claim", pick(0, 0, 0, 1, 1, 2, _BUNDLES), pick(ALICE, BOB), pick(5.0, 60.0)),
        lambda: ("decide", target(), offset(), offset()),
        lambda: ("release", target(), offset()),
        lambda: ("status", target(), pick(*STATUS_TRANSITIONS)),
        lambda: ("append", target(), offset()),
        lambda: ("requeue", pick(1, 100)),
        lambda: ("expire", pick(1, 100)),
        lambda: ("create", rng.randint(0, _BUNDLES + 1), rng.randint(0, _BUNDLES)),
    ]
    weights = [4, 3, 2, 2, 2, 1, 1, 1]
    return [
        (rng.choices(makers, weights)[0](), float(pick(0, 0, 0, 1, 3, 10, 70)))
        for _ in range(_STEPS)
    ]


async def _apply(inbox: InboxStore, op: tuple[Any, ...], now: float, claimed: list[int]) -> object:
    """Run one generated operation; the target bundle (``_LAST``: the one the
    last successful claim took, kept in ``claimed``), tokens, versions and
    seqs are taken relative to what this backend stores, so both backends see
    the same calls exactly when they agree so far."""
    kind, *args = op
    if kind in ("requeue", "expire"):
        sweep = inbox.requeue_lapsed if kind == "requeue" else inbox.expire_due
        return list(await sweep(QUEUE, now=now, limit=args[0]))
    if kind == "create":
        return await inbox.create(
            record(args[0], key=f"idem-{args[1]}", resolve_by=T0 + 200 * (args[1] + 1))
        )
    n = claimed[-1] if args[0] == _LAST else args[0]
    bundle = bundle_id(n)
    current = await inbox.get(bundle)
    token = current.lease.fencing_token if current and current.lease else 1
    version = current.version if current else 1
    if kind == "claim":
        lease = await inbox.claim(bundle, args[1], lease_s=args[2], now=now)
        claimed.append(n)
        return lease
    if kind == "release":
        await inbox.release(bundle, fencing_token=token + args[1], now=now)
        return None
    if kind == "decide":
        return await inbox.decide(
            bundle, fencing_token=token + args[1], version=version + args[2], decision=JWS, now=now
        )
    if kind == "status":
        await inbox.set_status(bundle, args[1], now=now)
        return None
    seq = len(await inbox.events(bundle)) + args[1]
    await inbox.append_event(bundle, f"event-{seq}", seq=seq)
    return None


async def _outcomes(inbox: InboxStore, steps: list[Step]) -> list[object]:
    """Every step's result or refusal code, then the final records, events and listings."""
    outcomes: list[object] = []
    now = T0
    claimed = [0]
    for n in range(_BUNDLES):
        await inbox.create(record(n, resolve_by=T0 + 300 * (n + 1)))
    for op, dt in steps:
        now += dt
        try:
            outcomes.append(("ok", await _apply(inbox, op, now, claimed)))
        except BatonError as exc:
            outcomes.append(("refused", exc.code))
        _check_invariants(await inbox.list(QUEUE, limit=MAX_INBOX_PAGE))
    for n in range(_BUNDLES + 3):
        outcomes.append(
            ("final", await inbox.get(bundle_id(n)), list(await inbox.events(bundle_id(n))))
        )
    for status in INBOX_STATUSES:
        outcomes.append(
            ("listed", status, [r.bundle_id for r in await inbox.list(QUEUE, status=status)])
        )
    return outcomes


def _check_invariants(records: Sequence[InboxRecord]) -> None:
    for rec in records:
        assert (rec.lease is not None) == (rec.status == "claimed"), rec
        assert rec.version >= 1
        assert rec.decision is None or rec.status in ("decided", "delivered", "acknowledged")


async def _both(steps: list[Step]) -> tuple[list[object], list[object]]:
    cipher = StoreCipher.generate()
    with tempfile.TemporaryDirectory() as folder:
        lite = await open_stores("sqlite", path=Path(folder) / "d.db", url=None, cipher=cipher)
        try:
            expected = await _outcomes(lite.inbox, steps)
        finally:
            await lite.close()
    prefix = fresh_prefix()
    remote = await open_stores("redis", path=None, url=redis_url(), cipher=cipher, prefix=prefix)
    client = redis_client(redis_url())
    try:
        got = await _outcomes(remote.inbox, steps)
        await check_redis_indexes(client, prefix, remote.inbox)
    finally:
        await remote.close()
        try:
            await delete_prefix(client, prefix)
        finally:
            await client.aclose()
    return expected, got


async def check_redis_indexes(client: Redis, prefix: str, inbox: InboxStore) -> None:
    """The Redis layout invariant (ADR 0010, inbox): each bundle of the queue is
    in ``all`` and in exactly the status index its status names, scored by
    ``created_at``; in ``due`` (scored ``resolve_by``) exactly while open; in
    ``leases`` (scored by the lease end) exactly while claimed."""
    records = {r.bundle_id: r for r in await inbox.list(QUEUE, limit=MAX_INBOX_PAGE)}

    async def index(name: str) -> dict[str, float]:
        key = inbox_index_key(prefix, QUEUE, name)
        scored = await client.zrange(key, 0, -1, withscores=True)
        members = cast("list[tuple[bytes, float]]", scored)
        return {member.decode(): score for member, score in members}

    assert await index("all") == {b: r.created_at for b, r in records.items()}
    for status in INBOX_STATUSES:
        want = {b: r.created_at for b, r in records.items() if r.status == status}
        assert await index(status) == want, status
    open_ones = {b: r.resolve_by for b, r in records.items() if r.status in ("queued", "claimed")}
    assert await index("due") == open_ones
    leased = {b: r.lease.until for b, r in records.items() if r.lease is not None}
    assert await index("leases") == leased


def _require_redis_now() -> None:
    """The suite's policy (conftest): no Redis fails, unless BATON_ALLOW_NO_REDIS=1."""
    reason = asyncio.run(redis_reachable(redis_url()))
    if reason is None:
        return
    message = f"Redis is unreachable ({reason}); the differential test needs it"
    if os.environ.get("BATON_ALLOW_NO_REDIS") == "1":
        pytest.skip(message)
    pytest.fail(message)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_both_backends_agree_on_every_operation_sequence(seed: int) -> None:
    """Differential: the same calls with the same clock give the same results,
    refusals and final state on SQLite and on Redis (and the invariants hold
    after every step)."""
    _require_redis_now()
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    expected, got = asyncio.run(_both(_random_steps(rng)))
    assert got == expected
