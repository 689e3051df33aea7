"""The protocol-specific steps of the pipeline, one :class:`Dialect` per upstream protocol.

The pipeline in :mod:`gateway.proxy` is the same for every request; what
differs by protocol is how a request is read (the adapters in ``adapters/``),
which handles it names must belong to the caller, what a response hands out
that must be bound to the caller, and how an error is written back:

* :class:`Dialect` - generic JSON-RPC or HTTP (``protocol = "http"``).
* :class:`McpDialect` - MCP Streamable HTTP, both eras. ``Mcp-Session-Id`` is
  bound to the identity whose ``initialize`` created it; any other caller
  presenting it gets 404, as for an unknown session (MCP 2025-11-25
  transports, "Session Management"; security best practices, "Session
  Hijacking": sessions are never authentication). MRTR ``requestState``
  (2026-07-28) is bound to the caller and the call it answers.
* :class:`A2aDialect` - A2A v1.0 (JSON-RPC, HTTP+JSON) and v0.3. A task is
  visible only to the identity that created it; others get the protocol's own
  not-found (A2A s13.1: "MUST NOT reveal the existence of unauthorized
  resources"). ``ListTasks`` answers are filtered to the caller's tasks.
  Agent Cards are served rewritten to point at the gateway and re-signed
  (A2A s8.4); a card whose upstream keys are pinned must verify first.
  Push-notification URLs must be allow-listed public HTTPS hosts (s13.2).

Bindings live in the shared :class:`~protocol.ports.BindingStore`, so every
gateway process sharing a store enforces them; a store failure is 503.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any, Final

from aiohttp import web

from adapters import a2a, mcp
from adapters.agent_card import parse_card, rewrite_card, sign_card, verify_card
from adapters.jsonrpc import Call, parse_call, render_error
from adapters.sse import event_data, with_data
from gateway.tool_pins import Seen, ToolPins
from keys.errors import KeysError
from keys.keyset import KeySet
from keys.material import PrivateKey
from keys.strictjson import loads
from protocol.errors import (
    ApprovalRequired,
    BadGateway,
    BatonError,
    HeaderMismatch,
    InvalidRequest,
    SessionNotFound,
    TaskNotFound,
    ToolChanged,
    UnsafeWebhook,
)
from protocol.policy import Policy
from protocol.ports import MAX_BINDING_TEXT, BindingStore
from protocol.webhooks import check_webhook_url

__all__ = [
    "A2aDialect",
    "Dialect",
    "McpDialect",
    "Rendered",
    "ToolChangedHook",
    "dialect_for",
    "lowered_headers",
    "render_a2a",
]

#: How long the gateway remembers who owns a handle (seconds).
SESSION_TTL_S: Final = 24 * 3600
TASK_TTL_S: Final = 7 * 24 * 3600
REQUEST_STATE_TTL_S: Final = 15 * 60
#: Told of a tool definition that changed since it was pinned (first sighting):
#: ``(upstream, tool name, what was seen, the caller whose listing showed it)``.
ToolChangedHook = Callable[[str, str, Seen, str], Awaitable[None]]
#: Headers an adapter reads; each must appear at most once.
_SINGLE_HEADERS: Final = (
    "mcp-method", "mcp-name", "mcp-protocol-version", "mcp-session-id", "a2a-version",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Rendered:
    """An error response: status, content type, body."""

    status: int
    content_type: str
    body: bytes


def lowered_headers(request: web.Request) -> dict[str, str]:
    """The request's header fields by lower-case name; adapter headers must be single."""
    for name in _SINGLE_HEADERS:
        if len(request.headers.getall(name, ())) > 1:
            raise HeaderMismatch(f"{name} sent more than once")
    return {name.lower(): value for name, value in request.headers.items()}


class Dialect:
    """Generic behaviour; subclasses refine it for one protocol."""

    protocol = "http"

    def __init__(self, bindings: BindingStore, max_depth: int) -> None:
        self._bindings = bindings
        self._max_depth = max_depth

    def parse(self, request: web.Request, body: bytes, tail: str) -> Call:
        return parse_call(
            body,
            http_method=request.method,
            path="/" + tail,
            content_type=request.headers.get("content-type", ""),
            max_depth=self._max_depth,
        )

    def conversation(self, call: Call, request: web.Request) -> str | None:
        """The conversation this call belongs to, when the protocol names one."""
        return request.headers.get("baton-conversation") or request.headers.get("mcp-session-id")

    async def authorize(
        self,
        request: web.Request,
        body: bytes,
        call: Call,
        *,
        caller: str,
        upstream: str,
        now: float,
    ) -> None:
        """Raise unless every handle ``call`` names belongs to ``caller`` (after policy)."""

    async def rewrite_request(
        self, call: Call, body: bytes, *, caller: str, upstream: str, now: float
    ) -> bytes:
        """The body to forward (the caller's, unless the protocol needs a change)."""
        return body

    async def on_response(
        self,
        request: web.Request,
        call: Call,
        *,
        caller: str,
        upstream: str,
        status: int,
        headers: Mapping[str, str],
        now: float,
    ) -> None:
        """Bind (or release) what a response's status line and headers hand out."""

    async def on_body(
        self,
        call: Call,
        body: bytes,
        *,
        caller: str,
        upstream: str,
        status: int,
        authority: str,
        now: float,
    ) -> bytes:
        """Bind what a non-stream response body hands out; may rewrite the body."""
        return body

    async def on_event(
        self, call: Call, event: bytes, *, caller: str, upstream: str, now: float
    ) -> bytes:
        """Bind what one server-sent event hands out; return the event to relay."""
        return event

    def render(
        self, error: BatonError, *, call: Call | None, trace_id: str, http_method: str, path: str
    ) -> Rendered:
        """``error`` as this protocol writes it; ``call`` is None when parsing never finished."""
        rpc_id = call.rpc_id if call else None
        return Rendered(
            error.http_status,
            "application/json",
            render_error(error, rpc_id=rpc_id, trace_id=trace_id),
        )

    async def bind_state(
        self, call: Call, state: str, *, caller: str, upstream: str, now: float
    ) -> None:
        """Bind a ``requestState`` the gateway itself minted (a held call,
        ``gateway/gate.py``) to ``caller``; only MCP 2026-07-28 has one."""

    # ------------------------------------------------------------ bindings
    async def _require_owner(
        self, kind: str, key: str, caller: str, now: float, error: BatonError
    ) -> None:
        owner = await self._bindings.owner(kind, key, now=now)
        if owner != caller:
            raise error

    async def _bind(self, kind: str, key: str, caller: str, ttl_s: int, now: float) -> None:
        owner = await self._bindings.bind(kind, key, caller, ttl_s=ttl_s, now=now)
        if owner != caller:
            # The upstream handed this caller a handle another caller holds:
            # never let the answer through (it would cross identities).
            raise BadGateway(f"{kind} {key!r} handed to {caller} is bound to another identity")


def _handle_key(upstream: str, handle: str) -> str:
    """Binding key: handles are per upstream; long ones are hashed to stay bounded."""
    if len(handle) > 200:
        handle = "sha256:" + hashlib.sha256(handle.encode()).hexdigest()
    return f"{upstream}/{handle}"


#: The method that uses a target of each kind: a listing shows what that method may reach.
_USE_METHOD: Final = {"tool": "tools/call", "prompt": "prompts/get", "resource": "resources/read"}


class McpDialect(Dialect):
    """MCP Streamable HTTP: sessions (handshake era) and request states (2026-07-28);
    listings filtered to what the caller may use."""

    protocol = "mcp"

    def __init__(
        self, bindings: BindingStore, max_depth: int, *, policy: Policy, names: Mapping[str, str],
        pinned: Collection[str] = (), on_tool_changed: ToolChangedHook | None = None,
    ) -> None:  # fmt: skip
        super().__init__(bindings, max_depth)
        self._policy = policy
        self._names = names
        #: Upstreams whose tool definitions are pinned (``pin_tools``, I04).
        self._pinned = frozenset(pinned)
        self._pins = ToolPins(bindings)
        self._on_tool_changed = on_tool_changed

    def parse(self, request: web.Request, body: bytes, tail: str) -> Call:
        return mcp.parse_mcp(
            body,
            http_method=request.method,
            headers=lowered_headers(request),
            max_depth=self._max_depth,
        )

    async def authorize(
        self,
        request: web.Request,
        body: bytes,
        call: Call,
        *,
        caller: str,
        upstream: str,
        now: float,
    ) -> None:
        # Both handles were read and validated by the adapter (parse_mcp).
        if call.session_id is not None:
            await self._require_owner(
                "mcp-session",
                _handle_key(upstream, call.session_id),
                caller,
                now,
                SessionNotFound(f"{caller} presented a session it does not own"),
            )
        if call.request_state is not None:
            await self._require_owner(
                "mrtr-state",
                _handle_key(upstream, _state_key(call.request_state, call)),
                caller,
                now,
                InvalidRequest(f"{caller} sent a requestState minted for another call"),
            )
        if (
            call.method == "tools/call"
            and call.target is not None
            and upstream in self._pinned
            and await self._pins.changed(upstream, call.target, now=now) is not None
        ):
            raise ToolChanged(f"{upstream} tool {call.target!r} changed since it was pinned")

    async def on_response(
        self,
        request: web.Request,
        call: Call,
        *,
        caller: str,
        upstream: str,
        status: int,
        headers: Mapping[str, str],
        now: float,
    ) -> None:
        if status >= 400:
            return
        if call.method == "initialize":
            session = headers.get("mcp-session-id")
            if session is not None:
                await self._bind(
                    "mcp-session", _handle_key(upstream, session), caller, SESSION_TTL_S, now
                )
        elif call.method == "(terminate)":
            session = request.headers.get("mcp-session-id")
            if session is not None:
                await self._bindings.unbind(
                    "mcp-session", _handle_key(upstream, session), caller, now=now
                )

    async def on_body(
        self,
        call: Call,
        body: bytes,
        *,
        caller: str,
        upstream: str,
        status: int,
        authority: str,
        now: float,
    ) -> bytes:
        if status >= 400 or not body:
            return body
        await self._bind_result_state(call, body, caller, upstream, now)
        shown = await self._listing(call, body, caller, upstream, now)
        return body if shown is None else shown

    async def on_event(
        self, call: Call, event: bytes, *, caller: str, upstream: str, now: float
    ) -> bytes:
        """An ``input_required`` result, or a listing, may arrive as an event."""
        data = event_data(event)
        if not data:
            return event
        await self._bind_result_state(call, data, caller, upstream, now)
        shown = await self._listing(call, data, caller, upstream, now)
        return event if shown is None else with_data(event, shown)

    async def _listing(
        self, call: Call, message: bytes, caller: str, upstream: str, now: float
    ) -> bytes | None:
        """A listing answer as ``caller`` may see it, parsed once: without the
        targets it may not use (ADR 0012) and, from a pinned upstream, without
        the tools whose definition differs from its pin (I04, pinning new
        ones). None when nothing was removed. An answer the strict parser
        refuses is a 502, never passed on unfiltered or unpinned."""
        if call.method not in mcp.LIST_TARGETS:
            return None
        name = self._names.get(caller)
        pinning = call.method == "tools/list" and upstream in self._pinned
        if name is None and not pinning:
            return None
        value = mcp.parse_listing(call.method, message, max_depth=self._max_depth)
        removed = False
        if name is not None:

            def allowed(kind: str, target: str) -> bool:
                return self._policy.allows(name, upstream, _USE_METHOD[kind], kind, target)

            removed = mcp.keep_allowed(call.method, value, allowed)
        if pinning:
            removed = await self._drop_changed_tools(value, caller, upstream, now) or removed
        return _compact(value) if removed else None

    async def _drop_changed_tools(self, value: Any, caller: str, upstream: str, now: float) -> bool:
        """Remove from a parsed ``tools/list`` answer the tools whose definition
        differs from its pin, pinning the new ones; True when one was removed."""
        tools = mcp.listing_items("tools/list", value)
        if tools is None:
            return False  # an error answer, or a notification on the stream
        kept = []
        for tool in tools:
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                continue  # not a tool definition: nothing to pin, nothing to show
            try:
                seen = await self._pins.observe(upstream, tool, now=now)
            except InvalidRequest:  # not canonicalisable (RFC 8785): cannot be pinned
                continue
            if not seen.changed:
                kept.append(tool)
                continue
            if seen.first and self._on_tool_changed is not None:
                await self._on_tool_changed(upstream, tool["name"], seen, caller)
        if len(kept) == len(tools):
            return False
        tools[:] = kept
        return True

    async def _bind_result_state(
        self, call: Call, message: bytes, caller: str, upstream: str, now: float
    ) -> None:
        """An ``input_required`` answer's ``requestState`` belongs to ``caller``."""
        if call.version not in mcp.MODERN_VERSIONS:
            return
        state = mcp.mrtr_result_state(message, max_depth=self._max_depth)
        if state is not None:
            key = _handle_key(upstream, _state_key(state, call))
            await self._bind("mrtr-state", key, caller, REQUEST_STATE_TTL_S, now)

    def render(
        self, error: BatonError, *, call: Call | None, trace_id: str, http_method: str, path: str
    ) -> Rendered:
        rpc_id = call.rpc_id if call else None
        if (
            isinstance(error, ApprovalRequired)
            and call is not None
            and call.version in mcp.MODERN_VERSIONS
            and error.public_data is not None
        ):
            # MCP 2026-07-28 has its own words for "ask again later": an
            # input_required result (basic/patterns/mrtr) naming the handoff.
            return Rendered(
                200,
                "application/json",
                mcp.render_input_required(
                    rpc_id=rpc_id,
                    request_state=str(error.public_data["request_state"]),
                    meta={"io.baton/handoff": dict(error.public_data), "trace_id": trace_id},
                ),
            )
        return Rendered(
            error.http_status,
            "application/json",
            mcp.render_mcp_error(error, rpc_id=rpc_id, trace_id=trace_id),
        )

    async def bind_state(
        self, call: Call, state: str, *, caller: str, upstream: str, now: float
    ) -> None:
        if call.version in mcp.MODERN_VERSIONS:
            key = _handle_key(upstream, _state_key(state, call))
            await self._bind("mrtr-state", key, caller, REQUEST_STATE_TTL_S, now)


def _state_key(state: str, call: Call) -> str:
    """A request state is bound to the caller and to the call it answers: method,
    target and arguments (the MRTR advice of MCP 2026-07-28: bind the state to the
    request it was minted for)."""
    material = "\x1f".join(
        (state, call.method, call.target_kind or "", call.target or "", call.args_digest or "")
    )
    return hashlib.sha256(material.encode()).hexdigest()


class A2aDialect(Dialect):
    """A2A: conversations by ``contextId``, tasks owned by their creator, cards re-signed."""

    protocol = "a2a"

    def __init__(
        self,
        bindings: BindingStore,
        max_depth: int,
        *,
        signing_key: PrivateKey,
        card_keys: Mapping[str, KeySet],
        webhook_hosts: Mapping[str, frozenset[str]],
        base_urls: Mapping[str, str],
        bearer: bool,
        relay_base: str,
        trusted_networks: Collection[str] = (),
        token: Callable[[int], str] = secrets.token_urlsafe,
    ) -> None:
        super().__init__(bindings, max_depth)
        self._trusted = tuple(ip_network(net) for net in trusted_networks)
        self._base_urls = base_urls
        self._relay_base = relay_base
        self._token = token
        self._signing_key = signing_key
        self._card_keys = card_keys
        self._webhook_hosts = webhook_hosts
        self._bearer = bearer

    def parse(self, request: web.Request, body: bytes, tail: str) -> Call:
        return a2a.parse_a2a(
            body,
            http_method=request.method,
            path="/" + tail.partition("?")[0],
            headers=lowered_headers(request),
            max_depth=self._max_depth,
        )

    def conversation(self, call: Call, request: web.Request) -> str | None:
        if call.context_id is not None:
            return "a2a:" + call.context_id
        return super().conversation(call, request)

    async def authorize(
        self,
        request: web.Request,
        body: bytes,
        call: Call,
        *,
        caller: str,
        upstream: str,
        now: float,
    ) -> None:
        hosts = self._webhook_hosts.get(upstream, frozenset())
        for url in call.push_urls:
            check_webhook_url(url, allowed_hosts=hosts, trusted_networks=self._trusted)
        for task_id in (call.task_id, *call.reference_task_ids):
            if task_id is not None:  # a referenced task is no more shared than the task
                await self._require_owner(
                    "a2a-task",
                    _handle_key(upstream, task_id),
                    caller,
                    now,
                    TaskNotFound(f"{caller} named a task it does not own"),
                )

    async def rewrite_request(
        self, call: Call, body: bytes, *, caller: str, upstream: str, now: float
    ) -> bytes:
        """Push-notification configs name a relay URL of the gateway's instead of the
        caller's webhook, so notifications come back through the gateway, which
        checks the destination again at connect time and signs what it delivers
        (:mod:`gateway.push`)."""
        replacements: dict[str, str] = {}
        for url in call.push_urls:
            relay = self._token(24)
            target = json.dumps(
                {"url": url, "caller": caller, "upstream": upstream}, separators=(",", ":")
            )
            if len(target) > MAX_BINDING_TEXT:
                raise UnsafeWebhook("webhook URL too long to relay")
            await self._bind("a2a-push", relay, target, TASK_TTL_S, now)
            replacements[url] = f"{self._relay_base}/push/{relay}"
        return a2a.replace_push_urls(body, replacements, max_depth=self._max_depth)

    async def _bind_task(self, task_id: str | None, caller: str, upstream: str, now: float) -> None:
        if task_id is not None:
            await self._bind("a2a-task", _handle_key(upstream, task_id), caller, TASK_TTL_S, now)

    async def on_body(
        self,
        call: Call,
        body: bytes,
        *,
        caller: str,
        upstream: str,
        status: int,
        authority: str,
        now: float,
    ) -> bytes:
        if status >= 400 or not body:
            return body
        if call.method == "GetAgentCard":
            return self.card(
                body,
                upstream=upstream,
                base_url=self._base_urls[upstream],
                gateway_base=f"https://{authority}/u/{upstream}",
            )
        if call.method == "ListTasks":
            return await self._filter_tasks(call, body, caller, upstream, now)
        task_id, _ = a2a.task_ids_in_result(call, body, max_depth=self._max_depth)
        await self._bind_task(task_id, caller, upstream, now)
        return body

    async def on_event(
        self, call: Call, event: bytes, *, caller: str, upstream: str, now: float
    ) -> bytes:
        data = event_data(event)
        if data:
            task_id, _ = a2a.task_ids_in_event(data, max_depth=self._max_depth)
            await self._bind_task(task_id, caller, upstream, now)
        return event

    async def _filter_tasks(
        self, call: Call, body: bytes, caller: str, upstream: str, now: float
    ) -> bytes:
        """Keep only the caller's own tasks in a ListTasks answer (A2A s13.1)."""
        try:
            value = loads(body, max_bytes=len(body), max_depth=self._max_depth)
        except KeysError as exc:
            raise BadGateway(f"{upstream}: ListTasks answer is not JSON: {exc}") from exc
        holder: Any = value.get("result") if call.binding == "JSONRPC" else value
        if not isinstance(holder, dict) or not isinstance(holder.get("tasks"), list):
            return body
        kept = []
        for task in holder["tasks"]:
            task_id = task.get("id") if isinstance(task, dict) else None
            if isinstance(task_id, str):
                owner = await self._bindings.owner(
                    "a2a-task", _handle_key(upstream, task_id), now=now
                )
                if owner == caller:
                    kept.append(task)
        if len(kept) == len(holder["tasks"]):
            return body
        holder["tasks"] = kept
        if "totalSize" in holder:
            holder["totalSize"] = len(kept)
        return _compact(value)

    def card(self, body: bytes, *, upstream: str, base_url: str, gateway_base: str) -> bytes:
        """The upstream's Agent Card as the gateway serves it (A2A s8.3, s8.4).

        Pinned keys: the upstream card must carry a valid signature by one of
        them, or the card is refused (502). The served card names only the
        interfaces behind the gateway, at the gateway's URL, states the
        gateway's own security schemes, and is signed by the gateway.
        """
        try:
            card = parse_card(body)
        except BatonError as exc:
            raise BadGateway(f"{upstream}: agent card unreadable: {exc.diagnostics()}") from exc
        pinned = self._card_keys.get(upstream)
        if pinned is not None:
            try:
                verify_card(card, pinned)
            except BatonError as exc:
                raise BadGateway(f"{upstream}: agent card signature: {exc.diagnostics()}") from exc
        interfaces = []
        for interface in card.get("supportedInterfaces") or []:
            url = interface.get("url") if isinstance(interface, dict) else None
            if isinstance(url, str) and (url == base_url or url.startswith(base_url + "/")):
                interfaces.append({**interface, "url": gateway_base + url[len(base_url) :]})
        schemes: dict[str, Any] = {"baton-mtls": {"mtlsSecurityScheme": {}}}
        requirements: list[dict[str, Any]] = [{"schemes": {"baton-mtls": {"list": []}}}]
        if self._bearer:
            schemes["baton-bearer"] = {
                "httpAuthSecurityScheme": {"scheme": "Bearer", "bearerFormat": "JWT"}
            }
        try:
            rewritten = rewrite_card(
                card,
                interfaces=interfaces,
                security_schemes=schemes,
                security_requirements=requirements,
            )
        except BatonError as exc:  # the upstream's card, not the caller's request
            raise BadGateway(f"{upstream}: agent card unusable: {exc.diagnostics()}") from exc
        if isinstance(rewritten.get("url"), str):  # v0.3 cards name one URL
            url = rewritten["url"]
            rewritten["url"] = (
                gateway_base + url[len(base_url) :] if url.startswith(base_url) else gateway_base
            )
        return _compact(sign_card(rewritten, self._signing_key))

    def render(
        self, error: BatonError, *, call: Call | None, trace_id: str, http_method: str, path: str
    ) -> Rendered:
        tail = path.split("/", 3)[3] if path.count("/") >= 3 else ""
        return render_a2a(error, call=call, trace_id=trace_id, http_method=http_method, tail=tail)


def render_a2a(
    error: BatonError, *, call: Call | None, trace_id: str, http_method: str, tail: str
) -> Rendered:
    """``error`` in A2A's shape; ``tail`` is the path below the agent's base URL."""
    if call is not None and call.binding:
        binding, version = call.binding, call.version or "1.0"
    else:  # refused before the adapter read it: guess the binding from the route
        binding, version = a2a.error_binding(http_method, "/" + tail), "1.0"
    status, content_type, body = a2a.render_a2a_error(
        error,
        rpc_id=call.rpc_id if call else None,
        trace_id=trace_id,
        binding=binding,
        version=version,
    )
    return Rendered(status, content_type, body)


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dialect_for(
    protocol: str,
    bindings: BindingStore,
    max_depth: int,
    *,
    signing_key: PrivateKey,
    card_keys: Mapping[str, KeySet],
    webhook_hosts: Mapping[str, frozenset[str]],
    base_urls: Mapping[str, str],
    bearer: bool,
    relay_base: str,
    policy: Policy,
    names: Mapping[str, str],
    trusted_networks: Collection[str] = (),
    pinned: Collection[str] = (),
    on_tool_changed: ToolChangedHook | None = None,
) -> Dialect:
    if protocol == "mcp":
        return McpDialect(
            bindings, max_depth, policy=policy, names=names, pinned=pinned,
            on_tool_changed=on_tool_changed,
        )  # fmt: skip
    if protocol == "a2a":
        return A2aDialect(
            bindings,
            max_depth,
            signing_key=signing_key,
            card_keys=card_keys,
            webhook_hosts=webhook_hosts,
            base_urls=base_urls,
            bearer=bearer,
            relay_base=relay_base,
            trusted_networks=trusted_networks,
        )
    return Dialect(bindings, max_depth)
