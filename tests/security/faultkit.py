"""What the fault tests share: an injectable clock, a gateway in this process
on that clock (with its operator listener), ``baton serve`` subprocesses, a
private Redis that can be SIGKILLed and restarted on its own data, a signed
load generator, and the real CLI's verifiers.

Everything is real: ``baton init`` data folders, TLS 1.3 with client
certificates, RFC 9421 signatures, SQLite or a real ``redis-server``. Waits
are bounded polls, never sleeps that hope something happened.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web
from yarl import URL

from gateway.app import HANDOFFS, STORES, AppOptions, admin_app, gateway_app, operator_app
from gateway.config import load
from gateway.devdata import DataFolder, init_data_folder, write_operator
from gateway.handoffs import Handoffs
from gateway.metrics import Metrics
from gateway.runtime import load_runtime
from gateway.stores import Stores
from gateway.tls import operator_context, server_context
from protocol.identity import gateway_id
from protocol.operator import COMMAND_MEDIA_TYPE, make_command_at, sign_command
from tests.gateway._harness import (
    TRUST_DOMAIN,
    RecordingUpstream,
    agent_context,
    free_port,
    signed_headers,
    write_config,
)
from tests.security.conftest import Clock

REPO = Path(__file__).resolve().parents[2]
AGENTS = ("support", "billing", "legacy", "chatty")
OPERATORS = ("alice", "bob")
#: The queue the fault tests escalate to; both operators serve it.
QUEUE_CONFIG = """
[[queues]]
name = "refunds"
escalate_from = ["support"]
lease_s = 30

[[operators]]
name = "alice"
queues = ["refunds"]

[[operators]]
name = "bob"
queues = ["refunds"]
"""
READY_TIMEOUT_S = 20.0


async def until(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, what: str = ""
) -> None:
    """Poll ``predicate`` until true; fail (naming ``what``) after ``timeout`` s."""
    try:
        async with asyncio.timeout(timeout):
            while not await predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what or 'a condition'}")


def make_folder(root: Path, *, operators: Sequence[str] = ()) -> DataFolder:
    now = dt.datetime.now(dt.UTC)
    folder = init_data_folder(root, trust_domain=TRUST_DOMAIN, force=False, now=now, agents=AGENTS)
    for name in operators:
        write_operator(folder, name, now=now)
    return folder


def configure(
    folder: DataFolder,
    *,
    upstream_port: int,
    store: str = 'kind = "sqlite"\npath = ".baton/baton.db"',
    extra: str = "",
    gateway_extra: str = "",
) -> tuple[int, int, int]:
    """Write ``baton.toml`` (free ports, operator listener too); the ports."""
    port, admin_port, operator_port = free_port(), free_port(), free_port()
    write_config(
        folder,
        port=port,
        admin_port=admin_port,
        upstream_port=upstream_port,
        store=store,
        extra=extra,
    )
    text = folder.config.read_text(encoding="utf-8").replace(
        "drain_timeout_s = 10",
        f'drain_timeout_s = 10\noperator_listen = "127.0.0.1:{operator_port}"\n{gateway_extra}',
    )
    folder.config.write_text(text, encoding="utf-8")
    return port, admin_port, operator_port


# --------------------------------------------------------------- requests
def ssl_for(folder: DataFolder, scratch: Path, agent: str) -> ssl.SSLContext:
    return agent_context(folder, folder.load_agent(TRUST_DOMAIN, agent), scratch)


def json_rpc(method: str, rpc_id: int | str, params: dict[str, Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params}).encode()


def escalation(key: str, context_id: str, rpc_id: int | str = 1) -> bytes:
    """A2A ``SendMessage`` escalating ``a2a:<context_id>`` with idempotency ``key``."""
    from tests.interop.handoff_kit import handoff_message

    return json_rpc("SendMessage", rpc_id, {"message": handoff_message(key, context_id)})


async def post(
    session: aiohttp.ClientSession,
    folder: DataFolder,
    base: str,
    path: str,
    body: bytes,
    *,
    agent: str = "support",
    extra: Sequence[tuple[str, str]] = (),
    headers: Sequence[tuple[str, str]] | None = None,
    **sign: Any,
) -> tuple[int, bytes]:
    """One signed POST (or exactly ``headers``); status and body."""
    url = base + path
    if headers is None:
        material = folder.load_agent(TRUST_DOMAIN, agent)
        headers = signed_headers(material, "POST", url, body, extra=extra, **sign)
    async with session.post(
        URL(url, encoded=True), data=io.BytesIO(body), headers=list(headers)
    ) as response:
        return response.status, await response.read()


def error_code(payload: bytes) -> str:
    """Baton's stable code from a JSON-RPC error body (generic or A2A shape)."""
    data = json.loads(payload)["error"]["data"]
    if isinstance(data, list):  # A2A: google.rpc ErrorInfo details
        return str(data[0]["reason"]).lower()
    return str(data["code"])


# ------------------------------------------------------- in-process gateway
@dataclass
class InProcess:
    """A gateway in this process on an injected clock, its stores and peers."""

    folder: DataFolder
    scratch: Path
    upstream: RecordingUpstream
    app: web.Application
    clock: Clock
    port: int
    operator_port: int
    session: aiohttp.ClientSession
    _operators: dict[str, aiohttp.ClientSession] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def stores(self) -> Stores:
        return self.app[STORES]

    @property
    def handoffs(self) -> Handoffs:
        return self.app[HANDOFFS]

    async def send(self, path: str, body: bytes, **options: Any) -> tuple[int, bytes]:
        """A request from ``support``, signed at the clock's now unless told."""
        options.setdefault("created", int(self.clock.now))
        return await post(self.session, self.folder, self.base, path, body, **options)

    async def command(self, operator: str, op: str, **fields: Any) -> tuple[int, Any]:
        """Operator ``operator``'s signed command, issued at the clock's now."""
        material = self.folder.load_operator(operator)
        made = make_command_at(
            op,  # type: ignore[arg-type]
            operator=material.identity,
            audience=str(gateway_id(TRUST_DOMAIN, "gw1")),
            queue="refunds",
            now=self.clock.now,
            **fields,
        )
        token = sign_command(made, material.signing.active)
        session = self._operators.get(operator)
        if session is None:
            context = ssl.create_default_context(cafile=str(self.folder.ca_cert))
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
            self._operators[operator] = session
        async with session.post(
            f"https://127.0.0.1:{self.operator_port}/inbox/api",
            data=token.encode(),
            headers={"content-type": COMMAND_MEDIA_TYPE},
        ) as response:
            return response.status, json.loads(await response.read())

    async def audit_count(self) -> int:
        return len(await self.stores.audit.read(limit=100_000))


@asynccontextmanager
async def in_process(
    tmp_path: Path, clock: Clock, *, extra: str = QUEUE_CONFIG, gateway_extra: str = ""
) -> AsyncIterator[InProcess]:
    folder = make_folder(tmp_path / "home", operators=OPERATORS)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    upstream = RecordingUpstream(folder, folder.load_agent(TRUST_DOMAIN, "billing"), scratch)
    await upstream.start()
    port, admin_port, operator_port = configure(
        folder, upstream_port=upstream.port, extra=extra, gateway_extra=gateway_extra
    )
    runtime = load_runtime(load(folder.config), folder.root)
    metrics = Metrics()
    app = gateway_app(runtime, metrics, AppOptions(clock=clock, sweep_interval_s=0))
    runners = [web.AppRunner(app, access_log=None)]
    await runners[0].setup()
    tls = server_context(
        cert_file=runtime.cert_file,
        key_file=runtime.key_file,
        ca_file=runtime.ca_file,
        require_client_cert=True,
    )
    await web.TCPSite(runners[0], "127.0.0.1", port, ssl_context=tls).start()
    for sub, listen, context in (
        (admin_app(app, metrics), admin_port, None),
        (
            operator_app(app),
            operator_port,
            operator_context(cert_file=runtime.cert_file, key_file=runtime.key_file),
        ),
    ):
        runner = web.AppRunner(sub, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", listen, ssl_context=context).start()
        runners.append(runner)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl_for(folder, scratch, "support"))
    )
    running = InProcess(folder, scratch, upstream, app, clock, port, operator_port, session)
    try:
        yield running
    finally:
        await session.close()
        for client in running._operators.values():
            await client.close()
        for runner in reversed(runners):
            await runner.cleanup()
        await upstream.stop()


# ------------------------------------------------------------ subprocesses
@dataclass
class Served:
    """One ``baton serve`` process (its output in ``log``)."""

    folder: DataFolder
    port: int
    admin_port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--dir", str(self.folder.root),
                 "--log-level", "warning"],
                cwd=REPO, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip

    async def ready(self) -> None:
        async def answered() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"baton serve exited:\n{self.output()}")
            return await self.readyz() == 200

        await until(answered, timeout=READY_TIMEOUT_S, what="baton serve /readyz")

    async def readyz(self) -> int:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{self.admin_port}/readyz") as response,
            ):
                return response.status
        except aiohttp.ClientError:
            return 0

    def kill(self) -> None:
        """SIGKILL: no drain, no close, nothing flushed by the gateway."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM, bounded; SIGKILL if it does not stop."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            return -signal.SIGKILL


def baton(folder: DataFolder, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, as a user runs it, on ``folder``."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args, "--dir", str(folder.root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def cli_verifies(folder: DataFolder, conversations: Sequence[str]) -> None:
    """``baton transcript verify`` for each conversation and ``baton audit
    verify``, the real CLI in subprocesses (run side by side), all must pass."""
    runs: list[tuple[str, ...]] = [("transcript", "verify", c) for c in conversations]
    runs.append(("audit", "verify"))
    results = await asyncio.gather(*(asyncio.to_thread(baton, folder, *run) for run in runs))
    for run, result in zip(runs, results, strict=True):
        assert result.returncode == 0, f"baton {' '.join(run)}: {result.stdout}{result.stderr}"
        assert ": ok, " in result.stdout, result.stdout


def sqlite_conversations(folder: DataFolder) -> list[str]:
    """Every conversation in the SQLite store (read-only, after the gateway stopped)."""
    db = folder.root / ".baton" / "baton.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT DISTINCT conversation FROM transcript_entries").fetchall()
    return sorted(str(row[0]) for row in rows)


# ------------------------------------------------------------ private Redis
@dataclass
class PrivateRedis:
    """A ``redis-server`` of this test's own on ``port``, persisting to ``data``
    (append-only file, fsync on every write): SIGKILL loses nothing acknowledged."""

    data: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        self.data.mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)

        def pong() -> bool:
            try:
                return bool(client.ping())
            except (redis.ConnectionError, redis.BusyLoadingError):
                return False

        async def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.process.returncode}")
            return await asyncio.to_thread(pong)

        try:
            await until(up, timeout=10, what="private redis-server")
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


async def open_stores(folder: DataFolder) -> Stores:
    """This process's own view of ``folder``'s configured store."""
    return await load_runtime(load(folder.config), folder.root).open_stores()
