"""The rules every reject case checks (research/security.md section 1).

1. the upstream received nothing;
2. nothing durable was written but exactly one audit event: the store's whole
   content is compared before and after (SQLite: every row of every table;
   Redis: every key under the gateway's prefix, by ``DUMP``). A nonce may be
   consumed only when the caller says the request authenticated first
   (``nonce_consumed=True``); a rate-limit hit only after policy
   (``rate_counted=True``);
3. the one audit event is ``request.rejected`` with the stable code as its
   reason, names the request, and carries none of the ``secrets`` (raw tokens);
4. the body is the protocol's generic error: a JSON-RPC error object whose
   ``message`` is the code's public message and whose ``data`` holds only
   ``code``, ``trace_id``, ``retryable`` and ``retry_after``; no stack trace or
   internal reason; a 401 says ``WWW-Authenticate: Bearer error="invalid_token"``;
5. the status is the expected one.

:func:`assert_rejected` runs the request itself between the two snapshots:

    await assert_rejected(gw, gw.send("support", path, body), status=401, code="stale")

:func:`assert_refused_at_tls` is the TLS-level counterpart: the handshake
fails, HTTP is never reached, and the store does not change at all.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from protocol.errors import ERRORS_BY_CODE
from tests.gateway._harness import tls_outcome as _tls_outcome
from tests.security.conftest import REDIS_URL, SecGateway

Result = tuple[int, dict[str, str], bytes]

#: Store parts a reject may change: the audit chain (always exactly one event).
_AUDIT_TABLES = frozenset({"audit_events"})
_NONCE_TABLES = frozenset({"nonces"})
_RATE_TABLES = frozenset({"rate_windows"})
_LEAKS = ("Traceback", 'File "', ".py", "KeysError", "joserfc", "jwt.", "detail")


@dataclass(frozen=True)
class Snapshot:
    """Everything durable: part name (table or Redis key) -> its content."""

    parts: dict[str, Any]
    received: int

    def changed(self, after: Snapshot) -> set[str]:
        names = set(self.parts) | set(after.parts)
        return {n for n in names if self.parts.get(n) != after.parts.get(n)}


def _sqlite_parts(gw: SecGateway) -> dict[str, Any]:
    uri = f"file:{gw.sqlite_path}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        tables = [
            row[0]
            for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not row[0].startswith("sqlite_")
        ]
        parts = {}
        for table in tables:
            rows = db.execute(f'SELECT * FROM "{table}"').fetchall()  # noqa: S608 - names from sqlite_master
            parts[table] = sorted(repr(row) for row in rows)
    return parts


async def _redis_parts(prefix: str) -> dict[str, Any]:
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = sorted([key async for key in client.scan_iter(match=prefix + "*", count=1000)])
        parts = {}
        for key in keys:
            parts[key.decode()] = await client.dump(key)
        return parts
    finally:
        await client.aclose()


async def snapshot(gw: SecGateway) -> Snapshot:
    if gw.redis_prefix is None:
        parts = await asyncio.to_thread(_sqlite_parts, gw)
    else:
        parts = await _redis_parts(gw.redis_prefix)
    return Snapshot(parts, len(gw.upstream.received))


def _kind(gw: SecGateway, part: str) -> str:
    """Which store a changed part belongs to: audit, nonce, rate or other."""
    if gw.redis_prefix is None:
        if part in _AUDIT_TABLES:
            return "audit"
        if part in _NONCE_TABLES:
            return "nonce"
        return "rate" if part in _RATE_TABLES else "other"
    rest = part.removeprefix(gw.redis_prefix)
    for head, kind in (("audit:", "audit"), ("nonce:", "nonce"), ("rate:", "rate")):
        if rest.startswith(head):
            return kind
    return "other"


def assert_generic_error(status: int, headers: dict[str, str], body: bytes, code: str) -> None:
    """Rule 4: the error body says the code and its public message, nothing else."""
    document = json.loads(body)
    error = document["error"]
    assert set(error) == {"code", "message", "data"}, body
    assert isinstance(error["code"], int), body
    assert error["data"]["code"] == code, body
    assert set(error["data"]) <= {"code", "trace_id", "retryable", "retry_after"}, body
    expected = ERRORS_BY_CODE[code].public_message
    assert error["message"] == expected, body
    text = body.decode("utf-8")
    for leak in _LEAKS:
        assert leak not in text, f"the error body leaks {leak!r}: {text}"
    assert len(body) < 512, "an error body carries no internals"
    if status == 401:
        assert headers.get("WWW-Authenticate") == 'Bearer error="invalid_token"', headers


async def assert_rejected(
    gw: SecGateway,
    send: Awaitable[Result] | Callable[[], Awaitable[Result]],
    *,
    status: int,
    code: str,
    secrets: Iterable[str] = (),
    nonce_consumed: bool = False,
    rate_counted: bool = False,
) -> Result:
    """Send (the awaitable is run here, between two snapshots) and check rules 1-5."""
    before = await snapshot(gw)
    audit_before = len(await gw.audit_events())
    result = await (send() if callable(send) else send)
    got_status, headers, body = result
    assert (got_status, _code_of(body)) == (status, code), body
    assert_generic_error(got_status, headers, body, code)

    after = await snapshot(gw)
    assert after.received == before.received, "a rejected request reached the upstream"
    allowed = {"audit"} | ({"nonce"} if nonce_consumed else set())
    allowed |= {"rate"} if rate_counted else set()
    changed = {part: _kind(gw, part) for part in before.changed(after)}
    unexpected = {part for part, kind in changed.items() if kind not in allowed}
    assert not unexpected, f"a rejected request wrote {sorted(unexpected)}"
    if not nonce_consumed:
        assert "nonce" not in changed.values()

    events = list(await gw.audit_events())[audit_before:]
    assert [(e.event, e.outcome, e.reason) for e in events] == [
        ("request.rejected", "rejected", code)
    ], events
    [event] = events
    assert event.request_id
    recorded = json.dumps(event.model_dump(mode="json"))
    for secret in secrets:
        assert secret not in recorded, "the audit event holds a raw credential"
    return result


def _code_of(body: bytes) -> str | None:
    try:
        return str(json.loads(body)["error"]["data"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


async def tls_outcome(gw: SecGateway, context: ssl.SSLContext) -> bytes | str:
    return await asyncio.to_thread(_tls_outcome, gw.port, context)


async def assert_refused_at_tls(gw: SecGateway, context: ssl.SSLContext) -> None:
    """The handshake fails (asyncio drops OpenSSL's alert, ADR 0011: the client
    sees an SSL error or a closed connection), HTTP is never reached, nothing
    is written: not even an audit event."""
    before = await snapshot(gw)
    outcome = await tls_outcome(gw, context)
    assert outcome in (b"", "SSLError", "ConnectionResetError", "SSLEOFError"), outcome
    try:
        await gw.send("support", "/u/billing/x", b"{}", context=context)
    except aiohttp.ClientError:
        pass
    else:  # pragma: no cover - the assertion message is the point
        raise AssertionError("an HTTP client got an answer over a refused handshake")
    after = await snapshot(gw)
    assert after.received == before.received == 0
    assert before.changed(after) == set(), "a refused handshake wrote to the store"
    assert await gw.audit_events() == [], "HTTP was never reached"
