"""Escalation across a fleet: two real ``baton serve`` processes on one Redis.

Both gateways share the data folder's keys (one fleet) and a Redis key prefix
of this test's own. ``support`` talks to the ``assistant`` A2A agent (a2a-sdk,
mTLS, behind :class:`~adapters.agent.GatewayVerifier`) through gateway A, so
conversation ``a2a:<context>`` is recorded in Redis; then:

* ten escalations with one idempotency key, fired in parallel at A and B
  alternately, are one handoff: one task id in every answer, one inbox record,
  one signed ``queued`` event, one ``handoff.created`` audit event (Issue 5);
* ``other``, which may escalate to the queue but never spoke in the
  conversation, is refused 403 ``not_participant`` and nothing is created;
* a held A2A call (``require_approval`` on skill ``echo``), held at B and
  approved through A's operator listener, passes exactly once when ten
  retries race at both gateways; the other nine are ``approval_refused``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.agent import RequestSigner
from gateway.config import load
from gateway.devdata import DataFolder, init_data_folder, write_operator
from gateway.runtime import load_runtime
from gateway.stores import Stores, redis_client
from keys.keyset import KeySet
from protocol.canonical import canonical_digest
from protocol.decision import DecisionBody
from protocol.identity import agent_id, gateway_id
from protocol.lifecycle import verify_events
from tests.gateway._harness import TRUST_DOMAIN, agent_context, free_port
from tests.gateway.stores.support import delete_prefix, fresh_prefix, redis_reachable, redis_url
from tests.interop.a2a_peers import JSONRPC, build_a2a_app, fetch_card, send_text
from tests.interop.conftest import Recorded, serve_upstream
from tests.interop.handoff_kit import OperatorClient, handoff_message

SUPPORT = str(agent_id(TRUST_DOMAIN, "support"))
REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


def _config(port: int, admin: int, operator: int, a2a_port: int, prefix: str) -> str:
    return f"""
trust_domain = "{TRUST_DOMAIN}"

[gateway]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
operator_listen = "127.0.0.1:{operator}"
drain_timeout_s = 5

[store]
kind = "redis"
url = "{redis_url()}"
prefix = "{prefix}"

[[agents]]
name = "support"

[[agents]]
name = "other"

[[agents]]
name = "assistant"

[[upstreams]]
name = "assistant"
url = "https://127.0.0.1:{a2a_port}"
protocol = "a2a"
timeout_s = 10

[[policy.allow]]
caller = "support"
upstream = "assistant"
methods = ["*"]
skills = ["echo"]

[[queues]]
name = "refunds"
escalate_from = ["support", "other"]

[[policy.require_approval]]
upstream = "assistant"
queue = "refunds"
skills = ["echo"]

[[operators]]
name = "alice"
queues = ["refunds"]
"""


@dataclass
class Gateway:
    """One ``baton serve`` process."""

    folder: DataFolder
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    operator_port: int
    log: Path

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def _exited(self) -> str:
        return f"baton serve exited with {self.process.returncode}:\n{self.output()}"

    async def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(self._exited())
        try:
            async with httpx.AsyncClient(timeout=2.0) as http:
                response = await http.get(f"http://127.0.0.1:{self.admin_port}/readyz")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def metrics(self) -> str:
        async with httpx.AsyncClient(timeout=5.0) as http:
            response = await http.get(f"http://127.0.0.1:{self.admin_port}/metrics")
        response.raise_for_status()
        return response.text

    def stop(self) -> int:
        """SIGTERM, then a bounded wait (SIGKILL if it does not stop)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            return -signal.SIGKILL


def _serve(
    folder: DataFolder, port: int, admin_port: int, operator_port: int, log: Path
) -> Gateway:
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--dir", str(folder.root),
             "--log-level", "warning"],
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Gateway(folder, process, port, admin_port, operator_port, log)


async def _until(predicate: Callable[[], Awaitable[bool]], *, timeout: float) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


@dataclass
class RedisFleet:
    folder: DataFolder
    scratch: Path
    gateways: tuple[Gateway, Gateway]
    prefix: str
    stores: Stores  # this process's own view of the fleet's Redis store
    seen: Recorded  # what reached the assistant agent

    def client(self, agent: str) -> httpx.AsyncClient:
        """A signed ``httpx`` client (what a2a-sdk uses) with ``agent``'s certificate."""
        material = self.folder.load_agent(TRUST_DOMAIN, agent)
        return httpx.AsyncClient(
            verify=agent_context(self.folder, material, self.scratch),
            auth=RequestSigner(material.signing.active),
            timeout=httpx.Timeout(10.0, read=30.0),
        )

    def gateway_keys(self) -> KeySet:
        return KeySet.from_jwks(json.loads((self.folder.gateway / "jwks.json").read_bytes()))

    async def inbox_keys(self) -> list[bytes]:
        raw = redis_client(redis_url())
        try:
            return [key async for key in raw.scan_iter(match=f"{self.prefix}inbox:*")]
        finally:
            await raw.aclose()


async def _require_redis() -> None:
    reason = await redis_reachable(redis_url())
    if reason is None:
        return
    message = f"Redis (BATON_REDIS_URL) is unreachable: {reason}"
    if os.environ.get("BATON_ALLOW_NO_REDIS") == "1":
        pytest.skip(message)
    pytest.fail(message)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[RedisFleet]:
    await _require_redis()
    prefix = fresh_prefix()
    folder = init_data_folder(
        tmp_path / "gw-a",
        trust_domain=TRUST_DOMAIN,
        force=False,
        now=dt.datetime.now(dt.UTC),
        agents=("support", "other", "assistant"),
    )
    write_operator(folder, "alice", now=dt.datetime.now(dt.UTC))
    second = DataFolder(tmp_path / "gw-b")
    shutil.copytree(folder.data, second.data)  # same CA, keys and store key: one fleet
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    gateways: list[Gateway] = []
    codes: list[int] = []
    raw = redis_client(redis_url())
    try:
        async with serve_upstream(folder, "assistant", _assistant, scratch) as (
            a2a_port,
            seen,
        ):
            for index, home in enumerate((folder, second)):
                port, admin_port, operator_port = free_port(), free_port(), free_port()
                home.config.write_text(
                    _config(port, admin_port, operator_port, a2a_port, prefix), "utf-8"
                )
                log = tmp_path / f"serve-{index}.log"
                gateways.append(_serve(home, port, admin_port, operator_port, log))
            for gateway in gateways:
                try:
                    await _until(gateway.ready, timeout=READY_TIMEOUT_S)
                except TimeoutError:
                    pytest.fail(f"no /readyz within {READY_TIMEOUT_S} s:\n{gateway.output()}")
            stores = await load_runtime(load(folder.config), folder.root).open_stores()
            try:
                yield RedisFleet(folder, scratch, (gateways[0], gateways[1]), prefix, stores, seen)
            finally:
                await stores.close()
                codes = [gateway.stop() for gateway in gateways]
    finally:
        for gateway in gateways:  # the upstream failed to start, or an exception above
            if gateway.process.poll() is None:
                gateway.stop()
        await delete_prefix(raw, prefix)
        await raw.aclose()
    assert codes == [0, 0], [gateway._exited() for gateway in gateways]


def _assistant(port: int) -> Any:
    return build_a2a_app(f"https://127.0.0.1:{port}", push_http=None)


async def _conversation(fleet: RedisFleet, context_id: str) -> None:
    """``support`` talks to the assistant through gateway A in ``context_id``."""
    async with fleet.client("support") as http:
        base = f"{fleet.gateways[0].base}/u/assistant"
        card = await fetch_card(http, base)
        await send_text(http, card, "refund o-77 please", binding=JSONRPC, context_id=context_id)


async def _escalate(
    http: httpx.AsyncClient, gateway: Gateway, key: str, context_id: str
) -> httpx.Response:
    return await http.post(
        f"{gateway.base}/a2a/inbox/refunds",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SendMessage",
            "params": {"message": handoff_message(key, context_id)},
        },
        headers={"a2a-version": "1.0"},
    )


async def test_parallel_duplicates_at_two_gateways_are_one_bundle(fleet: RedisFleet) -> None:
    context_id = "ctx-fleet-" + fleet.prefix.rstrip(":")
    await _conversation(fleet, context_id)
    a, b = fleet.gateways
    async with fleet.client("support") as via_a, fleet.client("support") as via_b:
        answers = await asyncio.gather(
            *(
                _escalate(*((via_a, a) if i % 2 == 0 else (via_b, b)), "key-fleet", context_id)
                for i in range(10)
            )
        )
    assert [r.status_code for r in answers] == [200] * 10, [r.text for r in answers]
    tasks = [r.json()["result"]["task"] for r in answers]
    ids = {task["id"] for task in tasks}
    assert len(ids) == 1, ids
    [task_id] = ids
    assert task_id.startswith("hb_")
    assert {task["contextId"] for task in tasks} == {context_id}
    assert {task["status"]["state"] for task in tasks} == {"TASK_STATE_SUBMITTED"}
    # B really answered its half (it never saw the conversation: Redis did).
    assert 'baton_requests_total{code="ok",outcome="accepted"} 5.0' in await b.metrics()

    records = await fleet.stores.inbox.list("refunds")
    assert [r.bundle_id for r in records] == [task_id]
    [record] = records
    assert (record.conversation, record.origin, record.status, record.version) == (
        "a2a:" + context_id,
        SUPPORT,
        "queued",
        1,
    )
    events, _head = verify_events(
        await fleet.stores.inbox.events(task_id), fleet.gateway_keys(), bundle_id=task_id
    )
    assert [event.type for event in events] == ["queued"]
    audit = list(await fleet.stores.audit.read())
    created = [e for e in audit if e.event == "handoff.created"]
    assert len(created) == 1, created
    assert task_id in (created[0].detail or "")
    assert [e for e in audit if e.outcome == "rejected"] == []


async def test_a_non_participant_is_refused_across_the_fleet(fleet: RedisFleet) -> None:
    context_id = "ctx-only-support-" + fleet.prefix.rstrip(":")
    await _conversation(fleet, context_id)
    before = len(list(await fleet.stores.audit.read()))
    async with fleet.client("other") as http:
        response = await _escalate(http, fleet.gateways[1], "key-other", context_id)
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["data"][0]["reason"] == "NOT_PARTICIPANT"
    assert list(await fleet.stores.inbox.list("refunds")) == []
    assert await fleet.inbox_keys() == [], "an inbox key was written"
    audit = list(await fleet.stores.audit.read())
    assert [(e.outcome, e.reason) for e in audit[before:]] == [("rejected", "not_participant")]
    assert [e for e in audit if e.event == "handoff.created"] == []


#: The held message's parts: what the approval's arguments digest covers.
HELD_PARTS = [{"text": "refund o-99 for 500"}]


async def _held_message(http: httpx.AsyncClient, gateway: Gateway, n: int) -> httpx.Response:
    message = {
        "messageId": f"m-held-{n}",
        "role": "ROLE_USER",
        "parts": HELD_PARTS,
        "metadata": {"skill": "echo"},
    }
    return await http.post(
        f"{gateway.base}/u/assistant/",
        json={"jsonrpc": "2.0", "id": n, "method": "SendMessage", "params": {"message": message}},
        headers={"a2a-version": "1.0"},
    )


def _echo_messages(fleet: RedisFleet) -> int:
    return sum(1 for method, _, _ in fleet.seen.requests if method == "POST")


async def test_an_approved_held_call_passes_once_across_two_gateways(fleet: RedisFleet) -> None:
    a, b = fleet.gateways
    async with fleet.client("support") as http:
        held = await _held_message(http, b, 0)
    assert held.status_code == 403, held.text
    [info] = held.json()["error"]["data"]
    assert info["reason"] == "APPROVAL_REQUIRED"
    bundle_id = info["metadata"]["handoff"]
    before = _echo_messages(fleet)
    # Decided through gateway A's operator listener (B held the call).
    alice = OperatorClient(
        fleet.folder, "alice", url=f"https://127.0.0.1:{a.operator_port}", queue="refunds",
        audience=str(gateway_id(TRUST_DOMAIN, "gw1")),
    )  # fmt: skip
    approve = DecisionBody(
        type="approve", commitment="agreed", args_digest=canonical_digest(HELD_PARTS)
    )
    await alice.claim_and_decide(bundle_id, approve)
    await alice.close()
    # Ten retries at once, half at each gateway: exactly one passes.
    async with fleet.client("support") as via_a, fleet.client("support") as via_b:
        answers = await asyncio.gather(
            *(_held_message(*((via_a, a) if i % 2 else (via_b, b)), i + 1) for i in range(10))
        )
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] + [403] * 9, [r.text for r in answers]
    refused = {r.json()["error"]["data"][0]["reason"] for r in answers if r.status_code == 403}
    assert refused == {"APPROVAL_REFUSED"}
    assert _echo_messages(fleet) == before + 1, "an approval passed twice"
    record = await fleet.stores.inbox.get(bundle_id)
    assert record is not None and record.status == "acknowledged"
