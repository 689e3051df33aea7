"""The official ``mcp`` 2.3 SDK as a real server and client, for the interop tests.

* :func:`build_mcp_server` - an ``MCPServer`` with tools ``echo``, ``add`` and
  ``refund``, a resource and a prompt; its Streamable HTTP app serves both eras
  on one endpoint (``/mcp``), as the SDK does by default.
* :func:`mcp_client` - the SDK's ``Client`` over ``streamable_http_client`` with
  a caller-supplied ``httpx2.AsyncClient`` (TLS client certificate, the
  agent's :class:`~adapters.agent.RequestSigner` as ``auth``).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Elicit, MCPServer, Resolve
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel
from starlette.applications import Starlette

from adapters.agent import RequestSigner


class Confirmation(BaseModel):
    """What the ``confirm_refund`` tool asks the user (an MCP elicitation)."""

    approve: bool


def ask_approval(order: str) -> Elicit[Confirmation]:
    """Resolver: elicit a confirmation (2026-07-28: an MRTR ``input_required`` round)."""
    return Elicit(f"Refund order {order}?", Confirmation)


def build_mcp_server(name: str = "payments") -> MCPServer:
    server = MCPServer(name)

    @server.tool()
    def confirm_refund(
        order: str, confirmation: Annotated[Confirmation, Resolve(ask_approval)]
    ) -> str:
        """Refund after the user confirms (exercises elicitation / MRTR)."""
        return f"{'refunded' if confirmation.approve else 'kept'} {order}"

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return f"echo: {text}"

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def refund(order: str, amount: int) -> str:
        """Refund an order (a tool the policy keeps from most callers)."""
        return f"refunded {amount} on {order}"

    @server.resource("docs://policy")
    def policy_doc() -> str:
        """The refund policy."""
        return "refunds over 100 need approval"

    @server.prompt()
    def apology(customer: str) -> str:
        """An apology template."""
        return f"Dear {customer}, we are sorry."

    return server


def mcp_app(server: MCPServer, *, json_response: bool = False) -> Starlette:
    """The server's Streamable HTTP app at ``/mcp``, DNS-rebinding checks on for loopback."""
    return server.streamable_http_app(
        streamable_http_path="/mcp",
        json_response=json_response,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*"],
            allowed_origins=[],
        ),
        host="127.0.0.1",
    )


def http_client(context: ssl.SSLContext, signer: RequestSigner | None) -> httpx2.AsyncClient:
    """An ``httpx2`` client as an agent builds one: its TLS identity and its signer."""
    options: dict[str, Any] = {"verify": context, "timeout": httpx2.Timeout(10.0, read=30.0)}
    if signer is not None:
        options["auth"] = signer
    return httpx2.AsyncClient(**options)


@asynccontextmanager
async def mcp_client(
    url: str, http: httpx2.AsyncClient, *, mode: str = "auto", elicitation_callback: Any = None
) -> AsyncIterator[Client]:
    """The SDK's client connected to ``url`` through ``http`` (``mode``: legacy, auto, version)."""
    transport = streamable_http_client(url, http_client=http)
    async with Client(
        transport,
        mode=mode,  # type: ignore[arg-type]
        elicitation_callback=elicitation_callback,
    ) as client:
        yield client
