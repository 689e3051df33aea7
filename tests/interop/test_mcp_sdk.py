"""The official ``mcp`` 2.3 client and server, through the gateway, both eras.

Real TLS both sides, the agent's RFC 9421 signer on the SDK's own ``httpx2``
client, the gateway's signature verified in front of the SDK server. Each test
asserts what the SDK got, what reached the server, and what was recorded.
"""

from __future__ import annotations

import json

import pytest
from mcp import types
from mcp.shared.exceptions import MCPError

from gateway.inspect import verify_conversation
from protocol.identity import agent_id
from tests.gateway._harness import TRUST_DOMAIN
from tests.interop.conftest import Fleet
from tests.interop.mcp_peers import http_client, mcp_client

SUPPORT = str(agent_id(TRUST_DOMAIN, "support"))


def _tool_calls(fleet: Fleet) -> list[str]:
    """Tool names of the tools/call requests that reached the MCP server."""
    return [
        headers.get("mcp-name", "?")
        for method, _, headers in fleet.mcp_seen.requests
        if method == "POST" and headers.get("mcp-method") == "tools/call"
    ]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_sdk_client_lists_and_calls_tools_through_the_gateway(
    fleet: Fleet, mode: str
) -> None:
    async with (
        http_client(fleet.context("support"), fleet.signer("support")) as http,
        mcp_client(fleet.mcp_url, http, mode=mode) as client,
    ):
        expected_version = "2025-11-25" if mode == "legacy" else "2026-07-28"
        assert client.protocol_version == expected_version
        # The server has echo, add and refund; support may call echo and add, and
        # is offered nothing else (a model cannot be talked into an unseen tool).
        tools = await client.list_tools()
        assert {tool.name for tool in tools.tools} == {"echo", "add", "confirm_refund"}
        prompts = await client.list_prompts()
        assert [prompt.name for prompt in prompts.prompts] == ["apology"]
        echoed = await client.call_tool("echo", {"text": "hello gateway"})
        assert echoed.content[0].text == "echo: hello gateway"  # type: ignore[union-attr]
        added = await client.call_tool("add", {"a": 2, "b": 40})
        assert added.structured_content == {"result": 42}
        # refund is not in support's tools: the gateway refuses, the server never sees it.
        with pytest.raises(MCPError) as refused:
            await client.call_tool("refund", {"order": "o-1", "amount": 5})
        assert refused.value.error.data["code"] == "policy_denied"  # type: ignore[index]
        resource = await client.read_resource("docs://policy")
        assert "approval" in resource.contents[0].text  # type: ignore[union-attr]
    assert "refund" not in json.dumps([h for _, _, h in fleet.mcp_seen.requests])
    if mode == "legacy":  # the GET stream was held open beside the POSTs, then DELETE
        assert {m for m, _, _ in fleet.mcp_seen.requests} == {"POST", "GET", "DELETE"}
    every_request_was_signed_by_the_gateway = all(
        headers.get("baton-caller") == SUPPORT for _, _, headers in fleet.mcp_seen.requests
    )
    assert every_request_was_signed_by_the_gateway
    events = await fleet.audit_events()
    assert [e.reason for e in events if e.outcome == "rejected"] == ["policy_denied"]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_listings_show_each_caller_only_its_own_tools(fleet: Fleet, mode: str) -> None:
    async with (
        http_client(fleet.context("other"), fleet.signer("other")) as http,
        mcp_client(fleet.mcp_url, http, mode=mode) as client,
    ):
        tools = await client.list_tools()
        assert sorted(tool.name for tool in tools.tools) == ["confirm_refund", "echo"]
        prompts = await client.list_prompts()
        assert prompts.prompts == []
    # What the agent saw is what the transcript holds: the filtered listing.
    conversations = {headers.get("baton-conversation") for _, _, headers in fleet.mcp_seen.requests}
    bodies = []
    for conversation in conversations - {None}:
        for entry in await fleet.stores.transcripts.read(str(conversation)):
            if entry.kind in ("response", "stream_event"):
                bodies.append(
                    await fleet.stores.transcripts.read_body(str(conversation), entry.seq) or b""
                )
    assert any(b'"echo"' in body for body in bodies)
    assert not any(b'"refund"' in body for body in bodies)


async def test_legacy_session_is_bound_to_the_identity_that_opened_it(fleet: Fleet) -> None:
    async with (
        http_client(fleet.context("support"), fleet.signer("support")) as http,
        mcp_client(fleet.mcp_url, http, mode="legacy") as client,
    ):
        await client.call_tool("echo", {"text": "mine"})
        sessions = {
            headers["mcp-session-id"]
            for _, _, headers in fleet.mcp_seen.requests
            if "mcp-session-id" in headers
        }
        [session] = sessions
        seen_before = len(fleet.mcp_seen.requests)
        # "other" is a valid agent with its own certificate and key, allowed
        # to call echo; it presents support's session id.
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
             "params": {"name": "echo", "arguments": {"text": "hijack"}}}
        ).encode()  # fmt: skip
        async with fleet.httpx_client("other") as other:
            response = await other.post(
                fleet.mcp_url,
                content=body,
                headers={
                    "content-type": "application/json",
                    "accept": "application/json, text/event-stream",
                    "mcp-session-id": session,
                    "mcp-protocol-version": "2025-11-25",
                },
            )
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["data"]["code"] == "session_not_found"
        assert len(fleet.mcp_seen.requests) == seen_before, "the hijack reached the server"
        # The owner still uses its session.
        again = await client.call_tool("echo", {"text": "still mine"})
        assert again.content[0].text == "echo: still mine"  # type: ignore[union-attr]
    [rejected] = [e for e in await fleet.audit_events() if e.outcome == "rejected"]
    assert rejected.reason == "session_not_found"
    # The conversation is the session: its chain verifies.
    report = await verify_conversation(fleet.stores.transcripts, session)
    assert report.records >= 4


async def test_modern_header_body_mismatch_is_refused_before_policy(fleet: Fleet) -> None:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
         "params": {"name": "refund", "arguments": {"order": "o", "amount": 1},
                    "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}
    ).encode()  # fmt: skip
    async with fleet.httpx_client("support") as http:
        response = await http.post(
            fleet.mcp_url,
            content=body,
            headers={
                "content-type": "application/json",
                "accept": "application/json, text/event-stream",
                "mcp-protocol-version": "2026-07-28",
                "mcp-method": "tools/call",
                "mcp-name": "echo",  # an allowed tool named in the header, refund in the body
            },
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32020
    assert response.json()["error"]["data"]["code"] == "header_mismatch"
    assert fleet.mcp_seen.requests == []
    [event] = await fleet.audit_events()
    assert event.reason == "header_mismatch"


async def test_unsigned_sdk_traffic_is_refused(fleet: Fleet) -> None:
    async with http_client(fleet.context("support"), None) as http:
        with pytest.raises(Exception):  # noqa: B017 - the SDK wraps the 401 its own way
            async with mcp_client(fleet.mcp_url, http, mode="legacy") as client:
                await client.list_tools()
    assert fleet.mcp_seen.requests == []
    assert {e.reason for e in await fleet.audit_events()} == {"signature_missing"}


async def test_dns_rebinding_host_and_origin(fleet: Fleet) -> None:
    ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    async with fleet.httpx_client("support") as http:
        bad_origin = await http.post(
            fleet.mcp_url,
            content=ping,
            headers={"content-type": "application/json", "origin": "https://evil.example"},
        )
        # Signed for another host: the signed @authority is not this gateway (R04).
        signed_for_elsewhere = await http.post(
            fleet.mcp_url,
            content=ping,
            headers={"content-type": "application/json", "host": "evil.example"},
        )
    async with fleet.httpx_client("support", signed=False) as http:
        unsigned_elsewhere = await http.post(
            fleet.mcp_url,
            content=ping,
            headers={"content-type": "application/json", "host": "evil.example"},
        )
    got = [
        (r.status_code, r.json()["error"]["data"]["code"])
        for r in (bad_origin, signed_for_elsewhere, unsigned_elsewhere)
    ]
    assert got == [(403, "origin_rejected"), (401, "bad_audience"), (421, "misdirected_request")]
    assert fleet.mcp_seen.requests == []
    assert [e.reason for e in await fleet.audit_events()] == [
        "origin_rejected",
        "bad_audience",
        "misdirected_request",
    ]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_elicitation_round_trips_through_the_gateway(fleet: Fleet, mode: str) -> None:
    """Legacy: a server-to-client request on the stream, answered by a POST. 2026-07-28:
    MRTR: ``input_required`` with a ``requestState`` the gateway binds to support, then
    the retry with ``inputResponses``."""
    asked: list[str] = []

    async def answer(_context: object, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"approve": True})

    async with (
        http_client(fleet.context("support"), fleet.signer("support")) as http,
        mcp_client(fleet.mcp_url, http, mode=mode, elicitation_callback=answer) as client,
    ):
        result = await client.call_tool("confirm_refund", {"order": "o-9"})
    assert asked == ["Refund order o-9?"]
    assert result.content[0].text == "refunded o-9"  # type: ignore[union-attr]
    assert [e for e in await fleet.audit_events() if e.outcome == "rejected"] == []


async def test_request_state_is_bound_to_the_caller_it_was_minted_for(fleet: Fleet) -> None:
    """support gets an ``input_required`` answer; other replays its requestState: refused."""
    call = {
        "jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x"},
                   "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                             "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}},
    }  # fmt: skip
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": "confirm_refund",
    }
    call["params"]["name"] = "confirm_refund"  # type: ignore[index]
    call["params"]["arguments"] = {"order": "o-1"}  # type: ignore[index]
    async with fleet.httpx_client("support") as http:
        first = await http.post(fleet.mcp_url, content=json.dumps(call).encode(), headers=headers)
    result = first.json()["result"]
    assert result["resultType"] == "input_required"
    state = result["requestState"]
    retry = json.loads(json.dumps(call))
    retry["params"]["requestState"] = state
    retry["params"]["inputResponses"] = {
        key: {"action": "accept", "content": {"approve": True}} for key in result["inputRequests"]
    }
    seen = len(fleet.mcp_seen.requests)
    async with fleet.httpx_client("other") as http:
        # other may call confirm_refund too: only the state's binding stops it
        stolen = await http.post(fleet.mcp_url, content=json.dumps(retry).encode(), headers=headers)
    assert (stolen.status_code, stolen.json()["error"]["data"]["code"]) == (400, "invalid_request")
    assert len(fleet.mcp_seen.requests) == seen
    other_args = json.loads(json.dumps(retry))
    other_args["params"]["arguments"] = {"order": "o-2"}  # the state was minted for o-1
    async with fleet.httpx_client("support") as http:
        swapped = await http.post(
            fleet.mcp_url, content=json.dumps(other_args).encode(), headers=headers
        )
        done = await http.post(fleet.mcp_url, content=json.dumps(retry).encode(), headers=headers)
    assert (swapped.status_code, swapped.json()["error"]["data"]["code"]) == (
        400,
        "invalid_request",
    )
    assert done.json()["result"]["content"][0]["text"] == "refunded o-1"
    rejected = [(e.peer, e.reason) for e in await fleet.audit_events() if e.outcome == "rejected"]
    assert rejected == [
        (str(agent_id(TRUST_DOMAIN, "other")), "invalid_request"),
        (SUPPORT, "invalid_request"),
    ]


async def test_unknown_mcp_param_headers_are_forwarded(fleet: Fleet) -> None:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "echo", "arguments": {"text": "hi"},
                    "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                              "io.modelcontextprotocol/clientCapabilities": {}}}}
    ).encode()  # fmt: skip
    async with fleet.httpx_client("support") as http:
        response = await http.post(
            fleet.mcp_url,
            content=body,
            headers={
                "content-type": "application/json",
                "accept": "application/json, text/event-stream",
                "mcp-protocol-version": "2026-07-28",
                "mcp-method": "tools/call",
                "mcp-name": "echo",
                "mcp-param-region": "eu-west",
            },
        )
    assert response.status_code == 200, response.text
    [(_, _, headers)] = fleet.mcp_seen.requests
    assert headers["mcp-param-region"] == "eu-west"
