"""The security suite's harness: the real gateway, on real mTLS, in front of a recording upstream.

Every case runs against :class:`SecGateway`, a gateway started exactly as
``baton serve`` starts one (``baton init`` data folder, ``baton.toml``, the
listener's TLS 1.3 context requiring a client certificate from the dev CA),
with two test hooks only: an injected clock (:class:`Clock`, so time edges are
exact and nothing sleeps) and a fresh store per test: SQLite in ``tmp_path``,
or the real Redis at ``$BATON_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``)
under a key prefix of its own, deleted afterwards.

Fixtures:

* ``gw`` - SQLite; agents ``support`` (signs, no bearer), ``billing`` (the
  upstream), ``legacy`` (unsigned), ``chatty`` (rate-limited);
* ``gw_bearer`` - the same with a pinned token issuer ``https://idp.test``
  (an ES256 key, :attr:`SecGateway.idp`) and ``support`` taking an optional
  bearer JWT bound to its certificate;
* ``gw_redis`` - the same as ``gw`` on Redis;
* :func:`launch` / :func:`start_instance` for cases that need their own
  configuration or two instances sharing one store (R05).

Reuses ``tests/gateway``'s helpers (:class:`~tests.gateway.conftest.Running`,
:class:`~tests.gateway._harness.RecordingUpstream`, ``write_config``,
``signed_headers``); the shared reject invariants are in ``invariants.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from gateway.app import AppOptions, admin_app, capped_site, gateway_app, parser_limits
from gateway.config import load
from gateway.devdata import DataFolder, init_data_folder
from gateway.metrics import Metrics
from gateway.runtime import load_runtime
from gateway.tls import server_context
from keys.b64 import b64encode_std
from keys.httpsig import HttpRequest, content_digest, signature_base
from keys.jose import sign_compact
from keys.keyset import KeySet
from keys.material import PrivateKey
from keys.x509 import pem_chain_to_der, x5t_s256
from protocol.identity import agent_id, gateway_id
from tests.gateway._harness import TRUST_DOMAIN, RecordingUpstream, free_port, write_config
from tests.gateway.conftest import AGENTS, Running

REDIS_URL = os.environ.get("BATON_REDIS_URL", "redis://127.0.0.1:6379/0")
IDP_ISSUER = "https://idp.test"
SUPPORT = str(agent_id(TRUST_DOMAIN, "support"))
BILLING = str(agent_id(TRUST_DOMAIN, "billing"))
#: The gateway's own identity: the audience a bearer token must name.
GATEWAY = str(gateway_id(TRUST_DOMAIN, "gw1"))
BEARER_ISSUER = f'\n[[bearer_issuers]]\nissuer = "{IDP_ISSUER}"\njwks_file = "idp.jwks"\n'


@dataclass
class Clock:
    """The gateway's clock: a settable number of seconds, read on every request."""

    now: float = field(default_factory=lambda: float(int(time.time())))

    def __call__(self) -> float:
        return self.now


@dataclass
class SecGateway(Running):
    """A :class:`Running` gateway plus what the security cases need."""

    clock: Clock
    runners: list[web.AppRunner]
    #: The Redis key prefix of this gateway's store; None on SQLite.
    redis_prefix: str | None
    #: The pinned token issuer's signing key (``gw_bearer``); None otherwise.
    idp: PrivateKey | None = None

    @property
    def sqlite_path(self) -> Path:
        return self.folder.root / ".baton" / "baton.db"

    def token(self, subject: str = SUPPORT, *, bound: bool = True, **claims: object) -> str:
        """A bearer JWT from the pinned issuer, valid at the gateway's clock,
        bound to ``support``'s certificate unless ``bound=False``; ``claims``
        override or (with value ``None``) remove the defaults."""
        assert self.idp is not None, "use the gw_bearer fixture"
        now = int(self.clock.now)
        payload: dict[str, object] = {
            "iss": IDP_ISSUER,
            "sub": subject,
            "aud": GATEWAY,
            "iat": now,
            "exp": now + 300,
        }
        if bound:
            payload["cnf"] = {"x5t#S256": self.thumbprint("support")}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return sign_compact(json.dumps(payload).encode(), self.idp, typ="JWT")

    def thumbprint(self, name: str) -> str:
        return x5t_s256(pem_chain_to_der(self.agent(name).cert_pem)[0])

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


def store_section(kind: str) -> tuple[str, str | None]:
    """The ``[store]`` body for ``kind`` and the Redis prefix it uses."""
    if kind == "sqlite":
        return 'kind = "sqlite"\npath = ".baton/baton.db"', None
    prefix = f"sec-{secrets.token_hex(6)}:"
    return f'kind = "redis"\nurl = "{REDIS_URL}"\nprefix = "{prefix}"', prefix


async def redis_or_skip() -> None:
    client = aioredis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        pytest.skip(f"Redis at {REDIS_URL} is unreachable ({type(exc).__name__})")
    finally:
        await client.aclose()


async def drop_prefix(prefix: str) -> None:
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def start_instance(
    folder: DataFolder,
    scratch: Path,
    upstream: RecordingUpstream,
    clock: Clock,
    *,
    port: int,
    admin_port: int,
    redis_prefix: str | None,
) -> SecGateway:
    """One gateway process's listeners, from the ``baton.toml`` already in ``folder``."""
    runtime = load_runtime(load(folder.config), folder.root)
    metrics = Metrics()
    app = gateway_app(runtime, metrics, AppOptions(clock=clock, sweep_interval_s=0))
    # As `baton serve` runs it: aiohttp's parser caps above Baton's own.
    runner = web.AppRunner(app, access_log=None, **parser_limits(runtime.config.limits))
    await runner.setup()
    tls = server_context(
        cert_file=runtime.cert_file,
        key_file=runtime.key_file,
        ca_file=runtime.ca_file,
        require_client_cert=runtime.config.gateway.client_auth == "required",
    )
    # As `baton serve` listens: the per-address connection cap, the handshake deadline.
    await capped_site(
        runner, "127.0.0.1", port, limits=runtime.config.limits, ssl_context=tls, metrics=metrics
    ).start()
    admin = web.AppRunner(admin_app(app, metrics), access_log=None)
    await admin.setup()
    await web.TCPSite(admin, "127.0.0.1", admin_port).start()
    return SecGateway(
        folder,
        scratch,
        upstream,
        app,
        port,
        admin_port,
        metrics,
        clock=clock,
        runners=[admin, runner],
        redis_prefix=redis_prefix,
    )


async def launch(
    tmp_path: Path,
    *,
    store: str = "sqlite",
    extra: str = "",
    support_bearer: str = "none",
    files: dict[str, bytes] | None = None,
    gateway_settings: str = "",
    idp: PrivateKey | None = None,
    port: int | None = None,
    agents: tuple[str, ...] = (),
) -> SecGateway:
    """A fresh data folder, a recording ``billing`` upstream and a gateway in front of it.

    ``gateway_settings`` are extra lines of the ``[gateway]`` table; ``agents``
    get keys and certificates besides the four of ``tests/gateway`` (their
    ``[[agents]]`` entries go in ``extra``).
    """
    if store == "redis":
        await redis_or_skip()
    folder = init_data_folder(
        tmp_path / "home",
        trust_domain=TRUST_DOMAIN,
        force=False,
        now=dt.datetime.now(dt.UTC),
        agents=(*AGENTS, *agents),
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for name, data in (files or {}).items():
        (folder.root / name).write_bytes(data)
    upstream = RecordingUpstream(folder, folder.load_agent(TRUST_DOMAIN, "billing"), scratch)
    await upstream.start()
    port, admin_port = port or free_port(), free_port()
    section, prefix = store_section(store)
    write_config(
        folder,
        port=port,
        admin_port=admin_port,
        upstream_port=upstream.port,
        store=section,
        extra=extra,
        support_bearer=support_bearer,
    )
    if gateway_settings:
        text = folder.config.read_text(encoding="utf-8")
        text = text.replace("drain_timeout_s = 10\n", f"drain_timeout_s = 10\n{gateway_settings}\n")
        folder.config.write_text(text, encoding="utf-8")
    running = await start_instance(
        folder,
        scratch,
        upstream,
        Clock(),
        port=port,
        admin_port=admin_port,
        redis_prefix=prefix,
    )
    running.idp = idp
    return running


async def shutdown(running: SecGateway) -> None:
    await running.stop()
    await running.upstream.stop()
    if running.redis_prefix is not None:
        await drop_prefix(running.redis_prefix)


def idp_files() -> tuple[PrivateKey, dict[str, bytes]]:
    idp = PrivateKey.generate("ES256")
    return idp, {"idp.jwks": json.dumps(KeySet([idp.public]).to_jwks()).encode()}


def raw_signed(
    key: PrivateKey,
    method: str,
    url: str,
    body: bytes,
    *,
    components: tuple[str, ...] = ("@method", "@target-uri", "@authority", "content-digest"),
    params: str,
    label: str = "baton",
    extra: tuple[tuple[str, str], ...] = (),
) -> list[tuple[str, str]]:
    """Headers signed over exactly the ``params`` the caller writes (any ``alg``,
    ``expires``, missing ``created``...): what a hostile or broken signer sends.

    ``params`` is the text after the component list, e.g. ``;created=1;keyid="k"``.
    """
    headers = [("content-type", "application/json"), *extra]
    if body:
        headers.append(("content-digest", content_digest(body)))
    inner = "(" + " ".join(f'"{c}"' for c in components) + ")" + params
    base = signature_base(HttpRequest(method, url, headers), components, inner)
    value = b64encode_std(key.sign(base))
    return [*headers, ("signature-input", f"{label}={inner}"), ("signature", f"{label}=:{value}:")]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[SecGateway]:
    running = await launch(tmp_path)
    try:
        yield running
    finally:
        await shutdown(running)


@pytest.fixture
async def gw_redis(tmp_path: Path) -> AsyncIterator[SecGateway]:
    running = await launch(tmp_path, store="redis")
    try:
        yield running
    finally:
        await shutdown(running)


@pytest.fixture
async def gw_bearer(tmp_path: Path) -> AsyncIterator[SecGateway]:
    idp, files = idp_files()
    running = await launch(
        tmp_path, extra=BEARER_ISSUER, support_bearer="optional", files=files, idp=idp
    )
    try:
        yield running
    finally:
        await shutdown(running)
