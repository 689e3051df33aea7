"""Real A2A peers built from the official ``a2a-sdk`` 1.3.0, for interop tests.

Everything protocol-shaped here comes from the SDK; this module only wires its
parts together so that a test can put the Baton gateway between a real SDK
server and a real SDK client.

* :func:`build_a2a_app` - an echo agent: an ``AgentExecutor`` subclass behind
  ``DefaultRequestHandler`` (``DefaultRequestHandlerV2`` in 1.3),
  ``InMemoryTaskStore`` and ``InMemoryPushNotificationConfigStore``, served by
  ``create_agent_card_routes`` (``/.well-known/agent-card.json``),
  ``create_jsonrpc_routes`` (``/``, v0.3 compat on) and ``create_rest_routes``
  (``/rest``, v0.3 compat on, so ``/rest/v1/...`` answers v0.3 REST too).
  :func:`control_of` returns its :class:`AgentControl`: the requests it
  received and the gate that holds ``wait:`` tasks open.
* Client helpers (:func:`fetch_card`, :func:`send_text`, :func:`get_task`,
  :func:`subscribe`, :func:`cancel_task`) drive the SDK's own client
  (``A2ACardResolver``, ``create_client``, ``ClientConfig``) over a
  caller-supplied ``httpx.AsyncClient``, so a test decides TLS material and
  auth. Results are normalised with ``MessageToDict``: one dict per
  ``StreamResponse`` (``{"task": ...}``, ``{"message": ...}``,
  ``{"statusUpdate": ...}`` or ``{"artifactUpdate": ...}``), camelCase keys as
  on the wire. SDK errors (``a2a.utils.errors.TaskNotFoundError`` and kin)
  propagate unchanged.
* v0.3: the SDK does ship a v0.3 client (``CompatJsonRpcTransport`` and
  ``CompatRestTransport``), chosen by ``ClientFactory`` when the card's
  interface says ``protocolVersion`` 0.3; :func:`as_v03_card` produces such a
  card so :func:`send_text` and friends speak v0.3. That client sends
  ``A2A-Version: 0.3``. :func:`send_v03` and :func:`get_task_v03` post the
  literal v0.3 bodies with *no* ``A2A-Version`` header, as a v0.3-era client
  does (an absent or empty header means 0.3, A2A v1.0 s3.2.6).
* :func:`serve_asgi` - uvicorn in the current event loop on a socket it binds
  itself, optionally TLS with a caller-built ``ssl.SSLContext``.

Wire facts worth knowing (A2A v1.0 s9 JSON-RPC binding, s11 HTTP+JSON binding,
checked against SDK 1.3.0):

* ``ClientFactory`` *mutates the caller's* ``httpx.AsyncClient``: it does
  ``headers.setdefault("A2A-Version", "1.0")`` on it. :func:`post_jsonrpc`
  strips the header per request when asked for no version.
* A v1.0 method without ``A2A-Version`` is treated as 0.3 and fails with
  ``-32009`` (VersionNotSupported). JSON-RPC errors are HTTP 200.
* A non-streaming ``SendMessage`` only returns when the task is terminal or
  interrupted; ``return_immediately=True`` returns the first ``Task`` instead,
  which is how a test gets the id of a ``wait:`` task it has not released.
* HTTP+JSON successes are ``application/a2a+json``; HTTP+JSON *errors* are
  ``application/json`` ``{"error": {"code": 404, "status": "NOT_FOUND",
  "message", "details": [ErrorInfo]}}``. A missing version there is 400
  ``FAILED_PRECONDITION`` / ``VERSION_NOT_SUPPORTED``.
* v0.3 JSON-RPC errors carry ``"data": null`` (v1.0: a list of ``ErrorInfo``).
  The SDK's v0.3 REST client maps an HTTP 404 to ``MethodNotFoundError``,
  not ``TaskNotFoundError``.
* REST ``SubscribeToTask`` is sent by the SDK as ``POST .../tasks/{id}:subscribe``
  with an empty body; ``CancelTask`` as ``POST .../tasks/{id}:cancel`` with
  ``{"id": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import httpx
import uvicorn
from a2a.client import A2ACardResolver, Client, ClientConfig, create_client
from a2a.helpers import new_task_from_user_message, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import (
    create_agent_card_routes,
    create_jsonrpc_routes,
    create_rest_routes,
)
from a2a.server.tasks import (
    BasePushNotificationSender,
    InMemoryPushNotificationConfigStore,
    InMemoryTaskStore,
    TaskUpdater,
)
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
)
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from keys import strictjson

__all__ = [
    "JSONRPC",
    "REST",
    "AgentControl",
    "Binding",
    "RecordedRequest",
    "RunningPeer",
    "as_v03_card",
    "build_a2a_app",
    "build_agent_card",
    "cancel_task",
    "control_of",
    "fetch_card",
    "get_task",
    "get_task_v03",
    "mtls_server_context",
    "open_client",
    "post_jsonrpc",
    "run_a2a_peer",
    "send_text",
    "send_v03",
    "serve_asgi",
    "set_push_config",
    "subscribe",
]

Binding = Literal["JSONRPC", "HTTP+JSON"]
JSONRPC: Binding = "JSONRPC"
REST: Binding = "HTTP+JSON"

#: Where the routes are mounted inside the app (the card advertises these under public_url).
JSONRPC_PATH = "/"
REST_PREFIX = "/rest"
CARD_PATH = "/.well-known/agent-card.json"

#: Largest response body the raw helpers parse.
_MAX_RESPONSE_BYTES = 1 << 20
_DEFAULT_WAIT = 5.0

Json = dict[str, Any]


# --------------------------------------------------------------------------- recording


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One HTTP request as the agent's ASGI app saw it (after any proxy).

    ``headers`` keeps order and duplicates, names lowercased (ASGI gives them
    so). ``body`` grows while the app reads the request, so read it after the
    response arrived.
    """

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body_buffer: bytearray = field(default_factory=bytearray, repr=False)

    @property
    def body(self) -> bytes:
        return bytes(self.body_buffer)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]


class _RecordRequests:
    """Pure ASGI middleware appending a :class:`RecordedRequest` per HTTP request."""

    def __init__(self, app: ASGIApp, sink: list[RecordedRequest]) -> None:
        self._app = app
        self._sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        record = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"].decode("latin-1"),
            headers=tuple(
                (key.decode("latin-1"), value.decode("latin-1")) for key, value in scope["headers"]
            ),
        )
        self._sink.append(record)

        async def recording_receive() -> ASGIMessage:
            message = await receive()
            if message["type"] == "http.request":
                record.body_buffer.extend(message.get("body", b""))
            return message

        await self._app(scope, recording_receive, send)


# --------------------------------------------------------------------------- agent


@dataclass
class AgentControl:
    """Test-side handle on one echo agent (mutable on purpose: it is a control panel).

    ``public_url`` is what the served card advertises; change it after the
    gateway's port is known and the next card fetch reflects it.
    """

    public_url: str
    name: str = "assistant"
    requests: list[RecordedRequest] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    _gates: dict[str, asyncio.Event] = field(default_factory=dict, repr=False)
    _parked: dict[str, asyncio.Event] = field(default_factory=dict, repr=False)

    def release(self, task_id: str) -> None:
        """Let the ``wait:`` task ``task_id`` complete (safe before it parks)."""
        self._gate(task_id).set()

    def release_all(self) -> None:
        for gate in self._gates.values():
            gate.set()

    async def wait_parked(self, task_id: str, timeout: float = _DEFAULT_WAIT) -> None:
        """Return once the ``wait:`` task has emitted its artifact and is waiting."""
        await asyncio.wait_for(self._parked_event(task_id).wait(), timeout)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path == path]

    def _gate(self, task_id: str) -> asyncio.Event:
        return self._gates.setdefault(task_id, asyncio.Event())

    def _parked_event(self, task_id: str) -> asyncio.Event:
        return self._parked.setdefault(task_id, asyncio.Event())


def _first_text(message: Message | None) -> str:
    if message is None:
        return ""
    return next((part.text for part in message.parts if part.HasField("text")), "")


def _split_mode(text: str) -> tuple[str, str]:
    """``("wait", rest)`` / ``("input", rest)`` for those prefixes, else ``("", text)``."""
    for mode in ("wait", "input"):
        if text.startswith(mode + ":"):
            return mode, text[len(mode) + 1 :]
    return "", text


class EchoExecutor(AgentExecutor):
    """Echo agent; behaviour chosen by the first text part of the user message.

    * ``msg:<t>`` - a bare ``Message`` ``echo: <t>`` (no task).
    * ``wait:<t>`` - WORKING, artifact ``echo: <t>``, then parks until
      :meth:`AgentControl.release`, then COMPLETED.
    * ``input:<t>`` - WORKING, artifact, then INPUT_REQUIRED; a follow-up
      message on the same task is handled afresh.
    * anything else - WORKING, artifact ``echo: <text>``, COMPLETED.
    """

    def __init__(self, control: AgentControl) -> None:
        self._control = control

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = _first_text(context.message)
        if text.startswith("msg:"):
            reply = new_text_message(f"echo: {text[4:]}", context_id=context.context_id)
            await event_queue.enqueue_event(reply)
            return
        task = context.current_task
        if task is None:
            if context.message is None:
                raise ValueError("no message to start a task from")
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        mode, body = _split_mode(text)
        await updater.add_artifact([new_text_part(f"echo: {body}")], name="echo")
        if mode == "input":
            prompt = updater.new_agent_message([new_text_part("more input, please")])
            await updater.requires_input(prompt)
            return
        if mode == "wait":
            self._control._parked_event(task.id).set()
            await self._control._gate(task.id).wait()
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id = context.task_id or ""
        self._control.cancelled.append(task_id)
        await TaskUpdater(event_queue, task_id, context.context_id or "").cancel()


def build_agent_card(public_url: str, *, name: str = "assistant") -> AgentCard:
    """The echo agent's card (A2A v1.0 s8 AgentCard), with every REQUIRED field set.

    JSON-RPC is advertised at ``public_url + "/"`` (the exact route the SDK
    mounts; the SDK client POSTs to the interface URL verbatim) and HTTP+JSON
    at ``public_url + "/rest"`` (the REST client appends ``/message:send``...).
    """
    base = public_url.rstrip("/")
    return AgentCard(
        name=name,
        description=f"Echo agent '{name}' built from the official a2a-sdk for Baton interop tests.",
        version="1.0.0",
        provider=AgentProvider(organization="Baton tests", url="https://baton.invalid"),
        supported_interfaces=[
            AgentInterface(
                url=base + JSONRPC_PATH, protocol_binding=JSONRPC, protocol_version="1.0"
            ),
            AgentInterface(url=base + REST_PREFIX, protocol_binding=REST, protocol_version="1.0"),
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id="echo",
                name="Echo",
                description="Replies with the text it was sent, prefixed by 'echo: '.",
                tags=["echo", "test"],
                examples=["hello", "msg:hello", "wait:hello", "input:hello"],
            )
        ],
    )


def build_a2a_app(
    public_url: str,
    *,
    name: str = "assistant",
    push_http: httpx.AsyncClient | None = None,
) -> Starlette:
    """The echo agent as a Starlette app; :func:`control_of` gives its control panel.

    ``push_http``: when given, the agent delivers push notifications
    (A2A v1.0 s4.3) with the SDK's ``BasePushNotificationSender`` over it;
    otherwise configs are stored (CRUD works) but nothing is delivered.
    The app's lifespan drains the handler (``DefaultRequestHandler.aclose``)
    so parked tasks do not outlive the server.
    """
    control = AgentControl(public_url=public_url, name=name)
    card = build_agent_card(public_url, name=name)
    push_store = InMemoryPushNotificationConfigStore()
    push_sender = (
        BasePushNotificationSender(push_http, push_store) if push_http is not None else None
    )
    handler = DefaultRequestHandler(
        agent_executor=EchoExecutor(control),
        task_store=InMemoryTaskStore(),
        agent_card=card,
        push_config_store=push_store,
        push_sender=push_sender,
    )

    async def current_card(_served: AgentCard) -> AgentCard:
        return build_agent_card(control.public_url, name=control.name)

    routes: list[BaseRoute] = [
        *create_agent_card_routes(card, card_modifier=current_card, card_url=CARD_PATH),
        *create_jsonrpc_routes(handler, JSONRPC_PATH, enable_v0_3_compat=True),
        *create_rest_routes(handler, enable_v0_3_compat=True, path_prefix=REST_PREFIX),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            control.release_all()
            await handler.aclose()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(_RecordRequests, sink=control.requests)
    app.state.agent_control = control
    return app


def control_of(app: Starlette) -> AgentControl:
    """The :class:`AgentControl` of an app made by :func:`build_a2a_app`."""
    return cast(AgentControl, app.state.agent_control)


@dataclass(frozen=True, slots=True)
class RunningPeer:
    """An echo agent being served: where it listens and its control panel."""

    base_url: str
    port: int
    app: Starlette
    control: AgentControl


@contextlib.asynccontextmanager
async def run_a2a_peer(
    *,
    name: str = "assistant",
    ssl_context: ssl.SSLContext | None = None,
    push_http: httpx.AsyncClient | None = None,
) -> AsyncIterator[RunningPeer]:
    """Build and serve an echo agent whose card advertises its own address.

    Put a gateway in front by setting ``peer.control.public_url`` to the
    gateway's URL for this agent once that is known.
    """
    app = build_a2a_app("http://127.0.0.1", name=name, push_http=push_http)
    control = control_of(app)
    async with serve_asgi(app, ssl_context=ssl_context) as port:
        scheme = "https" if ssl_context is not None else "http"
        base_url = f"{scheme}://127.0.0.1:{port}"
        control.public_url = base_url
        yield RunningPeer(base_url=base_url, port=port, app=app, control=control)


# --------------------------------------------------------------------------- SDK client


def _to_dict(message: Any) -> Json:
    return cast(Json, MessageToDict(message))


async def fetch_card(http: httpx.AsyncClient, base_url: str) -> AgentCard:
    """``GET base_url/.well-known/agent-card.json`` through the SDK's ``A2ACardResolver``."""
    return await A2ACardResolver(http, base_url).get_agent_card()


def as_v03_card(card: AgentCard) -> AgentCard:
    """A copy of ``card`` whose interfaces say ``protocolVersion`` 0.3.

    ``ClientFactory`` then builds the SDK's v0.3 compat transports: JSON-RPC
    ``message/send``, ``tasks/get``... at the same URL, REST at ``<url>/v1/...``,
    each request carrying ``A2A-Version: 0.3``.
    """
    legacy = AgentCard()
    legacy.CopyFrom(card)
    for interface in legacy.supported_interfaces:
        interface.protocol_version = "0.3"
    return legacy


@contextlib.asynccontextmanager
async def open_client(
    http: httpx.AsyncClient, card: AgentCard, *, binding: Binding, streaming: bool = False
) -> AsyncIterator[Client]:
    """An SDK ``Client`` for ``card`` restricted to ``binding``, sharing ``http``.

    ``ClientConfig.httpx_client`` is shared, so closing the client leaves
    ``http`` open (the SDK only closes clients it created).
    """
    config = ClientConfig(
        streaming=streaming, httpx_client=http, supported_protocol_bindings=[binding]
    )
    client = await create_client(card, config)
    try:
        yield client
    finally:
        await client.close()


def _user_message(text: str, *, context_id: str | None, task_id: str | None) -> Message:
    return Message(
        role=Role.ROLE_USER,
        message_id=f"m-{uuid.uuid4()}",
        parts=[new_text_part(text)],
        context_id=context_id or "",
        task_id=task_id or "",
    )


async def send_text(
    http: httpx.AsyncClient,
    card: AgentCard,
    text: str,
    *,
    binding: Binding,
    streaming: bool = False,
    context_id: str | None = None,
    task_id: str | None = None,
    return_immediately: bool = False,
    push_url: str | None = None,
    push_token: str = "",
) -> list[Json]:
    """SendMessage (or SendStreamingMessage when ``streaming``) with one text part.

    Returns every ``StreamResponse`` received, as dicts. Non-streaming gives
    exactly one (``{"task": ...}`` or ``{"message": ...}``). Streaming a task
    gives ``task`` (SUBMITTED), ``statusUpdate`` (WORKING), ``artifactUpdate``,
    ``statusUpdate`` (final state).

    ``return_immediately`` (A2A v1.0 s3.2.2) returns the first ``Task`` without
    waiting for a terminal or interrupted state. ``push_url``/``push_token``
    set ``configuration.taskPushNotificationConfig`` for the new task.
    """
    configuration = SendMessageConfiguration(return_immediately=return_immediately)
    if push_url is not None:
        configuration.task_push_notification_config.CopyFrom(
            TaskPushNotificationConfig(url=push_url, token=push_token)
        )
    request = SendMessageRequest(
        message=_user_message(text, context_id=context_id, task_id=task_id),
        configuration=configuration,
    )
    async with open_client(http, card, binding=binding, streaming=streaming) as client:
        return [_to_dict(event) async for event in client.send_message(request)]


async def get_task(
    http: httpx.AsyncClient,
    card: AgentCard,
    task_id: str,
    *,
    binding: Binding,
    history_length: int | None = None,
) -> Json:
    """GetTask; returns the ``Task`` as a dict (``id``, ``contextId``, ``status``, ...)."""
    request = GetTaskRequest(id=task_id, history_length=history_length)
    async with open_client(http, card, binding=binding) as client:
        return _to_dict(await client.get_task(request))


async def cancel_task(
    http: httpx.AsyncClient, card: AgentCard, task_id: str, *, binding: Binding
) -> Json:
    """CancelTask; returns the ``Task`` (state ``TASK_STATE_CANCELED``) as a dict."""
    async with open_client(http, card, binding=binding) as client:
        return _to_dict(await client.cancel_task(CancelTaskRequest(id=task_id)))


async def subscribe(
    http: httpx.AsyncClient,
    card: AgentCard,
    task_id: str,
    *,
    binding: Binding,
    on_first: Callable[[Json], Awaitable[None] | None] | None = None,
) -> list[Json]:
    """SubscribeToTask until the stream ends; returns the events as dicts.

    The first event is the task snapshot (SubscribeToTask, A2A v1.0 s3.1). ``on_first`` runs
    once it has arrived, i.e. once this subscriber is attached, so a test can
    release a ``wait:`` task without racing the subscription.
    """
    events: list[Json] = []
    async with open_client(http, card, binding=binding, streaming=True) as client:
        async for event in client.subscribe(SubscribeToTaskRequest(id=task_id)):
            events.append(_to_dict(event))
            if len(events) == 1 and on_first is not None:
                outcome = on_first(events[0])
                if outcome is not None:
                    await outcome
    return events


async def set_push_config(
    http: httpx.AsyncClient,
    card: AgentCard,
    task_id: str,
    url: str,
    *,
    binding: Binding,
    token: str = "",
) -> Json:
    """CreateTaskPushNotificationConfig for ``task_id``; returns the stored config."""
    config = TaskPushNotificationConfig(task_id=task_id, url=url, token=token)
    async with open_client(http, card, binding=binding) as client:
        return _to_dict(await client.create_task_push_notification_config(config))


# --------------------------------------------------------------------------- raw JSON-RPC


def _parse(response: httpx.Response) -> Json:
    value = strictjson.loads(response.content, max_bytes=_MAX_RESPONSE_BYTES)
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


async def post_jsonrpc(
    http: httpx.AsyncClient,
    url: str,
    method: str,
    params: Mapping[str, Any],
    *,
    version: str | None = "1.0",
    request_id: int | str = 1,
    headers: Mapping[str, str] | None = None,
) -> Json:
    """POST one JSON-RPC 2.0 request with httpx; returns the parsed response object.

    ``version`` is the ``A2A-Version`` header; ``None`` sends none, even if
    ``http`` carries a default one (``ClientFactory`` adds it).
    """
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": dict(params)}
    request = http.build_request("POST", url, json=body, headers=dict(headers or {}))
    if version is None:
        request.headers.pop("A2A-Version", None)
    else:
        request.headers["A2A-Version"] = version
    response = await http.send(request)
    return _parse(response)


async def send_v03(http: httpx.AsyncClient, url: str, text: str) -> Json:
    """The literal v0.3 ``message/send`` (A2A v0.3 JSON-RPC), no ``A2A-Version`` header."""
    message = {
        "kind": "message",
        "role": "user",
        "messageId": "m-1",
        "parts": [{"kind": "text", "text": text}],
    }
    return await post_jsonrpc(http, url, "message/send", {"message": message}, version=None)


async def get_task_v03(http: httpx.AsyncClient, url: str, task_id: str) -> Json:
    """The literal v0.3 ``tasks/get`` (A2A v0.3 JSON-RPC), no ``A2A-Version`` header."""
    return await post_jsonrpc(http, url, "tasks/get", {"id": task_id}, version=None)


# --------------------------------------------------------------------------- runner


def _bind_loopback() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.asynccontextmanager
async def serve_asgi(
    app: ASGIApp,
    *,
    ssl_context: ssl.SSLContext | None = None,
    lifespan: Literal["on", "off", "auto"] = "on",
    startup_timeout: float = 10.0,
    shutdown_timeout: float = 10.0,
) -> AsyncIterator[int]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in this event loop; yields the port.

    The socket is bound here (port 0) and handed to ``Server.serve(sockets=...)``,
    so there is no window in which another process can take the port.

    TLS: ``ssl_context`` is used verbatim through uvicorn's
    ``ssl_context_factory`` (uvicorn 0.54 ``Config``), so the caller decides
    everything. To require client certificates build it as
    ``ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key);
    ctx.load_verify_locations(ca); ctx.verify_mode = ssl.CERT_REQUIRED``
    (:func:`mtls_server_context` does exactly that).

    Other uvicorn settings: h11, no websockets, ``log_config=None`` (global
    logging untouched), ``log_level="warning"``, no access log,
    ``timeout_graceful_shutdown=2`` so a stream left open cannot stall exit.
    """
    sock = _bind_loopback()
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        lifespan=lifespan,
        http="h11",
        ws="none",
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        ssl_context_factory=(lambda _config, _default: ssl_context) if ssl_context else None,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn:{port}")
    try:
        async with asyncio.timeout(startup_timeout):
            while not server.started:
                if serving.done():
                    serving.result()
                    raise RuntimeError("uvicorn exited before it started")
                await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(shutdown_timeout):
                await asyncio.shield(serving)
        except TimeoutError:
            server.force_exit = True
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        finally:
            sock.close()


def mtls_server_context(certfile: str, keyfile: str, client_ca: str) -> ssl.SSLContext:
    """A TLS 1.3 server context presenting ``certfile`` and requiring a client cert."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(certfile, keyfile)
    context.load_verify_locations(cafile=client_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context
