"""The request pipeline: every request through the data plane, in this order.

1. **limits** - header count and size (431), underscores in names (P13),
   body size streamed with a cap (413 before it is all buffered), body
   deadline (408).
2. **authenticate** - the TLS handshake already required a certificate from
   the CA; here the SVID profile gives the SPIFFE ID (cached per
   certificate). A bearer JWT, where the agent's policy takes one, must be
   bound to that certificate (RFC 8705) and name the same identity (M06, M07).
3. **signature** - RFC 9421 over ``@method @target-uri @authority``,
   ``content-digest`` with a body, and the routing headers present
   (``mcp-method``, ``mcp-name``, ``a2a-version``); the key must be one of the
   caller's own; ``@authority`` must be this gateway (R04).
4. **replay** - ``created`` inside the window, then the nonce claimed in the
   shared store, only after the signature verified (R09). Store down: 503.
5. **policy** - deny by default: caller -> upstream -> method; then the
   caller's rate limit (429 + ``Retry-After``).
6. **record** - the request entry in the conversation's hash chain (body
   encrypted at rest) and an audit event; either failing fails closed.
7. **upstream** - pooled mTLS connection with the gateway's certificate, a
   fresh RFC 9421 signature covering a ``Baton-Caller`` header. Inbound
   credentials and signatures are never forwarded.
8. **respond** - a JSON answer is recorded, signed (RFC 9421 over
   ``@status``, ``content-digest`` and the request's method and URI) and sent;
   an SSE stream is relayed event by event, each event recorded first.

Any failure becomes a JSON-RPC error with a stable code and exactly one audit
event; the internal reason goes to the log and the audit event only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

from aiohttp import ClientResponse, web
from multidict import CIMultiDict

from adapters.jsonrpc import Call
from adapters.sse import EventSplitter, is_event_stream
from gateway.config import RateLimitConfig
from gateway.dialects import Dialect, ToolChangedHook, dialect_for
from gateway.metrics import Metrics
from gateway.recorder import Recorder
from gateway.runtime import AgentPolicy, Runtime
from gateway.stores import Stores
from gateway.tls import PeerIdentityCache
from gateway.tool_pins import Seen
from gateway.upstream import Upstream
from keys.bearer import verify_bearer_at
from keys.errors import KeysError
from keys.httpsig import (
    HttpRequest,
    HttpResponse,
    SignaturePolicy,
    VerifiedSignature,
    content_digest,
    sign,
    verify,
)
from protocol.canonical import digest
from protocol.errors import (
    AuditUnavailable,
    AuthenticationFailed,
    BadAudience,
    BadGateway,
    BatonError,
    CertificateRejected,
    HeadersTooLarge,
    IdentityMismatch,
    InvalidRequest,
    MisdirectedRequest,
    OriginRejected,
    Overloaded,
    PayloadTooLarge,
    PolicyDenied,
    RateLimited,
    RequestTimeout,
    SignatureMissing,
    StoreUnavailable,
    from_keys_error,
)
from protocol.replay import check_freshness, claim_nonce

if TYPE_CHECKING:
    from gateway.gate import Gate, Release

__all__ = ["ALL_STAGES", "Admitted", "Gateway", "RequestContext", "Timer"]

log = logging.getLogger("baton.gateway")

#: Routing headers that must be covered by the caller's signature when present.
ROUTING_HEADERS: Final = ("mcp-method", "mcp-name", "a2a-version")
#: Never forwarded: hop-by-hop (RFC 9110 s7.6.1), inbound credentials, and the
#: fields the gateway owns (it re-signs, re-digests and states the caller).
_DROP_REQUEST: Final = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "proxy-authorization", "proxy-authenticate", "host", "content-length",
        "authorization", "cookie", "dpop", "signature", "signature-input", "content-digest",
        "baton-caller", "baton-conversation", "forwarded", "x-forwarded-for",
        "x-forwarded-host", "x-forwarded-proto", "x-forwarded-client-cert", "x-real-ip",
        "client-cert", "client-cert-chain", "traceparent",
    }
)  # fmt: skip
#: Also never forwarded: every ``X-Forwarded-*`` field (``-Uri``, ``-Prefix``,
#: ``-User``...). An upstream that trusts its proxy would take them from Baton (P13).
_DROP_REQUEST_PREFIX: Final = "x-forwarded-"
_DROP_RESPONSE: Final = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "content-length", "signature", "signature-input", "content-digest",
        "baton-conversation",
    }
)  # fmt: skip
#: At most one ``request.shed`` audit event per this many seconds (X06: sampled).
SHED_AUDIT_INTERVAL_S: Final = 1.0
_DOT_SEGMENTS: Final = frozenset({".", "..", "%2e", "%2e%2e", ".%2e", "%2e."})
_CONVERSATION: Final = re.compile(r"[A-Za-z0-9._:~-]{1,128}")
_TRACEPARENT: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_UPSTREAM_COMPONENTS: Final = ("@method", "@target-uri", "@authority", "baton-caller")
_RESPONSE_COMPONENTS: Final = ("@status", "content-digest", "@method;req", "@target-uri;req")
_MAX_RESPONSE_BYTES: Final = 16 << 20
#: Pipeline stages that can be left out. Only the benchmark ladder (bench/)
#: leaves any out, through code; no configuration key or flag reaches this.
ALL_STAGES: Final = frozenset({"signature", "replay", "policy", "record", "sign"})


class Timer:
    """Per-stage latency into the stage histogram."""

    __slots__ = ("_metrics", "_t")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._t = perf_counter()

    def lap(self, stage: str) -> None:
        now = perf_counter()
        self._metrics.stage[stage].observe(now - self._t)
        self._t = now


@dataclass(slots=True)
class RequestContext:
    """What is known about one request so far (for errors, audit and logs)."""

    request_id: str
    trace_id: str
    span_id: str
    flags: str
    started: float
    http_method: str = ""
    path: str = ""
    peer: str | None = None
    upstream: str | None = None
    call: Call | None = None
    body_digest: str | None = None
    #: The ``keyid`` of the caller's verified RFC 9421 signature, once verified.
    signer: str | None = None
    #: Renders errors in the upstream's protocol once the route is known.
    dialect: Dialect | None = None

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


class Admitted(NamedTuple):
    """A request past the first four steps: who sent it, what, and when it was checked."""

    agent: AgentPolicy
    body: bytes
    verified: VerifiedSignature | None
    now: float


@dataclass(frozen=True, slots=True)
class _Exchange:
    """An authenticated, authorised, recorded request on its way upstream."""

    agent: AgentPolicy
    upstream: Upstream
    conversation: str
    tail: str
    body: bytes
    dialect: Dialect
    call: Call


class Gateway:
    """The data plane: holds everything loaded at start-up; :meth:`handle` per request."""

    def __init__(
        self,
        runtime: Runtime,
        stores: Stores,
        upstreams: dict[str, Upstream],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        token: Callable[[int], str] = secrets.token_urlsafe,
        stages: frozenset[str] = ALL_STAGES,
    ) -> None:
        self.runtime = runtime
        self.stores = stores
        self.upstreams = upstreams
        self.metrics = metrics
        self.recorder = Recorder(stores.transcripts, stores.audit)
        self._clock = clock
        #: The latest ``now`` a freshness check used (see :meth:`_freshness_now`).
        self._freshness_floor = 0.0
        self._token = token
        self._limits = runtime.config.limits
        self._peers = PeerIdentityCache(runtime.anchors, runtime.config.trust_domain)
        self._policies: dict[frozenset[str], SignaturePolicy] = {}
        self._signing_key = runtime.signing.active
        self._optional_client_cert = runtime.config.gateway.client_auth == "optional"
        if not stages <= ALL_STAGES:
            raise ValueError(f"unknown stages {sorted(stages - ALL_STAGES)}")
        self._stages = stages
        self._origins = frozenset(runtime.config.gateway.allowed_origins)
        self._dialects = self._build_dialects(runtime, stores, upstreams, self._tool_changed)
        self._generic = Dialect(stores.bindings, runtime.config.limits.max_json_depth)
        #: The approval gate (set by the app once the inbox exists; None: no holds).
        self.gate: Gate | None = None
        self._max_in_flight = runtime.config.limits.max_in_flight
        self._in_flight = 0
        self._shed_count = 0
        self._shed_audited_at = float("-inf")

    @staticmethod
    def _build_dialects(
        runtime: Runtime,
        stores: Stores,
        upstreams: dict[str, Upstream],
        on_tool_changed: ToolChangedHook,
    ) -> dict[str, Dialect]:
        """One dialect per protocol in use, each upstream mapped to its own."""
        config = runtime.config
        pinned = {u.name for u in config.upstreams if u.protocol == "mcp" and u.pin_tools}
        shared: dict[str, Dialect] = {}
        webhook_hosts = {u.name: frozenset(u.webhook_hosts) for u in config.upstreams}
        base_urls = {u.name: u.url for u in config.upstreams}
        bearer = any(agent.bearer != "none" for agent in config.agents)
        for upstream in upstreams.values():
            protocol = upstream.config.protocol
            if protocol not in shared:
                shared[protocol] = dialect_for(
                    protocol,
                    stores.bindings,
                    config.limits.max_json_depth,
                    signing_key=runtime.card_signing or runtime.signing.active,
                    card_keys=runtime.card_keys,
                    webhook_hosts=webhook_hosts,
                    base_urls=base_urls,
                    bearer=bearer,
                    relay_base=config.gateway.relay_base(),
                    trusted_networks=config.gateway.webhook_trusted_networks,
                    policy=runtime.policy,
                    names={a.identity: a.name for a in runtime.agents_by_identity.values()},
                    pinned=pinned,
                    on_tool_changed=on_tool_changed,
                )
        return {name: shared[upstream.config.protocol] for name, upstream in upstreams.items()}

    def clock(self) -> float:
        """The gateway's clock (injected in tests)."""
        return self._clock()

    async def _tool_changed(self, upstream: str, name: str, seen: Seen, caller: str) -> None:
        """Audit, once fleet-wide, a tool definition that no longer matches its
        pin (I04); the dialect has already left it out of the listing."""
        log.warning(
            "MCP tool definition changed since it was pinned: hidden and refused until "
            "'baton tools approve'",
            extra={"upstream": upstream, "tool": name[:200], "seen": seen.digest},
        )
        name_digest = hashlib.sha256(name.encode()).hexdigest()[:32]
        try:
            await self.recorder.event(
                once=f"tool.changed:{upstream}:{name_digest}:{seen.digest}",
                ts=int(self._clock() * 1000),
                event="tool.changed",
                outcome="rejected",
                reason="tool_changed",
                request_id="tools/list",
                peer=caller,
                artifact_sha256=seen.digest,
                detail=f"{upstream} tool={name[:200]!r} pinned={seen.pinned}",
            )
        except StoreUnavailable as exc:
            raise AuditUnavailable(f"audit log: {exc.detail}") from exc

    def _freshness_now(self, now: float) -> float:
        """The time signatures are judged fresh at: ``now``, but never earlier
        than it has been. After the clock steps back, a request signed before
        the step would otherwise be fresh again once its nonce had expired
        (Redis expires nonces on its own clock), and its replay would pass.
        This fails closed: after a step back longer than the window, requests
        signed on the corrected clock are stale until it catches up."""
        self._freshness_floor = max(self._freshness_floor, now)
        return self._freshness_floor

    # ------------------------------------------------------------------ entry
    # ------------------------------------------------------------- admission
    async def admitted(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Run ``handler`` unless this process already serves ``limits.max_in_flight``
        requests (X06): then shed it at once, 503 ``overloaded`` with
        ``Retry-After``, before any parsing, crypto or store access. A shed request
        gets no audit event of its own (the flood would write the log): one
        ``request.shed`` event per :data:`SHED_AUDIT_INTERVAL_S` counts them."""
        if self._in_flight >= self._max_in_flight:
            return await self._shed(request)
        self._in_flight += 1
        try:
            return await handler(request)
        finally:
            self._in_flight -= 1

    async def _shed(self, request: web.Request) -> web.Response:
        error = Overloaded(f"{self._in_flight} requests in flight", retry_after=1)
        self.metrics.requests.labels("rejected", error.code).inc()
        self._shed_count += 1
        now = self._clock()
        if now - self._shed_audited_at >= SHED_AUDIT_INTERVAL_S:
            count, self._shed_count, self._shed_audited_at = self._shed_count, 0, now
            try:
                await self.recorder.event(
                    ts=int(now * 1000), event="request.shed", outcome="rejected",
                    reason=error.code, request_id="shed", peer=None, artifact_sha256=None,
                    detail=f"{count} requests shed (limits.max_in_flight={self._max_in_flight})",
                )  # fmt: skip
            except StoreUnavailable:
                log.error("audit log unavailable while shedding load")
        rendered = self._generic.render(
            error, call=None, trace_id=secrets.token_hex(16), http_method=request.method,
            path=request.raw_path.partition("?")[0],
        )  # fmt: skip
        return web.Response(
            status=rendered.status,
            headers={"Content-Type": rendered.content_type, "Retry-After": "1"},
            body=rendered.body,
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ctx = self.context(request)
        try:
            response = await self._pipeline(request, ctx)
        except BatonError as exc:
            return await self.reject(ctx, exc)
        except Exception as exc:  # a bug: fail closed, never leak the reason
            log.exception("internal error", extra={"request_id": ctx.request_id})
            return await self.reject(ctx, BatonError(f"{type(exc).__name__}: {exc}"))
        self.finish(ctx, response.status, "accepted", "ok")
        return response

    def context(self, request: web.Request) -> RequestContext:
        trace_id, flags = secrets.token_hex(16), "01"
        incoming = request.headers.get("traceparent")
        if incoming is not None:
            match = _TRACEPARENT.fullmatch(incoming.strip())
            if match and match[1] != "0" * 32 and match[2] != "0" * 16:
                trace_id, flags = match[1], match[3]
        return RequestContext(
            request_id=self._token(12),
            trace_id=trace_id,
            span_id=secrets.token_hex(8),
            flags=flags,
            started=perf_counter(),
            http_method=request.method,
            path=request.raw_path.partition("?")[0],
        )

    # --------------------------------------------------------------- pipeline
    async def admit(
        self, request: web.Request, ctx: RequestContext, timer: Timer, *, bearer: bool = True
    ) -> Admitted:
        """Steps 1-4 of the pipeline: limits, identity, signature, freshness and nonce.

        ``bearer=False`` (the push relay) reads ``Authorization`` as the webhook's
        own credential, not as a token for the gateway: the caller is then
        authenticated by its certificate alone.
        """
        self._check_headers(request)
        self._check_host_and_origin(request)
        body = await self._read_body(request)
        if body:
            ctx.body_digest = digest(body)
        timer.lap("limits")

        now = self._clock()
        agent = self._authenticate(request, now, bearer=bearer)
        ctx.peer = agent.identity
        timer.lap("authenticate")

        stages = self._stages
        verified = self._verify_signature(request, agent, body) if "signature" in stages else None
        ctx.signer = None if verified is None else verified.keyid
        timer.lap("signature")
        if verified is not None and "replay" in stages:
            check_freshness(
                verified.created,
                verified.expires,
                now=self._freshness_now(now),
                policy=self.runtime.freshness,
            )
            await claim_nonce(self.stores.nonces, verified, now=now, policy=self.runtime.freshness)
        timer.lap("replay")
        return Admitted(agent, body, verified, now)

    async def _pipeline(self, request: web.Request, ctx: RequestContext) -> web.StreamResponse:
        timer = Timer(self.metrics)
        ctx.dialect = self._dialects.get(request.match_info.get("upstream", ""))
        agent, body, verified, now = await self.admit(request, ctx, timer)
        stages = self._stages

        upstream, tail = self._route(request, agent)
        ctx.upstream = upstream.name
        dialect = self._dialects[upstream.name]
        call = dialect.parse(request, body, tail)
        ctx.call = call
        if "policy" in stages:
            self.runtime.policy.check(
                agent.name, upstream.name, call.method, call.target_kind, call.target
            )
            timer.lap("policy")
            await self.rate_limit(agent, now)
            timer.lap("rate_limit")
        await dialect.authorize(
            request, body, call, caller=agent.identity, upstream=upstream.name, now=now
        )
        conversation = self._conversation(request, dialect, call)
        release = None
        hold = (
            self.runtime.approvals.hold_for(
                agent.name, upstream.name, call.target_kind, call.target
            )
            if self.gate is not None and "policy" in stages
            else None
        )
        if hold is not None and self.gate is not None:
            # Held until a person approved exactly this call; then it passes once.
            release = await self.gate.check(
                ctx, call=call, body=body, caller=agent.identity, upstream=upstream.name,
                hold=hold, conversation=conversation, now=now,
            )  # fmt: skip
            body = release.body
        forwarded = await dialect.rewrite_request(
            call, body, caller=agent.identity, upstream=upstream.name, now=now
        )

        if "record" in stages:
            await self._record_request(
                ctx,
                agent=agent,
                upstream=upstream,
                conversation=conversation,
                body=body,
                verified=verified,
                now=now,
            )
        timer.lap("record")

        exchange = _Exchange(agent, upstream, conversation, tail, forwarded, dialect, call)
        if release is None:
            response = await self._forward(request, ctx, exchange)
            timer.lap("upstream")
            try:
                return await self._respond(request, ctx, exchange, response)
            finally:
                response.release()
                timer.lap("respond")
        return await self._forward_released(request, ctx, exchange, release)

    async def _forward_released(
        self, request: web.Request, ctx: RequestContext, exchange: _Exchange, release: Release
    ) -> web.StreamResponse:
        """Forward an approved call (it was released once) and acknowledge the
        handoff with the outcome: ``executed`` iff the upstream answered < 400."""
        gate = self.gate
        if gate is None:  # pragma: no cover - a release comes from the gate
            raise InvalidRequest("no gate")
        executed = False
        try:
            response = await self._forward(request, ctx, exchange)
            try:
                answer = await self._respond(request, ctx, exchange, response)
            finally:
                response.release()
            executed = answer.status < 400
            return answer
        finally:
            try:
                await gate.acknowledge(release, executed=executed, now=self._clock())
            except BatonError as exc:  # the call already happened: log, never hide it
                log.error(
                    "held call outcome not recorded",
                    extra={"request_id": ctx.request_id, "reason": exc.diagnostics()},
                )

    async def record_held(
        self, ctx: RequestContext, *, call: Call, body: bytes, conversation: str, now: float
    ) -> None:
        """Record a held request in its conversation (the bundle shows it; the
        caller then takes part). Not forwarded; no ``request.accepted`` event."""
        await self.recorder.entry(
            body or None,
            conversation=conversation,
            ts=int(now * 1000),
            sender=ctx.peer or "",
            to=self.upstreams[ctx.upstream or ""].identity,
            protocol=_protocol(call),
            kind="request",
            method=call.method[:256],
            rpc_id=call.rpc_id,
            body_digest=ctx.body_digest,
            body_size=len(body),
            signer=ctx.signer,
            verified=ctx.signer is not None,
        )

    async def bind_held_state(
        self, call: Call, state: str, *, caller: str, upstream: str, now: float
    ) -> None:
        """Let ``caller`` retry a held MCP 2026-07-28 call with the gateway's
        ``requestState`` (bound to the call like an upstream's, ADR 0012)."""
        dialect = self._dialects.get(upstream)
        if dialect is not None:
            await dialect.bind_state(call, state, caller=caller, upstream=upstream, now=now)

    async def rate_limit(self, agent: AgentPolicy, now: float) -> None:
        """The caller's rate limit (429 + ``Retry-After``), fleet-wide on Redis."""
        await self.limit(agent.identity, agent.rate_limit, now, who=agent.name)

    async def limit(self, key: str, rate: RateLimitConfig, now: float, *, who: str) -> None:
        """Count one hit on ``key`` against ``rate``; :class:`RateLimited` (with
        ``Retry-After``) over it. ``who`` names the limit in the internal reason."""
        decision = await self.stores.rates.hit(
            key, limit=rate.requests, window_s=rate.window_s, now=now
        )
        if not decision.allowed:
            raise RateLimited(
                f"{who}: over {rate.requests} per {rate.window_s}s",
                retry_after=max(1, round(decision.retry_after_s + 0.5)),
            )

    async def _record_request(
        self,
        ctx: RequestContext,
        *,
        agent: AgentPolicy,
        upstream: Upstream,
        conversation: str,
        body: bytes,
        verified: VerifiedSignature | None,
        now: float,
    ) -> None:
        call = ctx.call
        if call is None:  # pragma: no cover - parse_call ran before
            raise InvalidRequest("no call parsed")
        await self.recorder.entry(
            body or None,
            conversation=conversation,
            ts=int(now * 1000),
            sender=agent.identity,
            to=upstream.identity,
            protocol=_protocol(call),
            kind="request",
            method=call.method[:256],
            rpc_id=call.rpc_id,
            body_digest=ctx.body_digest,
            body_size=len(body),
            signer=verified.keyid if verified else None,
            verified=verified is not None,
        )
        await self.audit(
            ctx, now, event="request.accepted", outcome="accepted", reason=None,
            detail=f"{upstream.name} {call.method}"[:1000],
        )  # fmt: skip

    # ----------------------------------------------------------------- limits
    def _check_headers(self, request: web.Request) -> None:
        raw = request.raw_headers
        if len(raw) > self._limits.max_headers:
            raise HeadersTooLarge(f"{len(raw)} header fields")
        size = 0
        for name, value in raw:
            size += len(name) + len(value) + 4
            if b"_" in name:
                raise InvalidRequest("underscore in a header name")
        if size > self._limits.max_header_bytes:
            raise HeadersTooLarge(f"{size} bytes of header fields")

    def _check_host_and_origin(self, request: web.Request) -> None:
        """The DNS-rebinding defences MCP's transports require: a browser ``Origin``
        must be allowed (403), and ``Host`` must name this gateway (421).

        A signed request's ``Host`` is its signed ``@authority``, checked at the
        signature step, where a foreign one is the cross-audience replay R04
        (401 ``bad_audience``); here only unsigned requests are checked."""
        origins = request.headers.getall("origin", [])
        if origins and (len(origins) != 1 or origins[0].lower() not in self._origins):
            raise OriginRejected(f"Origin {origins!r} is not allowed")
        host = request.headers.getall("host", [])
        if len(host) != 1:
            raise MisdirectedRequest(f"{len(host)} Host fields")
        if "signature-input" not in request.headers and (
            host[0].lower() not in self.runtime.authorities
        ):
            raise MisdirectedRequest(f"Host {host[0]!r} is not one of this gateway's authorities")

    async def _read_body(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self._limits.max_body_bytes:
            raise PayloadTooLarge(f"Content-Length {length}")
        if not request.can_read_body:
            return b""
        try:
            async with asyncio.timeout(self._limits.body_timeout_s):
                return await request.read()  # capped by client_max_size while reading
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge("body over the limit") from None
        except TimeoutError:
            raise RequestTimeout("body not received in time") from None

    # ----------------------------------------------------------- authenticate
    def _authenticate(self, request: web.Request, now: float, *, bearer: bool) -> AgentPolicy:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        leaf = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        token = self._bearer_token(request) if bearer else None
        identity: str | None = None
        thumbprint: str | None = None
        if leaf is not None:
            peer = self._peers.identify(leaf, dt.datetime.fromtimestamp(now, dt.UTC))
            identity, thumbprint = peer.spiffe_id, peer.x5t_s256
        elif not self._optional_client_cert:
            raise CertificateRejected("no client certificate")
        agent = self.runtime.agents_by_identity.get(identity) if identity else None
        if identity is not None and agent is None:
            raise CertificateRejected(f"{identity} is not a configured agent")
        if token is None:
            if agent is None:
                raise AuthenticationFailed("neither a client certificate nor a bearer token")
            if agent.bearer == "required":
                raise AuthenticationFailed(f"{agent.name} must present a bearer token")
            return agent
        if agent is not None and agent.bearer == "none":
            raise AuthenticationFailed(f"{agent.name} is not configured for bearer tokens")
        subject = self._verify_bearer(token, now, thumbprint, identity)
        if agent is None:
            agent = self.runtime.agents_by_identity.get(subject)
            if agent is None or agent.bearer != "required":
                raise AuthenticationFailed("token subject is not a bearer-only agent")
        return agent

    @staticmethod
    def _bearer_token(request: web.Request) -> str | None:
        values = request.headers.getall("authorization", [])
        if not values:
            return None
        scheme, _, token = values[0].partition(" ")
        if len(values) != 1 or scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("Authorization is not one Bearer token")
        return token.strip()

    def _verify_bearer(
        self, token: str, now: float, thumbprint: str | None, identity: str | None
    ) -> str:
        issuers = self.runtime.bearer_issuers
        last: BatonError = AuthenticationFailed("no issuer accepted the token")
        for issuer in issuers:
            try:
                claims = verify_bearer_at(
                    token,
                    issuer,
                    now=now,
                    client_cert_x5t_s256=thumbprint,
                    expected_subject=identity,
                )
            except KeysError as exc:
                last = from_keys_error(exc)
                if last.code == "bad_issuer" and len(issuers) > 1:
                    continue
                raise last from exc
            return claims.subject
        raise last

    # -------------------------------------------------------------- signature
    def _signature_policy(self, request: web.Request) -> SignaturePolicy:
        present = frozenset(name for name in ROUTING_HEADERS if name in request.headers)
        policy = self._policies.get(present)
        if policy is None:
            policy = SignaturePolicy(
                required_components=frozenset({"@method", "@target-uri", "@authority"}) | present
            )
            self._policies[present] = policy
        return policy

    def _verify_signature(
        self, request: web.Request, agent: AgentPolicy, body: bytes
    ) -> VerifiedSignature | None:
        signed = "signature" in request.headers or "signature-input" in request.headers
        if not signed:
            if agent.signatures == "required":
                raise SignatureMissing(f"{agent.name} must sign its requests")
            return None
        authority = request.host.lower()
        if authority not in self.runtime.authorities:
            raise BadAudience(f"request addressed to {authority!r}, not this gateway")
        message = HttpRequest(
            request.method, f"https://{authority}{request.raw_path}", list(request.headers.items())
        )
        try:
            return verify(message, agent.keys, self._signature_policy(request), body=body)
        except KeysError as exc:
            error = from_keys_error(exc)
            if error.code == "unknown_kid":
                raise IdentityMismatch(f"key is not one of {agent.name}'s: {exc}") from exc
            raise error from exc

    # ---------------------------------------------------------------- routing
    def _route(self, request: web.Request, agent: AgentPolicy) -> tuple[Upstream, str]:
        name = request.match_info.get("upstream", "")
        upstream = self.upstreams.get(name)
        if upstream is None:  # same answer as a denial: names are not enumerable
            raise PolicyDenied(f"{agent.name} asked for unknown upstream {name!r}")
        # The tail is forwarded as the client sent it (still percent-encoded),
        # never re-encoded from aiohttp's decoded match: %2F stays %2F.
        path = request.raw_path.partition("?")[0]
        prefix = f"/u/{name}"
        if not path.startswith(prefix) or path[len(prefix) : len(prefix) + 1] not in ("", "/"):
            raise PolicyDenied(f"{agent.name} sent an encoded upstream name")
        tail = path[len(prefix) + 1 :]
        if any(segment in _DOT_SEGMENTS for segment in tail.lower().split("/")):
            raise InvalidRequest("dot segment in the path")
        return upstream, tail

    @staticmethod
    def _conversation(request: web.Request, dialect: Dialect, call: Call) -> str:
        for header in ("baton-conversation", "mcp-session-id"):
            value = request.headers.get(header)
            if value is not None and not _CONVERSATION.fullmatch(value):
                raise InvalidRequest(f"{header} is not a valid conversation id")
        value = dialect.conversation(call, request)
        if value is None:
            return "c-" + secrets.token_hex(16)
        if not _CONVERSATION.fullmatch(value):  # a protocol id with other characters
            return "h-" + digest(value.encode()).removeprefix("sha256:")[:64]
        return value

    # --------------------------------------------------------------- forward
    async def _forward(
        self, request: web.Request, ctx: RequestContext, exchange: _Exchange
    ) -> ClientResponse:
        agent, upstream, body = exchange.agent, exchange.upstream, exchange.body
        tail, conversation = exchange.tail, exchange.conversation
        url = f"{upstream.base_url}/{tail}"
        _, has_query, raw_query = request.raw_path.partition("?")
        if has_query:
            url += "?" + raw_query  # as sent: aiohttp's query_string is decoded
        connection_named = {
            token.strip().lower()
            for value in request.headers.getall("connection", [])
            for token in value.split(",")
        }
        headers = [
            (name, value)
            for name, value in request.headers.items()
            if (lower := name.lower()) not in _DROP_REQUEST
            and lower not in connection_named
            and not lower.startswith(_DROP_REQUEST_PREFIX)
        ]
        headers.append(("baton-caller", agent.identity))
        headers.append(("baton-conversation", conversation))
        headers.append(("traceparent", ctx.traceparent))
        if "sign" not in self._stages:
            return await upstream.send(request.method, url, lambda: headers, body)
        components: tuple[str, ...] = _UPSTREAM_COMPONENTS
        if body:
            headers.append(("content-digest", content_digest(body)))
            components = (*components, "content-digest")

        def signed() -> list[tuple[str, str]]:
            # Called per attempt: a retry carries a fresh nonce, never a replay.
            signature_input, signature = sign(
                HttpRequest(request.method, url, headers),
                self._signing_key,
                components=components,
                created=int(self._clock()),
                nonce=self._token(16),
            )
            return [*headers, ("signature-input", signature_input), ("signature", signature)]

        return await upstream.send(request.method, url, signed, body)

    # --------------------------------------------------------------- respond
    def _response_headers(self, response: ClientResponse, conversation: str) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in response.headers.items():
            if name.lower() not in _DROP_RESPONSE:
                headers.add(name, value)
        headers["Baton-Conversation"] = conversation
        return headers

    async def _respond(
        self,
        request: web.Request,
        ctx: RequestContext,
        exchange: _Exchange,
        response: ClientResponse,
    ) -> web.StreamResponse:
        agent, upstream, conversation = exchange.agent, exchange.upstream, exchange.conversation
        call, dialect = exchange.call, exchange.dialect
        headers = self._response_headers(response, conversation)
        await dialect.on_response(
            request,
            call,
            caller=agent.identity,
            upstream=upstream.name,
            status=response.status,
            headers={name.lower(): value for name, value in response.headers.items()},
            now=self._clock(),
        )
        if is_event_stream(response.headers.get("content-type", "")):
            return await self._relay_stream(request, exchange, response, headers)
        received = await self._read_upstream(upstream, response)
        now = self._clock()
        data = await dialect.on_body(
            call,
            received,
            caller=agent.identity,
            upstream=upstream.name,
            status=response.status,
            authority=request.host,
            now=now,
        )
        if data is not received:  # rewritten (a re-signed card, a filtered list)
            headers.popall("ETag", None)
        if "record" not in self._stages:
            return web.Response(status=response.status, headers=headers, body=data)
        await self.recorder.entry(
            data or None,
            conversation=conversation,
            ts=int(now * 1000),
            sender=upstream.identity,
            to=agent.identity,
            protocol=_protocol(call),
            kind="response" if response.status < 400 else "error",
            method=ctx.call.method[:256] if ctx.call else None,
            rpc_id=ctx.call.rpc_id if ctx.call else None,
            status=response.status,
            body_digest=digest(data) if data else None,
            body_size=len(data),
            signer=None,
            verified=False,
        )
        headers["Content-Digest"] = content_digest(data)
        target = f"https://{request.host}{request.raw_path}"
        signature_input, signature = sign(
            HttpResponse(
                response.status,
                list(headers.items()),
                HttpRequest(request.method, target, ()),
            ),
            self._signing_key,
            components=_RESPONSE_COMPONENTS,
            created=int(now),
            nonce=self._token(16),
        )
        headers["Signature-Input"] = signature_input
        headers["Signature"] = signature
        return web.Response(status=response.status, headers=headers, body=data)

    async def _read_upstream(self, upstream: Upstream, response: ClientResponse) -> bytes:
        if (response.content_length or 0) > _MAX_RESPONSE_BYTES:
            raise BadGateway(f"{upstream.name}: response over {_MAX_RESPONSE_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if size > _MAX_RESPONSE_BYTES:
                    raise BadGateway(f"{upstream.name}: response over {_MAX_RESPONSE_BYTES} bytes")
                chunks.append(chunk)
        except TimeoutError as exc:
            raise BadGateway(f"{upstream.name}: response body timed out") from exc
        except OSError as exc:
            raise BadGateway(f"{upstream.name}: response body failed: {exc}") from exc
        return b"".join(chunks)

    async def _relay_stream(
        self,
        request: web.Request,
        exchange: _Exchange,
        response: ClientResponse,
        headers: CIMultiDict[str],
    ) -> web.StreamResponse:
        agent, upstream, conversation = exchange.agent, exchange.upstream, exchange.conversation
        out = web.StreamResponse(status=response.status, headers=headers)
        await out.prepare(request)
        splitter = EventSplitter()
        counter = self.metrics.stream_events.labels(upstream.name)

        call, dialect = exchange.call, exchange.dialect

        async def relay(received: bytes) -> None:
            now = self._clock()
            event = await dialect.on_event(
                call, received, caller=agent.identity, upstream=upstream.name, now=now
            )
            await self.recorder.entry(
                event,
                conversation=conversation,
                ts=int(now * 1000),
                sender=upstream.identity,
                to=agent.identity,
                protocol=_protocol(call),
                kind="stream_event",
                status=response.status,
                body_digest=digest(event),
                body_size=len(event),
                signer=None,
                verified=False,
            )
            await out.write(event)
            counter.inc()

        try:
            async for chunk in response.content.iter_any():
                for event in splitter.feed(chunk):
                    await relay(event)
            rest = splitter.flush()
            if rest:
                await relay(rest)
            await out.write_eof()
        except (BatonError, OSError, TimeoutError) as exc:
            # The status line is gone; cutting the stream is the only honest signal.
            log.warning(
                "stream cut",
                extra={"upstream": upstream.name, "reason": type(exc).__name__},
            )
            if request.transport is not None:
                request.transport.close()
        return out

    # ----------------------------------------------------------- rejections
    async def audit(
        self, ctx: RequestContext, now: float, *, event: str, outcome: str, reason: str | None,
        detail: str | None, once: str | None = None,
    ) -> None:  # fmt: skip
        """Append an audit event; with ``once``, only if none was appended under
        that idempotency key (a retry after a fault appends what is missing)."""
        try:
            await self.recorder.event(
                once=once,
                ts=int(now * 1000),
                event=event,
                outcome=outcome,
                reason=reason,
                request_id=ctx.request_id,
                peer=ctx.peer,
                artifact_sha256=ctx.body_digest,
                detail=detail,
            )
        except StoreUnavailable as exc:
            raise AuditUnavailable(f"audit log: {exc.detail}") from exc

    async def reject(self, ctx: RequestContext, error: BatonError) -> web.Response:
        try:
            await self.audit(
                ctx, self._clock(), event="request.rejected", outcome="rejected",
                reason=error.code, detail=error.diagnostics()[:1000],
            )  # fmt: skip
        except AuditUnavailable as audit_error:
            log.error("audit log unavailable", extra={"request_id": ctx.request_id})
            error = audit_error
        self.finish(ctx, error.http_status, "rejected", error.code, detail=error.diagnostics())
        dialect = ctx.dialect or self._generic
        rendered = dialect.render(
            error,
            call=ctx.call,
            trace_id=ctx.trace_id,
            http_method=ctx.http_method,
            path=ctx.path,
        )
        headers = {"Content-Type": rendered.content_type}
        if isinstance(error, AuthenticationFailed):
            headers["WWW-Authenticate"] = error.www_authenticate
        if error.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(error.retry_after)))
        return web.Response(status=rendered.status, headers=headers, body=rendered.body)

    def finish(
        self, ctx: RequestContext, status: int, outcome: str, code: str, detail: str | None = None
    ) -> None:
        elapsed = perf_counter() - ctx.started
        self.metrics.requests.labels(outcome, code).inc()
        self.metrics.request_seconds.observe(elapsed)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "request",
                extra={
                    "request_id": ctx.request_id,
                    "trace_id": ctx.trace_id,
                    "peer": ctx.peer,
                    "upstream": ctx.upstream,
                    "method": ctx.call.method if ctx.call else None,
                    "status": status,
                    "outcome": outcome,
                    "code": code,
                    "reason": detail,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )


def _protocol(call: Call) -> Literal["mcp", "a2a", "jsonrpc", "http"]:
    """The transcript's protocol field for ``call``."""
    if call.protocol == "mcp":
        return "mcp"
    if call.protocol == "a2a":
        return "a2a"
    return "jsonrpc" if call.is_jsonrpc else "http"
