"""aiohttp application factories: the data plane and the admin listener.

Routes of the data plane::

    /u/<upstream>/<path>          every method: the pipeline of gateway/proxy.py
    /.well-known/jwks.json        the gateway's public signing keys
    /push/<relay>                 push notifications from upstreams (gateway/push.py)
    /a2a/inbox/<queue>            the inbox A2A agent (gateway/inbox.py)

Routes of the operator listener (TLS, no client certificate)::

    /inbox/api    signed operator commands (gateway/operator_api.py)
    /inbox/...    the web inbox (gateway/web/webapp.py; ``inbox.web``, on by default)

Every answer of the operator listener carries the security headers of
``gateway/web/headers.py`` (ADR 0015).

Routes of the admin listener (loopback by default)::

    /healthz    the process is serving
    /readyz     the store answers (503 otherwise, so a balancer drains this instance)
    /metrics    Prometheus exposition
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final, TypedDict

from aiohttp import web

from gateway.config import LimitsConfig
from gateway.connections import CappedSite
from gateway.gate import Gate
from gateway.handoffs import Handoffs
from gateway.inbox import Inbox
from gateway.metrics import CONTENT_TYPE_LATEST, Metrics
from gateway.operator_api import OperatorApi
from gateway.proxy import ALL_STAGES, Gateway
from gateway.push import PushRelay, WebhookDelivery
from gateway.runtime import Runtime
from gateway.stores import Stores
from gateway.tls import upstream_context
from gateway.upstream import Upstream
from gateway.web import headers as web_headers
from gateway.web.headers import Handler
from gateway.web.webapp import mount as mount_web_inbox
from keys.keyset import KeySet
from protocol.errors import BatonError, StoreUnavailable
from protocol.identity import OperatorId

__all__ = [
    "GATEWAY",
    "HANDOFFS",
    "OPERATOR_API",
    "RUNTIME",
    "AppOptions",
    "admin_app",
    "capped_site",
    "gateway_app",
    "operator_app",
    "parser_limits",
]

GATEWAY: Final = web.AppKey("gateway", Gateway)
PUSH: Final = web.AppKey("push", PushRelay)
INBOX: Final = web.AppKey("inbox", Inbox)
HANDOFFS: Final = web.AppKey("handoffs", Handoffs)
OPERATOR_API: Final = web.AppKey("operator_api", OperatorApi)
RUNTIME: Final = web.AppKey("runtime", Runtime)

log = logging.getLogger("baton.gateway")
STORES: Final = web.AppKey("stores", Stores)


@dataclass(frozen=True, slots=True)
class AppOptions:
    """Test and benchmark hooks; production uses the defaults."""

    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    #: Use these stores instead of opening the configured ones (tests).
    stores: Stores | None = None
    #: Pipeline stages to run; fewer only for the benchmark ladder in bench/.
    stages: frozenset[str] = ALL_STAGES
    #: How often lapsed leases return to their queues and due handoffs expire
    #: (0: never; tests call ``Handoffs.sweep(now)`` themselves).
    sweep_interval_s: float = 5.0


async def _sweep(handoffs: Handoffs, clock: Callable[[], float], interval_s: float) -> None:
    """Run :meth:`Handoffs.sweep` every ``interval_s`` until cancelled; a store
    outage is logged and retried at the next tick (expiry fails closed anyway:
    a due handoff can no longer be claimed or decided)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await handoffs.sweep(clock())
        except BatonError as exc:
            log.warning("handoff sweep failed", extra={"reason": exc.diagnostics()})


def _serves(runtime: Runtime) -> dict[str, frozenset[str]]:
    return {
        str(OperatorId(operator.name)): frozenset(operator.queues)
        for operator in runtime.config.operators
    }


def _upstreams(runtime: Runtime, metrics: Metrics, options: AppOptions) -> dict[str, Upstream]:
    upstreams = {}
    for config in runtime.config.upstreams:
        identity = runtime.upstream_identities[config.name]
        context = upstream_context(
            expected_identity=identity,
            cert_file=runtime.cert_file,
            key_file=runtime.key_file,
            ca_file=runtime.ca_file,
        )
        upstreams[config.name] = Upstream(
            config, identity=identity, ssl_context=context, metrics=metrics,
            clock=options.monotonic,
        )  # fmt: skip
    return upstreams


async def _open(runtime: Runtime, options: AppOptions) -> Stores:
    if options.stores is not None:
        return options.stores
    return await runtime.open_stores()


def gateway_app(
    runtime: Runtime, metrics: Metrics, options: AppOptions = AppOptions()
) -> web.Application:
    """The data-plane application. Stores and upstream pools open on start-up."""
    limits = runtime.config.limits

    @web.middleware
    async def admission(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every data-plane route passes the in-flight cap first (X06)."""
        return await request.app[GATEWAY].admitted(request, handler)

    app = web.Application(client_max_size=limits.max_body_bytes, middlewares=[admission])
    app[RUNTIME] = runtime
    published = runtime.signing.public()
    if runtime.card_signing is not None and runtime.card_signing.kid not in published:
        published = published.merged(KeySet([runtime.card_signing.public]))
    jwks = json.dumps(published.to_jwks()).encode()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        stores = await _open(runtime, options)
        upstreams = _upstreams(runtime, metrics, options)
        app[STORES] = stores
        gateway = Gateway(
            runtime, stores, upstreams, metrics, clock=options.clock, stages=options.stages
        )
        app[GATEWAY] = gateway
        settings = runtime.config.gateway
        ca_file = settings.webhook_ca_file
        delivery = WebhookDelivery(
            signing_key=runtime.signing.active,
            trusted_networks=settings.webhook_trusted_networks,
            ca_file=None if ca_file is None else str(runtime.folder.root / ca_file),
            clock=options.clock,
        )
        app[PUSH] = PushRelay(gateway, delivery)
        handoffs = Handoffs(
            gateway,
            stores.inbox,
            queues={queue.name: queue for queue in runtime.config.queues},
            recipients={name: tuple(keys) for name, keys in runtime.queue_keys.items()},
            deciders=runtime.queue_deciders,
        )
        app[HANDOFFS] = handoffs
        app[INBOX] = Inbox(handoffs, delivery=delivery)
        if runtime.approvals:
            gateway.gate = Gate(handoffs)
        app[OPERATOR_API] = OperatorApi(handoffs, serves=_serves(runtime))
        sweeper = (
            asyncio.create_task(_sweep(handoffs, options.clock, options.sweep_interval_s))
            if runtime.config.queues and options.sweep_interval_s > 0
            else None
        )
        yield
        await handoffs.close()
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await delivery.close()
        for upstream in upstreams.values():
            await upstream.close()
        if options.stores is None:
            await stores.close()

    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[GATEWAY].handle(request)

    async def serve_jwks(_request: web.Request) -> web.Response:
        return web.Response(body=jwks, content_type="application/jwk-set+json")

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/.well-known/jwks.json", serve_jwks)
    app.router.add_route("*", "/u/{upstream}/{tail:.*}", handle)
    app.router.add_route("*", "/u/{upstream}", handle)

    async def push(request: web.Request) -> web.StreamResponse:
        return await request.app[PUSH].handle(request)

    app.router.add_post("/push/{relay}", push)

    async def inbox(request: web.Request) -> web.StreamResponse:
        return await request.app[INBOX].handle(request)

    app.router.add_post("/a2a/inbox/{queue}", inbox)

    async def inbox_card(request: web.Request) -> web.Response:
        return request.app[INBOX].card(request)

    app.router.add_get("/a2a/inbox/{queue}/.well-known/agent-card.json", inbox_card)
    return app


def operator_app(gateway: web.Application) -> web.Application:
    """The operator listener of the data-plane app ``gateway``: ``POST /inbox/api``
    (signed operator commands) and, with ``inbox.web``, the web inbox."""
    app = web.Application(client_max_size=256 * 1024)
    web_headers.install(app)

    async def api(request: web.Request) -> web.Response:
        return await gateway[OPERATOR_API].handle(request)

    app.router.add_post("/inbox/api", api)
    runtime = gateway[RUNTIME]
    if runtime.config.inbox.web:
        mount_web_inbox(
            app, runtime, lambda: (gateway[GATEWAY], gateway[HANDOFFS], gateway[OPERATOR_API])
        )
    return app


class ParserLimits(TypedDict):
    """aiohttp's request-parser caps (``web.AppRunner`` keyword arguments)."""

    max_field_size: int
    max_line_size: int
    max_headers: int
    lingering_time: float


def parser_limits(limits: LimitsConfig) -> ParserLimits:
    """``web.AppRunner`` keyword arguments for the data plane: aiohttp's own
    header parser caps, set above Baton's so that Baton's limits stage answers
    first (431 ``headers_too_large``, audited) instead of aiohttp's plain 400."""
    return ParserLimits(
        max_field_size=limits.max_header_bytes * 2,
        max_line_size=limits.max_header_bytes * 2,
        max_headers=limits.max_headers * 2,
        # A body left unread (a 413, a 408 at the body deadline, any refusal
        # before the body) closes the connection instead of being drained for
        # aiohttp's default 10 s, which a slow client could hold open (X05).
        lingering_time=0.0,
    )


def admin_app(gateway: web.Application, metrics: Metrics) -> web.Application:
    """Health, readiness and metrics for the data-plane app ``gateway``."""
    app = web.Application()

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        stores = gateway.get(STORES)
        if stores is None:
            return web.json_response({"status": "starting"}, status=503)
        try:
            await stores.ping()
        except StoreUnavailable:
            return web.json_response({"status": "store unavailable"}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics_page(_request: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


def capped_site(
    runner: web.BaseRunner,
    host: str,
    port: int,
    *,
    limits: LimitsConfig,
    ssl_context: ssl.SSLContext | None,
    metrics: Metrics | None = None,
    backlog: int = 1024,
    reuse_port: bool | None = None,
) -> CappedSite:
    """A listener for ``runner`` with ``[limits]``' per-address connection cap
    and TLS handshake deadline (X05, gateway/connections.py); each refusal is
    counted as ``baton_requests{outcome="rejected",code="too_many_connections"}``."""
    counter = (
        None
        if metrics is None
        else metrics.requests.labels(outcome="rejected", code="too_many_connections")
    )
    return CappedSite(
        runner,
        host,
        port,
        per_address=limits.max_connections_per_address,
        ssl_context=ssl_context,
        backlog=backlog,
        reuse_port=reuse_port,
        handshake_timeout_s=limits.tls_handshake_timeout_s,
        refused=(lambda: None) if counter is None else counter.inc,
    )
