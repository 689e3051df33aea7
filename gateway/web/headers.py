"""Security headers for every answer of the operator listener, and the
Origin and CSRF checks of the web inbox (ADR 0015).

* :func:`install` adds :data:`SECURITY_HEADERS` to every response the
  operator app prepares (``on_response_prepare``: handlers' answers, streams,
  and the errors below alike) and ``Cache-Control: no-store`` to every answer
  that did not choose its own (only the static shell and files do);
* its middleware turns aiohttp's own HTTP errors (unknown route 404, wrong
  method 405, body over ``client_max_size`` 413) and unexpected exceptions
  (500, logged, reason never sent) into the one error shape
  ``{"error": {"code", "message", "retryable"}}``;
* :func:`check_origin`: a state-changing request must carry an ``Origin``
  equal to one of the listener's own origins (the Fetch standard sends it on
  every POST), else :class:`~protocol.errors.OriginRejected`;
* :func:`check_csrf`: the ``X-Baton-CSRF`` header must equal the session's
  CSRF token, else :class:`~protocol.errors.CsrfFailed`;
* :func:`check_host`: ``Host`` must be the authority of one of the listener's
  origins, else :class:`~protocol.errors.MisdirectedRequest` (421): a page a
  rebound DNS name (P06) points at this listener is never served.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web

from gateway.config import BatonConfig, split_host_port
from protocol.errors import (
    BatonError,
    CsrfFailed,
    InvalidRequest,
    MethodNotAllowed,
    MisdirectedRequest,
    NotFound,
    OriginRejected,
    PayloadTooLarge,
    Unavailable,
)

__all__ = [
    "CSRF_HEADER",
    "SECURITY_HEADERS",
    "Handler",
    "check_csrf",
    "check_host",
    "check_origin",
    "error_response",
    "install",
    "listener_hosts",
    "listener_origins",
]

log = logging.getLogger("baton.web")

CSRF_HEADER: Final = "X-Baton-CSRF"
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
_HTTP_ERRORS: Final[dict[int, type[BatonError]]] = {
    400: InvalidRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    503: Unavailable,
}


def error_response(error: BatonError) -> web.Response:
    """``{"error": {code, message, retryable}}`` with the error's status (and
    ``Retry-After`` when it has one). The internal detail is never sent."""
    response = web.Response(
        status=error.http_status,
        body=json.dumps({"error": error.public()}, separators=(",", ":")),
        content_type="application/json",
    )
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return response


async def _add_headers(_request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    response.headers.setdefault("Cache-Control", "no-store")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = _HTTP_ERRORS.get(exc.status, BatonError)(f"http {exc.status}: {exc.reason}")
        if exc.status not in _HTTP_ERRORS:
            log.warning("http error", extra={"status": exc.status, "path": request.path})
        return error_response(error)
    except BatonError as exc:
        return error_response(exc)
    except Exception:  # a bug: fail closed, never send the reason
        log.exception("internal error on the operator listener", extra={"path": request.path})
        return error_response(BatonError("unexpected exception"))


def install(app: web.Application) -> None:
    """Headers on every answer of ``app`` and one error shape (module docstring)."""
    app.middlewares.append(_errors)
    app.on_response_prepare.append(_add_headers)


def listener_origins(config: BatonConfig) -> frozenset[str]:
    """The origins the web inbox is served at: ``inbox.origins``, or
    ``https://`` + ``gateway.operator_listen`` (plus ``localhost`` for a
    loopback address)."""
    if config.inbox.origins:
        return frozenset(config.inbox.origins)
    if not config.gateway.operator_listen:
        return frozenset()
    host, port = split_host_port(config.gateway.operator_listen)
    shown = f"[{host}]" if ":" in host else host
    origins = {f"https://{shown.lower()}:{port}"}
    if host in ("127.0.0.1", "::1", "localhost") or host.startswith("127."):
        origins.add(f"https://localhost:{port}")
        origins.add(f"https://127.0.0.1:{port}")
    if port == 443:
        origins |= {origin.removesuffix(":443") for origin in origins}
    return frozenset(origins)


def listener_hosts(origins: Collection[str]) -> frozenset[str]:
    """The ``Host`` values (RFC 9110 s7.2) that name ``origins``: each origin's
    authority, with and without an explicit ``:443`` for the default port."""
    hosts = set()
    for origin in origins:
        parts = urlsplit(origin.lower())
        if parts.hostname is None:
            continue
        shown = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        port = parts.port or 443
        hosts.add(f"{shown}:{port}")
        if port == 443:
            hosts.add(shown)
    return frozenset(hosts)


def check_host(request: web.Request, allowed: Collection[str]) -> None:
    """:class:`MisdirectedRequest` unless there is one ``Host`` and it is in ``allowed``."""
    hosts = request.headers.getall("Host", [])
    if len(hosts) != 1:
        raise MisdirectedRequest(f"{len(hosts)} Host fields")
    if hosts[0].lower() not in allowed:
        raise MisdirectedRequest(f"Host {hosts[0][:200]!r} is not this listener's")


def check_origin(request: web.Request, allowed: Collection[str]) -> None:
    """:class:`OriginRejected` unless ``Origin`` is one of ``allowed``."""
    origin = request.headers.get("Origin")
    if origin is None:
        raise OriginRejected("no Origin header on a state-changing request")
    if origin.lower() not in allowed:
        raise OriginRejected(f"Origin {origin[:200]!r} is not this listener's")


def check_csrf(matches: Callable[[str | None], bool], request: web.Request) -> None:
    """:class:`CsrfFailed` unless the ``X-Baton-CSRF`` header passes ``matches``."""
    if not matches(request.headers.get(CSRF_HEADER)):
        raise CsrfFailed("missing or wrong X-Baton-CSRF header")
