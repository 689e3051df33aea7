"""adapters/agent/verifier.py: the gateway's signature checked in front of a Starlette app.

The app is a real Starlette application behind :class:`GatewayVerifier`,
driven through ``httpx.ASGITransport`` (the app's own stack). Requests are
signed the way gateway/proxy.py ``_forward`` signs them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from adapters.agent import GatewayVerifier, NonceCache, VerifiedCall
from keys.b64 import b64encode_std
from keys.keyset import KeySet
from keys.material import PrivateKey
from protocol.errors import StoreUnavailable
from tests.adapters.agent._support import gateway_signed

NOW = 1_750_000_000
AGENT = "agent-b:9001"
ORIGIN = f"http://{AGENT}"
CALLER = "spiffe://baton.local/agent/alpha"
BODY = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo"}}'


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Nonces:
    def __init__(self) -> None:
        self._n = 0

    def __call__(self) -> str:
        self._n += 1
        return f"gw-nonce-{self._n:012d}"


@pytest.fixture(scope="module")
def gateway_key() -> PrivateKey:
    return PrivateKey.generate("Ed25519")


@pytest.fixture(scope="module")
def gateway_keys(gateway_key: PrivateKey) -> KeySet:
    return KeySet([gateway_key.public])


class Seen:
    """What the app saw, per request."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []


def starlette_app(seen: Seen) -> Starlette:
    async def echo(request: Request) -> Response:
        body = await request.body()
        seen.calls.append(
            {
                "body": body,
                "caller": request.state.baton_caller,
                "baton": request.scope["baton"],
                "query": request.url.query,
            }
        )
        return JSONResponse({"caller": request.state.baton_caller, "size": len(body)})

    async def stream(request: Request) -> Response:
        seen.calls.append({"caller": request.state.baton_caller})

        async def events() -> AsyncIterator[bytes]:
            for n in range(3):
                yield f"data: {n}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def card(request: Request) -> Response:
        seen.calls.append({"card": True})
        return JSONResponse({"name": "agent-b"})

    return Starlette(
        routes=[
            Route("/mcp", echo, methods=["GET", "POST"]),
            Route("/a2a/{rest:path}", echo, methods=["GET", "POST"]),
            Route("/stream", stream, methods=["POST"]),
            Route("/.well-known/agent-card.json", card),
        ]
    )


class Harness:
    def __init__(self, key: PrivateKey, keys: KeySet, **options: Any) -> None:
        self.key = key
        self.clock = Clock()
        self.nonces = Nonces()
        self.seen = Seen()
        cache = options.pop("nonce_cache", None)
        self.cache = NonceCache() if cache is None else cache
        self.app = GatewayVerifier(
            starlette_app(self.seen),
            gateway_keys=keys,
            authority=options.pop("authority", AGENT),
            clock=self.clock,
            nonce_cache=self.cache,
            exempt_paths=["/.well-known/agent-card.json"],
            **options,
        )

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app))

    def sign(
        self, method: str, url: str, body: bytes = b"", *, key: PrivateKey | None = None, **kw: Any
    ) -> list[tuple[str, str]]:
        kw.setdefault("created", NOW)
        kw.setdefault("nonce", self.nonces())
        kw.setdefault("caller", CALLER)
        return gateway_signed(key or self.key, method, url, body, **kw)

    async def send(
        self,
        method: str,
        url: str,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        signed = self.sign(method, url, body) if headers is None else headers
        async with self.client() as client:
            return await client.request(
                method, url, headers=signed, content=body if content is None else content
            )


@pytest.fixture
def harness(gateway_key: PrivateKey, gateway_keys: KeySet) -> Harness:
    return Harness(gateway_key, gateway_keys)


def error_code(response: httpx.Response) -> str:
    payload = json.loads(response.content)
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"code", "message"}  # no internal detail
    assert response.headers["content-type"] == "application/json"
    code = payload["error"]["code"]
    assert isinstance(code, str)
    return code


# ----------------------------------------------------------------- acceptance


async def test_signed_request_reaches_the_app_with_the_caller(harness: Harness) -> None:
    response = await harness.send("POST", f"{ORIGIN}/mcp", BODY)
    assert response.status_code == 200
    assert response.json() == {"caller": CALLER, "size": len(BODY)}
    (seen,) = harness.seen.calls
    assert seen["body"] == BODY  # replayed intact
    assert seen["caller"] == CALLER
    call = seen["baton"]
    assert isinstance(call, VerifiedCall)
    assert call == VerifiedCall(
        caller=CALLER, keyid=harness.key.kid, nonce="gw-nonce-000000000001", created=NOW
    )


async def test_get_without_body_is_accepted(harness: Harness) -> None:
    response = await harness.send("GET", f"{ORIGIN}/mcp")
    assert response.status_code == 200
    assert harness.seen.calls[0]["body"] == b""


async def test_percent_encoded_target_is_verified_as_received(harness: Harness) -> None:
    url = f"{ORIGIN}/a2a/caf%C3%A9/x%2Fy?q=a+b%26c&t=%7E"
    response = await harness.send("POST", url, BODY)
    assert response.status_code == 200
    assert harness.seen.calls[0]["query"] == "q=a+b%26c&t=%7E"


async def test_several_authorities_and_case(gateway_key: PrivateKey, gateway_keys: KeySet) -> None:
    harness = Harness(gateway_key, gateway_keys, authority=["AGENT-B:9001", "10.0.0.7:9001"])
    for origin in (ORIGIN, "http://10.0.0.7:9001"):
        assert (await harness.send("POST", f"{origin}/mcp", BODY)).status_code == 200


async def test_scheme_override_for_tls_terminated_in_front(
    gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    """The gateway signed https://...; the app sees http behind a TLS proxy."""
    harness = Harness(gateway_key, gateway_keys, scheme="https")
    signed = harness.sign("POST", f"https://{AGENT}/mcp", BODY)
    assert (await harness.send("POST", f"{ORIGIN}/mcp", BODY, signed)).status_code == 200
    unsigned_scheme = harness.sign("POST", f"{ORIGIN}/mcp", BODY)
    response = await harness.send("POST", f"{ORIGIN}/mcp", BODY, unsigned_scheme)
    assert (response.status_code, error_code(response)) == (401, "bad_signature")


async def test_streaming_response_passes_through(harness: Harness) -> None:
    async with harness.client() as client:
        signed = harness.sign("POST", f"{ORIGIN}/stream", BODY)
        async with client.stream("POST", f"{ORIGIN}/stream", headers=signed, content=BODY) as r:
            chunks = [chunk async for chunk in r.aiter_bytes()]
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
    assert b"".join(chunks) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert harness.seen.calls == [{"caller": CALLER}]


async def test_exempt_path_needs_no_signature(harness: Harness) -> None:
    async with harness.client() as client:
        response = await client.get(f"{ORIGIN}/.well-known/agent-card.json")
    assert response.status_code == 200
    assert harness.seen.calls == [{"card": True}]


# ----------------------------------------------------------------- rejection


async def _rejected(harness: Harness, response: httpx.Response, status: int, code: str) -> None:
    assert (response.status_code, error_code(response)) == (status, code)
    assert harness.seen.calls == []  # the app never ran


async def test_unsigned_request_is_refused(harness: Harness) -> None:
    response = await harness.send("POST", f"{ORIGIN}/mcp", BODY, headers=[])
    await _rejected(harness, response, 401, "signature_missing")


async def test_signature_by_another_key_is_refused(harness: Harness) -> None:
    rogue = PrivateKey.generate("Ed25519")
    signed = harness.sign("POST", f"{ORIGIN}/mcp", BODY, key=rogue)
    response = await harness.send("POST", f"{ORIGIN}/mcp", BODY, signed)
    await _rejected(harness, response, 401, "unknown_kid")


async def test_corrupted_signature_is_refused(harness: Harness) -> None:
    signed = harness.sign("POST", f"{ORIGIN}/mcp", BODY)
    forged = [
        (name, f"baton=:{b64encode_std(bytes(64))}:") if name == "signature" else (name, value)
        for name, value in signed
    ]
    response = await harness.send("POST", f"{ORIGIN}/mcp", BODY, forged)
    await _rejected(harness, response, 401, "bad_signature")


async def test_signature_not_covering_baton_caller_is_refused(harness: Harness) -> None:
    signed = harness.sign(
        "POST",
        f"{ORIGIN}/mcp",
        BODY,
        components=("@method", "@target-uri", "@authority", "content-digest"),
    )
    response = await harness.send("POST", f"{ORIGIN}/mcp", BODY, signed)
    await _rejected(harness, response, 401, "insufficient_coverage")


async def test_body_without_covered_digest_is_refused(harness: Harness) -> None:
    signed = harness.sign(
        "POST",
        f"{ORIGIN}/mcp",
        BODY,
        components=("@method", "@target-uri", "@authority", "baton-caller"),
    )
    response = await harness.send("POST", f"{ORIGIN}/mcp", BODY, signed)
    await _rejected(harness, response, 401, "insufficient_coverage")


@pytest.mark.parametrize(("offset", "fresh"), [(-60, True), (-61, False), (5, True), (6, False)])
async def test_freshness_window_and_skew(harness: Harness, offset: int, fresh: bool) -> None:
    signed = harness.sign("POST", f"{ORIGIN}/mcp", BODY, created=NOW + offset)
    response = await harness.send("POST", f"{ORIGIN}/mcp", BODY, signed)
    if fresh:
        assert response.status_code == 200
    else:
        await _rejected(harness, response, 401, "stale")


async def test_replayed_nonce_is_refused(harness: Harness) -> None:
    signed = harness.sign("POST", f"{ORIGIN}/mcp", BODY)
    first = await harness.send("POST", f"{ORIGIN}/mcp", BODY, signed)
    second = await harness.send("POST", f"{ORIGIN}/mcp", BODY, signed)
    assert first.status_code == 200
    assert (second.status_code, error_code(second)) == (401, "replay_detected")
    assert len(harness.seen.calls) == 1


async def test_forged_request_does_not_burn_the_nonce(harness: Harness) -> None:
    """R09: the nonce is claimed only after the signature verified."""
    genuine = harness.sign("POST", f"{ORIGIN}/mcp", BODY, nonce="shared-nonce-0000001")
    rogue = PrivateKey.generate("Ed25519")
    forged = harness.sign("POST", f"{ORIGIN}/mcp", BODY, key=rogue, nonce="shared-nonce-0000001")
    assert (await harness.send("POST", f"{ORIGIN}/mcp", BODY, forged)).status_code == 401
    assert (await harness.send("POST", f"{ORIGIN}/mcp", BODY, genuine)).status_code == 200


async def test_request_for_another_agent_is_refused(harness: Harness) -> None:
    other = "http://agent-c:9001/mcp"
    response = await harness.send("POST", other, BODY, harness.sign("POST", other, BODY))
    await _rejected(harness, response, 401, "bad_audience")


async def test_request_signed_for_another_agent_but_sent_here_is_refused(harness: Harness) -> None:
    signed = harness.sign("POST", "http://agent-c:9001/mcp", BODY)
    response = await harness.send("POST", f"{ORIGIN}/mcp", BODY, signed)
    await _rejected(harness, response, 401, "bad_signature")


async def test_tampered_body_is_refused(harness: Harness) -> None:
    signed = harness.sign("POST", f"{ORIGIN}/mcp", BODY)
    tampered = BODY.replace(b"echo", b"wipe")
    response = await harness.send("POST", f"{ORIGIN}/mcp", BODY, signed, content=tampered)
    await _rejected(harness, response, 401, "digest_mismatch")


async def test_tampered_path_or_query_is_refused(harness: Harness) -> None:
    signed = harness.sign("POST", f"{ORIGIN}/mcp?x=1", BODY)
    response = await harness.send("POST", f"{ORIGIN}/mcp?x=2", BODY, signed)
    await _rejected(harness, response, 401, "bad_signature")


async def test_two_caller_fields_are_refused(harness: Harness) -> None:
    signed = harness.sign("POST", f"{ORIGIN}/mcp", BODY, extra=(("baton-caller", "spiffe://x/y"),))
    response = await harness.send("POST", f"{ORIGIN}/mcp", BODY, signed)
    await _rejected(harness, response, 401, "malformed_signature")


async def test_body_over_the_cap_is_413(gateway_key: PrivateKey, gateway_keys: KeySet) -> None:
    harness = Harness(gateway_key, gateway_keys, max_body_bytes=len(BODY) - 1)
    response = await harness.send("POST", f"{ORIGIN}/mcp", BODY)
    await _rejected(harness, response, 413, "payload_too_large")


async def test_full_nonce_cache_fails_closed(gateway_key: PrivateKey, gateway_keys: KeySet) -> None:
    harness = Harness(gateway_key, gateway_keys, nonce_cache=NonceCache(max_entries=1))
    assert (await harness.send("POST", f"{ORIGIN}/mcp", BODY)).status_code == 200
    response = await harness.send("POST", f"{ORIGIN}/mcp", BODY)
    assert (response.status_code, error_code(response)) == (503, "store_unavailable")
    harness.clock.now += 67  # W + S + 1: the first nonce has expired
    later = harness.sign("POST", f"{ORIGIN}/mcp", BODY, created=NOW + 67)
    assert (await harness.send("POST", f"{ORIGIN}/mcp", BODY, later)).status_code == 200


# ----------------------------------------------------------------- raw ASGI


class Recorder:
    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})


def _verifier(app: Any, gateway_keys: KeySet, clock: Clock | None = None) -> GatewayVerifier:
    return GatewayVerifier(app, gateway_keys=gateway_keys, authority=AGENT, clock=clock or Clock())


def _http_scope(headers: list[tuple[str, str]], **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/mcp",
        "raw_path": b"/mcp",
        "query_string": b"",
        "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers],
        **extra,
    }


def _receiver(chunks: list[bytes]) -> Any:
    messages: Iterator[dict[str, Any]] = iter(
        [
            *(
                {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
                for n, chunk in enumerate(chunks)
            ),
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    return receive


async def test_lifespan_and_websocket_scopes_pass_through(gateway_keys: KeySet) -> None:
    app = Recorder()
    verifier = _verifier(app, gateway_keys)
    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    websocket = {"type": "websocket", "path": "/ws", "headers": []}
    for scope in (lifespan, websocket):
        await verifier(scope, _receiver([]), _unused_send)
    assert app.scopes[0] is lifespan
    assert app.scopes[1] is websocket


async def _unused_send(message: Any) -> None:
    raise AssertionError(f"nothing should be sent: {message}")


async def test_chunked_body_is_joined_and_replayed_once_then_disconnect(
    gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        seen.append(await receive())
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    signed = gateway_signed(
        gateway_key, "POST", f"{ORIGIN}/mcp", BODY, caller=CALLER, created=NOW, nonce="n" * 16
    )
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    server_state = {"from_lifespan": 1}
    scope = _http_scope([("host", AGENT), *signed], state=server_state)
    await _verifier(app, gateway_keys)(scope, _receiver([BODY[:10], BODY[10:30], BODY[30:]]), send)
    assert seen[0] == {"type": "http.request", "body": BODY, "more_body": False}
    assert seen[1] == {"type": "http.disconnect"}
    assert seen[2]["state"] == {"from_lifespan": 1, "baton_caller": CALLER}
    assert server_state == {"from_lifespan": 1}  # the server's dict is not mutated
    assert sent[0]["status"] == 204


async def test_client_gone_mid_body_calls_nothing(gateway_keys: KeySet) -> None:
    app = Recorder()

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    await _verifier(app, gateway_keys)(_http_scope([("host", AGENT)]), receive, _unused_send)
    assert app.scopes == []


# ----------------------------------------------------------------- NonceCache


async def test_nonce_cache_claims_once_until_expiry() -> None:
    cache = NonceCache()
    assert await cache.claim("kid-a", "n1", ttl_s=66, now=NOW)
    assert not await cache.claim("kid-a", "n1", ttl_s=66, now=NOW + 65.9)
    assert await cache.claim("kid-b", "n1", ttl_s=66, now=NOW + 1)  # scoped by keyid
    assert await cache.claim("kid-a", "n1", ttl_s=66, now=NOW + 66)
    assert len(cache) == 2


async def test_nonce_cache_is_bounded_and_evicts_only_expired() -> None:
    cache = NonceCache(max_entries=2)
    assert await cache.claim("k", "n1", ttl_s=10, now=NOW)
    assert await cache.claim("k", "n2", ttl_s=10, now=NOW + 5)
    with pytest.raises(StoreUnavailable):
        await cache.claim("k", "n3", ttl_s=10, now=NOW + 9)
    assert await cache.claim("k", "n3", ttl_s=10, now=NOW + 10)  # n1 expired, evicted
    assert not await cache.claim("k", "n2", ttl_s=10, now=NOW + 10)
    assert len(cache) == 2
    with pytest.raises(ValueError, match="positive"):
        NonceCache(max_entries=0)


def test_constructor_refuses_nonsense(gateway_keys: KeySet) -> None:
    app = Recorder()
    with pytest.raises(ValueError, match="authority"):
        GatewayVerifier(app, gateway_keys=gateway_keys, authority=[])
    with pytest.raises(ValueError, match="host"):
        GatewayVerifier(app, gateway_keys=gateway_keys, authority="https://agent-b")
    with pytest.raises(ValueError, match="scheme"):
        GatewayVerifier(app, gateway_keys=gateway_keys, authority=AGENT, scheme="ftp")
    with pytest.raises(ValueError, match="empty"):
        GatewayVerifier(app, gateway_keys=KeySet([]), authority=AGENT)


# ----------------------------------------------------------------- property


_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200)
_SIG_FIELDS = st.sampled_from(["signature", "signature-input", "content-digest", "baton-caller"])


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    fields=st.lists(st.tuples(_SIG_FIELDS, _header_text), max_size=6),
    body=st.binary(max_size=64),
    keep_signature=st.booleans(),
)
async def test_arbitrary_signature_fields_never_reach_the_app(
    gateway_key: PrivateKey,
    gateway_keys: KeySet,
    fields: list[tuple[str, str]],
    body: bytes,
    keep_signature: bool,
) -> None:
    """Whatever the attacker writes into the signature fields, the answer is a
    structured 4xx and the app never runs (the genuine signature covers a
    different body, so mixing it in never helps)."""
    app = Recorder()
    headers: list[tuple[str, str]] = [("host", AGENT), *fields]
    if keep_signature:
        genuine = gateway_signed(
            gateway_key,
            "POST",
            f"{ORIGIN}/mcp",
            b"other",
            caller=CALLER,
            created=NOW,
            nonce="g" * 16,
        )
        headers += [(n, v) for n, v in genuine if n in ("signature", "signature-input")]
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await _verifier(app, gateway_keys)(_http_scope(headers), _receiver([body]), send)
    assert app.scopes == []
    assert sent[0]["status"] in (400, 401, 413)
    payload = json.loads(sent[1]["body"])
    assert set(payload["error"]) == {"code", "message"}
