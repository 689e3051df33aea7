"""End to end through real TLS: the data-plane pipeline, accept and reject paths.

Every reject test asserts the four rules of security.md §1: the upstream got
nothing, nothing durable was written (no transcript entry; the nonce of a
request refused before authentication completed is still unclaimed), exactly
one audit event with the stable code, and a generic JSON-RPC error body.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.inspect import verify_conversation
from keys.httpsig import HttpRequest, HttpResponse, SignaturePolicy, content_digest, verify
from keys.jose import sign_compact
from keys.keyset import KeySet
from keys.material import PrivateKey
from keys.x509 import DevCertificateAuthority, pem_chain_to_der, x5t_s256
from protocol.canonical import digest
from protocol.chain import EMPTY
from protocol.identity import agent_id, gateway_id
from tests.gateway._harness import (
    TRUST_DOMAIN,
    client_context,
    rpc,
    signed_headers,
    tls_outcome,
)
from tests.gateway.conftest import Running, start_gateway

CONV = "conv-test-1"
SUPPORT = str(agent_id(TRUST_DOMAIN, "support"))
BILLING = str(agent_id(TRUST_DOMAIN, "billing"))


def _conv(extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    return [("baton-conversation", CONV), *(extra or [])]


async def assert_rejected(
    gw: Running,
    result: tuple[int, dict[str, str], bytes],
    status: int,
    code: str,
    *,
    audit_before: int = 0,
) -> None:
    got_status, headers, body = result
    assert (got_status, json.loads(body)["error"]["data"]["code"]) == (status, code), body
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message", "data"}
    assert set(error["data"]) <= {"code", "trace_id", "retryable", "retry_after"}
    assert isinstance(error["code"], int)
    if status == 401:
        assert headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert gw.upstream.received == [], "a rejected request reached the upstream"
    assert await gw.stores.transcripts.head(CONV) == EMPTY, "a rejected request was recorded"
    events = (await gw.audit_events())[audit_before:]
    assert [(e.event, e.outcome, e.reason) for e in events] == [
        ("request.rejected", "rejected", code)
    ]


async def admin_get(gw: Running, path: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{gw.admin_port}{path}") as response,
    ):
        return await response.text()


# ----------------------------------------------------------------- accept path
async def test_allowed_call_is_forwarded_signed_and_recorded(gw: Running) -> None:
    body = rpc("tools/call", 7, name="refund", arguments={"amount": 5})
    url = gw.base + "/u/billing/mcp?x=1"
    headers = signed_headers(
        gw.agent("support"),
        "POST",
        url,
        body,
        extra=_conv(
            [
                ("authorization", "Bearer not-for-upstream"),
                ("baton-caller", "spoof"),
                ("x-forwarded-for", "10.0.0.1"),
                ("x-custom", "kept"),
            ]
        ),
    )
    # support has bearer = "none": an Authorization header is refused, not forwarded
    status, _, _ = await gw.send("support", "/u/billing/mcp?x=1", body, headers=headers)
    assert status == 401 and gw.upstream.received == []

    headers = [h for h in headers if h[0] != "authorization"]
    nonce_ok = signed_headers(
        gw.agent("support"),
        "POST",
        url,
        body,
        extra=_conv(
            [
                ("baton-caller", "spoof"),
                ("x-forwarded-for", "10.0.0.1"),
                ("x-custom", "kept"),
                ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ]
        ),
    )
    status, response_headers, response_body = await gw.send(
        "support", "/u/billing/mcp?x=1", body, headers=nonce_ok
    )
    assert status == 200, response_body
    assert json.loads(response_body) == {"jsonrpc": "2.0", "id": 7, "result": {"ok": True}}

    # The upstream saw one request: the caller's bytes, the gateway's credentials.
    [received] = gw.upstream.received
    assert (received.method, received.path, received.body) == ("POST", "/mcp?x=1", body)
    upstream_headers = {k.lower(): v for k, v in received.headers.items()}
    assert upstream_headers["baton-caller"] == SUPPORT
    assert upstream_headers["x-custom"] == "kept"
    assert "authorization" not in upstream_headers and "x-forwarded-for" not in upstream_headers
    assert upstream_headers["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    gateway_keys = KeySet.from_jwks(json.loads((gw.folder.gateway / "jwks.json").read_bytes()))
    upstream_url = f"https://127.0.0.1:{gw.upstream.port}/mcp?x=1"
    verified = verify(
        HttpRequest("POST", upstream_url, list(received.headers.items())),
        gateway_keys,
        SignaturePolicy(
            required_components=frozenset(
                {"@method", "@target-uri", "@authority", "baton-caller", "content-digest"}
            )
        ),
        body=body,
    )
    assert verified.nonce and verified.nonce not in str(nonce_ok), "a fresh nonce upstream"

    # The caller can verify the gateway's response signature, bound to its request.
    verify(
        HttpResponse(200, list(response_headers.items()), HttpRequest("POST", url, ())),
        gateway_keys,
        SignaturePolicy(
            required_components=frozenset(
                {"@status", "content-digest", "@method;req", "@target-uri;req"}
            )
        ),
        body=response_body,
    )

    # Transcript: request and response, chained, bodies retrievable and matching.
    entries = await gw.stores.transcripts.read(CONV)
    assert [(e.kind, e.sender, e.to, e.method, e.rpc_id, e.verified) for e in entries] == [
        ("request", SUPPORT, BILLING, "tools/call", 7, True),
        ("response", BILLING, SUPPORT, "tools/call", 7, False),
    ]
    assert entries[0].body_digest == digest(body)
    assert await gw.stores.transcripts.read_body(CONV, 0) == body
    assert (await verify_conversation(gw.stores.transcripts, CONV)).records == 2
    events = await gw.audit_events()
    assert [(e.event, e.reason) for e in events] == [
        ("request.rejected", "unauthenticated"),
        ("request.accepted", None),
    ]


async def test_unsigned_legacy_agent_is_attested_not_verified(gw: Running) -> None:
    status, _, _ = await gw.send(
        "legacy",
        "/u/billing/rpc",
        rpc("tools/list"),
        headers=[("content-type", "application/json"), *_conv()],
    )
    assert status == 200
    [entry, _] = await gw.stores.transcripts.read(CONV)
    assert (entry.verified, entry.signer) == (False, None)
    [received] = gw.upstream.received
    assert received.headers["baton-caller"] == str(agent_id(TRUST_DOMAIN, "legacy"))


async def test_sse_stream_is_relayed_event_by_event_and_recorded(gw: Running) -> None:
    status, headers, body = await gw.send(
        "support", "/u/billing/sse", rpc("tools/call", 3), extra=_conv()
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = body.split(b"\n\n")[:-1]
    assert [json.loads(e.split(b"data: ")[1])["params"]["n"] for e in events] == [0, 1, 2]
    assert "Signature" not in headers, "streams are chained, not response-signed"
    entries = await gw.stores.transcripts.read(CONV)
    assert [e.kind for e in entries] == ["request", "stream_event", "stream_event", "stream_event"]
    assert (
        b"".join([await gw.stores.transcripts.read_body(CONV, s) or b"" for s in (1, 2, 3)]) == body
    )


async def test_gateway_assigns_a_conversation_when_none_is_given(gw: Running) -> None:
    status, headers, _ = await gw.send("support", "/u/billing/x", rpc("tools/list"))
    assert status == 200
    conversation = headers["Baton-Conversation"]
    assert conversation.startswith("c-") and len(conversation) == 34
    assert len(await gw.stores.transcripts.read(conversation)) == 2


# ----------------------------------------------------------------- reject paths
async def test_missing_signature(gw: Running) -> None:
    result = await gw.send(
        "support",
        "/u/billing/x",
        rpc("tools/list"),
        headers=[("content-type", "application/json"), *_conv()],
    )
    await assert_rejected(gw, result, 401, "signature_missing")


async def test_bad_signature_does_not_burn_the_nonce(gw: Running) -> None:
    url = gw.base + "/u/billing/x"
    nonce = secrets.token_urlsafe(16)
    # A well-formed signature over a different request (PUT), sent as POST.
    forged = signed_headers(
        gw.agent("support"), "PUT", url, rpc("tools/list"), nonce=nonce, extra=_conv()
    )
    result = await gw.send("support", "/u/billing/x", rpc("tools/list"), headers=forged)
    await assert_rejected(gw, result, 401, "bad_signature")
    keyid = gw.agent("support").signing.active.kid
    assert await gw.stores.nonces.claim(keyid, nonce, ttl_s=66, now=time.time()), (
        "R09: a forged request must not consume the victim's nonce"
    )


async def test_signature_by_another_agents_key(gw: Running) -> None:
    url = gw.base + "/u/billing/x"
    body = rpc("tools/list")
    headers = signed_headers(gw.agent("billing"), "POST", url, body, extra=_conv())
    result = await gw.send("support", "/u/billing/x", body, headers=headers)
    await assert_rejected(gw, result, 401, "identity_mismatch")


async def test_digest_mismatch(gw: Running) -> None:
    url = gw.base + "/u/billing/x"
    signed_for = rpc("tools/list", 1)
    sent = rpc("tools/call", 1, name="refund")
    headers = signed_headers(
        gw.agent("support"), "POST", url, sent, digest_body=signed_for, extra=_conv()
    )
    result = await gw.send("support", "/u/billing/x", sent, headers=headers)
    await assert_rejected(gw, result, 401, "digest_mismatch")


async def test_stale_created(gw: Running) -> None:
    old = int(time.time()) - 61
    result = await gw.send("support", "/u/billing/x", rpc("tools/list"), created=old, extra=_conv())
    await assert_rejected(gw, result, 401, "stale")


async def test_created_in_the_future_beyond_skew(gw: Running) -> None:
    future = int(time.time()) + 30
    result = await gw.send(
        "support", "/u/billing/x", rpc("tools/list"), created=future, extra=_conv()
    )
    await assert_rejected(gw, result, 401, "stale")


async def test_replayed_nonce(gw: Running) -> None:
    url = gw.base + "/u/billing/x"
    body = rpc("tools/list")
    headers = signed_headers(gw.agent("support"), "POST", url, body)
    first = await gw.send("support", "/u/billing/x", body, headers=headers)
    assert first[0] == 200
    forwarded = len(gw.upstream.received)
    status, _, error = await gw.send("support", "/u/billing/x", body, headers=headers)
    assert (status, json.loads(error)["error"]["data"]["code"]) == (401, "replay_detected")
    assert len(gw.upstream.received) == forwarded == 1
    assert [e.reason for e in await gw.audit_events()] == [None, "replay_detected"]


async def test_signature_addressed_to_another_authority(gw: Running) -> None:
    body = rpc("tools/list")
    headers = signed_headers(
        gw.agent("support"),
        "POST",
        "https://other.example/u/billing/x",
        body,
        extra=_conv([("host", "other.example")]),
    )
    result = await gw.send("support", "/u/billing/x", body, headers=headers)
    await assert_rejected(gw, result, 401, "bad_audience")


async def test_routing_header_must_be_covered(gw: Running) -> None:
    url = gw.base + "/u/billing/x"
    body = rpc("tools/list")
    headers = signed_headers(
        gw.agent("support"),
        "POST",
        url,
        body,
        extra=_conv(),
        components=["@method", "@target-uri", "@authority", "content-digest"],
    )
    headers.append(("mcp-method", "tools/list"))
    result = await gw.send("support", "/u/billing/x", body, headers=headers)
    await assert_rejected(gw, result, 401, "insufficient_coverage")


async def test_policy_denies_an_unlisted_method(gw: Running) -> None:
    result = await gw.send("support", "/u/billing/x", rpc("admin/delete_everything"), extra=_conv())
    await assert_rejected(gw, result, 403, "policy_denied")


async def test_policy_denies_an_unlisted_caller_and_unknown_upstream(gw: Running) -> None:
    result = await gw.send("billing", "/u/billing/x", rpc("tools/list"), extra=_conv())
    await assert_rejected(gw, result, 403, "policy_denied")
    result = await gw.send("support", "/u/nope/x", rpc("tools/list"), extra=_conv())
    await assert_rejected(gw, result, 403, "policy_denied", audit_before=1)


async def test_rate_limit(tmp_path: Path) -> None:
    """``chatty`` may send 2 per 60 s window. The gateway's clock is held at one
    instant (signatures stay fresh: the test takes far less than the 5 s skew),
    so the three requests cannot straddle a window boundary (CI once saw the
    real clock cross one and the third pass)."""
    instant = float(int(time.time()))
    gw, runners = await start_gateway(tmp_path, clock=lambda: instant)
    try:
        await _rate_limited(gw)
    finally:
        for runner in runners:
            await runner.cleanup()
        await gw.upstream.stop()


async def _rate_limited(gw: Running) -> None:
    for _ in range(2):
        status, _, _ = await gw.send("chatty", "/u/billing/x", rpc("tools/list"))
        assert status == 200
    before = len(gw.upstream.received)
    status, headers, body = await gw.send(
        "chatty", "/u/billing/x", rpc("tools/list"), extra=_conv()
    )
    assert status == 429 and json.loads(body)["error"]["data"]["code"] == "rate_limited"
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert len(gw.upstream.received) == before
    assert await gw.stores.transcripts.head(CONV) == EMPTY


async def test_body_too_large(gw: Running) -> None:
    body = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":"' + b"a" * (1 << 20) + b'"}}'
    )
    result = await gw.send("support", "/u/billing/x", body, extra=_conv())
    await assert_rejected(gw, result, 413, "payload_too_large")


async def test_too_deep_json(gw: Running) -> None:
    body = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":' + b"[" * 100 + b"]" * 100 + b"}"
    )
    result = await gw.send("support", "/u/billing/x", body, extra=_conv())
    await assert_rejected(gw, result, 400, "too_deep")


async def test_too_many_headers(gw: Running) -> None:
    many = [(f"x-h{i}", "v") for i in range(101)]
    result = await gw.send("support", "/u/billing/x", rpc("tools/list"), extra=_conv(many))
    await assert_rejected(gw, result, 431, "headers_too_large")


async def test_underscore_header_is_refused(gw: Running) -> None:
    result = await gw.send(
        "support", "/u/billing/x", rpc("tools/list"), extra=_conv([("x_forwarded_user", "admin")])
    )
    await assert_rejected(gw, result, 400, "invalid_request")


# ------------------------------------------------------------ TLS-level rejects
async def _tls_refused(gw: Running, context: ssl.SSLContext) -> None:
    outcome = await asyncio.to_thread(tls_outcome, gw.port, context)
    assert outcome in (b"", "SSLError", "ConnectionResetError", "SSLEOFError"), outcome
    with pytest.raises(aiohttp.ClientError):  # and an HTTP client gets no answer either
        await gw.send("support", "/u/billing/x", rpc("tools/list"), context=context, extra=_conv())
    assert gw.upstream.received == []
    assert await gw.stores.transcripts.head(CONV) == EMPTY
    assert await gw.audit_events() == [], "HTTP was never reached"


async def test_tls_probe_sees_http_with_a_good_certificate(gw: Running) -> None:
    """The probe above can tell a refused handshake from an accepted one."""
    outcome = await asyncio.to_thread(tls_outcome, gw.port, gw.context("support"))
    assert isinstance(outcome, bytes) and outcome.startswith(b"HTTP/1.1 401"), outcome


async def test_no_client_certificate(gw: Running) -> None:
    context = client_context(gw.folder, None, None, gw.scratch)
    await _tls_refused(gw, context)


async def test_certificate_from_another_ca(gw: Running) -> None:
    now = dt.datetime.now(dt.UTC)
    rogue = DevCertificateAuthority.create(TRUST_DOMAIN, now=now).issue(
        SUPPORT, usage="client", now=now
    )
    context = client_context(gw.folder, rogue.chain_pem, rogue.key_pem, gw.scratch)
    await _tls_refused(gw, context)


async def test_expired_certificate(gw: Running) -> None:
    # Issued "4 minutes ago" (the dev CA is valid from 5 minutes before it was
    # made), for one minute: expired before the test connects.
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4)
    expired = gw.folder.load_ca().issue(
        SUPPORT, usage="client", now=past, validity=dt.timedelta(minutes=1)
    )
    context = client_context(gw.folder, expired.chain_pem, expired.key_pem, gw.scratch)
    await _tls_refused(gw, context)


async def test_certificate_without_client_auth_is_refused_after_handshake(gw: Running) -> None:
    now = dt.datetime.now(dt.UTC)
    server_only = gw.folder.load_ca().issue(SUPPORT, usage="server", now=now)
    context = client_context(gw.folder, server_only.chain_pem, server_only.key_pem, gw.scratch)
    try:
        result = await gw.send(
            "support", "/u/billing/x", rpc("tools/list"), context=context, extra=_conv()
        )
    except aiohttp.ClientError:  # OpenSSL may already refuse it for its EKU
        assert gw.upstream.received == []
        return
    await assert_rejected(gw, result, 401, "certificate_rejected")


# ------------------------------------------------------------------- bearer JWT
@pytest.fixture
async def gw_bearer(tmp_path: Path) -> AsyncIterator[tuple[Running, PrivateKey]]:
    idp = PrivateKey.generate("ES256")
    jwks = json.dumps(KeySet([idp.public]).to_jwks()).encode()
    extra = '\n[[bearer_issuers]]\nissuer = "https://idp.test"\njwks_file = "idp.jwks"\n'
    running, runners = await start_gateway(
        tmp_path, extra=extra, support_bearer="optional", files={"idp.jwks": jwks}
    )
    try:
        yield running, idp
    finally:
        for runner in runners:
            await runner.cleanup()
        await running.upstream.stop()


def _token(idp: PrivateKey, subject: str, **claims: object) -> str:
    now = int(time.time())
    payload = {
        "iss": "https://idp.test",
        "sub": subject,
        "aud": str(gateway_id(TRUST_DOMAIN, "gw1")),
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    return sign_compact(json.dumps(payload).encode(), idp, typ="JWT")


async def test_bearer_bound_to_the_certificate_is_accepted(
    gw_bearer: tuple[Running, PrivateKey],
) -> None:
    gw, idp = gw_bearer
    leaf = pem_chain_to_der(gw.agent("support").cert_pem)[0]
    token = _token(idp, SUPPORT, cnf={"x5t#S256": x5t_s256(leaf)})
    status, _, _ = await gw.send(
        "support",
        "/u/billing/x",
        rpc("tools/list"),
        extra=_conv([("authorization", f"Bearer {token}")]),
    )
    assert status == 200
    [received] = gw.upstream.received
    assert "authorization" not in {k.lower() for k in received.headers}
    assert token not in json.dumps(received.headers)


async def test_token_not_bound_to_the_certificate(gw_bearer: tuple[Running, PrivateKey]) -> None:
    gw, idp = gw_bearer
    result = await gw.send(
        "support",
        "/u/billing/x",
        rpc("tools/list"),
        extra=_conv([("authorization", f"Bearer {_token(idp, SUPPORT)}")]),
    )
    await assert_rejected(gw, result, 401, "identity_mismatch")


async def test_token_for_another_identity_than_the_certificate(
    gw_bearer: tuple[Running, PrivateKey],
) -> None:
    gw, idp = gw_bearer
    leaf = pem_chain_to_der(gw.agent("support").cert_pem)[0]
    token = _token(idp, BILLING, cnf={"x5t#S256": x5t_s256(leaf)})
    result = await gw.send(
        "support",
        "/u/billing/x",
        rpc("tools/list"),
        extra=_conv([("authorization", f"Bearer {token}")]),
    )
    await assert_rejected(gw, result, 401, "identity_mismatch")


async def test_token_bound_to_another_certificate(gw_bearer: tuple[Running, PrivateKey]) -> None:
    gw, idp = gw_bearer
    token = _token(idp, SUPPORT, cnf={"x5t#S256": "A" * 43})
    result = await gw.send(
        "support",
        "/u/billing/x",
        rpc("tools/list"),
        extra=_conv([("authorization", f"Bearer {token}")]),
    )
    await assert_rejected(gw, result, 401, "identity_mismatch")


# ---------------------------------------------------------------- upstream side
async def test_upstream_with_the_wrong_identity_gets_nothing(tmp_path: Path) -> None:
    running, runners = await start_gateway(tmp_path, upstream_agent="support")
    try:
        result = await running.send("support", "/u/billing/x", rpc("tools/list"), extra=_conv())
        assert result[0] == 502
        assert json.loads(result[2])["error"]["data"]["code"] == "upstream_error"
        assert running.upstream.received == [], "request bytes reached an impostor"
    finally:
        for runner in runners:
            await runner.cleanup()
        await running.upstream.stop()


async def test_circuit_breaker_opens_after_repeated_failures(gw: Running) -> None:
    await gw.upstream.stop()
    codes = []
    for _ in range(5):
        _, _, body = await gw.send("support", "/u/billing/x", rpc("tools/list"))
        codes.append(json.loads(body)["error"]["data"]["code"])
    assert codes == ["upstream_error"] * 3 + ["circuit_open"] * 2
    text = await admin_get(gw, "/metrics")
    assert 'baton_circuit_breaker_state{upstream="billing"} 2.0' in text
    assert 'baton_upstream_errors_total{kind="connect",upstream="billing"} 3.0' in text


async def test_upstream_error_status_passes_through_recorded(gw: Running) -> None:
    status, _, body = await gw.send("support", "/u/billing/fail", b"", extra=_conv())
    assert status == 500 and json.loads(body) == {"error": "boom"}
    entries = await gw.stores.transcripts.read(CONV)
    assert [(e.kind, e.status, e.method) for e in entries] == [
        ("request", None, "POST /fail"),
        ("error", 500, "POST /fail"),
    ]


# ------------------------------------------------------------------------ admin
async def test_admin_endpoints(gw: Running) -> None:
    await gw.send("support", "/u/billing/x", rpc("tools/list"))
    await gw.send("support", "/u/billing/x", rpc("nope"))
    async with aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{gw.admin_port}"
        async with session.get(base + "/healthz") as response:
            assert response.status == 200
        async with session.get(base + "/readyz") as response:
            assert (response.status, await response.json()) == (200, {"status": "ready"})
        async with session.get(base + "/metrics") as response:
            text = await response.text()
    assert 'baton_requests_total{code="ok",outcome="accepted"} 1.0' in text
    assert 'baton_requests_total{code="policy_denied",outcome="rejected"} 1.0' in text
    for stage in ("limits", "authenticate", "signature", "replay", "policy", "record", "upstream"):
        assert f'baton_stage_seconds_count{{stage="{stage}"}}' in text


async def test_jwks_is_published(gw: Running) -> None:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=gw.context("support"))) as session,
        session.get(gw.base + "/.well-known/jwks.json") as response,
    ):
        jwks = await response.json(content_type=None)
    assert jwks == json.loads((gw.folder.gateway / "jwks.json").read_bytes())
    assert all("d" not in key for key in jwks["keys"])


def test_content_digest_helper_matches_rfc_9530() -> None:
    assert content_digest(b'{"hello": "world"}\n') == (
        "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"
    )


# ----------------------------------------------------------------------- retries
async def test_idempotent_request_is_retried_after_a_dropped_connection(gw: Running) -> None:
    gw.upstream.drop = 1
    status, _, _ = await gw.send("support", "/u/billing/sse", b"", method="GET")
    assert status == 200
    first, second = gw.upstream.received
    assert (first.method, second.method) == ("GET", "GET")
    assert first.headers["signature"] != second.headers["signature"], "a retry is re-signed"


async def test_post_is_never_retried(gw: Running) -> None:
    gw.upstream.drop = 1
    status, _, body = await gw.send("support", "/u/billing/x", rpc("tools/call"), extra=_conv())
    assert (status, json.loads(body)["error"]["data"]["code"]) == (502, "upstream_error")
    assert [r.method for r in gw.upstream.received] == ["POST"], "the upstream may have acted"
    kinds = [e.kind for e in await gw.stores.transcripts.read(CONV)]
    assert kinds == ["request"], "the request was recorded before it was forwarded"


async def test_path_is_forwarded_as_sent_and_dot_segments_refused(gw: Running) -> None:
    status, _, _ = await gw.send("support", "/u/billing/a%2Fb/c?q=%20", rpc("tools/list"))
    assert status == 200
    assert gw.upstream.received[0].path == "/a%2Fb/c?q=%20"
    result = await gw.send("support", "/u/billing/x/%2E%2E/admin", rpc("tools/list"), extra=_conv())
    assert result[0] == 400 and len(gw.upstream.received) == 1
