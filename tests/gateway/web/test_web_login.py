"""Local-account login on the web inbox (ADR 0015; gateway/web/login.py).

A wrong password and an unknown name get the same answer; limits per name
and per client address answer 429 and stop checking passwords (the right
password is refused too) until the window passes; the login needs this
listener's ``Origin`` and a strict JSON body. Every outcome is audited.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import RUNTIME
from gateway.cli import main
from gateway.config import load
from gateway.devdata import LOGIN_HASH_FILE, init_data_folder, reset_password
from gateway.runtime import load_runtime
from gateway.web.login import CONCURRENCY, DUMMY_HASH, LocalLogin
from keys.passwords import DEFAULT_PARAMS, PasswordHash, verify_password
from tests.gateway.web.webkit import (
    Answer,
    Clock,
    Made,
    WebGateway,
    make_folder,
    serve_web,
    sqlite_store,
)

pytestmark = pytest.mark.timeout(180)
LIMITS = "login_attempts = 3\nlogin_window_s = 300\nlogin_attempts_per_address = {}"


@pytest.fixture
async def limited(
    made: Made, tmp_path: Path, clock: Clock, request: pytest.FixtureRequest
) -> AsyncIterator[WebGateway]:
    """Three checks per name and (indirect parameter; default 20) per address."""
    per_address = getattr(request, "param", 20)
    async with serve_web(
        made, tmp_path / "scratch", store=sqlite_store(tmp_path / "baton.db"), clock=clock,
        inbox=LIMITS.format(per_address),
    ) as running:  # fmt: skip
        yield running


def _comparable(answer: Answer) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = sorted((k, v) for k, v in answer.headers.items() if k not in ("Date",))
    return answer.status, answer.body, headers


async def test_the_right_password_opens_a_session(gw: WebGateway) -> None:
    async with gw.browser() as browser:
        answer = await browser.login("carol")
        assert answer.status == 200
        assert answer.json()["queues"] == ["disputes"]
    [event] = [e for e in await gw.audit_events() if e.event == "web.login"]
    assert (event.outcome, event.peer) == ("accepted", "operator:carol")


async def test_a_wrong_password_and_an_unknown_name_look_the_same(gw: WebGateway) -> None:
    async with gw.browser() as browser:
        wrong = await browser.login("alice", "not-the-password")
        unknown = await browser.login("mallory", "not-the-password")
        invalid = await browser.login("NOT A NAME", "x")
    assert wrong.status == 401
    assert wrong.json() == {
        "error": {
            "code": "invalid_credentials",
            "message": "authentication failed",
            "retryable": False,
        }
    }
    assert _comparable(wrong) == _comparable(unknown) == _comparable(invalid)
    assert wrong.set_cookies == []
    rejected = [(e.outcome, e.reason) for e in await gw.audit_events() if e.event == "web.login"]
    assert rejected == [("rejected", "invalid_credentials")] * 3


async def test_the_name_limit_answers_429_and_stops_checking(limited: WebGateway) -> None:
    async with limited.browser() as browser:
        for _ in range(3):
            assert (await browser.login("alice", "guess")).status == 401
        over = await browser.login("alice")  # the right password, over the limit
        assert over.status == 429
        assert over.json()["error"]["code"] == "rate_limited"
        assert over.json()["error"]["retryable"] is True
        assert 1 <= int(over.headers["Retry-After"]) <= 300
        assert over.set_cookies == []
        # Unknown names are limited like known ones (the limit says nothing).
        for _ in range(3):
            assert (await browser.login("mallory", "guess")).status == 401
        assert (await browser.login("mallory", "guess")).status == 429
        # Other names are not locked by alice's limit.
        assert (await browser.login("bob")).status == 200
        limited.clock.advance(300)  # the next window
        assert (await browser.login("alice")).status == 200
    reasons = [e.reason for e in await limited.audit_events() if e.event == "web.login"]
    assert reasons.count("rate_limited") == 2


@pytest.mark.parametrize("limited", [6], indirect=True)
async def test_the_address_limit_covers_every_name(limited: WebGateway) -> None:
    async with limited.browser() as browser:
        for name in ("n1", "n2", "n3", "n4", "n5", "n6"):
            assert (await browser.login(name, "guess")).status == 401
        assert (await browser.login("carol")).status == 429


async def test_a_login_needs_this_listeners_origin(gw: WebGateway) -> None:
    async with gw.browser() as browser:
        missing = await browser.login("alice", origin=False)
        assert missing.status == 403
        assert missing.json()["error"]["code"] == "origin_rejected"
        foreign = await browser.login("alice", headers={"Origin": "https://evil.example"})
        assert foreign.status == 403 and foreign.set_cookies == []
        # localhost names the same loopback listener.
        local = await browser.login(
            "alice", headers={"Origin": f"https://localhost:{gw.operator_port}"}
        )
        assert local.status == 200


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"name": "alice", "password": "x"}', "text/plain"),
        (b"name=alice&password=x", "application/x-www-form-urlencoded"),
        (b'{"name": "alice"}', "application/json"),
        (b'{"name": "alice", "password": "x", "password": "y"}', "application/json"),
        (b'{"name": "alice", "password": "x", "admin": true}', "application/json"),
        (b'{"name": "alice", "password": 1}', "application/json"),
        (b"[]", "application/json"),
    ],
)
async def test_a_malformed_login_is_400(gw: WebGateway, body: bytes, content_type: str) -> None:
    async with gw.browser() as browser:
        answer = await browser.request(
            "POST", "/inbox/session/login", body=body, headers={"Content-Type": content_type}
        )
    assert answer.status == 400, answer.body
    assert answer.set_cookies == []


async def test_an_oversized_login_is_413(gw: WebGateway) -> None:
    body = b'{"name": "alice", "password": "' + b"x" * 9000 + b'"}'
    async with gw.browser() as browser:
        answer = await browser.request(
            "POST", "/inbox/session/login", body=body,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
    assert answer.status == 413


def test_the_dummy_hash_costs_what_an_account_costs_and_matches_nothing() -> None:
    parsed = PasswordHash.decode(DUMMY_HASH)
    assert parsed.params == DEFAULT_PARAMS
    assert not verify_password("", DUMMY_HASH)
    assert not verify_password("baton-no-account", DUMMY_HASH)


async def test_parallel_logins_share_a_bounded_pool(gw: WebGateway) -> None:
    """More logins than scrypt slots at once: every one is answered correctly."""
    assert CONCURRENCY == 2
    async with gw.browser() as browser:
        answers = await asyncio.gather(
            *(browser.login(name) for name in ("alice", "bob", "carol", "alice")),
            browser.login("bob", "wrong"),
        )
    assert [a.status for a in answers] == [200, 200, 200, 200, 401]


async def test_login_checks_against_the_loaded_hashes(gw: WebGateway) -> None:
    login = LocalLogin(
        {"alice": gw.app[RUNTIME].login_hashes["alice"]},
        gw.stores.rates,
        attempts=5,
        attempts_per_address=5,
        window_s=60,
    )
    checked = await login.verify("alice", gw.made.passwords["alice"], address="a", now=0)
    assert checked == gw.app[RUNTIME].login_hashes["alice"]
    assert set(gw.app[RUNTIME].login_hashes) == {"alice", "bob", "carol"}


def test_operators_passwd_replaces_the_login_with_a_new_one_time_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issued: dict[str, str] = {}
    folder = init_data_folder(
        tmp_path, trust_domain="baton.local", force=False, now=dt.datetime.now(dt.UTC),
        on_password=issued.__setitem__,
    )  # fmt: skip
    [(name, old)] = issued.items()
    assert main(["operators", "passwd", name, "--dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    new = re.search(r"new password  (\S+)", printed)
    assert new is not None and new[1] != old
    stored = folder.load_login_hash(name)
    assert verify_password(new[1], stored) and not verify_password(old, stored)
    runtime = load_runtime(load(folder.config), folder.root)
    assert runtime.login_hashes[name] == stored
    assert main(["operators", "passwd", "nobody", "--dir", str(tmp_path)]) == 1


@pytest.fixture
async def own(tmp_path: Path, clock: Clock) -> AsyncIterator[WebGateway]:
    """A data folder of its own (these tests replace and break password files);
    the event stream re-checks its session every 50 ms."""
    async with serve_web(
        make_folder(tmp_path / "home"), tmp_path / "scratch",
        store=sqlite_store(tmp_path / "baton.db"), clock=clock, poll_s=0.05,
    ) as running:  # fmt: skip
        yield running


async def test_a_new_password_applies_at_once_and_ends_the_old_sessions(
    own: WebGateway,
) -> None:
    """``baton operators passwd`` while the gateway runs: the old password is
    refused at the next login, alice's session begun with it ends (401 and
    its event stream closes), the new password signs in; bob is untouched."""
    gw = own
    async with gw.browser() as before, gw.browser() as watching, gw.browser() as bob:
        assert (await before.login("alice")).status == 200
        assert (await watching.login("alice")).status == 200
        assert (await bob.login("bob")).status == 200
        assert (await before.get("/inbox/session")).status == 200
        async with watching.events() as stream:
            assert stream.status == 200
            await stream.snapshot()
            new = reset_password(gw.folder, "alice")
            assert await stream.ended(), "the event stream outlived the password"
        ended = await before.get("/inbox/session")
        assert ended.status == 401, ended.body
        assert ended.json()["error"]["code"] == "session_required"
        old = await before.login("alice")
        assert old.status == 401, old.body
        assert old.json()["error"]["code"] == "invalid_credentials"
        assert (await before.login("alice", new)).status == 200
        assert (await before.get("/inbox/session")).status == 200
        assert (await bob.get("/inbox/session")).status == 200


async def test_a_removed_password_file_ends_local_login(own: WebGateway) -> None:
    gw = own
    async with gw.browser() as browser:
        assert (await browser.login("carol")).status == 200
        (gw.folder.operator("carol") / LOGIN_HASH_FILE).unlink()
        assert (await browser.get("/inbox/session")).status == 401
        refused = await browser.login("carol")
    assert refused.status == 401, refused.body
    assert refused.json()["error"]["code"] == "invalid_credentials"


async def test_a_password_file_that_no_longer_decodes_is_no_login(own: WebGateway) -> None:
    """Fail closed: a broken file (hand-edited, truncated) refuses the login
    instead of erroring; the gateway keeps serving the others."""
    gw = own
    path = gw.folder.operator("bob") / LOGIN_HASH_FILE
    path.write_bytes(b"$scrypt$not-a-hash\n")
    path.chmod(0o600)
    async with gw.browser() as browser:
        refused = await browser.login("bob")
        assert refused.status == 401, refused.body
        assert (await browser.login("alice")).status == 200
