"""MCP Streamable HTTP: one HTTP request as a typed :class:`Call`, Baton errors as MCP errors.

The gateway calls :func:`parse_mcp` on the hot path, after authentication and
signature checks and before any policy decision, so everything policy reads
here has been checked against the body. Two eras share one endpoint, told
apart by the ``MCP-Protocol-Version`` header (as the SDK's session manager
does):

* **Handshake era** (2024-11-05 .. 2025-11-25, ``basic/transports``
  "Streamable HTTP"): ``initialize`` then a session; POST carries one JSON-RPC
  message (request, notification, or the client's answer to a server
  request); GET opens the standalone SSE stream (``"(listen)"``); DELETE ends
  the session (``"(terminate)"``). A missing version header means
  ``2025-03-26`` (2025-06-18 changelog #8), except that ``initialize`` names
  the version it offers in ``params.protocolVersion``.
* **Modern era** (2026-07-28, ``basic/transports/streamable-http``): stateless,
  POST only (GET and DELETE: 405), no server-to-client requests (MRTR instead),
  and routing headers that servers and header-routing intermediaries MUST
  check against the body, rejecting a mismatch with 400 + ``-32020``:
  ``Mcp-Method`` on every message, ``Mcp-Name`` for ``tools/call``,
  ``resources/read`` and ``prompts/get`` (``=?base64?..?=`` when the value is
  not plain ASCII), and ``MCP-Protocol-Version`` equal to
  ``params._meta["io.modelcontextprotocol/protocolVersion"]``.

Invariants of a returned :class:`Call`:

* the body was one JSON-RPC 2.0 object parsed by :func:`keys.strictjson.loads`
  (no duplicate keys, NaN or excess depth); batches are refused (removed in
  2025-06-18, changelog #1);
* ``version`` is a version in :data:`KNOWN_VERSIONS`, or the string an
  ``initialize`` offers when no header is sent; it is in
  :data:`MODERN_VERSIONS` exactly when the header names the modern era (so a
  caller can tell the era from ``version`` alone);
* every routing header present (``mcp-method``, ``mcp-name``) equals the body,
  in either era, and in the modern era the required ones are present: a
  header/body disagreement is never forwarded. ``Mcp-Param-*`` headers are
  not checked (intermediaries MUST forward them untouched);
* ``target`` (tool name, resource URI, prompt name) comes from the body and is
  a non-empty string of at most :data:`MAX_TARGET_CHARS` characters.

Header names in ``headers`` are lower case (the gateway folds them). The
gateway must reject a routing header sent twice, or fold repeats into one
comma-joined value (which then cannot match the body), before calling here.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Final

from adapters.jsonrpc import RPC_CODES, Call, RpcId, _checked_id
from keys.errors import KeysError
from keys.strictjson import loads
from protocol.canonical import canonical_digest
from protocol.errors import (
    BadGateway,
    BatonError,
    HeaderMismatch,
    InvalidRequest,
    MethodNotAllowed,
    UnsupportedVersion,
    from_keys_error,
)

__all__ = [
    "DEFAULT_VERSION",
    "KNOWN_VERSIONS",
    "LISTEN",
    "LIST_TARGETS",
    "MCP_ERROR_CODES",
    "META_VERSION_KEY",
    "METHOD_HEADER",
    "MODERN_VERSIONS",
    "NAME_BEARING_METHODS",
    "NAME_HEADER",
    "RESPONSE",
    "SESSION_HEADER",
    "TARGETS",
    "TERMINATE",
    "VERSION_HEADER",
    "decode_header_value",
    "filter_listing",
    "keep_allowed",
    "listing_items",
    "mcp_session_id",
    "mrtr_request_state",
    "mrtr_result_state",
    "parse_listing",
    "parse_mcp",
    "render_input_required",
    "render_mcp_error",
]

#: Every released MCP revision (``mcp_types.version.KNOWN_PROTOCOL_VERSIONS``).
KNOWN_VERSIONS: Final[frozenset[str]] = frozenset(
    {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"}
)
#: Revisions of the stateless per-request era (no initialize, no session, POST only).
MODERN_VERSIONS: Final[frozenset[str]] = frozenset({"2026-07-28"})
#: The version assumed when ``MCP-Protocol-Version`` is absent (2025-06-18 transports).
DEFAULT_VERSION: Final = "2025-03-26"

#: Call.method for the handshake-era standalone SSE stream (GET).
LISTEN: Final = "(listen)"
#: Call.method for handshake-era session termination (DELETE).
TERMINATE: Final = "(terminate)"
#: Call.method for a response or error the client sends back to a server request.
RESPONSE: Final = "(response)"

VERSION_HEADER: Final = "mcp-protocol-version"
METHOD_HEADER: Final = "mcp-method"
NAME_HEADER: Final = "mcp-name"
SESSION_HEADER: Final = "mcp-session-id"
META_VERSION_KEY: Final = "io.modelcontextprotocol/protocolVersion"

#: Method -> (target kind for policy, the params member that names it).
TARGETS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "tools/call": ("tool", "name"),
        "resources/read": ("resource", "uri"),
        "resources/subscribe": ("resource", "uri"),
        "resources/unsubscribe": ("resource", "uri"),
        "prompts/get": ("prompt", "name"),
    }
)
#: Methods whose target MUST be mirrored in ``Mcp-Name`` (2026-07-28 transports).
NAME_BEARING_METHODS: Final = frozenset({"tools/call", "resources/read", "prompts/get"})

#: Baton error code -> MCP / JSON-RPC error code, where the error is MCP's own.
#: Every other error is looked up by HTTP status in :data:`adapters.jsonrpc.RPC_CODES`.
MCP_ERROR_CODES: Final[Mapping[str, int]] = MappingProxyType(
    {
        "header_mismatch": -32020,  # HEADER_MISMATCH, 2026-07-28
        "unsupported_version": -32022,  # UNSUPPORTED_PROTOCOL_VERSION, 2026-07-28
        "malformed_input": -32700,  # JSON-RPC 2.0 s5.1 parse error
        "invalid_request": -32600,
        "too_deep": -32600,
        "method_not_allowed": -32600,
    }
)
INTERNAL_ERROR: Final = -32603

MAX_METHOD_CHARS: Final = 200
MAX_TARGET_CHARS: Final = 1024
MAX_SHOWN_CHARS: Final = 80

# The SDK's sentinel (mcp.shared.inbound): "." does not cross a line break, as there.
_B64_SENTINEL: Final = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")
# Session IDs: visible ASCII 0x21-0x7E (2025-11-25 transports, "Session Management").
_SESSION_ID: Final = re.compile(r"[\x21-\x7E]{1,256}")
_OFFERED_VERSION: Final = re.compile(r"[\x21-\x7E]{1,64}")


# --------------------------------------------------------------------------- parsing
def parse_mcp(body: bytes, *, http_method: str, headers: Mapping[str, str], max_depth: int) -> Call:
    """The :class:`Call` one HTTP request to an MCP endpoint makes (module docstring).

    Raises :class:`MethodNotAllowed` for a method other than POST/GET/DELETE
    or for GET/DELETE in the modern era, :class:`UnsupportedVersion` for an
    unknown ``MCP-Protocol-Version``, :class:`HeaderMismatch` when a routing
    header is missing or disagrees with the body, and :class:`InvalidRequest`
    (or its :class:`MalformedInput`/:class:`TooDeep` subclasses) for a body
    that is not one well-formed MCP JSON-RPC message.
    """
    if http_method not in ("POST", "GET", "DELETE"):
        raise MethodNotAllowed(f"HTTP method {_shown(http_method)} on an MCP endpoint")
    header_version = _header_version(headers)
    modern = header_version in MODERN_VERSIONS
    # Handshake era: a malformed Mcp-Session-Id is refused here, before any
    # lookup. The modern era ignores the header (2026-07-28 transports).
    session = None if modern else mcp_session_id(headers)
    if http_method == "POST":
        message = _load_message(body, max_depth=max_depth)
        if "method" in message:
            call = _request(message, headers=headers, header_version=header_version)
        else:
            call = _response(message, headers=headers, header_version=header_version)
    elif modern:
        raise MethodNotAllowed(f"{http_method} is not served in MCP {header_version}")
    else:
        call = _bodyless(
            body, http_method=http_method, headers=headers, header_version=header_version
        )
    return call if session is None else replace(call, session_id=session)


def _header_version(headers: Mapping[str, str]) -> str | None:
    """``MCP-Protocol-Version`` if sent; it must name a known revision (400 otherwise)."""
    version = headers.get(VERSION_HEADER)
    if version is not None and version not in KNOWN_VERSIONS:
        raise UnsupportedVersion(f"{VERSION_HEADER} {_shown(version)} is not a known MCP revision")
    return version


def _load_message(body: bytes, *, max_depth: int) -> dict[str, Any]:
    """One JSON-RPC 2.0 object, parsed strictly; never a batch."""
    try:
        value = loads(body, max_bytes=len(body), max_depth=max_depth)
    except KeysError as exc:
        raise from_keys_error(exc) from None
    if isinstance(value, list):
        raise InvalidRequest("JSON-RPC batches are not accepted (removed in MCP 2025-06-18)")
    if not isinstance(value, dict):
        raise InvalidRequest("an MCP message must be a JSON object")
    if value.get("jsonrpc") != "2.0":
        raise InvalidRequest('an MCP message must carry "jsonrpc": "2.0"')
    return value


def _request(
    message: dict[str, Any], *, headers: Mapping[str, str], header_version: str | None
) -> Call:
    """A request (with ``id``) or a notification (without), JSON-RPC 2.0 s4."""
    method = message["method"]
    if not isinstance(method, str) or not method or len(method) > MAX_METHOD_CHARS:
        raise InvalidRequest("JSON-RPC method must be a non-empty string of at most 200 chars")
    if "result" in message or "error" in message:
        raise InvalidRequest("a JSON-RPC message cannot be both a request and a response")
    is_notification = "id" not in message
    rpc_id = None if is_notification else _request_id(message["id"])
    params = _params(message)
    target = _target(method, params)
    modern = header_version in MODERN_VERSIONS
    _check_method_header(headers, method, required=modern)
    _check_name_header(headers, method, target, required=modern)
    _check_meta_version(params, header_version)
    state = _check_request_state(params)
    kind, name = target if target is not None else (None, None)
    return Call(
        method,
        rpc_id,
        is_jsonrpc=True,
        is_notification=is_notification,
        protocol="mcp",
        version=_version_in_force(header_version, method, params),
        target_kind=kind,
        target=name,
        streaming=modern and method == "subscriptions/listen" and not is_notification,
        args_digest=_args_digest(method, params),
        request_state=state if modern else None,
    )


def _args_digest(method: str, params: Mapping[str, Any]) -> str | None:
    """The digest of ``params.arguments`` of a call that acts with arguments."""
    if method not in ("tools/call", "prompts/get"):
        return None
    arguments = params.get("arguments", {})
    try:
        return canonical_digest(arguments)
    except BatonError:  # a number RFC 8785 cannot represent exactly: hash a stable form
        stable = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return "sha256-sorted:" + canonical_digest(stable).removeprefix("sha256:")


def _response(
    message: dict[str, Any], *, headers: Mapping[str, str], header_version: str | None
) -> Call:
    """The client's answer to a server request (handshake era only; JSON-RPC 2.0 s5)."""
    if header_version in MODERN_VERSIONS:
        raise InvalidRequest("MCP 2026-07-28 has no server-to-client requests to answer")
    has_result, has_error = "result" in message, "error" in message
    if not has_result and not has_error:
        raise InvalidRequest("JSON-RPC object has neither method nor result nor error")
    if has_result and has_error:
        raise InvalidRequest("JSON-RPC response carries both result and error")
    if "id" not in message:
        raise InvalidRequest("JSON-RPC response without an id")
    rpc_id = _checked_id(message["id"])
    if has_result:
        if rpc_id is None:
            raise InvalidRequest("JSON-RPC result with a null id")
        if not isinstance(message["result"], dict):
            raise InvalidRequest("MCP result must be an object")
    else:
        _check_error_object(message["error"])
    _forbid_routing_headers(headers, "a JSON-RPC response")
    return Call(
        RESPONSE,
        rpc_id,
        is_jsonrpc=True,
        protocol="mcp",
        version=DEFAULT_VERSION if header_version is None else header_version,
    )


def _bodyless(
    body: bytes, *, http_method: str, headers: Mapping[str, str], header_version: str | None
) -> Call:
    """Handshake-era GET (standalone SSE stream) or DELETE (end the session)."""
    if body:
        raise InvalidRequest(f"{http_method} to an MCP endpoint carries a body")
    _forbid_routing_headers(headers, f"an MCP {http_method}")
    is_get = http_method == "GET"
    return Call(
        LISTEN if is_get else TERMINATE,
        None,
        is_jsonrpc=False,
        protocol="mcp",
        version=DEFAULT_VERSION if header_version is None else header_version,
        streaming=is_get,
    )


def _request_id(value: Any) -> str | int:
    """A request id: string or integer, never null (MCP ``basic/index``, Requests)."""
    rpc_id = _checked_id(value)
    if rpc_id is None:
        raise InvalidRequest("MCP request ids must not be null")
    return rpc_id


def _params(message: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` (``{}`` when absent); MCP params are always an object."""
    if "params" not in message:
        return {}
    params = message["params"]
    if not isinstance(params, dict):
        raise InvalidRequest("MCP params must be an object")
    return params


def _target(method: str, params: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) the method acts on, from the body, or None (see :data:`TARGETS`)."""
    entry = TARGETS.get(method)
    if entry is None:
        return None
    kind, member = entry
    value = params.get(member)
    if not isinstance(value, str) or not value or len(value) > MAX_TARGET_CHARS:
        raise InvalidRequest(f"{method} params.{member} must be a non-empty string <= 1024 chars")
    return kind, value


def _version_in_force(header_version: str | None, method: str, params: Mapping[str, Any]) -> str:
    """The header's version; without one, what ``initialize`` offers, else the default.

    The era is the header's alone: a header-less ``initialize`` is the
    handshake era whatever it offers, so an offer of a modern version (which
    the handshake cannot negotiate; the server counter-offers, lifecycle
    "Version Negotiation") is recorded as the default, and a returned version
    is in :data:`MODERN_VERSIONS` only when the header put it there.
    """
    if header_version is not None:
        return header_version
    if method == "initialize":
        offered = params.get("protocolVersion")
        if isinstance(offered, str):
            if _OFFERED_VERSION.fullmatch(offered) is None:
                raise InvalidRequest("initialize protocolVersion is not a short visible string")
            if offered not in MODERN_VERSIONS:
                return offered
    return DEFAULT_VERSION


def _check_error_object(error: Any) -> None:
    """JSON-RPC 2.0 s5.1: an object with an integer ``code`` and a string ``message``."""
    if not isinstance(error, dict):
        raise InvalidRequest("JSON-RPC error must be an object")
    code = error.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise InvalidRequest("JSON-RPC error code must be an integer")
    if not isinstance(error.get("message"), str):
        raise InvalidRequest("JSON-RPC error message must be a string")


def _check_request_state(params: Mapping[str, Any]) -> str | None:
    """MRTR ``requestState``, when present, is the opaque string the server minted."""
    state = params.get("requestState")
    if "requestState" in params and not isinstance(state, str):
        raise InvalidRequest("params.requestState must be a string")
    return state


# --------------------------------------------------------------------------- routing headers
def _check_method_header(headers: Mapping[str, str], method: str, *, required: bool) -> None:
    """``Mcp-Method`` equals the body's method; REQUIRED in 2026-07-28."""
    value = headers.get(METHOD_HEADER)
    if value is None:
        if required:
            raise HeaderMismatch(f"{METHOD_HEADER} header is required and absent ({method})")
        return
    if value != method:
        raise HeaderMismatch(
            f"{METHOD_HEADER} header {_shown(value)} differs from body method {_shown(method)}"
        )


def _check_name_header(
    headers: Mapping[str, str], method: str, target: tuple[str, str] | None, *, required: bool
) -> None:
    """``Mcp-Name``, decoded, equals the body's target.

    REQUIRED in 2026-07-28 for :data:`NAME_BEARING_METHODS`. On a method with
    a target it must match in either era. On a method Baton does not know to
    name anything it is not checked: extension methods may mirror a parameter
    of their own (the SDK's ``name_param``), and policy never reads the header.
    """
    raw = headers.get(NAME_HEADER)
    if raw is None:
        if required and method in NAME_BEARING_METHODS:
            raise HeaderMismatch(f"{NAME_HEADER} header is required for {method} and absent")
        return
    if target is None:
        return
    if decode_header_value(raw) != target[1]:
        raise HeaderMismatch(
            f"{NAME_HEADER} header {_shown(raw)} differs from {method} target {_shown(target[1])}"
        )


def _check_meta_version(params: Mapping[str, Any], header_version: str | None) -> None:
    """``params._meta`` protocol version, when present, equals ``MCP-Protocol-Version``."""
    if "_meta" not in params:
        return
    meta = params["_meta"]
    if not isinstance(meta, dict):
        raise InvalidRequest("params._meta must be an object")
    if META_VERSION_KEY not in meta:
        return
    body_version = meta[META_VERSION_KEY]
    if header_version is None:
        raise HeaderMismatch(f"body declares a protocol version but {VERSION_HEADER} is absent")
    if body_version != header_version:
        raise HeaderMismatch(
            f"{VERSION_HEADER} {header_version} differs from _meta version {_shown(body_version)}"
        )


def _forbid_routing_headers(headers: Mapping[str, str], what: str) -> None:
    """A message with no method names nothing: a routing header on it is a mismatch."""
    for name in (METHOD_HEADER, NAME_HEADER):
        if name in headers:
            raise HeaderMismatch(f"{name} header on {what}, which has no method")


def decode_header_value(value: str) -> str:
    """The value an MCP header carries: ``=?base64?<b64>?=`` decoded, anything else as is.

    MCP 2026-07-28 transports ("Custom Headers"): a value that is not plain
    printable ASCII, has edge whitespace or looks like the sentinel itself is
    sent as standard base64 of its UTF-8 bytes. The payload must be canonical
    base64 of valid UTF-8 (as the SDK's decoder demands); a corrupt one raises
    :class:`HeaderMismatch`, because it can match no body value.
    """
    match = _B64_SENTINEL.fullmatch(value)
    if match is None:
        return value
    payload = match["payload"]
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise HeaderMismatch("header carries malformed base64 in the =?base64?...?= form") from None
    if base64.b64encode(raw).decode("ascii") != payload:
        raise HeaderMismatch("header carries non-canonical base64 in the =?base64?...?= form")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HeaderMismatch("header's =?base64?...?= payload is not UTF-8") from None


def mcp_session_id(headers: Mapping[str, str]) -> str | None:
    """The ``Mcp-Session-Id`` sent, or None; 1..256 visible ASCII chars (0x21-0x7E).

    2025-11-25 transports, "Session Management": the ID MUST contain only
    visible ASCII. The 256-character cap is Baton's. Anything else raises
    :class:`InvalidRequest` (400), before the ID is used as a lookup key.
    """
    value = headers.get(SESSION_HEADER)
    if value is None:
        return None
    if _SESSION_ID.fullmatch(value) is None:
        raise InvalidRequest(f"{SESSION_HEADER} must be 1..256 visible ASCII characters")
    return value


# --------------------------------------------------------------------------- MRTR
def mrtr_request_state(body: bytes, *, max_depth: int) -> str | None:
    """``params.requestState`` of a retried 2026-07-28 request (``basic/patterns/mrtr``).

    The handle is server-minted and not authentication: the gateway binds it
    to the caller that received it. None when absent; a present non-string
    raises :class:`InvalidRequest`, as :func:`parse_mcp` does.
    """
    params = _load_message(body, max_depth=max_depth).get("params")
    if not isinstance(params, dict):
        return None
    return _check_request_state(params)


def mrtr_result_state(response_body: bytes, *, max_depth: int) -> str | None:
    """``result.requestState`` of an upstream ``input_required`` result, else None.

    ``response_body`` is one JSON-RPC response (a JSON body or one SSE event's
    data). Bytes the strict parser refuses raise its :class:`BatonError`
    (:class:`MalformedInput`, :class:`TooDeep`): the caller must not relay a
    response it cannot read the way the client will. Any other shape is None.
    """
    try:
        value = loads(response_body, max_bytes=len(response_body), max_depth=max_depth)
    except KeysError as exc:
        raise from_keys_error(exc) from None
    if not isinstance(value, dict):
        return None
    result = value.get("result")
    if not isinstance(result, dict) or result.get("resultType") != "input_required":
        return None
    state = result.get("requestState")
    return state if isinstance(state, str) else None


# --------------------------------------------------------------------------- errors
def render_mcp_error(error: BatonError, *, rpc_id: RpcId, trace_id: str) -> bytes:
    """The JSON-RPC 2.0 error response (s5.1) for ``error``, in MCP's code space.

    Codes: :data:`MCP_ERROR_CODES` where MCP defines the error (``-32020``
    header mismatch and ``-32022`` unsupported version, whose ``data`` also
    lists ``supported`` versions, as 2026-07-28 requires), otherwise
    :data:`adapters.jsonrpc.RPC_CODES` by HTTP status, ``-32603`` when unmapped.
    ``data`` is ``{code, trace_id, retryable[, retry_after][, supported]}``;
    the internal ``detail`` is never included. Compact JSON.
    """
    data: dict[str, Any] = {"code": error.code, "trace_id": trace_id, "retryable": error.retryable}
    if error.retry_after is not None:
        data["retry_after"] = error.retry_after
    if error.code == UnsupportedVersion.code:
        data["supported"] = sorted(KNOWN_VERSIONS)
    if error.public_data is not None:
        data["baton"] = dict(error.public_data)
    code = MCP_ERROR_CODES.get(error.code)
    if code is None:
        code = RPC_CODES.get(error.http_status, INTERNAL_ERROR)
    body = {
        "jsonrpc": "2.0",
        "id": rpc_id,
        "error": {"code": code, "message": error.public_message, "data": data},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def render_input_required(*, rpc_id: RpcId, request_state: str, meta: Mapping[str, Any]) -> bytes:
    """A 2026-07-28 ``input_required`` result (``basic/patterns/mrtr``) carrying
    only ``requestState`` (the spec requires it or ``inputRequests``): the
    client retries the same request with it once the input exists. ``meta``
    goes under ``_meta``."""
    body = {
        "jsonrpc": "2.0",
        "id": rpc_id,
        "result": {
            "resultType": "input_required",
            "requestState": request_state,
            "_meta": dict(meta),
        },
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _shown(value: Any) -> str:
    """A bounded ``repr`` of an attacker-supplied value, for an error's internal detail."""
    text = repr(value) if isinstance(value, str) else f"<{type(value).__name__}>"
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "..."


#: List methods whose results name targets policy decides on: method -> (result
#: member, target kind, the member of each item that names it).
LIST_TARGETS: Final[Mapping[str, tuple[str, str, str]]] = MappingProxyType(
    {
        "tools/list": ("tools", "tool", "name"),
        "prompts/list": ("prompts", "prompt", "name"),
        "resources/list": ("resources", "resource", "uri"),
    }
)


def filter_listing(
    method: str,
    message: bytes,
    allowed: Callable[[str, str], bool],
    *,
    max_depth: int,
) -> bytes | None:
    """A ``tools/list`` / ``prompts/list`` / ``resources/list`` answer showing only
    what ``allowed(kind, name)`` permits, or None when nothing was removed.

    An agent is never offered a tool it may not call (least privilege: a model
    that does not see a tool cannot be talked into calling it). ``message`` is
    one JSON-RPC response (a JSON body or one SSE event's data), read by
    :func:`parse_listing`; :func:`keep_allowed` does the filtering.
    """
    if method not in LIST_TARGETS:
        return None
    value = parse_listing(method, message, max_depth=max_depth)
    if not keep_allowed(method, value, allowed):
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def parse_listing(method: str, message: bytes, *, max_depth: int) -> Any:
    """One answer of the listing ``method``, parsed strictly.

    One that Baton's strict parser refuses is :class:`BadGateway`: passed on,
    a lenient client could read it differently (a duplicated ``tools`` member:
    Python's ``json`` keeps the last) and see what a filter would remove.
    """
    try:
        return loads(message, max_bytes=len(message), max_depth=max_depth)
    except KeysError as exc:
        raise BadGateway(f"{method} answer is not strict JSON: {exc}") from exc


def listing_items(method: str, value: Any) -> list[Any] | None:
    """The entries (``result.tools`` etc.) of a parsed answer of ``method``; None
    for an answer of another shape (an error answer, a notification)."""
    member = LIST_TARGETS[method][0]
    result = value.get("result") if isinstance(value, dict) else None
    if not isinstance(result, dict) or not isinstance(result.get(member), list):
        return None
    items: list[Any] = result[member]
    return items


def keep_allowed(method: str, value: Any, allowed: Callable[[str, str], bool]) -> bool:
    """Remove from the parsed answer ``value`` the entries ``allowed(kind, name)``
    refuses (and any that is not an entry); True when something was removed."""
    items = listing_items(method, value)
    if items is None:
        return False
    _, kind, key = LIST_TARGETS[method]
    kept = [
        item
        for item in items
        if isinstance(item, dict) and isinstance(item.get(key), str) and allowed(kind, item[key])
    ]
    if len(kept) == len(items):
        return False
    items[:] = kept
    return True
