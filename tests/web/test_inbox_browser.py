"""The operator web inbox, end to end in a real browser.

Debian's Chromium, driven by Playwright, against the real gateway (operator
listener on real TLS, SQLite store) while the escalating agent uses the
official a2a-sdk client. The operator logs in, imports the key files that
``baton operators add`` wrote, watches the queue update live when the agent
escalates, claims, reads the transcript decrypted in the browser, reveals a
masked card number with a reason, and approves; the agent receives the
decision on its ``SubscribeToTask`` stream and verifies it with public keys.
A second operator can neither claim nor decide that bundle; a tampered bundle
shows the red badge; the export passes ``baton verify``. Throughout, a marker
placed in the conversation and the request never reaches the server's stored
rows, logs or answers in clear.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from a2a.types import Message, Part, Role, SendMessageConfiguration, SendMessageRequest
from google.protobuf import json_format, struct_pb2

from gateway.app import GATEWAY
from gateway.verify import load_verification_keys, verify_artifact
from keys.keyset import KeySet
from protocol.canonical import canonical_digest
from protocol.decision import DecisionBinding, DecisionTerms, verify_decision_at
from protocol.directory import KeyDirectory
from protocol.identity import agent_id
from tests.gateway._harness import TRUST_DOMAIN
from tests.interop.a2a_peers import JSONRPC, fetch_card, open_client, send_text, subscribe
from tests.interop.conftest import Fleet, start_fleet
from tests.interop.handoff_kit import handoff_request
from tests.web.browser_kit import chromium, require_browser, screenshot

MARKER = "PLAINTEXT-MARKER-7f3a9c"
CARD = "4111 1111 1111 1111"
CARD_PATH = "/request/requested_action/arguments/card"
ARGUMENTS = {"order": "o-77", "amount": 250, "card": CARD}
QUEUES = """
[[queues]]
name = "refunds"
escalate_from = ["support"]

[[operators]]
name = "alice"
queues = ["refunds"]
reveal_pii = true

[[operators]]
name = "bob"
queues = ["refunds"]
"""
WAIT_MS = 20_000
#: In the page: sign an approval with this operator's own keys, bound to the
#: bundle as listed and its current lease, and send it; the gateway's answer.
FORGED_DECISION = """async (bundleId) => {
    const { getSession, Operator } = await import('/inbox/static/api.js');
    const { loadKeys } = await import('/inbox/static/js/keystore.js');
    const { makeDecision, signDecision } = await import('/inbox/static/js/decision.js');
    const session = await getSession();
    const op = new Operator(session, await loadKeys(session.operator));
    const [b] = (await op.list()).filter((s) => s.bundle_id === bundleId);
    const body = { type: 'approve', commitment: 'agreed', arguments: null,
                   args_digest: b.args_digest, response: null, reroute_queue: null,
                   message: null };
    const decision = makeDecision(
        { bundleId, bundleDigest: b.bundle_digest, bundleVersion: b.version,
          fencingToken: b.lease.fencing_token },
        body, { operator: session.operator, now: Date.now() / 1000 });
    const token = await signDecision(decision, op.keys.signing);
    try {
        await op.command('decide', { queue: b.queue, bundleId, decision: token });
        return 'accepted';
    } catch (e) { return `${e.status} ${e.code}`; }
}"""
SERVER_LOGGERS = frozenset({"baton", "aiohttp", "gateway", "protocol", "adapters", "keys"})
SUPPORT = str(agent_id(TRUST_DOMAIN, "support"))


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    require_browser()
    async with start_fleet(tmp_path, extra=QUEUES, operators=("alice", "bob")) as running:
        running.handoffs.poll_s = 0.2
        yield running


def _message(key: str, context_id: str) -> Message:
    request = handoff_request(
        key,
        arguments=ARGUMENTS,
        allowed=("approve", "reject", "edit"),
        resolve_within_s=600,
        pii_paths=[CARD_PATH],
        reason_text=f"Refund of 250 exceeds the 100 limit ({MARKER})",
    )
    data = struct_pb2.Value()
    json_format.ParseDict(request, data)
    return Message(
        role=Role.ROLE_USER,
        message_id=f"m-{uuid.uuid4()}",
        context_id=context_id,
        parts=[Part(data=data, media_type="application/baton-handoff+json")],
    )


async def _escalate(fleet: Fleet, key: str) -> str:
    """``support`` talks to the assistant (with the marker), then escalates."""
    context_id = "ctx-" + key
    async with fleet.httpx_client("support") as http:
        assistant = await fetch_card(http, fleet.a2a_url)
        await send_text(
            http, assistant, f"refund o-77 please {MARKER}", binding=JSONRPC, context_id=context_id
        )
        inbox = await fetch_card(http, f"{fleet.base}/a2a/inbox/refunds")
        request = SendMessageRequest(
            message=_message(key, context_id),
            configuration=SendMessageConfiguration(return_immediately=True),
        )
        async with open_client(http, inbox, binding=JSONRPC) as client:
            [sent] = [json_format.MessageToDict(e) async for e in client.send_message(request)]
    bundle_id: str = sent["task"]["id"]
    return bundle_id


async def _login(browser: Any, fleet: Fleet, name: str, *, seen: list[bytes]) -> Any:
    """A new browser context, logged in as ``name`` with its keys imported: the queue page."""
    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()

    async def keep(response: Any) -> None:
        if "event-stream" in (response.headers.get("content-type") or ""):
            return
        with contextlib.suppress(Exception):  # redirects and aborted loads have no body
            seen.append(await response.body())

    page.on("response", lambda response: asyncio.ensure_future(keep(response)))
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    page.console = console
    await page.goto(f"{fleet.operator_url}/inbox/")
    await page.wait_for_url("**/inbox/login", timeout=WAIT_MS)
    if name == "alice":
        await screenshot(page, "00-login")
    await page.fill("#name", name)
    await page.fill("#password", fleet.passwords[name])
    await page.click("#sign-in")
    await _arrive(page, "**/inbox/keys")
    if name == "alice":
        await screenshot(page, "01-keys")
    folder = fleet.folder.operator(name)
    await page.set_input_files(
        "#key-files", [str(folder / "signing.jwks"), str(folder / "encryption.jwks")]
    )
    await page.click("#import-keys")
    await _arrive(page, f"{fleet.operator_url}/inbox/")
    await page.wait_for_selector("#live.live", timeout=WAIT_MS)
    return page


async def _arrive(page: Any, url: str) -> None:
    """Wait for the page to reach ``url``; otherwise fail with what it said."""
    try:
        await page.wait_for_url(url, timeout=WAIT_MS)
    except Exception as exc:
        flash = await page.text_content("#flash")
        raise AssertionError(f"not at {url}: flash {flash!r}, console {page.console}") from exc


async def _see(page: Any, selector: str) -> None:
    """Wait for ``selector``; otherwise fail with what the page said."""
    try:
        await page.wait_for_selector(selector, timeout=WAIT_MS)
    except Exception as exc:
        flash = await page.text_content("#flash")
        raise AssertionError(f"no {selector}: flash {flash!r}, console {page.console}") from exc


async def _bundle_page(page: Any, fleet: Fleet, bundle_id: str) -> None:
    await page.goto(f"{fleet.operator_url}/inbox/bundle/{bundle_id}")
    await page.wait_for_selector("#badge", timeout=WAIT_MS)


def _stored_bytes(fleet: Fleet) -> bytes:
    """Every byte of the SQLite store: the database file, its WAL and shm."""
    root = fleet.folder.root / ".baton"
    return b"".join(path.read_bytes() for path in sorted(root.glob("baton.db*")))


async def test_an_operator_works_a_handoff_in_the_browser(
    fleet: Fleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[bytes] = []
    async with chromium(fleet.app[GATEWAY].runtime.cert_file) as browser:
        page = await _login(browser, fleet, "alice", seen=seen)

        # The keys are in IndexedDB and cannot be read back out.
        extractable = await page.evaluate(
            """async () => {
                const { loadKeys } = await import('/inbox/static/js/keystore.js');
                const keys = await loadKeys('operator:alice');
                const out = [keys.signing.key.extractable, keys.encryption.key.extractable];
                try {
                    await crypto.subtle.exportKey('jwk', keys.signing.key);
                    out.push('exported');
                } catch (e) { out.push(e.name); }
                return out;
            }"""
        )
        assert extractable == [False, False, "InvalidAccessError"]

        # The queue updates without a reload when the agent escalates.
        await page.evaluate("window.__notReloaded = true")
        bundle_id = await _escalate(fleet, "web-1")
        row = f'tr[data-bundle="{bundle_id}"]'
        await page.wait_for_selector(row, timeout=WAIT_MS)
        assert await page.evaluate("window.__notReloaded") is True
        cells = await page.locator(f"{row} td").all_inner_texts()
        assert cells[1:5] == ["refunds", "queued", "refund_over_limit", SUPPORT]
        await screenshot(page, "02-queue")

        # The agent follows its handoff on the official SDK's stream.
        async with fleet.httpx_client("support") as http:
            inbox = await fetch_card(http, f"{fleet.base}/a2a/inbox/refunds")
            attached = asyncio.Event()
            stream = asyncio.ensure_future(
                subscribe(
                    http, inbox, bundle_id, binding=JSONRPC, on_first=lambda _e: attached.set()
                )
            )
            await asyncio.wait_for(attached.wait(), 15)

            await page.click(f"{row} a.bundle-link")
            await page.wait_for_selector("#badge.good", timeout=WAIT_MS)
            badge = await page.inner_text("#badge")
            assert "Verified" in badge and "chain intact" in badge
            timeline = await page.text_content("#timeline") or ""
            assert f"refund o-77 please {MARKER}" in timeline
            masked = page.locator(f'#masked li[data-path="{CARD_PATH}"]')
            assert CARD not in (await page.text_content("main") or "")

            # A second operator, in another browser, sees it but cannot take it.
            bob = await _login(browser, fleet, "bob", seen=seen)

            await page.click("#claim")
            await page.wait_for_selector("#lease:has-text('operator:alice')", timeout=WAIT_MS)

            await _bundle_page(bob, fleet, bundle_id)
            await bob.click("#claim")
            error = await bob.wait_for_selector(".flash.error", timeout=WAIT_MS)
            assert (await error.inner_text()).endswith("(conflict)")
            why = await bob.inner_text("#decide-why")
            assert "claimed by operator:alice" in why
            assert await bob.locator("#decide-form").count() == 0
            # Nor can bob's browser get a decision past the gateway by hand.
            assert await bob.evaluate(FORGED_DECISION, bundle_id) == "409 stale_decision"

            # Reveal the card with a reason: audited, checked against the commitment.
            await masked.locator(".reveal-reason").fill("card holder verification")
            await masked.locator("button.reveal").click()
            await page.wait_for_selector(
                f'#masked li[data-path="{CARD_PATH}"] .original', timeout=WAIT_MS
            )
            assert CARD in (await masked.locator(".original").inner_text())

            await page.check("#kind-approve")
            await page.click("#decide")
            await page.wait_for_selector(".flash.ok:has-text('Decision sent')", timeout=WAIT_MS)
            await page.wait_for_selector("#history tr.event.decided", timeout=WAIT_MS)
            await screenshot(page, "03-bundle")

            events = await asyncio.wait_for(stream, 30)

        # The agent verifies the decision with public keys alone.
        final = events[-1]["statusUpdate"]
        assert final["status"]["state"] == "TASK_STATE_COMPLETED"
        artifact = next(e["artifactUpdate"]["artifact"] for e in events if "artifactUpdate" in e)
        token = artifact["parts"][0]["data"]["decision"]
        public = KeySet.from_jwks(
            json.loads((fleet.folder.operator("alice") / "public.jwks").read_bytes())
        )
        decision = verify_decision_at(
            token,
            operators=KeyDirectory({"operator:alice": public}),
            binding=DecisionBinding(bundle_id, final["metadata"]["baton"]["bundleDigest"], 1, 1),
            request=DecisionTerms(("approve", "reject", "edit"), canonical_digest(ARGUMENTS)),
            now=time.time(),
        )
        assert (decision.decision.type, decision.operator) == ("approve", "operator:alice")

        # Bob cannot decide it now either: the form is gone, the outcome shown.
        await _bundle_page(bob, fleet, bundle_id)
        assert await bob.locator("#decide-form").count() == 0

        # The export, downloaded from the browser, passes baton verify.
        await _bundle_page(page, fleet, bundle_id)
        async with page.expect_download() as download_info:
            await page.click("#export")
        download = await download_info.value
        exported = tmp_path / "export.json"
        await download.save_as(str(exported))
        keys = load_verification_keys(fleet.folder.root)
        report = verify_artifact(
            exported.read_bytes(),
            gateway_keys=keys.gateway,
            operator_keys=keys.operators,
            operator_private=fleet.folder.load_operator("alice").encryption,
            now=time.time(),
            expect_queue="refunds",
            queue_operators=keys.queue_operators,
        )
        assert report.kind == "export" and report.content_checked
        assert report.decision is not None and report.decision.type == "approve"
        assert report.events[-1] == "delivered"

    # The reveal's reason is in the audit log; the card is not.
    audit = await fleet.audit_events()
    assert any("card holder verification" in json.dumps(e.to_json()) for e in audit)

    # No plaintext reached the server: stored rows, logs, or its answers.
    stored = _stored_bytes(fleet)
    assert stored, "the SQLite store is where the test expects it"
    for needle in (MARKER.encode(), CARD.encode()):
        assert needle not in stored
        assert all(needle not in body for body in seen)
    # The gateway's own logs (the a2a-sdk agent upstream may log what it was told).
    ours = [r for r in caplog.records if r.name.split(".")[0] in SERVER_LOGGERS]
    assert ours, "the gateway logged the requests"
    logged = "\n".join(f"{r.getMessage()} {json.dumps(r.__dict__, default=str)}" for r in ours)
    assert MARKER not in logged and CARD not in logged
    assert len(seen) > 10  # pages, modules and command answers were inspected


def _tamper(path: Path, bundle_id: str, change: Any) -> None:
    """Rewrite ``bundle_id``'s stored JWE with ``change(jwe)``: what a gateway
    (or anyone with write access to its store) could do to the ciphertext."""
    with sqlite3.connect(path) as db:
        [(sealed,)] = db.execute(
            "SELECT sealed_bundle FROM inbox_bundles WHERE bundle_id = ?", (bundle_id,)
        ).fetchall()
        stored = json.loads(sealed)
        stored["jwe"] = change(stored["jwe"])
        db.execute(
            "UPDATE inbox_bundles SET sealed_bundle = ? WHERE bundle_id = ?",
            (json.dumps(stored), bundle_id),
        )


def _flip_ciphertext(jwe: dict[str, Any]) -> dict[str, Any]:
    ciphertext = jwe["ciphertext"]
    flipped = "A" if ciphertext[10] != "A" else "B"
    return {**jwe, "ciphertext": ciphertext[:10] + flipped + ciphertext[11:]}


@pytest.mark.parametrize(
    ("tampering", "code"),
    [("ciphertext", "invalid_envelope"), ("another bundle", "binding_mismatch")],
)
async def test_a_tampered_bundle_shows_the_red_badge(
    fleet: Fleet, tampering: str, code: str
) -> None:
    seen: list[bytes] = []
    bundle_id = await _escalate(fleet, "web-2")
    db = fleet.folder.root / ".baton" / "baton.db"
    if tampering == "ciphertext":
        _tamper(db, bundle_id, _flip_ciphertext)
    else:
        # A genuine bundle, sealed by this gateway to this operator, but
        # another one: it decrypts and verifies, and is still refused.
        other = await _escalate(fleet, "web-3")
        record = await fleet.stores.inbox.get(other)
        assert record is not None
        _tamper(db, bundle_id, lambda _jwe: json.loads(record.sealed_bundle)["jwe"])
    async with chromium(fleet.app[GATEWAY].runtime.cert_file) as browser:
        page = await _login(browser, fleet, "alice", seen=seen)
        await _bundle_page(page, fleet, bundle_id)
        await page.wait_for_selector("#badge.bad", timeout=WAIT_MS)
        reason = await page.inner_text("#badge-reason")
        assert reason.startswith(f"{code}: "), reason
        assert await page.locator("#timeline").count() == 0
        assert await page.locator("#decide-form").count() == 0
        assert await page.locator("#claim").count() == 0
        await screenshot(page, f"04-tampered-{tampering.replace(' ', '-')}")


HOSTILE = (
    '<img src="https://evil.example/x.png" onerror="alert(1)"> '
    "![x](https://evil.example/p.png) [click](https://evil.example/)"
)
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 20}},
    "required": ["answer"],
    "additionalProperties": False,
}


async def test_edit_shows_a_diff_a_response_is_checked_and_agent_text_stays_text(
    fleet: Fleet,
) -> None:
    """Agent text with HTML and markdown renders as text (no image, link or
    request elsewhere); a response is checked against the response schema
    before it can be signed; an edit shows its diff and is what the agent
    gets back."""
    context_id = "ctx-web-4"
    async with fleet.httpx_client("support") as http:
        assistant = await fetch_card(http, fleet.a2a_url)
        await send_text(http, assistant, HOSTILE, binding=JSONRPC, context_id=context_id)
        request = handoff_request(
            "web-4",
            arguments={"order": "o-9", "amount": 250},
            allowed=("edit", "respond", "reject"),
            response_schema=SCHEMA,
            reason_text=HOSTILE,
        )
        data = struct_pb2.Value()
        json_format.ParseDict(request, data)
        message = Message(
            role=Role.ROLE_USER,
            message_id="m-web-4",
            context_id=context_id,
            parts=[Part(data=data, media_type="application/baton-handoff+json")],
        )
        inbox = await fetch_card(http, f"{fleet.base}/a2a/inbox/refunds")
        async with open_client(http, inbox, binding=JSONRPC) as client:
            [sent] = [
                json_format.MessageToDict(e)
                async for e in client.send_message(
                    SendMessageRequest(
                        message=message,
                        configuration=SendMessageConfiguration(return_immediately=True),
                    )
                )
            ]
    bundle_id = sent["task"]["id"]
    async with chromium(fleet.app[GATEWAY].runtime.cert_file) as browser:
        page = await _login(browser, fleet, "alice", seen=[])
        elsewhere: list[str] = []
        page.on(
            "request",
            lambda r: None if r.url.startswith(fleet.operator_url) else elsewhere.append(r.url),
        )
        await _bundle_page(page, fleet, bundle_id)
        await page.wait_for_selector("#badge.good", timeout=WAIT_MS)
        assert HOSTILE in (await page.text_content("#timeline") or "")
        assert HOSTILE in (await page.text_content("#escalation") or "")
        assert await page.locator("main img, main a[href*='evil']").count() == 0

        await page.click("#claim")
        await page.wait_for_selector("#lease:has-text('operator:alice')", timeout=WAIT_MS)

        # respond: checked against the schema as it is typed.
        await page.check("#kind-respond")
        await page.fill("#response", '{"answer": "no", "extra": 1}')
        check = await page.inner_text("#response-check")
        assert check.startswith("Does not fit the response schema")
        assert await page.is_disabled("#decide")
        await page.fill("#response", '{"answer": "no"}')
        assert await page.inner_text("#response-check") == "Fits the response schema."
        assert await page.is_enabled("#decide")

        # edit: the diff shows exactly the change.
        await page.check("#kind-edit")
        await page.fill("#arguments", '{"amount": 100, "order": "o-9"}')
        added = await page.locator("#edit-diff .dadd").all_inner_texts()
        removed = await page.locator("#edit-diff .ddel").all_inner_texts()
        assert [line.strip() for line in added] == ['+   "amount": 100,']
        assert [line.strip() for line in removed] == ['-   "amount": 250,']
        await screenshot(page, "05-edit-diff")
        await page.click("#decide")
        await _see(page, ".flash.ok:has-text('Decision sent: edit')")
        console = page.console
    assert elsewhere == []
    assert not [line for line in console if "Content Security Policy" in line]

    record = await fleet.stores.inbox.get(bundle_id)
    assert record is not None and record.decision is not None
    payload = json.loads(
        base64.urlsafe_b64decode(record.decision.split(".")[1] + "==").decode("utf-8")
    )
    assert payload["decision"]["type"] == "edit"
    assert payload["decision"]["arguments"] == {"order": "o-9", "amount": 100}
    assert payload["decision"]["args_digest"] == canonical_digest({"order": "o-9", "amount": 100})


async def test_signing_out_ends_the_session_and_its_stream(fleet: Fleet) -> None:
    async with chromium(fleet.app[GATEWAY].runtime.cert_file) as browser:
        page = await _login(browser, fleet, "alice", seen=[])
        await page.click("#logout")
        await _arrive(page, "**/inbox/login")
        status = await page.evaluate("fetch('/inbox/session').then((r) => r.status)")
        assert status == 401
        await page.goto(f"{fleet.operator_url}/inbox/")
        await _arrive(page, "**/inbox/login")
        # The keys stay in this browser for the next sign-in; the session does not.
        await page.fill("#name", "alice")
        await page.fill("#password", fleet.passwords["alice"])
        await page.click("#sign-in")
        await _arrive(page, f"{fleet.operator_url}/inbox/")
        await page.wait_for_selector("#live.live", timeout=WAIT_MS)
