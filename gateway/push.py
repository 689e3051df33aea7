"""A2A push notifications, delivered by the gateway (A2A s4.3, s13.2).

When a caller configures a webhook, the A2A dialect hands the upstream a relay
URL of the gateway's (``/push/<relay>``) instead, and remembers where the
notification must go (``BindingStore`` kind ``a2a-push``). The upstream agent
then POSTs its notification to the gateway like any caller:

1. the request is admitted like every other one: limits, the upstream's own
   mTLS identity, its RFC 9421 signature, freshness and a one-time nonce
   (``Authorization`` here is the webhook's credential, not a gateway token);
2. the relay id must exist and belong to the upstream that was given it (any
   other sender, or an unknown id, is 404);
3. the notification is recorded in the caller's conversation and audited;
4. :class:`WebhookDelivery` sends it: the URL is checked again (HTTPS,
   allow-listed host, no IP literal outside public space); the host name is
   resolved once and **every** resolved address must be public (or in an
   operator-trusted network) before the connection is made to exactly those
   addresses (no second lookup, so DNS rebinding between check and connect is
   impossible); redirects are never followed (a 3xx is a failed delivery); the
   request carries the gateway's RFC 9421 signature over ``@method``,
   ``@target-uri``, ``@authority``, ``content-digest`` and ``baton-caller``
   (the upstream that sent it), with a fresh nonce, so the receiver can verify
   it with the gateway's public JWKS alone.

The upstream learns 200 when the webhook answered 2xx and 502 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, Final

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from adapters.a2a import task_ids_in_event
from gateway.proxy import Gateway, Timer
from keys.errors import KeysError
from keys.httpsig import HttpRequest, content_digest, sign
from keys.material import PrivateKey
from keys.strictjson import loads_object
from protocol.errors import BadGateway, BatonError, NotFound, UnsafeWebhook
from protocol.webhooks import check_resolved_address, check_webhook_url

__all__ = ["PushRelay", "WebhookDelivery"]

#: Headers of the upstream's notification that reach the webhook; nothing else does.
_RELAYED: Final = ("content-type", "authorization", "x-a2a-notification-token", "a2a-version")
_COMPONENTS: Final = ("@method", "@target-uri", "@authority", "content-digest", "baton-caller")

Network = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class RelayTarget:
    """Where one relay id delivers: the caller's webhook, for the caller, from the upstream."""

    url: str
    caller: str
    upstream: str


class _CheckedResolver(AbstractResolver):
    """Resolve once and return only the addresses that pass the connect-time check."""

    def __init__(self, trusted: Collection[Network]) -> None:
        self._trusted = trusted

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise UnsafeWebhook(f"webhook host {host!r} does not resolve: {exc}") from exc
        results: list[ResolveResult] = []
        for family_, _, proto, _, address in infos:
            ip = str(address[0])
            check_resolved_address(ip, trusted_networks=self._trusted)  # every one must pass
            results.append(
                {
                    "hostname": host,
                    "host": ip,
                    "port": port,
                    "family": family_,
                    "proto": proto,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        if not results:
            raise UnsafeWebhook(f"webhook host {host!r} resolved to nothing")
        return results

    async def close(self) -> None:
        return None


class WebhookDelivery:
    """Signed, checked, redirect-free delivery of notifications to webhooks."""

    def __init__(
        self,
        *,
        signing_key: PrivateKey,
        trusted_networks: Collection[str] = (),
        ca_file: str | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        token: Callable[[int], str] = secrets.token_urlsafe,
    ) -> None:
        self._key = signing_key
        self._trusted = tuple(ip_network(net) for net in trusted_networks)
        self._clock = clock
        self._token = token
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if ca_file is not None:
            context.load_verify_locations(cafile=ca_file)
        self._tls = context
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                ssl=self._tls, resolver=_CheckedResolver(self._trusted), use_dns_cache=False
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(
        self,
        url: str,
        *,
        allowed_hosts: Collection[str],
        body: bytes,
        headers: list[tuple[str, str]],
        sender: str,
    ) -> int:
        """POST ``body`` to ``url``; return the webhook's status. Raises
        :class:`UnsafeWebhook` when the destination fails a check and
        :class:`BadGateway` when it cannot be reached."""
        target = check_webhook_url(url, allowed_hosts=allowed_hosts, trusted_networks=self._trusted)
        fields = [*headers, ("baton-caller", sender), ("content-digest", content_digest(body))]
        signature_input, signature = sign(
            HttpRequest("POST", target.url, fields),
            self._key,
            components=_COMPONENTS,
            created=int(self._clock()),
            nonce=self._token(16),
        )
        fields += [("signature-input", signature_input), ("signature", signature)]
        try:
            async with self._client().post(
                target.url, data=body, headers=fields, allow_redirects=False
            ) as response:
                await response.read()
                return response.status
        except UnsafeWebhook:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, UnsafeWebhook) else None
            if cause is not None:
                raise cause from exc
            raise BadGateway(f"webhook {target.host}: {type(exc).__name__}: {exc}") from exc


class PushRelay:
    """``POST /push/<relay>``: the upstream's notification on its way to the caller's webhook."""

    def __init__(self, gateway: Gateway, delivery: WebhookDelivery) -> None:
        self._gateway = gateway
        self._delivery = delivery
        config = gateway.runtime.config
        self._webhook_hosts = {u.name: tuple(u.webhook_hosts) for u in config.upstreams}

    async def _target(self, relay: str, now: float) -> RelayTarget:
        stored = None
        if 1 <= len(relay) <= 64:
            stored = await self._gateway.stores.bindings.owner("a2a-push", relay, now=now)
        if stored is None:
            raise NotFound("unknown push relay id")
        try:
            value: dict[str, Any] = loads_object(stored.encode())
            return RelayTarget(str(value["url"]), str(value["caller"]), str(value["upstream"]))
        except (KeysError, KeyError) as exc:
            raise BadGateway("push relay record unreadable") from exc

    async def handle(self, request: web.Request) -> web.StreamResponse:
        gateway = self._gateway
        ctx = gateway.context(request)
        timer = Timer(gateway.metrics)
        try:
            agent, body, verified, now = await gateway.admit(request, ctx, timer, bearer=False)
            target = await self._target(request.match_info.get("relay", ""), now)
            upstream = gateway.upstreams.get(target.upstream)
            if upstream is None or upstream.identity != agent.identity:
                raise NotFound(f"{agent.identity} used a relay id given to another upstream")
            ctx.upstream = upstream.name
            _, context_id = task_ids_in_event(body, max_depth=64) if body else (None, None)
            await gateway.recorder.entry(
                body or None,
                conversation=f"a2a:{context_id}" if context_id else f"push:{upstream.name}",
                ts=int(now * 1000),
                sender=agent.identity,
                to=target.caller,
                protocol="a2a",
                kind="notification",
                method="push",
                body_digest=ctx.body_digest,
                body_size=len(body),
                signer=verified.keyid if verified else None,
                verified=verified is not None,
            )
            await gateway.audit(
                ctx, now, event="push.accepted", outcome="accepted", reason=None,
                detail=f"{upstream.name} -> webhook of {target.caller}",
            )  # fmt: skip
            relayed = [
                (name, request.headers[name]) for name in _RELAYED if name in request.headers
            ]
            status = await self._delivery.deliver(
                target.url,
                allowed_hosts=self._webhook_hosts.get(upstream.name, ()),
                body=body,
                headers=relayed,
                sender=agent.identity,
            )
            timer.lap("upstream")
            if not 200 <= status < 300:
                raise BadGateway(f"webhook answered {status}")
        except BatonError as exc:
            return await gateway.reject(ctx, exc)
        gateway.finish(ctx, 200, "accepted", "ok")
        return web.Response(status=200, body=json.dumps({}), content_type="application/json")
