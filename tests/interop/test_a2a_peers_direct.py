"""The a2a-sdk peers of :mod:`tests.interop.a2a_peers`, talking directly (no gateway).

These pin what the gateway tests rely on: the SDK server and the SDK client
agree on both bindings (A2A v1.0 s9 JSON-RPC, s11 HTTP+JSON), streaming and
resubscription work against a live task, the v0.3 compat path answers the
literal v0.3 bodies, and the error shapes are the ones ``protocols.md``
recorded. One test runs the runner over mutual TLS, since gateway tests use it
that way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types import AgentCard
from a2a.utils.errors import (
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from a2a.utils.proto_utils import warn_on_missing_required_fields
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keys import strictjson
from keys.x509 import DevCertificateAuthority
from tests.interop.a2a_peers import (
    JSONRPC,
    REST,
    AgentControl,
    Binding,
    as_v03_card,
    build_a2a_app,
    cancel_task,
    control_of,
    fetch_card,
    get_task,
    get_task_v03,
    mtls_server_context,
    post_jsonrpc,
    run_a2a_peer,
    send_text,
    send_v03,
    serve_asgi,
    set_push_config,
    subscribe,
)

BINDINGS = pytest.mark.parametrize("binding", [JSONRPC, REST])
Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Peer:
    base_url: str
    control: AgentControl
    http: httpx.AsyncClient
    card: AgentCard


class BearerAuth(httpx.Auth):
    """Stands in for the auth callable a gateway test puts on the client."""

    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    async with (
        run_a2a_peer() as running,
        httpx.AsyncClient(timeout=5.0, auth=BearerAuth("t0k3n")) as http,
    ):
        card = await fetch_card(http, running.base_url)
        yield Peer(running.base_url, running.control, http, card)


def _state(task: Json) -> str:
    return str(task["status"]["state"])


def _artifact_texts(task: Json) -> list[str]:
    return [part["text"] for artifact in task.get("artifacts", []) for part in artifact["parts"]]


def _kinds(events: list[Json]) -> list[str]:
    return [next(iter(event)) for event in events]


async def _park(peer: Peer, binding: Binding, text: str = "wait:slow") -> str:
    """Start a ``wait:`` task, return its id once it sits WORKING with its artifact."""
    [reply] = await send_text(peer.http, peer.card, text, binding=binding, return_immediately=True)
    task_id = str(reply["task"]["id"])
    await peer.control.wait_parked(task_id)
    return task_id


# --------------------------------------------------------------------------- card


async def test_card_advertises_both_bindings_at_the_public_url(peer: Peer) -> None:
    card = peer.card
    assert warn_on_missing_required_fields(card, "served card")
    interfaces = [
        (i.protocol_binding, i.url, i.protocol_version) for i in card.supported_interfaces
    ]
    assert interfaces == [
        ("JSONRPC", peer.base_url + "/", "1.0"),
        ("HTTP+JSON", peer.base_url + "/rest", "1.0"),
    ]
    assert card.capabilities.streaming and card.capabilities.push_notifications
    assert [skill.id for skill in card.skills] == ["echo"]


async def test_card_follows_a_changed_public_url(peer: Peer) -> None:
    peer.control.public_url = "https://gateway.example/u/assistant"
    card = await fetch_card(peer.http, peer.base_url)
    assert [i.url for i in card.supported_interfaces] == [
        "https://gateway.example/u/assistant/",
        "https://gateway.example/u/assistant/rest",
    ]


async def test_card_response_is_json_with_a_weak_etag(peer: Peer) -> None:
    response = await peer.http.get(peer.base_url + "/.well-known/agent-card.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["etag"].startswith('W/"')
    body = strictjson.loads(response.content)
    assert body["supportedInterfaces"][0]["protocolBinding"] == "JSONRPC"


# --------------------------------------------------------------------------- SendMessage


@BINDINGS
async def test_send_message_completes_a_task(peer: Peer, binding: Binding) -> None:
    [reply] = await send_text(peer.http, peer.card, "hello", binding=binding)
    task = reply["task"]
    assert _state(task) == "TASK_STATE_COMPLETED"
    assert _artifact_texts(task) == ["echo: hello"]
    assert task["history"][0]["parts"] == [{"text": "hello"}]


@BINDINGS
async def test_send_message_with_msg_prefix_answers_a_bare_message(
    peer: Peer, binding: Binding
) -> None:
    [reply] = await send_text(peer.http, peer.card, "msg:hi", binding=binding)
    assert reply["message"]["role"] == "ROLE_AGENT"
    assert reply["message"]["parts"] == [{"text": "echo: hi"}]


@BINDINGS
async def test_streaming_send_yields_the_task_lifecycle(peer: Peer, binding: Binding) -> None:
    events = await send_text(peer.http, peer.card, "hello", binding=binding, streaming=True)
    assert _kinds(events) == ["task", "statusUpdate", "artifactUpdate", "statusUpdate"]
    assert _state(events[0]["task"]) == "TASK_STATE_SUBMITTED"
    assert _state(events[1]["statusUpdate"]) == "TASK_STATE_WORKING"
    assert events[2]["artifactUpdate"]["artifact"]["parts"] == [{"text": "echo: hello"}]
    assert _state(events[3]["statusUpdate"]) == "TASK_STATE_COMPLETED"


@BINDINGS
async def test_input_prefix_stops_in_input_required_and_resumes(
    peer: Peer, binding: Binding
) -> None:
    [first] = await send_text(peer.http, peer.card, "input:which order?", binding=binding)
    task = first["task"]
    assert _state(task) == "TASK_STATE_INPUT_REQUIRED"
    assert task["status"]["message"]["parts"] == [{"text": "more input, please"}]
    [second] = await send_text(
        peer.http,
        peer.card,
        "order 42",
        binding=binding,
        task_id=task["id"],
        context_id=task["contextId"],
    )
    resumed = second["task"]
    assert resumed["id"] == task["id"]
    assert _state(resumed) == "TASK_STATE_COMPLETED"
    assert _artifact_texts(resumed)[-1] == "echo: order 42"


# --------------------------------------------------------------------------- tasks


@BINDINGS
async def test_get_task_returns_the_stored_task(peer: Peer, binding: Binding) -> None:
    [reply] = await send_text(peer.http, peer.card, "hello", binding=binding)
    task = await get_task(peer.http, peer.card, reply["task"]["id"], binding=binding)
    assert task["id"] == reply["task"]["id"]
    assert _state(task) == "TASK_STATE_COMPLETED"
    assert _artifact_texts(task) == ["echo: hello"]


@BINDINGS
async def test_subscribe_to_a_live_task_then_release_it(peer: Peer, binding: Binding) -> None:
    task_id = await _park(peer, binding)
    events = await subscribe(
        peer.http,
        peer.card,
        task_id,
        binding=binding,
        on_first=lambda _snapshot: peer.control.release(task_id),
    )
    assert _kinds(events) == ["task", "statusUpdate"]
    snapshot = events[0]["task"]
    assert _state(snapshot) == "TASK_STATE_WORKING"
    assert _artifact_texts(snapshot) == ["echo: slow"]
    assert _state(events[1]["statusUpdate"]) == "TASK_STATE_COMPLETED"


@BINDINGS
async def test_subscribe_to_a_finished_task_is_unsupported(peer: Peer, binding: Binding) -> None:
    [reply] = await send_text(peer.http, peer.card, "hello", binding=binding)
    with pytest.raises(UnsupportedOperationError):
        await subscribe(peer.http, peer.card, reply["task"]["id"], binding=binding)


@BINDINGS
async def test_cancel_a_live_task(peer: Peer, binding: Binding) -> None:
    task_id = await _park(peer, binding)
    cancelled = await cancel_task(peer.http, peer.card, task_id, binding=binding)
    assert cancelled["id"] == task_id
    assert _state(cancelled) == "TASK_STATE_CANCELED"
    assert peer.control.cancelled == [task_id]
    stored = await get_task(peer.http, peer.card, task_id, binding=binding)
    assert _state(stored) == "TASK_STATE_CANCELED"


@BINDINGS
async def test_cancel_a_finished_task_is_refused(peer: Peer, binding: Binding) -> None:
    [reply] = await send_text(peer.http, peer.card, "hello", binding=binding)
    with pytest.raises(TaskNotCancelableError):
        await cancel_task(peer.http, peer.card, reply["task"]["id"], binding=binding)


@BINDINGS
async def test_sdk_client_raises_task_not_found(peer: Peer, binding: Binding) -> None:
    with pytest.raises(TaskNotFoundError):
        await get_task(peer.http, peer.card, "no-such-task", binding=binding)


# --------------------------------------------------------------------------- error shapes


async def test_jsonrpc_unknown_task_error_shape(peer: Peer) -> None:
    reply = await post_jsonrpc(peer.http, peer.base_url + "/", "GetTask", {"id": "nope"})
    assert reply == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {
            "code": -32001,
            "message": "Task not found",
            "data": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "TASK_NOT_FOUND",
                    "domain": "a2a-protocol.org",
                    "metadata": {},
                }
            ],
        },
    }


async def test_rest_unknown_task_error_shape(peer: Peer) -> None:
    response = await peer.http.get(
        peer.base_url + "/rest/tasks/nope", headers={"A2A-Version": "1.0"}
    )
    assert response.status_code == 404
    # Errors are application/json; successes are application/a2a+json.
    assert response.headers["content-type"] == "application/json"
    error = strictjson.loads(response.content)["error"]
    assert (error["code"], error["status"]) == (404, "NOT_FOUND")
    assert error["message"] == "Task not found"
    assert error["details"][0]["reason"] == "TASK_NOT_FOUND"


async def test_rest_success_is_a2a_json(peer: Peer) -> None:
    body = {"message": {"messageId": "m-1", "role": "ROLE_USER", "parts": [{"text": "msg:x"}]}}
    response = await peer.http.post(
        peer.base_url + "/rest/message:send", json=body, headers={"A2A-Version": "1.0"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/a2a+json"
    assert strictjson.loads(response.content)["message"]["parts"] == [{"text": "echo: x"}]


async def test_v1_method_without_version_header_is_version_not_supported(peer: Peer) -> None:
    reply = await post_jsonrpc(
        peer.http, peer.base_url + "/", "GetTask", {"id": "nope"}, version=None
    )
    assert reply["error"]["code"] == -32009
    assert reply["error"]["data"][0]["reason"] == "VERSION_NOT_SUPPORTED"


async def test_unknown_method_is_method_not_found(peer: Peer) -> None:
    reply = await post_jsonrpc(peer.http, peer.base_url + "/", "tasks/explode", {})
    assert reply["error"] == {"code": -32601, "message": "Method not found"}


# --------------------------------------------------------------------------- v0.3


async def test_v03_message_send_and_tasks_get(peer: Peer) -> None:
    sent = await send_v03(peer.http, peer.base_url + "/", "hello v0.3")
    task = sent["result"]
    assert (task["kind"], task["status"]["state"]) == ("task", "completed")
    assert task["artifacts"][0]["parts"] == [{"kind": "text", "text": "echo: hello v0.3"}]
    assert task["history"][0]["messageId"] == "m-1"
    fetched = await get_task_v03(peer.http, peer.base_url + "/", task["id"])
    assert fetched["result"]["id"] == task["id"]
    assert fetched["result"]["status"]["state"] == "completed"
    v03_posts = [r for r in peer.control.requests_to("/") if b'"message/send"' in r.body]
    assert [r.header("a2a-version") for r in v03_posts] == [None]


async def test_v03_message_send_with_msg_prefix(peer: Peer) -> None:
    sent = await send_v03(peer.http, peer.base_url + "/", "msg:hi")
    message = sent["result"]
    assert (message["kind"], message["role"]) == ("message", "agent")
    assert message["parts"] == [{"kind": "text", "text": "echo: hi"}]


async def test_v03_unknown_task_error_shape(peer: Peer) -> None:
    reply = await get_task_v03(peer.http, peer.base_url + "/", "nope")
    # v0.3 errors carry "data": null, not the v1.0 ErrorInfo list.
    assert reply == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32001, "message": "Task not found", "data": None},
    }


@BINDINGS
async def test_sdk_v03_compat_client(peer: Peer, binding: Binding) -> None:
    legacy = as_v03_card(peer.card)
    [reply] = await send_text(peer.http, legacy, "hello", binding=binding)
    assert _artifact_texts(reply["task"]) == ["echo: hello"]
    task = await get_task(peer.http, legacy, reply["task"]["id"], binding=binding)
    assert _state(task) == "TASK_STATE_COMPLETED"
    # v0.3 REST lives under /rest/v1/...; v0.3 JSON-RPC shares "/" with v1.0.
    send_path = "/" if binding == JSONRPC else "/rest/v1/message:send"
    [*_, last_send] = peer.control.requests_to(send_path)
    assert last_send.header("a2a-version") == "0.3"


# --------------------------------------------------------------------------- recording


async def test_recorder_sees_method_path_headers_and_body(peer: Peer) -> None:
    await send_text(peer.http, peer.card, "hello", binding=REST)
    [card_get] = peer.control.requests_to("/.well-known/agent-card.json")
    assert card_get.method == "GET"
    assert card_get.header("a2a-version") is None
    [send] = peer.control.requests_to("/rest/message:send")
    assert send.method == "POST"
    assert send.header("Authorization") == "Bearer t0k3n"
    assert send.header("A2A-Version") == "1.0"
    assert strictjson.loads(send.body)["message"]["parts"] == [{"text": "hello"}]


async def test_streaming_request_headers(peer: Peer) -> None:
    await send_text(peer.http, peer.card, "hello", binding=JSONRPC, streaming=True)
    [stream] = peer.control.requests_to("/")
    assert stream.header("accept") == "text/event-stream"
    assert stream.header("cache-control") == "no-store"
    assert strictjson.loads(stream.body)["method"] == "SendStreamingMessage"


# --------------------------------------------------------------------------- push


async def test_push_notifications_reach_the_webhook() -> None:
    received: list[Json] = []
    arrived = asyncio.Event()

    async def webhook(request: Request) -> Response:
        received.append(
            {"token": request.headers.get("x-a2a-notification-token"), "body": await request.body()}
        )
        if b"TASK_STATE_COMPLETED" in received[-1]["body"]:
            arrived.set()
        return Response(status_code=204)

    hooks = Starlette(routes=[Route("/hook", webhook, methods=["POST"])])
    async with (
        serve_asgi(hooks, lifespan="off") as hook_port,
        httpx.AsyncClient(timeout=5.0) as push_http,
        run_a2a_peer(push_http=push_http) as running,
        httpx.AsyncClient(timeout=5.0) as http,
    ):
        card = await fetch_card(http, running.base_url)
        await send_text(
            http,
            card,
            "hello",
            binding=JSONRPC,
            push_url=f"http://127.0.0.1:{hook_port}/hook",
            push_token="secret-1",
        )
        await asyncio.wait_for(arrived.wait(), 5.0)
    assert received
    assert {item["token"] for item in received} == {"secret-1"}


@BINDINGS
async def test_set_push_config_is_stored(peer: Peer, binding: Binding) -> None:
    [reply] = await send_text(peer.http, peer.card, "hello", binding=binding)
    task_id = reply["task"]["id"]
    stored = await set_push_config(
        peer.http, peer.card, task_id, "https://hooks.example.com/a2a", binding=binding, token="t"
    )
    assert (stored["taskId"], stored["url"], stored["token"]) == (
        task_id,
        "https://hooks.example.com/a2a",
        "t",
    )
    assert stored["id"]


# --------------------------------------------------------------------------- TLS runner


def _write_pair(directory: Path, name: str, chain_pem: bytes, key_pem: bytes) -> tuple[str, str]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(chain_pem)
    key.write_bytes(key_pem)
    key.chmod(0o600)
    return str(cert), str(key)


async def test_serve_asgi_over_mutual_tls(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ca = DevCertificateAuthority.create("baton.local", now=now)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    server = ca.issue(
        "spiffe://baton.local/agent/assistant",
        usage="server",
        now=now,
        ip_addresses=("127.0.0.1",),
    )
    client = ca.issue("spiffe://baton.local/agent/support", usage="client", now=now)
    server_cert, server_key = _write_pair(tmp_path, "server", server.chain_pem, server.key_pem)
    client_cert, client_key = _write_pair(tmp_path, "client", client.chain_pem, client.key_pem)

    with_cert = ssl.create_default_context(cafile=str(ca_file))
    with_cert.load_cert_chain(client_cert, client_key)
    without_cert = ssl.create_default_context(cafile=str(ca_file))
    context = mtls_server_context(server_cert, server_key, str(ca_file))

    async with run_a2a_peer(ssl_context=context) as running:
        assert running.base_url.startswith("https://")
        async with httpx.AsyncClient(timeout=5.0, verify=with_cert) as http:
            card = await fetch_card(http, running.base_url)
            [reply] = await send_text(http, card, "msg:over tls", binding=REST)
            assert reply["message"]["parts"] == [{"text": "echo: over tls"}]
        async with httpx.AsyncClient(timeout=5.0, verify=without_cert) as http:
            with pytest.raises(httpx.TransportError):
                await http.get(running.base_url + "/.well-known/agent-card.json")
    assert [r.path for r in running.control.requests] == [
        "/.well-known/agent-card.json",
        "/rest/message:send",
    ]


async def test_build_a2a_app_serves_under_a_caller_chosen_url() -> None:
    app = build_a2a_app("https://gateway.example/u/assistant", name="helper")
    async with serve_asgi(app) as port, httpx.AsyncClient(timeout=5.0) as http:
        card = await fetch_card(http, f"http://127.0.0.1:{port}")
    assert card.name == "helper"
    assert card.supported_interfaces[0].url == "https://gateway.example/u/assistant/"
    assert control_of(app).requests[0].path == "/.well-known/agent-card.json"
