"""Security of the operator listener's web surface (ADR 0015).

* Every answer carries the security headers: pages, static files, API
  answers, errors, unknown routes, wrong methods, oversized bodies.
* Static files: only the start-up set, whitelisted types, no listing, no
  traversal, no symlink out of the folder.
* A POST without the session's CSRF token, or from another ``Origin``, is
  403 and does nothing: no state change, the command's nonce still unused,
  one audit event (the rejection).
* A command signed by another operator, sent with this operator's session,
  is 403 and does nothing; an operator cannot act on a queue it does not serve.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.web.headers import SECURITY_HEADERS
from gateway.web.webapp import STATIC_ROOT, StaticFiles
from protocol.audit import AuditEvent
from protocol.operator import COMMAND_MEDIA_TYPE
from tests.gateway.web.webkit import (
    Answer,
    Browser,
    Clock,
    Made,
    WebGateway,
    serve_web,
    sqlite_store,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def fleet(made: Made, tmp_path: Path, clock: Clock) -> AsyncIterator[WebGateway]:
    """With the ``assistant`` A2A agent, so agents can converse and escalate."""
    async with serve_web(
        made, tmp_path / "scratch", store=sqlite_store(tmp_path / "baton.db"), clock=clock,
        a2a=True,
    ) as running:  # fmt: skip
        yield running


def _assert_secured(answer: Answer, *, what: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers.get(name) == value, f"{what}: {name}"
    assert SECURITY_HEADERS["Content-Security-Policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


def _assert_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer.body
    body = answer.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert {"code", "message", "retryable"} <= set(body["error"])


async def test_every_answer_carries_the_security_headers(gw: WebGateway) -> None:
    static_files = StaticFiles.load()
    some_js = next(name for name in static_files.files if name.endswith(".js"))
    async with gw.browser() as signed_out, gw.browser() as browser:
        await browser.login("alice")
        answers: dict[str, Answer] = {
            "shell": await signed_out.get("/inbox/"),
            "login page": await signed_out.get("/inbox/login"),
            "keys page": await signed_out.get("/inbox/keys"),
            "bundle page": await signed_out.get("/inbox/bundle/hb_0123456789abcdefgh"),
            "static": await signed_out.get(f"/inbox/static/{some_js}"),
            "methods": await signed_out.get("/inbox/session/methods"),
            "session": await browser.get("/inbox/session"),
            "no session": await signed_out.get("/inbox/session"),
            "bad login": await signed_out.login("alice", "wrong"),
            "logout signed out": await signed_out.post("/inbox/session/logout"),
            "events signed out": await signed_out.get("/inbox/web/events"),
            "command no csrf": await browser.post("/inbox/web/command", csrf=None),
            "api bad type": await signed_out.request("POST", "/inbox/api", body=b"x"),
            "api too large": await signed_out.request(
                "POST",
                "/inbox/api",
                body=b"x" * (300 * 1024),
                headers={"Content-Type": COMMAND_MEDIA_TYPE},
            ),
            "unknown route": await signed_out.get("/nothing/here"),
            "wrong method": await signed_out.get("/inbox/session/login"),
            "oidc not configured": await signed_out.get("/inbox/oidc/start"),
        }
    for what, answer in answers.items():
        _assert_secured(answer, what=what)
    for what in ("shell", "login page", "keys page", "bundle page", "static"):
        assert answers[what].status == 200, what
        assert answers[what].headers["Cache-Control"] == "no-cache"
    for what, answer in answers.items():
        if answer.status != 200 or what in ("methods", "session"):
            assert answer.headers["Cache-Control"] == "no-store", what
    assert answers["methods"].json() == {"methods": ["password"]}
    _assert_error(answers["no session"], 401, "session_required")
    _assert_error(answers["bad login"], 401, "invalid_credentials")
    _assert_error(answers["logout signed out"], 401, "session_required")
    _assert_error(answers["events signed out"], 401, "session_required")
    _assert_error(answers["command no csrf"], 403, "csrf_failed")
    _assert_error(answers["api bad type"], 400, "invalid_request")
    _assert_error(answers["api too large"], 413, "payload_too_large")
    _assert_error(answers["unknown route"], 404, "not_found")
    _assert_error(answers["wrong method"], 405, "method_not_allowed")
    _assert_error(answers["oidc not configured"], 404, "not_found")


async def test_static_files_have_their_types_and_nothing_else_is_served(gw: WebGateway) -> None:
    async with gw.browser() as browser:
        shell = await browser.get("/inbox/")
        assert shell.headers["Content-Type"] == "text/html; charset=utf-8"
        assert shell.body == (STATIC_ROOT / "shell.html").read_bytes()
        for suffix, content_type in ((".js", "text/javascript; charset=utf-8"),
                                     (".css", "text/css; charset=utf-8"),
                                     (".svg", "image/svg+xml")):  # fmt: skip
            found = sorted(p for p in STATIC_ROOT.rglob(f"*{suffix}") if p.is_file())
            assert found, f"no {suffix} file under static/"
            name = found[0].relative_to(STATIC_ROOT).as_posix()
            answer = await browser.get(f"/inbox/static/{name}")
            assert answer.status == 200, name
            assert answer.headers["Content-Type"] == content_type
            assert answer.body == found[0].read_bytes()
            again = await browser.get(
                f"/inbox/static/{name}", headers={"If-None-Match": answer.headers["ETag"]}
            )
            assert again.status == 304 and again.body == b""
        for path in (
            "/inbox/static/shell.html",  # the shell is served at its pages only
            "/inbox/static/",
            "/inbox/static/js",
            "/inbox/static/js/",
            "/inbox/static/../webapp.py",
            "/inbox/static/..%2Fwebapp.py",
            "/inbox/static/%2e%2e/%2e%2e/config.py",
            "/inbox/static//etc/passwd",
            "/inbox/static/app.js.map",
        ):
            answer = await browser.get(path)
            assert answer.status == 404, path
            _assert_error(answer, 404, "not_found")


def test_the_static_set_refuses_symlinks_out_hidden_files_and_other_types(
    tmp_path: Path,
) -> None:
    root = tmp_path / "static"
    (root / "js").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "shell.html").write_text("<!doctype html>")
    (root / "app.js").write_text("export {};")
    (root / "js" / "b64.js").write_text("export {};")
    (root / "style.css").write_text("p{}")
    (root / "icon.svg").write_text("<svg/>")
    (root / "notes.txt").write_text("secret")
    (root / "page.html").write_text("<p>")
    (root / ".hidden.js").write_text("x")
    (root / ".git" / "config.js").write_text("x")
    outside = tmp_path / "outside.js"
    outside.write_text("stolen")
    os.symlink(outside, root / "out.js")
    os.symlink(root / "app.js", root / "alias.js")  # inside the folder: fine
    os.symlink(tmp_path, root / "up")
    loaded = StaticFiles.load(root)
    assert sorted(loaded.files) == ["alias.js", "app.js", "icon.svg", "js/b64.js", "style.css"]
    assert loaded.shell is not None and loaded.shell.body == b"<!doctype html>"
    assert loaded.files["js/b64.js"].content_type == "text/javascript; charset=utf-8"


# --------------------------------------------------------------------- CSRF


async def _queued(fleet: WebGateway, key: str) -> str:
    await fleet.converse("support", f"ctx-{key}")
    return str((await fleet.escalate("support", "refunds", key, f"ctx-{key}"))["id"])


def _new(before: list[AuditEvent], after: list[AuditEvent]) -> list[tuple[str, Any, Any]]:
    return [(e.event, e.reason, e.peer) for e in after[len(before) :]]


async def test_a_post_without_the_csrf_token_does_nothing(fleet: WebGateway) -> None:
    bundle_id = await _queued(fleet, "csrf-1")
    async with fleet.browser() as browser:
        await browser.login("alice")
        claim = fleet.command("alice", "claim", queue="refunds", bundle_id=bundle_id)
        for csrf, origin in ((None, None), ("wrong-token", None), (browser.csrf, "https://evil.example"),
                             (browser.csrf, "")):  # fmt: skip
            before = await fleet.audit_events()
            headers = {} if origin is None else {"Origin": origin}
            answer = await browser.command(claim, csrf=csrf, headers=headers)
            expected = "csrf_failed" if origin is None else "origin_rejected"
            _assert_error(answer, 403, expected)
            assert _new(before, await fleet.audit_events()) == [
                ("web.rejected", expected, "operator:alice" if origin is None else None)
            ]
            record = await fleet.stores.inbox.get(bundle_id)
            assert record is not None and record.status == "queued" and record.lease is None
        # No Origin at all (a client that is not a browser page of this listener).
        answer = await browser.command(claim, origin=False)
        _assert_error(answer, 403, "origin_rejected")
        # Nothing was spent: the very same signed command works once sent properly.
        done = await browser.command(claim)
        assert done.status == 200, done.body
        assert done.json()["bundle"]["lease"]["owner"] == "operator:alice"
        # A logout without the token leaves the session alive.
        _assert_error(await browser.post("/inbox/session/logout", csrf=None), 403, "csrf_failed")
        assert (await browser.get("/inbox/session")).status == 200


async def test_another_operators_command_in_this_session_is_403(fleet: WebGateway) -> None:
    bundle_id = await _queued(fleet, "swap-1")
    async with fleet.browser() as alice, fleet.browser() as bob:
        await alice.login("alice")
        await bob.login("bob")
        bobs = fleet.command("bob", "claim", queue="refunds", bundle_id=bundle_id)
        before = await fleet.audit_events()
        answer = await alice.command(bobs)
        _assert_error(answer, 403, "forbidden")
        assert _new(before, await fleet.audit_events()) == [
            ("operator.rejected", "forbidden", "operator:alice")
        ]
        record = await fleet.stores.inbox.get(bundle_id)
        assert record is not None and record.status == "queued"
        assert len(await fleet.stores.inbox.events(bundle_id)) == 1  # "queued" only
        # Bob's command was not spent either: in bob's own session it works.
        mine = await bob.command(bobs)
        assert mine.status == 200, mine.body
        assert mine.json()["bundle"]["lease"]["owner"] == "operator:bob"


async def test_an_operator_cannot_act_on_a_queue_it_does_not_serve(fleet: WebGateway) -> None:
    bundle_id = await _queued(fleet, "other-queue")
    async with fleet.browser() as carol:
        await carol.login("carol")
        for op, fields in (("list", {}), ("show", {"bundle_id": bundle_id}),
                           ("claim", {"bundle_id": bundle_id})):  # fmt: skip
            answer = await carol.command(fleet.command("carol", op, queue="refunds", **fields))
            _assert_error(answer, 403, "forbidden")
        own = await carol.command(fleet.command("carol", "list", queue="disputes"))
        assert own.status == 200 and own.json() == {"bundles": []}


async def test_the_web_command_answers_exactly_as_the_signed_api(fleet: WebGateway) -> None:
    bundle_id = await _queued(fleet, "same-answer")
    async with fleet.browser() as browser:
        await browser.login("alice")
        web = await browser.command(fleet.command("alice", "show", queue="refunds",
                                                  bundle_id=bundle_id))  # fmt: skip
        api = await browser.request(
            "POST", "/inbox/api",
            body=fleet.command("alice", "show", queue="refunds", bundle_id=bundle_id).encode(),
            headers={"Content-Type": COMMAND_MEDIA_TYPE},
        )  # fmt: skip
        assert web.status == api.status == 200
        assert web.json() == api.json()
        assert json.loads(web.body)["bundle"]["bundle_id"] == bundle_id
        # A replayed command is refused on the web route as on the API.
        token = fleet.command("alice", "list", queue="refunds")
        assert (await browser.command(token)).status == 200
        _assert_error(await browser.command(token), 401, "replay_detected")


async def test_a_session_is_no_credential_on_the_signed_api(gw: WebGateway) -> None:
    """``/inbox/api`` ignores cookies: an unsigned body is refused with a session too."""
    browser: Browser
    async with gw.browser() as browser:
        await browser.login("alice")
        answer = await browser.request(
            "POST", "/inbox/api", body=b"not a jws", headers={"Content-Type": COMMAND_MEDIA_TYPE}
        )
    assert answer.status == 401
