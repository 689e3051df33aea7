"""What both parts of ``baton demo`` share: output, checks, sockets, TLS and signing.

``gateway/demo.py`` (the signed hop and the attacks) and
``gateway/demo_handoff.py`` (the approval-gated refund) build on these:

* :func:`expect` turns a claim the demo prints into a check: a step that does
  not behave as printed raises :class:`DemoFailed` (``baton`` prints the
  reason and exits 1);
* agents sign with :func:`sign_request` (RFC 9421 over :data:`SIGNED`, a fresh
  nonce each time) and call over TLS 1.3 with their own certificate
  (:func:`client_context`);
* sample upstreams admit a request only through :func:`check_gateway_request`:
  the TLS client certificate is the gateway's, its RFC 9421 signature
  verifies with the gateway's published keys over :data:`UPSTREAM_POLICY`,
  and it is fresh; only then is the ``Baton-Caller`` it covers believed.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from typing import Final, TextIO

import aiohttp
from aiohttp import web

from gateway.devdata import AgentMaterial, DataFolder
from keys.b64 import b64url_encode
from keys.errors import KeysError
from keys.httpsig import HttpRequest, SignaturePolicy, content_digest, sign, verify
from keys.keyset import KeySet
from keys.strictjson import loads_object
from keys.x509 import TrustAnchors, peer_identity
from protocol.errors import InvalidRequest, translating
from protocol.replay import FreshnessPolicy, check_freshness

__all__ = [
    "SIGNED",
    "UPSTREAM_POLICY",
    "Answer",
    "DemoFailed",
    "FromGateway",
    "Printer",
    "Sent",
    "check_gateway_request",
    "client_context",
    "expect",
    "listening_socket",
    "port_of",
    "post",
    "quiet_logs",
    "sign_request",
    "start_site",
]

#: What agents cover with their signature (the gateway requires the first four).
SIGNED: Final = ("@method", "@target-uri", "@authority", "content-digest", "baton-conversation")
#: What a sample upstream demands of the gateway's signature on every forwarded request.
UPSTREAM_POLICY: Final = SignaturePolicy(
    required_components=frozenset(
        {"@method", "@target-uri", "@authority", "baton-caller", "content-digest"}
    )
)


class DemoFailed(Exception):
    """A step of the demo did not behave as shown (``baton`` prints it, exits 1)."""


def expect(condition: bool, failure: str) -> None:
    """Raise :class:`DemoFailed` with ``failure`` unless ``condition``."""
    if not condition:
        raise DemoFailed(f"demo: {failure}")


class Printer:
    """Numbered lines, like the steps of a walkthrough; one numbering per run."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.step = 0

    def say(self, text: str = "") -> None:
        print(text, file=self.out)

    def ok(self, text: str) -> None:
        self.step += 1
        self.say(f"{self.step:>2}. {text}")


@contextmanager
def quiet_logs() -> Iterator[None]:
    """Only warnings from the gateway and aiohttp, so the demo's lines stay readable."""
    loggers = [logging.getLogger(name) for name in ("baton", "baton.gateway", "aiohttp")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def listening_socket() -> socket.socket:
    """A socket on a free loopback port, bound now so no other process can take the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


async def start_site(
    app: web.Application, sock: socket.socket, context: ssl.SSLContext, running: AsyncExitStack
) -> None:
    """Serve ``app`` over TLS on ``sock`` until ``running`` closes."""
    runner = web.AppRunner(app, access_log=None)
    running.push_async_callback(runner.cleanup)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=context).start()


def client_context(folder: DataFolder, agent: AgentMaterial | None) -> ssl.SSLContext:
    """TLS 1.3, trusting the dev CA; with ``agent``'s certificate unless None."""
    context = ssl.create_default_context(cafile=str(folder.ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if agent is not None:
        tls = folder.agent(agent.name)
        context.load_cert_chain(str(tls / "tls.pem"), str(tls / "tls.key"))
    return context


# ------------------------------------------------------------------ agents
@dataclass(frozen=True, slots=True)
class Sent:
    """One request as an agent put it on the wire."""

    headers: list[tuple[str, str]]
    body: bytes
    nonce: str


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def code(self) -> str:
        """The stable error code of a gateway refusal (``-`` if there is none)."""
        try:
            error = loads_object(self.body).get("error")
        except KeysError:
            return "-"
        data = error.get("data") if isinstance(error, dict) else None
        return str(data.get("code", "-")) if isinstance(data, dict) else "-"

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)


def sign_request(
    agent: AgentMaterial,
    url: str,
    body: bytes,
    conversation: str,
    *,
    created: int,
    extra: Sequence[tuple[str, str]] = (),
) -> Sent:
    """A POST of ``body`` to ``url`` signed by ``agent`` over :data:`SIGNED`, with
    a fresh nonce; ``extra`` headers travel beside it (not covered)."""
    headers = [
        ("content-type", "application/json"),
        ("baton-conversation", conversation),
        ("content-digest", content_digest(body)),
    ]
    nonce = b64url_encode(secrets.token_bytes(16))
    signature_input, signature = sign(
        HttpRequest("POST", url, headers),
        agent.signing.active,
        components=SIGNED,
        created=created,
        nonce=nonce,
    )
    signed = [*headers, *extra, ("signature-input", signature_input), ("signature", signature)]
    return Sent(signed, body, nonce)


async def post(session: aiohttp.ClientSession, url: str, sent: Sent) -> Answer:
    async with session.post(url, data=sent.body, headers=sent.headers) as response:
        body = await response.read()
        return Answer(response.status, list(response.headers.items()), body)


# ------------------------------------------------------------------ upstreams
@dataclass(frozen=True, slots=True)
class FromGateway:
    """What an upstream established about a request before acting on it."""

    tls_peer: str
    gateway_kid: str
    caller: str


def check_gateway_request(
    request: web.Request,
    body: bytes,
    *,
    gateway_identity: str,
    gateway_keys: KeySet,
    anchors: TrustAnchors,
) -> FromGateway:
    """Admit ``request`` only from the gateway (module docstring); raise a
    :class:`~protocol.errors.BatonError` otherwise."""
    now = time.time()
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    leaf = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    if leaf is None:
        raise InvalidRequest("no client certificate")
    with translating():
        peer = peer_identity(
            [leaf], anchors, now=dt.datetime.fromtimestamp(now, dt.UTC), usage="client"
        )
    if peer.spiffe_id != gateway_identity:
        raise InvalidRequest(f"{peer.spiffe_id} is not the gateway")
    url = f"https://{request.host}{request.raw_path}"
    message = HttpRequest(request.method, url, list(request.headers.items()))
    with translating():
        verified = verify(message, gateway_keys, UPSTREAM_POLICY, body=body)
    check_freshness(verified.created, verified.expires, now=now, policy=FreshnessPolicy())
    caller = request.headers["baton-caller"]  # covered by the signature just verified
    return FromGateway(peer.spiffe_id, verified.keyid, caller)
