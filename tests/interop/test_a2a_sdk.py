"""The official ``a2a-sdk`` 1.3 client and server, through the gateway.

Real TLS both sides, the agent's RFC 9421 signer on the SDK's own ``httpx``
client, the gateway's signature verified in front of the SDK server. v1.0
JSON-RPC and HTTP+JSON through the SDK client; v0.3 through its compat client
and as raw JSON-RPC. Plus the attacks on this surface: task IDOR, webhook SSRF.
"""

from __future__ import annotations

import json

import pytest
from a2a.utils.errors import TaskNotFoundError
from a2a.utils.signing import create_signature_verifier
from jwt.api_jwk import PyJWK

from adapters.agent_card import verify_card
from keys.keyset import KeySet
from keys.strictjson import loads
from protocol.identity import agent_id
from tests.gateway._harness import TRUST_DOMAIN
from tests.interop.a2a_peers import (
    JSONRPC,
    REST,
    Binding,
    as_v03_card,
    cancel_task,
    fetch_card,
    get_task,
    get_task_v03,
    post_jsonrpc,
    send_text,
    send_v03,
    subscribe,
)
from tests.interop.conftest import Fleet

SUPPORT = str(agent_id(TRUST_DOMAIN, "support"))
BINDINGS: list[Binding] = [JSONRPC, REST]


def _gateway_keys(fleet: Fleet) -> KeySet:
    return KeySet.from_jwks(json.loads((fleet.folder.gateway / "jwks.json").read_bytes()))


def _texts(events: list[dict[str, object]]) -> list[str]:
    """Every text part in a list of normalised SDK answers, in order."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("text"), str):
                found.append(value["text"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(events)
    return found


def _task_of(events: list[dict[str, object]]) -> dict[str, object]:
    for event in events:
        task = event.get("task")
        if isinstance(task, dict):
            return task
    raise AssertionError(f"no task in {events}")


async def test_agent_card_points_at_the_gateway_and_is_signed_by_it(fleet: Fleet) -> None:
    async with fleet.httpx_client("support") as http:
        response = await http.get(f"{fleet.a2a_url}/.well-known/agent-card.json")
        card = await fetch_card(http, fleet.a2a_url)
    assert response.status_code == 200
    urls = [interface.url for interface in card.supported_interfaces]
    assert urls and all(url.startswith(fleet.a2a_url) for url in urls), urls
    assert f"127.0.0.1:{fleet.a2a_port}" not in response.text, "the upstream's address leaked"
    served = loads(response.content, max_bytes=1 << 20, max_depth=64)
    assert set(served["securitySchemes"]) == {"baton-mtls"}
    verified = verify_card(served, _gateway_keys(fleet))
    assert verified.card["name"] == "assistant"
    # The SDK's own verifier (PyJWT) accepts it too, with the published key.
    published = {key["kid"]: key for key in _gateway_keys(fleet).to_jwks()["keys"]}
    sdk_verifier = create_signature_verifier(lambda kid, _jku: PyJWK(published[kid]), ["ES256"])
    sdk_verifier(card)
    # The served card's signature is the gateway's, over the rewritten card.
    tampered = {**served, "name": "evil"}
    with pytest.raises(Exception, match="signature"):
        verify_card(tampered, _gateway_keys(fleet))


@pytest.mark.parametrize("binding", BINDINGS)
async def test_send_get_stream_subscribe_cancel(fleet: Fleet, binding: Binding) -> None:
    async with fleet.httpx_client("support") as http:
        card = await fetch_card(http, fleet.a2a_url)
        answered = await send_text(http, card, "hello gateway", binding=binding)
        task = _task_of(answered)
        assert task["status"]["state"] == "TASK_STATE_COMPLETED"  # type: ignore[index]
        assert "echo: hello gateway" in _texts(answered)
        message = await send_text(http, card, "msg:hi", binding=binding)
        assert "echo: hi" in _texts(message)
        got = await get_task(http, card, str(task["id"]), binding=binding)
        assert got["id"] == task["id"]
        streamed = await send_text(http, card, "streamed", binding=binding, streaming=True)
        assert {next(iter(event)) for event in streamed} >= {"statusUpdate", "artifactUpdate"}
        # A live task: subscribe, then let it finish.
        parked = await send_text(http, card, "wait:later", binding=binding, return_immediately=True)
        live_id = str(_task_of(parked)["id"])
        await fleet.a2a_control.wait_parked(live_id)

        async def release(_first: dict[str, object]) -> None:
            fleet.a2a_control.release(live_id)

        events = await subscribe(http, card, live_id, binding=binding, on_first=release)
        assert events, "the subscription delivered nothing"
        cancellable = await send_text(
            http, card, "wait:cancel me", binding=binding, return_immediately=True
        )
        cancel_id = str(_task_of(cancellable)["id"])
        await fleet.a2a_control.wait_parked(cancel_id)
        cancelled = await cancel_task(http, card, cancel_id, binding=binding)
        assert cancelled["status"]["state"] == "TASK_STATE_CANCELED"
    seen = [r for r in fleet.a2a_control.requests if r.method == "POST"]
    assert seen and all(r.header("baton-caller") == SUPPORT for r in seen)
    assert all(r.header("a2a-version") == "1.0" for r in seen), "A2A-Version not forwarded"
    assert [e for e in await fleet.audit_events() if e.outcome == "rejected"] == []


async def test_contexts_are_conversations(fleet: Fleet) -> None:
    async with fleet.httpx_client("support") as http:
        card = await fetch_card(http, fleet.a2a_url)
        first = _task_of(await send_text(http, card, "one", binding=JSONRPC, context_id="ctx-7"))
        await send_text(http, card, "two", binding=JSONRPC, context_id="ctx-7")
    assert first["contextId"] == "ctx-7"
    entries = await fleet.stores.transcripts.read("a2a:ctx-7")
    assert [e.kind for e in entries] == ["request", "response", "request", "response"]
    assert all(e.protocol == "a2a" for e in entries)


async def test_v03_clients_through_the_gateway(fleet: Fleet) -> None:
    async with fleet.httpx_client("support") as http:
        card = as_v03_card(await fetch_card(http, fleet.a2a_url))
        answered = await send_text(http, card, "legacy sdk", binding=JSONRPC)
        assert "echo: legacy sdk" in _texts(answered)
        raw = await send_v03(http, fleet.a2a_url + "/", "raw legacy")
        assert raw["result"]["kind"] == "task"
        assert raw["result"]["status"]["state"] == "completed"
        again = await get_task_v03(http, fleet.a2a_url + "/", raw["result"]["id"])
        assert again["result"]["id"] == raw["result"]["id"]
    methods = [json.loads(r.body).get("method") for r in fleet.a2a_control.requests_to("/")]
    assert "message/send" in methods and "tasks/get" in methods


@pytest.mark.parametrize("binding", BINDINGS)
async def test_tasks_are_visible_only_to_their_creator(fleet: Fleet, binding: Binding) -> None:
    async with fleet.httpx_client("support") as http:
        card = await fetch_card(http, fleet.a2a_url)
        task_id = str(_task_of(await send_text(http, card, "private", binding=binding))["id"])
    seen_before = len(fleet.a2a_control.requests)
    async with fleet.httpx_client("other") as http:
        with pytest.raises(TaskNotFoundError):
            await get_task(http, card, task_id, binding=binding)
        with pytest.raises(TaskNotFoundError):
            await cancel_task(http, card, task_id, binding=binding)
        # Continuing someone else's task in a message is the same IDOR.
        with pytest.raises(TaskNotFoundError):
            await send_text(http, card, "hijack", binding=binding, task_id=task_id)
    assert len(fleet.a2a_control.requests) == seen_before, "another caller's request got through"
    rejected = [e.reason for e in await fleet.audit_events() if e.outcome == "rejected"]
    assert rejected == ["task_not_found"] * 3


async def test_list_tasks_shows_only_the_callers_tasks(fleet: Fleet) -> None:
    async with fleet.httpx_client("support") as http:
        card = await fetch_card(http, fleet.a2a_url)
        mine = str(_task_of(await send_text(http, card, "mine", binding=JSONRPC))["id"])
    async with fleet.httpx_client("other") as http:
        theirs = str(_task_of(await send_text(http, card, "theirs", binding=JSONRPC))["id"])
        listed = await post_jsonrpc(http, fleet.a2a_url + "/", "ListTasks", {})
    ids = [task["id"] for task in listed["result"]["tasks"]]
    assert ids == [theirs], ids
    assert mine not in json.dumps(listed)


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/notify",  # not https
        "https://evil.example/notify",  # not on the allow-list
        "https://127.0.0.1/notify",
        "https://2130706433/notify",  # decimal 127.0.0.1
        "https://0177.0.0.1/notify",  # octal
        "https://0x7f.1/notify",  # hex, short form
        "https://[::ffff:127.0.0.1]/notify",  # IPv4-mapped IPv6
        "https://[::ffff:a9fe:a9fe]/latest/meta-data",  # 169.254.169.254, mapped
        "https://user@hooks.example.com/notify",  # userinfo
        "",
    ],
)
async def test_push_webhooks_must_be_public_and_allow_listed(fleet: Fleet, url: str) -> None:
    params = {
        "message": {"messageId": "m-1", "role": "ROLE_USER", "parts": [{"text": "x"}]},
        "configuration": {"taskPushNotificationConfig": {"url": url}},
    }
    async with fleet.httpx_client("support") as http:
        response = await http.post(
            fleet.a2a_url + "/",
            json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": params},
            headers={"a2a-version": "1.0"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["data"][0]["reason"] == "UNSAFE_WEBHOOK"
    assert fleet.a2a_control.requests == []
    [event] = await fleet.audit_events()
    assert event.reason == "unsafe_webhook"


async def test_unsigned_a2a_client_is_refused_in_a2a_terms(fleet: Fleet) -> None:
    async with fleet.httpx_client("support", signed=False) as http:
        response = await http.post(
            fleet.a2a_url + "/rest/message:send",
            json={"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]}},
            headers={"a2a-version": "1.0"},
        )
    assert response.status_code == 401
    body = response.json()["error"]
    assert body["status"] == "UNAUTHENTICATED"
    assert body["details"][0]["reason"] == "SIGNATURE_MISSING"
    assert fleet.a2a_control.requests == []


async def test_a2a_version_and_extensions_headers_are_forwarded(fleet: Fleet) -> None:
    params = {"message": {"messageId": "m-x", "role": "ROLE_USER", "parts": [{"text": "hi"}]}}
    async with fleet.httpx_client("support") as http:
        response = await http.post(
            fleet.a2a_url + "/",
            json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": params},
            headers={"a2a-version": "1.0", "a2a-extensions": "https://ext.example/v1"},
        )
    assert response.status_code == 200, response.text
    [received] = [r for r in fleet.a2a_control.requests if r.method == "POST"]
    assert received.header("a2a-version") == "1.0"
    assert received.header("a2a-extensions") == "https://ext.example/v1"
