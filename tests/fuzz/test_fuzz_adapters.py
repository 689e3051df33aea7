"""Fuzz properties: the MCP and A2A adapters, SSE framing and Agent Cards.

Each input is a whole request in the small message format of
``tests/fuzz/targets.py`` (method, path, headers, body), so the headers the
adapters read (``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name`` with its
``=?base64?`` form, ``Mcp-Session-Id``, ``A2A-Version``) are fuzzed with the
body. Property: the adapter returns a ``Call`` or raises ``BatonError``;
``replace_push_urls`` keeps the body JSON; SSE framing loses no byte.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import FUZZ, json_mutated, mutated
from tests.fuzz.targets import TARGETS, samples


def _inputs(name: str) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=512) | mutated(samples(name)) | json_mutated(samples(name))


@pytest.mark.threat("X02", "X03", "I03")
@FUZZ
@given(data=_inputs("mcp"))
def test_mcp_request_parses_or_refuses(data: bytes) -> None:
    TARGETS["mcp"](data)


@pytest.mark.threat("X02", "X03", "P09")
@FUZZ
@given(data=_inputs("a2a"))
def test_a2a_request_parses_or_refuses(data: bytes) -> None:
    TARGETS["a2a"](data)


@pytest.mark.threat("X01")
@FUZZ
@given(data=st.binary(max_size=8192) | mutated(samples("sse")))
def test_sse_framing_loses_nothing(data: bytes) -> None:
    TARGETS["sse"](data)


@pytest.mark.threat("P07")
@FUZZ
@given(data=_inputs("agent_card"))
def test_agent_card_parses_or_refuses(data: bytes) -> None:
    TARGETS["agent_card"](data)
