"""The official MCP conformance suite, directly and through the gateway: equal results.

``@modelcontextprotocol/conformance`` 0.1.16 (``tests/interop/conformance``,
run with the Node 22 of the pinned ``node@22`` package) plays the MCP client
against :func:`~tests.interop.conformance_server.build_conformance_server`
twice, every server scenario of the ``all`` suite each time:

* **direct** - the server under uvicorn on plain HTTP;
* **gateway** - the same server as an mTLS upstream (``everything``, behind
  :class:`~adapters.agent.GatewayVerifier`), reached through the gateway by
  agent ``support`` via an in-process ``baton sidecar``
  (:func:`gateway.sidecar.sidecar_app`), since the suite can neither present a
  client certificate nor sign: ``http://127.0.0.1:SIDECAR/u/everything/mcp``.

The suite writes one ``checks.json`` per scenario (``-o DIR``); its stdout
summary names every scenario it ran. The test asserts that both runs cover the
same scenarios, that every scenario has the same checks with the same verdicts
(``SUCCESS``/``FAILURE``/``WARNING``), so equal pass counts, and that the direct
run passes at least the floor measured with this server. Both counts are
printed (``-s``); per-scenario results go to ``conformance.json`` under
``$BATON_ARTIFACTS`` or the test's tmp dir.

Node runs as a subprocess of the event loop that also serves the gateway, the
sidecar and both servers (``asyncio.create_subprocess_exec``; a blocking call
would deadlock). Needs ``npm ci --prefix tests/interop/conformance``; skipped
without it unless ``BATON_REQUIRE_NODE=1``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
import uvicorn
from aiohttp import web

from gateway.app import STORES, AppOptions, gateway_app
from gateway.config import load
from gateway.devdata import DataFolder, init_data_folder
from gateway.metrics import Metrics
from gateway.runtime import load_runtime
from gateway.sidecar import SidecarConfig, agent_tls_context, sidecar_app
from gateway.stores import Stores
from gateway.tls import server_context
from tests.gateway._harness import TRUST_DOMAIN, free_port
from tests.interop.conformance_server import build_conformance_server, conformance_app
from tests.interop.conftest import Recorded, serve_upstream

SUITE_DIR: Final = Path(__file__).parent / "conformance"
NODE: Final = SUITE_DIR / "node_modules" / "node" / "bin" / "node"
CLI: Final = (
    SUITE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
)
SUITE_VERSION: Final = "0.1.16"
SUITE_TIMEOUT_S: Final = 120
#: The suite leaves its standalone GET streams open (0.1.16 never DELETEs a session);
#: a relay notices its client is gone only at the upstream's next SSE ping (15 s),
#: so the sidecar and the gateway cancel what is left after this long.
SHUTDOWN_S: Final = 1.0
#: Every server scenario of the suite's "all" list in 0.1.16, in its order.
SCENARIOS: Final = (
    "server-initialize", "logging-set-level", "ping", "completion-complete", "tools-list",
    "tools-call-simple-text", "tools-call-image", "tools-call-audio",
    "tools-call-embedded-resource", "tools-call-mixed-content", "tools-call-with-logging",
    "tools-call-error", "tools-call-with-progress", "tools-call-sampling",
    "tools-call-elicitation", "json-schema-2020-12", "elicitation-sep1034-defaults",
    "server-sse-polling", "server-sse-multiple-streams", "elicitation-sep1330-enums",
    "resources-list", "resources-read-text", "resources-read-binary",
    "resources-templates-read", "resources-subscribe", "resources-unsubscribe",
    "prompts-list", "prompts-get-simple", "prompts-get-with-args",
    "prompts-get-embedded-resource", "prompts-get-with-image", "dns-rebinding-protection",
)  # fmt: skip
#: Measured with this server directly: 44 checks pass, none fails (server-sse-polling
#: yields only WARNING/INFO: the suite asks with protocol 2025-03-26, for which the
#: SDK neither primes the stream nor closes it early).
DIRECT_PASS_FLOOR: Final = 44
VERDICTS: Final = ("SUCCESS", "FAILURE", "WARNING")
_RESULT_DIR: Final = re.compile(r"server-(?P<scenario>.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z")
_SUMMARY: Final = re.compile(
    r"^[✓✗] (?P<scenario>\S+): (?P<passed>\d+) passed, (?P<failed>\d+) failed$"
)


def _missing_suite() -> str | None:
    if not (NODE.is_file() and CLI.is_file()):
        return (
            "tests/interop/conformance/node_modules is missing: run "
            "`npm ci --prefix tests/interop/conformance` (it brings Node 22 and the suite)"
        )
    return None


if _missing_suite() is not None and os.environ.get("BATON_REQUIRE_NODE") == "1":
    raise RuntimeError(f"BATON_REQUIRE_NODE=1 but {_missing_suite()}")
pytestmark = [
    pytest.mark.skipif(_missing_suite() is not None, reason=_missing_suite() or ""),
    pytest.mark.timeout(180),
]


# --------------------------------------------------------------------------- suite results


@dataclass(frozen=True, slots=True)
class Check:
    id: str
    status: str
    error: str | None


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """One scenario of one run: the summary line's counts and its checks.json."""

    scenario: str
    passed: int
    failed: int
    checks: tuple[Check, ...]

    @property
    def verdicts(self) -> list[tuple[str, str]]:
        """The (check id, status) pairs that are verdicts (INFO is a transcript)."""
        return [(check.id, check.status) for check in self.checks if check.status in VERDICTS]


@dataclass(frozen=True, slots=True)
class SuiteRun:
    target: str
    url: str
    returncode: int
    seconds: float
    scenarios: dict[str, ScenarioResult]
    stdout: str = field(repr=False)

    @property
    def passed(self) -> int:
        return sum(result.passed for result in self.scenarios.values())

    @property
    def failed(self) -> int:
        return sum(result.failed for result in self.scenarios.values())

    def failures(self) -> dict[str, list[str]]:
        """Failing check ids per scenario that failed."""
        return {
            name: [check.id for check in result.checks if check.status == "FAILURE"]
            for name, result in self.scenarios.items()
            if result.failed
        }


def _summary(stdout: str) -> dict[str, tuple[int, int]]:
    """``✓ name: P passed, F failed`` lines after ``=== SUMMARY ===``."""
    _, _, tail = stdout.partition("=== SUMMARY ===")
    counts: dict[str, tuple[int, int]] = {}
    for line in tail.splitlines():
        match = _SUMMARY.match(line.strip())
        if match:
            counts[match["scenario"]] = (int(match["passed"]), int(match["failed"]))
    return counts


def _checks(output: Path) -> dict[str, tuple[Check, ...]]:
    """Each scenario's ``checks.json`` in ``output`` (one directory per scenario)."""
    found: dict[str, tuple[Check, ...]] = {}
    for directory in sorted(output.iterdir()):
        match = _RESULT_DIR.fullmatch(directory.name)
        assert match, f"unexpected entry in the suite's output: {directory.name}"
        raw = json.loads((directory / "checks.json").read_text(encoding="utf-8"))
        found[match["scenario"]] = tuple(
            Check(str(item["id"]), str(item["status"]), item.get("errorMessage")) for item in raw
        )
    return found


async def run_suite(target: str, url: str, output: Path) -> SuiteRun:
    """``conformance server --url URL --suite all -o OUTPUT`` under Node 22, non-blocking."""
    output.mkdir(parents=True)
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "NO_COLOR": "1"}
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(proxy, None)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        str(NODE), str(CLI), "server", "--url", url, "--suite", "all", "-o", str(output),
        cwd=str(SUITE_DIR),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(SUITE_TIMEOUT_S):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"the suite ({target}) did not finish in {SUITE_TIMEOUT_S}s") from None
    stdout = out.decode(errors="replace")
    counts, checks = _summary(stdout), _checks(output)
    assert counts, f"no summary in the suite's output ({target}):\n{stdout[-4000:]}"
    scenarios = {
        name: ScenarioResult(name, passed, failed, checks.get(name, ()))
        for name, (passed, failed) in counts.items()
    }
    assert process.returncode is not None
    return SuiteRun(target, url, process.returncode, time.monotonic() - started, scenarios, stdout)


def _as_json(run: SuiteRun) -> dict[str, Any]:
    return {
        "url": run.url,
        "returncode": run.returncode,
        "seconds": round(run.seconds, 2),
        "passed": run.passed,
        "failed": run.failed,
        "scenarios": {
            name: {
                "passed": result.passed,
                "failed": result.failed,
                "checks": [asdict(check) for check in result.checks if check.status != "INFO"],
            }
            for name, result in run.scenarios.items()
        },
    }


# --------------------------------------------------------------------------- the two targets


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def serve_plain(app: Any) -> AsyncIterator[int]:
    """``app`` under uvicorn on plain HTTP, 127.0.0.1 and a free port."""
    sock = _bound_socket()
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task
        sock.close()


def _gateway_config(port: int, admin: int, upstream_port: int) -> str:
    return f"""
trust_domain = "{TRUST_DOMAIN}"

[gateway]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
drain_timeout_s = 5

[store]
kind = "sqlite"
path = ".baton/baton.db"

[[agents]]
name = "support"

[[agents]]
name = "everything"

[[upstreams]]
name = "everything"
url = "https://127.0.0.1:{upstream_port}"
protocol = "mcp"
timeout_s = 30

[[policy.allow]]
caller = "support"
upstream = "everything"
methods = ["*"]
tools = ["*"]
resources = ["*"]
prompts = ["*"]
"""


def _own_origin(sidecar_port: int) -> str:
    """The sidecar's own origin, allowed on the sidecar (``--allow-origin``).

    ``dns-rebinding-protection`` sends ``Origin: http://<host of the URL>`` and
    wants a 2xx. The sidecar allows no browser origin by default (403
    ``origin_rejected``); an operator who lets a same-origin client in allows it
    there, and the sidecar does not forward it (the gateway still allows none).
    The rebinding half (``Host: evil.example.com``) is refused by the sidecar (421).
    """
    return f"http://127.0.0.1:{sidecar_port}"


@dataclass
class Targets:
    direct_url: str
    gateway_url: str
    stores: Stores
    upstream_seen: Recorded


@asynccontextmanager
async def _gateway(folder: DataFolder, upstream_port: int) -> AsyncIterator[tuple[str, Stores]]:
    port = free_port()
    config = _gateway_config(port, free_port(), upstream_port)
    folder.config.write_text(config, encoding="utf-8")
    runtime = load_runtime(load(folder.config), folder.root)
    app = gateway_app(runtime, Metrics(), AppOptions())
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    tls = server_context(
        cert_file=runtime.cert_file,
        key_file=runtime.key_file,
        ca_file=runtime.ca_file,
        require_client_cert=True,
    )
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
    try:
        yield f"https://127.0.0.1:{port}", app[STORES]
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _sidecar(folder: DataFolder, gateway_url: str, port: int) -> AsyncIterator[str]:
    """``baton sidecar`` for agent ``support``: plain HTTP on loopback, signed mTLS onwards."""
    agent_dir = folder.agent("support")
    config = SidecarConfig(
        gateway_url=gateway_url,
        listen_host="127.0.0.1",
        listen_port=port,
        allowed_origins=frozenset({_own_origin(port)}),
        signing_key=folder.load_agent(TRUST_DOMAIN, "support").signing.active,
        tls=agent_tls_context(
            str(folder.ca_cert), str(agent_dir / "tls.pem"), str(agent_dir / "tls.key")
        ),
    )
    runner = web.AppRunner(sidecar_app(config), access_log=None, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def targets(tmp_path: Path) -> AsyncIterator[Targets]:
    folder = init_data_folder(
        tmp_path / "home",
        trust_domain=TRUST_DOMAIN,
        force=False,
        now=dt.datetime.now(dt.UTC),
        agents=("support", "everything"),
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    upstream_app = conformance_app(build_conformance_server())
    sidecar_port = free_port()
    async with (
        serve_plain(conformance_app(build_conformance_server())) as direct_port,
        serve_upstream(folder, "everything", lambda _port: upstream_app, scratch) as (
            upstream_port,
            upstream_seen,
        ),
        _gateway(folder, upstream_port) as (gateway_url, stores),
        _sidecar(folder, gateway_url, sidecar_port) as sidecar_url,
    ):
        yield Targets(
            f"http://127.0.0.1:{direct_port}/mcp",
            f"{sidecar_url}/u/everything/mcp",
            stores,
            upstream_seen,
        )


# --------------------------------------------------------------------------- the test


def _artifact_dir(tmp_path: Path) -> Path:
    configured = os.environ.get("BATON_ARTIFACTS")
    target = Path(configured) if configured else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    return target


def _differences(direct: SuiteRun, gateway: SuiteRun) -> dict[str, dict[str, Any]]:
    """Scenarios whose verdicts differ, with both sides' failing checks."""
    differing: dict[str, dict[str, Any]] = {}
    for name in sorted(set(direct.scenarios) | set(gateway.scenarios)):
        mine, theirs = direct.scenarios.get(name), gateway.scenarios.get(name)
        if mine is None or theirs is None or mine.verdicts != theirs.verdicts:
            differing[name] = {
                run.target: None
                if result is None
                else [asdict(c) for c in result.checks if c.status in ("FAILURE", "WARNING")]
                for run, result in ((direct, mine), (gateway, theirs))
            }
    return differing


async def test_conformance_suite_passes_the_same_through_the_gateway(
    targets: Targets, tmp_path: Path
) -> None:
    direct = await run_suite("direct", targets.direct_url, tmp_path / "direct")
    gateway = await run_suite("gateway", targets.gateway_url, tmp_path / "gateway")
    rejected = [
        {"event": event.event, "reason": event.reason, "detail": event.detail}
        for event in await targets.stores.audit.read()
        if event.outcome == "rejected"
    ]
    differences = _differences(direct, gateway)
    reached = Counter(method for method, _, _ in targets.upstream_seen.requests)
    artifact = _artifact_dir(tmp_path) / "conformance.json"
    artifact.write_text(
        json.dumps(
            {
                "suite": f"@modelcontextprotocol/conformance@{SUITE_VERSION}",
                "direct": _as_json(direct),
                "gateway": _as_json(gateway),
                "differences": differences,
                "gateway_rejections": rejected,
                "upstream_requests_by_method": dict(reached),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    print(
        f"\nMCP conformance {SUITE_VERSION}: direct {direct.passed} passed / {direct.failed} "
        f"failed ({direct.seconds:.1f}s); through the gateway {gateway.passed} passed / "
        f"{gateway.failed} failed ({gateway.seconds:.1f}s); {len(SCENARIOS)} scenarios; "
        f"results in {artifact}"
    )

    assert tuple(direct.scenarios) == SCENARIOS, direct.stdout[-4000:]
    assert tuple(gateway.scenarios) == SCENARIOS, gateway.stdout[-4000:]
    assert direct.passed >= DIRECT_PASS_FLOOR, direct.failures()
    assert differences == {}, json.dumps(
        {"differences": differences, "gateway_rejections": rejected}, indent=2
    )
    assert (gateway.passed, gateway.failed) == (direct.passed, direct.failed)
    assert gateway.failures() == direct.failures()
    assert rejected == [], "the gateway refused requests the upstream would have served"
    # Through the gateway, the traffic really went through it: every request
    # that reached the upstream carried the gateway's verified signature.
    assert targets.upstream_seen.requests
    assert all("baton-caller" in headers for _, _, headers in targets.upstream_seen.requests)
