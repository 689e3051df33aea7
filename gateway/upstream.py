"""Pooled, pinned, bounded connections to one upstream.

* One :class:`aiohttp.ClientSession` per upstream, created at start-up: a
  keep-alive pool over the pinned TLS context of :mod:`gateway.tls`; no
  per-request connection or context setup.
* Timeouts: connect (``connect_timeout_s``) and read (``timeout_s``, between
  bytes, so a long SSE stream that keeps talking stays open).
* :class:`CircuitBreaker`: after ``breaker_failures`` consecutive transport
  failures the upstream is skipped for ``breaker_reset_s`` (503
  ``circuit_open``, nothing sent); then one trial request decides.
* Retries only where a request is idempotent (GET, HEAD, OPTIONS; RFC 9110
  s9.2.2) and only when the failure happened before any response arrived.
  A POST is never retried: the upstream may have acted on it.
* Redirects are never followed; responses are not decompressed (bytes pass
  through as they came).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Final

import aiohttp

from gateway.config import UpstreamConfig
from gateway.metrics import BREAKER_STATES, Metrics
from protocol.errors import BadGateway, CircuitOpen, GatewayTimeout

__all__ = ["IDEMPOTENT_METHODS", "CircuitBreaker", "Upstream"]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


class CircuitBreaker:
    """Closed -> open after N consecutive failures -> half-open after the reset time.

    Times come from ``clock`` (monotonic seconds), injected for tests.
    """

    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float]) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._reset_s:
            return "half_open"
        return "open"

    def before(self) -> None:
        """Raise :class:`CircuitOpen` unless a request may go out now."""
        state = self.state
        if state == "open" or (state == "half_open" and self._trial_running):
            raise CircuitOpen("circuit breaker open")
        if state == "half_open":
            self._trial_running = True

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def failure(self) -> None:
        self._trial_running = False
        self._failures += 1
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = self._clock()


class Upstream:
    """One configured upstream: its pool, breaker and identity."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        identity: str,
        ssl_context: ssl.SSLContext,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.name = config.name
        self.identity = identity
        self.base_url = config.url
        self._metrics = metrics
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset_s, clock)
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._state_gauge = metrics.breaker_state.labels(config.name)
        self._state_gauge.set(0)
        self._published = "closed"

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # created inside the running loop
            connector = aiohttp.TCPConnector(
                ssl=self._ssl,
                limit=self.config.max_connections,
                keepalive_timeout=30,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=self.config.connect_timeout_s,
                    sock_read=self.config.timeout_s,
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            # aiohttp silently resends an idempotent request once when a pooled
            # connection drops (RFC 9112 s9.3.1), with the same bytes: the same
            # signature and nonce. Retries are ours, re-signed per attempt.
            self._session._retry_connection = False
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _publish_state(self) -> None:
        state = self.breaker.state
        if state != self._published:  # a gauge write per request costs more than this check
            self._published = state
            self._state_gauge.set(BREAKER_STATES[state])

    def _failed(self, kind: str) -> None:
        self._metrics.upstream_errors.labels(self.name, kind).inc()
        self.breaker.failure()
        self._publish_state()

    async def send(
        self,
        method: str,
        url: str,
        headers: Callable[[], list[tuple[str, str]]],
        body: bytes,
    ) -> aiohttp.ClientResponse:
        """Send one request; return the response with its body unread.

        ``headers`` is called once per attempt, so each attempt can carry its
        own signature and nonce.

        Raises :class:`CircuitOpen`, :class:`BadGateway` (connection refused,
        TLS or identity failure, reset) or :class:`GatewayTimeout`.
        """
        attempts = 1 + (self.config.retries if method in IDEMPOTENT_METHODS else 0)
        last: Exception | None = None
        for _ in range(attempts):
            self.breaker.before()
            try:
                response = await self.session().request(
                    method, url, headers=headers(), data=body or None, allow_redirects=False
                )
            except TimeoutError as exc:
                self._failed("timeout")
                last = GatewayTimeout(f"{self.name}: no answer in time")
                last.__cause__ = exc
            except aiohttp.ClientSSLError as exc:
                self._failed("tls")
                last = BadGateway(f"{self.name}: TLS or identity check failed: {exc}")
                last.__cause__ = exc
            except (aiohttp.ClientError, OSError) as exc:
                self._failed("connect")
                last = BadGateway(f"{self.name}: {type(exc).__name__}: {exc}")
                last.__cause__ = exc
            else:
                self.breaker.success()
                self._publish_state()
                return response
        if last is None:  # unreachable: attempts >= 1
            raise BadGateway(f"{self.name}: no attempt made")
        raise last
