"""``baton probe``: the catalogue's network-reachable attacks, run against a gateway at a URL.

The probe is a client and nothing more: it needs no access to the server,
only what an agent has (its client certificate and key, the CA that issued
the gateway's certificate, its RFC 9421 signing key). It first sends one
validly signed baseline request (``POST <URL>/u/<upstream>/mcp`` carrying a
JSON-RPC call, by default ``tools/list``, that the caller's policy allows). If
that is not answered 2xx the probe stops: nothing else it would observe means
anything. Then each case sends the baseline again with exactly one thing
broken and checks the answer against ``research/security.md`` s1:

* the status class the catalogue names (a refused TLS handshake where it says
  "alert"), and
* when the answer is in Baton's error shape (``error.data.code``), Baton's
  stable code for it. An answer in any other shape is judged on its status.

A case passes when the request is refused as the catalogue expects. A plain
reverse proxy forwards them all, so they fail there: the probe says what a
gateway catches, not only whether it is up. Two cases also need an accepted
request: R01 (the same signed request twice: first accepted, then refused)
and R09 (a forged signature carrying a nonce must not burn it: the valid
request with that nonce is accepted afterwards). X05 holds ``connections``
idle TLS connections from the probe's address, then sends the baseline on
one more: a gateway that caps connections per address refuses that one
(``--connections 0`` leaves the case out). Nothing secret is printed:
no key material, signatures, nonces or response bodies, only statuses and
stable codes.

Requests are signed with the repository's own RFC 9421 profile
(:func:`keys.httpsig.sign`, the one :class:`adapters.agent.RequestSigner`
uses): ``@method @target-uri @authority content-digest``, ``created``,
``keyid``, a fresh ``nonce`` and ``alg``, label ``baton``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import secrets
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.tracing import Trace
from yarl import URL

from keys.errors import KeysError
from keys.httpsig import HttpRequest, content_digest, sign
from keys.material import PrivateKey
from keys.strictjson import loads
from keys.x509 import DevCertificateAuthority

__all__ = ["CaseResult", "Observed", "ProbeOptions", "ProbeReport", "run_probe"]

#: The RFC 9421 label Baton verifies (adapters.agent.SIGNATURE_LABEL).
_LABEL: Final = "baton"
#: A response body is read up to this many bytes (only its error code is used).
_MAX_READ: Final = 64 << 10
_DEFAULT_AGENT_ID: Final = "spiffe://probe.invalid/agent/probe"

Kind = Literal["http", "tls_refused", "error"]


@dataclass(frozen=True)
class ProbeOptions:
    """Where the gateway is and who the probe is (an agent's own material)."""

    url: str
    upstream: str
    signing_key: PrivateKey = field(repr=False)
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    #: The SPIFFE ID put in the foreign-CA certificate of M02 (default: a made-up one).
    agent_id: str | None = None
    #: A JSON-RPC method the caller's policy allows on ``upstream``.
    method: str = "tools/list"
    #: The gateway's body cap: X01 sends a body just over it.
    body_limit: int = 1 << 20
    #: Idle connections X05 holds open before one more request (0: skip it).
    connections: int = 256
    timeout_s: float = 10.0
    clock: Callable[[], float] = time.time
    token: Callable[[int], str] = secrets.token_urlsafe

    def __post_init__(self) -> None:
        if not self.url.startswith("https://"):
            raise ValueError("the gateway URL must be https://")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("--client-cert and --key go together")
        if self.signing_key.use != "sig":
            raise ValueError("--agent-key must hold a signing key")
        if not 0 <= self.connections <= 4096:
            raise ValueError("--connections must be between 0 and 4096")


@dataclass(frozen=True)
class Observed:
    """What came back: an HTTP answer, a refused TLS connection, or an error."""

    kind: Kind
    status: int | None = None
    code: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        if self.kind == "http":
            return f"{self.status} {self.code}" if self.code else f"{self.status}"
        if self.kind == "tls_refused":
            return f"TLS refused ({self.detail})"
        return f"error ({self.detail})"

    @property
    def accepted(self) -> bool:
        return self.kind == "http" and self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class _Expect:
    """A refusal as the catalogue describes it."""

    statuses: frozenset[int]
    codes: frozenset[str]
    tls: bool = False  # a refused handshake counts (mTLS cases)
    text: str = ""

    def met_by(self, seen: Observed) -> bool:
        if seen.kind == "tls_refused":
            return self.tls
        if seen.kind != "http" or seen.status not in self.statuses:
            return False
        return seen.code is None or seen.code in self.codes

    def __str__(self) -> str:
        if self.text:
            return self.text
        statuses = "/".join(str(s) for s in sorted(self.statuses))
        codes = "|".join(sorted(self.codes))
        return f"{statuses} {codes}".strip()


def _expect(
    statuses: Sequence[int] | range, *codes: str, tls: bool = False, text: str = ""
) -> _Expect:
    return _Expect(frozenset(statuses), frozenset(codes), tls, text)


@dataclass(frozen=True)
class CaseResult:
    """One case: its threat ID, name, verdict, what came back and what was expected."""

    id: str
    case: str
    passed: bool
    observed: Observed
    expected: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "case": self.case,
            "passed": self.passed,
            "status": self.observed.status,
            "code": self.observed.code,
            "outcome": self.observed.kind,
            "observed": str(self.observed),
            "expected": self.expected,
            "note": self.note,
        }


@dataclass(frozen=True)
class ProbeReport:
    url: str
    upstream: str
    baseline: Observed
    results: tuple[CaseResult, ...]

    @property
    def baseline_ok(self) -> bool:
        return self.baseline.accepted

    def exit_status(self) -> int:
        """0 every case passed, 1 some failed, 2 the baseline failed (nothing was probed)."""
        if not self.baseline_ok:
            return 2
        return 0 if all(result.passed for result in self.results) else 1

    def to_json(self) -> dict[str, Any]:
        passed = sum(result.passed for result in self.results)
        return {
            "url": self.url,
            "upstream": self.upstream,
            "baseline": {
                "ok": self.baseline_ok,
                "status": self.baseline.status,
                "code": self.baseline.code,
                "observed": str(self.baseline),
            },
            "cases": [result.to_json() for result in self.results],
            "passed": passed,
            "failed": len(self.results) - passed,
        }

    def table(self) -> list[str]:
        lines = [f"baton probe {self.url} (upstream {self.upstream})"]
        verdict = "ok" if self.baseline_ok else "FAILED: nothing probed"
        lines.append(f"baseline: {self.baseline} {verdict}")
        if not self.results:
            return lines
        rows = [("ID", "CASE", "RESULT", "OBSERVED", "EXPECTED")]
        rows += [
            (r.id, r.case, "pass" if r.passed else "FAIL", str(r.observed), r.expected)
            for r in self.results
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
            lines.append("  ".join([*cells, row[4]]).rstrip())
        for result in self.results:
            if result.note:
                lines.append(f"  {result.id} {result.case}: {result.note}")
        passed = sum(result.passed for result in self.results)
        lines.append(f"{passed} passed, {len(self.results) - passed} failed")
        return lines


def _error_code(body: bytes) -> str | None:
    """Baton's stable code from its error shape (``error.data.code``, or a string
    ``error.code`` from a listener that refused before HTTP), else ``None``."""
    try:
        document = loads(body)
    except KeysError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    data = error.get("data") if isinstance(error, dict) else None
    code = data.get("code") if isinstance(data, dict) else None
    if code is None and isinstance(error, dict):
        code = error.get("code")  # a listener's own refusal: {"error": {"code": ...}}
    return code if isinstance(code, str) and len(code) <= 64 else None


def _rpc(method: str, rpc_id: int = 1, params: str = "{}") -> bytes:
    return (
        f'{{"jsonrpc":"2.0","id":{rpc_id},"method":{json.dumps(method)},"params":{params}}}'
    ).encode()


class _Connector(aiohttp.TCPConnector):
    """One fresh connection per request, each one waited for until it is closed.

    aiohttp closes a connection it will not reuse without waiting for the
    socket (a TLS shutdown takes a few more loop turns); the probe runs in its
    own event loop, which must not end with a socket still open.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(ssl=context, force_close=True)
        self._closing: list[asyncio.Future[None]] = []

    async def _create_connection(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> ResponseHandler:
        protocol = await super()._create_connection(req, traces, timeout)
        closed = protocol.closed  # created now, so connection_lost will complete it
        if closed is not None:
            self._closing.append(closed)
        return protocol

    async def wait_closed(self, timeout: float) -> None:
        if self._closing:
            await asyncio.wait(self._closing, timeout=timeout)
        for closed in self._closing:
            if closed.done() and not closed.cancelled():
                closed.exception()  # retrieved: a connection that died is expected here


class _Probe:
    """The probe's wire: signed requests, one fresh TLS connection each."""

    def __init__(self, options: ProbeOptions, scratch: Path) -> None:
        self.options = options
        base = URL(options.url)
        self.authority = base.raw_authority.lower()
        self._prefix = base.raw_path.rstrip("/")
        self.path = self.route(options.upstream)
        self._scratch = scratch
        self.context = self.context_for(options.client_cert, options.client_key)

    def route(self, upstream: str) -> str:
        return f"{self._prefix}/u/{upstream}/mcp"

    def context_for(self, cert: str | None, key: str | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.options.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None and key is not None:
            context.load_cert_chain(cert, key)
        return context

    def foreign_context(self) -> ssl.SSLContext:
        """A client certificate for the probe's SPIFFE ID from a CA nobody trusts (M02)."""
        spiffe_id = self.options.agent_id or _DEFAULT_AGENT_ID
        trust_domain = spiffe_id.removeprefix("spiffe://").partition("/")[0]
        now = dt.datetime.fromtimestamp(self.options.clock(), dt.UTC)
        issued = DevCertificateAuthority.create(trust_domain, now=now).issue(
            spiffe_id, usage="client", now=now
        )
        cert, key = self._scratch / "foreign.pem", self._scratch / "foreign.key"
        cert.write_bytes(issued.chain_pem)
        key.touch(mode=0o600)
        key.write_bytes(issued.key_pem)
        return self.context_for(str(cert), str(key))

    def signed(
        self,
        body: bytes,
        *,
        path: str | None = None,
        method: str = "POST",
        extra: Sequence[tuple[str, str]] = (),
        authority: str | None = None,
        created: int | None = None,
        nonce: str | None = None,
        keyid: str | None = None,
        components: Sequence[str] | None = None,
        digest_of: bytes | None = None,
    ) -> list[tuple[str, str]]:
        """Headers of a request signed by the agent's key, as an agent would send it."""
        host = authority or self.authority
        headers = [("host", host), ("content-type", "application/json"), *extra]
        covered = list(components or ("@method", "@target-uri", "@authority"))
        if body:
            headers.append(
                ("content-digest", content_digest(body if digest_of is None else digest_of))
            )
            if components is None:
                covered.append("content-digest")
        if components is None:
            present = {name.lower() for name, _ in extra}
            covered += [h for h in ("mcp-method", "mcp-name", "a2a-version") if h in present]
        signature_input, signature = sign(
            HttpRequest(method, f"https://{host}{path or self.path}", headers),
            self.options.signing_key,
            components=covered,
            created=int(self.options.clock()) if created is None else created,
            nonce=nonce or self.options.token(16),
            keyid=keyid,
            label=_LABEL,
        )
        return [*headers, ("signature-input", signature_input), ("signature", signature)]

    async def send(
        self,
        body: bytes,
        headers: Sequence[tuple[str, str]],
        *,
        path: str | None = None,
        method: str = "POST",
        context: ssl.SSLContext | None = None,
        chunked: bool = False,
    ) -> Observed:
        url = URL(f"https://{self.authority}{path or self.path}", encoded=True)
        connector = _Connector(context or self.context)
        try:
            return await self._exchange(connector, url, method, body, headers, chunked=chunked)
        finally:
            await connector.close()
            await connector.wait_closed(self.options.timeout_s)

    async def _exchange(
        self,
        connector: aiohttp.BaseConnector,
        url: URL,
        method: str,
        body: bytes,
        headers: Sequence[tuple[str, str]],
        *,
        chunked: bool,
    ) -> Observed:
        timeout = aiohttp.ClientTimeout(total=self.options.timeout_s)
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector,
                    connector_owner=False,
                    timeout=timeout,
                    auto_decompress=False,
                ) as session,
                session.request(
                    method,
                    url,
                    data=_chunks(body) if chunked else io.BytesIO(body) if body else None,
                    headers=list(headers),
                    allow_redirects=False,
                    skip_auto_headers=("Content-Type",),
                ) as response,
            ):
                answer = await response.content.read(_MAX_READ)
                return Observed("http", response.status, _error_code(answer))
        except aiohttp.ClientConnectorCertificateError:
            return Observed("error", detail="the gateway's certificate is not trusted (--ca)")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                return Observed("error", detail="connection refused")
            return Observed("tls_refused", detail=type(exc).__name__)
        except TimeoutError:
            return Observed("error", detail="timeout")
        except (aiohttp.ClientError, OSError) as exc:
            # The peer closed the connection or sent a TLS alert after our
            # handshake (TLS 1.3 checks the client certificate after Finished).
            return Observed("tls_refused", detail=type(exc).__name__)


async def _chunks(body: bytes, size: int = 64 << 10) -> AsyncIterator[bytes]:
    """``body`` as a chunked upload: no Content-Length for the gateway to check first."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


# ------------------------------------------------------------------- the cases
_Run = Callable[[_Probe], Awaitable[tuple[Observed, str]]]


@dataclass(frozen=True)
class _Case:
    id: str
    name: str
    expect: _Expect
    run: _Run


def _simple(build: Callable[[_Probe], Awaitable[Observed]]) -> _Run:
    async def run(probe: _Probe) -> tuple[Observed, str]:
        return await build(probe), ""

    return run


def _baseline_body(probe: _Probe, rpc_id: int = 1) -> bytes:
    return _rpc(probe.options.method, rpc_id)


async def _baseline(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    return await probe.send(body, probe.signed(body))


async def _no_client_cert(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    return await probe.send(body, probe.signed(body), context=probe.context_for(None, None))


async def _foreign_ca(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    return await probe.send(body, probe.signed(body), context=probe.foreign_context())


async def _unsigned(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    headers = [("host", probe.authority), ("content-type", "application/json")]
    return await probe.send(body, headers)


async def _weak_coverage(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    return await probe.send(body, probe.signed(body, components=["@method"]))


async def _forged_keeps_nonce(probe: _Probe) -> tuple[Observed, str]:
    body = _baseline_body(probe)
    nonce = probe.options.token(16)
    # A well-formed signature over another request (PUT), sent as POST.
    forged = await probe.send(body, probe.signed(body, method="PUT", nonce=nonce))
    if forged.kind != "http" or forged.accepted:
        return forged, "the forged request was not refused"
    then = await probe.send(body, probe.signed(body, nonce=nonce))
    if not then.accepted:
        return forged, f"then the valid request with that nonce got {then}: the nonce was burnt"
    return forged, ""


async def _digest_mismatch(probe: _Probe) -> Observed:
    signed_for, sent = _baseline_body(probe, 1), _baseline_body(probe, 2)
    return await probe.send(sent, probe.signed(sent, digest_of=signed_for))


async def _stale(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    old = int(probe.options.clock()) - 3600
    return await probe.send(body, probe.signed(body, created=old))


async def _future(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    ahead = int(probe.options.clock()) + 3600
    return await probe.send(body, probe.signed(body, created=ahead))


async def _replay(probe: _Probe) -> tuple[Observed, str]:
    body = _baseline_body(probe)
    headers = probe.signed(body)
    first = await probe.send(body, headers)
    if not first.accepted:
        return first, f"the first copy was not accepted ({first})"
    return await probe.send(body, headers), ""


async def _other_authority(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    return await probe.send(body, probe.signed(body, authority="other.example"))


def _with_alg(headers: list[tuple[str, str]], alg: str) -> list[tuple[str, str]]:
    """Name another ``alg`` in Signature-Input (the signature itself is untouched)."""
    out = []
    for name, value in headers:
        if name == "signature-input":
            head, sep, _ = value.rpartition(';alg="')
            out.append((name, f'{head};alg="{alg}"' if sep else f'{value};alg="{alg}"'))
        else:
            out.append((name, value))
    return out


async def _alg_mismatch(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    return await probe.send(body, _with_alg(probe.signed(body), "hmac-sha256"))


async def _alg_none(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    return await probe.send(body, _with_alg(probe.signed(body), "none"))


async def _kid_traversal(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    return await probe.send(body, probe.signed(body, keyid="../../../../dev/null"))


async def _oversized(probe: _Probe) -> Observed:
    filler = "a" * (probe.options.body_limit + 1024)
    body = _rpc(probe.options.method, params=f'{{"x":"{filler}"}}')
    return await probe.send(body, probe.signed(body))


async def _oversized_chunked(probe: _Probe) -> Observed:
    filler = "a" * (probe.options.body_limit + 1024)
    body = _rpc(probe.options.method, params=f'{{"x":"{filler}"}}')
    return await probe.send(body, probe.signed(body), chunked=True)


async def _deep_json(probe: _Probe) -> Observed:
    depth = 10_000
    body = _rpc(probe.options.method, params="[" * depth + "]" * depth)
    return await probe.send(body, probe.signed(body))


async def _many_headers(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    # With the ~9 fields every request has: over Baton's default cap (100 fields),
    # under aiohttp's own parser cap (128), which would answer a plain 400 first.
    extra = [(f"x-probe-{index}", "v") for index in range(105)]
    return await probe.send(body, probe.signed(body, extra=extra))


async def _large_headers(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    extra = [(f"x-probe-{index}", "v" * 1000) for index in range(24)]
    return await probe.send(body, probe.signed(body, extra=extra))


async def _underscore(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    return await probe.send(body, probe.signed(body, extra=[("x_forwarded_user", "admin")]))


async def _foreign_origin(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    return await probe.send(body, probe.signed(body, extra=[("origin", "https://evil.example")]))


async def _unknown_upstream(probe: _Probe) -> Observed:
    body = _baseline_body(probe)
    path = probe.route("probe-" + secrets.token_hex(6))
    return await probe.send(body, probe.signed(body, path=path), path=path)


async def _method_denied(probe: _Probe) -> Observed:
    body = _rpc("baton-probe/not-allowed")
    return await probe.send(body, probe.signed(body))


async def _connection_cap(probe: _Probe) -> tuple[Observed, str]:
    """X05: hold ``connections`` idle TLS connections, then send the baseline
    on one more. A gateway that caps what one address holds refuses it (429,
    or closes it); one that keeps them all answers it."""
    base = URL(probe.options.url)
    held: list[asyncio.StreamWriter] = []
    try:
        for _ in range(probe.options.connections):
            try:
                async with asyncio.timeout(probe.options.timeout_s):
                    _, writer = await asyncio.open_connection(
                        base.host, base.port, ssl=probe.context, server_hostname=base.host
                    )
            except (OSError, TimeoutError):
                break  # refused while opening: the next request shows how
            held.append(writer)
        body = _baseline_body(probe)
        return await probe.send(body, probe.signed(body)), ""
    finally:
        for writer in held:
            writer.close()
        if held:
            await asyncio.wait(
                [asyncio.ensure_future(writer.wait_closed()) for writer in held],
                timeout=probe.options.timeout_s,
            )


_TLS_OR_401 = "TLS refused or 401/403"

CASES: Final[tuple[_Case, ...]] = (
    _Case("M01", "no-client-certificate",
          _expect((401, 403), "certificate_rejected", "authentication_failed", tls=True,
                  text=_TLS_OR_401), _simple(_no_client_cert)),
    _Case("M02", "untrusted-ca-certificate",
          _expect((401, 403), "certificate_rejected", "authentication_failed", tls=True,
                  text=_TLS_OR_401), _simple(_foreign_ca)),
    _Case("R10", "unsigned", _expect((401,), "signature_missing"), _simple(_unsigned)),
    _Case("R10", "weak-coverage", _expect((401,), "insufficient_coverage"),
          _simple(_weak_coverage)),
    _Case("R09", "forged-signature-keeps-nonce", _expect((401,), "bad_signature"),
          _forged_keeps_nonce),
    _Case("R11", "digest-mismatch", _expect((401,), "digest_mismatch"),
          _simple(_digest_mismatch)),
    _Case("R07", "created-stale", _expect((401,), "stale"), _simple(_stale)),
    _Case("R07", "created-future", _expect((401,), "stale", "not_yet_valid"), _simple(_future)),
    _Case("R01", "nonce-replay", _expect((401, 409), "replay_detected"), _replay),
    _Case("R04", "other-authority", _expect((401, 421), "bad_audience", "misdirected_request"),
          _simple(_other_authority)),
    _Case("R13", "alg-mismatch", _expect((401,), "alg_mismatch"), _simple(_alg_mismatch)),
    _Case("J01", "alg-none", _expect((401,), "alg_mismatch", "alg_not_allowed"),
          _simple(_alg_none)),
    _Case("J05", "keyid-path-traversal", _expect((401,), "unknown_kid", "identity_mismatch"),
          _simple(_kid_traversal)),
    _Case("X01", "body-over-limit", _expect((413,), "payload_too_large"), _simple(_oversized)),
    _Case("X01", "chunked-body-over-limit", _expect((413,), "payload_too_large"),
          _simple(_oversized_chunked)),
    _Case("X02", "deep-json", _expect((400,), "too_deep"), _simple(_deep_json)),
    _Case("X04", "too-many-headers", _expect((431,), "headers_too_large"),
          _simple(_many_headers)),
    _Case("X04", "headers-too-large", _expect((431,), "headers_too_large"),
          _simple(_large_headers)),
    _Case("P13", "underscore-header", _expect(range(400, 500), "invalid_request",
                                              text="4xx invalid_request"), _simple(_underscore)),
    _Case("P06", "foreign-origin", _expect((403,), "origin_rejected"), _simple(_foreign_origin)),
    _Case("P14", "unknown-upstream", _expect((403, 404), "policy_denied", "not_found"),
          _simple(_unknown_upstream)),
    _Case("P14", "method-not-allowed", _expect((403,), "policy_denied"),
          _simple(_method_denied)),
    _Case("X05", "connections-per-address", _expect((429, 503), "too_many_connections",
                                                    tls=True, text="429 or closed"),
          _connection_cap),
)  # fmt: skip

#: The catalogue IDs the probe covers, each once, in case order.
COVERED_IDS: Final = tuple(dict.fromkeys(case.id for case in CASES))


async def run_probe(options: ProbeOptions) -> ProbeReport:
    """The baseline, then every case (none if the baseline was not accepted)."""
    with tempfile.TemporaryDirectory(prefix="baton-probe-") as scratch:
        probe = _Probe(options, Path(scratch))
        baseline = await _baseline(probe)
        results: list[CaseResult] = []
        if baseline.accepted:
            for case in CASES:
                if case.run is _connection_cap and options.connections == 0:
                    continue  # --connections 0: the user asked not to hold connections
                seen, note = await case.run(probe)
                passed = case.expect.met_by(seen) and not note
                results.append(CaseResult(case.id, case.name, passed, seen, str(case.expect), note))
    return ProbeReport(options.url, options.upstream, baseline, tuple(results))
