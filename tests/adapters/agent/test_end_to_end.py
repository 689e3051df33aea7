"""The official SDKs end to end: signer -> gateway checks -> GatewayVerifier -> SDK server.

One uvicorn server on a real socket runs three ASGI layers:

1. :class:`GatewayStandIn` checks each request's agent signature exactly as
   gateway/proxy.py does (routing headers present must be covered), then
   re-signs it the way ``_forward`` does (its own key, ``Baton-Caller``, a
   fresh nonce);
2. :class:`GatewayVerifier` checks that signature;
3. the SDK's own server app (``MCPServer`` streamable HTTP, or an a2a-sdk
   JSON-RPC agent), behind a spy that records the verified call.

The clients are the SDKs' own (``mcp.Client`` over ``streamable_http_client``
with ``httpx2``; ``a2a.client.create_client`` with ``httpx``), each given an
HTTP client whose ``auth=`` is a :class:`RequestSigner`. Whatever the SDK
sends must survive all of it; the A2A run also carries a capsule through.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import pytest
from a2a.client import ClientConfig, create_client
from a2a.helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    Message,
    Role,
    SendMessageRequest,
)
from google.protobuf import json_format
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette

from adapters.agent import (
    GatewayVerifier,
    RequestSigner,
    VerifiedCall,
    a2a_capsule_part,
    find_a2a_capsules,
    open_capsules,
)
from keys.keyset import KeySet, PrivateKeySet
from keys.material import PrivateKey
from protocol.capsule import seal_capsule_at
from protocol.directory import KeyDirectory
from tests.adapters.agent._support import GatewayStandIn, bind_loopback, serve_asgi

ALPHA = "spiffe://baton.local/agent/alpha"
BETA = "spiffe://baton.local/agent/beta"
CARD_PATH = "/.well-known/agent-card.json"


@dataclass
class Chain:
    """Keys and the three layers, for one SDK server app."""

    agent_key: PrivateKey
    gateway_key: PrivateKey
    calls: list[VerifiedCall]
    stand_in: GatewayStandIn | None = None


def chain_around(app: Any, authority: str, *, exempt: tuple[str, ...] = ()) -> tuple[Any, Chain]:
    chain = Chain(PrivateKey.generate("ES256"), PrivateKey.generate("Ed25519"), [])

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "baton" in scope:
            assert scope["state"]["baton_caller"] == ALPHA
            chain.calls.append(scope["baton"])
        await app(scope, receive, send)

    verifier = GatewayVerifier(
        spy,
        gateway_keys=KeySet([chain.gateway_key.public]),
        authority=authority,
        exempt_paths=exempt,
    )
    chain.stand_in = GatewayStandIn(
        verifier,
        agent_keys=KeySet([chain.agent_key.public]),
        gateway_key=chain.gateway_key,
        caller=ALPHA,
    )
    return chain.stand_in, chain


def assert_every_request_went_through(chain: Chain) -> None:
    assert chain.stand_in is not None
    checked = chain.stand_in.checked
    assert checked, "the SDK sent nothing"
    assert len(chain.calls) == len(checked)  # everything checked reached the server
    assert all(call.caller == ALPHA for call in chain.calls)
    assert len({call.nonce for call in chain.calls}) == len(chain.calls)


# --------------------------------------------------------------------------- MCP


@pytest.fixture
async def mcp_chain() -> AsyncIterator[tuple[str, Chain]]:
    mcp_server = MCPServer("echo")

    @mcp_server.tool()
    def echo(text: str) -> str:
        return "echo: " + text

    sock = bind_loopback()
    app, chain = chain_around(
        mcp_server.streamable_http_app(), f"127.0.0.1:{sock.getsockname()[1]}"
    )
    async with serve_asgi(app, sock) as origin:
        yield f"{origin}/mcp", chain


async def test_mcp_sdk_through_signer_and_verifier(mcp_chain: tuple[str, Chain]) -> None:
    url, chain = mcp_chain
    async with (
        httpx2.AsyncClient(auth=RequestSigner(chain.agent_key)) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        result = await client.call_tool("echo", {"text": "through Baton"})
    assert result.structured_content == {"result": "echo: through Baton"}
    assert_every_request_went_through(chain)
    assert chain.stand_in is not None
    tool_calls = [covered for covered in chain.stand_in.checked if "mcp-name" in covered]
    assert len(tool_calls) == 1, "tools/call was not signed with its Mcp-Name"
    assert {"mcp-method", "content-digest"} <= set(tool_calls[0])


# --------------------------------------------------------------------------- A2A


class CapsuleReader(AgentExecutor):
    """Replies with the payload of the capsule it was sent, opened as BETA."""

    def __init__(self, my_keys: PrivateKeySet, senders: KeyDirectory) -> None:
        self._my_keys = my_keys
        self._senders = senders

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        wire = json_format.MessageToDict(context.message)
        opened = open_capsules(
            find_a2a_capsules(wire),
            me=BETA,
            my_keys=self._my_keys,
            senders=self._senders,
            now=time.time(),
            conversation=wire.get("contextId"),
        )
        text = " | ".join(str(item.payload["secret"]) for item in opened)
        await event_queue.enqueue_event(new_text_message(f"opened: {text}"))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


def agent_card(origin: str) -> AgentCard:
    return AgentCard(
        name="beta",
        description="reads capsules",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=origin + "/", protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["application/json"],
        default_output_modes=["text/plain"],
    )


@dataclass
class A2AChain:
    origin: str
    chain: Chain
    alpha_sig: PrivateKey
    beta_enc: PrivateKeySet


@pytest.fixture
async def a2a_chain() -> AsyncIterator[A2AChain]:
    alpha_sig, beta_enc = PrivateKey.generate("Ed25519"), PrivateKeySet.generate("ECDH-ES+A256KW")
    senders = KeyDirectory({ALPHA: KeySet([alpha_sig.public])})
    sock = bind_loopback()
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    card = agent_card(origin)
    handler = DefaultRequestHandler(
        agent_executor=CapsuleReader(beta_enc, senders),
        task_store=InMemoryTaskStore(),
        agent_card=card,
    )
    starlette = Starlette(
        routes=[
            *create_agent_card_routes(card, card_url=CARD_PATH),
            *create_jsonrpc_routes(handler, "/"),
        ]
    )
    app, chain = chain_around(starlette, origin.removeprefix("http://"), exempt=(CARD_PATH,))
    async with serve_asgi(app, sock):
        yield A2AChain(origin, chain, alpha_sig, beta_enc)


async def test_a2a_sdk_carries_a_capsule_through_signer_and_verifier(a2a_chain: A2AChain) -> None:
    chain = a2a_chain.chain
    capsule = seal_capsule_at(
        {"secret": "only beta reads this"},
        sender=ALPHA,
        signing_key=a2a_chain.alpha_sig,
        recipients={BETA: a2a_chain.beta_enc.public()},
        conversation="ctx-e2e",
        now=time.time(),
    )
    message = json_format.ParseDict(
        {
            "messageId": "m-1",
            "contextId": "ctx-e2e",
            "role": "ROLE_USER",
            "parts": [a2a_capsule_part(capsule)],
        },
        Message(),
    )
    assert message.role == Role.ROLE_USER
    async with httpx.AsyncClient(auth=RequestSigner(chain.agent_key)) as http:
        client = await create_client(
            agent_card(a2a_chain.origin), ClientConfig(streaming=False, httpx_client=http)
        )
        try:
            events = [
                json_format.MessageToDict(event)
                async for event in client.send_message(SendMessageRequest(message=message))
            ]
        finally:
            await client.close()
    (event,) = events
    assert event["message"]["parts"][0]["text"] == "opened: only beta reads this"
    assert_every_request_went_through(chain)
    assert chain.stand_in is not None
    assert all("a2a-version" in covered for covered in chain.stand_in.checked)
