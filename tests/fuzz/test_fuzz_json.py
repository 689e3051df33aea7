"""Fuzz properties: the strict JSON parser and the JSON-RPC envelope parser.

Arbitrary bytes, byte-mutated samples and structure-mutated samples either
parse or raise the package's documented error (``KeysError`` in ``keys/``,
``BatonError`` in ``adapters/``); what ``keys.strictjson`` accepts the
standard library reads the same way. Entry points: ``tests/fuzz/targets.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import strictjson
from keys.errors import KeysError, TooDeep
from tests.fuzz.strategies import FUZZ, TOKENS, json_mutated, mutated
from tests.fuzz.targets import TARGETS, samples


def _inputs(name: str) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=512) | mutated(samples(name)) | json_mutated(samples(name))


@pytest.mark.threat("X02", "X03", "J15")
@FUZZ
@given(data=_inputs("strictjson"))
def test_strictjson_parses_or_refuses(data: bytes) -> None:
    TARGETS["strictjson"](data)


@pytest.mark.threat("X02", "X03")
@FUZZ
@given(data=st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join))
def test_strictjson_on_token_soup(data: bytes) -> None:
    TARGETS["strictjson"](data)


@pytest.mark.threat("X02")
@FUZZ
@given(depth=st.integers(1, 5000), opener=st.sampled_from([b"[", b'{"a":', b'[{"a":']))
def test_deep_nesting_is_too_deep_never_recursion(depth: int, opener: bytes) -> None:
    closer = {b"[": b"]", b'{"a":': b"}", b'[{"a":': b"}]"}[opener]
    data = opener * depth + b"1" + closer * depth
    try:
        strictjson.loads(data, max_bytes=len(data), max_depth=64)
    except TooDeep:
        assert depth * opener.count(b"[") + depth * opener.count(b"{") > 64
    except KeysError as exc:  # pragma: no cover - the property fails with the reason
        pytest.fail(f"{type(exc).__name__}: {exc}")


@pytest.mark.threat("X02", "X03")
@FUZZ
@given(data=_inputs("jsonrpc"))
def test_jsonrpc_envelope_parses_or_refuses(data: bytes) -> None:
    TARGETS["jsonrpc"](data)
