"""Listings filtered to what a caller may use, and SSE events rewritten around their data."""

from __future__ import annotations

import json

import pytest

from adapters.mcp import filter_listing
from adapters.sse import event_data, with_data
from protocol.errors import BadGateway


def _allowed(kind: str, name: str) -> bool:
    return (kind, name) in {("tool", "echo"), ("resource", "docs://a"), ("prompt", "hi")}


def _answer(member: str, items: list[dict[str, str]]) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": 3, "result": {member: items, "nextCursor": "c"}}
    ).encode()


@pytest.mark.parametrize(
    ("method", "member", "key", "keep", "drop"),
    [
        ("tools/list", "tools", "name", "echo", "refund"),
        ("resources/list", "resources", "uri", "docs://a", "file:///etc/passwd"),
        ("prompts/list", "prompts", "name", "hi", "jailbreak"),
    ],
)
def test_listing_keeps_only_allowed_targets(
    method: str, member: str, key: str, keep: str, drop: str
) -> None:
    body = _answer(member, [{key: keep}, {key: drop}, {"no-name": "x"}])
    out = filter_listing(method, body, _allowed, max_depth=64)
    assert out is not None
    value = json.loads(out)
    assert value["result"] == {member: [{key: keep}], "nextCursor": "c"}
    assert value["id"] == 3


def test_unchanged_or_foreign_answers_are_left_alone() -> None:
    only_allowed = _answer("tools", [{"name": "echo"}])
    assert filter_listing("tools/list", only_allowed, _allowed, max_depth=64) is None
    assert (
        filter_listing("tools/call", _answer("tools", [{"name": "x"}]), _allowed, max_depth=64)
        is None
    )
    error = b'{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"m"}}'
    assert filter_listing("tools/list", error, _allowed, max_depth=64) is None


@pytest.mark.parametrize(
    "message",
    [
        b"not json",
        # A lenient client keeps the last "tools": the filter must not be read around.
        b'{"jsonrpc":"2.0","id":1,"result":{"tools":[],"tools":[{"name":"refund"}]}}',
    ],
)
def test_an_answer_the_strict_parser_refuses_is_a_bad_gateway(message: bytes) -> None:
    with pytest.raises(BadGateway):
        filter_listing("tools/list", message, _allowed, max_depth=64)


def test_event_data_is_replaced_and_other_fields_kept() -> None:
    event = b'event: message\r\nid: 7\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
    assert event_data(event) == b'{"a":\n1}'
    out = with_data(event, b'{"a":2}')
    assert out == b'event: message\nid: 7\ndata: {"a":2}\n\n'
    assert event_data(out) == b'{"a":2}'
    with pytest.raises(ValueError, match="one line"):
        with_data(event, b"a\nb")
