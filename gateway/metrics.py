"""Prometheus metrics for the data plane (served on the admin listener).

Every pipeline stage is timed (``baton_stage_seconds{stage}``), every request
counted by outcome and stable error code, upstream failures counted by kind,
and each upstream's circuit-breaker state exported as a gauge. With
``--workers N`` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before the
workers start, and :func:`render` aggregates all workers (prometheus-client's
multiprocess mode).
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE_LATEST", "STAGES", "Metrics"]

#: Pipeline stages, in order (issue: "each step observable in metrics").
STAGES: Final = (
    "limits",
    "authenticate",
    "signature",
    "replay",
    "policy",
    "rate_limit",
    "record",
    "upstream",
    "respond",
)
_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BREAKER_STATES: Final = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    """The gateway's collectors, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "baton_requests",
            "Requests by outcome and stable code.",
            ["outcome", "code"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "baton_stage_seconds",
            "Time spent in each pipeline stage.",
            ["stage"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "baton_request_seconds",
            "Whole-request latency at the gateway.",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "baton_upstream_errors",
            "Upstream failures by upstream and kind.",
            ["upstream", "kind"],
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "baton_circuit_breaker_state",
            "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
            ["upstream"],
            multiprocess_mode="max",
            registry=self.registry,
        )
        self.stream_events = Counter(
            "baton_stream_events",
            "Server-sent events relayed and recorded.",
            ["upstream"],
            registry=self.registry,
        )
        # Children for the hot path, created once.
        self.stage = {name: self.stage_seconds.labels(name) for name in STAGES}

    def render(self) -> bytes:
        """The exposition text, aggregated over workers in multiprocess mode."""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
