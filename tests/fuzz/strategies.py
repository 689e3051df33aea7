"""Hypothesis strategies and the example budget for ``tests/fuzz``.

Budget: ``BATON_FUZZ_EXAMPLES`` examples per property (default 100, so that the
whole folder runs in well under a minute); raise it for a deeper local run,
e.g. ``BATON_FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/fuzz``. The rest of
the settings come from the profile ``tests/conftest.py`` loaded (``ci``:
derandomized; ``dev``: random, with the example database).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from keys import strictjson
from tests.fuzz.targets import MAX_INPUT

EXAMPLES = int(os.environ.get("BATON_FUZZ_EXAMPLES", "100"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Bytes that matter to some grammar here: JSON, RFC 8941, base64url, JOSE, TOML, HTTP.
TOKENS: tuple[bytes, ...] = (
    b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b";", b"=", b"(", b")", b".", b"?",
    b"*", b"%", b"%2F", b"%00", b"\n", b"\r\n", b"\r", b"\t", b" ", b"\x00", b"\x7f",
    b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\\u", b"\\ud800", b"\\u0000",
    b"-", b"_", b"+", b"/", b"==", b"1e999", b"-0", b"1.0e-400", b"9" * 40, b"null",
    b"true", b"false", b"NaN", b"[" * 70, b"{\"a\":" * 40, b"\"alg\":\"none\"",
    b"\"crit\":[\"x\"]", b"\"zip\":\"DEF\"", b"@method", b";req", b";sf", b";bs", b";key=",
    b"=?base64?", b"?=", b"[[x]]", b"\"\"\"", b"'''", b"0x", b"inf", b"..",
)  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, samples: Sequence[bytes], max_size: int = MAX_INPUT) -> bytes:
    """A sample with 1-6 byte-level mutations (flip, insert, delete, replace, copy, cut)."""
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.integers(0, 6))
        pos = draw(st.integers(0, len(data)))
        if kind == 0 and data:
            data[pos % len(data)] ^= 1 << draw(st.integers(0, 7))
        elif kind == 1:
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif kind == 2:
            del data[pos : pos + draw(st.integers(1, 16))]
        elif kind == 3 and data:
            data[pos % len(data)] = draw(st.integers(0, 255))
        elif kind == 4:
            start = draw(st.integers(0, len(data)))
            data[pos:pos] = data[start : start + draw(st.integers(1, 64))]
        elif kind == 5:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            data = data[:pos]
    return bytes(data[:max_size])


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(_paths(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.extend(_paths(item, (*path, index)))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


@st.composite
def json_mutated(draw: st.DrawFn, samples: Sequence[bytes]) -> bytes:
    """A JSON sample with one member or element replaced, added or removed.

    Structure-aware: the result is still JSON, so it gets past the parser and
    exercises the checks behind it. Samples that are not a JSON value (a
    compact JWS, TOML...) fall back to :func:`mutated`.
    """
    raw = draw(st.sampled_from(samples))
    head, sep, body = raw.partition(b"\n\n")  # the targets' message format
    prefix, text = (head + sep, body) if sep else (b"", raw)
    try:
        value = strictjson.loads(text, max_bytes=MAX_INPUT)
    except Exception:
        return draw(mutated(samples))
    path = draw(st.sampled_from(_paths(value)))
    action = draw(st.integers(0, 2))
    new: Any = draw(json_values)
    if action == 1 and path:  # remove the member or element
        parent_path, last = path[:-1], path[-1]
        parent: Any = value
        for step in parent_path:
            parent = parent[step]
        if isinstance(parent, dict):
            new = {k: v for k, v in parent.items() if k != last}
        else:
            new = [v for i, v in enumerate(parent) if i != last]
        path = parent_path
    elif action == 2:  # add a member
        target: Any = value
        for step in path:
            target = target[step]
        if isinstance(target, dict):
            new = {**target, draw(st.sampled_from(_KEYS)): new}
    import json

    return (
        prefix + json.dumps(_replace(value, path, new), ensure_ascii=draw(st.booleans())).encode()
    )


#: Member names worth adding: JOSE, JSON-RPC, MCP, A2A, bundle fields.
_KEYS: tuple[str, ...] = (
    "alg", "kid", "typ", "cty", "crit", "b64", "zip", "jku", "jwk", "x5c", "x5u", "enc", "epk",
    "header", "unprotected", "aad", "recipients", "jsonrpc", "id", "method", "params", "result",
    "error", "_meta", "requestState", "url", "message", "task", "kind", "signatures", "type",
    "bundle", "events", "decision", "queue", "conversation", "",
)  # fmt: skip
