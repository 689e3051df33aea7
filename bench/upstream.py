"""The benchmark's upstream: a minimal aiohttp JSON-RPC server over mutual TLS.

Run by ``bench/bench_gateway.py`` in its own process::

    python bench/upstream.py --port P --ca CA.pem --cert tls.pem --key tls.key

It holds the ``billing`` agent's certificate (the gateway pins that SPIFFE
ID), requires a client certificate from the dev CA (the gateway presents its
own; the load generator presents the ``support`` agent's in the "direct"
row), and answers every request with
``{"jsonrpc": "2.0", "id": <the request's id>, "result": {...}}``. It prints
``READY <port>`` once listening and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl

from aiohttp import web

_RESULT = {"content": [{"type": "text", "text": "refund A-000123: 42.50 EUR, settled"}]}


async def _handle(request: web.Request) -> web.Response:
    body = await request.read()
    rpc_id = None
    if body:
        try:
            message = json.loads(body)
        except ValueError:
            message = None
        if isinstance(message, dict):
            rpc_id = message.get("id")
    answer = {"jsonrpc": "2.0", "id": rpc_id, "result": _RESULT}
    return web.Response(body=json.dumps(answer).encode(), content_type="application/json")


def _context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=ca)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def _serve(args: argparse.Namespace) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _handle)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=300)
    await runner.setup()
    context = _context(args.ca, args.cert, args.key)
    site = web.TCPSite(runner, "127.0.0.1", args.port, ssl_context=context, backlog=1024)
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
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
