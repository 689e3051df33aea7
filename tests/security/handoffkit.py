"""What the handoff security cases (H01-H13, ``test_handoff.py``) share.

The security harness (``conftest.py``) fronts one recording upstream that
speaks no A2A, so a conversation cannot exist before an escalation there.
These cases run on :func:`tests.interop.conftest.start_fleet` instead: the
same real gateway (``baton init`` folder, TLS 1.3 with client certificates,
SQLite store), the official a2a-sdk agent as the ``assistant`` upstream and
the MCP SDK server as ``payments``, plus the operator listener.

:func:`assert_refused` mirrors :func:`tests.security.invariants.assert_rejected`
for that fleet (whose error bodies are A2A's or the operator API's shape):

1. no SDK upstream received anything;
2. every SQLite table but the audit chain (and, where the request was
   authenticated first, the nonce and rate tables) is unchanged: no ticket,
   no lifecycle event, no binding;
3. exactly one audit event, rejected, with the stable code as its reason;
4. the body names the code with its public message only, no internals.

:func:`tamper` re-signs a bundle with the *gateway's own key* after editing
its transcript: the signature then verifies, so what refuses the bundle is
the hash-chain check itself (defence in depth against a gateway bug or a
stolen signing key), which is what H02-H04 pin.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.app import RUNTIME
from gateway.handoffs import sealed_parts
from keys.jose import encrypt_general, sign_compact_bytes
from keys.keyset import KeySet
from protocol.bundle import BUNDLE_JWE_TYP, BUNDLE_JWS_TYP, OpenedBundle, open_bundle
from protocol.canonical import canonical_json
from protocol.errors import ERRORS_BY_CODE
from protocol.identity import gateway_id
from tests.gateway._harness import TRUST_DOMAIN
from tests.interop.a2a_peers import JSONRPC, fetch_card, send_text
from tests.interop.conftest import Fleet
from tests.interop.handoff_kit import handoff_message

GATEWAY = str(gateway_id(TRUST_DOMAIN, "gw1"))
QUEUE, OTHER_QUEUE = "refunds", "disputes"
#: Two queues; alice (may reveal PII) and bob serve refunds, carol disputes only.
#: A2A messages naming the ``echo`` skill are held for a person (H09, H12).
EXTRA = f"""
[[queues]]
name = "{QUEUE}"
escalate_from = ["support", "other"]
lease_s = 60

[[queues]]
name = "{OTHER_QUEUE}"
escalate_from = ["support"]

[[operators]]
name = "alice"
queues = ["{QUEUE}"]
reveal_pii = true

[[operators]]
name = "bob"
queues = ["{QUEUE}"]

[[operators]]
name = "carol"
queues = ["{OTHER_QUEUE}"]

[[policy.allow]]
caller = "support"
upstream = "assistant"
methods = ["SendMessage"]
skills = ["echo"]

[[policy.require_approval]]
upstream = "assistant"
queue = "{QUEUE}"
skills = ["echo"]
"""
OPERATORS = ("alice", "bob", "carol")
#: ErrorInfo metadata a refusal may carry: retry hints and a held call's public handle.
_METADATA = {"trace_id", "retryable", "retry_after", "queue", "handoff", "request_state",
             "status", "inbox"}  # fmt: skip
_LEAKS = ("Traceback", 'File "', ".py", "KeysError", "joserfc", "detail")

Response = httpx.Response


def db_path(fleet: Fleet) -> Path:
    return fleet.folder.root / ".baton" / "baton.db"


def _tables(path: Path) -> dict[str, list[str]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        names = [
            row[0]
            for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not row[0].startswith("sqlite_")
        ]
        return {
            name: sorted(repr(row) for row in db.execute(f'SELECT * FROM "{name}"'))  # noqa: S608
            for name in names
        }


async def tables(fleet: Fleet) -> dict[str, list[str]]:
    return await asyncio.to_thread(_tables, db_path(fleet))


def forwarded(fleet: Fleet) -> int:
    """Requests that reached either SDK upstream (past its gateway verifier)."""
    return len(fleet.mcp_seen.requests) + len(fleet.a2a_seen.requests)


def _error_code(answer: Response) -> tuple[str, str]:
    """(stable code, public message) of an A2A JSON-RPC or operator API error."""
    error = answer.json()["error"]
    if isinstance(error.get("data"), list):  # A2A JSON-RPC: ErrorInfo, reason upper-case
        [info] = error["data"]
        assert set(error) == {"code", "message", "data"}, answer.text
        assert set(info["metadata"]) <= _METADATA, answer.text
        return str(info["reason"]).lower(), str(error["message"])
    assert set(error) <= {"code", "message", "retryable", "retry_after"}, answer.text
    return str(error["code"]), str(error["message"])


async def assert_refused(
    fleet: Fleet,
    send: Awaitable[Response] | Callable[[], Awaitable[Response]],
    *,
    status: int,
    code: str,
    event: str = "request.rejected",
    authenticated: bool = True,
) -> Response:
    """Run ``send`` between two snapshots and check the reject invariants (module docstring).

    ``authenticated``: the request passed admission, so its nonce (and its
    rate-limit count) may have been recorded before the refusal.
    """
    before, sent = await tables(fleet), forwarded(fleet)
    audit_before = len(await fleet.audit_events())
    answer = await (send() if callable(send) else send)
    assert answer.status_code == status, answer.text
    got, message = _error_code(answer)
    assert got == code, answer.text
    assert message == ERRORS_BY_CODE[code].public_message, answer.text
    for leak in _LEAKS:
        assert leak not in answer.text, f"the error body leaks {leak!r}: {answer.text}"
    assert len(answer.content) < 1024, "an error body carries no internals"

    after = await tables(fleet)
    assert forwarded(fleet) == sent, "a refused request reached an upstream"
    allowed = {"audit_events"} | ({"nonces", "rate_windows"} if authenticated else set())
    changed = {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
    assert changed <= allowed, f"a refused request wrote {sorted(changed - allowed)}"
    events = (await fleet.audit_events())[audit_before:]
    assert [(e.event, e.outcome, e.reason) for e in events] == [(event, "rejected", code)], events
    return answer


# ----------------------------------------------------------------- the A2A path
async def converse(fleet: Fleet, context_id: str, agent: str = "support", turns: int = 2) -> None:
    """``agent`` talks to the a2a-sdk agent (official client): a recorded conversation."""
    async with fleet.httpx_client(agent) as http:
        card = await fetch_card(http, fleet.a2a_url)
        for turn in range(turns):
            await send_text(http, card, f"refund o-77, turn {turn}", binding=JSONRPC,
                            context_id=context_id)  # fmt: skip


async def inbox_rpc(
    fleet: Fleet, agent: str, method: str, params: dict[str, Any], *, queue: str = QUEUE
) -> Response:
    async with fleet.httpx_client(agent) as http:
        return await http.post(
            f"{fleet.base}/a2a/inbox/{queue}",
            json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
            headers={"a2a-version": "1.0"},
        )


async def escalate(
    fleet: Fleet, agent: str, key: str, context_id: str, *, queue: str = QUEUE, **request: Any
) -> Response:
    """``SendMessage`` with an ``application/baton-handoff+json`` part to ``queue``."""
    message = handoff_message(key, context_id, **request)
    return await inbox_rpc(fleet, agent, "SendMessage", {"message": message}, queue=queue)


async def escalated(fleet: Fleet, key: str, context_id: str, **request: Any) -> str:
    """A conversation, then ``support``'s escalation of it; the bundle id."""
    await converse(fleet, context_id)
    answer = await escalate(fleet, "support", key, context_id, **request)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["result"]["task"]["id"])


# ------------------------------------------------------------------ bundles
def gateway_keys(fleet: Fleet) -> KeySet:
    return KeySet.from_jwks(json.loads((fleet.folder.gateway / "jwks.json").read_bytes()))


async def stored_jwe(fleet: Fleet, bundle_id: str) -> dict[str, Any]:
    record = await fleet.stores.inbox.get(bundle_id)
    assert record is not None
    jwe: dict[str, Any] = sealed_parts(record)["jwe"]
    return jwe


async def opened(fleet: Fleet, bundle_id: str, operator: str = "alice") -> OpenedBundle:
    """The stored bundle, decrypted by ``operator`` and verified."""
    keys = fleet.folder.load_operator(operator).encryption
    return open_bundle(await stored_jwe(fleet, bundle_id), keys, gateway_keys(fleet))


def tamper(
    fleet: Fleet, bundle: OpenedBundle, edit: Callable[[dict[str, Any]], None]
) -> tuple[str, dict[str, Any]]:
    """``edit`` the bundle's JSON, re-sign it with the gateway key and re-seal
    it to the queue's operators: (compact JWS, general JWE)."""
    document = bundle.bundle.to_json()
    edit(document)
    runtime = fleet.app[RUNTIME]
    jws = sign_compact_bytes(canonical_json(document), runtime.signing.active, typ=BUNDLE_JWS_TYP)
    recipients = list(runtime.queue_keys[bundle.bundle.queue])
    jwe = encrypt_general(jws, recipients, typ=BUNDLE_JWE_TYP, cty=BUNDLE_JWS_TYP)
    return (jws if isinstance(jws, str) else jws.decode("ascii")), jwe


def replace_sealed(fleet: Fleet, bundle_id: str, jwe: dict[str, Any]) -> None:
    """Swap the stored ciphertext of ``bundle_id`` (what a hostile store could do)."""
    with sqlite3.connect(db_path(fleet)) as db:
        [(text,)] = db.execute(
            "SELECT sealed_bundle FROM inbox_bundles WHERE bundle_id = ?", (bundle_id,)
        ).fetchall()
        parts = json.loads(text)
        parts["jwe"] = jwe
        db.execute(
            "UPDATE inbox_bundles SET sealed_bundle = ? WHERE bundle_id = ?",
            (json.dumps(parts, separators=(",", ":")), bundle_id),
        )
