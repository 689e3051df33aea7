"""The generic JSON-RPC 2.0 view of a message, and Baton errors as JSON-RPC errors.

The data plane needs three things from a request body before policy can
decide: the method, the JSON-RPC ``id`` and whether it is a JSON-RPC call at
all. :func:`parse_call` extracts them with the strict parser (duplicate keys,
depth and size caps: threats J15, X02, X03). The MCP and A2A adapters refine
this view; anything that is not a JSON-RPC request (an empty body, a REST
binding) is named ``"<HTTP-METHOD> <path>"`` so policy can still address it.

:func:`render_error` is the JSON-RPC 2.0 s5.1 error object for a
:class:`~protocol.errors.BatonError`: a numeric code from :data:`RPC_CODES`
(by HTTP status, in a block of the implementation-defined server range
-32000..-32099 that neither MCP nor A2A uses, except the spec's own
-32600/-32700/-32603), the public message, and
``data = {code, trace_id, retryable[, retry_after]}``. Never the internal
``detail``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from keys.errors import KeysError
from keys.strictjson import loads
from protocol.errors import BatonError, InvalidRequest, from_keys_error

__all__ = ["RPC_CODES", "Call", "parse_call", "render_error"]

#: HTTP status of a Baton error -> JSON-RPC error code. Stable; part of the contract.
#: The block -32080..-32093 is used by neither protocol Baton fronts: MCP owns
#: -32000..-32002, -32020..-32022 and -32042, A2A owns -32001..-32009, so a
#: gateway refusal is never mistaken for "task not found" or "header mismatch"
#: (ADR 0012). -32600 and -32603 are JSON-RPC 2.0's own.
RPC_CODES: Final[dict[int, int]] = {
    400: -32600,
    401: -32080,
    403: -32081,
    404: -32082,
    405: -32083,
    408: -32084,
    409: -32085,
    413: -32086,
    421: -32087,
    422: -32088,
    429: -32089,
    431: -32090,
    500: -32603,
    502: -32091,
    503: -32092,
    504: -32093,
}
PARSE_ERROR: Final = -32700

RpcId = str | int | None


@dataclass(frozen=True, slots=True)
class Call:
    """What policy and the transcript need to know about one request.

    The generic view fills the first four fields; the MCP and A2A adapters
    fill the rest. ``method`` is the name policy is written in: the JSON-RPC
    method, A2A's v1.0 name whatever the wire used (``message/send`` and
    ``POST /message:send`` are both ``SendMessage``), or ``"<HTTP> <path>"``.
    """

    method: str
    rpc_id: RpcId
    is_jsonrpc: bool
    is_notification: bool = False
    #: "http" (generic), "jsonrpc" (generic JSON-RPC), "mcp" or "a2a".
    protocol: str = "http"
    #: MCP: the protocol version in force ("2025-11-25", "2026-07-28");
    #: A2A: "1.0" or "0.3".
    version: str | None = None
    #: A2A: "JSONRPC" or "HTTP+JSON". MCP and generic: None.
    binding: str | None = None
    #: What the call acts on, for policy: ("tool", name), ("resource", uri),
    #: ("prompt", name) or ("skill", id). None when the method names no target.
    target_kind: str | None = None
    target: str | None = None
    #: A2A ``contextId`` carried by the request (the conversation), if any.
    context_id: str | None = None
    #: A2A task the request refers to (GetTask, CancelTask, SubscribeToTask,
    #: a message continuing a task, push-notification configs), if any.
    task_id: str | None = None
    #: A2A ``Message.referenceTaskIds``: other tasks a message points at (each
    #: must be the caller's, as ``task_id`` must).
    reference_task_ids: tuple[str, ...] = ()
    #: The response is expected to be an SSE stream.
    streaming: bool = False
    #: Webhook URLs the request asks the upstream to call (A2A push configs).
    push_urls: tuple[str, ...] = ()
    #: ``sha256:`` digest of the RFC 8785 form of the arguments the call acts with
    #: (MCP ``tools/call`` / ``prompts/get`` arguments), binding MRTR request
    #: states and approvals to exactly these arguments. None when there are none.
    args_digest: str | None = None
    #: MCP handshake era: the validated ``Mcp-Session-Id`` the request carries.
    session_id: str | None = None
    #: MCP 2026-07-28: the MRTR ``requestState`` a retried request echoes.
    request_state: str | None = None


def _http_name(http_method: str, path: str) -> str:
    return f"{http_method} {path}"


def parse_call(
    body: bytes, *, http_method: str, path: str, content_type: str, max_depth: int
) -> Call:
    """The :class:`Call` in ``body``.

    A JSON body is parsed strictly whatever the content type claims. A JSON
    object with ``"jsonrpc": "2.0"`` must be a well-formed request (string
    ``method``; ``id`` a string, integer or null); batches (arrays) are refused
    (MCP removed them in 2025-06-18 and A2A never had them). Any other body is
    addressed by HTTP method and path.
    """
    if not body:
        return Call(_http_name(http_method, path), None, is_jsonrpc=False)
    is_json = "json" in content_type or body[:1] in (b"{", b"[")
    if not is_json:
        return Call(_http_name(http_method, path), None, is_jsonrpc=False)
    try:
        value = loads(body, max_bytes=len(body), max_depth=max_depth)
    except KeysError as exc:
        raise from_keys_error(exc) from None
    if isinstance(value, list):
        raise InvalidRequest("JSON-RPC batches are not accepted")
    if not isinstance(value, dict) or value.get("jsonrpc") != "2.0":
        return Call(_http_name(http_method, path), None, is_jsonrpc=False)
    method = value.get("method")
    rpc_id = value.get("id")
    if "method" not in value:
        # A response or an error sent to the gateway as a request (MCP clients
        # answer server requests this way): addressed by its kind.
        if "result" in value or "error" in value:
            return Call("(response)", _checked_id(rpc_id), is_jsonrpc=True)
        raise InvalidRequest("JSON-RPC object has neither method nor result")
    if not isinstance(method, str) or not method or len(method) > 200:
        raise InvalidRequest("JSON-RPC method must be a non-empty string")
    return Call(method, _checked_id(rpc_id), is_jsonrpc=True, is_notification="id" not in value)


def _checked_id(rpc_id: Any) -> RpcId:
    if (
        rpc_id is None
        or isinstance(rpc_id, str)
        or (isinstance(rpc_id, int) and not isinstance(rpc_id, bool))
    ):
        if isinstance(rpc_id, str) and len(rpc_id) > 256:
            raise InvalidRequest("JSON-RPC id longer than 256 characters")
        return rpc_id
    raise InvalidRequest("JSON-RPC id must be a string, an integer or null")


def render_error(error: BatonError, *, rpc_id: RpcId, trace_id: str) -> bytes:
    """The JSON-RPC error response body for ``error`` (JSON-RPC 2.0 s5.1)."""
    data: dict[str, Any] = {"code": error.code, "trace_id": trace_id, "retryable": error.retryable}
    if error.retry_after is not None:
        data["retry_after"] = error.retry_after
    if error.public_data is not None:
        data["baton"] = dict(error.public_data)
    code = PARSE_ERROR if error.code == "malformed_input" else RPC_CODES.get(error.http_status)
    body = {
        "jsonrpc": "2.0",
        "id": rpc_id,
        "error": {
            "code": -32603 if code is None else code,
            "message": error.public_message,
            "data": data,
        },
    }
    return json.dumps(body, separators=(",", ":")).encode()
