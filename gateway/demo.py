"""``baton demo``: the real data plane, end to end, on the dev data folder.

Everything runs in this process, on 127.0.0.1, over real sockets and TLS 1.3
with client certificates, on the store ``baton.toml`` names (after
``baton init``: SQLite in ``.baton/baton.db``):

* **billing** is a real upstream agent: an aiohttp HTTPS server with
  billing's certificate that admits only the gateway's client certificate,
  verifies the gateway's RFC 9421 signature (key from
  ``.baton/gateway/jwks.json``), reads the ``Baton-Caller`` identity that
  signature covers, opens the capsule it was sent and answers JSON-RPC.
* **the gateway** is the one ``baton serve`` runs (``load_runtime``,
  ``gateway_app``, ``operator_app``, ``server_context``), built from
  ``baton.toml`` with its listen and operator addresses and the ``billing``
  and ``payments`` upstream URLs moved to free ports; the file itself is not
  changed.
* **support** sends a signed JSON-RPC ``SendMessage`` carrying a capsule only
  billing can open, and verifies the gateway's signature on the answer.
* Then seven attacks go to the same gateway: a replay, a body changed in
  transit, an unsigned request, a method the policy does not list, a request
  signed for another gateway, one signed 61 s ago and a TLS client without a
  certificate. Each must be refused with its status and stable code (the
  last one in the handshake), and billing must receive none of them.
* Then, on the same gateway, the approval-gated refund of
  ``gateway/demo_handoff.py``: support talks MCP to the ``payments`` tool
  server; a refund over the limit is held for ``demo-operator``, who approves
  it with the real ``baton inbox`` commands (served by the gateway's operator
  listener, also on a free port); the approved call passes exactly once.
* Finally both conversations' hash chains and the audit chain are verified
  and the first conversation is traced from the store, the way ``baton
  transcript verify`` and ``baton trace`` do.

Each run uses fresh nonces and a new conversation. Every step is checked
against what the store, billing and the answers show; one that does not
behave as printed stops the demo with :class:`DemoFailed`, which ``baton``
prints as the reason before exiting 1.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from adapters.jsonrpc import render_error
from gateway.app import AppOptions, gateway_app, operator_app
from gateway.config import BatonConfig
from gateway.config import load as load_config
from gateway.demo_handoff import Payments, Refunds, require_approval_sample
from gateway.demo_kit import (
    Answer,
    DemoFailed,
    Printer,
    Sent,
    check_gateway_request,
    client_context,
    expect,
    listening_socket,
    port_of,
    post,
    quiet_logs,
    sign_request,
    start_site,
)
from gateway.devdata import SAMPLE_APPROVALS, AgentMaterial, DataFolder, reset_password
from gateway.inbox_client import operator_url
from gateway.inspect import trace_lines, verify_audit, verify_conversation
from gateway.metrics import Metrics
from gateway.runtime import Runtime, load_runtime
from gateway.stores import Stores
from gateway.tls import operator_context, server_context
from keys.errors import KeysError
from keys.files import load_jwks
from keys.httpsig import HttpRequest, HttpResponse, SignaturePolicy, verify
from keys.keyset import KeySet
from keys.strictjson import loads_object
from keys.x509 import TrustAnchors
from protocol.capsule import OpenedCapsule, open_capsule_at, seal_capsule_at
from protocol.directory import KeyDirectory
from protocol.errors import BatonError, InvalidRequest, translating
from protocol.transcript import TranscriptEntry

__all__ = ["DemoFailed", "run_demo"]

CALLER: Final = "support"
CALLEE: Final = "billing"
#: A method the ``baton init`` policy does not list for support -> billing.
UNLISTED_METHOD: Final = "CancelTask"
#: Where the "addressed to another gateway" attack was signed for.
OTHER_AUTHORITY: Final = "gw2.example:8443"
#: Column width of the attack names in the output.
WIDTH: Final = 45
#: What support demands of the gateway's signature on an answer.
RESPONSE_POLICY: Final = SignaturePolicy(
    required_components=frozenset({"@status", "content-digest", "@method;req", "@target-uri;req"})
)


# ------------------------------------------------------------------ billing
@dataclass(frozen=True, slots=True)
class _Seen:
    """What billing established about one request it accepted."""

    tls_peer: str
    gateway_kid: str
    caller: str
    capsule: OpenedCapsule


@dataclass
class _Billing:
    """The ``billing`` agent as a real upstream behind the gateway."""

    me: AgentMaterial
    gateway_identity: str
    gateway_keys: KeySet
    senders: KeyDirectory
    anchors: TrustAnchors
    received: int = 0
    seen: list[_Seen] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        self.received += 1
        body = await request.read()
        try:
            seen = self._check(request, body)
        except BatonError as exc:
            error = render_error(exc, rpc_id=None, trace_id=secrets.token_hex(16))
            return web.Response(status=exc.http_status, body=error, content_type="application/json")
        self.seen.append(seen)
        return web.json_response(_answer(seen.capsule, loads_object(body).get("id")))

    def _check(self, request: web.Request, body: bytes) -> _Seen:
        checked = check_gateway_request(
            request,
            body,
            gateway_identity=self.gateway_identity,
            gateway_keys=self.gateway_keys,
            anchors=self.anchors,
        )
        opened = open_capsule_at(
            _capsule_of(body),
            me=self.me.identity,
            my_keys=self.me.encryption,
            senders=self.senders,
            now=time.time(),
            conversation=request.headers.get("baton-conversation"),
            delivered_by=checked.caller,
        )
        return _Seen(checked.tls_peer, checked.gateway_kid, checked.caller, opened)


def _capsule_of(body: bytes) -> dict[str, Any]:
    """The capsule in an A2A ``SendMessage``: the message's one data part."""
    with translating():
        call = loads_object(body)
    try:
        capsule = call["params"]["message"]["parts"][0]["data"]
    except (KeyError, IndexError, TypeError):
        raise InvalidRequest("SendMessage without a data part") from None
    if not isinstance(capsule, dict):
        raise InvalidRequest("the data part is not a capsule")
    return capsule


def _answer(opened: OpenedCapsule, rpc_id: object) -> dict[str, Any]:
    payload = opened.payload if isinstance(opened.payload, dict) else {}
    text = f"refund of {payload.get('amount')} for order {payload.get('order')} approved"
    return {
        "jsonrpc": "2.0",
        "id": rpc_id,
        "result": {
            "role": "agent",
            "messageId": secrets.token_hex(8),
            "parts": [{"kind": "text", "text": text}],
        },
    }


# ------------------------------------------------------------------ support
def _rpc(method: str, params: dict[str, Any], rpc_id: int) -> bytes:
    call = {"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params}
    return json.dumps(call, separators=(",", ":")).encode()


def _send_message(capsule: dict[str, Any]) -> bytes:
    message = {
        "role": "user",
        "messageId": secrets.token_hex(8),
        "parts": [{"kind": "data", "data": capsule}],
    }
    return _rpc("SendMessage", {"message": message}, rpc_id=1)


# ------------------------------------------------------------------ the demo
@dataclass
class _Demo:
    """Everything one run needs, loaded from the data folder."""

    root: Path
    folder: DataFolder
    config: BatonConfig
    support: AgentMaterial
    billing: AgentMaterial
    gateway_keys: KeySet
    conversation: str = field(default_factory=lambda: "demo-" + secrets.token_hex(6))

    @classmethod
    def load(cls, root: Path) -> _Demo:
        folder = DataFolder(root)
        config = load_config(folder.config)
        _require_sample_setup(config)
        require_approval_sample(config, folder)
        td = config.trust_domain
        return cls(
            root=root,
            folder=folder,
            config=config,
            support=folder.load_agent(td, CALLER),
            billing=folder.load_agent(td, CALLEE),
            gateway_keys=load_jwks(folder.gateway / "jwks.json"),
        )

    def runtime(self, ports: _Ports) -> Runtime:
        """The gateway's runtime: ``baton.toml`` with its listeners and the billing and
        payments upstreams moved to free ports (in memory; the file is not changed)."""
        gateway = self.config.gateway.model_copy(
            update={
                "listen": f"127.0.0.1:{ports.gateway}",
                "operator_listen": f"127.0.0.1:{ports.operator}",
                "authorities": [],
            }
        )
        moved = {CALLEE: ports.billing, SAMPLE_APPROVALS.upstream: ports.payments}
        upstreams = [
            upstream.model_copy(update={"url": f"https://127.0.0.1:{moved[upstream.name]}"})
            if upstream.name in moved
            else upstream
            for upstream in self.config.upstreams
        ]
        config = self.config.model_copy(update={"gateway": gateway, "upstreams": upstreams})
        return load_runtime(config, self.root)

    def billing_agent(self, runtime: Runtime) -> _Billing:
        senders = KeyDirectory({self.support.identity: self.support.public_keys()})
        return _Billing(self.billing, runtime.identity, self.gateway_keys, senders, runtime.anchors)


def _require_sample_setup(config: BatonConfig) -> None:
    agents = {agent.name for agent in config.agents}
    upstreams = {upstream.name for upstream in config.upstreams}
    allowed = {
        method
        for rule in config.policy.allow
        if (rule.caller, rule.upstream) == (CALLER, CALLEE)
        for method in rule.methods
    }
    expect(
        {CALLER, CALLEE} <= agents and CALLEE in upstreams and bool({"SendMessage", "*"} & allowed),
        f"needs the sample setup of 'baton init': agents {CALLER} and {CALLEE}, an upstream "
        f"{CALLEE} and a policy rule letting {CALLER} call SendMessage on it",
    )


def _store_name(runtime: Runtime) -> str:
    if runtime.config.store.kind == "sqlite":
        return f"the SQLite store {runtime.store_path}"
    return "the Redis store (store.url in baton.toml)"


@dataclass(frozen=True, slots=True)
class _Ports:
    """The free loopback ports of one run (bound before anything starts)."""

    gateway: int
    billing: int
    payments: int
    operator: int


async def _run(root: Path, out: TextIO) -> None:
    demo = _Demo.load(root)
    p = Printer(out)
    with (
        listening_socket() as gateway_sock,
        listening_socket() as billing_sock,
        listening_socket() as payments_sock,
        listening_socket() as operator_sock,
    ):
        ports = _Ports(
            port_of(gateway_sock), port_of(billing_sock), port_of(payments_sock),
            port_of(operator_sock),
        )  # fmt: skip
        runtime = demo.runtime(ports)
        billing = demo.billing_agent(runtime)
        payments = Payments(runtime.identity, demo.gateway_keys, runtime.anchors)
        stores = await runtime.open_stores()
        try:
            async with AsyncExitStack() as running:
                await _start_upstream(demo, CALLEE, billing.app(), billing_sock, running)
                await _start_upstream(
                    demo, SAMPLE_APPROVALS.upstream, payments.app(), payments_sock, running
                )
                await _start_gateway(runtime, stores, gateway_sock, operator_sock, running)
                p.say(f"Baton demo: trust domain {demo.config.trust_domain}, data folder {root}")
                p.say(
                    f"  gateway {runtime.identity} on https://127.0.0.1:{ports.gateway} "
                    f"(TLS 1.3, client certificates, {_store_name(runtime)}); operator "
                    f"listener on https://127.0.0.1:{ports.operator}"
                )
                p.say(
                    f"  behind it: {CALLEE} agent on https://127.0.0.1:{ports.billing}, "
                    f"{SAMPLE_APPROVALS.upstream} MCP tool server on "
                    f"https://127.0.0.1:{ports.payments}"
                )
                p.say(f"  conversation {demo.conversation}")
                refunds = await _hop_attacks_and_refunds(
                    demo, stores, billing=billing, payments=payments, ports=ports, p=p
                )
            p.say("")
            p.say(f"gateway, {CALLEE} and {SAMPLE_APPROVALS.upstream} stopped.")
            await _verify_and_trace(demo, refunds, stores, p)
        finally:
            await stores.close()
    _next_steps(demo, runtime, refunds, p)


async def _start_upstream(
    demo: _Demo, name: str, app: web.Application, sock: socket.socket, running: AsyncExitStack
) -> None:
    """Agent ``name``'s own certificate; only clients with a certificate from the dev CA."""
    tls = demo.folder.agent(name)
    context = server_context(
        cert_file=tls / "tls.pem", key_file=tls / "tls.key", ca_file=demo.folder.ca_cert
    )
    await start_site(app, sock, context, running)


async def _start_gateway(
    runtime: Runtime,
    stores: Stores,
    sock: socket.socket,
    operator_sock: socket.socket,
    running: AsyncExitStack,
) -> None:
    """The data plane and the operator listener exactly as ``baton serve`` builds
    them, on the demo's stores."""
    app = gateway_app(runtime, Metrics(), AppOptions(stores=stores))
    context = server_context(
        cert_file=runtime.cert_file, key_file=runtime.key_file, ca_file=runtime.ca_file
    )
    await start_site(app, sock, context, running)
    operator = operator_context(cert_file=runtime.cert_file, key_file=runtime.key_file)
    await start_site(operator_app(app), operator_sock, operator, running)


async def _hop_attacks_and_refunds(
    demo: _Demo, stores: Stores, *, billing: _Billing, payments: Payments, ports: _Ports, p: Printer
) -> Refunds:
    """The hop and the attacks, then the approval-gated refund (gateway/demo_handoff.py)."""
    base = f"https://127.0.0.1:{ports.gateway}"
    url = f"{base}/u/{CALLEE}/a2a"
    connector = aiohttp.TCPConnector(ssl=client_context(demo.folder, demo.support))
    async with aiohttp.ClientSession(connector=connector) as session:
        live = _Live(demo, stores, billing, session, url, p)
        p.say("")
        p.say(f"{CALLER} -> gateway -> {CALLEE}: a signed SendMessage with a sealed capsule")
        sent = await live.hop()
        p.say("")
        p.say(f"Attacks on the same gateway (none may reach {CALLEE}):")
        await live.attacks(sent)
        refunds = Refunds(
            folder=demo.folder,
            support=demo.support,
            payments=payments,
            http=session,
            gateway_url=base,
            operator_url=f"https://127.0.0.1:{ports.operator}",
            p=p,
        )
        await refunds.run()
    return refunds


@dataclass(frozen=True, slots=True)
class _Attack:
    name: str
    sent: Sent
    status: int
    code: str


@dataclass(frozen=True, slots=True)
class _Live:
    """support's side of the demo, with the gateway and billing running."""

    demo: _Demo
    stores: Stores
    billing: _Billing
    session: aiohttp.ClientSession
    url: str
    p: Printer

    def sign(self, body: bytes, *, created: int) -> Sent:
        return sign_request(
            self.demo.support, self.url, body, self.demo.conversation, created=created
        )

    async def hop(self) -> Sent:
        """The legitimate call; then each claim about it, checked against the evidence."""
        demo, p = self.demo, self.p
        now = time.time()
        sent = self.sign(_send_message(_seal(demo, now)), created=int(now))
        answer = await post(self.session, self.url, sent)
        expect(answer.status == 200, f"SendMessage answered {answer.status} {answer.code}")
        entries = await self.stores.transcripts.read(demo.conversation)
        expect(len(entries) == 2, f"expected request and response recorded, not {len(entries)}")
        request, response = entries
        kid = demo.support.signing.active.kid
        expect(request.sender == demo.support.identity, f"gateway saw caller {request.sender}")
        p.ok(f"mTLS: the gateway authenticated the client certificate as {request.sender}")
        expect(request.verified and request.signer == kid, "request entry not marked verified")
        p.ok(
            f"gateway verified {CALLER}'s RFC 9421 signature (key {kid[:12]}...) and the "
            f"Content-Digest of the {len(sent.body)}-byte body"
        )
        p.ok(f"gateway claimed the signature's nonce {sent.nonce[:10]}... in the store: first use")
        accepted = await _accepted_event(self.stores, demo.support.identity)
        p.ok(
            f"policy allowed {CALLER} -> {CALLEE}: {request.method} "
            f"(audit event #{accepted} request.accepted)"
        )
        p.ok(
            f"transcript recorded: entry #{request.seq}, hash {request.hash[:23]}..., "
            "body encrypted at rest"
        )
        _billing_lines(demo, self.billing, p)
        _check_answer(demo, self.url, answer, response, p)
        return sent

    def _attacks(self, original: Sent) -> list[_Attack]:
        now = int(time.time())
        fresh = self.sign(original.body, created=now)
        tampered = fresh.body.replace(b'"user"', b'"admin"')
        unsigned = [
            (name, value)
            for name, value in original.headers
            if name not in ("signature-input", "signature")
        ]
        denied = _rpc(UNLISTED_METHOD, {"id": "task-1"}, rpc_id=2)
        # A copy signed for another gateway, presented here with its original Host.
        other = f"https://{OTHER_AUTHORITY}{urlsplit(self.url).path}"
        signed = sign_request(
            self.demo.support, other, original.body, self.demo.conversation, created=now
        )
        elsewhere = Sent([*signed.headers, ("host", OTHER_AUTHORITY)], signed.body, signed.nonce)
        late = self.demo.config.replay.window_s + 1
        return [
            _Attack("the same request replayed", original, 401, "replay_detected"),
            _Attack(
                "body changed in transit",
                Sent(fresh.headers, tampered, fresh.nonce),
                401,
                "digest_mismatch",
            ),
            _Attack(
                "unsigned request", Sent(unsigned, original.body, ""), 401, "signature_missing"
            ),
            _Attack(
                f"method the policy does not list ({UNLISTED_METHOD})",
                self.sign(denied, created=now),
                403,
                "policy_denied",
            ),
            _Attack(
                f"signed for another gateway ({OTHER_AUTHORITY})",
                elsewhere,
                401,
                "bad_audience",
            ),
            _Attack(
                f"request signed {late} s ago",
                self.sign(original.body, created=now - late),
                401,
                "stale",
            ),
        ]

    async def attacks(self, original: Sent) -> None:
        """Each attack must get its status and code from the gateway, and reach nobody."""
        p, billing = self.p, self.billing
        before = billing.received
        for attack in self._attacks(original):
            answer = await post(self.session, self.url, attack.sent)
            expect(
                (answer.status, answer.code) == (attack.status, attack.code),
                f"attack '{attack.name}' answered {answer.status} {answer.code}, "
                f"expected {attack.status} {attack.code}",
            )
            p.ok(f"attack: {attack.name:<{WIDTH}} -> refused: {answer.status} {answer.code}")
        reason = await _without_certificate(self.demo, self.url, original)
        name = "TLS client without a certificate"
        p.ok(f"attack: {name:<{WIDTH}} -> refused in the TLS handshake ({reason})")
        expect(billing.received == before, f"{billing.received - before} attack(s) reached billing")
        p.say(f"    {CALLEE} received {billing.received} request in all: none of the attacks")


def _seal(demo: _Demo, now: float) -> dict[str, Any]:
    return seal_capsule_at(
        {"order": "A-77", "amount": "120 EUR", "note": "customer asked for a refund"},
        sender=demo.support.identity,
        signing_key=demo.support.signing.active,
        recipients={demo.billing.identity: demo.billing.encryption.public()},
        conversation=demo.conversation,
        now=now,
    )


async def _accepted_event(stores: Stores, peer: str) -> int:
    head = await stores.audit.head()
    for event in reversed(await stores.audit.read(after_seq=max(-1, head.seq - 20))):
        if event.event == "request.accepted" and event.peer == peer:
            return event.seq
    raise DemoFailed("demo: no request.accepted audit event for the call")


def _billing_lines(demo: _Demo, billing: _Billing, p: Printer) -> None:
    expect(
        billing.received == 1 and len(billing.seen) == 1,
        f"{CALLEE} received {billing.received} request(s) and accepted {len(billing.seen)}",
    )
    seen = billing.seen[0]
    expect(seen.caller == demo.support.identity, f"{CALLEE} saw caller {seen.caller}")
    p.ok(
        f"{CALLEE} accepted the gateway's certificate ({seen.tls_peer}), verified its "
        f"signature (key {seen.gateway_kid[:12]}...) and saw caller {seen.caller}"
    )
    capsule = seen.capsule
    p.ok(
        f"{CALLEE} opened the capsule from {capsule.claims.iss}: "
        f"{json.dumps(capsule.payload, separators=(', ', ': '))}"
    )


def _check_answer(
    demo: _Demo, url: str, answer: Answer, entry: TranscriptEntry, p: Printer
) -> None:
    message = HttpResponse(answer.status, answer.headers, HttpRequest("POST", url, ()))
    try:
        verified = verify(message, demo.gateway_keys, RESPONSE_POLICY, body=answer.body)
    except KeysError as exc:
        raise DemoFailed(f"demo: the answer's signature did not verify: {exc}") from exc
    result = loads_object(answer.body).get("result")
    parts = result.get("parts") if isinstance(result, dict) else None
    text = parts[0].get("text") if isinstance(parts, list) and parts else None
    expect(entry.kind == "response" and entry.status == 200, "the answer was not recorded")
    p.ok(
        f"response recorded (entry #{entry.seq}) and signed by the gateway; {CALLER} verified "
        f"it (key {verified.keyid[:12]}..., .baton/gateway/jwks.json): {text!r}"
    )


async def _without_certificate(demo: _Demo, url: str, sent: Sent) -> str:
    """A TLS client with no certificate gets no HTTP answer at all."""
    connector = aiohttp.TCPConnector(ssl=client_context(demo.folder, None))
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            answer = await post(session, url, sent)
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}, no HTTP answer"
    raise DemoFailed(f"demo: a client without a certificate got HTTP {answer.status}")


async def _verify_and_trace(demo: _Demo, refunds: Refunds, stores: Stores, p: Printer) -> None:
    conv = demo.conversation
    report = await verify_conversation(stores.transcripts, conv)
    expect(report.records == 2, f"{conv} has {report.records} entries, expected 2")
    p.say("")
    p.say(f"transcript verify {conv}: ok, {report.records} entries, head {report.head.hash}")
    other = await verify_conversation(stores.transcripts, refunds.conversation)
    expect(other.records > 0, f"{refunds.conversation} was not recorded")
    p.say(
        f"transcript verify {refunds.conversation}: ok, {other.records} entries, "
        f"head {other.head.hash}"
    )
    audit = await verify_audit(stores.audit)
    p.say(f"audit verify: ok, {audit.records} events, head {audit.head.hash}")
    p.say(f"trace {conv}:")
    for line in trace_lines(await stores.transcripts.read(conv)):
        p.say(("  " + line).rstrip())


def _next_steps(demo: _Demo, runtime: Runtime, refunds: Refunds, p: Printer) -> None:
    where = runtime.store_path if runtime.config.store.kind == "sqlite" else "Redis"
    d, conv = demo.root, demo.conversation
    s = SAMPLE_APPROVALS
    urls = {u.name: u.url for u in demo.config.upstreams}
    gateway = demo.config.gateway
    p.say("")
    p.say(f"Everything above is stored in {where}. Look again with:")
    p.say(f"  baton trace {conv} --dir {d}")
    p.say(f"  baton transcript verify {conv} --dir {d}")
    p.say(f"  baton trace {refunds.conversation} --dir {d}")
    p.say(f"  baton audit verify --dir {d}")
    p.say(
        f"Run the gateway yourself: baton serve --dir {d} (listens on {gateway.listen}, "
        f"operators on {gateway.operator_listen}; expects {CALLEE} at {urls[CALLEE]} and "
        f"{s.upstream} at {urls[s.upstream]})"
    )
    p.say(
        f"Then work the queue as {s.operator}: baton inbox --dir {d} --operator {s.operator} "
        "list (claim, show, decide ID approve|edit|reject as above)"
    )
    _web_inbox(demo, p)


def _web_inbox(demo: _Demo, p: Printer) -> None:
    """How to open the web inbox, with a new one-time password for the sample
    operator (the one ``baton init`` printed may be long gone; only the new
    one's scrypt hash is stored)."""
    s = SAMPLE_APPROVALS
    d = demo.root
    password = reset_password(demo.folder, s.operator)
    keys = demo.folder.operator(s.operator)
    p.say("")
    p.say(f"Web inbox, once 'baton serve --dir {d}' runs: {operator_url(demo.config)}/inbox/")
    p.say(
        f"  your browser must trust the development CA {demo.folder.ca_cert} "
        "(or accept its certificate once)"
    )
    p.say(f"  sign in as {s.operator} with the one-time password {password}")
    p.say(f"  then import {keys / 'signing.jwks'} and {keys / 'encryption.jwks'} when it asks")
    p.say("  (the password is shown once and stored only as a scrypt hash)")


def run_demo(root: Path, out: TextIO) -> None:
    """Run the demo on the data folder at ``root``; raise :class:`DemoFailed` on any failure."""
    with quiet_logs():
        asyncio.run(_run(root, out))
