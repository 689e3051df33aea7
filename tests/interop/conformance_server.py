"""An MCP server for the official conformance suite's server scenarios (``mcp`` 2.3).

``@modelcontextprotocol/conformance`` 0.1.16 drives a server through named
fixtures: tools (``test_simple_text``, ``test_image_content``, ...), resources
under ``test://``, prompts (``test_simple_prompt``, ...), plus ``logging/setLevel``,
``completion/complete`` and ``resources/(un)subscribe``. Each fixture here returns
what the scenario's description in the suite asks for (the suite's
``src/scenarios/server/*.ts`` at tag ``v0.1.16``):

* server-to-client requests (sampling, elicitation) and log notifications ride
  the originating POST's SSE stream (``related_request_id``), the only stream a
  client is sure to have open (MCP 2025-11-25, Streamable HTTP, "Sending
  Messages to the Server");
* log notifications honour the level last set by ``logging/setLevel`` in the
  same session (2025-11-25 "Logging": the server sends that level and above);
* :class:`MemoryEventStore` gives every SSE event an id and replays a stream
  after ``Last-Event-ID``, and ``test_reconnection`` closes its POST stream
  mid-call, so ``server-sse-polling`` can resume (SEP-1699);
* :func:`conformance_app` turns DNS-rebinding protection on: only
  ``127.0.0.1``/``localhost`` hosts and origins (``dns-rebinding-protection``).

The SDK's deprecated conveniences (``ctx.info``, ``session.create_message``)
warn on the legacy features the suite exercises; the fixtures send the same
wire messages through ``send_notification``/``send_request`` instead, so the
server runs under ``-W error``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Final

import mcp_types as types
from mcp.server import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.message import ServerMessageMetadata
from starlette.applications import Starlette

__all__ = [
    "JSON_SCHEMA_2020_12",
    "LOOPBACK",
    "MemoryEventStore",
    "build_conformance_server",
    "conformance_app",
]

#: A 1x1 PNG and a 44-byte silent WAV: the smallest valid media the scenarios accept.
PNG_1X1: Final = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)
WAV_SILENT: Final = base64.b64encode(
    b"RIFF" + (36).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
    + (16000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    + b"data" + (0).to_bytes(4, "little")
).decode("ascii")  # fmt: skip

#: ``json-schema-2020-12``: these keywords must survive ``tools/list`` unchanged (SEP-1613).
JSON_SCHEMA_2020_12: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}

#: Host and Origin values a loopback server answers to (DNS rebinding, 2025-11-25 transports).
LOOPBACK: Final = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
)

_LEVELS: Final[tuple[types.LoggingLevel, ...]] = (
    "debug", "info", "notice", "warning", "error", "critical", "alert", "emergency",
)  # fmt: skip
_CITIES: Final = ("paris", "park", "party", "test-alpha", "test-beta")


@dataclass
class MemoryEventStore(EventStore):
    """Events kept in memory, ids increasing across streams (SEP-1699 resumability).

    Invariant: :meth:`replay_events_after` sends, in order, exactly the events of
    the stream that ``last_event_id`` belongs to that were stored after it, and
    skips priming events (``message is None``); an unknown id replays nothing.
    """

    events: dict[str, tuple[str, types.JSONRPCMessage | None]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        event_id = str(next(self._ids))
        self.events[event_id] = (stream_id, message)
        return event_id

    async def replay_events_after(
        self, last_event_id: str, send_callback: EventCallback
    ) -> str | None:
        if last_event_id not in self.events:
            return None
        stream, _ = self.events[last_event_id]
        after = int(last_event_id)
        for event_id, (owner, message) in self.events.items():
            if owner == stream and int(event_id) > after and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


@dataclass
class _State:
    """Per-server state: log level per MCP session, subscribed resource URIs."""

    levels: dict[str, types.LoggingLevel] = field(default_factory=dict)
    subscriptions: set[str] = field(default_factory=set)


def _session_id(request: Any) -> str:
    headers = getattr(request, "headers", None)
    return "" if headers is None else str(headers.get("mcp-session-id", ""))


async def _log(ctx: Context, state: _State, level: types.LoggingLevel, text: str) -> None:
    """``notifications/message`` on this request's stream, if the session's level lets it."""
    floor = state.levels.get(_session_id(ctx.request_context.request), "debug")
    if _LEVELS.index(level) < _LEVELS.index(floor):
        return
    params = types.LoggingMessageNotificationParams(level=level, data=text, logger="conformance")
    await ctx.session.send_notification(
        types.LoggingMessageNotification(params=params), related_request_id=ctx.request_id
    )


async def _elicit(ctx: Context, message: str, schema: dict[str, Any]) -> types.ElicitResult:
    """``elicitation/create`` (form mode) with a raw schema, on this request's stream."""
    result: types.ElicitResult = await ctx.session.elicit_form(
        message, schema, related_request_id=ctx.request_id
    )
    return result


def _answer(label: str, result: types.ElicitResult) -> str:
    return f"{label}: action={result.action}, content={json.dumps(result.content or {})}"


def _add_content_tools(server: MCPServer) -> None:
    @server.tool()
    def test_simple_text() -> str:
        """Returns one text block."""
        return "This is a simple text response for testing."

    @server.tool()
    def test_image_content() -> list[types.ImageContent]:
        """Returns a 1x1 PNG image block."""
        return [types.ImageContent(type="image", data=PNG_1X1, mime_type="image/png")]

    @server.tool()
    def test_audio_content() -> list[types.AudioContent]:
        """Returns a short WAV audio block."""
        return [types.AudioContent(type="audio", data=WAV_SILENT, mime_type="audio/wav")]

    @server.tool()
    def test_embedded_resource() -> list[types.EmbeddedResource]:
        """Returns an embedded text resource."""
        resource = types.TextResourceContents(
            uri="test://embedded-resource",
            mime_type="text/plain",
            text="This is an embedded resource content.",
        )
        return [types.EmbeddedResource(type="resource", resource=resource)]

    @server.tool()
    def test_multiple_content_types() -> list[types.ContentBlock]:
        """Returns text, image and embedded resource blocks together."""
        resource = types.TextResourceContents(
            uri="test://mixed-content-resource",
            mime_type="application/json",
            text=json.dumps({"test": "data", "value": 123}),
        )
        return [
            types.TextContent(type="text", text="Multiple content types test:"),
            types.ImageContent(type="image", data=PNG_1X1, mime_type="image/png"),
            types.EmbeddedResource(type="resource", resource=resource),
        ]

    @server.tool()
    def test_error_handling() -> str:
        """Always fails: the result carries isError."""
        raise ToolError("This tool intentionally returns an error for testing")


def _add_notifying_tools(server: MCPServer, state: _State) -> None:
    @server.tool()
    async def test_tool_with_logging(ctx: Context) -> str:
        """Sends three info log notifications about 50 ms apart."""
        await _log(ctx, state, "info", "Tool execution started")
        await asyncio.sleep(0.05)
        await _log(ctx, state, "info", "Tool processing data")
        await asyncio.sleep(0.05)
        await _log(ctx, state, "info", "Tool execution completed")
        return "Tool with logging executed successfully"

    @server.tool()
    async def test_tool_with_progress(ctx: Context) -> str:
        """Reports progress 0, 50 and 100 of 100 when the caller sent a progress token."""
        for step in (0, 50, 100):
            await ctx.report_progress(step, 100, f"Completed step {step} of 100")
            if step < 100:
                await asyncio.sleep(0.05)
        return "Tool with progress executed successfully"

    @server.tool()
    async def test_reconnection(ctx: Context) -> str:
        """Closes its SSE stream mid-call; the result is replayed after Last-Event-ID."""
        await _log(ctx, state, "info", "Before disconnect")
        await ctx.close_sse_stream()
        await asyncio.sleep(0.2)
        await _log(ctx, state, "info", "After reconnect")
        return "Reconnection test completed"


def _add_client_request_tools(server: MCPServer) -> None:
    @server.tool()
    async def test_sampling(prompt: str, ctx: Context) -> str:
        """Asks the client's LLM (sampling/createMessage) and returns its answer."""
        caps = ctx.client_capabilities
        if caps is None or caps.sampling is None:
            raise ToolError("the client did not declare the sampling capability")
        request = types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(
                messages=[
                    types.SamplingMessage(
                        role="user", content=types.TextContent(type="text", text=prompt)
                    )
                ],
                max_tokens=100,
            )
        )
        result = await ctx.session.send_request(
            request,
            types.CreateMessageResult,
            metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
        )
        content = result.content
        text = content.text if isinstance(content, types.TextContent) else f"<{content.type}>"
        return f"LLM response: {text}"

    @server.tool()
    async def test_elicitation(message: str, ctx: Context) -> str:
        """Asks the user (elicitation/create) for a username and an email."""
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        return _answer("User response", await _elicit(ctx, message, schema))

    @server.tool()
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        """Elicitation whose schema gives a default for every primitive type (SEP-1034)."""
        schema = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "default": "John Doe"},
                "age": {"type": "integer", "default": 30},
                "score": {"type": "number", "default": 95.5},
                "status": {
                    "type": "string",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {"type": "boolean", "default": True},
            },
        }
        result = await _elicit(ctx, "Please review your profile", schema)
        return _answer("Elicitation completed", result)

    @server.tool()
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        """Elicitation with the five enum forms of SEP-1330."""

        def titled(*pairs: tuple[str, str]) -> list[dict[str, str]]:
            return [{"const": const, "title": title} for const, title in pairs]

        schema = {
            "type": "object",
            "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {
                    "type": "string",
                    "oneOf": titled(("value1", "First Option"), ("value2", "Second Option")),
                },
                "legacyEnum": {
                    "type": "string",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {
                    "type": "array",
                    "items": {
                        "anyOf": titled(("value1", "First Choice"), ("value2", "Second Choice"))
                    },
                },
            },
        }
        result = await _elicit(ctx, "Please pick some options", schema)
        return _answer("Elicitation completed", result)


def _json_schema_tool() -> Tool:
    def json_schema_2020_12_tool() -> str:
        return "accepted"

    tool = Tool.from_function(
        json_schema_2020_12_tool,
        name="json_schema_2020_12_tool",
        description="Tool with JSON Schema 2020-12 features",
    )
    return tool.model_copy(update={"parameters": JSON_SCHEMA_2020_12})


def _add_resources(server: MCPServer) -> None:
    @server.resource("test://static-text", mime_type="text/plain")
    def static_text() -> str:
        """A static text resource."""
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", mime_type="image/png")
    def static_binary() -> bytes:
        """A static binary resource (a PNG image)."""
        return base64.b64decode(PNG_1X1)

    @server.resource("test://template/{id}/data", mime_type="application/json")
    def template_data(id: str) -> str:
        """A resource template: {id} is substituted into the content."""
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource("test://watched-resource", mime_type="text/plain")
    def watched() -> str:
        """A resource clients may subscribe to."""
        return "Watched resource content"


def _add_prompts(server: MCPServer) -> None:
    @server.prompt()
    def test_simple_prompt() -> list[Message]:
        """A prompt without arguments."""
        return [UserMessage("This is a simple prompt for testing.")]

    @server.prompt()
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[Message]:
        """A prompt with two required arguments."""
        return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]

    @server.prompt()
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[Message]:  # noqa: N803
        """A prompt embedding the resource named by resourceUri."""
        resource = types.TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
        )
        return [
            UserMessage(types.EmbeddedResource(type="resource", resource=resource)),
            UserMessage("Please process the embedded resource above."),
        ]

    @server.prompt()
    def test_prompt_with_image() -> list[Message]:
        """A prompt with an image."""
        return [
            UserMessage(types.ImageContent(type="image", data=PNG_1X1, mime_type="image/png")),
            UserMessage("Please analyze the image above."),
        ]


def _add_protocol_handlers(server: MCPServer, state: _State) -> None:
    """logging/setLevel, resources/(un)subscribe, completion/complete.

    ``MCPServer`` 2.3 has no public hook for the first three; they are plain
    request handlers on its low-level server, which then advertises the
    ``logging`` capability and ``resources.subscribe``.
    """
    lowlevel = server._lowlevel_server

    async def set_level(
        ctx: ServerRequestContext[Any, Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        state.levels[_session_id(ctx.request)] = params.level
        return types.EmptyResult()

    async def subscribe(
        ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        state.subscriptions.add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(
        ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        state.subscriptions.discard(str(params.uri))
        return types.EmptyResult()

    lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler(
        "resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe
    )

    @server.completion()  # type: ignore[untyped-decorator, no-untyped-call]
    async def complete(
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: types.CompletionArgument,
        context: types.CompletionContext | None,
    ) -> types.Completion:
        values = [city for city in _CITIES if city.startswith(argument.value)]
        return types.Completion(values=values, total=len(values), has_more=False)


def build_conformance_server(name: str = "baton-conformance") -> MCPServer:
    """A fresh server with every fixture the 0.1.16 server scenarios call (own state)."""
    state = _State()
    server = MCPServer(name, version="0.1.16", tools=[_json_schema_tool()])
    _add_content_tools(server)
    _add_notifying_tools(server, state)
    _add_client_request_tools(server)
    _add_resources(server)
    _add_prompts(server)
    _add_protocol_handlers(server, state)
    return server


def conformance_app(server: MCPServer) -> Starlette:
    """Streamable HTTP at ``/mcp``: SSE responses, resumable events, loopback-only Host/Origin."""
    return server.streamable_http_app(
        streamable_http_path="/mcp",
        event_store=MemoryEventStore(),
        retry_interval=100,
        transport_security=LOOPBACK,
        host="127.0.0.1",
    )
