"""Fault tests: the gateway stays closed and its records stay whole when
things break under it (Issue 7, "Fault tests").

* Clock jumps (an injected clock, in this process): a jump forward past the
  replay window makes a held signed request stale; a jump backward never lets
  a used nonce pass again (SQLite, and Redis whose TTLs run on its own clock);
  a lapsed lease does not come back to life and an expired handoff cannot be
  claimed or decided when the clock goes back.
* Redis SIGKILLed under load (``baton serve`` subprocess, a private
  ``redis-server`` persisting every write): every request sent after the kill
  is 503 and reaches no upstream; after Redis restarts on its own data, every
  request the gateway answered 2xx is in its conversation's transcript.
* The gateway SIGKILLed under load (SQLite) and restarted: ``baton transcript
  verify`` and ``baton audit verify`` pass, no entry is duplicated, and
  escalations retried with their idempotency keys make no second bundle.

Two gateway bugs found here are fixed and pinned: a clock step back longer than the
nonce TTL re-opened a replay on Redis (freshness is now judged on a clock that never goes
back), and a bundle stored but not audited (a crash or an audit fault mid-escalation) was
never audited on retry (the ``queued`` event and the ``handoff.created`` audit event are
now written exactly once by whichever open of the bundle gets there, ``Handoffs._announce``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.devdata import DataFolder
from gateway.inspect import verify_audit, verify_conversation
from keys.keyset import KeySet
from protocol.canonical import canonical_digest
from protocol.decision import DecisionBinding, DecisionBody, make_decision_at, sign_decision
from protocol.lifecycle import verify_events
from tests.gateway._harness import TRUST_DOMAIN, RecordingUpstream, rpc, signed_headers
from tests.security.conftest import REDIS_URL, SecGateway, launch, shutdown
from tests.security.faultkit import (
    InProcess,
    PrivateRedis,
    Served,
    cli_verifies,
    configure,
    error_code,
    escalation,
    in_process,
    make_folder,
    open_stores,
    post,
    sqlite_conversations,
    ssl_for,
    until,
)
from tests.security.invariants import assert_rejected

PATH = "/u/billing/x"
WINDOW_S, SKEW_S = 60, 5  # the defaults (protocol.replay.FreshnessPolicy)


# ================================================================ clock jumps
def _held(gw: SecGateway, *, created: int, nonce: str | None = None) -> list[tuple[str, str]]:
    """A signed request made at ``created`` and held back by an attacker."""
    body = rpc("tools/list")
    return signed_headers(gw.agent("support"), "POST", gw.base + PATH, body, created=created,
                          nonce=nonce)  # fmt: skip


@pytest.mark.threat("R07")
async def test_a_jump_forward_past_the_window_makes_a_held_request_stale(
    gw: SecGateway,
) -> None:
    signed_at = int(gw.clock.now)
    held = [_held(gw, created=signed_at) for _ in range(2)]
    gw.clock.now = signed_at + WINDOW_S + 1  # the gateway's clock jumps
    await assert_rejected(
        gw, gw.send("support", PATH, rpc("tools/list"), headers=held[0]), status=401, code="stale"
    )
    gw.clock.now = signed_at + 86_400  # and again, a day
    await assert_rejected(
        gw, gw.send("support", PATH, rpc("tools/list"), headers=held[1]), status=401, code="stale"
    )
    assert gw.upstream.received == []


@pytest.mark.threat("R01", "R06")
async def test_a_jump_backward_does_not_reopen_a_used_nonce(gw: SecGateway) -> None:
    signed_at = int(gw.clock.now)
    used = _held(gw, created=signed_at)
    status, _, _ = await gw.send("support", PATH, rpc("tools/list"), headers=used)
    assert status == 200
    # Back by less than the skew, then by an hour, then forward again inside the
    # window: the nonce stays spent throughout. Freshness is judged on a clock
    # that never goes back (Gateway._freshness_now), so the request is not
    # "stale" after the step either: it is the replay it is.
    for now, code in (
        (signed_at - SKEW_S, "replay_detected"),
        (signed_at - 3600, "replay_detected"),
        (signed_at + WINDOW_S, "replay_detected"),
    ):
        gw.clock.now = now
        await assert_rejected(
            gw, gw.send("support", PATH, rpc("tools/list"), headers=used), status=401, code=code
        )
    assert len(gw.upstream.received) == 1


@pytest.mark.threat("R01", "R06")
async def test_a_jump_backward_after_redis_forgot_the_nonce_is_refused(tmp_path: Path) -> None:
    """Redis expires a nonce on its own clock; the gateway's clock then steps
    back to when the request was made. The replay must not pass: the window it
    was fresh in has passed on the clock the nonce store runs on."""
    gw = await launch(tmp_path, store="redis", extra="\n[replay]\nwindow_s = 1\nskew_s = 0\n")
    try:
        assert gw.redis_prefix is not None
        signed_at = int(time.time())
        gw.clock.now = signed_at
        used = _held(gw, created=signed_at, nonce="fault-backward-0001")
        status, _, _ = await gw.send("support", PATH, rpc("tools/list"), headers=used)
        assert status == 200
        client = aioredis.from_url(REDIS_URL)
        try:
            keys = [k async for k in client.scan_iter(match=gw.redis_prefix + "nonce:*")]
            assert len(keys) == 1

            async def forgotten() -> bool:
                return not await client.exists(keys[0])

            await until(forgotten, timeout=10, what="Redis to expire the nonce (TTL 2 s)")
            gw.clock.now = signed_at + 3  # time passed on both clocks: the gateway saw it
            status, _, _ = await gw.send(
                "support", PATH, rpc("tools/list"), headers=_held(gw, created=signed_at + 3)
            )
            assert status == 200
        finally:
            await client.aclose()
        gw.clock.now = signed_at  # ... and the gateway's clock steps back 3 s
        status, _, body = await gw.send("support", PATH, rpc("tools/list"), headers=used)
        assert (status, error_code(body) if status != 200 else "ok") in (
            (401, "replay_detected"),
            (401, "stale"),
        ), "a replay passed after the gateway's clock stepped back"
        assert len(gw.upstream.received) == 2
    finally:
        await shutdown(gw)


# ------------------------------------------------------- leases and expiry
@pytest.fixture
async def inproc(tmp_path: Path) -> AsyncIterator[InProcess]:
    from tests.security.conftest import Clock

    async with in_process(tmp_path, Clock(float(int(time.time())))) as running:
        yield running


async def _open_handoff(gw: InProcess, key: str, *, resolve_within_s: int = 3600) -> str:
    """``support`` takes part in ``a2a:ctx-<key>``, then escalates it; the bundle id."""
    context_id = f"ctx-{key}"
    status, body = await gw.send(
        PATH, rpc("tools/list"), extra=[("baton-conversation", "a2a:" + context_id)]
    )
    assert status == 200, body
    from tests.interop.handoff_kit import handoff_message

    message = handoff_message(key, context_id, resolve_within_s=resolve_within_s)
    payload = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}
    ).encode()
    status, body = await gw.send("/a2a/inbox/refunds", payload, extra=[("a2a-version", "1.0")])
    assert status == 200, body
    return str(json.loads(body)["result"]["task"]["id"])


def _decision(gw: InProcess, operator: str, bundle: dict[str, Any]) -> str:
    material = gw.folder.load_operator(operator)
    binding = DecisionBinding(
        bundle["bundle_id"],
        bundle["bundle_digest"],
        bundle["version"],
        bundle["lease"]["fencing_token"],
    )
    arguments = {"order": "o-77", "amount": 250}
    body = DecisionBody(
        type="approve", commitment="agreed", args_digest=canonical_digest(arguments)
    )
    made = make_decision_at(binding, body, operator=material.identity, now=gw.clock.now)
    return sign_decision(made, material.signing.active)


async def _claim(gw: InProcess, operator: str, bundle_id: str) -> dict[str, Any]:
    status, answer = await gw.command(operator, "claim", bundle_id=bundle_id)
    assert status == 200, answer
    bundle: dict[str, Any] = answer["bundle"]
    return bundle


@pytest.mark.threat("H10")
async def test_a_lapsed_lease_does_not_come_back_when_the_clock_steps_back(
    inproc: InProcess,
) -> None:
    gw = inproc
    start = gw.clock.now
    first = await _open_handoff(gw, "lease-swept")
    second = await _open_handoff(gw, "lease-taken")
    held = {bundle_id: await _claim(gw, "alice", bundle_id) for bundle_id in (first, second)}
    decisions = {bundle_id: _decision(gw, "alice", held[bundle_id]) for bundle_id in held}
    gw.clock.now = start + 31  # past the 30 s lease
    assert await gw.handoffs.sweep(gw.clock.now) == (2, 0)  # both return to the queue
    taken = await _claim(gw, "bob", second)  # bob takes the second one over
    assert taken["lease"]["fencing_token"] > held[second]["lease"]["fencing_token"]

    gw.clock.now = start + 5  # the clock steps back inside alice's old leases
    for bundle_id in (first, second):
        status, answer = await gw.command(
            "alice", "decide", bundle_id=bundle_id, decision=decisions[bundle_id]
        )
        assert status == 409, answer
        record = await gw.stores.inbox.get(bundle_id)
        assert record is not None and record.decision is None
    first_record = await gw.stores.inbox.get(first)
    assert first_record is not None
    assert (first_record.status, first_record.lease) == ("queued", None)
    second_record = await gw.stores.inbox.get(second)
    assert second_record is not None and second_record.lease is not None
    assert (second_record.status, second_record.lease.owner) == ("claimed", "operator:bob")
    # The lease that is live on the clock as it is now still works (a control).
    gw.clock.now = start + 32
    status, answer = await gw.command(
        "bob", "decide", bundle_id=second, decision=_decision(gw, "bob", taken)
    )
    assert status == 200, answer


@pytest.mark.threat("H10")
async def test_an_expired_handoff_cannot_be_decided_after_the_clock_steps_back(
    inproc: InProcess,
) -> None:
    gw = inproc
    start = gw.clock.now
    swept = await _open_handoff(gw, "expiry-swept", resolve_within_s=60)
    due = await _open_handoff(gw, "expiry-due", resolve_within_s=60)
    held = {bundle_id: await _claim(gw, "alice", bundle_id) for bundle_id in (swept, due)}
    decisions = {bundle_id: _decision(gw, "alice", held[bundle_id]) for bundle_id in held}

    gw.clock.now = start + 61  # past resolve_by; no sweep has run yet
    status, answer = await gw.command("alice", "decide", bundle_id=due, decision=decisions[due])
    assert status == 409, answer  # due: refused even before the sweep marks it
    status, answer = await gw.command("bob", "claim", bundle_id=due)
    assert status == 409, answer
    assert await gw.handoffs.sweep(gw.clock.now) == (2, 2)  # leases lapsed too

    gw.clock.now = start + 10  # back before resolve_by and inside the old lease
    for bundle_id in (swept, due):
        status, answer = await gw.command(
            "alice", "decide", bundle_id=bundle_id, decision=decisions[bundle_id]
        )
        assert status == 409, answer
        status, answer = await gw.command("bob", "claim", bundle_id=bundle_id)
        assert status == 409, answer
        record = await gw.stores.inbox.get(bundle_id)
        assert record is not None
        assert (record.status, record.decision) == ("expired", None)
        events = await gw.stores.inbox.events(bundle_id)
        keys = KeySet.from_jwks(json.loads((gw.folder.gateway / "jwks.json").read_bytes()))
        verified, _ = verify_events(events, keys, bundle_id=bundle_id)
        assert [event.type for event in verified] == ["queued", "claimed", "expired"]
    audit = await gw.stores.audit.read(limit=100_000)
    assert [e.event for e in audit].count("handoff.expired") == 2
    assert [e for e in audit if e.event == "handoff.decided"] == []


# ============================================================ load and kills
@dataclass
class Outcome:
    """One request of the load: its JSON-RPC id, when it was sent, what came back."""

    rpc_id: str
    conversation: str
    after_fault: bool
    status: int | None = None  # None: the connection died (the gateway was killed)
    code: str = ""


@dataclass
class Load:
    """Concurrent signed clients, each in its own conversation, until told to stop."""

    folder: DataFolder
    scratch: Path
    base: str
    clients: int = 4
    outcomes: list[Outcome] = field(default_factory=list)
    faulted: asyncio.Event = field(default_factory=asyncio.Event)
    #: Each client stops after this many requests sent after the fault.
    after: int = 5

    def accepted(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 200]

    async def _client(self, index: int) -> None:
        conversation = f"load-{index}"
        context = ssl_for(self.folder, self.scratch, "support")
        after = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            for n in range(100_000):
                outcome = Outcome(f"{index}-{n}", conversation, self.faulted.is_set())
                self.outcomes.append(outcome)
                body = json.dumps(
                    {"jsonrpc": "2.0", "id": outcome.rpc_id, "method": "tools/list", "params": {}}
                ).encode()
                try:
                    outcome.status, payload = await post(
                        session, self.folder, self.base, PATH, body,
                        extra=[("baton-conversation", conversation)],
                    )  # fmt: skip
                    outcome.code = "ok" if outcome.status == 200 else error_code(payload)
                except aiohttp.ClientError:
                    pass
                if outcome.after_fault:
                    after += 1
                    if after >= self.after:
                        return

    async def run(self) -> None:
        async with asyncio.timeout(40):
            await asyncio.gather(*(self._client(i) for i in range(self.clients)))


def _upstream_ids(upstream: RecordingUpstream) -> set[str]:
    return {str(json.loads(r.body)["id"]) for r in upstream.received}


async def test_redis_killed_mid_load_fails_closed_and_loses_nothing(tmp_path: Path) -> None:
    store = PrivateRedis(tmp_path / "redis-data")
    await store.start()
    folder = make_folder(tmp_path / "home")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    upstream = RecordingUpstream(folder, folder.load_agent(TRUST_DOMAIN, "billing"), scratch)
    await upstream.start()
    port, admin_port, _ = configure(
        folder, upstream_port=upstream.port, store=f'kind = "redis"\nurl = "{store.url}"'
    )
    served = Served(folder, port, admin_port, tmp_path / "serve.log")
    try:
        served.start()
        await served.ready()
        load = Load(folder, scratch, served.base)
        running = asyncio.create_task(load.run())

        async def warmed() -> bool:
            if running.done():
                running.result()
            return len(load.accepted()) >= 40

        await until(warmed, timeout=20, what="40 accepted requests")
        await asyncio.to_thread(store.kill)  # SIGKILL, mid-load
        load.faulted.set()
        await running

        late = [o for o in load.outcomes if o.after_fault]
        assert len(late) == load.clients * load.after
        assert {(o.status, o.code) for o in late} <= {
            (503, "audit_unavailable"),
            (503, "store_unavailable"),
        }, [(o.status, o.code) for o in late]
        assert not _upstream_ids(upstream) & {o.rpc_id for o in late}, "forwarded with no store"
        assert {o.status for o in load.outcomes} <= {200, 503}, "a request was cut or mis-answered"
        assert await served.readyz() == 503

        await store.start()  # the same port and data folder: what was fsynced is back
        accepted = load.accepted()
        stores = await open_stores(folder)
        try:
            for conversation in sorted({o.conversation for o in load.outcomes}):
                entries = await stores.transcripts.read(conversation, limit=100_000)
                requests = [str(e.rpc_id) for e in entries if e.kind == "request"]
                assert len(requests) == len(set(requests)), f"{conversation}: duplicated entries"
                missing = {o.rpc_id for o in accepted if o.conversation == conversation}
                missing -= set(requests)
                assert not missing, f"answered 200 but not in the transcript: {sorted(missing)}"
                # What `baton transcript verify` runs (the CLI itself: the SQLite case).
                assert (await verify_conversation(stores.transcripts, conversation)).records
            assert (await verify_audit(stores.audit)).records
        finally:
            await stores.close()

        async def recovered() -> bool:
            return await served.readyz() == 200

        await until(recovered, timeout=20, what="the gateway to see Redis again")
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_for(folder, scratch, "support"))
        ) as session:
            status, body = await post(session, folder, served.base, PATH, rpc("tools/list"))
        assert status == 200, body
    finally:
        assert served.stop() == 0, served.output()
        store.kill()
        await upstream.stop()


@dataclass
class Escalations(Load):
    """:class:`Load` whose clients also escalate their conversation, each
    request with an idempotency key of its own: ``key -> task id`` if answered."""

    answered: dict[str, str] = field(default_factory=dict)
    attempted: dict[str, str] = field(default_factory=dict)  # key -> context id
    after: int = 1

    async def _client(self, index: int) -> None:
        context_id = f"ctx-{index}"
        context = ssl_for(self.folder, self.scratch, "support")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            for n in range(100_000):
                faulted = self.faulted.is_set()
                key = f"k-{index}-{n}"
                try:
                    status, payload = await post(
                        session, self.folder, self.base, PATH, rpc("tools/list", n),
                        extra=[("baton-conversation", "a2a:" + context_id)],
                    )  # fmt: skip
                    assert status == 200, payload
                    self.attempted[key] = context_id
                    status, payload = await post(
                        session, self.folder, self.base, "/a2a/inbox/refunds",
                        escalation(key, context_id, n), extra=[("a2a-version", "1.0")],
                    )  # fmt: skip
                    assert status == 200, payload
                    self.answered[key] = json.loads(payload)["result"]["task"]["id"]
                except aiohttp.ClientError:
                    if faulted or self.faulted.is_set():
                        return  # the gateway is gone: this client's load ends here
                    raise


@pytest.mark.threat("H06")
async def test_gateway_killed_mid_load_restarts_with_whole_records(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "home", operators=("alice",))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    upstream = RecordingUpstream(folder, folder.load_agent(TRUST_DOMAIN, "billing"), scratch)
    await upstream.start()
    port, admin_port, _ = configure(
        folder,
        upstream_port=upstream.port,
        extra='\n[[queues]]\nname = "refunds"\nescalate_from = ["support"]\n'
        '\n[[operators]]\nname = "alice"\nqueues = ["refunds"]\n',
    )
    served = Served(folder, port, admin_port, tmp_path / "serve.log")
    try:
        served.start()
        await served.ready()
        load = Escalations(folder, scratch, served.base, clients=3)
        running = asyncio.create_task(load.run())

        async def warmed() -> bool:
            if running.done():
                running.result()
            return len(load.answered) >= 12

        await until(warmed, timeout=20, what="12 answered escalations")
        load.faulted.set()  # first, so a client seeing the connection die knows why
        await asyncio.to_thread(served.kill)  # SIGKILL, mid-load: no drain, no close
        await running
        assert len(load.answered) >= 12

        served.start()  # the same folder, ports and SQLite file
        await served.ready()
        retried: dict[str, set[str]] = {}
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_for(folder, scratch, "support"))
        ) as session:

            async def retry(key: str, context_id: str) -> None:
                status, payload = await post(
                    session, folder, served.base, "/a2a/inbox/refunds",
                    escalation(key, context_id), extra=[("a2a-version", "1.0")],
                )  # fmt: skip
                assert status == 200, payload
                retried.setdefault(key, set()).add(json.loads(payload)["result"]["task"]["id"])

            # Every key the agent tried, twice and at once: the agent cannot know
            # which of its in-flight escalations were stored before the kill.
            await asyncio.gather(
                *(retry(key, ctx) for key, ctx in load.attempted.items() for _ in range(2))
            )
        assert all(len(ids) == 1 for ids in retried.values()), retried
        for key, task_id in load.answered.items():
            assert retried[key] == {task_id}, f"{key}: a second bundle after the restart"
        assert served.stop() == 0, served.output()

        tasks = {next(iter(ids)) for ids in retried.values()}
        conversations = sqlite_conversations(folder)
        assert {f"a2a:ctx-{i}" for i in range(load.clients)} <= set(conversations)
        await cli_verifies(folder, conversations)
        stores = await open_stores(folder)
        try:
            for conversation in conversations:
                entries = await stores.transcripts.read(conversation, limit=100_000)
                seen = [(e.kind, e.method, str(e.rpc_id), e.ts) for e in entries]
                assert len(seen) == len(set(seen)), f"{conversation}: a duplicated entry"
            records = await stores.inbox.list("refunds", limit=1000)
            assert sorted(r.bundle_id for r in records) == sorted(tasks), "a duplicate bundle"
            keys = KeySet.from_jwks(json.loads((folder.gateway / "jwks.json").read_bytes()))
            for record in records:
                events, _ = verify_events(
                    await stores.inbox.events(record.bundle_id), keys, bundle_id=record.bundle_id
                )
                # Exactly one 'queued': a kill between storing the bundle and its
                # first event is repaired by the retry (H06).
                assert [event.type for event in events] == ["queued"], record.bundle_id
            audit = await stores.audit.read(limit=100_000)
            created = [(e.detail or "").split()[0] for e in audit if e.event == "handoff.created"]
            assert len(created) == len(set(created)), "a handoff was created twice"
            # Every bundle audited once, even one stored just before the kill.
            assert set(created) == tasks
        finally:
            await stores.close()
    finally:
        served.stop()
        await upstream.stop()


@pytest.mark.threat("H06")
async def test_a_bundle_stored_but_not_audited_is_audited_on_retry(inproc: InProcess) -> None:
    """The audit log refuses the ``handoff.created`` event after the bundle was
    stored: the agent gets 503; its retry (same idempotency key) writes the
    missing event, and a third try writes nothing more (exactly one event, one
    ``queued``)."""
    gw = inproc
    context_id = "ctx-unaudited"
    status, body = await gw.send(
        PATH, rpc("tools/list"), extra=[("baton-conversation", "a2a:" + context_id)]
    )
    assert status == 200, body
    db = gw.folder.root / ".baton" / "baton.db"
    with sqlite3.connect(db) as conn:  # the audit log refuses writes: a real store fault
        conn.execute(
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events"
            " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    status, body = await gw.send(
        "/a2a/inbox/refunds", escalation("k-unaudited", context_id), extra=[("a2a-version", "1.0")]
    )
    assert status == 503, body
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER audit_down")
    status, body = await gw.send(
        "/a2a/inbox/refunds", escalation("k-unaudited", context_id), extra=[("a2a-version", "1.0")]
    )
    assert status == 200, body
    bundle_id = json.loads(body)["result"]["task"]["id"]
    audit = await gw.stores.audit.read(limit=100_000)
    created = [e for e in audit if e.event == "handoff.created" and bundle_id in (e.detail or "")]
    assert len(created) == 1, f"handoff {bundle_id}: {len(created)} handoff.created events"
    status, body = await gw.send(
        "/a2a/inbox/refunds", escalation("k-unaudited", context_id), extra=[("a2a-version", "1.0")]
    )
    assert status == 200, body
    assert json.loads(body)["result"]["task"]["id"] == bundle_id
    again = await gw.stores.audit.read(limit=100_000)
    assert [e.event for e in again[len(audit) :]].count("handoff.created") == 0
    events = await gw.stores.inbox.events(bundle_id)
    assert len(events) == 1, f"{len(events)} lifecycle events; expected one 'queued'"
