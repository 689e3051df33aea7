"""``baton serve``: one worker in this process, or N workers sharing the port.

With ``--workers N`` (N > 1) a supervisor starts N worker processes that each
bind the listener and the admin port with ``SO_REUSEPORT``, so the kernel
spreads connections across them; each worker opens its own store connections
(SQLite connections must never cross a fork). The supervisor sets
``PROMETHEUS_MULTIPROC_DIR`` so ``/metrics`` aggregates every worker.

Shutdown (SIGTERM or SIGINT) is graceful: listeners close first, then
in-flight requests get ``gateway.drain_timeout_s`` to finish, then stores
and upstream pools close. A worker that dies makes the supervisor stop the
others and exit non-zero (a process manager restarts the whole unit).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from gateway.app import (
    AppOptions,
    admin_app,
    capped_site,
    gateway_app,
    operator_app,
    parser_limits,
)
from gateway.config import load, split_host_port
from gateway.metrics import Metrics
from gateway.runtime import Runtime, load_runtime
from gateway.tls import operator_context, server_context

__all__ = ["run", "serve_runtime", "serve_worker"]

log = logging.getLogger("baton.serve")


async def serve_runtime(
    runtime: Runtime, *, reuse_port: bool, options: AppOptions | None = None
) -> None:
    """Serve ``runtime`` (data plane and admin listener) until SIGTERM/SIGINT, then drain."""
    config = runtime.config
    limits = config.limits
    metrics = Metrics()
    app = gateway_app(runtime, metrics, options or AppOptions())
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=config.gateway.drain_timeout_s,
        keepalive_timeout=limits.idle_timeout_s,
        **parser_limits(limits),
    )
    admin_runner = web.AppRunner(admin_app(app, metrics), access_log=None, shutdown_timeout=5)
    operator_runner = (
        web.AppRunner(operator_app(app), access_log=None, shutdown_timeout=5)
        if config.gateway.operator_listen and config.queues
        else None
    )
    await runner.setup()
    await admin_runner.setup()
    if operator_runner is not None:
        await operator_runner.setup()
    # Everything loaded so far (keys, config, modules) lives as long as the
    # process: move it out of the collector's sight, so full collections walk
    # only per-request garbage and stay short (tail latency).
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
    site = capped_site(
        runner, host, port, limits=limits, ssl_context=tls, metrics=metrics,
        reuse_port=reuse_port or None,
    )  # fmt: skip
    admin_site = web.TCPSite(admin_runner, admin_host, admin_port, reuse_port=reuse_port or None)
    operator_site = None
    if operator_runner is not None:
        operator_host, operator_port = split_host_port(config.gateway.operator_listen)
        operator_site = capped_site(
            operator_runner, operator_host, operator_port, limits=limits,
            ssl_context=operator_context(cert_file=runtime.cert_file, key_file=runtime.key_file),
            metrics=metrics, backlog=128, reuse_port=reuse_port or None,
        )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await site.start()
        await admin_site.start()
        if operator_site is not None:
            await operator_site.start()
        log.info(
            "listening",
            extra={"listen": config.gateway.listen, "admin": config.gateway.admin_listen,
                   "pid": os.getpid(), "identity": runtime.identity},
        )  # fmt: skip
        await stop.wait()
        log.info("draining", extra={"pid": os.getpid()})
    finally:
        if operator_runner is not None:
            await operator_runner.cleanup()
        await admin_runner.cleanup()
        await runner.cleanup()
    log.info("stopped", extra={"pid": os.getpid()})


def serve_worker(config_path: Path, *, reuse_port: bool) -> None:
    """Run one worker until SIGTERM/SIGINT."""
    runtime = load_runtime(load(config_path), config_path.parent)
    asyncio.run(serve_runtime(runtime, reuse_port=reuse_port))


def _supervise(config_path: Path, workers: int, log_level: str) -> int:
    metrics_dir = tempfile.mkdtemp(prefix="baton-metrics-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    command = [sys.executable, "-m", "gateway.cli", "serve", "--dir", str(config_path.parent),
               "--worker", "--log-level", log_level]  # fmt: skip
    children = [subprocess.Popen(command, env=env) for _ in range(workers)]  # noqa: S603

    stopping: list[int] = []  # the signals forwarded to the workers

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    try:
        while children:
            pid, wait_status = os.wait()
            exited = [child for child in children if child.pid == pid]
            if not exited:
                continue
            children.remove(exited[0])
            exited[0].returncode = code = os.waitstatus_to_exitcode(wait_status)
            # A worker still starting when the stop came has no handler yet and
            # dies of the forwarded signal itself: that is a stop, not a failure.
            stopped = code < 0 and -code in stopping
            if code != 0 and not stopped and status == 0:
                status = 1
                forward(signal.SIGTERM, None)  # one worker failed: stop the unit
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return status


async def _prepare_store(runtime: Runtime) -> None:
    """Open and close the store once: a new SQLite file gets its WAL mode and
    tables here, so workers starting together never race to create them."""
    stores = await runtime.open_stores()
    await stores.close()


def run(config_path: Path, *, workers: int = 1, log_level: str = "info") -> int:
    """Validate everything up front, then serve (see the module docstring)."""
    runtime = load_runtime(load(config_path), config_path.parent)  # fail before forking
    if workers <= 1:
        serve_worker(config_path, reuse_port=False)
        return 0
    if runtime.config.store.kind == "sqlite":
        asyncio.run(_prepare_store(runtime))
    return _supervise(config_path, workers, log_level)
