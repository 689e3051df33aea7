"""The data-plane baseline: a passthrough reverse proxy with Baton's transport, nothing else.

Run by ``bench/bench_gateway.py`` in its own process::

    python bench/bare_proxy.py --port P --upstream https://127.0.0.1:U --identity SPIFFE-ID \\
        --ca CA.pem --cert gateway.pem --key gateway.key

Same transport as ``baton serve`` so that the ratio to it isolates the
security stages:

* listener: :func:`gateway.tls.server_context` (TLS 1.3, client certificate
  from the dev CA required), the same ``AppRunner`` options as
  ``gateway/serve.py`` (no access log, same keep-alive and parser caps,
  backlog 1024) and the same ``client_max_size``;
* upstream: :func:`gateway.tls.upstream_context` (TLS 1.3, the gateway's
  client certificate, the upstream's SPIFFE ID pinned in the handshake) and
  one pooled ``aiohttp.ClientSession`` built like ``gateway/upstream.py``'s;
* routing: ``/u/<name>/<tail>`` goes to ``<upstream>/<tail>``, like Baton.

Per request it reads the body, forwards method, path, query, end-to-end
headers and body, reads the whole answer and returns status, end-to-end
headers and body. No authentication beyond the handshake, no signatures, no
replay check, no policy, no recording. Prints ``READY <port>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.config import LimitsConfig
from gateway.tls import server_context, upstream_context

_HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "host", "content-length",
    }
)  # fmt: skip
SESSION = web.AppKey("session", aiohttp.ClientSession)


def build_app(upstream_url: str, context: ssl.SSLContext) -> web.Application:
    limits = LimitsConfig()
    app = web.Application(client_max_size=limits.max_body_bytes)
    base = upstream_url.rstrip("/")

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(
            ssl=context,
            limit=100,
            keepalive_timeout=30,
            enable_cleanup_closed=True,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=30),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        app[SESSION] = session
        yield
        await session.close()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        url = f"{base}/{request.match_info.get('tail', '')}"
        if request.query_string:
            url += "?" + request.query_string
        headers = [
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _HOP_BY_HOP
        ]
        async with request.app[SESSION].request(
            request.method, url, headers=headers, data=body or None, allow_redirects=False
        ) as response:
            data = await response.read()
            out: CIMultiDict[str] = CIMultiDict(
                (name, value)
                for name, value in response.headers.items()
                if name.lower() not in _HOP_BY_HOP
            )
            return web.Response(status=response.status, headers=out, body=data)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_route("*", "/u/{upstream}/{tail:.*}", handle)
    return app


async def _serve(args: argparse.Namespace) -> None:
    limits = LimitsConfig()
    context = upstream_context(
        expected_identity=args.identity,
        cert_file=Path(args.cert),
        key_file=Path(args.key),
        ca_file=Path(args.ca),
    )
    runner = web.AppRunner(
        build_app(args.upstream, context),
        access_log=None,
        shutdown_timeout=5,
        keepalive_timeout=limits.idle_timeout_s,
        max_field_size=limits.max_header_bytes * 2,
        max_line_size=limits.max_header_bytes * 2,
        max_headers=limits.max_headers * 2,
    )
    await runner.setup()
    tls = server_context(cert_file=Path(args.cert), key_file=Path(args.key), ca_file=Path(args.ca))
    site = web.TCPSite(runner, "127.0.0.1", args.port, ssl_context=tls, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await site.start()
        print(f"READY {args.port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="https://HOST:PORT")
    parser.add_argument("--identity", required=True, help="the upstream's SPIFFE ID (pinned)")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True, help="the gateway's certificate")
    parser.add_argument("--key", required=True)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
