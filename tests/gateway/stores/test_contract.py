"""One contract suite for the store ports, run against SQLite and Redis.

The contract is the docstrings of ``protocol/ports.py``: first nonce claim
wins; chained stores compare-and-append (a conflict stores nothing, body
included) and never fork under concurrent writers, in one process or several;
bodies are sealed at rest and bound to their place; rate limits count in
fixed windows of the injected clock; and every backend failure is
``StoreUnavailable`` (fail closed), never a default.

Known difference, by design: Redis expires nonces by its own clock (``ttl_s``
of server time), SQLite by the injected ``now``; the TTL tests say which.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.recorder import Recorder
from gateway.stores import REDIS_TIMEOUT_S, Stores
from protocol.chain import GENESIS, ChainHead, verify_links
from protocol.errors import ChainBreak, ChainConflict, DigestInvalid, StoreUnavailable
from protocol.ports import AuditLog, NonceStore, RateLimiter, TranscriptStore
from protocol.transcript import verify_transcript
from tests.gateway.stores import workers
from tests.gateway.stores.conftest import Backend
from tests.gateway.stores.support import append_entry, append_event, entry, event

CONV = "conv-1"
NONCE = "nonce-0123456789abcdef"
PROCESSES = 4
CONCURRENT = 50


async def _fill(store: TranscriptStore, conversation: str, count: int) -> list[Any]:
    """Append ``count`` entries with bodies ``b"body <seq>"``; return them."""
    added = []
    for seq in range(count):
        record = entry(await store.head(conversation), conversation, ts=seq)
        await store.append(record, f"body {seq}".encode())
        added.append(record)
    return added


# ---------------------------------------------------------------- the ports
@pytest.mark.parametrize(
    ("attr", "port"),
    [
        ("nonces", NonceStore),
        ("transcripts", TranscriptStore),
        ("audit", AuditLog),
        ("rates", RateLimiter),
    ],
)
def test_each_store_implements_its_port(backend: Backend, attr: str, port: type[Any]) -> None:
    store = getattr(backend.stores, attr)
    assert isinstance(store, port)
    for name, method in inspect.getmembers(port, inspect.isfunction):
        if name.startswith("_"):
            continue
        impl = getattr(type(store), name)
        assert inspect.iscoroutinefunction(impl), name
        want = [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]
        got = [(p.name, p.kind, p.default) for p in inspect.signature(impl).parameters.values()]
        assert got == want, name


async def test_ping_answers(backend: Backend) -> None:
    await backend.stores.ping()


# ---------------------------------------------------------------- nonces
async def test_first_nonce_claim_wins(backend: Backend) -> None:
    nonces = backend.stores.nonces
    assert await nonces.claim("kid-1", NONCE, ttl_s=66, now=1000.0)
    assert not await nonces.claim("kid-1", NONCE, ttl_s=66, now=1001.0)
    assert await nonces.claim("kid-2", NONCE, ttl_s=66, now=1001.0), "scopes are separate"
    assert await nonces.claim("kid-1", NONCE + "x", ttl_s=66, now=1001.0)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a:b", "c"), ("a", "b:c")),  # no separator forgery
        (("k", "n{x}"), ("k", "n{y}")),  # hash-tag characters
        (("k", "é" * 200), ("k", "é" * 199)),  # long, non-ASCII
        (("k", "x"), ("k", "#" + "0" * 64)),  # the hashed-form marker itself
    ],
)
async def test_unusual_scopes_and_nonces_do_not_collide(
    backend: Backend, first: tuple[str, str], second: tuple[str, str]
) -> None:
    nonces = backend.stores.nonces
    assert await nonces.claim(*first, ttl_s=60, now=1.0)
    assert await nonces.claim(*second, ttl_s=60, now=1.0)
    assert not await nonces.claim(*first, ttl_s=60, now=1.0)
    assert not await nonces.claim(*second, ttl_s=60, now=1.0)


async def test_claim_is_remembered_for_at_most_ttl(backend: Backend) -> None:
    assert await backend.stores.nonces.claim("kid", NONCE, ttl_s=66, now=5000.0)
    remaining = await backend.raw.nonce_ttl("kid", NONCE, now=5000.0)
    assert remaining is not None
    assert 0 < remaining <= 66


async def test_claim_is_forgotten_after_ttl(backend: Backend) -> None:
    nonces = backend.stores.nonces
    if backend.kind == "sqlite":  # the injected clock decides
        assert await nonces.claim("kid", NONCE, ttl_s=66, now=1000.0)
        assert not await nonces.claim("kid", NONCE, ttl_s=66, now=1065.9)
        assert await nonces.claim("kid", NONCE, ttl_s=66, now=1066.0)
        return
    # Redis: the server clock decides; a 1 s TTL, polled with a hard deadline.
    assert await nonces.claim("kid", NONCE, ttl_s=1, now=0.0)
    assert not await nonces.claim("kid", NONCE, ttl_s=1, now=0.0)
    deadline = time.monotonic() + 5.0
    while not await nonces.claim("kid", NONCE, ttl_s=1, now=0.0):
        assert time.monotonic() < deadline, "nonce still remembered 5 s after a 1 s TTL"
        await asyncio.sleep(0.05)


async def test_ttl_below_one_second_is_a_programming_error(backend: Backend) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await backend.stores.nonces.claim("kid", NONCE, ttl_s=0, now=1.0)


async def test_concurrent_claims_one_winner(backend: Backend) -> None:
    claims = [
        backend.stores.nonces.claim("kid", NONCE, ttl_s=60, now=1.0) for _ in range(CONCURRENT)
    ]
    assert (await asyncio.gather(*claims)).count(True) == 1


# ---------------------------------------------------------------- transcripts
async def test_empty_conversation(backend: Backend) -> None:
    transcripts = backend.stores.transcripts
    assert await transcripts.head(CONV) == ChainHead(-1, GENESIS)
    assert list(await transcripts.read(CONV)) == []
    assert await transcripts.read_body(CONV, 0) is None


async def test_append_then_read_back(backend: Backend) -> None:
    transcripts = backend.stores.transcripts
    first = entry(ChainHead(), CONV)
    await transcripts.append(first, b'{"jsonrpc":"2.0"}')
    second = entry(first.head, CONV, kind="response")
    await transcripts.append(second, None)
    assert await transcripts.head(CONV) == second.head
    assert list(await transcripts.read(CONV)) == [first, second]
    assert await transcripts.read_body(CONV, 0) == b'{"jsonrpc":"2.0"}'
    assert await transcripts.read_body(CONV, 1) is None, "appended without a body"
    assert await transcripts.read_body(CONV, 2) is None, "no such entry"
    assert await transcripts.read_body(CONV, -1) is None


async def test_empty_body_is_not_no_body(backend: Backend) -> None:
    await backend.stores.transcripts.append(entry(ChainHead(), CONV), b"")
    assert await backend.stores.transcripts.read_body(CONV, 0) == b""


async def test_entries_are_stored_as_canonical_bytes(backend: Backend) -> None:
    first = entry(ChainHead(), CONV)
    await backend.stores.transcripts.append(first, None)
    assert await backend.raw.record(CONV, 0) == first.canonical()


async def _assert_nothing_after_first(backend: Backend, first: Any) -> None:
    transcripts = backend.stores.transcripts
    assert await transcripts.head(CONV) == first.head
    assert list(await transcripts.read(CONV)) == [first]
    assert await transcripts.read_body(CONV, 1) is None
    assert await backend.raw.body(CONV, 1) is None
    assert await backend.raw.record(CONV, 1) is None


@pytest.mark.parametrize("wrong", ["seq ahead", "seq repeated", "prev", "genesis prev"])
async def test_append_that_does_not_extend_the_head_conflicts_and_stores_nothing(
    backend: Backend, wrong: str
) -> None:
    transcripts = backend.stores.transcripts
    first = entry(ChainHead(), CONV)
    await transcripts.append(first, b"first")
    candidate = {
        "seq ahead": entry(ChainHead(1, first.hash), CONV),
        "seq repeated": entry(ChainHead(), CONV, ts=99),
        "prev": entry(ChainHead(0, "sha256:" + "1" * 64), CONV),
        "genesis prev": entry(ChainHead(0, GENESIS), CONV),
    }[wrong]
    with pytest.raises(ChainConflict):
        await transcripts.append(candidate, b"must not be stored")
    await _assert_nothing_after_first(backend, first)
    assert await transcripts.read_body(CONV, 0) == b"first"


async def test_first_entry_must_start_at_genesis(backend: Backend) -> None:
    with pytest.raises(ChainConflict):
        await backend.stores.transcripts.append(entry(ChainHead(0, GENESIS), CONV), b"x")
    assert await backend.stores.transcripts.head(CONV) == ChainHead()
    assert await backend.raw.body(CONV, 1) is None


async def test_entry_whose_hash_does_not_recompute_is_refused(backend: Backend) -> None:
    transcripts = backend.stores.transcripts
    first = entry(ChainHead(), CONV)
    await transcripts.append(first, None)
    forged = entry(first.head, CONV).model_copy(update={"ts": 12345})
    with pytest.raises(ChainBreak):
        await transcripts.append(forged, b"forged")
    await _assert_nothing_after_first(backend, first)


@pytest.mark.parametrize(
    ("after_seq", "limit", "expected"),
    [
        (-1, 1000, [0, 1, 2, 3, 4]),
        (-7, 1000, [0, 1, 2, 3, 4]),
        (1, 2, [2, 3]),
        (3, 10, [4]),
        (4, 10, []),
        (99, 10, []),
        (-1, 0, []),
        (-1, -3, []),
        (-1, 1, [0]),
        (2, 1 << 70, [3, 4]),
    ],
)
async def test_read_window(
    backend: Backend, after_seq: int, limit: int, expected: list[int]
) -> None:
    await _fill(backend.stores.transcripts, CONV, 5)
    entries = await backend.stores.transcripts.read(CONV, after_seq=after_seq, limit=limit)
    assert [e.seq for e in entries] == expected


async def test_read_body_of_absurd_seq_is_none(backend: Backend) -> None:
    await _fill(backend.stores.transcripts, CONV, 1)
    assert await backend.stores.transcripts.read_body(CONV, 1 << 70) is None


@pytest.mark.parametrize(
    "conversation",
    [
        "ctx 1 with spaces {and braces}",
        "a:b",
        "ünïcödé-会話",
        "x" * 256,
        "#" + "0" * 64,
        "550e8400-e29b-41d4-a716-446655440000",
    ],
)
async def test_conversations_are_separate_and_any_id_works(
    backend: Backend, conversation: str
) -> None:
    transcripts = backend.stores.transcripts
    mine = await _fill(transcripts, conversation, 2)
    other = await _fill(transcripts, "other", 3)
    assert list(await transcripts.read(conversation)) == mine
    assert list(await transcripts.read("other")) == other
    assert await transcripts.head(conversation) == mine[-1].head
    assert await transcripts.read_body(conversation, 1) == b"body 1"
    verify_transcript(await transcripts.read(conversation), conversation=conversation)


async def test_bodies_are_not_stored_in_plaintext(backend: Backend) -> None:
    plaintext = b'{"secret":"the launch code is 0000"}'
    await backend.stores.transcripts.append(entry(ChainHead(), CONV), plaintext)
    sealed = await backend.raw.body(CONV, 0)
    assert sealed is not None
    assert plaintext not in sealed
    assert b"launch code" not in sealed
    assert len(sealed) >= len(plaintext) + 16, "room for a nonce and a tag"


async def test_tampered_body_does_not_decrypt(backend: Backend) -> None:
    await backend.stores.transcripts.append(entry(ChainHead(), CONV), b"original body")
    sealed = await backend.raw.body(CONV, 0)
    assert sealed is not None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    await backend.raw.set_body(CONV, 0, tampered)
    with pytest.raises(DigestInvalid):
        await backend.stores.transcripts.read_body(CONV, 0)


async def test_body_moved_to_another_entry_does_not_decrypt(backend: Backend) -> None:
    await _fill(backend.stores.transcripts, CONV, 2)
    sealed = await backend.raw.body(CONV, 0)
    assert sealed is not None
    await backend.raw.set_body(CONV, 1, sealed)
    with pytest.raises(DigestInvalid):
        await backend.stores.transcripts.read_body(CONV, 1)


async def test_body_under_an_unknown_store_key_does_not_decrypt(backend: Backend) -> None:
    await _fill(backend.stores.transcripts, CONV, 1)
    other = await backend.spec.open(key=b"\x07" * 32)
    try:
        with pytest.raises(DigestInvalid):
            await other.transcripts.read_body(CONV, 0)
    finally:
        await other.close()


async def test_tampered_stored_entry_fails_verification(backend: Backend) -> None:
    """read returns what is stored; the chain (not the store) detects edited content."""
    await _fill(backend.stores.transcripts, CONV, 2)
    data = await backend.raw.record(CONV, 1)
    assert data is not None
    await backend.raw.set_record(CONV, 1, data.replace(b"request", b"response"))
    with pytest.raises(ChainBreak):
        verify_transcript(await backend.stores.transcripts.read(CONV), conversation=CONV)


async def test_stored_entry_in_non_canonical_form_is_an_integrity_error(backend: Backend) -> None:
    await _fill(backend.stores.transcripts, CONV, 2)
    data = await backend.raw.record(CONV, 1)
    assert data is not None
    await backend.raw.set_record(CONV, 1, b" " + data)
    with pytest.raises(ChainBreak):
        await backend.stores.transcripts.read(CONV)


async def test_entry_stored_out_of_place_is_an_integrity_error(backend: Backend) -> None:
    await _fill(backend.stores.transcripts, CONV, 2)
    data = await backend.raw.record(CONV, 0)
    assert data is not None
    await backend.raw.set_record(CONV, 1, data)
    with pytest.raises(ChainBreak):
        await backend.stores.transcripts.read(CONV)


async def test_chain_survives_reopening(backend: Backend) -> None:
    added = await _fill(backend.stores.transcripts, CONV, 3)
    again = await backend.spec.open()
    try:
        assert list(await again.transcripts.read(CONV)) == added
        assert await again.transcripts.read_body(CONV, 2) == b"body 2"
        await again.transcripts.append(entry(added[-1].head, CONV), None)
    finally:
        await again.close()
    assert (await backend.stores.transcripts.head(CONV)).seq == 3


async def test_concurrent_appenders_build_one_chain(backend: Backend) -> None:
    transcripts = backend.stores.transcripts
    conflicts = await asyncio.gather(
        *(append_entry(transcripts, CONV, b"x") for _ in range(CONCURRENT))
    )
    assert sum(conflicts) > 0, "the appenders did not race"
    entries = await transcripts.read(CONV)
    assert len(entries) == CONCURRENT
    head = verify_transcript(entries, conversation=CONV)
    assert head == await transcripts.head(CONV)
    assert head.seq == CONCURRENT - 1


def _spawned(target: Callable[..., None], jobs: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``target(*job, barrier, queue)`` in one spawned process per job; results."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(jobs))
    queue = ctx.Queue()
    processes = [ctx.Process(target=target, args=(*job, barrier, queue)) for job in jobs]
    for process in processes:
        process.start()
    try:
        outcomes = [queue.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        queue.close()
        queue.join_thread()
    errors = [text for status, text in outcomes if status != "ok"]
    assert not errors, errors[0]
    return [value for _, value in outcomes]


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def test_appenders_in_four_processes_build_one_chain(backend: Backend) -> None:
    jobs = [(backend.spec, CONV, n) for n in _shares(CONCURRENT, PROCESSES)]
    conflicts = await asyncio.to_thread(_spawned, workers.append_many, jobs)
    assert sum(conflicts) > 0, "the appenders did not race"
    entries = await backend.stores.transcripts.read(CONV)
    assert len(entries) == CONCURRENT
    assert len({e.ts for e in entries}) == PROCESSES, "every process appended"
    assert verify_transcript(entries, conversation=CONV).seq == CONCURRENT - 1
    for seq in (0, CONCURRENT - 1):
        assert await backend.stores.transcripts.read_body(CONV, seq) == b"x"


async def test_nonce_claims_in_four_processes_one_winner(backend: Backend) -> None:
    jobs = [(backend.spec, ("kid", NONCE), n) for n in _shares(CONCURRENT, PROCESSES)]
    results = await asyncio.to_thread(_spawned, workers.claim_many, jobs)
    outcomes = [outcome for result in results for outcome in result]
    assert len(outcomes) == CONCURRENT
    assert outcomes.count(True) == 1


# ---------------------------------------------------------------- audit
async def test_audit_log_appends_and_reads(backend: Backend) -> None:
    audit = backend.stores.audit
    assert await audit.head() == ChainHead()
    assert list(await audit.read()) == []
    added = []
    for i in range(4):
        record = event(await audit.head(), name=f"event-{i}")
        await audit.append(record)
        added.append(record)
    assert await audit.head() == added[-1].head
    assert list(await audit.read()) == added
    assert list(await audit.read(after_seq=1, limit=2)) == added[2:4]
    assert list(await audit.read(after_seq=3)) == []
    assert list(await audit.read(limit=0)) == []
    assert verify_links(await audit.read()) == added[-1].head


@pytest.mark.parametrize("wrong", ["seq ahead", "seq repeated", "prev"])
async def test_audit_append_that_does_not_extend_the_head_conflicts(
    backend: Backend, wrong: str
) -> None:
    audit = backend.stores.audit
    first = event(ChainHead())
    await audit.append(first)
    candidate = {
        "seq ahead": event(ChainHead(1, first.hash)),
        "seq repeated": event(ChainHead(), name="again"),
        "prev": event(ChainHead(0, "sha256:" + "2" * 64)),
    }[wrong]
    with pytest.raises(ChainConflict):
        await audit.append(candidate)
    assert await audit.head() == first.head
    assert list(await audit.read()) == [first]


async def test_audit_event_whose_hash_does_not_recompute_is_refused(backend: Backend) -> None:
    forged = event(ChainHead()).model_copy(update={"outcome": "rejected"})
    with pytest.raises(ChainBreak):
        await backend.stores.audit.append(forged)
    assert await backend.stores.audit.head() == ChainHead()


async def test_concurrent_audit_appenders_build_one_chain(backend: Backend) -> None:
    audit = backend.stores.audit
    conflicts = await asyncio.gather(*(append_event(audit) for _ in range(CONCURRENT)))
    assert sum(conflicts) > 0, "the appenders did not race"
    events = await audit.read()
    assert len(events) == CONCURRENT
    assert verify_links(events) == await audit.head()


async def test_an_audit_append_under_a_used_once_key_writes_nothing(backend: Backend) -> None:
    """``once`` (H06): the first append under a key is written, a later one is
    not (False, head unchanged), whatever its seq; other keys are unaffected."""
    audit = backend.stores.audit
    first = event(ChainHead(), name="handoff.created")
    assert await audit.append(first, once="handoff.created:hb_1") is True
    again = event(first.head, name="handoff.created")
    assert await audit.append(again, once="handoff.created:hb_1") is False
    assert await audit.head() == first.head
    stale = event(ChainHead(), name="handoff.created")  # a used key wins over a conflict
    assert await audit.append(stale, once="handoff.created:hb_1") is False
    other = event(first.head, name="handoff.created")
    assert await audit.append(other, once="handoff.created:hb_2") is True
    plain = event(other.head)
    assert await audit.append(plain) is True
    assert list(await audit.read()) == [first, other, plain]


async def test_concurrent_recorders_under_one_once_key_append_one_event(
    backend: Backend,
) -> None:
    """Many writers (each its own :class:`Recorder`, as separate gateways are)
    racing under one ``once`` key: exactly one event; the rest get None."""
    recorders = [Recorder(backend.stores.transcripts, backend.stores.audit) for _ in range(8)]
    fields: dict[str, Any] = {
        "ts": 1, "event": "handoff.created", "outcome": "accepted", "reason": None,
        "peer": None, "artifact_sha256": None, "detail": None,
    }  # fmt: skip
    results = await asyncio.gather(
        *(
            recorder.event(once="handoff.created:hb_race", request_id=f"r{i}", **fields)
            for i, recorder in enumerate(recorders * 4)
        )
    )
    written = [result for result in results if result is not None]
    assert len(written) == 1
    assert list(await backend.stores.audit.read()) == written


# ---------------------------------------------------------------- rate limits
async def test_rate_limit_counts_within_a_window(backend: Backend) -> None:
    rates = backend.stores.rates
    decisions = [await rates.hit("id", limit=3, window_s=10, now=1003.5) for _ in range(4)]
    assert [(d.allowed, d.remaining, d.retry_after_s) for d in decisions[:3]] == [
        (True, 2, 0.0),
        (True, 1, 0.0),
        (True, 0, 0.0),
    ]
    refused = decisions[3]
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after_s == pytest.approx(6.5)


async def test_rate_limit_window_boundaries(backend: Backend) -> None:
    rates = backend.stores.rates
    assert (await rates.hit("id", limit=2, window_s=10, now=1000.0)).allowed  # window start
    assert (await rates.hit("id", limit=2, window_s=10, now=1009.5)).allowed  # same window
    last = await rates.hit("id", limit=2, window_s=10, now=1009.999)
    assert not last.allowed
    assert last.retry_after_s == pytest.approx(0.001, abs=1e-6)
    fresh = await rates.hit("id", limit=2, window_s=10, now=1010.0)  # next window
    assert (fresh.allowed, fresh.remaining, fresh.retry_after_s) == (True, 1, 0.0)
    early = await rates.hit("id", limit=2, window_s=10, now=999.999)  # previous window
    assert (early.allowed, early.remaining) == (True, 1)


async def test_rate_limit_fractional_window(backend: Backend) -> None:
    rates = backend.stores.rates
    assert (await rates.hit("id", limit=1, window_s=0.25, now=100.1)).allowed
    refused = await rates.hit("id", limit=1, window_s=0.25, now=100.2)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(0.05)
    assert (await rates.hit("id", limit=1, window_s=0.25, now=100.25)).allowed


async def test_refused_cost_is_not_counted(backend: Backend) -> None:
    rates = backend.stores.rates
    assert (await rates.hit("id", limit=5, window_s=60, now=0.0, cost=3)).remaining == 2
    refused = await rates.hit("id", limit=5, window_s=60, now=1.0, cost=3)
    assert (refused.allowed, refused.remaining) == (False, 2)
    assert refused.retry_after_s == pytest.approx(59.0)
    fits = await rates.hit("id", limit=5, window_s=60, now=2.0, cost=2)
    assert (fits.allowed, fits.remaining) == (True, 0)


async def test_rate_limit_zero_and_over_limit_costs(backend: Backend) -> None:
    rates = backend.stores.rates
    assert not (await rates.hit("none", limit=0, window_s=1, now=0.5)).allowed
    too_big = await rates.hit("big", limit=3, window_s=1, now=0.5, cost=4)
    assert (too_big.allowed, too_big.remaining) == (False, 3)
    peek = await rates.hit("big", limit=3, window_s=1, now=0.5, cost=0)
    assert (peek.allowed, peek.remaining) == (True, 3)


async def test_rate_limit_keys_are_separate(backend: Backend) -> None:
    rates = backend.stores.rates
    assert (await rates.hit("a:b", limit=1, window_s=10, now=5.0)).allowed
    assert (await rates.hit("a", limit=1, window_s=10, now=5.0)).allowed
    assert (await rates.hit("spiffe://baton.local/agent/x", limit=1, window_s=10, now=5.0)).allowed
    assert not (await rates.hit("a:b", limit=1, window_s=10, now=5.0)).allowed


async def test_rate_counter_expires_after_its_window(backend: Backend) -> None:
    await backend.stores.rates.hit("id", limit=5, window_s=10, now=1003.5)
    kept = await backend.raw.rate_ttl("id", 100, now=1003.5)
    assert kept is not None
    assert 6.5 < kept <= 16.5, "rest of the window plus one window of grace"


@pytest.mark.parametrize(
    "bad",
    [
        {"limit": 1, "window_s": 0.0},
        {"limit": 1, "window_s": -1.0},
        {"limit": 1, "window_s": float("nan")},
        {"limit": -1, "window_s": 1.0},
        {"limit": 1, "window_s": 1.0, "cost": -1},
    ],
)
async def test_rate_limit_arguments_are_checked(backend: Backend, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        await backend.stores.rates.hit("id", now=1.0, **bad)


async def test_concurrent_hits_never_exceed_the_limit(backend: Backend) -> None:
    rates = backend.stores.rates
    decisions = await asyncio.gather(
        *(rates.hit("id", limit=10, window_s=60, now=30.0) for _ in range(CONCURRENT))
    )
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))


# ---------------------------------------------------------------- fail closed
_FIRST = entry(ChainHead(), CONV)

CALLS: dict[str, Callable[[Stores], Awaitable[object]]] = {
    "ping": lambda s: s.ping(),
    "nonces.claim": lambda s: s.nonces.claim("kid", NONCE, ttl_s=60, now=1.0),
    "transcripts.head": lambda s: s.transcripts.head(CONV),
    "transcripts.append": lambda s: s.transcripts.append(_FIRST, b"body"),
    "transcripts.read": lambda s: s.transcripts.read(CONV),
    "transcripts.read_body": lambda s: s.transcripts.read_body(CONV, 0),
    "audit.head": lambda s: s.audit.head(),
    "audit.append": lambda s: s.audit.append(event(ChainHead())),
    "audit.read": lambda s: s.audit.read(),
    "rates.hit": lambda s: s.rates.hit("id", limit=1, window_s=1, now=1.0),
}


@pytest.mark.parametrize("call", list(CALLS))
async def test_unreachable_backend_fails_closed(dead_stores: Stores, call: str) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        await CALLS[call](dead_stores)
    assert raised.value.__cause__ is not None, "raised from the backend's exception"
    assert time.monotonic() - started < 2 * REDIS_TIMEOUT_S + 1, "failed fast, no hang"
