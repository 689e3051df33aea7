"""The benchmark's upstream: a minimal aiohttp JSON-RPC server over mutual TLS.

Run by ``bench/bench_gateway.py`` in its own process::

    python bench/upstream.py --port P --ca CA.pem --cert tls.pem --key tls.key

It holds the ``billing`` agent's certificate (the gateway pins that SPIFFE
ID), requires a client certificate from the dev CA (the gateway presents its
own; the load generator presents the ``support`` agent's in the "direct"
row), and answers every request with ``{"jsonrpc": "2.0", "id": <the
request's id>, "result": ...}``, the result shaped by the protocol the
request's headers name (the gateway and the bare proxy forward them):

* ``Mcp-Method`` present (an MCP 2026-07-28 ``tools/call`` of the ``echo``
  tool): a ``CallToolResult`` as the MCP SDK writes it, ``{"content": [{"type":
  "text", "text": <arguments.text>}], "isError": false, "resultType":
  "complete"}``;
* ``A2A-Version`` present (an A2A v1.0 JSON-RPC ``SendMessage``): a completed
  ``Task`` (``{"task": {...}}``, the SDK's proto JSON) with a task id and a
  context id unique to this request, so that the gateway binds a new task to
  its caller on every answer;
* otherwise (the generic JSON-RPC workload): a fixed ``tools/call`` result.

Per request it parses the small body once and writes one small JSON answer,
so its CPU stays well below the gateway's. It prints ``READY <port>`` once
listening and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import secrets
import signal
import ssl
from typing import Any

from aiohttp import web

_RESULT = {"content": [{"type": "text", "text": "refund A-000123: 42.50 EUR, settled"}]}
#: Task and context ids: unique per answer, and per upstream process (the prefix).
_PREFIX = secrets.token_hex(4)
_SERIAL = itertools.count()


def _mcp_result(message: dict[str, Any]) -> dict[str, Any]:
    """The ``echo`` tool's ``CallToolResult`` (MCP 2026-07-28 ``resultType`` included)."""
    try:
        text = message["params"]["arguments"]["text"]
    except (KeyError, TypeError):
        text = ""
    return {"content": [{"type": "text", "text": text}], "isError": False, "resultType": "complete"}


def _a2a_result(message: dict[str, Any]) -> dict[str, Any]:
    """A ``SendMessageResponse`` holding a completed ``Task`` with fresh task and context ids."""
    try:
        text = message["params"]["message"]["parts"][0]["text"]
    except (KeyError, IndexError, TypeError):
        text = ""
    serial = next(_SERIAL)
    return {
        "task": {
            "id": f"task-{_PREFIX}-{serial}",
            "contextId": f"ctx-{_PREFIX}-{serial}",
            "status": {"state": "TASK_STATE_COMPLETED"},
            "artifacts": [{"artifactId": f"art-{serial}", "parts": [{"text": text}]}],
        }
    }


async def _handle(request: web.Request) -> web.Response:
    body = await request.read()
    message: Any = None
    if body:
        try:
            message = json.loads(body)
        except ValueError:
            message = None
    if not isinstance(message, dict):
        message = {}
    headers = request.headers
    if "mcp-method" in headers:
        result = _mcp_result(message)
    elif "a2a-version" in headers:
        result = _a2a_result(message)
    else:
        result = _RESULT
    answer = {"jsonrpc": "2.0", "id": message.get("id"), "result": result}
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
