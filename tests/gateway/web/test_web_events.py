"""The live queue stream ``GET /inbox/web/events`` (ADR 0015).

A snapshot at connect; a new one, within a bounded wait, after an escalation
made through the real A2A inbox path and after a claim sent as a web
command; changes made behind this process's back (another gateway) arrive
by polling the store; an operator only ever sees the queues it serves; the
stream ends at logout, at the idle timeout and at the absolute lifetime;
pings keep it open; at most ``MAX_STREAMS`` per operator.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from gateway.web import webapp
from gateway.web.webapp import MAX_STREAMS
from tests.gateway.web.webkit import (
    Clock,
    Made,
    WebGateway,
    serve_web,
    sqlite_store,
    stored_record,
)

pytestmark = pytest.mark.timeout(180)
POLL_S = 0.2


@pytest.fixture
async def fleet(made: Made, tmp_path: Path, clock: Clock) -> AsyncIterator[WebGateway]:
    async with serve_web(
        made, tmp_path / "scratch", store=sqlite_store(tmp_path / "baton.db"), clock=clock,
        a2a=True, inbox="idle_timeout_s = 600\nsession_max_s = 1200",
    ) as running:  # fmt: skip
        yield running


@pytest.fixture
async def polled(made: Made, tmp_path: Path, clock: Clock) -> AsyncIterator[WebGateway]:
    """No A2A agent; the store re-read every :data:`POLL_S` seconds."""
    async with serve_web(
        made, tmp_path / "scratch", store=sqlite_store(tmp_path / "baton.db"), clock=clock,
        inbox="idle_timeout_s = 600\nsession_max_s = 1200", poll_s=POLL_S,
    ) as running:  # fmt: skip
        yield running


async def test_an_escalation_and_a_claim_reach_the_stream(fleet: WebGateway) -> None:
    await fleet.converse("support", "ctx-e1")
    async with fleet.browser() as alice, fleet.browser() as carol:
        await alice.login("alice")
        await carol.login("carol")
        async with alice.events() as stream, carol.events() as carols:
            assert stream.status == 200
            assert stream.response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
            assert stream.response.headers["Cache-Control"] == "no-store"
            assert stream.response.headers["X-Content-Type-Options"] == "nosniff"
            first = await stream.snapshot()
            assert first["bundles"] == [] and first["now"] == int(fleet.clock())
            assert (await carols.snapshot())["bundles"] == []
            # The poll interval is the default 2 s: only the in-process wake-up
            # can deliver well inside it, but any arrival within the bound passes.
            task = await fleet.escalate("support", "refunds", "k-e1", "ctx-e1")
            queued = await stream.snapshot()
            [bundle] = queued["bundles"]
            assert (bundle["bundle_id"], bundle["queue"], bundle["status"]) == (
                task["id"], "refunds", "queued",
            )  # fmt: skip
            assert bundle["origin"] == "spiffe://baton.local/agent/support"
            assert "refund o-77" not in str(queued), "the stream carries no plaintext"
            claim = fleet.command("alice", "claim", queue="refunds", bundle_id=task["id"])
            assert (await alice.command(claim)).status == 200
            claimed = await stream.snapshot()
            [bundle] = claimed["bundles"]
            assert bundle["status"] == "claimed"
            assert bundle["lease"]["owner"] == "operator:alice"
            # carol serves disputes only: her next snapshot is the disputes escalation.
            disputed = await fleet.escalate("support", "disputes", "k-e2", "ctx-e1")
            [seen] = (await carols.snapshot())["bundles"]
            assert (seen["bundle_id"], seen["queue"]) == (disputed["id"], "disputes")


async def test_changes_by_another_gateway_arrive_by_polling(polled: WebGateway) -> None:
    """A record stored directly (as another gateway on the store would): no
    in-process wake-up, so it arrives at the next poll."""
    async with polled.browser() as bob:
        await bob.login("bob")
        async with bob.events() as stream:
            assert (await stream.snapshot())["bundles"] == []
            record = stored_record("refunds", polled.clock())
            await polled.stores.inbox.create(record)
            [bundle] = (await stream.snapshot(timeout=10 * POLL_S + 5))["bundles"]
            assert bundle["bundle_id"] == record.bundle_id
            # The lease taken behind our back shows up too; an unchanged store sends nothing.
            await polled.stores.inbox.claim(record.bundle_id, "operator:bob", lease_s=60,
                                            now=polled.clock())  # fmt: skip
            [claimed] = (await stream.snapshot(timeout=10 * POLL_S + 5))["bundles"]
            assert claimed["status"] == "claimed"
            with pytest.raises(TimeoutError):
                await stream.snapshot(timeout=5 * POLL_S)


async def test_the_stream_ends_with_the_session(polled: WebGateway) -> None:
    async with polled.browser() as browser:
        # Logout (from another tab of the same session).
        await browser.login("alice")
        async with browser.events() as stream:
            await stream.snapshot()
            assert (await browser.post("/inbox/session/logout")).status == 204
            assert await stream.ended()
        # The idle timeout: an open stream is not activity.
        await browser.login("alice")
        async with browser.events() as stream:
            await stream.snapshot()
            polled.clock.advance(601)
            assert await stream.ended(timeout=10 * POLL_S + 5)
        # The absolute lifetime, with the session used all along.
        await browser.login("alice")
        async with browser.events() as stream:
            await stream.snapshot()
            for _ in range(2):
                polled.clock.advance(500)
                assert (await browser.get("/inbox/session")).status == 200
            polled.clock.advance(200)
            assert await stream.ended(timeout=10 * POLL_S + 5)
        assert (await browser.get("/inbox/web/events")).status == 401


async def test_pings_keep_the_stream_open(
    polled: WebGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webapp, "PING_S", POLL_S)
    async with polled.browser() as browser:
        await browser.login("bob")
        async with browser.events() as stream:
            await stream.snapshot()
            lines = []
            async with asyncio.timeout(10 * POLL_S + 5):
                while lines.count(": ping") < 2:
                    line = await stream.next_line()
                    assert line is not None, "the stream ended"
                    lines.append(line)
            assert set(lines) <= {": ping", ""}  # nothing changed: pings only


async def test_streams_per_operator_are_bounded(polled: WebGateway) -> None:
    async with polled.browser() as browser, AsyncExitStack() as streams:
        await browser.login("alice")
        for _ in range(MAX_STREAMS):
            stream = await streams.enter_async_context(browser.events())
            assert stream.status == 200
            await stream.snapshot()
        refused = await browser.get("/inbox/web/events")
        assert refused.status == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        # Another operator has streams of its own.
        async with polled.browser() as other:
            await other.login("bob")
            async with other.events() as bobs:
                assert bobs.status == 200
