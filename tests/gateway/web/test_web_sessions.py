"""Web-inbox login sessions (ADR 0015; gateway/web/sessions.py).

Through the real operator listener (TLS, a real store, the injected clock):
the cookie's exact attributes and the ``Session`` JSON; only the token's hash
is stored; rotation at every login; the idle timeout (refreshed by use) and
the absolute lifetime; logout; and one session accepted by two gateways on
one Redis. :class:`WebSessions` itself on the real SQLite binding store: a
logout racing a refresh stays a logout; tokens it never minted are refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.stores import Stores, open_stores, redis_client
from gateway.web.sessions import COOKIE_NAME, ENDED_KIND, SESSION_KIND, WebSessions
from keys.atrest import StoreCipher
from keys.b64 import b64url_decode, b64url_encode
from keys.keyset import KeySet
from tests.gateway.stores.support import delete_prefix, fresh_prefix, redis_reachable, redis_url
from tests.gateway.web.webkit import Clock, Made, WebGateway, serve_web

pytestmark = pytest.mark.timeout(120)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def test_login_sets_the_exact_cookie_and_answers_the_session(gw: WebGateway) -> None:
    async with gw.browser() as browser:
        answer = await browser.login("alice")
    assert answer.status == 200, answer.body
    [cookie] = answer.set_cookies
    match = re.fullmatch(
        rf"{COOKIE_NAME}=([A-Za-z0-9_-]{{67}}); Secure; HttpOnly; SameSite=Strict; Path=/; "
        r"Max-Age=43200",
        cookie,
    )
    assert match is not None, cookie
    token = match[1]
    assert answer.headers["Cache-Control"] == "no-store"
    session = answer.json()
    alice, bob = "operator:alice", "operator:bob"
    issued = int(gw.clock())
    assert {k: v for k, v in session.items() if k not in ("csrf", "verification")} == {
        "operator": alice, "name": "alice", "method": "password", "queues": ["refunds"],
        "reveal_pii": False, "idle_timeout_s": 900, "expires_at": issued + 43200,
        "audience": "spiffe://baton.local/gateway/gw1",
    }  # fmt: skip
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", session["csrf"])
    verification = session["verification"]
    gateway_keys = json.loads((gw.folder.gateway / "jwks.json").read_bytes())
    assert {k["kid"] for k in verification["gateway"]["keys"]} <= {
        k["kid"] for k in gateway_keys["keys"]
    }
    assert KeySet.from_jwks(verification["gateway"])  # public JWKs that parse
    # The operators sharing alice's queues, and no one else (carol serves disputes).
    assert sorted(verification["operators"]) == [alice, bob]
    assert all("d" not in key for keys in verification["operators"].values()
               for key in keys["keys"])  # fmt: skip
    assert verification["queue_operators"] == {"refunds": [alice, bob]}
    # The store holds the token's hash, never the token.
    bindings = gw.stores.bindings
    now = gw.clock()
    assert await bindings.owner(SESSION_KIND, _digest(token), now=now) == alice
    assert await bindings.owner(SESSION_KIND, token, now=now) is None


async def test_the_session_route_needs_a_live_session(gw: WebGateway) -> None:
    async with gw.browser() as browser:
        signed_out = await browser.get("/inbox/session")
        assert signed_out.status == 401
        assert signed_out.json() == {
            "error": {
                "code": "session_required",
                "message": "authentication failed",
                "retryable": False,
            }
        }
        first = (await browser.login("alice")).json()
        again = await browser.get("/inbox/session")
        assert again.status == 200 and again.json() == first
        # A token this gateway never minted, and one with a forged issue time.
        real = browser.token
        assert real is not None
        raw = bytearray(b64url_decode(real))
        raw[2:10] = (int(gw.clock()) - 10).to_bytes(8, "big")
        for forged in ("x" * 67, b64url_encode(bytes(raw))):
            browser.token = forged
            assert (await browser.get("/inbox/session")).status == 401


async def test_a_login_rotates_the_session(gw: WebGateway) -> None:
    async with gw.browser() as browser, gw.browser() as other:
        await browser.login("alice")
        old, old_csrf = browser.token, browser.csrf
        # The browser presents its cookie at the next login: that token ends.
        answer = await browser.login("alice")
        assert answer.status == 200
        assert browser.token != old and browser.csrf != old_csrf
        assert (await browser.get("/inbox/session")).status == 200
        other.token = old
        assert (await other.get("/inbox/session")).status == 401
        # A login elsewhere (another browser, no cookie) ends no one's session.
        await other.login("alice")
        assert (await browser.get("/inbox/session")).status == 200
        assert (await other.get("/inbox/session")).status == 200


async def test_the_idle_timeout_restarts_with_every_use(gw: WebGateway) -> None:
    async with gw.browser() as browser:
        await browser.login("bob")
        for _ in range(3):
            gw.clock.advance(899)
            assert (await browser.get("/inbox/session")).status == 200
        gw.clock.advance(900)
        assert (await browser.get("/inbox/session")).status == 401
        assert (await browser.login("bob")).status == 200


async def test_the_absolute_lifetime_ends_a_session_in_use(
    made: Made, tmp_path: Path, clock: Clock
) -> None:
    async with (
        serve_web(
            made, tmp_path / "scratch", clock=clock,
            store=f'kind = "sqlite"\npath = "{tmp_path / "baton.db"}"',
            inbox="idle_timeout_s = 600\nsession_max_s = 1200",
        ) as gw,
        gw.browser() as browser,
    ):  # fmt: skip
        answer = await browser.login("alice")
        assert answer.set_cookies[0].endswith("; Max-Age=1200")
        for step in (500, 500, 199):
            clock.advance(step)
            assert (await browser.get("/inbox/session")).status == 200
        clock.advance(1)  # 1200 s after the login, although used a second ago
        assert (await browser.get("/inbox/session")).status == 401


async def test_logout_ends_the_session_and_clears_the_cookie(gw: WebGateway) -> None:
    async with gw.browser() as browser:
        await browser.login("alice")
        token = browser.token
        assert token is not None
        answer = await browser.post("/inbox/session/logout")
        assert answer.status == 204, answer.body
        assert answer.set_cookies == [
            f"{COOKIE_NAME}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        ]
        assert (await browser.get("/inbox/session")).status == 401
        assert (await browser.post("/inbox/session/logout")).status == 401
        now = gw.clock()
        assert await gw.stores.bindings.owner(SESSION_KIND, _digest(token), now=now) is None
    logouts = [e for e in await gw.audit_events() if e.event == "web.logout"]
    assert [(e.outcome, e.peer) for e in logouts] == [("accepted", "operator:alice")]


# ----------------------------------------------------------------- WebSessions


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    opened = await open_stores(
        "sqlite", path=tmp_path / "s.db", url=None, cipher=StoreCipher.generate()
    )
    yield opened
    await opened.close()


def _sessions(stores: Stores) -> WebSessions:
    return WebSessions(
        stores.bindings, secret=bytes(range(32)), idle_timeout_s=900, session_max_s=43200
    )


async def test_a_logout_is_not_undone_by_a_refresh_in_flight(stores: Stores) -> None:
    sessions = _sessions(stores)
    token, session = await sessions.begin("alice", "password", now=1000.0, replacing=None)
    assert await sessions.resume(token, now=1001.0) == session
    # A refresh read the session (live), then the logout ran, then the
    # refresh's bind landed: the binding is back, but the end was recorded.
    assert await sessions.end(token, now=1002.0)
    await stores.bindings.bind(SESSION_KIND, session.digest, session.operator, ttl_s=900,
                               now=1002.0)  # fmt: skip
    assert await stores.bindings.owner(ENDED_KIND, session.digest, now=1003.0) is not None
    assert await sessions.resume(token, now=1003.0) is None
    assert await stores.bindings.owner(SESSION_KIND, session.digest, now=1003.0) is None
    assert not await sessions.end(token, now=1004.0)


async def test_csrf_tokens_depend_on_the_session_and_the_key(stores: Stores) -> None:
    sessions = _sessions(stores)
    one, _ = await sessions.begin("alice", "password", now=0.0, replacing=None)
    two, _ = await sessions.begin("alice", "oidc", now=0.0, replacing=None)
    assert sessions.csrf(one) != sessions.csrf(two)
    assert sessions.csrf_matches(one, sessions.csrf(one))
    assert not sessions.csrf_matches(one, sessions.csrf(two))
    assert not sessions.csrf_matches(one, None)
    other_key = WebSessions(
        stores.bindings, secret=bytes(32), idle_timeout_s=900, session_max_s=43200
    )
    assert other_key.csrf(one) != sessions.csrf(one)
    resumed = await sessions.resume(two, now=1.0)
    assert resumed is not None and resumed.method == "oidc"


# ----------------------------------------------------------- two gateways, Redis


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    reason = await redis_reachable(redis_url())
    if reason is not None:
        pytest.skip(f"Redis not reachable at {redis_url()}: {reason}")
    prefix = fresh_prefix()
    yield prefix
    client = redis_client(redis_url())
    try:
        await delete_prefix(client, prefix)
    finally:
        await client.aclose()


async def test_a_session_begun_at_one_gateway_is_accepted_at_another(
    made: Made, tmp_path: Path, clock: Clock, redis_prefix: str
) -> None:
    store = f'kind = "redis"\nurl = "{redis_url()}"\nprefix = "{redis_prefix}"'
    async with (
        serve_web(made, tmp_path / "a", store=store, clock=clock) as a,
        serve_web(made, tmp_path / "b", store=store, clock=clock) as b,
        a.browser() as at_a,
        b.browser() as at_b,
    ):
        assert a.operator_port != b.operator_port
        session = (await at_a.login("bob")).json()
        at_b.token, at_b.csrf = at_a.token, session["csrf"]
        answer = await at_b.get("/inbox/session")
        assert answer.status == 200
        assert answer.json()["csrf"] == session["csrf"]  # the same CSRF key at every gateway
        assert answer.json()["expires_at"] == session["expires_at"]
        listed = await at_b.command(b.command("bob", "list", queue="refunds"))
        assert listed.status == 200 and listed.json() == {"bundles": []}
        assert (await at_b.post("/inbox/session/logout")).status == 204
        assert (await at_a.get("/inbox/session")).status == 401
