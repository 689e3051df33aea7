"""aiohttp application factories: the data plane and the admin listener.

Routes of the data plane::

    /u/<upstream>/<path>          every method: the pipeline of gateway/proxy.py
    /.well-known/jwks.json        the gateway's public signing keys

Routes of the admin listener (loopback by default)::

    /healthz    the process is serving
    /readyz     the store answers (503 otherwise, so a balancer drains this instance)
    /metrics    Prometheus exposition
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from gateway.inbox import Inbox
from gateway.metrics import CONTENT_TYPE_LATEST, Metrics
from gateway.proxy import ALL_STAGES, Gateway
from gateway.push import PushRelay, WebhookDelivery
from gateway.runtime import Runtime
from gateway.stores import Stores
from gateway.tls import upstream_context
from gateway.upstream import Upstream
from keys.keyset import KeySet
from protocol.errors import StoreUnavailable

__all__ = ["GATEWAY", "AppOptions", "admin_app", "gateway_app"]

GATEWAY: Final = web.AppKey("gateway", Gateway)
PUSH: Final = web.AppKey("push", PushRelay)
INBOX: Final = web.AppKey("inbox", Inbox)
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
    app = web.Application(client_max_size=limits.max_body_bytes)
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
        app[INBOX] = Inbox(
            gateway,
            stores.inbox,
            queues={queue.name: queue for queue in runtime.config.queues},
            recipients={name: tuple(keys) for name, keys in runtime.queue_keys.items()},
        )
        yield
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
    return app


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
