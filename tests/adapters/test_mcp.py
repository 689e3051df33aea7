"""The MCP adapter: both eras, every routing-header check, errors in MCP's code space.

Request bodies are the exact bytes the ``mcp`` 2.3.0 client sends (research
``protocols.md`` "MCP on the wire"); the SDK's own header codec and inbound
classifier serve as differential oracles.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mcp.shared.inbound import classify_inbound_request, encode_header_value
from mcp.shared.inbound import decode_header_value as sdk_decode_header_value
from mcp_types import JSONRPCError
from mcp_types.jsonrpc import HEADER_MISMATCH

from adapters.jsonrpc import RPC_CODES, Call
from adapters.mcp import (
    KNOWN_VERSIONS,
    MODERN_VERSIONS,
    decode_header_value,
    mcp_session_id,
    mrtr_request_state,
    mrtr_result_state,
    parse_mcp,
    render_mcp_error,
)
from keys.strictjson import loads
from protocol.errors import (
    ERRORS_BY_CODE,
    BatonError,
    HeaderMismatch,
    InvalidRequest,
    MalformedInput,
    MethodNotAllowed,
    RateLimited,
    TooDeep,
    UnsupportedVersion,
)

DETERMINISTIC = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
SESSION = "bb53c0de9f8e4f0a9d2b1c3e4f5a6b7c"
DEPTH = 32

# --------------------------------------------------------------------------- wire captures
#: mode="legacy": initialize (no version header, no session yet).
LEGACY_INITIALIZE = (
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    b'"capabilities":{},"clientInfo":{"name":"mcp","version":"0.1.0"}}}'
)
LEGACY_INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
LEGACY_TOOLS_CALL = (
    b'{"jsonrpc":"2.0","id":3,"method":"tools/call",'
    b'"params":{"name":"echo","arguments":{"text":"hello gateway"}}}'
)
LEGACY_HEADERS = {"mcp-session-id": SESSION, "mcp-protocol-version": HANDSHAKE}

#: mode="auto": the 2026-07-28 envelope the client stamps on every request.
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "mcp", "version": "0.1.0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
MODERN_DISCOVER = (
    b'{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":'
    b'{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
    b'"io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},'
    b'"io.modelcontextprotocol/clientCapabilities":{}}}}'
)
MODERN_TOOLS_CALL = (
    b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo",'
    b'"arguments":{"text":"hello gateway"},"_meta":'
    b'{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
    b'"io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},'
    b'"io.modelcontextprotocol/clientCapabilities":{}}}}'
)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def message(method: str, *, rpc_id: Any = 7, meta: bool = True, **params: Any) -> bytes:
    """A request as the SDK shapes it; ``rpc_id=None`` makes a notification."""
    body: dict[str, Any] = {"jsonrpc": "2.0"}
    if rpc_id is not None:
        body["id"] = rpc_id
    body["method"] = method
    if meta:
        params["_meta"] = META
    if params:
        body["params"] = params
    return dumps(body)


def named(method: str, member: str, name: str, *, meta: bool = True) -> bytes:
    """A request whose target is ``params[member] = name``."""
    params: dict[str, Any] = {member: name}
    return message(method, meta=meta, **params)


def modern_headers(method: str, name: str | None = None, **extra: str) -> dict[str, str]:
    headers = {"mcp-protocol-version": MODERN, "mcp-method": method}
    if name is not None:
        headers["mcp-name"] = encode_header_value(name)
    headers.update(extra)
    return headers


def post(body: bytes, headers: Mapping[str, str]) -> Call:
    return parse_mcp(body, http_method="POST", headers=headers, max_depth=DEPTH)


# --------------------------------------------------------------------------- handshake era
def test_legacy_initialize_takes_the_offered_version() -> None:
    call = post(LEGACY_INITIALIZE, {})
    assert call == Call(
        "initialize", 1, is_jsonrpc=True, protocol="mcp", version="2025-11-25", streaming=False
    )


def test_initialize_without_a_string_version_is_the_spec_default() -> None:
    body = dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
    assert post(body, {}).version == "2025-03-26"
    body = dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 3}}
    )
    assert post(body, {}).version == "2025-03-26"


def test_initialize_offering_an_unknown_version_is_passed_for_negotiation() -> None:
    # The server answers with a version it supports (lifecycle, "Version Negotiation").
    body = LEGACY_INITIALIZE.replace(b"2025-11-25", b"2099-01-01")
    assert post(body, {}).version == "2099-01-01"


def test_a_header_less_initialize_never_claims_the_modern_era() -> None:
    # Era confusion: without the header the upstream runs the handshake, so a
    # modern offer must not make the gateway treat the call as stateless.
    body = LEGACY_INITIALIZE.replace(b"2025-11-25", MODERN.encode())
    call = post(body, {"mcp-session-id": SESSION})
    assert call.version == "2025-03-26"
    assert call.version not in MODERN_VERSIONS


@pytest.mark.parametrize("offered", ["", "x" * 65, "2025 11 25", "2025-11-25\n"])
def test_initialize_offering_junk_is_refused(offered: str) -> None:
    body = dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": offered}}
    )
    with pytest.raises(InvalidRequest):
        post(body, {})


def test_the_version_header_wins_over_the_initialize_offer() -> None:
    assert post(LEGACY_INITIALIZE, {"mcp-protocol-version": "2025-06-18"}).version == "2025-06-18"


def test_legacy_notification() -> None:
    call = post(LEGACY_INITIALIZED, LEGACY_HEADERS)
    assert call.method == "notifications/initialized"
    assert call.is_notification
    assert call.rpc_id is None
    assert call.version == HANDSHAKE
    assert call.target is None


def test_legacy_tools_call() -> None:
    call = post(LEGACY_TOOLS_CALL, LEGACY_HEADERS)
    assert (call.method, call.rpc_id, call.is_notification) == ("tools/call", 3, False)
    assert (call.protocol, call.version) == ("mcp", HANDSHAKE)
    assert (call.target_kind, call.target) == ("tool", "echo")
    assert not call.streaming


def test_missing_version_header_is_2025_03_26() -> None:
    assert post(LEGACY_TOOLS_CALL, {}).version == "2025-03-26"


@pytest.mark.parametrize("version", sorted(KNOWN_VERSIONS - MODERN_VERSIONS))
def test_every_handshake_version_is_accepted(version: str) -> None:
    assert post(LEGACY_TOOLS_CALL, {"mcp-protocol-version": version}).version == version


def test_legacy_get_is_the_standalone_stream() -> None:
    call = parse_mcp(b"", http_method="GET", headers=LEGACY_HEADERS, max_depth=DEPTH)
    assert call == Call(
        "(listen)",
        None,
        is_jsonrpc=False,
        protocol="mcp",
        version=HANDSHAKE,
        streaming=True,
        session_id=SESSION,
    )


def test_legacy_delete_terminates_the_session() -> None:
    call = parse_mcp(b"", http_method="DELETE", headers={"mcp-session-id": SESSION}, max_depth=8)
    assert call == Call(
        "(terminate)",
        None,
        is_jsonrpc=False,
        protocol="mcp",
        version="2025-03-26",
        session_id=SESSION,
    )


@pytest.mark.parametrize("http_method", ["GET", "DELETE"])
def test_legacy_get_and_delete_take_no_body(http_method: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_mcp(LEGACY_TOOLS_CALL, http_method=http_method, headers=LEGACY_HEADERS, max_depth=8)


@pytest.mark.parametrize("http_method", ["GET", "DELETE"])
@pytest.mark.parametrize("header", ["mcp-method", "mcp-name"])
def test_routing_headers_on_a_bodyless_request_are_a_mismatch(
    http_method: str, header: str
) -> None:
    headers = {**LEGACY_HEADERS, header: "tools/call"}
    with pytest.raises(HeaderMismatch):
        parse_mcp(b"", http_method=http_method, headers=headers, max_depth=DEPTH)


# --------------------------------------------------------------------------- modern era
def test_modern_discover() -> None:
    call = post(MODERN_DISCOVER, modern_headers("server/discover"))
    assert call == Call(
        "server/discover", 1, is_jsonrpc=True, protocol="mcp", version=MODERN, streaming=False
    )


def test_modern_tools_call() -> None:
    call = post(MODERN_TOOLS_CALL, modern_headers("tools/call", "echo"))
    assert (call.method, call.rpc_id, call.version) == ("tools/call", 3, MODERN)
    assert (call.target_kind, call.target) == ("tool", "echo")
    assert not call.streaming


def test_modern_subscriptions_listen_streams() -> None:
    call = post(message("subscriptions/listen"), modern_headers("subscriptions/listen"))
    assert call.streaming
    assert not post(message("subscriptions/listen", meta=False), LEGACY_HEADERS).streaming


@pytest.mark.parametrize("http_method", ["GET", "DELETE"])
def test_modern_get_and_delete_are_not_allowed(http_method: str) -> None:
    headers = {"mcp-protocol-version": MODERN, "mcp-session-id": SESSION}
    with pytest.raises(MethodNotAllowed):
        parse_mcp(b"", http_method=http_method, headers=headers, max_depth=DEPTH)


@pytest.mark.parametrize("http_method", ["PUT", "PATCH", "OPTIONS", "HEAD", "post", ""])
@pytest.mark.parametrize("version", [None, HANDSHAKE, MODERN])
def test_other_http_methods_are_not_allowed(http_method: str, version: str | None) -> None:
    headers = {} if version is None else {"mcp-protocol-version": version}
    with pytest.raises(MethodNotAllowed):
        parse_mcp(LEGACY_TOOLS_CALL, http_method=http_method, headers=headers, max_depth=DEPTH)


@pytest.mark.parametrize(
    "version", ["2099-01-01", "2025-11-25 ", "", "2.0", "2026-07-28,2026-07-28"]
)
@pytest.mark.parametrize("http_method", ["POST", "GET", "DELETE"])
def test_unknown_version_header(version: str, http_method: str) -> None:
    body = LEGACY_TOOLS_CALL if http_method == "POST" else b""
    with pytest.raises(UnsupportedVersion):
        parse_mcp(
            body, http_method=http_method, headers={"mcp-protocol-version": version}, max_depth=8
        )


# --------------------------------------------------------------------------- targets
TARGET_CASES = [
    ("tools/call", "name", "tool", "get_weather"),
    ("resources/read", "uri", "resource", "file:///etc/hosts"),
    ("resources/subscribe", "uri", "resource", "db://orders/42"),
    ("resources/unsubscribe", "uri", "resource", "db://orders/42"),
    ("prompts/get", "name", "prompt", "summarise"),
]


@pytest.mark.parametrize(("method", "member", "kind", "name"), TARGET_CASES)
def test_target_table_modern(method: str, member: str, kind: str, name: str) -> None:
    body = named(method, member, name)
    call = post(body, modern_headers(method, name))
    assert (call.method, call.target_kind, call.target) == (method, kind, name)


@pytest.mark.parametrize(("method", "member", "kind", "name"), TARGET_CASES)
def test_target_table_handshake(method: str, member: str, kind: str, name: str) -> None:
    body = named(method, member, name, meta=False)
    call = post(body, LEGACY_HEADERS)
    assert (call.method, call.target_kind, call.target) == (method, kind, name)


@pytest.mark.parametrize("method", ["tools/list", "resources/list", "prompts/list", "ping"])
def test_methods_without_a_target(method: str) -> None:
    call = post(message(method, meta=False), LEGACY_HEADERS)
    assert (call.target_kind, call.target) == (None, None)


@pytest.mark.parametrize(("method", "member", "kind", "name"), TARGET_CASES)
@pytest.mark.parametrize("bad", [None, "", 42, ["x"], {"n": "x"}, "x" * 1025])
def test_target_must_be_a_short_non_empty_string(
    method: str, member: str, kind: str, name: str, bad: Any
) -> None:
    params = {} if bad is None else {member: bad}
    with pytest.raises(InvalidRequest):
        post(message(method, meta=False, **params), LEGACY_HEADERS)


def test_target_of_1024_chars_is_accepted() -> None:
    name = "t" * 1024
    assert post(message("tools/call", name=name), modern_headers("tools/call", name)).target == name


def test_a_tools_call_without_params_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        post(message("tools/call", meta=False), LEGACY_HEADERS)


# --------------------------------------------------------------------------- header mismatches
def test_modern_request_without_mcp_method() -> None:
    headers = modern_headers("tools/call", "echo")
    del headers["mcp-method"]
    with pytest.raises(HeaderMismatch, match="mcp-method header is required"):
        post(MODERN_TOOLS_CALL, headers)


def test_modern_notification_without_mcp_method() -> None:
    body = message("notifications/cancelled", rpc_id=None, requestId=3)
    with pytest.raises(HeaderMismatch, match="mcp-method"):
        post(body, {"mcp-protocol-version": MODERN})
    call = post(body, modern_headers("notifications/cancelled"))
    assert call.is_notification


@pytest.mark.parametrize("wrong", ["tools/list", "Tools/call", "tools/call ", ""])
def test_modern_wrong_mcp_method(wrong: str) -> None:
    with pytest.raises(HeaderMismatch, match="differs from body method"):
        post(MODERN_TOOLS_CALL, modern_headers(wrong, "echo"))


NAME_BEARING = [
    case for case in TARGET_CASES if case[0] in ("tools/call", "resources/read", "prompts/get")
]


@pytest.mark.parametrize(("method", "member", "kind", "name"), NAME_BEARING)
def test_modern_missing_mcp_name(method: str, member: str, kind: str, name: str) -> None:
    with pytest.raises(HeaderMismatch, match="mcp-name header is required"):
        post(named(method, member, name), modern_headers(method))


@pytest.mark.parametrize(("method", "member", "kind", "name"), NAME_BEARING)
def test_modern_wrong_mcp_name(method: str, member: str, kind: str, name: str) -> None:
    with pytest.raises(HeaderMismatch, match="differs from"):
        post(named(method, member, name), modern_headers(method, name + "x"))


@pytest.mark.parametrize(("method", "member", "kind", "name"), NAME_BEARING)
def test_base64_mcp_name_equal(method: str, member: str, kind: str, name: str) -> None:
    unicode_name = name + " \u00e9t\u00e9 \U0001f600"
    encoded = "=?base64?" + base64.b64encode(unicode_name.encode()).decode() + "?="
    assert encode_header_value(unicode_name) == encoded
    headers = {**modern_headers(method), "mcp-name": encoded}
    assert post(named(method, member, unicode_name), headers).target == unicode_name


@pytest.mark.parametrize(("method", "member", "kind", "name"), NAME_BEARING)
def test_base64_mcp_name_unequal(method: str, member: str, kind: str, name: str) -> None:
    headers = {**modern_headers(method), "mcp-name": encode_header_value("other\u00e9")}
    with pytest.raises(HeaderMismatch):
        post(named(method, member, name), headers)


def test_base64_form_of_a_plain_name_is_accepted() -> None:
    # A client may wrap any value; the decoded value is what is compared.
    headers = {**modern_headers("tools/call"), "mcp-name": "=?base64?ZWNobw==?="}
    assert post(MODERN_TOOLS_CALL, headers).target == "echo"


def test_the_raw_sentinel_text_is_not_the_name() -> None:
    body = message("tools/call", name="=?base64?ZWNobw==?=")
    headers = {**modern_headers("tools/call"), "mcp-name": "=?base64?ZWNobw==?="}
    with pytest.raises(HeaderMismatch):
        post(body, headers)


@pytest.mark.parametrize(
    "header", ["=?base64?ZWNobw?=", "=?base64?ZWNobx==?=", "=?base64?!!!!?=", "=?base64?/w==?="]
)
def test_malformed_base64_mcp_name(header: str) -> None:
    headers = {**modern_headers("tools/call"), "mcp-name": header}
    with pytest.raises(HeaderMismatch):
        post(MODERN_TOOLS_CALL, headers)


@pytest.mark.parametrize("method", ["resources/subscribe", "resources/unsubscribe"])
def test_mcp_name_is_optional_but_checked_on_subscribe(method: str) -> None:
    body = message(method, uri="db://orders/42")
    assert post(body, modern_headers(method)).target == "db://orders/42"
    assert post(body, modern_headers(method, "db://orders/42")).target == "db://orders/42"
    with pytest.raises(HeaderMismatch):
        post(body, modern_headers(method, "db://orders/43"))


def test_mcp_name_on_an_extension_method_is_not_checked() -> None:
    body = message("acme/run", job="nightly")
    assert post(body, modern_headers("acme/run", "nightly")).method == "acme/run"
    assert post(body, modern_headers("acme/run", "anything")).target is None


@pytest.mark.parametrize("meta_version", ["2025-11-25", "2099-01-01", 20260728, None, ""])
def test_meta_version_disagreeing_with_header(meta_version: Any) -> None:
    meta = {**META, "io.modelcontextprotocol/protocolVersion": meta_version}
    body = dumps(
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "echo", "_meta": meta},
        }
    )
    with pytest.raises(HeaderMismatch, match="_meta version"):
        post(body, modern_headers("tools/call", "echo"))


def test_meta_version_may_be_absent() -> None:
    body = message("tools/call", meta=False, name="echo")
    assert post(body, modern_headers("tools/call", "echo")).target == "echo"


@pytest.mark.parametrize("meta", [[], "x", 1, None])
def test_meta_must_be_an_object(meta: Any) -> None:
    body = dumps(
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "e", "_meta": meta}}
    )
    with pytest.raises(InvalidRequest):
        post(body, modern_headers("tools/call", "e"))


def test_handshake_present_but_wrong_mcp_method() -> None:
    with pytest.raises(HeaderMismatch):
        post(LEGACY_TOOLS_CALL, {**LEGACY_HEADERS, "mcp-method": "tools/list"})
    assert post(LEGACY_TOOLS_CALL, {**LEGACY_HEADERS, "mcp-method": "tools/call"}).target == "echo"


def test_handshake_present_but_wrong_mcp_name() -> None:
    with pytest.raises(HeaderMismatch):
        post(LEGACY_TOOLS_CALL, {**LEGACY_HEADERS, "mcp-name": "rm_rf"})
    assert post(LEGACY_TOOLS_CALL, {**LEGACY_HEADERS, "mcp-name": "echo"}).target == "echo"


def test_handshake_headers_are_not_required() -> None:
    assert post(LEGACY_TOOLS_CALL, LEGACY_HEADERS).target == "echo"


def test_meta_version_without_a_version_header_is_a_mismatch() -> None:
    # A body claiming 2026-07-28 while the header routes it to the handshake era.
    with pytest.raises(HeaderMismatch, match="absent"):
        post(MODERN_TOOLS_CALL, {"mcp-session-id": SESSION})


def test_meta_version_against_a_handshake_header() -> None:
    with pytest.raises(HeaderMismatch):
        post(MODERN_TOOLS_CALL, LEGACY_HEADERS)


def test_mcp_param_headers_are_not_validated() -> None:
    headers = modern_headers("tools/call", "echo", **{"mcp-param-region": "=?base64?!!?="})
    assert post(MODERN_TOOLS_CALL, headers).target == "echo"


# --------------------------------------------------------------------------- responses
def test_client_response_to_a_server_request() -> None:
    body = b'{"jsonrpc":"2.0","id":0,"result":{"action":"accept","content":{"ok":true}}}'
    call = post(body, LEGACY_HEADERS)
    assert call == Call(
        "(response)", 0, is_jsonrpc=True, protocol="mcp", version=HANDSHAKE, session_id=SESSION
    )


def test_client_error_response() -> None:
    body = b'{"jsonrpc":"2.0","id":"s-1","error":{"code":-32601,"message":"no sampling"}}'
    assert post(body, LEGACY_HEADERS).rpc_id == "s-1"
    body = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}'
    assert post(body, LEGACY_HEADERS).rpc_id is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":1}',
        b'{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}',
        b'{"jsonrpc":"2.0","result":{}}',
        b'{"jsonrpc":"2.0","id":null,"result":{}}',
        b'{"jsonrpc":"2.0","id":1,"result":[]}',
        b'{"jsonrpc":"2.0","id":1,"result":"ok"}',
        b'{"jsonrpc":"2.0","id":1,"error":"boom"}',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":true,"message":"m"}}',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":1}}',
        b'{"jsonrpc":"2.0","id":1.5,"result":{}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","result":{}}',
    ],
)
def test_malformed_responses(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        post(body, LEGACY_HEADERS)


def test_modern_era_refuses_posted_responses() -> None:
    body = b'{"jsonrpc":"2.0","id":0,"result":{}}'
    with pytest.raises(InvalidRequest, match="no server-to-client"):
        post(body, {"mcp-protocol-version": MODERN})


@pytest.mark.parametrize("header", ["mcp-method", "mcp-name"])
def test_routing_header_on_a_response_is_a_mismatch(header: str) -> None:
    body = b'{"jsonrpc":"2.0","id":0,"result":{}}'
    with pytest.raises(HeaderMismatch):
        post(body, {**LEGACY_HEADERS, header: "tools/call"})


# --------------------------------------------------------------------------- framing
@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"[" + LEGACY_TOOLS_CALL + b"]",
        b"[" + LEGACY_TOOLS_CALL + b"," + LEGACY_INITIALIZED + b"]",
    ],
)
@pytest.mark.parametrize("headers", [LEGACY_HEADERS, modern_headers("tools/call", "echo")])
def test_batches_are_refused(body: bytes, headers: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest, match="batches") as caught:
        post(body, headers)
    assert caught.value.code == "invalid_request"


@pytest.mark.parametrize(
    "body", [b"", b"{", b"not json", b"\xff\xfe", b"\xef\xbb\xbf{}", b'{"a":NaN}', b"{} {}"]
)
def test_malformed_json(body: bytes) -> None:
    with pytest.raises(MalformedInput):
        post(body, LEGACY_HEADERS)


@pytest.mark.parametrize(
    "body",
    [
        b'"tools/call"',
        b"1",
        b"null",
        b"true",
        b"{}",
        b'{"id":1,"method":"tools/list"}',
        b'{"jsonrpc":"1.0","id":1,"method":"tools/list"}',
        b'{"jsonrpc":2.0,"id":1,"method":"tools/list"}',
    ],
)
def test_json_that_is_not_json_rpc(body: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        post(body, LEGACY_HEADERS)
    assert type(caught.value) is InvalidRequest


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list"}',
        # Parser differential: first-wins and last-wins readers see different tools.
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"rm"}}',
        b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}',
    ],
)
def test_duplicate_keys_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedInput, match="duplicate"):
        post(body, LEGACY_HEADERS)


def test_deep_nesting_is_refused() -> None:
    nested = "[" * 40 + "]" * 40
    body = (
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","arguments":{"x":'
        + nested
        + "}}}"
    ).encode()
    with pytest.raises(TooDeep):
        post(body, LEGACY_HEADERS)
    assert post(body.replace(b"[" * 40 + b"]" * 40, b"[]"), LEGACY_HEADERS).target == "e"


@pytest.mark.parametrize("rpc_id", [1.5, 1.0, True, False, [], {}, "x" * 257])
def test_bad_ids_are_refused(rpc_id: Any) -> None:
    body = dumps({"jsonrpc": "2.0", "id": rpc_id, "method": "tools/list"})
    with pytest.raises(InvalidRequest):
        post(body, LEGACY_HEADERS)


def test_null_request_id_is_refused() -> None:
    # MCP basic/index: unlike base JSON-RPC, a request id MUST NOT be null.
    with pytest.raises(InvalidRequest, match="null"):
        post(b'{"jsonrpc":"2.0","id":null,"method":"tools/list"}', LEGACY_HEADERS)


@pytest.mark.parametrize("rpc_id", ["abc", "", "x" * 256, 0, -1, 2**62])
def test_string_and_integer_ids(rpc_id: str | int) -> None:
    body = dumps({"jsonrpc": "2.0", "id": rpc_id, "method": "tools/list"})
    assert post(body, LEGACY_HEADERS).rpc_id == rpc_id


@pytest.mark.parametrize("method", [None, 1, "", "m" * 201, ["tools/call"]])
def test_bad_methods_are_refused(method: Any) -> None:
    with pytest.raises(InvalidRequest):
        post(dumps({"jsonrpc": "2.0", "id": 1, "method": method}), LEGACY_HEADERS)


@pytest.mark.parametrize("params", [["echo"], "echo", 1, None])
def test_params_must_be_an_object(params: Any) -> None:
    body = dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params})
    with pytest.raises(InvalidRequest):
        post(body, LEGACY_HEADERS)


# --------------------------------------------------------------------------- sessions
@pytest.mark.parametrize("value", [SESSION, "!", "~" * 256, "a-b_c.d:e"])
def test_valid_session_ids(value: str) -> None:
    assert mcp_session_id({"mcp-session-id": value}) == value


def test_absent_session_id() -> None:
    assert mcp_session_id({"mcp-protocol-version": HANDSHAKE}) is None


@pytest.mark.parametrize(
    "value", ["", " ", "a b", "x" * 257, "caf\u00e9", "a\tb", "a\x7f", "a\x00"]
)
def test_invalid_session_ids(value: str) -> None:
    with pytest.raises(InvalidRequest):
        mcp_session_id({"mcp-session-id": value})


def test_handshake_parse_refuses_a_malformed_session_id() -> None:
    with pytest.raises(InvalidRequest):
        post(LEGACY_TOOLS_CALL, {**LEGACY_HEADERS, "mcp-session-id": "bad id"})
    with pytest.raises(InvalidRequest):
        parse_mcp(b"", http_method="GET", headers={"mcp-session-id": ""}, max_depth=DEPTH)


def test_modern_parse_ignores_the_session_header() -> None:
    # 2026-07-28 transports: Mcp-Session-Id is ignored.
    headers = modern_headers("tools/call", "echo", **{"mcp-session-id": "bad id"})
    assert post(MODERN_TOOLS_CALL, headers).target == "echo"


# --------------------------------------------------------------------------- header values
@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        ("echo", "echo"),
        ("", ""),
        ("=?base64?ZWNobw==?=", "echo"),
        ("=?base64??=", ""),
        ("=?base64?w6k=?=", "\u00e9"),
        ("=?base64ZWNobw==?=", "=?base64ZWNobw==?="),
        ("x=?base64?ZWNobw==?=", "x=?base64?ZWNobw==?="),
    ],
)
def test_decode_header_value(value: str, decoded: str) -> None:
    assert decode_header_value(value) == decoded


@pytest.mark.parametrize(
    "value",
    [
        "=?base64?ZWNobw?=",  # missing padding
        "=?base64?ZWNobx==?=",  # non-zero trailing bits: not canonical
        "=?base64?ZW Nobw==?=",
        "=?base64?ZWNobw==\u00e9?=",
        "=?base64?/w==?=",  # 0xff: not UTF-8
        "=?base64?7aCA?=",  # an encoded lone surrogate: not UTF-8
    ],
)
def test_decode_header_value_refuses_corrupt_payloads(value: str) -> None:
    with pytest.raises(HeaderMismatch):
        decode_header_value(value)


@DETERMINISTIC
@given(st.text())
def test_decode_inverts_the_sdk_encoder(value: str) -> None:
    assert decode_header_value(encode_header_value(value)) == value


_SENTINELISH = st.builds(
    lambda inner: f"=?base64?{inner}?=",
    st.text(alphabet="ABCDEFGHabcdefgh0123456789+/= \n\u00e9", max_size=16),
)


@DETERMINISTIC
@given(
    st.text()
    | _SENTINELISH
    | st.binary(max_size=24).map(lambda b: encode_header_value(b.decode("latin-1")))
)
@example("=?base64?ZWNobx==?=")
@example("=?base64?\x80?=")
@example("=?base64?ZWNobw==?=\n")
def test_decode_agrees_with_the_sdk(value: str) -> None:
    try:
        expected = sdk_decode_header_value(value)
    except ValueError:
        # mcp 2.3.0 lets base64's ValueError escape for a non-ASCII payload
        # ("=?base64?\x80?="); Baton refuses it as a mismatch instead.
        expected = None
    if expected is None:
        with pytest.raises(HeaderMismatch):
            decode_header_value(value)
    else:
        assert decode_header_value(value) == expected


# --------------------------------------------------------------------------- SDK ladder
_NAMES = st.sampled_from(["echo", "get weather", "\u00e9t\u00e9", " pad", "=?base64?ZWNobw==?="])


@DETERMINISTIC
@given(
    name=_NAMES,
    method_header=st.none() | st.sampled_from(["tools/call", "tools/list", ""]),
    name_header=st.none()
    | _NAMES.map(encode_header_value)
    | _NAMES
    | st.sampled_from(["=?base64?!!?=", "=?base64?ZWNobw==?="]),
    meta_version=st.sampled_from([MODERN, HANDSHAKE, "x"]),
)
def test_header_checks_agree_with_the_sdk_classifier(
    name: str, method_header: str | None, name_header: str | None, meta_version: str
) -> None:
    meta = {**META, "io.modelcontextprotocol/protocolVersion": meta_version}
    decoded = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "_meta": meta},
    }
    headers = {"mcp-protocol-version": MODERN}
    if method_header is not None:
        headers["mcp-method"] = method_header
    if name_header is not None:
        headers["mcp-name"] = name_header
    verdict = classify_inbound_request(decoded, headers=headers)
    sdk_mismatch = getattr(verdict, "code", None) == HEADER_MISMATCH
    try:
        post(dumps(decoded), headers)
    except HeaderMismatch:
        ours = True
    else:
        ours = False
    assert ours == sdk_mismatch


# --------------------------------------------------------------------------- MRTR
def test_mrtr_request_state() -> None:
    body = message(
        "tools/call",
        name="book",
        inputResponses={"confirm": {"action": "accept", "content": {}}},
        requestState="eyJzdGVwIjoyfQ",
    )
    assert post(body, modern_headers("tools/call", "book")).target == "book"
    assert mrtr_request_state(body, max_depth=DEPTH) == "eyJzdGVwIjoyfQ"
    assert mrtr_request_state(MODERN_TOOLS_CALL, max_depth=DEPTH) is None
    assert mrtr_request_state(LEGACY_INITIALIZED, max_depth=DEPTH) is None


@pytest.mark.parametrize("state", [1, None, {"s": 1}, ["s"]])
def test_mrtr_request_state_must_be_a_string(state: Any) -> None:
    body = message("tools/call", name="book", requestState=state)
    with pytest.raises(InvalidRequest):
        mrtr_request_state(body, max_depth=DEPTH)
    with pytest.raises(InvalidRequest):
        post(body, modern_headers("tools/call", "book"))


def test_mrtr_request_state_parses_strictly() -> None:
    with pytest.raises(MalformedInput):
        mrtr_request_state(
            b'{"jsonrpc":"2.0","params":{"requestState":"a","requestState":"b"}}', max_depth=8
        )


def test_mrtr_result_state() -> None:
    body = (
        b'{"jsonrpc":"2.0","id":3,"result":{"resultType":"input_required","inputRequests":'
        b'{"confirm":{"method":"elicitation/create","params":{"message":"Book it?",'
        b'"requestedSchema":{"type":"object","properties":{}}}}},"requestState":"opaque-1"}}'
    )
    assert mrtr_result_state(body, max_depth=DEPTH) == "opaque-1"


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":3,"result":{"resultType":"complete","requestState":"s","content":[]}}',
        b'{"jsonrpc":"2.0","id":3,"result":{"resultType":"input_required","inputRequests":{}}}',
        b'{"jsonrpc":"2.0","id":3,"result":{"resultType":"input_required","requestState":7}}',
        b'{"jsonrpc":"2.0","id":3,"error":{"code":-32603,"message":"x"}}',
        b'{"jsonrpc":"2.0","id":3,"result":"input_required"}',
        b"[]",
        b'"requestState"',
    ],
)
def test_mrtr_result_without_state(body: bytes) -> None:
    assert mrtr_result_state(body, max_depth=DEPTH) is None


@pytest.mark.parametrize(
    "body", [b"", b"{", b'{"result":{"resultType":"input_required"},"result":{}}']
)
def test_mrtr_result_state_parses_strictly(body: bytes) -> None:
    with pytest.raises(MalformedInput):
        mrtr_result_state(body, max_depth=DEPTH)


# --------------------------------------------------------------------------- rendering
MCP_CODES = {
    "header_mismatch": -32020,
    "unsupported_version": -32022,
    "malformed_input": -32700,
    "invalid_request": -32600,
    "too_deep": -32600,
    "method_not_allowed": -32600,
}
SECRET = "internal-detail-7c1e"


def expected_code(error: BatonError) -> int:
    if error.code in MCP_CODES:
        return MCP_CODES[error.code]
    return RPC_CODES.get(error.http_status, -32603)


@pytest.mark.parametrize("code", sorted(ERRORS_BY_CODE))
def test_render_every_error_kind(code: str) -> None:
    error = ERRORS_BY_CODE[code](SECRET)
    raw = render_mcp_error(error, rpc_id=5, trace_id="trace-1")
    assert SECRET.encode() not in raw
    assert b": " not in raw and b", " not in raw
    body = loads(raw)
    assert set(body) == {"jsonrpc", "id", "error"}
    assert (body["jsonrpc"], body["id"]) == ("2.0", 5)
    assert body["error"]["code"] == expected_code(error)
    assert body["error"]["message"] == error.public_message
    data = body["error"]["data"]
    assert (data["code"], data["trace_id"], data["retryable"]) == (code, "trace-1", error.retryable)
    extra = {"supported"} if code == "unsupported_version" else set()
    assert set(data) == {"code", "trace_id", "retryable"} | extra
    JSONRPCError.model_validate_json(raw)


@pytest.mark.parametrize(
    ("error", "number"),
    [
        (HeaderMismatch(SECRET), -32020),
        (UnsupportedVersion(SECRET), -32022),
        (MalformedInput(SECRET), -32700),
        (InvalidRequest(SECRET), -32600),
        (TooDeep(SECRET), -32600),
        (MethodNotAllowed(SECRET), -32600),
    ],
)
def test_render_mcp_codes(error: BatonError, number: int) -> None:
    body = loads(render_mcp_error(error, rpc_id="r", trace_id="t"))
    assert body["error"]["code"] == number


def test_render_unsupported_version_lists_supported_versions() -> None:
    body = loads(render_mcp_error(UnsupportedVersion(SECRET), rpc_id=None, trace_id="t"))
    assert body["error"]["data"]["supported"] == sorted(KNOWN_VERSIONS)
    assert body["id"] is None


def test_render_retry_after() -> None:
    body = loads(render_mcp_error(RateLimited(SECRET, retry_after=2.5), rpc_id="a", trace_id="t"))
    assert body["error"]["code"] == RPC_CODES.get(429, -32603)
    assert body["error"]["data"] == {
        "code": "rate_limited",
        "trace_id": "t",
        "retryable": True,
        "retry_after": 2.5,
    }


def test_render_unmapped_status_is_internal_error() -> None:
    class Teapot(BatonError):  # no ``code`` of its own: not registered
        http_status = 418

    assert 418 not in RPC_CODES
    body = loads(render_mcp_error(Teapot(SECRET), rpc_id=1, trace_id="t"))
    assert body["error"]["code"] == -32603
    assert body["error"]["data"]["code"] == "internal_error"


@pytest.mark.parametrize("rpc_id", [None, 0, -3, "req-\u00e9", 2**62])
def test_render_keeps_the_id(rpc_id: str | int | None) -> None:
    assert loads(render_mcp_error(HeaderMismatch(), rpc_id=rpc_id, trace_id="t"))["id"] == rpc_id


# --------------------------------------------------------------------------- properties
_HEADER_NAMES = st.sampled_from(
    ["mcp-protocol-version", "mcp-method", "mcp-name", "mcp-session-id", "mcp-param-x", "accept"]
)
_HEADER_VALUES = (
    st.sampled_from(sorted(KNOWN_VERSIONS))
    | st.sampled_from(["tools/call", "echo", "=?base64?ZWNobw==?=", SESSION, "=?base64?!?="])
    | st.text(max_size=20)
)
_HEADERS = st.dictionaries(_HEADER_NAMES, _HEADER_VALUES, max_size=5)
_HTTP_METHODS = st.sampled_from(["POST", "GET", "DELETE"]) | st.text(max_size=6)

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
_METHOD_NAMES = [
    "tools/call",
    "resources/read",
    "resources/subscribe",
    "prompts/get",
    "initialize",
    "ping",
    "subscriptions/listen",
    "server/discover",
]
_TARGETS = st.sampled_from(["echo", "file:///x", "\u00e9t\u00e9", "", "=?base64?ZWNobw==?="])


def _mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` nine times in ten, any JSON value otherwise."""
    return st.integers(0, 9).flatmap(lambda roll: _JSON if roll == 0 else valid)


_META = st.fixed_dictionaries(
    {},
    optional={
        "io.modelcontextprotocol/protocolVersion": _mostly(st.sampled_from([MODERN, HANDSHAKE])),
        "io.modelcontextprotocol/clientCapabilities": st.just({}),
    },
)
_PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "name": _mostly(_TARGETS),
        "uri": _mostly(_TARGETS),
        "_meta": _mostly(_META),
        "requestState": _mostly(st.text(max_size=4)),
        "protocolVersion": _mostly(st.sampled_from(sorted(KNOWN_VERSIONS))),
        "arguments": _JSON,
    },
)
_IDS = _mostly(st.integers(-5, 5) | st.text(max_size=4))


@st.composite
def _messages(draw: st.DrawFn) -> dict[str, Any]:
    """A request, a notification or a response, each field sometimes junk."""
    value: dict[str, Any] = {"jsonrpc": draw(_mostly(st.just("2.0")))}
    kind = draw(st.sampled_from(["request", "request", "notification", "response"]))
    if kind != "notification":
        value["id"] = draw(_IDS)
    if kind == "response":
        if draw(st.booleans()):
            value["result"] = draw(_mostly(st.dictionaries(st.text(max_size=4), _JSON, max_size=2)))
        else:
            value["error"] = draw(
                _mostly(st.fixed_dictionaries({"code": st.integers(), "message": st.text()}))
            )
        return value
    value["method"] = draw(
        _mostly(st.sampled_from(_METHOD_NAMES) | st.text(min_size=1, max_size=8))
    )
    if draw(st.integers(0, 4)):
        value["params"] = draw(_mostly(_PARAMS))
    return value


@st.composite
def _requests(draw: st.DrawFn) -> tuple[bytes, str, dict[str, str]]:
    """A message and headers that mostly agree with it, so every branch is reached."""
    value = draw(_messages())
    method, params = value.get("method"), value.get("params")
    headers: dict[str, str] = {}
    version = draw(st.sampled_from([None, MODERN, MODERN, HANDSHAKE, "2099-01-01"]))
    if version is not None:
        headers["mcp-protocol-version"] = version
    if draw(st.integers(0, 3)):
        if isinstance(method, str) and draw(st.integers(0, 5)) > 0:
            headers["mcp-method"] = method
        else:
            headers["mcp-method"] = draw(st.text(max_size=6))
    if draw(st.integers(0, 3)):
        name = params.get("name", params.get("uri")) if isinstance(params, dict) else None
        if isinstance(name, str) and draw(st.integers(0, 5)) > 0:
            headers["mcp-name"] = draw(st.sampled_from([name, encode_header_value(name)]))
        else:
            headers["mcp-name"] = draw(_HEADER_VALUES)
    if draw(st.booleans()):
        headers["mcp-session-id"] = draw(st.sampled_from([SESSION, SESSION, "", "a b"]))
    http_method = draw(st.sampled_from(["POST"] * 6 + ["GET", "DELETE", "PUT"]))
    return dumps(value), http_method, headers


def _parse_or_error(body: bytes, http_method: str, headers: dict[str, str]) -> Call | None:
    try:
        return parse_mcp(body, http_method=http_method, headers=headers, max_depth=8)
    except BatonError:
        return None


@DETERMINISTIC
@given(body=st.binary(max_size=200), http_method=_HTTP_METHODS, headers=_HEADERS)
def test_arbitrary_bytes_give_a_call_or_a_baton_error(
    body: bytes, http_method: str, headers: dict[str, str]
) -> None:
    call = _parse_or_error(body, http_method, headers)
    assert call is None or call.protocol == "mcp"


@settings(DETERMINISTIC, max_examples=500)
@given(request=_requests())
def test_arbitrary_messages_give_a_call_or_a_baton_error(
    request: tuple[bytes, str, dict[str, str]],
) -> None:
    body, http_method, headers = request
    call = _parse_or_error(body, http_method, headers)
    if call is None:
        return
    assert call.protocol == "mcp"
    assert call.version is not None
    assert (call.version in MODERN_VERSIONS) == (
        headers.get("mcp-protocol-version") in MODERN_VERSIONS
    )
    if call.target is not None:
        assert 0 < len(call.target) <= 1024
    modern = headers.get("mcp-protocol-version") in MODERN_VERSIONS
    if call.is_jsonrpc and call.method != "(response)":
        assert headers.get("mcp-method", call.method) == call.method
        if modern:
            assert headers["mcp-method"] == call.method
            assert call.version == headers["mcp-protocol-version"]
        if call.target is not None and "mcp-name" in headers:
            assert decode_header_value(headers["mcp-name"]) == call.target


# ------------------------------------------------------------------ args digest
def test_args_digest_is_the_rfc8785_digest_of_the_arguments() -> None:
    from protocol.canonical import canonical_digest

    def call(arguments: object) -> Call:
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
             "params": {"name": "refund", "arguments": arguments}}
        ).encode()  # fmt: skip
        return parse_mcp(
            body, http_method="POST", headers={"mcp-protocol-version": "2025-11-25"}, max_depth=64
        )

    first = call({"order": "o-1", "amount": 5})
    assert first.args_digest == canonical_digest({"amount": 5, "order": "o-1"})
    assert call({"amount": 5, "order": "o-1"}).args_digest == first.args_digest  # key order
    assert call({"order": "o-2", "amount": 5}).args_digest != first.args_digest
    listing = parse_mcp(
        b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}',
        http_method="POST",
        headers={"mcp-protocol-version": "2025-11-25"},
        max_depth=64,
    )
    assert listing.args_digest is None


def test_handles_are_read_per_era() -> None:
    """The session id in the handshake era, the MRTR state in 2026-07-28; never the other."""
    legacy = post(LEGACY_TOOLS_CALL, LEGACY_HEADERS)
    assert (legacy.session_id, legacy.request_state) == (SESSION, None)
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
         "params": {"name": "echo", "arguments": {}, "requestState": "st-1",
                    "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}}
    ).encode()  # fmt: skip
    headers = {
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": "echo",
        "mcp-session-id": SESSION,  # ignored in the stateless era
    }
    modern = post(body, headers)
    assert (modern.session_id, modern.request_state) == (None, "st-1")
