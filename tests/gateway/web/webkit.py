"""A real gateway with its operator listener for the web-inbox tests.

* :func:`make_folder` - a ``baton init`` data folder with agents ``support``,
  ``other`` and ``assistant`` and operators ``alice`` and ``bob`` (queue
  ``refunds``) and ``carol`` (queue ``disputes``); their one-time passwords.
  Made once per test module (scrypt at 128 MiB is slow on purpose).
* :func:`serve_web` - the data plane (mTLS) and the operator listener (TLS)
  in this process, on free ports, with an injected :class:`Clock` and the
  test's own store (SQLite in the test's folder, or a Redis prefix); with
  ``a2a=True`` also the ``assistant`` A2A agent (a2a-sdk, mTLS), so agents
  can talk and then escalate through the real inbox path.
* :class:`Browser` - what a browser sends: its own cookie handling (none
  implicit), ``Origin`` of the listener, the session's CSRF token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import web
from multidict import CIMultiDictProxy

from adapters.agent import RequestSigner
from gateway.app import HANDOFFS, STORES, AppOptions, gateway_app, operator_app
from gateway.config import parse
from gateway.devdata import DataFolder, init_data_folder, write_operator
from gateway.handoffs import Handoffs
from gateway.metrics import Metrics
from gateway.runtime import load_runtime
from gateway.stores import Stores
from gateway.tls import operator_context, server_context
from gateway.web.sessions import COOKIE_NAME
from gateway.web.webapp import WEB_INBOX, WebInbox
from protocol.audit import AuditEvent
from protocol.identity import gateway_id
from protocol.operator import COMMAND_MEDIA_TYPE, make_command_at, sign_command
from protocol.ports import InboxRecord
from tests.gateway._harness import TRUST_DOMAIN, agent_context, free_port
from tests.interop.a2a_peers import JSONRPC, fetch_card, send_text
from tests.interop.conftest import _a2a_builder, serve_upstream
from tests.interop.handoff_kit import handoff_message

AGENTS = ("support", "other", "assistant")
#: operator -> the queues it serves.
OPERATORS: Mapping[str, tuple[str, ...]] = {
    "alice": ("refunds",),
    "bob": ("refunds",),
    "carol": ("disputes",),
}
AUDIENCE = str(gateway_id(TRUST_DOMAIN, "gw1"))
#: Long enough for any wait in these tests; every wait is bounded by it.
WAIT_S = 20.0


@dataclass
class Clock:
    """The gateway's injected clock (``AppOptions.clock``)."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Made:
    folder: DataFolder
    passwords: Mapping[str, str]


def make_folder(root: Path) -> Made:
    folder = init_data_folder(
        root, trust_domain=TRUST_DOMAIN, force=False, now=dt.datetime.now(dt.UTC),
        agents=AGENTS, approvals=False,
    )  # fmt: skip
    passwords = {
        name: write_operator(folder, name, now=dt.datetime.now(dt.UTC)) for name in OPERATORS
    }
    return Made(folder, passwords)


def config_text(
    *, port: int, operator_port: int, a2a_port: int, store: str, inbox: str = ""
) -> str:
    operators = "".join(
        f'\n[[operators]]\nname = "{name}"\nqueues = {json.dumps(list(queues))}\n'
        for name, queues in OPERATORS.items()
    )
    return f"""
trust_domain = "{TRUST_DOMAIN}"

[gateway]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{free_port()}"
operator_listen = "127.0.0.1:{operator_port}"
drain_timeout_s = 5

[store]
{store}

[inbox]
{inbox}

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

[[policy.allow]]
caller = "other"
upstream = "assistant"
methods = ["*"]

[[queues]]
name = "refunds"
escalate_from = ["support", "other"]

[[queues]]
name = "disputes"
escalate_from = ["support"]
{operators}"""


@dataclass
class WebGateway:
    made: Made
    scratch: Path
    app: web.Application
    operators: web.Application
    port: int
    operator_port: int
    clock: Clock

    @property
    def folder(self) -> DataFolder:
        return self.made.folder

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.operator_port}"

    @property
    def origin(self) -> str:
        return self.url

    @property
    def stores(self) -> Stores:
        return self.app[STORES]

    @property
    def handoffs(self) -> Handoffs:
        return self.app[HANDOFFS]

    @property
    def inbox(self) -> WebInbox:
        return self.operators[WEB_INBOX]

    async def audit_events(self) -> list[AuditEvent]:
        return list(await self.stores.audit.read())

    def browser(self) -> Browser:
        return Browser(self)

    def agent_http(self, name: str) -> httpx.AsyncClient:
        """A signed ``httpx`` client with agent ``name``'s certificate."""
        agent = self.folder.load_agent(TRUST_DOMAIN, name)
        return httpx.AsyncClient(
            verify=agent_context(self.folder, agent, self.scratch),
            auth=RequestSigner(agent.signing.active),
            timeout=httpx.Timeout(10.0, read=30.0),
        )

    async def converse(self, agent: str, context_id: str) -> None:
        """``agent`` talks to the ``assistant`` A2A agent in ``context_id``."""
        async with self.agent_http(agent) as http:
            card = await fetch_card(http, f"{self.base}/u/assistant")
            await send_text(
                http, card, "refund o-77 please", binding=JSONRPC, context_id=context_id
            )

    async def escalate(self, agent: str, queue: str, key: str, context_id: str) -> dict[str, Any]:
        """A2A ``SendMessage`` to the inbox agent of ``queue``; the task."""
        async with self.agent_http(agent) as http:
            response = await http.post(
                f"{self.base}/a2a/inbox/{queue}",
                json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                      "params": {"message": handoff_message(key, context_id)}},
                headers={"a2a-version": "1.0"},
            )  # fmt: skip
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()["result"]["task"]
        return task

    def command(self, signer: str, op: str, *, queue: str, **fields: Any) -> str:
        """A fresh command signed by operator ``signer`` (claims to be ``signer``)."""
        material = self.folder.load_operator(signer)
        made = make_command_at(
            op,  # type: ignore[arg-type]
            operator=material.identity, audience=AUDIENCE, queue=queue, now=self.clock(),
            **fields,
        )  # fmt: skip
        return sign_command(made, material.signing.active)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def set_cookies(self) -> list[str]:
        return self.headers.getall("Set-Cookie", [])


class Browser:
    """One browser profile: a cookie only when the test sets one."""

    def __init__(self, gateway: WebGateway) -> None:
        self.gateway = gateway
        context = ssl.create_default_context(cafile=str(gateway.folder.ca_cert))
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=WAIT_S),
        )
        self.token: str | None = None
        self.csrf: str | None = None

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._http.close()

    def _headers(self, extra: Mapping[str, str] | None, *, origin: bool) -> dict[str, str]:
        headers = {}
        if origin:
            headers["Origin"] = self.gateway.origin
        if self.token is not None:
            headers["Cookie"] = f"{COOKIE_NAME}={self.token}"
        headers.update(extra or {})
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        origin: bool = True,
    ) -> Answer:
        async with self._http.request(
            method, self.gateway.url + path, data=body,
            headers=self._headers(headers, origin=origin and method != "GET"),
            allow_redirects=False,
        ) as response:  # fmt: skip
            return Answer(response.status, response.headers, await response.read())

    async def get(self, path: str, **kwargs: Any) -> Answer:
        return await self.request("GET", path, **kwargs)

    async def login(
        self,
        name: str,
        password: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        origin: bool = True,
    ) -> Answer:
        """POST the login; on 200 keep the new cookie and CSRF token."""
        password = self.gateway.made.passwords[name] if password is None else password
        answer = await self.request(
            "POST", "/inbox/session/login",
            body=json.dumps({"name": name, "password": password}).encode(),
            headers={"Content-Type": "application/json", **(headers or {})}, origin=origin,
        )  # fmt: skip
        if answer.status == 200:
            [cookie] = answer.set_cookies
            self.token = cookie.split(";", 1)[0].split("=", 1)[1]
            self.csrf = answer.json()["csrf"]
        return answer

    async def post(self, path: str, *, body: bytes = b"", csrf: str | None = "session",
                   headers: Mapping[str, str] | None = None, **kwargs: Any) -> Answer:  # fmt: skip
        """A POST with the session's CSRF token (``csrf=None``: none; or this value)."""
        sent = dict(headers or {})
        token = self.csrf if csrf == "session" else csrf
        if token is not None:
            sent["X-Baton-CSRF"] = token
        return await self.request("POST", path, body=body, headers=sent, **kwargs)

    async def command(
        self, token: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> Answer:
        """POST one signed command to ``/inbox/web/command``."""
        return await self.post(
            "/inbox/web/command", body=token.encode(),
            headers={"Content-Type": COMMAND_MEDIA_TYPE, **(headers or {})}, **kwargs,
        )  # fmt: skip

    @asynccontextmanager
    async def events(self) -> AsyncIterator[EventStream]:
        async with self._http.get(
            self.gateway.url + "/inbox/web/events", headers=self._headers(None, origin=False),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=WAIT_S),
        ) as response:  # fmt: skip
            yield EventStream(response)


class EventStream:
    """Reads ``text/event-stream`` blocks (WHATWG HTML s9.2.6)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []

    @property
    def status(self) -> int:
        return self.response.status

    async def next_line(self) -> str | None:
        """The next line, without its end; None at the end of the stream."""
        raw = await self.response.content.readline()
        return None if not raw else raw.decode("utf-8").rstrip("\r\n")

    async def next_block(self) -> dict[str, str] | None:
        """The next event's fields (comments kept aside); None at the end."""
        fields: dict[str, str] = {}
        while True:
            line = await self.next_line()
            if line is None:
                return None
            if not line:
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")

    async def snapshot(self, *, timeout: float = WAIT_S) -> dict[str, Any]:
        """The next ``queue`` event's data, within ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            block = await self.next_block()
        assert block is not None, "the stream ended"
        assert block["event"] == "queue"
        data: dict[str, Any] = json.loads(block["data"])
        return data

    async def ended(self, *, timeout: float = WAIT_S) -> bool:
        """True once the server ends the stream (within ``timeout``)."""
        async with asyncio.timeout(timeout):
            while (block := await self.next_block()) is not None:
                assert block.get("event") == "queue"
        return True


async def _start(runner: web.AppRunner, port: int, context: ssl.SSLContext) -> None:
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()


@asynccontextmanager
async def serve_web(
    made: Made,
    scratch: Path,
    *,
    store: str,
    clock: Clock | None = None,
    inbox: str = "",
    a2a: bool = False,
    poll_s: float | None = None,
) -> AsyncIterator[WebGateway]:
    """The gateway of ``made`` with its operator listener (module docstring)."""
    scratch.mkdir(parents=True, exist_ok=True)
    clock = clock or Clock()
    async with AsyncExitStack() as stack:
        a2a_port = free_port()
        if a2a:
            holder: dict[str, Any] = {}
            a2a_port, _seen = await stack.enter_async_context(
                serve_upstream(made.folder, "assistant", _a2a_builder(holder, None), scratch)
            )
        port, operator_port = free_port(), free_port()
        text = config_text(
            port=port, operator_port=operator_port, a2a_port=a2a_port, store=store, inbox=inbox
        )
        runtime = load_runtime(parse(text), made.folder.root)
        app = gateway_app(runtime, Metrics(), AppOptions(clock=clock, sweep_interval_s=0))
        runner = web.AppRunner(app, access_log=None)
        await _start(
            runner, port,
            server_context(cert_file=runtime.cert_file, key_file=runtime.key_file,
                           ca_file=runtime.ca_file, require_client_cert=True),
        )  # fmt: skip
        stack.push_async_callback(runner.cleanup)
        operators = operator_app(app)
        operator_runner = web.AppRunner(operators, access_log=None, shutdown_timeout=5)
        await _start(
            operator_runner, operator_port,
            operator_context(cert_file=runtime.cert_file, key_file=runtime.key_file),
        )  # fmt: skip
        stack.push_async_callback(operator_runner.cleanup)
        if poll_s is not None:
            app[HANDOFFS].poll_s = poll_s
        yield WebGateway(made, scratch, app, operators, port, operator_port, clock)


def sqlite_store(path: Path) -> str:
    return f'kind = "sqlite"\npath = "{path}"'


def stored_record(queue: str, now: float) -> InboxRecord:
    """A queued record as another gateway stores it (ciphertext stand-in: the
    stream reads only the clear terms)."""
    terms = {"allowed_decisions": ["approve", "reject"], "args_digest": None,
             "trigger": "authorization", "priority": 0, "reason_code": "refund_over_limit",
             "gated": None}  # fmt: skip
    sealed = {"jwe": {"ciphertext": "opaque"}, "reveals": None, "terms": terms}
    return InboxRecord(
        bundle_id="hb_" + secrets.token_urlsafe(24), queue=queue, conversation="a2a:elsewhere",
        idempotency_key=secrets.token_hex(8), origin="spiffe://baton.local/agent/support",
        status="queued", version=1, bundle_digest="sha256:" + "0" * 64,
        sealed_bundle=json.dumps(sealed), created_at=now, resolve_by=now + 3600,
    )  # fmt: skip
