"""``baton demo``, second part: a refund over the limit waits for a person.

On the gateway the first part started (``gateway/demo.py``), with the sample
``baton init`` writes (:data:`~gateway.devdata.SAMPLE_APPROVALS`):

* **payments** is a real MCP tool server (Streamable HTTP, revision
  2025-11-25, JSON answers) on aiohttp with payments' certificate. Like
  billing, it admits a request only with the gateway's client certificate and
  a valid, fresh gateway signature (:func:`~gateway.demo_kit.check_gateway_request`).
  Its tools: ``lookup_order``, ``refund_small`` (refunds up to the limit, 100;
  it refuses more itself), ``refund`` (any amount) and ``close_account``,
  which the policy does not give support (the gateway filters it out of
  ``tools/list``).
* **support** speaks MCP through the gateway (signed, mTLS): it looks an
  order up and refunds 40 with ``refund_small``; a refund of 250 is over the
  limit, so it asks ``refund``, which ``[[policy.require_approval]]`` holds:
  the gateway answers with the handoff's id and queue and payments receives
  nothing.
* **the operator** ``demo-operator`` works the handoff with the real
  ``baton inbox`` commands (run in process against the demo's operator
  listener): list, claim, show (decrypted and verified locally), decide
  approve.
* support retries: the approved call passes exactly once; a second retry is
  refused (``approval_refused``). The handoff's export verifies offline with
  ``baton verify``.

Every claim printed is checked against what payments received, the answers
and the CLI's output; one that does not hold raises
:class:`~gateway.demo_kit.DemoFailed`.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import secrets
import shlex
import time
from collections.abc import Iterator, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from adapters.jsonrpc import render_error
from gateway.config import BatonConfig
from gateway.demo_kit import (
    Answer,
    DemoFailed,
    Printer,
    check_gateway_request,
    expect,
    post,
    sign_request,
)
from gateway.devdata import SAMPLE_APPROVALS, AgentMaterial, DataFolder
from keys.errors import KeysError
from keys.keyset import KeySet
from keys.strictjson import loads_object
from keys.x509 import TrustAnchors
from protocol.errors import BatonError, translating

__all__ = ["MCP_VERSION", "Payments", "Refunds", "require_approval_sample"]

#: The MCP revision payments and support speak (handshake era: initialize, a session).
MCP_VERSION: Final = "2025-11-25"
#: A tool payments has that support's policy does not list.
UNLISTED_TOOL: Final = "close_account"
#: The amounts support refunds: one within the limit, one over it.
SMALL_AMOUNT: Final = 40
LARGE_AMOUNT: Final = 250
#: How long one in-process ``baton`` command may take (its HTTP client gives up at 30 s).
CLI_TIMEOUT_S: Final = 60.0


def require_approval_sample(config: BatonConfig, folder: DataFolder) -> None:
    """The pieces of :data:`SAMPLE_APPROVALS` the demo needs, or :class:`DemoFailed`."""
    s = SAMPLE_APPROVALS
    upstream = next((u for u in config.upstreams if u.name == s.upstream), None)
    operator = next((o for o in config.operators if o.name == s.operator), None)
    allowed = {
        tool
        for rule in config.policy.allow
        if (rule.caller, rule.upstream) == (s.caller, s.upstream)
        and {"tools/call", "*"} & set(rule.methods)
        for tool in rule.tools
    }
    held = {
        tool
        for hold in config.policy.require_approval
        if hold.upstream == s.upstream and hold.queue == s.queue
        for tool in hold.tools
    }
    expect(
        upstream is not None
        and upstream.protocol == "mcp"
        and operator is not None
        and s.queue in operator.queues
        and ("*" in allowed or set(s.tools) <= allowed)
        and s.held_tool in held
        and s.small_tool not in held
        and (folder.agent(s.upstream) / "tls.pem").is_file()
        and (folder.operator(s.operator) / "signing.jwks").is_file(),
        f"needs the approval sample of 'baton init': an MCP upstream {s.upstream} (with its "
        f"certificate), a queue {s.queue} served by operator {s.operator} (with its keys), a "
        f"policy rule letting {s.caller} call tools {', '.join(s.tools)} on {s.upstream} and a "
        f"require_approval rule holding {s.held_tool} only; 'baton init --force "
        f"{folder.root}' writes a fresh sample (and new keys)",
    )


# ------------------------------------------------------------------ payments
def _tool(name: str, description: str, *, amount: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {"order": {"type": "string"}}
    if amount:
        properties["amount"] = {"type": "number", "exclusiveMinimum": 0}
    return {
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": properties, "required": list(properties)},
    }


def _tools() -> list[dict[str, Any]]:
    s = SAMPLE_APPROVALS
    return [
        _tool(s.lookup_tool, "Look an order up", amount=False),
        _tool(s.small_tool, f"Refund up to {s.limit} EUR", amount=True),
        _tool(s.held_tool, "Refund any amount (held for approval by the gateway)", amount=True),
        _tool(UNLISTED_TOOL, "Close the customer's account", amount=False),
    ]


def _text_result(text: str, *, error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": error}


def _rpc_answer(rpc_id: object, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "result": result}


def _rpc_error(rpc_id: object, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}}


@dataclass
class Payments:
    """The ``payments`` MCP tool server behind the gateway (module docstring).

    ``calls`` lists every ``tools/call`` it accepted (past the gateway check),
    as (tool, arguments); ``received`` counts every request that reached it.
    """

    gateway_identity: str
    gateway_keys: KeySet
    anchors: TrustAnchors
    received: int = 0
    callers: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def count(self, tool: str, order: str) -> int:
        """How many ``tool`` calls for ``order`` payments carried out or refused itself."""
        return sum(1 for name, args in self.calls if name == tool and args.get("order") == order)

    async def _handle(self, request: web.Request) -> web.Response:
        self.received += 1
        body = await request.read()
        try:
            seen = check_gateway_request(
                request,
                body,
                gateway_identity=self.gateway_identity,
                gateway_keys=self.gateway_keys,
                anchors=self.anchors,
            )
            with translating():
                message = loads_object(body)
        except BatonError as exc:
            error = render_error(exc, rpc_id=None, trace_id=secrets.token_hex(16))
            return web.Response(status=exc.http_status, body=error, content_type="application/json")
        self.callers.add(seen.caller)
        method, rpc_id = message.get("method"), message.get("id")
        if method == "initialize":
            session = secrets.token_urlsafe(18)
            self.sessions.add(session)
            result = {
                "protocolVersion": MCP_VERSION,
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "payments", "version": "1.0"},
            }
            return web.json_response(
                _rpc_answer(rpc_id, result), headers={"Mcp-Session-Id": session}
            )
        if request.headers.get("mcp-session-id") not in self.sessions:
            return web.json_response(_rpc_error(rpc_id, -32600, "unknown session"), status=404)
        if "id" not in message:  # a notification (notifications/initialized)
            return web.Response(status=202)
        if method == "tools/list":
            return web.json_response(_rpc_answer(rpc_id, {"tools": _tools()}))
        if method == "tools/call":
            params = message.get("params")
            params = params if isinstance(params, dict) else {}
            name, arguments = params.get("name"), params.get("arguments")
            if isinstance(name, str) and isinstance(arguments, dict):
                self.calls.append((name, arguments))
                return web.json_response(_rpc_answer(rpc_id, _call(name, arguments)))
            return web.json_response(_rpc_error(rpc_id, -32602, "name and arguments"))
        return web.json_response(_rpc_error(rpc_id, -32601, f"no method {method!r}"))


def _call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """What a tool answers; ``refund_small`` keeps to the limit whoever asks."""
    s = SAMPLE_APPROVALS
    order, amount = arguments.get("order"), arguments.get("amount")
    if name == s.lookup_tool:
        return _text_result(f"order {order}: 2 items, paid 310 EUR, delivered")
    if name in (s.small_tool, s.held_tool):
        if not isinstance(amount, int | float) or isinstance(amount, bool) or amount <= 0:
            return _text_result("amount must be a positive number", error=True)
        if name == s.small_tool and amount > s.limit:
            return _text_result(
                f"{s.small_tool} refunds at most {s.limit} EUR; use {s.held_tool}", error=True
            )
        return _text_result(f"refunded {amount} EUR on {order}")
    return _text_result(f"no tool {name!r}", error=True)


# ------------------------------------------------------------------ support
@dataclass
class _Mcp:
    """support's MCP client through the gateway: each request signed, over mTLS."""

    http: aiohttp.ClientSession
    agent: AgentMaterial
    url: str
    conversation: str
    session: str | None = None
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, notify: bool = False
    ) -> Answer:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if not notify:
            message["id"] = next(self.ids)
        if params is not None:
            message["params"] = params
        body = json.dumps(message, separators=(",", ":")).encode()
        extra = [("accept", "application/json, text/event-stream")]
        if self.session is not None:
            extra += [("mcp-session-id", self.session), ("mcp-protocol-version", MCP_VERSION)]
        sent = sign_request(
            self.agent, self.url, body, self.conversation, created=int(time.time()), extra=extra
        )
        return await post(self.http, self.url, sent)

    async def tool(self, name: str, arguments: dict[str, Any]) -> Answer:
        return await self.send("tools/call", {"name": name, "arguments": arguments})


def _message(answer: Answer) -> dict[str, Any]:
    try:
        return loads_object(answer.body)
    except KeysError:
        return {}


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _result(answer: Answer, what: str) -> dict[str, Any]:
    """The JSON-RPC result of a 200 answer, or :class:`DemoFailed`."""
    result = _message(answer).get("result")
    if answer.status != 200 or not isinstance(result, dict):
        raise DemoFailed(f"demo: {what} answered {answer.status} {answer.code}")
    return result


def _text(result: dict[str, Any]) -> tuple[str, bool]:
    content = result.get("content")
    first = content[0] if isinstance(content, list) and content else {}
    text = first.get("text") if isinstance(first, dict) else None
    return str(text), bool(result.get("isError"))


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))


def _run_baton(argv: Sequence[str]) -> tuple[int, str, str]:
    """``baton argv`` in process (its own event loop, in this worker thread):
    exit status, stdout, stderr."""
    from gateway.cli import main  # noqa: PLC0415 - gateway.cli imports the demo

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0) if not isinstance(exc.code, str) else 2
    return code, out.getvalue(), err.getvalue()


def _shortened(lines: list[str]) -> list[str]:
    """``inbox show`` output with only the transcript's last entry (the held call):
    the earlier entries and the message bodies are counted, not printed."""
    kept: list[str] = []
    entries: list[str] = []
    bodies = 0
    in_transcript = False
    for line in lines:
        if line.startswith("transcript ("):
            in_transcript = True
            kept.append(line)
            continue
        if in_transcript and line.startswith(" "):
            if line.startswith("      "):
                bodies += 1
            else:
                entries.append(line)
            continue
        if in_transcript:
            in_transcript = False
            if len(entries) > 1:
                kept.append(
                    f"  ({len(entries) - 1} earlier entries and {bodies} lines of message "
                    "bodies left out here; the command prints them)"
                )
            kept.extend(entries[-1:])
        kept.append(line)
    return kept


@dataclass
class Refunds:
    """support, payments and the operator's CLI, on the running gateway."""

    folder: DataFolder
    support: AgentMaterial
    payments: Payments
    http: aiohttp.ClientSession
    gateway_url: str
    operator_url: str
    p: Printer
    conversation: str = field(default_factory=lambda: "refund-" + secrets.token_hex(6))
    order: str = field(default_factory=lambda: "A-" + secrets.token_hex(3).upper())

    @property
    def root(self) -> Path:
        return self.folder.root

    async def run(self) -> str:
        """The whole second part; the handoff's id."""
        s, p = SAMPLE_APPROVALS, self.p
        mcp = _Mcp(
            self.http, self.support, f"{self.gateway_url}/u/{s.upstream}/mcp", self.conversation
        )
        p.say("")
        p.say(
            f"{s.caller} -> gateway -> {s.upstream} (MCP tools): refunds up to {s.limit} EUR "
            f"go through, a larger one waits for a person"
        )
        p.say(f"  conversation {self.conversation}, order {self.order}")
        await self._start(mcp)
        await self._small_refunds(mcp)
        bundle_id = await self._held(mcp)
        await self._operator(bundle_id)
        await self._retries(mcp)
        await self._export(bundle_id)
        return bundle_id

    async def _start(self, mcp: _Mcp) -> None:
        s, p = SAMPLE_APPROVALS, self.p
        offer = {
            "protocolVersion": MCP_VERSION,
            "capabilities": {},
            "clientInfo": {"name": s.caller, "version": "1.0"},
        }
        answer = await mcp.send("initialize", offer)
        result = _result(answer, "initialize")
        mcp.session = answer.header("mcp-session-id")
        expect(mcp.session is not None, "initialize gave no Mcp-Session-Id")
        notified = await mcp.send("notifications/initialized", notify=True)
        expect(notified.status == 202, f"notifications/initialized answered {notified.status}")
        expect(self.support.identity in self.payments.callers, "payments did not see support")
        p.ok(
            f"MCP session with {s.upstream} ({result.get('protocolVersion')}): initialize and "
            f"notifications/initialized; the gateway bound the session to {s.caller}"
        )
        listed = _result(await mcp.send("tools/list"), "tools/list").get("tools")
        names = [t.get("name") for t in listed] if isinstance(listed, list) else []
        expect(
            names == list(s.tools),
            f"tools/list showed {names}, expected {list(s.tools)} ({UNLISTED_TOOL} filtered out)",
        )
        p.ok(
            f"tools/list: {s.caller} sees {', '.join(names)}; the gateway filtered out "
            f"{UNLISTED_TOOL} (not in its policy)"
        )

    async def _small_refunds(self, mcp: _Mcp) -> None:
        s, p, order = SAMPLE_APPROVALS, self.p, self.order
        text, error = _text(_result(await mcp.tool(s.lookup_tool, {"order": order}), "lookup"))
        expect(not error and order in text, f"{s.lookup_tool} answered {text!r}")
        p.ok(f"{s.lookup_tool} {order} -> {text!r}")
        small = {"order": order, "amount": SMALL_AMOUNT}
        text, error = _text(_result(await mcp.tool(s.small_tool, small), s.small_tool))
        expect(
            not error and self.payments.count(s.small_tool, order) == 1,
            f"{s.small_tool} of {SMALL_AMOUNT} answered {text!r}",
        )
        p.ok(
            f"refund of {SMALL_AMOUNT} EUR: at most {s.limit}, so {s.caller} uses {s.small_tool}, "
            f"which needs no approval -> {text!r}"
        )
        dodge = {"order": order, "amount": LARGE_AMOUNT}
        text, error = _text(_result(await mcp.tool(s.small_tool, dodge), s.small_tool))
        expect(error, f"{s.small_tool} of {LARGE_AMOUNT} was carried out: {text!r}")
        p.ok(
            f"{s.small_tool} of {LARGE_AMOUNT} EUR (dodging the gate) is refused by "
            f"{s.upstream} itself -> {text!r}"
        )

    async def _held(self, mcp: _Mcp) -> str:
        s, p = SAMPLE_APPROVALS, self.p
        arguments = {"order": self.order, "amount": LARGE_AMOUNT}
        before = self.payments.received
        answer = await mcp.tool(s.held_tool, arguments)
        error = _dict(_message(answer).get("error"))
        handoff = _dict(_dict(error.get("data")).get("baton"))
        expect(
            (answer.status, answer.code) == (403, "approval_required")
            and handoff.get("queue") == s.queue
            and str(handoff.get("handoff", "")).startswith("hb_"),
            f"{s.held_tool} of {LARGE_AMOUNT} answered {answer.status} {answer.code}, "
            "expected 403 approval_required naming a handoff",
        )
        bundle_id = str(handoff["handoff"])
        p.ok(
            f"refund of {LARGE_AMOUNT} EUR: over {s.limit}, so {s.caller} calls {s.held_tool}, "
            f"which [[policy.require_approval]] holds -> held: {answer.status} {answer.code}"
        )
        p.say(f"    handoff {bundle_id} in queue {s.queue} ({handoff.get('status')})")
        p.say(
            f"    the answer, a JSON-RPC error in MCP {MCP_VERSION} (2026-07-28 clients get an "
            f"input_required result): {error.get('code')} {error.get('message')!r}"
        )
        p.say(f"    error.data.baton = {_compact(handoff)}")
        expect(
            self.payments.received == before and self.payments.count(s.held_tool, self.order) == 0,
            f"the held {s.held_tool} reached {s.upstream}",
        )
        p.ok(f"{s.upstream} received no {s.held_tool} call: the call waits in the gateway")
        return bundle_id

    async def _baton(self, argv: Sequence[str], shown: Sequence[str]) -> list[str]:
        """Run ``baton argv`` in process; print ``baton shown`` and return stdout's lines."""
        self.p.say(f"  $ {shlex.join(['baton', *shown])}")
        code, out, err = await asyncio.wait_for(
            asyncio.to_thread(_run_baton, argv), timeout=CLI_TIMEOUT_S
        )
        expect(code == 0, f"'baton {shlex.join(shown)}' exited {code}: {err.strip()}")
        return out.splitlines()

    async def _inbox(self, *command: str) -> list[str]:
        s = SAMPLE_APPROVALS
        where = ["--dir", str(self.root)]
        who = ["--operator", s.operator]
        return await self._baton(
            ["inbox", *where, "--url", self.operator_url, *who, *command],
            ["inbox", *where, *who, *command],
        )

    def _echo(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.p.say(("      " + line).rstrip())

    async def _operator(self, bundle_id: str) -> None:
        s, p = SAMPLE_APPROVALS, self.p
        p.say("")
        p.say(f"{s.operator} handles it from the CLI here (the web inbox is at the end).")
        p.say(
            f"The demo runs these commands itself, adding --url {self.operator_url} (its "
            "operator listener); against 'baton serve' they find gateway.operator_listen:"
        )
        listed = await self._inbox("list", "--status", "queued")
        self._echo(listed)
        expect(
            any(bundle_id in line and "queued" in line for line in listed),
            f"inbox list does not show {bundle_id} queued",
        )
        claimed = await self._inbox("claim", bundle_id)
        self._echo(claimed)
        expect(
            bool(claimed) and claimed[0].startswith(f"{bundle_id}: claimed by operator:"),
            f"inbox claim did not claim {bundle_id}",
        )
        shown = await self._inbox("show", bundle_id)
        self._echo(_shortened(shown))
        text = "\n".join(shown)
        expect(
            "verified    decrypted with your key" in text
            and f"action      tool_call {s.upstream}/{s.held_tool}" in text
            and f'"amount": {LARGE_AMOUNT}' in text,
            f"inbox show did not show the verified {s.held_tool} of {LARGE_AMOUNT}",
        )
        decided = await self._inbox("decide", bundle_id, "approve")
        self._echo(decided)
        expect(
            bool(decided) and decided[0].startswith(f"{bundle_id}: approve recorded"),
            f"inbox decide did not record the approval of {bundle_id}",
        )

    async def _retries(self, mcp: _Mcp) -> None:
        s, p, order = SAMPLE_APPROVALS, self.p, self.order
        arguments = {"order": order, "amount": LARGE_AMOUNT}
        p.say("")
        p.say(f"{s.caller} retries the refund of {LARGE_AMOUNT} EUR (the same call):")
        before = self.payments.received
        text, error = _text(_result(await mcp.tool(s.held_tool, arguments), "the approved retry"))
        passed = self.payments.count(s.held_tool, order)
        expect(
            not error and passed == 1 and self.payments.received == before + 1,
            f"the approved retry: {text!r}, {passed} {s.held_tool} call(s) at {s.upstream}",
        )
        p.ok(f"approved: it passed -> {text!r}; {s.upstream} received it once")
        again = await mcp.tool(s.held_tool, arguments)
        passed = self.payments.count(s.held_tool, order)
        expect(
            (again.status, again.code) == (403, "approval_refused")
            and passed == 1
            and self.payments.received == before + 1,
            f"a second retry answered {again.status} {again.code}; {s.upstream} saw {passed}",
        )
        p.ok(
            f"a second retry is refused: {again.status} {again.code} (an approval is used "
            f"once); {s.upstream} still received it once"
        )

    async def _export(self, bundle_id: str) -> None:
        s, p = SAMPLE_APPROVALS, self.p
        exports = self.folder.data / "exports"
        exports.mkdir(mode=0o700, exist_ok=True)
        target = exports / f"{bundle_id}.json"
        p.say("")
        p.say("The handoff's record, exported and verified offline:")
        shown = await self._inbox("show", bundle_id, "--export", str(target))
        start = next((i for i, line in enumerate(shown) if line.startswith("lifecycle (")), 0)
        self._echo([shown[0], *shown[start:]])
        key = self.folder.operator(s.operator) / "encryption.jwks"
        argv = ["verify", str(target), "--operator-key", str(key), "--dir", str(self.root)]
        report = await self._baton(argv, argv)
        self._echo(report)
        text = "\n".join(report)
        expect(
            bool(report)
            and report[0].startswith(f"{bundle_id}: ok (handoff export")
            and "queued -> claimed -> decided -> delivered -> acknowledged" in text
            and f"approve by operator:{s.operator}" in text,
            f"baton verify of {target} did not verify the whole lifecycle",
        )
