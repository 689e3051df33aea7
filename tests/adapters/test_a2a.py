"""The A2A adapter: every operation in all four dialects, the REST routes, errors in A2A's shapes.

Three oracles, all from a2a-sdk 1.3.0 itself, so field names and paths are
proven rather than remembered:

* **The SDK's clients.** Requests are captured from the four client
  transports (v1.0 JSON-RPC and REST, v0.3 JSON-RPC and REST) through an
  ``httpx.MockTransport``: the exact bytes, paths and headers they send.
* **The SDK's server.** The real routes (JSON-RPC at ``/`` and REST under
  ``/rest``, both with v0.3 compatibility, plus ``/{tenant}``) run over a
  recording ``RequestHandler``. Whatever task id, context id or webhook the
  server hands its handler must be what :func:`parse_a2a` reported; that is
  the property the gateway's ownership and SSRF checks rest on. Hypothesis
  drives it with adversarial spellings (snake_case, aliases, encoded paths).
* **The SDK's error builders** and its client-side error parsers: a task the
  gateway hides is rendered exactly as the SDK renders a missing task.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import httpx
import pytest
from a2a.client.client_factory import ClientConfig, ClientFactory
from a2a.client.transports.jsonrpc import JsonRpcTransport
from a2a.client.transports.rest import RestTransport, _parse_rest_error
from a2a.compat.v0_3.jsonrpc_transport import CompatJsonRpcTransport
from a2a.compat.v0_3.rest_transport import CompatRestTransport
from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler, RequestHandler
from a2a.server.request_handlers.response_helpers import build_error_response
from a2a.server.routes import create_jsonrpc_routes, create_rest_routes
from a2a.server.routes.jsonrpc_dispatcher import JSONRPC03Adapter, JsonRpcDispatcher
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import a2a_pb2 as pb
from a2a.utils.error_handlers import build_rest_error_payload
from a2a.utils.errors import TaskNotFoundError
from google.protobuf.struct_pb2 import Struct
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from adapters.a2a import (
    GRPC_STATUS,
    HTTP_JSON,
    JSONRPC,
    MAX_REFERENCE_TASKS,
    V03_TO_V1,
    V1_METHODS,
    a2a_version,
    error_binding,
    parse_a2a,
    render_a2a_error,
    task_ids_in_event,
    task_ids_in_result,
)
from adapters.jsonrpc import PARSE_ERROR, RPC_CODES, Call
from adapters.sse import EventSplitter
from keys.strictjson import loads
from protocol.errors import (
    ERRORS_BY_CODE,
    BatonError,
    InvalidRequest,
    MalformedInput,
    PolicyDenied,
    RateLimited,
    TaskNotFound,
    TooDeep,
    UnsupportedVersion,
)

DETERMINISTIC = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
#: The differential tests make one in-process round trip to the SDK server per example.
DIFFERENTIAL = settings(DETERMINISTIC, max_examples=300)

DEPTH = 32
TASK = "task-1"
CONTEXT = "ctx-1"
CONFIG = "cfg-1"
HOOK_SEND = "https://hooks.example/send"
HOOK_CONFIG = "https://hooks.example/config"
V1 = {"a2a-version": "1.0"}
SECRET = "SECRET-DETAIL-never-shown"


def parse(
    body: bytes | str | Mapping[str, Any] = b"",
    *,
    method: str = "POST",
    path: str = "/",
    headers: Mapping[str, str] | None = None,
) -> Call:
    """``parse_a2a`` with test defaults; mappings are sent as compact JSON."""
    if isinstance(body, Mapping):
        body = json.dumps(body)
    raw = body.encode() if isinstance(body, str) else body
    return parse_a2a(
        raw,
        http_method=method,
        path=path,
        headers=V1 if headers is None else headers,
        max_depth=DEPTH,
    )


def rpc(method: str, params: Any = None, *, rpc_id: Any = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def json_of(data: bytes) -> Any:
    return loads(data, max_bytes=len(data), max_depth=DEPTH)


# =========================================================================== SDK client captures
@dataclass(frozen=True, slots=True)
class Sent:
    """One HTTP request as an SDK client transport put it on the wire."""

    method: str
    raw_path: str  # with query
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.raw_path.partition("?")[0]

    def parse(self) -> Call:
        return parse_a2a(
            self.body,
            http_method=self.method,
            path=self.path,
            headers=self.headers,
            max_depth=DEPTH,
        )


@dataclass(frozen=True, slots=True)
class Expected:
    method: str
    task_id: str | None = None
    context_id: str | None = None
    push_urls: tuple[str, ...] = ()
    skill: str | None = None


def _sdk_operations() -> dict[str, tuple[Any, Expected]]:
    metadata = Struct()
    metadata.update({"skill": "echo"})
    message = pb.Message(
        message_id="m-1",
        context_id=CONTEXT,
        task_id=TASK,
        role=pb.ROLE_USER,
        parts=[pb.Part(text="hello")],
        metadata=metadata,
    )
    send = pb.SendMessageRequest(
        message=message,
        configuration=pb.SendMessageConfiguration(
            task_push_notification_config=pb.TaskPushNotificationConfig(url=HOOK_SEND, token="t")
        ),
    )
    sent_message = Expected("", TASK, CONTEXT, (HOOK_SEND,), "echo")
    task = Expected("", TASK)
    return {
        "send_message": (send, _named(sent_message, "SendMessage")),
        "send_message_streaming": (send, _named(sent_message, "SendStreamingMessage")),
        "get_task": (pb.GetTaskRequest(id=TASK), _named(task, "GetTask")),
        "list_tasks": (pb.ListTasksRequest(context_id=CONTEXT), Expected("ListTasks")),
        "cancel_task": (pb.CancelTaskRequest(id=TASK), _named(task, "CancelTask")),
        "subscribe": (pb.SubscribeToTaskRequest(id=TASK), _named(task, "SubscribeToTask")),
        "create_task_push_notification_config": (
            pb.TaskPushNotificationConfig(task_id=TASK, id=CONFIG, url=HOOK_CONFIG),
            Expected("CreateTaskPushNotificationConfig", TASK, push_urls=(HOOK_CONFIG,)),
        ),
        "get_task_push_notification_config": (
            pb.GetTaskPushNotificationConfigRequest(task_id=TASK, id=CONFIG),
            _named(task, "GetTaskPushNotificationConfig"),
        ),
        "list_task_push_notification_configs": (
            pb.ListTaskPushNotificationConfigsRequest(task_id=TASK),
            _named(task, "ListTaskPushNotificationConfigs"),
        ),
        "delete_task_push_notification_config": (
            pb.DeleteTaskPushNotificationConfigRequest(task_id=TASK, id=CONFIG),
            _named(task, "DeleteTaskPushNotificationConfig"),
        ),
        "get_extended_agent_card": (
            pb.GetExtendedAgentCardRequest(),
            Expected("GetExtendedAgentCard"),
        ),
    }


def _named(expected: Expected, method: str) -> Expected:
    return Expected(
        method, expected.task_id, expected.context_id, expected.push_urls, expected.skill
    )


OPERATIONS = _sdk_operations()

#: dialect -> (transport class, URL, A2A version, binding, operations it implements).
#: v0.3 has no ListTasks; the v0.3 REST client has no list/delete of push configs.
DIALECTS: dict[str, tuple[type[Any], str, str, str, frozenset[str]]] = {
    "v1.0-jsonrpc": (JsonRpcTransport, "http://up/", "1.0", JSONRPC, frozenset(OPERATIONS)),
    "v1.0-rest": (RestTransport, "http://up/rest", "1.0", HTTP_JSON, frozenset(OPERATIONS)),
    "v0.3-jsonrpc": (
        CompatJsonRpcTransport,
        "http://up/",
        "0.3",
        JSONRPC,
        frozenset(OPERATIONS) - {"list_tasks"},
    ),
    "v0.3-rest": (
        CompatRestTransport,
        "http://up/rest",
        "0.3",
        HTTP_JSON,
        frozenset(OPERATIONS)
        - {"list_tasks", "list_task_push_notification_configs"}
        - {"delete_task_push_notification_config"},
    ),
}
SDK_CASES = [
    (dialect, operation)
    for dialect, (*_, operations) in DIALECTS.items()
    for operation in OPERATIONS
    if operation in operations
]


async def _drive(transport: Any, operation: str, request: Any) -> None:
    result = getattr(transport, operation)(request)
    try:
        if isinstance(result, AsyncIterator):
            async for _ in result:
                pass
        else:
            await result
    except Exception:  # noqa: S110 -- the mock answers 500; only the request matters
        pass


async def _capture_sdk_requests() -> dict[tuple[str, str], Sent]:
    captured: list[Sent] = []

    def record(request: httpx.Request) -> httpx.Response:
        captured.append(
            Sent(
                request.method,
                request.url.raw_path.decode(),
                {key.lower(): value for key, value in request.headers.items()},
                request.content,
            )
        )
        return httpx.Response(500, json={})

    card = pb.AgentCard(name="x", capabilities=pb.AgentCapabilities(extended_agent_card=True))
    found: dict[tuple[str, str], Sent] = {}
    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as client:
        ClientFactory(ClientConfig(httpx_client=client))  # sets the SDK's A2A-Version default
        for dialect, (transport_class, url, *_) in DIALECTS.items():
            transport = transport_class(client, card, url)
            for operation, (request, _) in OPERATIONS.items():
                captured.clear()
                await _drive(transport, operation, request)
                if captured:
                    found[dialect, operation] = captured[0]
    return found


@pytest.fixture(scope="module")
def sdk_requests() -> dict[tuple[str, str], Sent]:
    return asyncio.run(_capture_sdk_requests())


def test_every_dialect_sent_what_the_table_expects(
    sdk_requests: dict[tuple[str, str], Sent],
) -> None:
    assert set(sdk_requests) == set(SDK_CASES)


@pytest.mark.parametrize(("dialect", "operation"), SDK_CASES)
def test_sdk_request_parses(
    sdk_requests: dict[tuple[str, str], Sent], dialect: str, operation: str
) -> None:
    sent = sdk_requests[dialect, operation]
    _, _, version, binding, _ = DIALECTS[dialect]
    expected = OPERATIONS[operation][1]
    call = sent.parse()
    assert call.protocol == "a2a"
    assert (call.method, call.version, call.binding) == (expected.method, version, binding)
    assert (call.task_id, call.context_id) == (expected.task_id, expected.context_id)
    assert call.push_urls == expected.push_urls
    assert call.streaming is (expected.method in ("SendStreamingMessage", "SubscribeToTask"))
    if expected.skill is not None:
        assert (call.target_kind, call.target) == ("skill", expected.skill)
    if binding == JSONRPC:
        assert call.is_jsonrpc and not call.is_notification
        assert call.rpc_id == json_of(sent.body)["id"]
    else:
        assert not call.is_jsonrpc and call.rpc_id is None


def test_v03_rest_client_sends_snake_case(sdk_requests: dict[tuple[str, str], Sent]) -> None:
    """Why every field is read under both names: the SDK's own v0.3 REST client uses them."""
    body = json_of(sdk_requests["v0.3-rest", "send_message"].body)
    assert body["request"]["task_id"] == TASK
    assert body["configuration"]["push_notification"]["url"] == HOOK_SEND


def test_method_tables_match_the_sdk() -> None:
    assert set(JsonRpcDispatcher.METHOD_TO_MODEL) == V1_METHODS
    assert set(JSONRPC03Adapter.METHOD_TO_MODEL) == set(V03_TO_V1)
    assert set(V03_TO_V1.values()) == V1_METHODS - {"ListTasks"}


# =========================================================================== SDK server oracle
@dataclass(frozen=True, slots=True)
class Seen:
    """What the SDK server handed its RequestHandler (proto defaults: "")."""

    method: str
    task_id: str = ""
    context_id: str = ""
    push_url: str = ""


@dataclass
class RecordingHandler(RequestHandler):
    """Records each call, then answers TaskNotFound (nothing runs, nothing streams)."""

    seen: list[Seen] = field(default_factory=list)

    def _record(self, seen: Seen) -> NoReturn:
        self.seen.append(seen)
        raise TaskNotFoundError

    def _message(self, method: str, params: pb.SendMessageRequest) -> NoReturn:
        config = params.configuration.task_push_notification_config
        self._record(Seen(method, params.message.task_id, params.message.context_id, config.url))

    async def on_get_task(self, params: Any, context: Any = None) -> Any:
        self._record(Seen("GetTask", params.id))

    async def on_list_tasks(self, params: Any, context: Any = None) -> Any:
        self._record(Seen("ListTasks"))

    async def on_cancel_task(self, params: Any, context: Any = None) -> Any:
        self._record(Seen("CancelTask", params.id))

    async def on_message_send(self, params: Any, context: Any = None) -> Any:
        self._message("SendMessage", params)

    async def on_message_send_stream(self, params: Any, context: Any = None) -> Any:
        self._message("SendStreamingMessage", params)
        yield  # pragma: no cover -- makes this an async generator, as the interface wants

    async def on_create_task_push_notification_config(
        self, params: Any, context: Any = None
    ) -> Any:
        self._record(Seen("CreateTaskPushNotificationConfig", params.task_id, push_url=params.url))

    async def on_get_task_push_notification_config(self, params: Any, context: Any = None) -> Any:
        self._record(Seen("GetTaskPushNotificationConfig", params.task_id))

    async def on_subscribe_to_task(self, params: Any, context: Any = None) -> Any:
        self._record(Seen("SubscribeToTask", params.id))
        yield  # pragma: no cover

    async def on_list_task_push_notification_configs(self, params: Any, context: Any = None) -> Any:
        self._record(Seen("ListTaskPushNotificationConfigs", params.task_id))

    async def on_delete_task_push_notification_config(
        self, params: Any, context: Any = None
    ) -> Any:
        self._record(Seen("DeleteTaskPushNotificationConfig", params.task_id))

    async def on_get_extended_agent_card(self, params: Any, context: Any = None) -> Any:
        self._record(Seen("GetExtendedAgentCard"))


def sdk_app(handler: RequestHandler) -> Starlette:
    """The SDK's routes as the research peers mount them: JSON-RPC at /, REST at /rest."""
    routes = [
        *create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True),
        *create_rest_routes(handler, enable_v0_3_compat=True, path_prefix="/rest"),
    ]
    return Starlette(routes=routes)


RECORDER = RecordingHandler()
RECORDING_APP = sdk_app(RECORDER)


async def _replay(method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> None:
    # The v0.3 REST stream lets a handler error escape the app: that is a 500, not a test error.
    transport = httpx.ASGITransport(app=RECORDING_APP, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://up") as client:
        await client.request(method, "http://up" + raw_path, headers=dict(headers), content=body)


def server_saw(method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> list[Seen]:
    """What the real SDK server hands its handler for this request."""
    RECORDER.seen.clear()
    asyncio.run(_replay(method, raw_path, headers, body))
    return list(RECORDER.seen)


def assert_agrees(call: Call, seen: list[Seen]) -> None:
    """Every task, context and webhook the upstream acts on is the one Baton reported.

    Baton may report an id the upstream then ignores (a field under another
    dialect's name, such as v0.3's ``request`` sent with ``A2A-Version: 1.0``):
    the gateway checks one task too many, which is stricter, never looser.
    """
    for handed in seen:
        assert handed.method == call.method
        if handed.task_id:
            assert handed.task_id == call.task_id
        if handed.context_id:
            assert handed.context_id == call.context_id
        if handed.push_url:
            assert handed.push_url in call.push_urls


@pytest.mark.parametrize(("dialect", "operation"), SDK_CASES)
def test_server_hands_its_handler_what_parse_reports(
    sdk_requests: dict[tuple[str, str], Sent], dialect: str, operation: str
) -> None:
    sent = sdk_requests[dialect, operation]
    seen = server_saw(sent.method, sent.raw_path, sent.headers, sent.body)
    if operation == "get_extended_agent_card":
        return  # the SDK answers this one from its card before any handler runs in v0.3
    assert len(seen) == 1, seen
    call = sent.parse()
    assert_agrees(call, seen)
    (handed,) = seen
    assert (handed.task_id, handed.context_id) == (call.task_id or "", call.context_id or "")


_VALID_IDS = st.sampled_from(["t-1", "t-2", "victim", "tasks", "été", "a:subscribe"])
_BAD_IDS = st.sampled_from(["", "x" * 257, "a\x01b", 7, None, True]) | st.text(max_size=4)
_ID_VALUES = st.one_of(_VALID_IDS, _VALID_IDS, _VALID_IDS, _BAD_IDS)


@st.composite
def _message(draw: st.DrawFn, v03: bool) -> dict[str, Any]:
    if v03:
        message: dict[str, Any] = {
            "kind": "message",
            "messageId": "m",
            "role": "user",
            "parts": [{"kind": "text", "text": "hi"}],
        }
    else:
        message = {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "hi"}]}
    for key in draw(st.sets(st.sampled_from(["taskId", "task_id", "contextId", "context_id"]))):
        message[key] = draw(_ID_VALUES)
    return message


@st.composite
def jsonrpc_bodies(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    """JSON-RPC requests in any dialect, with task ids under every spelling the SDK accepts."""
    method = draw(st.sampled_from(sorted(V1_METHODS | set(V03_TO_V1))))
    v03 = method in V03_TO_V1
    params: dict[str, Any] = {}
    for key in draw(
        st.sets(st.sampled_from(["id", "taskId", "task_id", "pushNotificationConfigId"]))
    ):
        params[key] = draw(_ID_VALUES)
    if draw(st.booleans()):
        params[draw(st.sampled_from(["message", "request"]))] = draw(_message(v03))
    if draw(st.booleans()):
        hook = {"url": "https://hooks.example/x"}
        where = draw(st.sampled_from(["url", "pushNotificationConfig", "push_notification_config"]))
        params.update({"url": hook["url"]} if where == "url" else {where: hook})
    version = "0.3" if v03 else draw(st.sampled_from(["1.0", "1.0", ""]))
    return {"a2a-version": version}, json.dumps(rpc(method, params)).encode()


_TEMPLATES = [
    ("POST", "message:send"),
    ("POST", "message:stream"),
    ("POST", "tasks/{id}:cancel"),
    ("GET", "tasks/{id}:subscribe"),
    ("POST", "tasks/{id}:subscribe"),
    ("GET", "tasks/{id}"),
    ("HEAD", "tasks/{id}"),
    ("GET", "tasks/{id}/pushNotificationConfigs/{id}"),
    ("DELETE", "tasks/{id}/pushNotificationConfigs/{id}"),
    ("POST", "tasks/{id}/pushNotificationConfigs"),
    ("GET", "tasks/{id}/pushNotificationConfigs"),
    ("GET", "tasks"),
    ("GET", "extendedAgentCard"),
    ("GET", "card"),
]
#: Task-id segments as a client might encode them, honestly or not.
_ID_SEGMENTS = [
    "t-1",
    "t%2D1",
    "%74asks",
    "tasks",
    "a:subscribe",
    "x%3Acancel",
    "x%3Asubscribe",
    "%C3%A9t%C3%A9",
    "a%25b",
    "message:send",
    "pushNotificationConfigs",
    "a%2Fb",
    "%FF",
    "a%",
]
_REST_BODIES = [
    b"",
    b"{}",
    b'{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"hi"}],"taskId":"t-1"}}',
    b'{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"hi"}],"task_id":"t-2"}}',
    b'{"request":{"message_id":"m","role":"ROLE_USER","content":[{"text":"hi"}],"task_id":"t-3"}}',
    b'{"url":"https://hooks.example/x","taskId":"t-1"}',
    b'{"config":{"push_notification_config":{"url":"https://hooks.example/y"}}}',
]


@st.composite
def rest_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    """A request on (or near) an SDK route: real templates, hostile id segments, any prefix."""
    method, template = draw(st.sampled_from(_TEMPLATES))
    while "{id}" in template:
        template = template.replace("{id}", draw(st.sampled_from(_ID_SEGMENTS)), 1)
    if draw(st.integers(0, 4)) == 0:  # sometimes the wrong method for the route
        method = draw(st.sampled_from(["GET", "POST", "DELETE", "HEAD"]))
    prefix = draw(st.sampled_from(["/rest", "/tenant/rest", "/rest/v1", "/v1/rest", ""]))
    body = draw(st.sampled_from(_REST_BODIES)) if method == "POST" else b""
    versions = ["0.3", "0.3", "1.0"] if prefix.endswith("/v1") else ["1.0", "1.0", "0.3", ""]
    version = draw(st.sampled_from(versions))
    raw_path = httpx.URL(f"http://up{prefix}/{template}").raw_path.decode()
    return method, raw_path, {"a2a-version": version, "content-type": "application/json"}, body


@DIFFERENTIAL
@given(jsonrpc_bodies())
@example(
    ({"a2a-version": "1.0"}, json.dumps(rpc("SendMessage", {"message": {"task_id": "v"}})).encode())
)
def test_jsonrpc_never_disagrees_with_the_sdk_server(case: tuple[dict[str, str], bytes]) -> None:
    headers, body = case
    try:
        call = parse(body, headers=headers)
    except BatonError:
        return  # refused: nothing is forwarded
    assert_agrees(call, server_saw("POST", "/", headers, body))


@DIFFERENTIAL
@given(rest_requests())
@example(("POST", "/rest/v1/message:send", {"a2a-version": "0.3"}, _REST_BODIES[4]))
@example(("GET", "/tenant/rest/tasks/t-1:subscribe", {"a2a-version": "1.0"}, b""))
@example(("HEAD", "/rest/tasks/%74-1", {"a2a-version": "1.0"}, b""))
def test_rest_never_disagrees_with_the_sdk_server(
    case: tuple[str, str, dict[str, str], bytes],
) -> None:
    method, raw_path, headers, body = case
    try:
        call = parse(body, method=method, path=raw_path, headers=headers)
    except BatonError:
        return
    seen = server_saw(method, raw_path, headers, body)
    assert_agrees(call, seen)
    if seen:  # the upstream ran an A2A operation: Baton must have recognised it
        assert call.binding == HTTP_JSON and call.method in V1_METHODS


# =========================================================================== version header
@pytest.mark.parametrize(
    ("value", "version"),
    [
        (None, "0.3"),
        ("", "0.3"),
        ("0.3", "0.3"),
        ("0.3.0", "0.3"),
        ("1.0", "1.0"),
        ("1.0.1", "1.0"),
        (" 1.0 ", "1.0"),
    ],
)
def test_version_header(value: str | None, version: str) -> None:
    headers = {} if value is None else {"a2a-version": value}
    assert a2a_version(headers) == version
    assert parse(rpc("GetTask", {"id": TASK}), headers=headers).version == version


@pytest.mark.parametrize("value", ["1.1", "2.0", "1", "0.2", "1.0.0rc1", "1.0.x", "v1.0", "abc"])
def test_unsupported_version(value: str) -> None:
    with pytest.raises(UnsupportedVersion):
        parse(rpc("GetTask", {"id": TASK}), headers={"a2a-version": value})
    with pytest.raises(UnsupportedVersion):
        parse(method="GET", path="/tasks/t", headers={"a2a-version": value})


def test_v03_name_is_mapped_whatever_the_header() -> None:
    call = parse(rpc("tasks/get", {"id": TASK}), headers=V1)
    assert (call.method, call.version, call.task_id) == ("GetTask", "1.0", TASK)


def test_v1_name_without_header_passes_through_as_v03() -> None:
    """The upstream answers -32009 itself; policy still sees the v1.0 name."""
    call = parse(rpc("GetTask", {"id": TASK}), headers={})
    assert (call.method, call.version, call.task_id) == ("GetTask", "0.3", TASK)


# =========================================================================== JSON-RPC binding
@pytest.mark.parametrize(("v03", "v1"), sorted(V03_TO_V1.items()))
def test_every_v03_name_maps(v03: str, v1: str) -> None:
    params = {"id": TASK, "taskId": TASK} if v03.endswith("/set") else {"id": TASK}
    if v03.startswith("message/"):
        params = {"message": {"messageId": "m", "taskId": TASK}}
    assert parse(rpc(v03, params), headers={}).method == v1


def test_unknown_method_keeps_its_name() -> None:
    call = parse(rpc("tasks/list", {"id": TASK}))
    assert (call.method, call.task_id, call.binding) == ("tasks/list", None, JSONRPC)


def test_notification_and_ids() -> None:
    body = rpc("ListTasks")
    del body["id"]
    assert parse(body).is_notification
    assert parse(rpc("ListTasks", rpc_id="abc")).rpc_id == "abc"
    assert parse(rpc("ListTasks", rpc_id=None)).rpc_id is None
    assert parse(rpc("ListTasks", rpc_id=7)).rpc_id == 7


@pytest.mark.parametrize(
    "body",
    [
        "[]",
        '[{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"t"}}]',
        '{"jsonrpc":"1.0","id":1,"method":"ListTasks"}',
        '{"jsonrpc":"2.0","id":1}',
        '{"jsonrpc":"2.0","id":1,"result":{}}',
        '{"jsonrpc":"2.0","id":1,"method":7}',
        '{"jsonrpc":"2.0","id":1,"method":""}',
        '{"jsonrpc":"2.0","id":true,"method":"ListTasks"}',
        '{"jsonrpc":"2.0","id":1.5,"method":"ListTasks"}',
        '{"jsonrpc":"2.0","id":{},"method":"ListTasks"}',
        json.dumps(rpc("ListTasks", rpc_id="x" * 257)),
        '{"jsonrpc":"2.0","id":1,"method":"GetTask","params":[1]}',
        '{"jsonrpc":"2.0","id":1,"method":"GetTask","params":"t"}',
    ],
)
def test_malformed_jsonrpc_refused(body: str) -> None:
    with pytest.raises(InvalidRequest):
        parse(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0",',
        b'{"jsonrpc":"2.0","id":1,"id":2,"method":"GetTask"}',
        b'{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"a","id":"b"}}',
        b'{"jsonrpc":"2.0","id":NaN,"method":"GetTask"}',
        b"\xef\xbb\xbf{}",
        b'{"jsonrpc":"2.0","id":1,"method":"\xff"}',
        '{"a":1}'.encode("utf-16-be"),
    ],
)
def test_malformed_json_refused(body: bytes) -> None:
    with pytest.raises(MalformedInput):
        parse(body)


def test_too_deep_refused() -> None:
    params = {"message": {"metadata": json_nested(DEPTH + 2)}}
    with pytest.raises(TooDeep):
        parse(rpc("SendMessage", params))


def json_nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("GetTask", {}),
        ("GetTask", {"id": None}),
        ("CancelTask", {"taskId": TASK}),  # v1.0 names the task "id" here
        ("SubscribeToTask", {}),
        ("GetTaskPushNotificationConfig", {"id": CONFIG}),  # v1.0: "id" is the config
        ("ListTaskPushNotificationConfigs", {}),
        ("DeleteTaskPushNotificationConfig", {"id": CONFIG}),
        ("CreateTaskPushNotificationConfig", {"url": HOOK_CONFIG}),
        ("tasks/get", {}),
        ("tasks/pushNotificationConfig/get", {"pushNotificationConfigId": CONFIG}),
        ("tasks/pushNotificationConfig/set", {"pushNotificationConfig": {"url": HOOK_CONFIG}}),
    ],
)
def test_task_scoped_method_without_task_refused(method: str, params: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        parse(rpc(method, params))


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("GetTaskPushNotificationConfig", {"taskId": TASK, "id": CONFIG}),
        ("GetTaskPushNotificationConfig", {"task_id": TASK, "id": CONFIG}),
        ("tasks/pushNotificationConfig/get", {"id": TASK, "pushNotificationConfigId": CONFIG}),
        ("tasks/pushNotificationConfig/list", {"id": TASK}),
        ("tasks/pushNotificationConfig/delete", {"id": TASK, "push_notification_config_id": "c"}),
        ("tasks/resubscribe", {"id": TASK}),
        ("tasks/cancel", {"id": TASK, "metadata": {}}),
    ],
)
def test_task_id_per_dialect(method: str, params: dict[str, Any]) -> None:
    assert parse(rpc(method, params)).task_id == TASK


@pytest.mark.parametrize(
    "value", ["", "x" * 257, 7, True, ["t"], {"id": "t"}, "a\nb", "a\x00b", "a\x7fb"]
)
@pytest.mark.parametrize("where", ["task", "context", "message-task"])
def test_invalid_ids_refused(value: Any, where: str) -> None:
    if where == "task":
        body = rpc("GetTask", {"id": value})
    else:
        key = "contextId" if where == "context" else "taskId"
        body = rpc("SendMessage", {"message": {"messageId": "m", key: value}})
    with pytest.raises(InvalidRequest):
        parse(body)


def test_reference_task_ids_are_read_checked_and_bounded() -> None:
    """``referenceTaskIds`` name tasks the gateway must check ownership of, as
    it does ``taskId`` (P11): both spellings read, each id checked, a bounded
    list, duplicates once; a list in two spellings or of non-ids is refused."""
    message = {"messageId": "m", "referenceTaskIds": ["t-1", "t-2", "t-1"]}
    assert parse(rpc("SendMessage", {"message": message})).reference_task_ids == ("t-1", "t-2")
    snake = {"messageId": "m", "reference_task_ids": ["victim"]}
    assert parse(rpc("SendMessage", {"message": snake})).reference_task_ids == ("victim",)
    assert parse(rpc("SendMessage", {"message": {"messageId": "m"}})).reference_task_ids == ()
    refused: list[Any] = [
        "t-1", [7], ["a\nb"], [""], ["t"] * (MAX_REFERENCE_TASKS + 1), {"id": "t"},
    ]  # fmt: skip
    for value in refused:
        with pytest.raises(InvalidRequest):
            parse(rpc("SendMessage", {"message": {"messageId": "m", "referenceTaskIds": value}}))
    both = {"messageId": "m", "referenceTaskIds": ["a"], "reference_task_ids": ["b"]}
    with pytest.raises(InvalidRequest):
        parse(rpc("SendMessage", {"message": both}))


def test_longest_valid_id_accepted() -> None:
    assert parse(rpc("GetTask", {"id": "x" * 256})).task_id == "x" * 256


@pytest.mark.parametrize(
    "params",
    [
        {"message": {"taskId": "a", "task_id": "b"}},
        {"message": {"taskId": "a", "task_id": "a"}},
        {"message": {"contextId": "a", "context_id": "b"}},
        {"message": {"taskId": "a"}, "request": {"taskId": "b"}},
        {"message": "not an object"},
        {"message": {}, "configuration": []},
        {"message": {}, "configuration": {"taskPushNotificationConfig": "https://x"}},
        {"message": {}, "configuration": {"pushNotificationConfig": {"url": 7}}},
        {
            "message": {},
            "configuration": {
                "pushNotificationConfig": {"url": "https://a"},
                "push_notification_config": {"url": "https://b"},
            },
        },
    ],
)
def test_ambiguous_or_malformed_message_refused(params: dict[str, Any]) -> None:
    """A field under two names: protobuf keeps the last, pydantic the alias; Baton refuses."""
    with pytest.raises(InvalidRequest):
        parse(rpc("SendMessage", params))


def test_snake_case_task_id_is_read() -> None:
    """ParseDict accepts ``task_id``: reading only ``taskId`` would let a caller skip ownership."""
    call = parse(rpc("SendMessage", {"message": {"messageId": "m", "task_id": "victim"}}))
    assert call.task_id == "victim"


def test_message_without_ids() -> None:
    call = parse(rpc("SendMessage", {"message": {"messageId": "m", "parts": [{"text": "x"}]}}))
    assert (call.task_id, call.context_id, call.push_urls, call.target) == (None, None, (), None)


# --------------------------------------------------------------------------- webhooks
@pytest.mark.parametrize(
    ("method", "params", "urls"),
    [
        (
            "SendMessage",
            {"message": {}, "configuration": {"taskPushNotificationConfig": {"url": "https://a"}}},
            ("https://a",),
        ),
        (
            "message/send",
            {"message": {}, "configuration": {"pushNotificationConfig": {"url": "https://a"}}},
            ("https://a",),
        ),
        (
            "SendStreamingMessage",
            {"message": {}, "configuration": {"task_push_notification_config": {"url": "h"}}},
            ("h",),
        ),
        (
            # A webhook under another dialect's name is still checked (over-collection is safe).
            "SendMessage",
            {
                "message": {},
                "configuration": {
                    "taskPushNotificationConfig": {"url": "https://a"},
                    "pushNotificationConfig": {"url": "https://b"},
                    "push_notification": {"url": "https://c"},
                },
            },
            ("https://a", "https://b", "https://c"),
        ),
        ("SendMessage", {"message": {}, "configuration": {}}, ()),
        ("CreateTaskPushNotificationConfig", {"taskId": TASK, "url": "https://a"}, ("https://a",)),
        (
            "tasks/pushNotificationConfig/set",
            {"taskId": TASK, "pushNotificationConfig": {"url": "https://a", "token": "t"}},
            ("https://a",),
        ),
        ("CreateTaskPushNotificationConfig", {"taskId": TASK, "url": ""}, ("",)),
    ],
)
def test_push_urls(method: str, params: dict[str, Any], urls: tuple[str, ...]) -> None:
    assert parse(rpc(method, params)).push_urls == urls


# --------------------------------------------------------------------------- skills
@pytest.mark.parametrize(
    ("params", "skill"),
    [
        ({"message": {"metadata": {"skill": "search"}}}, "search"),
        ({"message": {"metadata": {"skillId": "search"}}}, "search"),
        ({"message": {}, "metadata": {"skill": "search"}}, "search"),
        ({"message": {"metadata": {"skill": "s"}}, "metadata": {"skillId": "s"}}, "s"),
        ({"message": {"metadata": {"skill": {"id": "s"}}}}, None),
        ({"message": {"metadata": "x"}}, None),
    ],
)
def test_skill_target(params: dict[str, Any], skill: str | None) -> None:
    call = parse(rpc("SendMessage", params))
    assert call.target == skill
    assert call.target_kind == (None if skill is None else "skill")


@pytest.mark.parametrize(
    "params",
    [
        {"message": {"metadata": {"skill": "a", "skillId": "b"}}},
        {"message": {"metadata": {"skill": "a"}}, "metadata": {"skill": "b"}},
        {"message": {"metadata": {"skill": ""}}},
        {"message": {"metadata": {"skill": "x" * 257}}},
    ],
)
def test_conflicting_or_invalid_skill_refused(params: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        parse(rpc("SendMessage", params))


def test_skill_on_other_methods_comes_from_params_metadata() -> None:
    call = parse(rpc("CancelTask", {"id": TASK, "metadata": {"skill": "ops"}}))
    assert (call.target_kind, call.target) == ("skill", "ops")


# =========================================================================== HTTP+JSON binding
SEND_BODY = json.dumps({"message": {"messageId": "m", "contextId": CONTEXT, "taskId": TASK}})

REST_TABLE = [
    ("POST", "message:send", "SendMessage", None),
    ("POST", "message:stream", "SendStreamingMessage", None),
    ("GET", "tasks/t-9", "GetTask", "t-9"),
    ("HEAD", "tasks/t-9", "GetTask", "t-9"),
    ("GET", "tasks", "ListTasks", None),
    ("POST", "tasks/t-9:cancel", "CancelTask", "t-9"),
    ("POST", "tasks/t-9:subscribe", "SubscribeToTask", "t-9"),
    ("GET", "tasks/t-9:subscribe", "SubscribeToTask", "t-9"),
    ("POST", "tasks/t-9/pushNotificationConfigs", "CreateTaskPushNotificationConfig", "t-9"),
    ("GET", "tasks/t-9/pushNotificationConfigs/c", "GetTaskPushNotificationConfig", "t-9"),
    ("GET", "tasks/t-9/pushNotificationConfigs", "ListTaskPushNotificationConfigs", "t-9"),
    ("DELETE", "tasks/t-9/pushNotificationConfigs/c", "DeleteTaskPushNotificationConfig", "t-9"),
    ("GET", "extendedAgentCard", "GetExtendedAgentCard", None),
    ("GET", "v1/card", "GetExtendedAgentCard", None),
    ("GET", ".well-known/agent-card.json", "GetAgentCard", None),
]


def _rest_body(name: str) -> str:
    if name in ("SendMessage", "SendStreamingMessage"):
        return SEND_BODY
    return '{"url":"https://a"}' if name == "CreateTaskPushNotificationConfig" else ""


@pytest.mark.parametrize("prefix", ["", "/rest", "/tenant-a", "/tenant-a/rest", "/a/b/c/v1"])
@pytest.mark.parametrize(("http_method", "suffix", "name", "task_id"), REST_TABLE)
def test_rest_route_table(
    prefix: str, http_method: str, suffix: str, name: str, task_id: str | None
) -> None:
    call = parse(_rest_body(name), method=http_method, path=f"{prefix}/{suffix}")
    assert (call.method, call.binding, call.rpc_id, call.is_jsonrpc) == (
        name,
        HTTP_JSON,
        None,
        False,
    )
    assert call.task_id == (TASK if name in ("SendMessage", "SendStreamingMessage") else task_id)
    assert call.streaming is (name in ("SendStreamingMessage", "SubscribeToTask"))
    assert call.protocol == "a2a" and call.version == "1.0"


@pytest.mark.parametrize(
    ("http_method", "path", "task_id"),
    [
        ("GET", "/tasks/t%2D9", "t-9"),
        ("GET", "/tasks/%C3%A9t%C3%A9", "été"),
        ("GET", "/%74asks/t-9", "t-9"),
        ("GET", "/tasks/a%3Asubscribe", "a"),  # decoded before matching, as Starlette does
        ("POST", "/tasks/a%3Acancel", "a"),
        ("GET", "/tasks/a:cancel", "a:cancel"),  # :cancel is POST only: this is GetTask
        ("POST", "/tasks/a:cancel:subscribe", "a:cancel"),
        ("GET", "/tasks/a%25b", "a%b"),  # decoded exactly once
        ("GET", "/tasks/" + "x" * 256, "x" * 256),
        ("get", "/tasks/t-9", "t-9"),
    ],
)
def test_rest_task_id_decoding(http_method: str, path: str, task_id: str) -> None:
    assert parse(method=http_method, path=path).task_id == task_id


@pytest.mark.parametrize(
    ("http_method", "path"),
    [
        ("GET", "/tasks/a%2Fb"),  # upstream would see /tasks/a/b
        ("GET", "/tasks/a%2fb/pushNotificationConfigs"),
        ("GET", "/x%2Fy/tasks/t"),  # an encoded '/' anywhere changes the upstream's path
        ("GET", "/tasks/%2E%2E"),
        ("GET", "/tasks/.."),
        ("GET", "/rest/../tasks/t"),
        ("GET", "/tasks/."),
        ("GET", "/tasks/%FF"),  # not UTF-8
        ("GET", "/tasks/%zz"),
        ("GET", "/tasks/a%"),
        ("GET", "/tasks/" + "x" * 257),
        ("GET", "/tasks/a%0Ab"),  # control character
        ("GET", "/x/tasks/tasks"),  # task "tasks" under /x, or the task list under /x/tasks?
        ("GET", "/tasks/extendedAgentCard"),
        ("GET", "/tasks/tasks/pushNotificationConfigs/pushNotificationConfigs"),
    ],
)
def test_rest_path_refused(http_method: str, path: str) -> None:
    with pytest.raises(InvalidRequest):
        parse(method=http_method, path=path)


@pytest.mark.parametrize(
    ("http_method", "path"),
    [
        ("POST", "/tasks/t-9"),  # GetTask is GET only: the upstream answers 405
        ("PUT", "/message:send"),
        ("GET", "/message:send"),
        ("POST", "/tasks/:cancel"),
        ("GET", "/tasks/"),
        ("GET", "/tasks//pushNotificationConfigs"),
        ("GET", "/.well-known/agent.json"),
        ("GET", "/"),
        ("DELETE", "/tasks/t-9/pushNotificationConfigs"),
    ],
)
def test_other_paths_are_named_by_method_and_path(http_method: str, path: str) -> None:
    call = parse(method=http_method, path=path)
    assert (call.method, call.task_id, call.binding) == (f"{http_method} {path}", None, HTTP_JSON)


def test_rest_route_wins_over_a_jsonrpc_body() -> None:
    """The upstream routes on the path: a JSON-RPC body at message:send is a REST SendMessage."""
    body = rpc("GetTask", {"id": "victim"}) | {"message": {"taskId": "mine"}}
    call = parse(body, path="/rest/message:send")
    assert (call.method, call.task_id, call.binding) == ("SendMessage", "mine", HTTP_JSON)


def test_non_jsonrpc_post_is_named_by_path() -> None:
    assert parse(b"a=1", path="/form", headers={}).method == "POST /form"
    assert parse(b'{"hello":1}', path="/").method == "POST /"
    assert parse(b'"text"', path="/").method == "POST /"


@pytest.mark.parametrize(
    ("path", "body", "task", "context", "urls"),
    [
        ("/message:send", SEND_BODY, TASK, CONTEXT, ()),
        (
            "/v1/message:send",
            '{"request":{"message_id":"m","task_id":"t","context_id":"c"},'
            '"configuration":{"push_notification":{"url":"https://a"}}}',
            "t",
            "c",
            ("https://a",),
        ),
        (
            "/tasks/t/pushNotificationConfigs",
            '{"taskId":"t","url":"https://a"}',
            "t",
            None,
            ("https://a",),
        ),
        (
            "/v1/tasks/t/pushNotificationConfigs",
            '{"parent":"tasks/t","config_id":"c","config":{"name":"tasks/t/pushNotificationConfigs/c",'
            '"push_notification_config":{"id":"c","url":"https://a"}}}',
            "t",
            None,
            ("https://a",),
        ),
    ],
)
def test_rest_bodies(
    path: str, body: str, task: str, context: str | None, urls: tuple[str, ...]
) -> None:
    call = parse(body, path=path, headers={"a2a-version": "0.3"})
    assert (call.task_id, call.context_id, call.push_urls) == (task, context, urls)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/message:send", ""),
        ("/message:send", "   "),
        ("/message:stream", "[]"),
        ("/message:send", '"x"'),
        ("/message:send", '{"message":{"taskId":""}}'),
        ("/tasks/t/pushNotificationConfigs", ""),
        ("/tasks/t/pushNotificationConfigs", '{"taskId":"other","url":"https://a"}'),
        ("/tasks/t/pushNotificationConfigs", '{"parent":"tasks/other"}'),
    ],
)
def test_rest_bad_bodies_refused(path: str, body: str) -> None:
    with pytest.raises(InvalidRequest):
        parse(body, path=path)


def test_rest_malformed_body() -> None:
    with pytest.raises(MalformedInput):
        parse('{"message":{},"message":{}}', path="/message:send")


def test_rest_get_ignores_any_body() -> None:
    assert parse(b"not json", method="GET", path="/tasks/t").task_id == "t"


@pytest.mark.parametrize(
    ("http_method", "path", "binding"),
    [
        ("POST", "/", JSONRPC),
        ("POST", "/a2a", JSONRPC),
        ("POST", "/rest/message:send", HTTP_JSON),
        ("GET", "/rest/tasks/t", HTTP_JSON),
        ("GET", "/", HTTP_JSON),
        ("POST", "/tasks/a%2Fb:cancel", JSONRPC),  # unparseable: never raises
    ],
)
def test_error_binding(http_method: str, path: str, binding: str) -> None:
    assert error_binding(http_method, path) == binding


# =========================================================================== property: total parser
_HEADER_VALUES = st.sampled_from(["1.0", "0.3", "", "2.0"]) | st.text(max_size=5)
_PATHS = st.sampled_from(["/", "/rest/message:send", "/tasks/t", "/tasks/t:subscribe"]) | st.text(
    max_size=30
).map(lambda text: "/" + text)


@DETERMINISTIC
@given(
    body=st.binary(max_size=200)
    | st.sampled_from(
        [json.dumps(rpc(name, {"id": "t", "message": {}})).encode() for name in sorted(V1_METHODS)]
    ),
    http_method=st.sampled_from(["GET", "POST", "DELETE", "HEAD", "PUT", "post"]),
    path=_PATHS,
    headers=st.dictionaries(
        st.sampled_from(["a2a-version", "content-type", "x-other"]), _HEADER_VALUES, max_size=3
    ),
)
def test_parse_is_total(body: bytes, http_method: str, path: str, headers: dict[str, str]) -> None:
    """Any bytes, path and headers: a Call, or a BatonError; never anything else."""
    try:
        call = parse_a2a(body, http_method=http_method, path=path, headers=headers, max_depth=8)
    except BatonError:
        return
    assert call.protocol == "a2a"
    assert call.version in ("1.0", "0.3")
    assert call.binding in (JSONRPC, HTTP_JSON)
    for value in (call.task_id, call.context_id):
        assert value is None or 0 < len(value) <= 256


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["id", "taskId", "contextId", "task", "message", "kind", "result", "x"]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@DETERMINISTIC
@given(
    value=_JSON,
    jsonrpc=st.booleans(),
    method=st.sampled_from(["SendMessage", "GetTask", "ListTasks", "SubscribeToTask"]),
)
def test_response_readers_never_raise_on_json(value: Any, jsonrpc: bool, method: str) -> None:
    data = json.dumps(value).encode()
    call = Call(method, 1, is_jsonrpc=jsonrpc, protocol="a2a", binding=JSONRPC)
    for ids in (
        task_ids_in_result(call, data, max_depth=DEPTH),
        task_ids_in_event(data, max_depth=DEPTH),
    ):
        assert all(item is None or isinstance(item, str) for item in ids)


# =========================================================================== responses (live SDK)
class EchoAgent(AgentExecutor):
    """The research peer: Task -> WORKING -> artifact -> COMPLETED; ``msg:`` answers a Message."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message = context.message
        assert message is not None
        text = message.parts[0].text
        if text.startswith("msg:"):
            reply = new_text_message("echo: " + text, context_id=context.context_id)
            await event_queue.enqueue_event(reply)
            return
        task = new_task_from_user_message(message)
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        await updater.add_artifact([new_text_part("echo: " + text)], name="echo")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise AssertionError("not used")


ECHO_CARD = pb.AgentCard(
    name="echo",
    description="echo",
    version="1.0.0",
    capabilities=pb.AgentCapabilities(streaming=True),
    default_input_modes=["text/plain"],
    default_output_modes=["text/plain"],
    skills=[pb.AgentSkill(id="echo", name="echo", description="echo", tags=["echo"])],
    supported_interfaces=[
        pb.AgentInterface(url="http://up/", protocol_binding="JSONRPC", protocol_version="1.0")
    ],
)


@dataclass(frozen=True, slots=True)
class Exchange:
    call: Call
    status: int
    body: bytes
    content_type: str

    def events(self) -> list[bytes]:
        splitter = EventSplitter()
        return [_data_of(event) for event in [*splitter.feed(self.body), splitter.flush()]]


def _data_of(event: bytes) -> bytes:
    lines = event.replace(b"\r\n", b"\n").split(b"\n")
    return b"\n".join(line[5:].lstrip(b" ") for line in lines if line.startswith(b"data:"))


def _v1_message(text: str) -> dict[str, Any]:
    return {"messageId": "m-" + text, "role": "ROLE_USER", "parts": [{"text": text}]}


def _v03_message(text: str) -> dict[str, Any]:
    return {
        "kind": "message",
        "messageId": "m-" + text,
        "role": "user",
        "parts": [{"kind": "text", "text": text}],
    }


def _v03_rest_message(text: str) -> dict[str, Any]:
    return {"message_id": "m-" + text, "role": "ROLE_USER", "content": [{"text": text}]}


V03 = {"a2a-version": "0.3"}


async def _echo_exchanges() -> dict[str, Exchange]:
    app = sdk_app(DefaultRequestHandler(EchoAgent(), InMemoryTaskStore(), ECHO_CARD))
    found: dict[str, Exchange] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://up") as client:

        async def send(
            name: str, method: str, path: str, headers: dict[str, str], body: Any = None
        ) -> Any:
            raw = b"" if body is None else json.dumps(body).encode()
            call = parse(raw, method=method, path=path, headers=headers)
            response = await client.request(
                method, path, headers=headers | {"content-type": "application/json"}, content=raw
            )
            found[name] = Exchange(
                call, response.status_code, response.content, response.headers["content-type"]
            )
            return json_of(response.content) if "json" in found[name].content_type else None

        task = await send(
            "v1-rpc-send", "POST", "/", V1, rpc("SendMessage", {"message": _v1_message("hi")})
        )
        task_id = task["result"]["task"]["id"]
        await send(
            "v1-rpc-send-msg",
            "POST",
            "/",
            V1,
            rpc("SendMessage", {"message": _v1_message("msg:x")}),
        )
        await send("v1-rpc-get", "POST", "/", V1, rpc("GetTask", {"id": task_id}))
        await send(
            "v1-rpc-get-missing", "POST", "/", V1, rpc("GetTask", {"id": "missing"}, rpc_id=9)
        )
        await send(
            "v1-rpc-stream",
            "POST",
            "/",
            V1,
            rpc("SendStreamingMessage", {"message": _v1_message("s")}),
        )
        await send(
            "v03-rpc-send", "POST", "/", {}, rpc("message/send", {"message": _v03_message("hi")})
        )
        await send(
            "v03-rpc-send-msg",
            "POST",
            "/",
            {},
            rpc("message/send", {"message": _v03_message("msg:x")}),
        )
        await send("v03-rpc-get", "POST", "/", {}, rpc("tasks/get", {"id": task_id}))
        await send(
            "v03-rpc-get-missing", "POST", "/", {}, rpc("tasks/get", {"id": "missing"}, rpc_id=9)
        )
        await send(
            "v03-rpc-stream", "POST", "/", {}, rpc("message/stream", {"message": _v03_message("s")})
        )
        await send("v1-rest-send", "POST", "/rest/message:send", V1, {"message": _v1_message("hi")})
        await send(
            "v1-rest-send-msg", "POST", "/rest/message:send", V1, {"message": _v1_message("msg:x")}
        )
        await send("v1-rest-get", "GET", f"/rest/tasks/{task_id}", V1)
        await send("v1-rest-get-missing", "GET", "/rest/tasks/missing", V1)
        await send(
            "v1-rest-stream", "POST", "/rest/message:stream", V1, {"message": _v1_message("s")}
        )
        await send(
            "v03-rest-send",
            "POST",
            "/rest/v1/message:send",
            V03,
            {"request": _v03_rest_message("hi")},
        )
        await send("v03-rest-get", "GET", f"/rest/v1/tasks/{task_id}", V03)
        await send(
            "v03-rest-stream",
            "POST",
            "/rest/v1/message:stream",
            V03,
            {"request": _v03_rest_message("s")},
        )
    return found


@pytest.fixture(scope="module")
def echo() -> dict[str, Exchange]:
    return asyncio.run(_echo_exchanges())


def _result_task(exchange: Exchange) -> tuple[str, str]:
    """The task and context the SDK put in its answer, found by the test's own walk."""
    value = json_of(exchange.body)
    value = value.get("result", value) if exchange.call.is_jsonrpc else value
    task = value.get("task", value)
    return task["id"], task["contextId"]


@pytest.mark.parametrize(
    "name",
    [
        f"{dialect}-{operation}"
        for dialect in ("v1-rpc", "v03-rpc", "v1-rest", "v03-rest")
        for operation in ("send", "get")
    ],
)
def test_task_ids_in_result(echo: dict[str, Exchange], name: str) -> None:
    exchange = echo[name]
    assert exchange.status == 200
    assert task_ids_in_result(exchange.call, exchange.body, max_depth=DEPTH) == _result_task(
        exchange
    )


@pytest.mark.parametrize("name", ["v1-rpc-send-msg", "v03-rpc-send-msg", "v1-rest-send-msg"])
def test_message_result_has_context_but_no_task(echo: dict[str, Exchange], name: str) -> None:
    exchange = echo[name]
    task_id, context_id = task_ids_in_result(exchange.call, exchange.body, max_depth=DEPTH)
    assert task_id is None
    assert context_id is not None and context_id.encode() in exchange.body


@pytest.mark.parametrize(
    "name", ["v1-rpc-get-missing", "v03-rpc-get-missing", "v1-rest-get-missing"]
)
def test_error_results_have_no_ids(echo: dict[str, Exchange], name: str) -> None:
    exchange = echo[name]
    assert task_ids_in_result(exchange.call, exchange.body, max_depth=DEPTH) == (None, None)


@pytest.mark.parametrize(
    "name", ["v1-rpc-stream", "v03-rpc-stream", "v1-rest-stream", "v03-rest-stream"]
)
def test_task_ids_in_every_stream_event(echo: dict[str, Exchange], name: str) -> None:
    exchange = echo[name]
    assert exchange.content_type.startswith("text/event-stream")
    events = [data for data in exchange.events() if data]
    assert len(events) == 4  # task, working, artifact, completed
    ids = {task_ids_in_event(data, max_depth=DEPTH) for data in events}
    assert len(ids) == 1
    task_id, context_id = ids.pop()
    assert task_id is not None and context_id is not None
    assert all(task_id.encode() in data and context_id.encode() in data for data in events)


@pytest.mark.parametrize(
    ("data", "ids"),
    [
        ('{"result":{"task":{"id":"t","contextId":"c"}},"id":1,"jsonrpc":"2.0"}', ("t", "c")),
        ('{"result":{"message":{"taskId":"t","contextId":"c"}},"jsonrpc":"2.0"}', ("t", "c")),
        ('{"result":{"statusUpdate":{"taskId":"t","contextId":"c"}},"jsonrpc":"2.0"}', ("t", "c")),
        (
            '{"result":{"artifactUpdate":{"taskId":"t","contextId":"c"}},"jsonrpc":"2.0"}',
            ("t", "c"),
        ),
        ('{"result":{"kind":"task","id":"t","contextId":"c"},"jsonrpc":"2.0"}', ("t", "c")),
        (
            '{"result":{"kind":"message","messageId":"m","contextId":"c"},"jsonrpc":"2.0"}',
            (None, "c"),
        ),
        (
            '{"result":{"kind":"status-update","taskId":"t","contextId":"c"},"jsonrpc":"2.0"}',
            ("t", "c"),
        ),
        ('{"result":{"kind":"artifact-update","taskId":"t","contextId":"c"}}', ("t", "c")),
        ('{"task":{"id":"t","contextId":"c"}}', ("t", "c")),
        ('{"statusUpdate":{"taskId":"t","contextId":"c"}}', ("t", "c")),
        ('{"status_update":{"task_id":"t","context_id":"c"}}', ("t", "c")),
        ('{"msg":{"task_id":"t","context_id":"c"}}', ("t", "c")),
        ('{"error":{"code":-32001,"message":"x"},"jsonrpc":"2.0","id":1}', (None, None)),
        ('{"error":{"code":404,"status":"NOT_FOUND"}}', (None, None)),
        ('{"result":null,"jsonrpc":"2.0"}', (None, None)),
        ('{"task":{"id":"t"},"message":{"taskId":"u"}}', (None, None)),  # two oneof members
        ('{"task":{"id":"t","task_id":"u"}}', ("t", None)),
        ('{"task":{"id":7,"contextId":""}}', (None, None)),
        ('{"task":{"id":"' + "x" * 257 + '"}}', (None, None)),
        ('{"kind":"bogus","id":"t"}', (None, None)),
        ('{"id":"t","contextId":"c"}', (None, None)),  # a bare Task is not a StreamResponse
        ("[]", (None, None)),
        ('"x"', (None, None)),
        ("", (None, None)),
        ("   ", (None, None)),
    ],
)
def test_task_ids_in_event_shapes(data: str, ids: tuple[str | None, str | None]) -> None:
    assert task_ids_in_event(data.encode(), max_depth=DEPTH) == ids


@pytest.mark.parametrize(
    ("method", "jsonrpc", "body", "ids"),
    [
        ("GetTask", True, '{"result":{"id":"t","contextId":"c"},"id":1}', ("t", "c")),
        ("CancelTask", False, '{"id":"t","contextId":"c","kind":"task"}', ("t", "c")),
        ("GetTask", False, '{"id":"t","contextId":"c","kind":"message"}', (None, None)),
        ("GetTask", False, '{"task":{"id":"t"}}', (None, None)),
        ("SendMessage", False, '{"id":"t","contextId":"c"}', (None, None)),
        ("SendMessage", True, '{"task":{"id":"t"}}', (None, None)),  # not an envelope
        ("ListTasks", False, '{"tasks":[{"id":"t","contextId":"c"}]}', (None, None)),
        ("CreateTaskPushNotificationConfig", False, '{"taskId":"t","url":"u"}', (None, None)),
        ("GET /x", False, '{"task":{"id":"t"}}', (None, None)),
        ("DeleteTaskPushNotificationConfig", False, "", (None, None)),
    ],
)
def test_task_ids_in_result_shapes(
    method: str, jsonrpc: bool, body: str, ids: tuple[str | None, str | None]
) -> None:
    call = Call(method, 1 if jsonrpc else None, is_jsonrpc=jsonrpc, protocol="a2a")
    assert task_ids_in_result(call, body.encode(), max_depth=DEPTH) == ids


@pytest.mark.parametrize("data", [b"{", b"data: {}", b'{"a":1,"a":2}', b"\xff"])
def test_response_readers_refuse_malformed_json(data: bytes) -> None:
    call = Call("SendMessage", 1, is_jsonrpc=True, protocol="a2a")
    with pytest.raises(MalformedInput):
        task_ids_in_result(call, data, max_depth=DEPTH)
    with pytest.raises(MalformedInput):
        task_ids_in_event(data, max_depth=DEPTH)


# =========================================================================== errors
def _every_error() -> Iterator[BatonError]:
    for cls in ERRORS_BY_CODE.values():
        yield cls(SECRET)


@pytest.mark.parametrize("error", list(_every_error()), ids=lambda error: error.code)
def test_jsonrpc_error_rendering(error: BatonError) -> None:
    status, content_type, body = render_a2a_error(
        error, rpc_id="r-1", trace_id="trace-7", binding=JSONRPC
    )
    assert content_type == "application/json"
    assert SECRET.encode() not in body
    value = json_of(body)
    assert set(value) == {"jsonrpc", "id", "error"}
    assert (value["jsonrpc"], value["id"]) == ("2.0", "r-1")
    rpc_error = value["error"]
    assert set(rpc_error) == {"code", "message", "data"}
    if isinstance(error, TaskNotFound | UnsupportedVersion):
        assert status == 200  # the protocol's own error: the SDK client maps it
        return
    assert status == error.http_status
    expected = PARSE_ERROR if error.code == "malformed_input" else RPC_CODES.get(status, -32603)
    assert rpc_error["code"] == expected
    assert not -32009 <= rpc_error["code"] <= -32001  # never an A2A code (ADR 0012)
    assert rpc_error["message"] == error.public_message
    assert rpc_error["data"] == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": error.code.upper(),
            "domain": "baton.dev",
            "metadata": {
                "trace_id": "trace-7",
                "retryable": "true" if error.retryable else "false",
            },
        }
    ]


@pytest.mark.parametrize("error", list(_every_error()), ids=lambda error: error.code)
def test_rest_error_rendering(error: BatonError) -> None:
    status, content_type, body = render_a2a_error(
        error, rpc_id=5, trace_id="trace-7", binding=HTTP_JSON
    )
    assert content_type == "application/json"
    assert SECRET.encode() not in body
    payload = json_of(body)["error"]
    assert set(payload) == {"code", "status", "message", "details"}
    assert payload["code"] == status
    (info,) = payload["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    if isinstance(error, TaskNotFound | UnsupportedVersion):
        assert info["domain"] == "a2a-protocol.org"
        return
    assert status == error.http_status
    assert payload["status"] == GRPC_STATUS[status]
    assert payload["message"] == error.public_message
    assert (info["reason"], info["domain"]) == (error.code.upper(), "baton.dev")
    assert info["metadata"]["trace_id"] == "trace-7"


def test_task_not_found_is_exactly_the_sdks() -> None:
    """A task the gateway hides must be indistinguishable from one that does not exist (§13.1)."""
    _, _, body = render_a2a_error(TaskNotFound(SECRET), rpc_id=9, trace_id="t", binding=JSONRPC)
    assert json_of(body) == build_error_response(9, TaskNotFoundError())
    _, _, body = render_a2a_error(
        TaskNotFound(SECRET), rpc_id=9, trace_id="t", binding=JSONRPC, version="0.3"
    )
    # Imported through the dispatcher: importing the adapter module first is an SDK import cycle.
    to_v03_error = sys.modules[JSONRPC03Adapter.__module__]._to_v03_jsonrpc_error
    v03_error = to_v03_error(TaskNotFoundError()).model_dump(by_alias=True)
    assert json_of(body) == {"jsonrpc": "2.0", "id": 9, "error": v03_error}
    status, _, body = render_a2a_error(
        TaskNotFound(SECRET), rpc_id=9, trace_id="t", binding=HTTP_JSON
    )
    assert (status, json_of(body)) == (404, build_rest_error_payload(TaskNotFoundError()))


@pytest.mark.parametrize(
    ("name", "binding", "version"),
    [
        ("v1-rpc-get-missing", JSONRPC, "1.0"),
        ("v03-rpc-get-missing", JSONRPC, "0.3"),
        ("v1-rest-get-missing", HTTP_JSON, "1.0"),
    ],
)
def test_task_not_found_matches_the_live_server(
    echo: dict[str, Exchange], name: str, binding: str, version: str
) -> None:
    upstream = echo[name]
    status, content_type, body = render_a2a_error(
        TaskNotFound(SECRET), rpc_id=9, trace_id="t", binding=binding, version=version
    )
    assert (status, content_type) == (upstream.status, upstream.content_type)
    assert body == upstream.body  # byte for byte: a hidden task looks exactly like a missing one


def test_sdk_clients_read_our_errors_as_the_protocols() -> None:
    transport = JsonRpcTransport(httpx.AsyncClient(), ECHO_CARD, "http://up/")
    _, _, body = render_a2a_error(TaskNotFound(), rpc_id=1, trace_id="t", binding=JSONRPC)
    assert isinstance(transport._create_jsonrpc_error(json_of(body)["error"]), TaskNotFoundError)
    _, _, body = render_a2a_error(TaskNotFound(), rpc_id=None, trace_id="t", binding=HTTP_JSON)
    assert isinstance(_parse_rest_error(json_of(body), "x"), TaskNotFoundError)
    _, _, body = render_a2a_error(PolicyDenied(), rpc_id=None, trace_id="t", binding=HTTP_JSON)
    assert _parse_rest_error(json_of(body), "x") is None  # a gateway refusal, not an A2A error


def test_unsupported_version_uses_the_a2a_code() -> None:
    status, _, body = render_a2a_error(
        UnsupportedVersion(SECRET), rpc_id=1, trace_id="t", binding=JSONRPC
    )
    error = json_of(body)["error"]
    assert (status, error["code"]) == (200, -32009)
    assert error["data"][0]["reason"] == "VERSION_NOT_SUPPORTED"
    status, _, body = render_a2a_error(
        UnsupportedVersion(), rpc_id=1, trace_id="t", binding=HTTP_JSON
    )
    payload = json_of(body)["error"]
    assert (status, payload["status"], payload["details"][0]["reason"]) == (
        400,
        "FAILED_PRECONDITION",
        "VERSION_NOT_SUPPORTED",
    )


@pytest.mark.parametrize(("retry_after", "text"), [(30.0, "30"), (2.5, "2.5"), (0, "0")])
def test_retry_after_in_metadata(retry_after: float, text: str) -> None:
    error = RateLimited(SECRET, retry_after=retry_after)
    for binding in (JSONRPC, HTTP_JSON):
        status, _, body = render_a2a_error(error, rpc_id=1, trace_id="t", binding=binding)
        value = json_of(body)
        info = (value["error"].get("data") or value["error"].get("details"))[0]
        assert status == 429
        assert info["metadata"] == {"trace_id": "t", "retryable": "true", "retry_after": text}


def test_rendered_error_is_compact() -> None:
    _, _, body = render_a2a_error(PolicyDenied(), rpc_id=1, trace_id="t", binding=JSONRPC)
    assert b": " not in body and b", " not in body
