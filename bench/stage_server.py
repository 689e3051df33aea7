"""One rung of the benchmark ladder: Baton's data plane with a chosen set of stages.

Run by ``bench/bench_gateway.py`` in its own process::

    python bench/stage_server.py --config DIR/baton.toml --root HOME --stages signature,replay

It serves ``gateway_app(runtime, metrics, AppOptions(stages=...))`` through
``gateway.serve.serve_runtime``, the function a ``baton serve`` worker runs
(same listener, TLS context, ``AppRunner`` options, admin listener with
``/metrics`` and ``/readyz``, garbage-collector freeze, graceful stop on
SIGTERM or SIGINT), with logs at WARNING. ``--stages`` is a comma-separated
subset of ``gateway.proxy.ALL_STAGES`` (empty: mutual TLS authentication and
forwarding only; ``all``: the full pipeline). With ``--reuse-port`` several
copies can share the port, like ``--workers N``.

For commits older than ``serve_runtime`` (``bench_gateway.py --source``), an
equivalent of that function is used.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from gateway.app import AppOptions, admin_app, gateway_app
from gateway.config import load, split_host_port
from gateway.logs import configure
from gateway.metrics import Metrics
from gateway.proxy import ALL_STAGES
from gateway.runtime import Runtime, load_runtime
from gateway.tls import server_context


def parse_stages(text: str) -> frozenset[str]:
    if text == "all":
        return ALL_STAGES
    stages = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = stages - ALL_STAGES
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)}; known: {sorted(ALL_STAGES)}")
    return stages


async def _serve_runtime(runtime: Runtime, *, reuse_port: bool, options: AppOptions) -> None:
    """``gateway.serve.serve_runtime`` as of commit 9d3df3a, for older commits."""
    config = runtime.config
    limits = config.limits
    metrics = Metrics()
    app = gateway_app(runtime, metrics, options)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=config.gateway.drain_timeout_s,
        keepalive_timeout=limits.idle_timeout_s,
        max_field_size=limits.max_header_bytes * 2,
        max_line_size=limits.max_header_bytes * 2,
        max_headers=limits.max_headers * 2,
    )
    admin_runner = web.AppRunner(admin_app(app, metrics), access_log=None, shutdown_timeout=5)
    await runner.setup()
    await admin_runner.setup()
    gc.collect()
    gc.freeze()
    host, port = split_host_port(config.gateway.listen)
    admin_host, admin_port = split_host_port(config.gateway.admin_listen)
    tls = server_context(
        cert_file=runtime.cert_file,
        key_file=runtime.key_file,
        ca_file=runtime.ca_file,
        require_client_cert=config.gateway.client_auth == "required",
    )
    site = web.TCPSite(
        runner, host, port, ssl_context=tls, backlog=1024, reuse_port=reuse_port or None
    )
    admin_site = web.TCPSite(admin_runner, admin_host, admin_port, reuse_port=reuse_port or None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await site.start()
        await admin_site.start()
        await stop.wait()
    finally:
        await admin_runner.cleanup()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="a baton.toml")
    parser.add_argument("--root", required=True, help="the folder holding .baton/")
    parser.add_argument("--stages", default="all", help="comma-separated, empty, or 'all'")
    parser.add_argument("--reuse-port", action="store_true")
    args = parser.parse_args()
    configure("warning")
    runtime = load_runtime(load(Path(args.config)), Path(args.root))
    options = AppOptions(stages=parse_stages(args.stages))
    try:
        from gateway.serve import serve_runtime
    except ImportError:
        serve = _serve_runtime(runtime, reuse_port=args.reuse_port, options=options)
    else:
        serve = serve_runtime(runtime, reuse_port=args.reuse_port, options=options)
    asyncio.run(serve)


if __name__ == "__main__":
    main()
