"""``baton inbox``: an operator works a handoff end to end through the real gateway.

The interop fleet (official a2a-sdk agent, the gateway with its operator
listener on real TLS, SQLite store) holds a handoff that ``support`` escalated
to ``refunds`` with a masked card number. Operators ``alice`` (may reveal PII)
and ``bob`` drive ``baton inbox`` in process (``main(argv)``, in a worker
thread, since the gateway runs on the test's event loop): list, claim, show
(decrypted and verified locally), reveal, decide, release, export and
``baton verify``. Raw signed commands sent with httpx check that a replayed
command and a command for another gateway are refused.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.cli import main
from gateway.inbox_client import API_PATH
from gateway.inbox_render import safe_text
from protocol.operator import COMMAND_MEDIA_TYPE, make_command_at, sign_command
from tests.interop.a2a_peers import JSONRPC, fetch_card, send_text
from tests.interop.conftest import Fleet, start_fleet
from tests.interop.handoff_kit import handoff_message

CARD = "4111 1111 1111 1111"
CARD_PATH = "/request/requested_action/arguments/card"
QUEUES = """
[[queues]]
name = "refunds"
escalate_from = ["support", "other"]

[[operators]]
name = "alice"
queues = ["refunds"]
reveal_pii = true

[[operators]]
name = "bob"
queues = ["refunds"]
"""
A2A = {"a2a-version": "1.0"}


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async with start_fleet(tmp_path, extra=QUEUES, operators=("alice", "bob")) as running:
        yield running


async def _handoff(fleet: Fleet, key: str) -> str:
    """``support`` talks to the assistant, then escalates: the new bundle's id."""
    context_id = "ctx-" + key
    async with fleet.httpx_client("support") as http:
        card = await fetch_card(http, fleet.a2a_url)
        await send_text(http, card, "refund o-77 please", binding=JSONRPC, context_id=context_id)
        message = handoff_message(
            key, context_id, arguments={"order": "o-77", "amount": 250, "card": CARD},
            pii_paths=[CARD_PATH],
        )  # fmt: skip
        response = await http.post(
            f"{fleet.base}/a2a/inbox/refunds",
            json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                  "params": {"message": message}},
            headers=A2A,
        )  # fmt: skip
    assert response.status_code == 200, response.text
    bundle_id: str = response.json()["result"]["task"]["id"]
    return bundle_id


class Baton:
    """``baton`` in process; each call returns (exit status, stdout, stderr)."""

    def __init__(self, fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
        self.fleet = fleet
        self.capsys = capsys

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()

        def run() -> int:
            try:
                return main(list(argv))
            except SystemExit as exc:  # argparse usage errors
                return int(exc.code or 0)

        code = await asyncio.wait_for(asyncio.to_thread(run), timeout=30)
        out, err = self.capsys.readouterr()
        return code, out, err

    async def inbox(self, operator: str, *argv: str) -> tuple[int, str, str]:
        root = str(self.fleet.folder.root)
        url = self.fleet.operator_url
        return await self("inbox", "--dir", root, "--url", url, "--operator", operator, *argv)


@pytest.fixture
def baton(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> Baton:
    return Baton(fleet, capsys)


async def _get_task(fleet: Fleet, bundle_id: str) -> dict[str, Any]:
    async with fleet.httpx_client("support") as http:
        got = await http.post(
            f"{fleet.base}/a2a/inbox/refunds",
            json={"jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": bundle_id}},
            headers=A2A,
        )
    result: dict[str, Any] = got.json()["result"]
    return result


async def test_list_claim_show_decide_and_export(
    fleet: Fleet, baton: Baton, tmp_path: Path
) -> None:
    bundle_id = await _handoff(fleet, "k1")

    code, out, _ = await baton.inbox("alice", "list")
    assert code == 0
    [header, row] = out.splitlines()
    assert header.split()[:3] == ["ID", "QUEUE", "STATUS"]
    assert row.split()[:6] == [bundle_id, "refunds", "queued", "3", "authorization",
                               "refund_over_limit"]  # fmt: skip

    code, out, _ = await baton.inbox("alice", "claim", bundle_id)
    assert code == 0, out
    assert f"{bundle_id}: claimed by operator:alice" in out and "fencing token 1" in out

    code, out, err = await baton.inbox("bob", "claim", bundle_id, "--queue", "refunds")
    assert (code, out) == (1, "")
    assert err.startswith("baton: conflict: ") and "held by operator:alice" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err

    # Options may also follow the subcommand.
    root, url = str(fleet.folder.root), fleet.operator_url
    code, out, _ = await baton("inbox", "show", bundle_id, "--dir", root, "--url", url,
                               "--operator", "alice")  # fmt: skip
    assert code == 0, out
    summary = next(r for r in await fleet.stores.inbox.list("refunds") if r.bundle_id == bundle_id)
    assert f"digest {summary.bundle_digest} matches" in out
    assert "Refund of 250 exceeds the 100 limit" in out
    assert "action      tool_call payments/refund" in out
    assert "allowed     approve, reject, edit" in out
    assert "refund o-77 please" in out  # the transcript body, decrypted locally
    assert "SendMessage" in out and ", verified)" in out
    assert f"{CARD_PATH}  <PII_1>" in out and CARD not in out
    assert "queued" in out and "claimed " in out and "decision    none yet" in out

    exported = tmp_path / "export.json"
    code, out, _ = await baton.inbox("alice", "show", bundle_id, "--export", str(exported))
    assert code == 0 and f"export written to {exported}" in out
    key = fleet.folder.operator("alice") / "encryption.jwks"
    code, out, err = await baton("verify", str(exported), "--operator-key", str(key),
                                 "--dir", root, "--expect-queue", "refunds")  # fmt: skip
    assert code == 0, err
    assert out.startswith(f"{bundle_id}: ok (handoff export")
    assert "lifecycle  queued -> claimed" in out

    code, out, _ = await baton.inbox("alice", "decide", bundle_id, "approve", "--message", "ok")
    assert code == 0, out
    assert f"{bundle_id}: approve recorded (decided), signed by operator:alice" in out
    task = await _get_task(fleet, bundle_id)
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    decision = next(a for a in task["artifacts"] if a["name"] == "decision")
    assert decision["parts"][0]["data"]["decision"].count(".") == 2

    code, out, err = await baton.inbox("alice", "decide", bundle_id, "approve")
    assert code == 1 and out == ""
    assert err.startswith("baton: stale_decision: ") and len(err.splitlines()) == 1

    code, out, _ = await baton.inbox("alice", "show", bundle_id)
    assert code == 0
    assert "decision    approve by operator:alice (signature verified" in out
    assert "message     ok" in out and "decided " in out and "delivered " in out


async def test_an_export_after_the_decision_verifies(
    fleet: Fleet, baton: Baton, tmp_path: Path
) -> None:
    bundle_id = await _handoff(fleet, "k4")
    assert (await baton.inbox("alice", "claim", bundle_id))[0] == 0
    assert (await baton.inbox("alice", "decide", bundle_id, "reject"))[0] == 0
    exported = tmp_path / "export.json"
    code, _, err = await baton.inbox("alice", "show", bundle_id, "--export", str(exported))
    assert code == 0, err
    key = fleet.folder.operator("alice") / "encryption.jwks"
    root = str(fleet.folder.root)
    code, out, err = await baton("verify", str(exported), "--operator-key", str(key),
                                 "--dir", root)  # fmt: skip
    assert code == 0, err
    assert "decision   reject by operator:alice" in out


async def test_release_then_another_operator_decides(fleet: Fleet, baton: Baton) -> None:
    bundle_id = await _handoff(fleet, "k2")
    assert (await baton.inbox("alice", "claim", bundle_id))[0] == 0

    code, _, err = await baton.inbox("bob", "decide", bundle_id, "reject")
    assert code == 1 and err.startswith("baton: stale_decision: ")
    assert "claimed by operator:alice, not you" in err
    code, _, err = await baton.inbox("bob", "release", bundle_id)
    assert code == 1 and err.startswith("baton: conflict: ")

    code, out, _ = await baton.inbox("alice", "release", bundle_id)
    assert (code, out.strip()) == (0, f"{bundle_id}: released; queued in queue refunds")
    code, out, _ = await baton.inbox("alice", "list", "--status", "queued")
    [row] = out.splitlines()[1:]
    assert row.split()[0] == bundle_id and row.split()[2] == "queued" and row.endswith("-")

    code, _, err = await baton.inbox("bob", "decide", bundle_id, "reject")
    assert code == 1 and "claim it first" in err
    code, out, _ = await baton.inbox("bob", "claim", bundle_id)
    assert code == 0 and "fencing token 2" in out
    code, _, err = await baton.inbox("bob", "decide", bundle_id, "respond", "--response", "1")
    assert code == 1 and err.startswith("baton: policy_denied: respond is not allowed")
    code, out, _ = await baton.inbox(
        "bob", "decide", bundle_id, "edit", "--arguments", '{"order": "o-77", "amount": 100}'
    )
    assert code == 0, out
    assert "edit recorded" in out and "fencing token 2" in out
    assert (await _get_task(fleet, bundle_id))["status"]["state"] == "TASK_STATE_COMPLETED"
    code, out, _ = await baton.inbox("bob", "show", bundle_id, "--json")
    assert code == 0
    assert '"amount": 100' in out and CARD not in out


async def test_reveal_is_checked_against_the_commitment_and_needs_permission(
    fleet: Fleet, baton: Baton
) -> None:
    bundle_id = await _handoff(fleet, "k3")
    code, out, _ = await baton.inbox(
        "alice", "show", bundle_id, "--reveal", CARD_PATH, "--reason", "customer asked"
    )
    assert code == 0, out
    assert "revealed (each matches the signed salted commitment)" in out
    assert f'{CARD_PATH} = "{CARD}"' in out
    audited = [e for e in await fleet.audit_events() if e.event == "handoff.pii_revealed"]
    assert len(audited) == 1 and "reason=customer asked" in (audited[0].detail or "")

    code, _, err = await baton.inbox(
        "bob", "show", bundle_id, "--reveal", CARD_PATH, "--reason", "curious"
    )
    assert code == 1 and err.startswith("baton: forbidden: ")
    code, _, err = await baton.inbox("alice", "show", bundle_id, "--reveal", "/request/x",
                                     "--reason", "r")  # fmt: skip
    assert code == 1 and "selects no masked field" in err
    code, _, err = await baton.inbox("alice", "show", bundle_id, "--reveal", CARD_PATH)
    assert code == 1 and "needs a reason" in err


async def test_a_replayed_command_and_one_for_another_gateway_are_refused(
    fleet: Fleet,
) -> None:
    alice = fleet.folder.load_operator("alice")
    audience = fleet.handoffs.gateway.runtime.identity

    def command(aud: str) -> str:
        built = make_command_at(
            "list", operator=alice.identity, audience=aud, queue="refunds", now=time.time()
        )
        return sign_command(built, alice.signing.active)

    tls = ssl.create_default_context(cafile=str(fleet.folder.ca_cert))
    headers = {"Content-Type": COMMAND_MEDIA_TYPE}
    async with httpx.AsyncClient(verify=tls, timeout=10) as http:
        url = fleet.operator_url + API_PATH
        token = command(audience)
        first = await http.post(url, content=token, headers=headers)
        assert first.status_code == 200 and first.json() == {"bundles": []}
        again = await http.post(url, content=token, headers=headers)
        assert again.status_code == 401
        assert again.json()["error"]["code"] == "replay_detected"
        other = await http.post(
            url, content=command(audience.replace("gw1", "gw2")), headers=headers
        )
        assert other.status_code == 401 and other.json()["error"]["code"] == "bad_audience"


async def test_usage_errors_are_one_line(fleet: Fleet, baton: Baton) -> None:
    code, _, err = await baton.inbox("carol", "list")
    assert code == 1 and err.startswith("baton: no operator 'carol'")
    code, _, err = await baton("inbox", "--dir", str(fleet.folder.root), "list")
    assert code == 2 and "--operator NAME" in err
    code, _, err = await baton.inbox("alice", "claim", "hb_" + "x" * 24)
    assert code == 1 and err.startswith("baton: task_not_found: ")
    # Nothing listens there: one line, no traceback.
    root = str(fleet.folder.root)
    dead = f"https://127.0.0.1:{fleet.port + 0}"  # the data plane wants a client certificate
    code, _, err = await baton("inbox", "--dir", root, "--url", dead, "--operator", "alice",
                               "list")  # fmt: skip
    assert code == 1 and err.startswith("baton: ") and "Traceback" not in err


def test_agent_text_cannot_drive_the_terminal() -> None:
    assert safe_text("ok\x1b[2J\u202egnp.exe\x9b") == "ok\\u001b[2J\\u202egnp.exe\\u009b"
    assert safe_text("a\nb", newlines=True) == "a\nb"
    assert safe_text("a\nb") == "a\\u000ab"
    assert safe_text("café 5 €") == "café 5 €"
