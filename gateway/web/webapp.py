"""The web inbox's routes on the operator listener (ADR 0015).

::

    GET  /inbox/  /inbox/login  /inbox/keys  /inbox/bundle/{id}   the static shell
    GET  /inbox/static/{file}        .js, .css, .svg from gateway/web/static/
    GET  /inbox/session              the live session (401 session_required)
    GET  /inbox/session/methods      {"methods": [...]}: how one may sign in here
    POST /inbox/session/login        Origin; {"name", "password"} -> Session + cookie
    POST /inbox/session/logout       session + Origin + CSRF -> 204, cookie cleared
    GET  /inbox/oidc/start           (inbox.oidc) 302 to the issuer
    GET  /inbox/oidc/callback        (inbox.oidc) 302 /inbox/ with a new session
    POST /inbox/web/command          session + Origin + CSRF; one signed command
    GET  /inbox/web/events           session; text/event-stream of queue snapshots

Invariants:

* the session only admits a request; every action is a signed operator
  command handled exactly as ``POST /inbox/api`` handles it
  (:class:`~gateway.operator_api.OperatorApi`), and only if the session's
  operator signed it;
* every rejected POST (Origin, session, CSRF, login) writes one audit event
  (``web.rejected`` / ``web.login``) and changes nothing else;
* static files are read once at start-up into memory: a request can only
  name a file of that set (no path is ever joined from request input), with
  an allowed extension, not a symlink out of the folder; anything else is 404;
* the event stream shows only queues the session's operator serves, ends when
  the session does (re-checked at every wake-up, without refreshing its idle
  timeout), and is bounded: :data:`MAX_STREAMS` per operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from aiohttp import web
from pydantic import Field

from gateway.config import OidcConfig
from gateway.handoffs import Handoffs, Terms, summary, terms_of
from gateway.operator_api import OperatorApi
from gateway.proxy import Gateway, RequestContext
from gateway.runtime import Runtime
from gateway.web.headers import (
    Handler,
    check_csrf,
    check_host,
    check_origin,
    error_response,
    listener_hosts,
    listener_origins,
)
from gateway.web.login import LocalLogin, LoginHashes
from gateway.web.sessions import (
    NO_CREDENTIAL,
    Method,
    Session,
    WebSessions,
    clear_cookie,
    credential_tag,
    session_cookie,
    token_of,
)
from protocol.errors import (
    BatonError,
    InvalidCredentials,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    SessionRequired,
)
from protocol.identity import OperatorId
from protocol.model import BatonModel
from protocol.ports import InboxRecord, InboxStatus

__all__ = [
    "MAX_STREAMS",
    "PING_S",
    "STATIC_ROOT",
    "WEB_INBOX",
    "StaticFiles",
    "WebInbox",
    "mount",
]

log = logging.getLogger("baton.web")

STATIC_ROOT: Final = Path(__file__).resolve().parent / "static"
#: Live queue streams one operator may hold open at once (tabs, devices).
MAX_STREAMS: Final = 8
#: A comment line this often keeps proxies and the browser from timing the stream out.
PING_S: Final = 15.0
#: A stream write that cannot complete in this long (a client not reading) ends it.
_WRITE_TIMEOUT_S: Final = 30.0
#: Bundles per queue in one snapshot (the store's page limit).
_PER_QUEUE: Final = 1000
_LOGIN_MAX_BYTES: Final = 8 * 1024
_MAX_STATIC_FILE: Final = 4 << 20
_MAX_STATIC_TOTAL: Final = 32 << 20
_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_SHELL: Final = "shell.html"
_SHELL_TYPE: Final = "text/html; charset=utf-8"
_TERMS_CACHE: Final = 10_000
#: A snapshot lists a queue's open bundles first, then fills up with the rest.
_SNAPSHOT_ORDER: Final[tuple[InboxStatus | None, ...]] = ("queued", "claimed", None)
_CSRF_KEY_INFO: Final = b"web-session/csrf"
#: The OIDC state cookie the callback's answer drops (ADR 0015).
_OIDC_COOKIE_CLEAR: Final = "__Host-baton-oidc=; Secure; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"


# ----------------------------------------------------------------------------- static


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True, slots=True)
class StaticFiles:
    """The files under ``static/``, read once (see the module docstring)."""

    files: Mapping[str, StaticFile]
    shell: StaticFile | None

    @classmethod
    def load(cls, root: Path = STATIC_ROOT) -> StaticFiles:
        """Every regular file under ``root`` with an allowed extension whose real
        path stays inside ``root``; hidden names are skipped."""
        files: dict[str, StaticFile] = {}
        shell = None
        total = 0
        if not root.is_dir():
            return cls(files, None)
        base = root.resolve()
        for folder, dirs, names in os.walk(base, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                path = Path(folder) / name
                relative = path.relative_to(base).as_posix()
                content_type = _SHELL_TYPE if relative == _SHELL else _TYPES.get(path.suffix)
                if content_type is None or name.startswith("."):
                    continue
                real = path.resolve()
                if not real.is_relative_to(base) or not real.is_file():
                    continue  # a symlink out of the folder, or not a file
                body = real.read_bytes()
                total += len(body)
                if len(body) > _MAX_STATIC_FILE or total > _MAX_STATIC_TOTAL:
                    raise ValueError(f"static file {relative} is over the size caps")
                entry = StaticFile(
                    body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                )
                if relative == _SHELL:
                    shell = entry
                else:
                    files[relative] = entry
        return cls(files, shell)


def _static_response(request: web.Request, entry: StaticFile) -> web.Response:
    headers = {"Cache-Control": "no-cache", "ETag": entry.etag}
    if request.headers.get("If-None-Match") == entry.etag:
        return web.Response(status=304, headers=headers)
    response = web.Response(body=entry.body, headers=headers)
    response.headers["Content-Type"] = entry.content_type
    return response


# ----------------------------------------------------------------------------- models


class LoginRequest(BatonModel):
    """The body of ``POST /inbox/session/login``."""

    name: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class _Oidc(Protocol):
    async def start(self, request: web.Request) -> web.StreamResponse: ...

    async def finish(self, request: web.Request) -> str: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Parts:
    """What exists only once the gateway app has started."""

    gateway: Gateway
    handoffs: Handoffs
    api: OperatorApi
    sessions: WebSessions
    login: LocalLogin
    oidc: _Oidc | None


Resolve = Callable[[], tuple[Gateway, Handoffs, OperatorApi]]


def _serves(runtime: Runtime) -> dict[str, tuple[str, ...]]:
    return {
        str(OperatorId(operator.name)): tuple(sorted(operator.queues))
        for operator in runtime.config.operators
    }


def _verification(
    runtime: Runtime, serves: Mapping[str, tuple[str, ...]], operator: str
) -> dict[str, Any]:
    """The public keys the browser verifies bundles, events and decisions with."""
    members = {
        queue: sorted(who for who, queues in serves.items() if queue in queues)
        for queue in serves[operator]
    }
    colleagues = sorted({who for names in members.values() for who in names})
    return {
        "gateway": runtime.signing.public().to_jwks(),
        "operators": {who: runtime.operator_keys[who].to_jwks() for who in colleagues},
        "queue_operators": members,
    }


def _gone(request: web.Request) -> bool:
    """Whether the client closed the connection (aiohttp does not cancel the
    handler: a stream notices at its next wake-up, within ``poll_s``)."""
    transport = request.transport
    return transport is None or transport.is_closing()


class WebInbox:
    """The routes of the module docstring; one per operator listener."""

    def __init__(self, runtime: Runtime, resolve: Resolve, static: StaticFiles) -> None:
        self._runtime = runtime
        self._resolve = resolve
        self._static = static
        config = runtime.config
        self._inbox = config.inbox
        self._origins = listener_origins(config)
        self._serves = _serves(runtime)
        self._verification = {
            who: _verification(runtime, self._serves, who) for who in self._serves
        }
        self._names = frozenset(operator.name for operator in config.operators)
        self._hashes = LoginHashes(runtime.folder, sorted(self._names), runtime.login_hashes)
        methods = ["password"] if runtime.login_hashes else []
        self._methods = [*methods, *(["oidc"] if config.inbox.oidc is not None else [])]
        self._parts: _Parts | None = None
        self._closing = False
        #: operator -> open streams; session digest -> the streams' wake-up events.
        self._streams: dict[str, int] = {}
        self._wakers: dict[str, set[asyncio.Event]] = {}
        self._terms: OrderedDict[str, Terms] = OrderedDict()

    # ------------------------------------------------------------ lifecycle
    @property
    def parts(self) -> _Parts:
        if self._parts is None:
            raise web.HTTPServiceUnavailable()
        return self._parts

    async def lifecycle(self, _app: web.Application) -> AsyncIterator[None]:
        gateway, handoffs, api = self._resolve()
        runtime = self._runtime
        inbox = self._inbox
        sessions = WebSessions(
            gateway.stores.bindings,
            secret=runtime.cipher.derive_key(_CSRF_KEY_INFO),
            idle_timeout_s=inbox.idle_timeout_s,
            session_max_s=inbox.session_max_s,
        )
        login = LocalLogin(
            self._hashes,
            gateway.stores.rates,
            attempts=inbox.login_attempts,
            attempts_per_address=inbox.login_attempts_per_address,
            window_s=inbox.login_window_s,
        )
        oidc = None if inbox.oidc is None else self._oidc(inbox.oidc, gateway)
        self._parts = _Parts(gateway, handoffs, api, sessions, login, oidc)
        yield
        self._parts = None
        if oidc is not None:
            await oidc.close()

    def _oidc(self, config: OidcConfig, gateway: Gateway) -> _Oidc:
        # Imported here: the OIDC client (and its HTTP pool) exists only when configured.
        from gateway.web.oidc import OidcLogin  # noqa: PLC0415

        return OidcLogin(
            config,
            operators_by_subject={
                operator.oidc_subject: operator.name
                for operator in self._runtime.config.operators
                if operator.oidc_subject is not None
            },
            config_dir=self._runtime.folder.root,
            clock=gateway.clock,
        )

    async def shutdown(self, _app: web.Application) -> None:
        """Listener closing: end every stream now (they would hold the drain)."""
        self._closing = True
        for wakers in self._wakers.values():
            for event in wakers:
                event.set()

    # --------------------------------------------------------------- helpers
    async def _refuse(
        self, ctx: RequestContext, error: BatonError, *, event: str = "web.rejected"
    ) -> web.Response:
        """Audit the rejection (nothing else is written), then answer it."""
        gateway = self.parts.gateway
        try:
            await gateway.audit(
                ctx, gateway.clock(), event=event, outcome="rejected", reason=error.code,
                detail=error.diagnostics()[:1000],
            )  # fmt: skip
        except BatonError as audit_error:
            error = audit_error
        gateway.finish(ctx, error.http_status, "rejected", error.code, detail=error.diagnostics())
        return error_response(error)

    async def _session(self, request: web.Request, *, touch: bool) -> tuple[str, Session]:
        token = token_of(request)
        if token is None:
            raise SessionRequired("no session cookie")
        parts = self.parts
        now = parts.gateway.clock()
        session = await parts.sessions.resume(token, now=now, touch=touch)
        if session is None or session.operator not in self._serves:
            raise SessionRequired("session expired, ended or unknown")
        if await self._password_replaced(token, session, now):
            raise SessionRequired("the operator's password changed after this session began")
        return token, session

    async def _password_replaced(self, token: str, session: Session, now: float) -> bool:
        """End ``session`` if it began by a password the operator no longer has
        (``baton operators passwd`` since, or the local login removed)."""
        if session.method != "password":
            return False
        current = self._hashes.get(session.name)
        if current is not None and credential_tag(current) == session.credential:
            return False
        await self.parts.sessions.end(token, now=now)
        log.info(
            "web session ended: its password was replaced",
            extra={"operator": session.operator, "session": session.digest[:12]},
        )
        return True

    async def _guarded(self, request: web.Request, ctx: RequestContext) -> tuple[str, Session]:
        """Origin, then a live session, then its CSRF token: every POST but login."""
        check_origin(request, self._origins)
        token, session = await self._session(request, touch=True)
        ctx.peer = session.operator
        check_csrf(lambda presented: self.parts.sessions.csrf_matches(token, presented), request)
        return token, session

    def _session_json(self, token: str, session: Session) -> dict[str, Any]:
        return {
            "operator": session.operator,
            "name": session.name,
            "method": session.method,
            "queues": list(self._serves[session.operator]),
            "reveal_pii": session.operator in self._runtime.revealers,
            "csrf": self.parts.sessions.csrf(token),
            "idle_timeout_s": self._inbox.idle_timeout_s,
            "expires_at": session.expires_at,
            "audience": self._runtime.identity,
            "verification": self._verification[session.operator],
        }

    async def _begin(
        self, request: web.Request, ctx: RequestContext, name: str, method: Method,
        *, credential: bytes = NO_CREDENTIAL,
    ) -> tuple[str, Session]:  # fmt: skip
        """A new session for ``name`` (rotation: the presented one ends), audited."""
        if name not in self._names:
            raise InvalidCredentials(f"{method} login for an unconfigured operator")
        parts = self.parts
        now = parts.gateway.clock()
        presented = token_of(request)
        token, session = await parts.sessions.begin(
            name, method, now=now, replacing=presented, credential=credential
        )
        if presented is not None:
            self._wake(presented)
        ctx.peer = session.operator
        await parts.gateway.audit(
            ctx, now, event="web.login", outcome="accepted", reason=None,
            detail=f"{session.operator} method={method} session={session.digest[:16]}",
        )  # fmt: skip
        parts.gateway.finish(ctx, 200, "accepted", "ok")
        return token, session

    def _wake(self, token: str) -> None:
        """Wake the streams of session ``token`` so they re-check it now."""
        digest = hashlib.sha256(token.encode("ascii")).hexdigest()
        for event in self._wakers.get(digest, ()):
            event.set()

    # ---------------------------------------------------------------- static
    async def shell(self, request: web.Request) -> web.Response:
        if self._static.shell is None:
            raise web.HTTPNotFound()
        return _static_response(request, self._static.shell)

    async def static(self, request: web.Request) -> web.Response:
        entry = self._static.files.get(request.match_info["file"])
        if entry is None:
            raise web.HTTPNotFound()
        return _static_response(request, entry)

    # --------------------------------------------------------------- session
    async def session(self, request: web.Request) -> web.Response:
        try:
            token, session = await self._session(request, touch=True)
        except SessionRequired as exc:
            return error_response(exc)  # every signed-out page load: not audited
        return web.json_response(self._session_json(token, session))

    async def methods(self, _request: web.Request) -> web.Response:
        return web.json_response({"methods": self._methods})

    async def login(self, request: web.Request) -> web.Response:
        parts = self.parts
        ctx = parts.gateway.context(request)
        try:
            check_origin(request, self._origins)
            body = await self._login_body(request)
            if body.name in self._names:
                ctx.peer = str(OperatorId(body.name))
            checked = await parts.login.verify(
                body.name, body.password, address=request.remote or "unknown",
                now=parts.gateway.clock(),
            )  # fmt: skip
            token, session = await self._begin(
                request, ctx, body.name, "password", credential=credential_tag(checked)
            )
        except BatonError as exc:
            return await self._refuse(ctx, exc, event="web.login")
        response = web.json_response(self._session_json(token, session))
        max_age = parts.sessions.max_age(session, parts.gateway.clock())
        response.headers.add("Set-Cookie", session_cookie(token, max_age=max_age))
        return response

    @staticmethod
    async def _login_body(request: web.Request) -> LoginRequest:
        if request.content_type != "application/json":
            raise InvalidRequest("send the login as application/json")
        if (request.content_length or 0) > _LOGIN_MAX_BYTES:
            raise PayloadTooLarge(f"login over {_LOGIN_MAX_BYTES} bytes")
        raw = await request.content.read(_LOGIN_MAX_BYTES + 1)
        if len(raw) > _LOGIN_MAX_BYTES:
            raise PayloadTooLarge(f"login over {_LOGIN_MAX_BYTES} bytes")
        return LoginRequest.parse(raw, max_bytes=_LOGIN_MAX_BYTES)

    async def logout(self, request: web.Request) -> web.Response:
        parts = self.parts
        ctx = parts.gateway.context(request)
        try:
            token, session = await self._guarded(request, ctx)
            now = parts.gateway.clock()
            await parts.sessions.end(token, now=now)
            self._wake(token)
            await parts.gateway.audit(
                ctx, now, event="web.logout", outcome="accepted", reason=None,
                detail=f"{session.operator} session={session.digest[:16]}",
            )  # fmt: skip
        except BatonError as exc:
            return await self._refuse(ctx, exc)
        parts.gateway.finish(ctx, 204, "accepted", "ok")
        response = web.Response(status=204)
        response.headers.add("Set-Cookie", clear_cookie())
        return response

    # ------------------------------------------------------------------ oidc
    async def oidc_start(self, request: web.Request) -> web.StreamResponse:
        oidc = self.parts.oidc
        if oidc is None:  # pragma: no cover - the route exists only with oidc
            raise web.HTTPNotFound()
        return await oidc.start(request)

    async def oidc_callback(self, request: web.Request) -> web.StreamResponse:
        parts = self.parts
        if parts.oidc is None:  # pragma: no cover - the route exists only with oidc
            raise web.HTTPNotFound()
        ctx = parts.gateway.context(request)
        try:
            name = await parts.oidc.finish(request)
            token, session = await self._begin(request, ctx, name, "oidc")
        except BatonError as exc:
            refused = await self._refuse(ctx, exc, event="web.login")
            refused.headers.add("Set-Cookie", _OIDC_COOKIE_CLEAR)
            return refused
        response = web.Response(status=302, headers={"Location": "/inbox/"})
        max_age = parts.sessions.max_age(session, parts.gateway.clock())
        response.headers.add("Set-Cookie", session_cookie(token, max_age=max_age))
        response.headers.add("Set-Cookie", _OIDC_COOKIE_CLEAR)
        return response

    # --------------------------------------------------------------- command
    async def command(self, request: web.Request) -> web.Response:
        parts = self.parts
        ctx = parts.gateway.context(request)
        try:
            _token, session = await self._guarded(request, ctx)
        except BatonError as exc:
            return await self._refuse(ctx, exc)
        return await parts.api.handle(request, session_operator=session.operator)

    # ---------------------------------------------------------------- events
    async def events(self, request: web.Request) -> web.StreamResponse:
        try:
            token, session = await self._session(request, touch=True)
        except SessionRequired as exc:
            return error_response(exc)
        operator = session.operator
        if self._streams.get(operator, 0) >= MAX_STREAMS:
            return error_response(
                RateLimited(f"{operator} has {MAX_STREAMS} streams open", retry_after=PING_S)
            )
        self._streams[operator] = self._streams.get(operator, 0) + 1
        try:
            return await self._stream(request, token, session)
        finally:
            self._streams[operator] -= 1
            if not self._streams[operator]:
                del self._streams[operator]

    @contextlib.contextmanager
    def _waker(self, digest: str, event: asyncio.Event) -> Iterator[None]:
        self._wakers.setdefault(digest, set()).add(event)
        try:
            yield
        finally:
            wakers = self._wakers.get(digest)
            if wakers is not None:
                wakers.discard(event)
                if not wakers:
                    del self._wakers[digest]

    async def _stream(
        self, request: web.Request, token: str, session: Session
    ) -> web.StreamResponse:
        parts = self.parts
        queues = self._serves[session.operator]
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        loop = asyncio.get_running_loop()
        with (
            parts.handoffs.watching_queues(queues) as changed,
            self._waker(session.digest, changed),
        ):
            await response.prepare(request)
            last: list[dict[str, Any]] | None = None
            next_ping = loop.time() + PING_S
            try:
                while not self._closing and not _gone(request):
                    now = parts.gateway.clock()
                    live = await parts.sessions.resume(token, now=now, touch=False)
                    if live is None or await self._password_replaced(token, live, now):
                        break
                    changed.clear()  # before reading: a change during the read wakes us again
                    bundles = await self._snapshot(queues)
                    if bundles != last:
                        data = json.dumps(
                            {"now": math.floor(now), "bundles": bundles}, separators=(",", ":")
                        )
                        await self._write(response, f"event: queue\ndata: {data}\n\n")
                        last = bundles
                    wait = min(parts.handoffs.poll_s, max(0.0, next_ping - loop.time()))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await changed.wait()
                    if loop.time() >= next_ping:
                        await self._write(response, ": ping\n\n")
                        next_ping = loop.time() + PING_S
            except (ConnectionError, TimeoutError):
                return response  # the client went away or stopped reading
            except BatonError as exc:  # the store failed: end; the browser reconnects
                log.warning("queue stream ended", extra={"reason": exc.diagnostics()})
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    @staticmethod
    async def _write(response: web.StreamResponse, text: str) -> None:
        async with asyncio.timeout(_WRITE_TIMEOUT_S):
            await response.write(text.encode("utf-8"))

    async def _snapshot(self, queues: tuple[str, ...]) -> list[dict[str, Any]]:
        """Summaries of each queue: its open bundles first, then the others,
        at most :data:`_PER_QUEUE` per queue, in the store's order."""
        store = self.parts.handoffs.store
        bundles: list[dict[str, Any]] = []
        for queue in queues:
            chosen: dict[str, InboxRecord] = {}
            for status in _SNAPSHOT_ORDER:
                for record in await store.list(queue, status=status, limit=_PER_QUEUE):
                    if len(chosen) >= _PER_QUEUE:
                        break
                    chosen.setdefault(record.bundle_id, record)
            ordered = sorted(chosen.values(), key=lambda r: (r.created_at, r.bundle_id))
            bundles.extend(summary(record, self._terms_of(record)) for record in ordered)
        return bundles

    def _terms_of(self, record: InboxRecord) -> Terms:
        """A bundle's clear terms never change: parse its sealed parts once."""
        terms = self._terms.get(record.bundle_id)
        if terms is None:
            terms = terms_of(record)
            self._terms[record.bundle_id] = terms
            if len(self._terms) > _TERMS_CACHE:
                self._terms.popitem(last=False)
        return terms

    # ---------------------------------------------------------------- routes
    def add_routes(self, app: web.Application) -> None:
        router = app.router
        for path in ("/inbox/", "/inbox/login", "/inbox/keys", "/inbox/bundle/{id}"):
            router.add_get(path, self.shell)
        router.add_get("/inbox/static/{file:.+}", self.static)
        router.add_get("/inbox/session", self.session)
        router.add_get("/inbox/session/methods", self.methods)
        router.add_post("/inbox/session/login", self.login)
        router.add_post("/inbox/session/logout", self.logout)
        router.add_post("/inbox/web/command", self.command)
        router.add_get("/inbox/web/events", self.events)
        if self._inbox.oidc is not None:
            router.add_get("/inbox/oidc/start", self.oidc_start)
            router.add_get("/inbox/oidc/callback", self.oidc_callback)


WEB_INBOX: Final = web.AppKey("web_inbox", WebInbox)


def mount(app: web.Application, runtime: Runtime, resolve: Resolve) -> WebInbox:
    """Serve the web inbox on the operator app ``app``; ``resolve`` returns the
    gateway app's gateway, handoffs and operator API once that app started."""
    inbox = WebInbox(runtime, resolve, StaticFiles.load())
    inbox.add_routes(app)
    hosts = listener_hosts(listener_origins(runtime.config))

    @web.middleware
    async def host_check(request: web.Request, handler: Handler) -> web.StreamResponse:
        """P06: a browser sent here by a rebound DNS name carries that name in
        ``Host``; only the signed command API (no browser can sign) skips this."""
        if request.path != "/inbox/api":
            check_host(request, hosts)
        return await handler(request)

    app.middlewares.append(host_check)
    app.cleanup_ctx.append(inbox.lifecycle)
    app.on_shutdown.append(inbox.shutdown)
    app[WEB_INBOX] = inbox
    return inbox
