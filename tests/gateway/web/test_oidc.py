"""gateway/web/oidc.py: OIDC login against a real OpenID Provider over real TLS.

Two issuers, both on 127.0.0.1 with a server certificate from the ``baton
init`` dev CA (the gateway trusts it through ``inbox.oidc.ca_file``):

* ``tests/web/oidc/provider.mjs``: panva's ``oidc-provider`` (the certified
  Node implementation) with one confidential client, PKCE required and its
  development login and consent pages, in front of the **real operator
  listener** (``gateway_app`` + ``operator_app``, the web app of
  ``gateway/web/webapp.py`` mounting :class:`OidcLogin`, sessions in the
  real Redis under a per-test prefix). An httpx client plays the browser:
  start, the provider's login form, its consent form, back to the callback,
  then ``GET /inbox/session``. Needs ``node`` and ``npm ci --prefix
  tests/web/oidc``; skipped otherwise (a failure when ``BATON_REQUIRE_NODE=1``).
* :class:`FakeIssuer`, an aiohttp issuer of our own that checks PKCE and the
  client's Basic credentials like a real one, but signs whatever ID token a
  test asks for (a wrong nonce, another audience, ``HS256``, a rotated key),
  with a test key published in its JWKS. Its tests drive :class:`OidcLogin`
  behind a small aiohttp app on the gateway's own certificate and TLS context
  (:func:`serve_gateway`), with an injected clock.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import hashlib
import html
import json
import os
import re
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import jwt
import pytest
import redis
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.app import STORES, AppOptions, gateway_app, operator_app
from gateway.config import OidcConfig, parse, split_host_port
from gateway.devdata import DataFolder, init_data_folder
from gateway.metrics import Metrics
from gateway.runtime import load_runtime
from gateway.tls import operator_context, server_context
from gateway.web.oidc import (
    CALLBACK_PATH,
    STATE_COOKIE,
    OidcLogin,
    clear_state_cookie,
    issuer_keys,
)
from gateway.web.sessions import COOKIE_NAME as SESSION_COOKIE
from keys.b64 import b64url_encode
from protocol.errors import BadGateway, BatonError
from tests.gateway._harness import TRUST_DOMAIN, free_port
from tests.gateway.web.webkit import Made, make_folder

OIDC_DIR = Path(__file__).resolve().parents[2] / "web" / "oidc"
NODE = shutil.which("node")
CLIENT_ID = "baton-inbox"
CLIENT_SECRET = "test-client-secret-" + "x" * 24
START_TIMEOUT_S = 30
ALICE = "alice@example.com"
OPERATORS = {ALICE: "alice", "bob@example.com": "bob"}
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z, for the fake issuer's tests


def _missing_provider() -> str | None:
    if NODE is None:
        return "node is not installed: the OIDC provider tests need Node >= 20.19"
    if not (OIDC_DIR / "node_modules").is_dir():
        return "tests/web/oidc/node_modules is missing: run `npm ci --prefix tests/web/oidc`"
    return None


if _missing_provider() is not None and os.environ.get("BATON_REQUIRE_NODE") == "1":
    raise RuntimeError(f"BATON_REQUIRE_NODE=1 but {_missing_provider()}")
needs_provider = pytest.mark.skipif(
    _missing_provider() is not None, reason=_missing_provider() or ""
)


# --------------------------------------------------------------------------- TLS material


@dataclass(frozen=True)
class Tls:
    """The dev CA, the gateway's certificate and an issuer certificate, as files."""

    folder: DataFolder
    scratch: Path
    issuer_cert: Path
    issuer_key: Path

    @property
    def ca_file(self) -> Path:
        return self.folder.ca_cert

    def gateway_context(self) -> ssl.SSLContext:
        gateway = self.folder.gateway
        return operator_context(cert_file=gateway / "tls.pem", key_file=gateway / "tls.key")

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def issuer_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.issuer_cert), str(self.issuer_key))
        return context


class Clock:
    """An injected clock: Unix seconds that move only when a test moves them."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def issuer_tls(folder: DataFolder, tmp_path: Path) -> Tls:
    """A server certificate for an issuer on 127.0.0.1, from ``folder``'s dev CA."""
    issued = folder.load_ca().issue(
        f"spiffe://{TRUST_DOMAIN}/agent/idp",
        usage="server",
        now=dt.datetime.now(dt.UTC),
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    cert, key = scratch / "idp.pem", scratch / "idp.key"
    cert.write_bytes(issued.chain_pem)
    key.write_bytes(issued.key_pem)
    key.chmod(0o600)
    return Tls(folder=folder, scratch=scratch, issuer_cert=cert, issuer_key=key)


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    folder = init_data_folder(
        tmp_path / "gw",
        trust_domain=TRUST_DOMAIN,
        force=False,
        now=dt.datetime.now(dt.UTC),
        agents=("support",),
    )
    return issuer_tls(folder, tmp_path)


def _login(
    tls: Tls,
    issuer: str,
    *,
    clock: Callable[[], float],
    claim: str = "sub",
    scopes: tuple[str, ...] = ("openid",),
) -> OidcLogin:
    secrets_dir = tls.scratch / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    secret = secrets_dir / "oidc-client-secret"
    secret.write_text(CLIENT_SECRET + "\n")
    secret.chmod(0o600)
    config = OidcConfig(
        issuer=issuer,
        client_id=CLIENT_ID,
        client_secret_file="secrets/oidc-client-secret",
        ca_file=str(tls.ca_file),
        claim=claim,
        scopes=list(scopes),
    )
    return OidcLogin(config, operators_by_subject=OPERATORS, config_dir=tls.scratch, clock=clock)


# --------------------------------------------------------------------------- the gateway side


@dataclass
class Gateway:
    """The OIDC routes of the operator listener, over the gateway's TLS."""

    base: str
    errors: list[BatonError] = field(default_factory=list)

    @property
    def callback(self) -> str:
        return self.base + CALLBACK_PATH


@asynccontextmanager
async def serve_gateway(login: OidcLogin, tls: Tls, port: int) -> AsyncIterator[Gateway]:
    gateway = Gateway(base=f"https://127.0.0.1:{port}")

    def refused(exc: BatonError) -> web.Response:
        gateway.errors.append(exc)
        return web.json_response({"error": exc.public()}, status=exc.http_status)

    async def start(request: web.Request) -> web.StreamResponse:
        try:
            return await login.start(request)
        except BatonError as exc:
            return refused(exc)

    async def callback(request: web.Request) -> web.StreamResponse:
        try:
            operator = await login.finish(request)
        except BatonError as exc:
            response = refused(exc)
        else:
            response = web.json_response({"operator": operator})
        clear_state_cookie(response)
        return response

    app = web.Application()
    app.router.add_get("/inbox/oidc/start", start)
    app.router.add_get(CALLBACK_PATH, callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls.gateway_context())
    await site.start()
    try:
        yield gateway
    finally:
        await login.close()
        await runner.cleanup()


def browser(tls: Tls) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=tls.client_context(), follow_redirects=False, timeout=20)


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


# --------------------------------------------------------------------------- the real provider


@dataclass
class Provider:
    issuer: str
    port: int


@functools.cache
def provider_jwks() -> str:
    """The provider's private signing keys (RS256, ES256), made once per test run."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = []
    for key, kid, alg in ((rsa_key, "rs-1", "RS256"), (ec_key, "es-1", "ES256")):
        jwk = json.loads(RSAAlgorithm.to_jwk(key) if alg == "RS256" else ECAlgorithm.to_jwk(key))
        # PyJWT marks a private JWK key_ops ["sign"], which the provider would
        # publish as is; an issuer key must allow "verify" (RFC 7517 s4.3).
        jwk.pop("key_ops", None)
        keys.append(jwk | {"kid": kid, "alg": alg, "use": "sig"})
    return json.dumps({"keys": keys})


@asynccontextmanager
async def run_provider(tls: Tls, redirect_uri: str, port: int) -> AsyncIterator[Provider]:
    """``node provider.mjs`` on ``port``, ready within a bounded wait; stopped at the end."""
    assert NODE is not None
    jwks = tls.scratch / f"provider-{port}.jwks"
    jwks.write_text(provider_jwks())
    jwks.chmod(0o600)
    env = dict(os.environ)
    env.update(
        OIDC_CLIENT_ID=CLIENT_ID,
        OIDC_CLIENT_SECRET=CLIENT_SECRET,
        OIDC_REDIRECT_URIS=redirect_uri,
        OIDC_JWKS_FILE=str(jwks),
    )
    log = tls.scratch / f"provider-{port}.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            NODE,
            str(OIDC_DIR / "provider.mjs"),
            str(port),
            str(tls.issuer_cert),
            str(tls.issuer_key),
            cwd=str(OIDC_DIR),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert process.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                line = await process.stdout.readline()
        except TimeoutError:
            raise AssertionError(f"provider not ready in {START_TIMEOUT_S} s") from None
        assert line.strip() == b"ready", (line, log.read_text(errors="replace"))
        yield Provider(issuer=f"https://127.0.0.1:{port}", port=port)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"', re.IGNORECASE)
_PROMPT = re.compile(r'name="prompt" value="(login|consent)"')


async def through_provider(client: httpx.AsyncClient, base: str, user: str) -> str:
    """Start a login at ``base`` and sign in at the provider as ``user``; the
    callback URL the provider sends the browser back to (not yet fetched).

    Follows redirects by hand and fills in the provider's development login
    form (any password) and its consent form, as a person would.
    """
    callback = base + CALLBACK_PATH + "?"
    response = await client.get(base + "/inbox/oidc/start")
    assert response.status_code == 302, response.text
    url = response.headers["location"]
    for _ in range(20):
        if url.startswith(callback):
            return url
        response = await client.get(url)
        if response.status_code in (302, 303):
            url = urljoin(url, response.headers["location"])
            continue
        assert response.status_code == 200, (url, response.status_code, response.text[:500])
        action, prompt = _FORM.search(response.text), _PROMPT.search(response.text)
        assert action is not None and prompt is not None, response.text[:500]
        form = {"prompt": prompt.group(1)}
        if prompt.group(1) == "login":
            form |= {"login": user, "password": "any password"}
        response = await client.post(urljoin(url, html.unescape(action.group(1))), data=form)
        assert response.status_code in (302, 303), response.text[:500]
        url = urljoin(url, response.headers["location"])
    raise AssertionError("the provider never sent the browser back to the callback")


def state_cookie(client: httpx.AsyncClient) -> str:
    value = client.cookies.get(STATE_COOKIE)
    assert value, "start set no state cookie"
    return value


# --------------------------------------------------------------------------- the real listener

REDIS_URL = os.environ.get("BATON_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """A ``baton init`` folder with operators (keys, logins) and the client secret file."""
    made = make_folder(tmp_path_factory.mktemp("oidc-web"))
    secrets_dir = made.folder.root / "secrets"
    secrets_dir.mkdir(mode=0o700)
    secret = secrets_dir / "oidc-client-secret"
    secret.write_text(CLIENT_SECRET + "\n")
    secret.chmod(0o600)
    return made


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"t{os.urandom(6).hex()}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
    finally:
        client.close()


def listener_config(*, operator_port: int, issuer: str, prefix: str, ca_file: Path) -> str:
    return f"""
trust_domain = "{TRUST_DOMAIN}"

[gateway]
listen = "127.0.0.1:{free_port()}"
admin_listen = "127.0.0.1:{free_port()}"
operator_listen = "127.0.0.1:{operator_port}"
drain_timeout_s = 5

[store]
kind = "redis"
url = "{REDIS_URL}"
prefix = "{prefix}"

[inbox.oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret_file = "secrets/oidc-client-secret"
ca_file = "{ca_file}"

[[agents]]
name = "support"

[[upstreams]]
name = "assistant"
url = "https://127.0.0.1:{free_port()}"
protocol = "a2a"

[[policy.allow]]
caller = "support"
upstream = "assistant"
methods = ["*"]

[[queues]]
name = "refunds"
escalate_from = ["support"]

[[operators]]
name = "alice"
queues = ["refunds"]
oidc_subject = "{ALICE}"

[[operators]]
name = "bob"
queues = ["refunds"]
oidc_subject = "bob@example.com"
"""


@dataclass
class Listener:
    """One gateway process's operator listener (the web app mounting OidcLogin)."""

    url: str
    app: web.Application

    @property
    def callback(self) -> str:
        return self.url + CALLBACK_PATH

    async def audit_details(self) -> list[str]:
        return [event.detail or "" for event in await self.app[STORES].audit.read()]


@asynccontextmanager
async def serve_listener(
    made: Made, *, operator_port: int, issuer: str, prefix: str, clock: Clock
) -> AsyncIterator[Listener]:
    """The data plane and the operator listener of one gateway, on the shared Redis."""
    text = listener_config(
        operator_port=operator_port, issuer=issuer, prefix=prefix, ca_file=made.folder.ca_cert
    )
    runtime = load_runtime(parse(text), made.folder.root)
    app = gateway_app(runtime, Metrics(), AppOptions(clock=clock, sweep_interval_s=0))
    host, port = split_host_port(runtime.config.gateway.listen)
    async with AsyncExitStack() as stack:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        data_plane = server_context(
            cert_file=runtime.cert_file, key_file=runtime.key_file, ca_file=runtime.ca_file
        )
        await web.TCPSite(runner, host, port, ssl_context=data_plane).start()
        operators = web.AppRunner(operator_app(app), access_log=None, shutdown_timeout=5)
        await operators.setup()
        stack.push_async_callback(operators.cleanup)
        context = operator_context(cert_file=runtime.cert_file, key_file=runtime.key_file)
        await web.TCPSite(operators, "127.0.0.1", operator_port, ssl_context=context).start()
        yield Listener(url=f"https://127.0.0.1:{operator_port}", app=app)


@dataclass
class RealFlow:
    made: Made
    tls: Tls
    provider: Provider
    listener: Listener
    client: httpx.AsyncClient
    prefix: str
    clock: Clock

    async def sign_in(self, user: str) -> str:
        return await through_provider(self.client, self.listener.url, user)

    async def session(self) -> httpx.Response:
        return await self.client.get(self.listener.url + "/inbox/session")


@pytest.fixture
async def real(made: Made, tmp_path: Path, redis_prefix: str) -> AsyncIterator[RealFlow]:
    tls = issuer_tls(made.folder, tmp_path)
    provider_port, operator_port = free_port(), free_port()
    clock = Clock(time.time())
    async with (
        serve_listener(
            made,
            operator_port=operator_port,
            issuer=f"https://127.0.0.1:{provider_port}",
            prefix=redis_prefix,
            clock=clock,
        ) as listener,
        run_provider(tls, listener.callback, provider_port) as provider,
        browser(tls) as client,
    ):
        yield RealFlow(made, tls, provider, listener, client, redis_prefix, clock)


def session_cookies(response: httpx.Response) -> list[str]:
    return [c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)]


@needs_provider
async def test_login_opens_a_session_for_the_mapped_operator(real: RealFlow) -> None:
    callback = await real.sign_in(ALICE)
    assert parse_qs(urlsplit(callback).query)["iss"] == [real.provider.issuer]  # RFC 9207
    assert (await real.session()).status_code == 401  # nothing yet
    response = await real.client.get(callback)
    assert response.status_code == 302, (response.text, await real.listener.audit_details())
    assert response.headers["location"] == "/inbox/"
    (cookie,) = session_cookies(response)
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= attributes
    assert STATE_COOKIE not in real.client.cookies  # the callback's answer dropped it
    session = await real.session()
    assert session.status_code == 200
    body = session.json()
    assert (body["operator"], body["name"], body["method"]) == ("operator:alice", "alice", "oidc")
    assert body["queues"] == ["refunds"]
    assert any("operator:alice method=oidc" in d for d in await real.listener.audit_details())


@needs_provider
async def test_start_redirects_with_pkce_and_a_sealed_lax_cookie(real: RealFlow) -> None:
    response = await real.client.get(real.listener.url + "/inbox/oidc/start")
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}" == real.provider.issuer
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["response_type"] == "code"
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == real.listener.callback
    assert query["scope"] == "openid"
    assert query["code_challenge_method"] == "S256"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", query["code_challenge"])
    assert len(query["state"]) >= 43 and len(query["nonce"]) >= 43
    (cookie,) = response.headers.get_list("set-cookie")
    assert cookie.startswith(STATE_COOKIE + "=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=lax", "path=/", "max-age=600"} <= attributes
    assert not any(a.startswith("domain") for a in attributes)
    sealed = state_cookie(real.client)
    for secret in (query["state"], query["nonce"]):
        assert secret not in sealed  # sealed, not merely encoded
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


@needs_provider
async def test_an_unknown_subject_gets_401_and_no_session(real: RealFlow) -> None:
    callback = await real.sign_in("mallory@example.com")
    response = await real.client.get(callback)
    assert response.status_code == 401
    assert error_code(response) == "oidc_failed"
    assert session_cookies(response) == []
    assert "mallory" not in response.text  # a generic answer for the browser...
    assert any("mallory@example.com" in d for d in await real.listener.audit_details())
    assert (await real.session()).status_code == 401


@needs_provider
async def test_a_replayed_callback_is_refused(real: RealFlow) -> None:
    callback = await real.sign_in(ALICE)
    cookie = state_cookie(real.client)
    first = await real.client.get(callback)
    assert first.status_code == 302
    # The same callback again, with the same state cookie put back by hand.
    again = await real.client.get(callback, headers={"Cookie": f"{STATE_COOKIE}={cookie}"})
    assert again.status_code == 401
    assert error_code(again) == "replay_detected"
    assert session_cookies(again) == []


@needs_provider
async def test_another_worker_finishes_a_login_but_never_reuses_a_code(
    made: Made, tmp_path: Path, redis_prefix: str
) -> None:
    """The cookie key comes from the client secret and sessions from the shared
    store: a login started at one worker finishes at another; a worker that
    never saw the state is stopped by the provider (codes are single-use)."""
    tls = issuer_tls(made.folder, tmp_path)
    provider_port, operator_port = free_port(), free_port()
    issuer = f"https://127.0.0.1:{provider_port}"
    callback_uri = f"https://127.0.0.1:{operator_port}{CALLBACK_PATH}"

    def worker() -> AbstractAsyncContextManager[Listener]:
        return serve_listener(
            made,
            operator_port=operator_port,
            issuer=issuer,
            prefix=redis_prefix,
            clock=Clock(time.time()),
        )

    async with run_provider(tls, callback_uri, provider_port), browser(tls) as client:
        async with worker() as first:
            callback = await through_provider(client, first.url, ALICE)
            cookie = state_cookie(client)
        async with worker() as second:
            done = await client.get(callback)
            assert done.status_code == 302, await second.audit_details()
        async with worker() as third:
            session = await client.get(third.url + "/inbox/session")
            assert session.json()["name"] == "alice"  # the session is fleet-wide
            again = await client.get(callback, headers={"Cookie": f"{STATE_COOKIE}={cookie}"})
            assert again.status_code == 401
            assert error_code(again) == "oidc_failed"


@needs_provider
async def test_a_tampered_state_is_refused(real: RealFlow) -> None:
    callback = await real.sign_in(ALICE)
    query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    query["state"] = query["state"][:-1] + ("A" if query["state"][-1] != "A" else "B")
    response = await real.client.get(f"{real.listener.callback}?{urlencode(query)}")
    assert response.status_code == 401
    assert error_code(response) == "oidc_failed"
    assert session_cookies(response) == []
    assert any("callback state does not match" in d for d in await real.listener.audit_details())


@needs_provider
async def test_a_tampered_state_cookie_is_refused(real: RealFlow) -> None:
    callback = await real.sign_in(ALICE)
    cookie = state_cookie(real.client)
    flipped = cookie[:20] + ("A" if cookie[20] != "A" else "B") + cookie[21:]
    response = await real.client.get(callback, headers={"Cookie": f"{STATE_COOKIE}={flipped}"})
    assert response.status_code == 401
    assert error_code(response) == "oidc_failed"
    assert any("does not open" in d for d in await real.listener.audit_details())


@needs_provider
async def test_a_callback_without_the_state_cookie_is_refused(real: RealFlow) -> None:
    callback = await real.sign_in(ALICE)
    real.client.cookies.delete(STATE_COOKIE)
    response = await real.client.get(callback)
    assert response.status_code == 401
    assert any("no state cookie" in d for d in await real.listener.audit_details())


@needs_provider
async def test_an_issuer_mismatch_in_discovery_is_refused(
    made: Made, tmp_path: Path, redis_prefix: str
) -> None:
    """Configured as https://localhost:PORT, the provider says https://127.0.0.1:PORT."""
    tls = issuer_tls(made.folder, tmp_path)
    provider_port, operator_port = free_port(), free_port()
    callback_uri = f"https://127.0.0.1:{operator_port}{CALLBACK_PATH}"
    async with (
        run_provider(tls, callback_uri, provider_port),
        serve_listener(
            made,
            operator_port=operator_port,
            issuer=f"https://localhost:{provider_port}",
            prefix=redis_prefix,
            clock=Clock(time.time()),
        ) as listener,
        browser(tls) as client,
    ):
        response = await client.get(listener.url + "/inbox/oidc/start")
    assert response.status_code == 502
    assert error_code(response) == "upstream_error"
    assert STATE_COOKIE not in response.headers.get("set-cookie", "")


# --------------------------------------------------------------------------- our own issuer


def _ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    return jwk | {"kid": kid, "alg": "ES256", "use": "sig"}


@dataclass
class FakeIssuer:
    """An issuer that signs the ID token each test describes.

    ``mint(claims, header)`` may change the claims and header of the next ID
    token (defaults: ours, valid, signed ES256 with the current key).
    """

    clock: Clock
    port: int = 0
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    kid: str = "key-1"
    published: list[dict[str, Any]] = field(default_factory=list)
    discovery: dict[str, Any] = field(default_factory=dict)
    mint: Callable[[dict[str, Any], dict[str, Any]], None] = lambda claims, header: None
    token_requests: list[dict[str, str]] = field(default_factory=list)
    jwks_fetches: int = 0
    _grants: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def rotate(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = "key-2"
        self.published = [_ec_jwk(self.key, self.kid)]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        return app

    async def _discovery(self, _request: web.Request) -> web.Response:
        document = {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256"],
            "authorization_response_iss_parameter_supported": True,
        }
        return web.json_response(document | self.discovery)

    async def _jwks(self, _request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": self.published})

    async def _authorize(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        code = b64url_encode(os.urandom(16))
        self._grants[code] = query
        back = urlencode({"code": code, "state": query["state"], "iss": self.issuer})
        raise web.HTTPFound(f"{query['redirect_uri']}?{back}")

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(form)
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        grant = self._grants.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "").encode()
        challenge = b64url_encode(hashlib.sha256(verifier).digest())
        if (
            request.headers.get("Authorization") != expected
            or grant is None
            or form.get("grant_type") != "authorization_code"
            or form.get("redirect_uri") != grant["redirect_uri"]
            or grant["code_challenge_method"] != "S256"
            or challenge != grant["code_challenge"]
        ):
            return web.json_response({"error": "invalid_grant"}, status=400)
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": ALICE,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"],
        }
        header: dict[str, Any] = {"alg": "ES256", "kid": self.kid, "typ": "JWT"}
        self.mint(claims, header)
        return web.json_response(
            {
                "access_token": "opaque",
                "token_type": "Bearer",
                "id_token": self.sign(claims, header),
            }
        )

    def sign(self, claims: dict[str, Any], header: dict[str, Any]) -> str:
        alg = header["alg"]
        if alg == "none":
            encode = lambda value: b64url_encode(json.dumps(value).encode())  # noqa: E731
            return f"{encode(header)}.{encode(claims)}."
        key: Any = CLIENT_SECRET if alg.startswith("HS") else self.key
        extra = {k: v for k, v in header.items() if k != "alg"}
        return jwt.encode(claims, key, algorithm=alg, headers=extra)


@dataclass
class FakeFlow:
    issuer: FakeIssuer
    login: OidcLogin
    gateway: Gateway
    client: httpx.AsyncClient

    async def sign_in(self) -> httpx.Response:
        """Start, follow the issuer's redirect, and call back; the callback's answer."""
        start = await self.client.get(self.gateway.base + "/inbox/oidc/start")
        assert start.status_code == 302, start.text
        authorize = await self.client.get(start.headers["location"])
        assert authorize.status_code == 302, authorize.text
        return await self.client.get(authorize.headers["location"])


@pytest.fixture
async def fake(tls: Tls) -> AsyncIterator[FakeFlow]:
    clock = Clock(NOW)
    issuer = FakeIssuer(clock=clock, port=free_port())
    issuer.published = [_ec_jwk(issuer.key, issuer.kid)]
    runner = web.AppRunner(issuer.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", issuer.port, ssl_context=tls.issuer_context()).start()
    try:
        login = _login(tls, issuer.issuer, clock=clock)
        async with serve_gateway(login, tls, free_port()) as gateway, browser(tls) as client:
            yield FakeFlow(issuer=issuer, login=login, gateway=gateway, client=client)
    finally:
        await runner.cleanup()


async def test_own_issuer_valid_token_signs_alice_in(fake: FakeFlow) -> None:
    response = await fake.sign_in()
    assert response.status_code == 200, fake.gateway.errors
    assert response.json() == {"operator": "alice"}
    (request,) = fake.issuer.token_requests
    assert set(request) == {"grant_type", "code", "redirect_uri", "code_verifier"}
    assert request["redirect_uri"] == fake.gateway.callback


def _set(**changes: Any) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    def mint(claims: dict[str, Any], header: dict[str, Any]) -> None:
        for name, value in changes.items():
            target = header if name.startswith("h_") else claims
            key = name.removeprefix("h_")
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value

    return mint


@pytest.mark.parametrize(
    ("mint", "code", "detail"),
    [
        (_set(nonce="not-our-nonce-" + "x" * 30), "oidc_failed", "nonce"),
        (_set(nonce=None), "oidc_failed", "nonce"),
        (_set(aud=[CLIENT_ID, "another-client"], azp=CLIENT_ID), "bad_audience", "aud"),
        (_set(aud="another-client"), "bad_audience", "aud"),
        (_set(azp="another-client"), "oidc_failed", "azp"),
        (_set(iss="https://evil.example"), "bad_issuer", "iss"),
        (_set(exp=int(NOW) - 120, iat=int(NOW) - 600), "expired", "expired"),
        (_set(iat=int(NOW) + 600, exp=int(NOW) + 900), "not_yet_valid", "iat"),
        (_set(iat=None), "malformed_jws", "iat"),
        (_set(h_alg="HS256"), "alg_not_allowed", "HS256"),
        (_set(h_alg="none"), "alg_not_allowed", "none"),
        (_set(h_kid="unknown-kid"), "unknown_kid", "kid"),
        (_set(h_jwk={"kty": "EC"}), "untrusted_key", "jwk"),
        (_set(h_typ="at+jwt"), "wrong_typ", "typ"),
    ],
    ids=[
        "wrong-nonce",
        "no-nonce",
        "several-audiences",
        "other-audience",
        "other-azp",
        "other-iss",
        "expired",
        "issued-in-the-future",
        "no-iat",
        "hs256",
        "alg-none",
        "unknown-kid",
        "embedded-jwk",
        "access-token-typ",
    ],
)
async def test_own_issuer_bad_id_tokens_are_refused(
    fake: FakeFlow,
    mint: Callable[[dict[str, Any], dict[str, Any]], None],
    code: str,
    detail: str,
) -> None:
    fake.issuer.mint = mint
    response = await fake.sign_in()
    assert response.status_code == 401
    assert error_code(response) == code
    assert detail in fake.gateway.errors[-1].diagnostics()
    assert "operator" not in response.json()


async def test_own_issuer_a_signature_by_another_key_is_refused(fake: FakeFlow) -> None:
    real_key = fake.issuer.key
    fake.issuer.key = ec.generate_private_key(ec.SECP256R1())  # same kid, other key
    response = await fake.sign_in()
    assert response.status_code == 401
    assert error_code(response) == "bad_signature"
    fake.issuer.key = real_key
    assert (await fake.sign_in()).status_code == 200


async def test_own_issuer_small_clock_skew_is_tolerated(fake: FakeFlow) -> None:
    fake.issuer.mint = _set(iat=int(NOW) + 30, exp=int(NOW) + 330)
    response = await fake.sign_in()
    assert response.status_code == 200, fake.gateway.errors


async def test_own_issuer_rotation_refetches_the_jwks_once(fake: FakeFlow) -> None:
    assert (await fake.sign_in()).status_code == 200
    assert fake.issuer.jwks_fetches == 1
    # Rotated within a minute of the last fetch: no refetch yet (a token
    # naming random kids cannot make the gateway hammer the issuer).
    fake.issuer.rotate()
    refused = await fake.sign_in()
    assert error_code(refused) == "unknown_kid"
    assert fake.issuer.jwks_fetches == 1
    fake.issuer.clock.now += 120
    accepted = await fake.sign_in()
    assert accepted.status_code == 200, fake.gateway.errors
    assert fake.issuer.jwks_fetches == 2
    assert (await fake.sign_in()).status_code == 200
    assert fake.issuer.jwks_fetches == 2  # cached again


async def test_own_issuer_a_stale_state_cookie_is_refused(fake: FakeFlow) -> None:
    start = await fake.client.get(fake.gateway.base + "/inbox/oidc/start")
    authorize = await fake.client.get(start.headers["location"])
    fake.issuer.clock.now += 601
    response = await fake.client.get(authorize.headers["location"])
    assert response.status_code == 401
    assert error_code(response) == "stale"
    assert fake.issuer.token_requests == []  # refused before the code was redeemed


async def test_own_issuer_a_wrong_iss_parameter_is_refused(fake: FakeFlow) -> None:
    start = await fake.client.get(fake.gateway.base + "/inbox/oidc/start")
    authorize = await fake.client.get(start.headers["location"])
    parts = urlsplit(authorize.headers["location"])
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["iss"] == fake.issuer.issuer
    callback = f"{fake.gateway.callback}?{urlencode(query | {'iss': 'https://evil.example'})}"
    response = await fake.client.get(callback)
    assert response.status_code == 401
    assert "RFC 9207" in fake.gateway.errors[-1].diagnostics()
    assert fake.issuer.token_requests == []


async def test_own_issuer_an_error_answer_ends_the_login(fake: FakeFlow) -> None:
    start = await fake.client.get(fake.gateway.base + "/inbox/oidc/start")
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    query = urlencode({"error": "access_denied", "state": state, "iss": fake.issuer.issuer})
    response = await fake.client.get(f"{fake.gateway.callback}?{query}")
    assert response.status_code == 401
    assert "access_denied" in fake.gateway.errors[-1].diagnostics()


async def test_own_issuer_email_claim_needs_email_verified(tls: Tls, fake: FakeFlow) -> None:
    email_login = _login(tls, fake.issuer.issuer, clock=fake.issuer.clock, claim="email")
    async with serve_gateway(email_login, tls, free_port()) as gateway:
        flow = FakeFlow(fake.issuer, email_login, gateway, fake.client)
        fake.issuer.mint = _set(sub="opaque-id-1", email=ALICE, email_verified=False)
        refused = await flow.sign_in()
        assert refused.status_code == 401
        assert "email_verified" in gateway.errors[-1].diagnostics()
        fake.issuer.mint = _set(sub="opaque-id-1", email=ALICE, email_verified=True)
        accepted = await flow.sign_in()
        assert accepted.json() == {"operator": "alice"}


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"issuer": "https://127.0.0.1:1"}, "OIDC Discovery s4.3"),
        ({"id_token_signing_alg_values_supported": ["HS256", "none"]}, "none of"),
        ({"code_challenge_methods_supported": ["plain"]}, "S256"),
        ({"token_endpoint": "http://127.0.0.1/token"}, "https"),
        ({"response_types_supported": ["id_token"]}, "response_type=code"),
    ],
    ids=["issuer-mismatch", "no-allowed-alg", "no-s256", "http-endpoint", "no-code"],
)
async def test_own_issuer_unusable_discovery_is_refused(
    fake: FakeFlow, changes: dict[str, Any], detail: str
) -> None:
    fake.issuer.discovery = changes
    response = await fake.client.get(fake.gateway.base + "/inbox/oidc/start")
    assert response.status_code == 502
    assert error_code(response) == "upstream_error"
    assert detail in fake.gateway.errors[-1].diagnostics()
    assert "set-cookie" not in response.headers


async def test_discovery_is_fetched_once(fake: FakeFlow) -> None:
    assert (await fake.sign_in()).status_code == 200
    fake.issuer.discovery = {"issuer": "https://changed.example"}  # would now be refused
    assert (await fake.sign_in()).status_code == 200


async def test_a_forged_host_header_is_refused(fake: FakeFlow) -> None:
    response = await fake.client.get(
        fake.gateway.base + "/inbox/oidc/start", headers={"Host": "evil.example/x?"}
    )
    assert response.status_code == 400
    assert error_code(response) == "malformed_input"


async def test_an_issuer_outside_the_trusted_cas_is_refused(
    tls: Tls, fake: FakeFlow, tmp_path: Path
) -> None:
    """With another CA in ca_file (and the system store), the issuer's certificate fails."""
    other = init_data_folder(
        tmp_path / "other",
        trust_domain=TRUST_DOMAIN,
        force=False,
        now=dt.datetime.now(dt.UTC),
        agents=("support",),
    )
    wrong_ca = Tls(other, tls.scratch, tls.issuer_cert, tls.issuer_key)
    login = _login(wrong_ca, fake.issuer.issuer, clock=fake.issuer.clock)
    async with serve_gateway(login, tls, free_port()) as gateway:
        response = await fake.client.get(gateway.base + "/inbox/oidc/start")
    assert response.status_code == 502
    assert "Certificate" in gateway.errors[-1].diagnostics()


# --------------------------------------------------------------------------- JWKS selection


def test_issuer_keys_take_what_can_be_used() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))
    private_jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(ec_key))
    jwks = {
        "keys": [
            _ec_jwk(ec_key, "ec") | {"x5t": "ignored"},
            rsa_jwk | {"kid": "rsa", "issuer": "https://login.example/tenant"},  # no alg
            rsa_jwk | {"kid": "rsa-enc", "use": "enc"},
            rsa_jwk | {"kid": "ps", "alg": "PS256"},
            private_jwk | {"kid": "leaked"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-256"},  # no kid
            "not a key",
        ]
    }
    keys = issuer_keys(jwks, frozenset({"ES256", "RS256"}))
    assert sorted(keys) == ["ec", "rsa"]
    assert keys["rsa"].alg == "RS256"
    assert sorted(issuer_keys(jwks, frozenset({"ES256"}))) == ["ec"]
    with pytest.raises(BadGateway, match="no usable"):
        issuer_keys(jwks, frozenset({"EdDSA"}))
    with pytest.raises(BadGateway, match="'keys' array"):
        issuer_keys({"keys": {}}, frozenset({"ES256"}))
    with pytest.raises(BadGateway, match="repeats kid"):
        issuer_keys({"keys": [_ec_jwk(ec_key, "a"), _ec_jwk(ec_key, "a")]}, frozenset({"ES256"}))


@needs_provider
async def test_an_operator_signs_in_with_oidc_in_the_browser(real: RealFlow) -> None:
    """Debian's Chromium: the inbox's login page offers the identity provider,
    the provider's own login and consent pages sign alice in, and the inbox
    opens with her session (the SameSite=Strict cookie set on the callback
    of a cross-site redirect is still sent to the inbox's own requests)."""
    from tests.web.browser_kit import chromium, screenshot

    gateway_cert = real.made.folder.gateway / "tls.pem"
    async with chromium(gateway_cert, real.tls.issuer_cert) as chrome:
        page = await chrome.new_page()
        await page.goto(real.listener.url + "/inbox/")
        await page.wait_for_url("**/inbox/login", timeout=20_000)
        await page.click("#oidc-start")
        await page.wait_for_url(real.provider.issuer + "/**", timeout=20_000)
        await page.fill("input[name=login]", ALICE)
        await page.fill("input[name=password]", "any password")
        await page.click("button[type=submit]")
        await page.wait_for_selector("button[type=submit]", timeout=20_000)  # consent
        if "/interaction/" in page.url:
            await page.click("button[type=submit]")
        await page.wait_for_url(real.listener.url + "/inbox/keys", timeout=20_000)
        assert await page.inner_text("#who") == "alice"
        await screenshot(page, "06-oidc-signed-in")
        session = await page.evaluate("fetch('/inbox/session').then((r) => r.json())")
    assert (session["operator"], session["method"]) == ("operator:alice", "oidc")
