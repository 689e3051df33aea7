"""Catalogue 1.7, resource exhaustion (X01-X08), against the real running gateway.

Requests that must be cut off mid-stream (a body that never ends, headers that
never finish, an HTTP/2 preface) go over a raw TLS connection with
``support``'s certificate, so the test decides exactly which bytes are sent and
when; the rest go through :meth:`SecGateway.send`. Every refusal that reaches
Baton's pipeline is checked with the shared reject invariants
(``invariants.assert_rejected``: nothing forwarded, nothing written but one
audit event, a generic body).

Baton's stable codes: ``413 payload_too_large`` (also for a Signature field
with too many members: a size cap, X08), ``400 too_deep``,
``400 malformed_input``, ``431 headers_too_large``, ``408 request_timeout``,
``429 rate_limited`` with ``Retry-After``.

``429 too_many_connections`` (X05) is written by the listener itself
(``gateway/connections.py``) before a request is read: it reaches no pipeline
stage and writes no audit event, only the ``baton_requests`` metric.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.app import AppOptions, capped_site, gateway_app, parser_limits
from gateway.config import ConfigError, load
from gateway.metrics import Metrics
from gateway.runtime import load_runtime
from gateway.tls import server_context
from keys import jose
from keys.b64 import b64url_decode, b64url_encode
from keys.errors import InvalidEnvelope
from keys.material import PrivateKey, PublicKey
from tests.gateway._harness import free_port, rpc, signed_headers
from tests.security.conftest import (
    BEARER_ISSUER,
    Clock,
    SecGateway,
    launch,
    raw_signed,
    shutdown,
)
from tests.security.faultkit import until
from tests.security.invariants import Result, assert_rejected

PATH = "/u/billing/mcp"
LIMIT = 1 << 20  # [limits] max_body_bytes, the default
#: Bounded waits for the gateway to answer or close (never a sleep to wait for it).
WAIT_S = 10.0


# ------------------------------------------------------------------ raw HTTP/1.1
class Raw:
    """One TLS connection to the gateway, written and read by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(
        cls, gw: SecGateway, *, port: int | None = None, context: ssl.SSLContext | None = None
    ) -> Raw:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            port or gw.port,
            ssl=context or gw.context("support"),
            server_hostname="127.0.0.1",
        )
        return cls(reader, writer)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> Result:
        """The next response: status, headers, body (by its Content-Length)."""
        async with asyncio.timeout(WAIT_S):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip()] = value.strip()
            length = {k.lower(): v for k, v in headers.items()}.get("content-length", "0")
            body = await self.reader.readexactly(int(length))
        return status, headers, body

    async def closed_within(self, seconds: float) -> bool:
        """True when the gateway closes the connection within ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except (ConnectionResetError, ssl.SSLError):
            return True
        return True

    async def close(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(WAIT_S):
                await self.writer.wait_closed()
        except (OSError, ssl.SSLError, TimeoutError):
            pass


def head(gw: SecGateway, headers: Iterable[tuple[str, str]], *, port: int | None = None) -> bytes:
    lines = [f"POST {PATH} HTTP/1.1", f"Host: 127.0.0.1:{port or gw.port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -------------------------------------------------------------------------- X01
@pytest.mark.threat("X01")
async def test_declared_length_over_the_limit_is_refused_before_the_body(gw: SecGateway) -> None:
    """A 64 MiB Content-Length: the answer comes after 1 KiB of it was sent."""

    async def send() -> Result:
        raw = await Raw.open(gw)
        try:
            await raw.write(head(gw, [("Content-Length", str(64 << 20))]) + b"[" * 1024)
            return await raw.response()
        finally:
            await raw.close()

    await assert_rejected(gw, send, status=413, code="payload_too_large")


@pytest.mark.threat("X01")
async def test_chunked_body_without_length_is_cut_at_the_limit(gw: SecGateway) -> None:
    """Chunks that never end: 413 once the limit is crossed, the last chunk never sent."""
    chunk = b"x" * 65536
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)

    async def send() -> Result:
        raw = await Raw.open(gw)
        try:
            await raw.write(head(gw, [("Transfer-Encoding", "chunked")]))
            for _ in range(LIMIT // len(chunk) + 2):  # just over the limit, never the 0-chunk
                await raw.write(framed)
            return await raw.response()
        finally:
            await raw.close()

    await assert_rejected(gw, send, status=413, code="payload_too_large")


@pytest.mark.threat("X01")
async def test_signed_body_over_the_limit(gw: SecGateway) -> None:
    """The same cap for an honest, signed body: size is checked before the signature."""
    body = rpc("tools/call", 1, name="lookup", arguments={"blob": "a" * LIMIT})
    await assert_rejected(gw, gw.send("support", PATH, body), status=413, code="payload_too_large")


# -------------------------------------------------------------------------- X02
@pytest.mark.threat("X02")
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,  # JSONTestSuite n_structure_100000_opening_arrays
        b"[" * 100_000 + b"]" * 100_000,  # well-formed, just deep
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        rpc("tools/call", 1, name="x", arguments={"v": 0})[:-1]
        + b',"deep":'
        + b"[" * 65
        + b"]" * 65
        + b"}",
    ],
    ids=["100000-open-arrays", "100000-balanced", "50000-objects", "depth-65-in-params"],
)
async def test_deep_nesting_is_too_deep_not_a_crash(gw: SecGateway, body: bytes) -> None:
    await assert_rejected(
        gw, gw.send("support", PATH, body), status=400, code="too_deep", nonce_consumed=True
    )


@pytest.mark.threat("X02")
async def test_nesting_at_the_limit_passes(gw: SecGateway) -> None:
    """Positive control: 60 levels inside a JSON-RPC call (limit 64) are forwarded."""
    arguments: Any = 0
    for _ in range(60):
        arguments = [arguments]
    body = rpc("tools/call", 1, name="x", arguments={"v": arguments})
    status, _, answer = await gw.send("support", PATH, body)
    assert status == 200, answer
    assert len(gw.upstream.received) == 1


# -------------------------------------------------------------------------- X03
@pytest.mark.threat("X03")
@pytest.mark.parametrize(
    "value",
    [b"1e999999", b"-1e400", b"1" * 5000, b'"\\ud800"', b"NaN"],
    ids=["float-overflow", "negative-overflow", "5000-digit-int", "lone-surrogate", "nan"],
)
async def test_hostile_numbers_are_malformed(gw: SecGateway, value: bytes) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"n":' + value + b"}}"
    await assert_rejected(
        gw,
        gw.send("support", PATH, body),
        status=400,
        code="malformed_input",
        nonce_consumed=True,
    )


@pytest.mark.threat("X03")
async def test_long_string_and_many_keys_are_bounded_by_the_body_cap(gw: SecGateway) -> None:
    """There is no separate cap on keys or string length: the body cap bounds
    them. 1e5 keys over the cap are 413; 1e5 keys under it parse in bounded
    time and are forwarded (the upstream gets what was signed)."""
    many = {f"k{i:06d}": i for i in range(100_000)}  # ~1.5 MiB
    body = rpc("tools/call", 1, name="x", arguments=many)
    assert len(body) > LIMIT
    await assert_rejected(gw, gw.send("support", PATH, body), status=413, code="payload_too_large")

    fewer = {f"{i:x}": 0 for i in range(100_000)}  # ~900 KiB, written compactly
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"arguments": fewer}}
    body = json.dumps(call, separators=(",", ":")).encode()
    assert len(body) < LIMIT
    started = time.perf_counter()
    status, _, answer = await gw.send("support", PATH, body)
    assert status == 200, answer
    assert time.perf_counter() - started < 5
    assert gw.upstream.received[-1].body == body


# -------------------------------------------------------------------------- X04
@pytest.mark.threat("X04")
async def test_too_many_headers(gw: SecGateway) -> None:
    extra = [(f"x-filler-{i}", "1") for i in range(120)]  # over max_headers = 100
    await assert_rejected(
        gw, gw.send("support", PATH, rpc("tools/list"), extra=extra), status=431,
        code="headers_too_large",
    )  # fmt: skip


@pytest.mark.threat("X04")
async def test_headers_too_large_in_total(gw: SecGateway) -> None:
    extra = [(f"x-filler-{i}", "v" * 3000) for i in range(4)]  # 12 KB > max_header_bytes
    await assert_rejected(
        gw, gw.send("support", PATH, rpc("tools/list"), extra=extra), status=431,
        code="headers_too_large",
    )  # fmt: skip


@pytest.mark.threat("X04")
async def test_one_header_over_the_parser_cap_never_reaches_baton(gw: SecGateway) -> None:
    """A single 64 KiB field is over aiohttp's parser cap (twice Baton's): the
    parser answers 4xx and closes; nothing is forwarded, nothing written."""
    raw = await Raw.open(gw)
    try:
        await raw.write(head(gw, [("x-huge", "v" * 65536), ("Content-Length", "0")]))
        status, _, _ = await raw.response()
    finally:
        await raw.close()
    assert status in (400, 431)
    assert gw.upstream.received == []
    assert await gw.audit_events() == []


# -------------------------------------------------------------------------- X05
async def _serve_as_baton(gw: SecGateway) -> tuple[int, web.AppRunner]:
    """A second listener over ``gw``'s data folder, with the runner settings
    ``baton serve`` uses (gateway/serve.py): ``keepalive_timeout`` from
    ``[limits] idle_timeout_s`` and the parser caps. The shared harness leaves
    the keep-alive timeout at aiohttp's default."""
    runtime = load_runtime(load(gw.folder.config), gw.folder.root)
    limits = runtime.config.limits
    app = gateway_app(runtime, Metrics(), AppOptions(clock=Clock(), sweep_interval_s=0))
    runner = web.AppRunner(
        app, access_log=None, keepalive_timeout=limits.idle_timeout_s, **parser_limits(limits)
    )
    await runner.setup()
    tls = server_context(
        cert_file=runtime.cert_file, key_file=runtime.key_file, ca_file=runtime.ca_file
    )
    port = free_port()
    await capped_site(runner, "127.0.0.1", port, limits=limits, ssl_context=tls).start()
    return port, runner


_SLOW = "[limits]\nbody_timeout_s = 0.5\nidle_timeout_s = 0.5\ntls_handshake_timeout_s = 0.5\n"


@pytest.fixture
async def gw_slow(tmp_path: Path) -> AsyncIterator[SecGateway]:
    running = await launch(tmp_path, extra=_SLOW)
    try:
        yield running
    finally:
        await shutdown(running)


@pytest.mark.threat("X05")
async def test_a_connection_that_never_finishes_tls_is_closed_at_the_handshake_deadline(
    gw_slow: SecGateway,
) -> None:
    """A TCP connection that sends nothing is dropped after ``[limits]
    tls_handshake_timeout_s`` (0.5 s here), not asyncio's 60 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw_slow.port)
    try:
        async with asyncio.timeout(WAIT_S):
            assert await reader.read() == b""
    finally:
        writer.close()
    assert gw_slow.upstream.received == []


@pytest.mark.threat("X05")
async def test_slow_body_gets_408_at_the_body_deadline(gw_slow: SecGateway) -> None:
    gw = gw_slow

    async def send() -> Result:
        raw = await Raw.open(gw)
        try:
            await raw.write(head(gw, [("Content-Length", "100")]) + b'{"jsonrpc"')
            answer = await raw.response()  # the rest never comes
            assert await raw.closed_within(WAIT_S), "the slow connection stayed open"
            return answer
        finally:
            await raw.close()

    await assert_rejected(gw, send, status=408, code="request_timeout")


@pytest.mark.threat("X05")
async def test_idle_keep_alive_connection_is_closed(gw_slow: SecGateway) -> None:
    gw = gw_slow
    port, runner = await _serve_as_baton(gw)
    try:
        raw = await Raw.open(gw, port=port)
        try:
            body = rpc("tools/list")  # addressed to the configured authority
            headers = [
                *signed_headers(gw.agent("support"), "POST", gw.base + PATH, body),
                ("Content-Length", str(len(body))),
            ]
            await raw.write(head(gw, headers) + body)
            status, _, answer = await raw.response()
            assert status == 200, answer
            started = time.monotonic()
            assert await raw.closed_within(WAIT_S), "an idle connection was kept open"
            assert time.monotonic() - started < 5
        finally:
            await raw.close()
    finally:
        await runner.cleanup()


@pytest.mark.threat("X05")
async def test_trickled_headers_are_closed_at_the_idle_timeout(gw_slow: SecGateway) -> None:
    """The request head has no deadline of its own, but aiohttp arms the
    keep-alive timer when the connection opens and trickled bytes do not
    re-arm it: a head unfinished after ``idle_timeout_s`` is cut (no 408)."""
    gw = gw_slow
    port, runner = await _serve_as_baton(gw)
    try:
        raw = await Raw.open(gw, port=port)
        try:
            started = time.monotonic()
            await raw.write(f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n".encode())
            closed = False
            for index in range(50):  # one header byte every 0.1 s, for up to 5 s
                try:
                    await raw.write(b"x-slow-%d: 1\r\n" % index)
                except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                    closed = True
                    break
                if await raw.closed_within(0.1):
                    closed = True
                    break
            assert closed, "trickled headers held the connection open"
            assert time.monotonic() - started < 3
        finally:
            await raw.close()
    finally:
        await runner.cleanup()
    assert gw.upstream.received == []


@pytest.mark.threat("X05")
async def test_one_address_cannot_hold_hundreds_of_connections(gw: SecGateway) -> None:
    """256 idle TLS connections from 127.0.0.1: the first ``[limits]
    max_connections_per_address`` (128) are kept, every later one is answered
    429 ``too_many_connections`` and closed before any request; closing kept
    ones makes room again."""
    cap = 128
    opened: list[Raw] = []
    audited = len(await gw.stores.audit.read(limit=100_000))
    try:
        for _ in range(256):
            opened.append(await Raw.open(gw))
        closed = await asyncio.gather(*(raw.closed_within(1.0) for raw in opened))
        assert closed == [False] * cap + [True] * (256 - cap), (
            f"{closed.count(True)} of 256 closed; expected the last {256 - cap}"
        )
        await opened[0].close()
        refusals = 256 - cap
        async with asyncio.timeout(WAIT_S):  # the gateway notices the close a moment later
            while True:
                late = await Raw.open(gw)
                opened.append(late)
                await late.write(head(gw, [("Content-Length", "0")]))
                status, _, _ = await late.response()
                if status != 429:
                    break
                refusals += 1
        assert status == 401, status  # reached the pipeline (unsigned), past the cap
        refused = await Raw.open(gw)
        opened.append(refused)
        status, headers, body = await refused.response()
        refusals += 1
        assert status == 429, status
        assert json.loads(body)["error"]["code"] == "too_many_connections"
        assert headers["Connection"] == "close"
    finally:
        await asyncio.gather(*(raw.close() for raw in opened))
    assert gw.upstream.received == []
    rejected = gw.metrics.requests.labels(outcome="rejected", code="too_many_connections")
    assert rejected._value.get() == refusals
    # Refusals are counted, never audited: the one new event is the late 401's.
    events = (await gw.stores.audit.read(limit=100_000))[audited:]
    assert [e.reason for e in events] == ["signature_missing"]


# -------------------------------------------------------------------------- X06
@pytest.mark.threat("X06")
@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_flood_from_one_identity_is_limited_others_are_not(
    tmp_path: Path, store: str
) -> None:
    """``chatty`` may send 2 per 60 s: the third is 429 with ``Retry-After``;
    ``support`` is unaffected; after the window ``chatty`` passes again."""
    gw = await launch(tmp_path, store=store)
    try:
        for _ in range(2):
            status, _, answer = await gw.send("chatty", PATH, rpc("tools/list"))
            assert status == 200, answer
        _, headers, _ = await assert_rejected(
            gw,
            gw.send("chatty", PATH, rpc("tools/list")),
            status=429,
            code="rate_limited",
            nonce_consumed=True,
            rate_counted=True,
        )
        assert 1 <= int(headers["Retry-After"]) <= 60
        for _ in range(5):
            status, _, answer = await gw.send("support", PATH, rpc("tools/list"))
            assert status == 200, answer
        assert len(gw.upstream.received) == 7
        gw.clock.now += 61
        status, _, answer = await gw.send(
            "chatty", PATH, rpc("tools/list"), created=int(gw.clock.now)
        )
        assert status == 200, answer
    finally:
        await shutdown(gw)


@pytest.mark.threat("X06")
async def test_a_process_at_its_in_flight_cap_sheds_with_503_and_samples_the_audit(
    tmp_path: Path,
) -> None:
    """``[limits] max_in_flight = 2``: two requests held at the upstream fill the
    process; every other one is answered 503 ``overloaded`` with ``Retry-After``
    at once (none reaches the upstream, none costs an audit event of its own:
    one ``request.shed`` event counts them); once the two finish, requests
    pass again."""
    gw = await launch(tmp_path, extra="[limits]\nmax_in_flight = 2\n")
    gw.upstream.hold = asyncio.Event()
    try:
        held = [asyncio.create_task(gw.send("support", PATH, rpc("tools/list"))) for _ in range(2)]

        async def both_arrived() -> bool:
            return len(gw.upstream.received) == 2

        await until(both_arrived, timeout=WAIT_S, what="two requests at the upstream")
        audit_before = len(await gw.stores.audit.read(limit=100_000))
        shed = [await gw.send("support", PATH, rpc("tools/list")) for _ in range(5)]
        for status, headers, body in shed:
            assert status == 503, body
            assert json.loads(body)["error"]["data"]["code"] == "overloaded"
            assert headers["Retry-After"] == "1"
        assert len(gw.upstream.received) == 2
        events = (await gw.stores.audit.read(limit=100_000))[audit_before:]
        assert [(e.event, e.reason) for e in events] == [("request.shed", "overloaded")]
        assert events[0].detail is not None and events[0].detail.startswith("1 requests shed")
        gw.upstream.hold.set()
        assert [(await task)[0] for task in held] == [200, 200]
        status, _, answer = await gw.send("support", PATH, rpc("tools/list"))
        assert status == 200, answer
        rejected = gw.metrics.requests.labels(outcome="rejected", code="overloaded")
        assert rejected._value.get() == 5
    finally:
        gw.upstream.hold.set()
        await shutdown(gw)


@pytest.mark.threat("X06")
async def test_parallel_flood_admits_exactly_the_limit(gw_redis: SecGateway) -> None:
    gw = gw_redis
    results = await asyncio.gather(*(gw.send("chatty", PATH, rpc("tools/list")) for _ in range(20)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 2 + [429] * 18
    assert len(gw.upstream.received) == 2


# -------------------------------------------------------------------------- X07
@pytest.mark.threat("X07")
async def test_listener_does_not_speak_http2(gw: SecGateway) -> None:
    """X07 does not apply: the listener offers only ``http/1.1`` in ALPN, so
    there are no streams to reset. A client asking for h2 first gets HTTP/1.1;
    a client offering only h2 gets no protocol, and its h2 preface is refused."""
    both = gw.context("support")
    both.set_alpn_protocols(["h2", "http/1.1"])
    raw = await Raw.open(gw, context=both)
    try:
        ssl_object = raw.writer.get_extra_info("ssl_object")
        assert ssl_object.selected_alpn_protocol() == "http/1.1"
    finally:
        await raw.close()

    only_h2 = gw.context("support")
    only_h2.set_alpn_protocols(["h2"])
    try:
        raw = await Raw.open(gw, context=only_h2)
    except (ssl.SSLError, ConnectionResetError):
        pass  # a no_application_protocol alert is as good
    else:
        try:
            assert raw.writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
            await raw.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(9))
            status, _, _ = await raw.response()
            assert status == 400
        finally:
            await raw.close()
    assert gw.upstream.received == []


# -------------------------------------------------------------------------- X08
def _b64(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@pytest.mark.threat("X08")
async def test_rsa_16384_issuer_key_is_refused_at_load(tmp_path: Path) -> None:
    """A 16384-bit modulus in a pinned issuer's JWKS: the gateway does not
    start (cap 8192 bits), and refusing it costs no RSA operation."""
    good = {"keys": [PrivateKey.generate("ES256").public.to_jwk()]}
    gw = await launch(
        tmp_path,
        extra=BEARER_ISSUER,
        support_bearer="optional",
        files={"idp.jwks": json.dumps(good).encode()},
    )
    try:
        modulus = (1 << 16383) | int.from_bytes(secrets.token_bytes(2047), "big") | 1
        jwks = {"keys": [{"kty": "RSA", "kid": "huge", "alg": "RS256", "use": "sig",
                          "n": _b64(modulus), "e": _b64(65537)}]}  # fmt: skip
        (gw.folder.root / "idp.jwks").write_bytes(json.dumps(jwks).encode())
        started = time.perf_counter()
        with pytest.raises(ConfigError) as info:
            load_runtime(load(gw.folder.config), gw.folder.root)
        assert time.perf_counter() - started < 2
        assert "bearer_issuers[0].jwks_file" in str(info.value)
    finally:
        await shutdown(gw)


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every public-key verification the process runs (a counting wrapper
    around the real :meth:`PublicKey.verify`, which still runs)."""
    calls: list[str] = []
    real = PublicKey.verify

    def counting(self: PublicKey, signature: bytes, message: bytes) -> bool:
        calls.append(self.kid)
        return real(self, signature, message)

    monkeypatch.setattr(PublicKey, "verify", counting)
    return calls


@pytest.mark.threat("X08")
async def test_a_hundred_signatures_are_refused_before_any_verification(
    gw: SecGateway, verify_calls: list[str]
) -> None:
    body = rpc("tools/list")
    key = gw.agent("support").signing.active
    good = raw_signed(
        key, "POST", gw.base + PATH, body,
        params=f';created={int(gw.clock.now)};keyid="{key.kid}";nonce="n-{secrets.token_hex(8)}"',
    )  # fmt: skip
    values = dict(good)
    inputs = ", ".join(f's{i}=("@method");keyid="k"' for i in range(99))
    sigs = ", ".join(f"s{i}=:AAAA:" for i in range(99))
    headers = [
        (name, f"{value}, {inputs}" if name == "signature-input" else value)
        for name, value in good
        if name != "signature"
    ] + [("signature", f"{values['signature']}, {sigs}")]
    verify_calls.clear()
    await assert_rejected(
        gw, gw.send("support", PATH, body, headers=headers), status=413, code="payload_too_large"
    )
    assert verify_calls == [], "a signature was verified before the cap"
    # Positive control: the one good signature alone is verified once and passes.
    status, _, answer = await gw.send("support", PATH, body, headers=good)
    assert status == 200, answer
    assert verify_calls == [key.kid]


@pytest.mark.threat("X08")
@pytest.mark.parametrize("form", ["general", "compact"])
def test_pbes2_jwe_is_refused_before_the_kdf(form: str) -> None:
    """A PBES2 header with p2c = 2e9 would cost hours of PBKDF2: refused as a
    plain envelope failure, in well under a second."""
    key = PrivateKey.generate("ECDH-ES+A256KW")
    sealed = jose.encrypt_general(b"secret", [key.public], typ="baton-capsule+jwe")
    pbes2 = {"alg": "PBES2-HS512+A256KW", "p2c": 2_000_000_000, "p2s": "c2FsdHNhbHQ"}
    value: Any
    if form == "general":
        sealed["recipients"][0]["header"] = {**sealed["recipients"][0]["header"], **pbes2}
        value = sealed
    else:
        header = json.loads(b64url_decode(sealed["protected"]))
        header.update(pbes2, kid=key.kid)
        recipient = sealed["recipients"][0]
        value = ".".join(
            [
                b64url_encode(json.dumps(header).encode()),
                recipient["encrypted_key"],
                sealed["iv"],
                sealed["ciphertext"],
                sealed["tag"],
            ]
        )
    started = time.perf_counter()
    with pytest.raises(InvalidEnvelope):
        jose.decrypt(value, key, typ="baton-capsule+jwe")
    assert time.perf_counter() - started < 1, "a KDF ran for a PBES2 header"
