"""adapters/agent/signer.py: RFC 9421 signing from real httpx and httpx2 clients.

Every wire test sends through a real client to a real socket server and
verifies what *arrived* the way the gateway does, so a signer that signs
something other than what the client sends fails here.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import httpx2
import pytest

from adapters.agent import RequestSigner
from adapters.agent.signer import DEFAULT_COVER
from keys.errors import BadSignature, CoverageInsufficient, DigestMismatch
from keys.httpsig import SignaturePolicy, check_content_digest, content_digest
from keys.keyset import KeySet
from keys.material import PrivateKey
from protocol.errors import InvalidRequest, MalformedSignature
from tests.adapters.agent._support import (
    ROUTING_HEADERS,
    Recorded,
    RecordingServer,
    recording_server,
    verify_as_gateway,
)

NOW = 1_750_000_000
MCP_BODY = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo"}}

ClientFactory = Callable[[RequestSigner], Any]


def _httpx(signer: RequestSigner) -> httpx.AsyncClient:
    return httpx.AsyncClient(auth=signer)


def _httpx2(signer: RequestSigner) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(auth=signer)


CLIENTS = pytest.mark.parametrize("make_client", [_httpx, _httpx2], ids=["httpx", "httpx2"])


@pytest.fixture(params=["Ed25519", "ES256"], scope="module")
def agent_key(request: pytest.FixtureRequest) -> PrivateKey:
    return PrivateKey.generate(request.param)


@pytest.fixture(scope="module")
def agent_keys(agent_key: PrivateKey) -> KeySet:
    return KeySet([agent_key.public])


@pytest.fixture
async def server() -> AsyncIterator[RecordingServer]:
    async with recording_server() as running:
        yield running


def _signer(key: PrivateKey, **kwargs: Any) -> RequestSigner:
    return RequestSigner(key, clock=lambda: NOW + 0.75, **kwargs)


def _only(server: RecordingServer) -> Recorded:
    assert len(server.received) == 1
    return server.received[0]


# ----------------------------------------------------------------- over the wire


@CLIENTS
async def test_post_with_routing_headers_verifies_as_the_gateway_does(
    make_client: ClientFactory, server: RecordingServer, agent_key: PrivateKey, agent_keys: KeySet
) -> None:
    async with make_client(_signer(agent_key)) as client:
        response = await client.post(
            f"{server.origin}/u/billing/mcp",
            json=MCP_BODY,
            headers={"Mcp-Method": "tools/call", "Mcp-Name": "echo", "A2A-Version": "1.0"},
        )
    assert response.status_code == 200
    recorded = _only(server)
    verified = verify_as_gateway(recorded, agent_keys)
    assert verified.keyid == agent_key.kid
    assert verified.created == NOW  # the injected clock, whole seconds
    assert verified.covered == (
        "@method",
        "@target-uri",
        "@authority",
        "content-digest",
        "mcp-method",
        "mcp-name",
        "a2a-version",
    )
    assert recorded.header("content-digest") == content_digest(recorded.body)
    check_content_digest(recorded.header("content-digest") or "", recorded.body)


@CLIENTS
async def test_percent_encoded_path_and_query_are_signed_as_sent(
    make_client: ClientFactory, server: RecordingServer, agent_key: PrivateKey, agent_keys: KeySet
) -> None:
    url = f"{server.origin}/u/billing/caf%C3%A9/a%2Fb/x%7e?token=a%2Fb&sp=%20x&tilde=%7E&e="
    async with make_client(_signer(agent_key)) as client:
        await client.post(url, content=b'{"x":1}')
        await client.get(
            f"{server.origin}/u/billing/caf\u00e9", params={"q": "a b&c", "n": "\u00e9"}
        )
    first, second = server.received
    assert first.raw_path == "/u/billing/caf%C3%A9/a%2Fb/x%7e?token=a%2Fb&sp=%20x&tilde=%7E&e="
    assert second.raw_path == "/u/billing/caf%C3%A9?q=a+b%26c&n=%C3%A9"
    for recorded in (first, second):
        assert verify_as_gateway(recorded, agent_keys).keyid == agent_key.kid


@CLIENTS
async def test_get_without_body_has_no_digest(
    make_client: ClientFactory, server: RecordingServer, agent_key: PrivateKey, agent_keys: KeySet
) -> None:
    async with make_client(_signer(agent_key)) as client:
        await client.get(f"{server.origin}/u/billing/mcp", headers={"mcp-method": "ping"})
    recorded = _only(server)
    assert recorded.body == b""
    assert recorded.header("content-digest") is None
    verified = verify_as_gateway(recorded, agent_keys)
    assert verified.covered == ("@method", "@target-uri", "@authority", "mcp-method")


@CLIENTS
async def test_every_request_gets_a_fresh_nonce(
    make_client: ClientFactory, server: RecordingServer, agent_key: PrivateKey, agent_keys: KeySet
) -> None:
    async with make_client(RequestSigner(agent_key)) as client:
        for _ in range(3):
            await client.post(f"{server.origin}/u/billing/mcp", json=MCP_BODY)
    nonces = [verify_as_gateway(r, agent_keys).nonce for r in server.received]
    assert len(set(nonces)) == 3
    assert all(nonce is not None and len(nonce) >= 16 for nonce in nonces)


@CLIENTS
async def test_injected_token_is_asked_for_128_bits(
    make_client: ClientFactory, server: RecordingServer, agent_key: PrivateKey, agent_keys: KeySet
) -> None:
    asked: list[int] = []
    counter = itertools.count()

    def token(nbytes: int) -> str:
        asked.append(nbytes)
        return f"nonce-{next(counter):016d}"

    async with make_client(_signer(agent_key, token=token)) as client:
        await client.post(f"{server.origin}/a", json=MCP_BODY)
        await client.post(f"{server.origin}/b", json=MCP_BODY)
    assert asked == [16, 16]
    nonces = [verify_as_gateway(r, agent_keys).nonce for r in server.received]
    assert nonces == ["nonce-0000000000000000", "nonce-0000000000000001"]


@CLIENTS
async def test_what_arrived_is_bound_to_the_signature(
    make_client: ClientFactory, server: RecordingServer, agent_key: PrivateKey, agent_keys: KeySet
) -> None:
    async with make_client(_signer(agent_key)) as client:
        await client.post(f"{server.origin}/u/billing/mcp?x=1", json=MCP_BODY)
    recorded = _only(server)
    with pytest.raises(DigestMismatch):
        verify_as_gateway(recorded, agent_keys, body=recorded.body + b" ")
    with pytest.raises(BadSignature):  # another scheme is another @target-uri
        verify_as_gateway(recorded, agent_keys, scheme="https")
    moved = Recorded(
        recorded.method,
        recorded.host,
        recorded.raw_path.replace("x=1", "x=2"),
        recorded.headers,
        recorded.body,
    )
    with pytest.raises(BadSignature):
        verify_as_gateway(moved, agent_keys)


@CLIENTS
async def test_uncovered_routing_header_fails_gateway_policy(
    make_client: ClientFactory, server: RecordingServer, agent_key: PrivateKey, agent_keys: KeySet
) -> None:
    """With ``cover=()`` the routing header travels unsigned: the gateway refuses it."""
    async with make_client(_signer(agent_key, cover=())) as client:
        await client.post(f"{server.origin}/mcp", json=MCP_BODY, headers={"mcp-method": "x"})
    with pytest.raises(CoverageInsufficient):
        verify_as_gateway(_only(server), agent_keys)


@CLIENTS
async def test_unread_streaming_body_is_refused_and_nothing_is_sent(
    make_client: ClientFactory, server: RecordingServer, agent_key: PrivateKey
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"jsonrpc":'
        yield b'"2.0"}'

    async with make_client(_signer(agent_key)) as client:
        with pytest.raises(InvalidRequest, match="streaming request body"):
            await client.post(f"{server.origin}/mcp", content=chunks())
    assert server.received == []


# ----------------------------------------------------------------- request objects


@pytest.mark.parametrize("module", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_re_signing_replaces_the_signature_fields(module: Any, agent_key: PrivateKey) -> None:
    """A redirect the SDK re-sends through ``auth`` carries one fresh signature."""
    tokens = iter(["first-nonce-000000001", "second-nonce-00000002"])
    signer = RequestSigner(agent_key, clock=lambda: NOW, token=lambda _: next(tokens))
    request = module.Request("POST", "https://gw.example:8443/u/b/mcp", content=b"{}")
    signer(signer(request))
    names = [name for name, _ in request.headers.multi_items()]
    for field in ("content-digest", "signature-input", "signature"):
        assert names.count(field) == 1
    assert "second-nonce-00000002" in request.headers["signature-input"]


@pytest.mark.parametrize("module", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_explicit_host_field_is_the_signed_authority(
    module: Any, agent_key: PrivateKey, agent_keys: KeySet
) -> None:
    """The gateway rebuilds the URI from ``Host``, lowercased; so does the signer."""
    signer = _signer(agent_key)
    request = module.Request(
        "GET", "https://10.0.0.5:8443/u/b", headers={"Host": "GW.Example:8443"}
    )
    signer(request)
    recorded = Recorded("GET", "GW.Example:8443", "/u/b", tuple(request.headers.multi_items()), b"")
    assert verify_as_gateway(recorded, agent_keys, scheme="https").keyid == agent_key.kid


def test_header_outside_the_profile_is_a_baton_error(agent_key: PrivateKey) -> None:
    request = httpx.Request(
        "POST", "https://gw/mcp", content=b"{}", headers=[(b"mcp-name", "caf\u00e9".encode())]
    )
    with pytest.raises(MalformedSignature):
        _signer(agent_key)(request)


@pytest.mark.parametrize(
    "cover",
    [("MCP-Method",), ("signature",), ("content-digest",), ("a", "a"), "mcp-method", ("bad name",)],
)
def test_cover_must_be_distinct_lowercase_field_names(cover: Any, agent_key: PrivateKey) -> None:
    with pytest.raises(ValueError, match="cover"):
        RequestSigner(agent_key, cover=cover)


def test_encryption_key_is_refused() -> None:
    with pytest.raises(ValueError, match="signing key"):
        RequestSigner(PrivateKey.generate("ECDH-ES+A256KW"))


def test_defaults_cover_the_gateway_routing_headers(agent_key: PrivateKey) -> None:
    assert DEFAULT_COVER == ROUTING_HEADERS
    assert RequestSigner(agent_key).keyid == agent_key.kid
    assert SignaturePolicy().label == "baton"  # the label the signer writes


def test_target_outside_rfc_3986_is_refused_not_mis_signed(agent_key: PrivateKey) -> None:
    """httpx sends a ``[`` written in the URL raw (``params=`` would encode it);
    the RFC 9421 profile (and so the gateway) refuses such a target, so the
    signer refuses it up front."""
    request = httpx.Request("GET", "https://gw.example/u/b?filter[a]=1")
    assert b"[" in request.url.raw_path
    with pytest.raises(MalformedSignature):
        _signer(agent_key)(request)
    assert "signature" not in request.headers
