"""Data-plane throughput and latency: Baton's stages against a bare proxy, in one run.

Run: ``.venv/bin/python bench/bench_gateway.py [--rounds 3] [--duration 10] [--source REV]
[--workload jsonrpc,mcp,a2a] [--configs KEYS] [--write]``

Every server runs in its own process, the load generator (``bench/loadgen``,
Go, built by ``bench/loadgen/build.sh``) in another, so no two share a Python
interpreter. On a fresh ``baton init`` folder in a temporary directory it
starts one upstream (``bench/upstream.py``: aiohttp, mutual TLS, the
``billing`` certificate) and then measures, per round:

* ``direct``: load generator -> upstream;
* ``bare``: load generator -> ``bench/bare_proxy.py`` -> upstream, the
  baseline: Baton's transport (TLS 1.3 listener requiring a client
  certificate, pooled pinned mTLS to the upstream) without any stage;
* the ladder, ``bench/stage_server.py`` serving ``gateway_app`` with
  ``AppOptions(stages=...)``: a. mutual TLS authentication and forwarding
  only; b. + RFC 9421 verification; c. + replay (SQLite); d. + replay
  (Redis); e. + transcript and audit (SQLite); f. the full pipeline
  (``ALL_STAGES``, SQLite);
* ``f1``/``g``: the full pipeline through the real CLI, ``baton serve
  --workers 1`` and ``--workers 2`` (``SO_REUSEPORT``), ``--log-level warning``;
* ``g2``: diagnostic, two ``stage_server.py --reuse-port`` processes (the
  full pipeline), i.e. ``--workers 2`` with both workers logging at WARNING.

Requests (``--workload``, a comma-separated list; each workload gets its own
bare proxy baseline, servers and table, in every round):

* ``jsonrpc`` (default): ``POST /u/billing/mcp``, a ~200-byte JSON-RPC
  ``tools/call`` to an upstream of ``protocol = "http"`` (policy on the
  method only);
* ``mcp``: ``POST /u/billing/mcp`` to an upstream of ``protocol = "mcp"``,
  an MCP 2026-07-28 ``tools/call`` of the ``echo`` tool (stateless era: no
  session) with ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name``
  matching the body; policy ``methods = ["tools/call"]``, ``tools =
  ["echo"]``; the upstream answers a ``CallToolResult`` shaped like the MCP
  SDK's;
* ``a2a``: ``POST /u/billing/a2a`` to an upstream of ``protocol = "a2a"``, an
  A2A v1.0 JSON-RPC ``SendMessage`` (a fresh ``messageId`` each) with
  ``A2A-Version: 1.0``; policy ``methods = ["SendMessage"]``; the upstream
  answers a completed Task whose task id is new on every answer, so the
  gateway writes one task binding (``BindingStore``) per response.

Every request is signed by the ``support`` agent (``@method @target-uri
@authority content-digest`` and the protocol headers present:
``mcp-protocol-version mcp-method mcp-name`` or ``a2a-version``), one unique
nonce each, ``created`` = when the pool was built, just before its run (the
freshness window is 60 s), ``Host`` = the server's address. The rows
without replay protection reuse a pool cyclically (``-loop``). ``--configs``
picks the configurations (for every workload); by default ``jsonrpc``
measures all of them and ``mcp``/``a2a`` measure ``bare``, ``f`` (the full
pipeline, SQLite, one worker) and ``g`` (``baton serve --workers 2``).

Method, per round: all servers start; each one gets a closed-loop run (32
keep-alive connections, warmup excluded) whose throughput is its
saturation; then an open-loop run at half the bare proxy's saturation
(tier "hi") if that is at most 2/3 of its own saturation, else at half the
saturation of the slowest such configuration (tier "lo"), where the bare
proxy is measured again. "Added" latency is a configuration's p50/p99 minus
the bare proxy's at the same rate, in the same round. Rounds alternate the
order of the ladder; the tables give medians over rounds of the per-round
values (ratios are taken within a round, where VM noise is shared).

Noise: this VM is shared. Each round waits for an idle machine first, and a
measurement during which other processes took more than ``NOISY`` cores is
repeated once (the "other" column of the log). ``--source REV`` serves a
``git archive`` of that commit, so edits to the working tree during the run
do not mix code versions; without it, a change of the code under test
between rounds is detected and flagged.

Outputs: a table per workload on stdout, ``data_plane.json`` and
``data_plane.md`` in ``--results`` (default ``bench/results``); ``--write``
also puts the tables into ``bench/RESULTS.md`` (between data-plane markers).
The JSON keeps the ``jsonrpc`` workload's analysis at the top level (``rows``,
``per_round``, ``goals``, as before) and the other workloads' under
``workloads``; every raw measurement names its workload. Unless
``--no-profile``, the full pipeline is then sampled under load with py-spy
(``pip install py-spy`` into the venv; the ``jsonrpc`` workload if measured,
else the first) and its top functions go to ``full_pipeline_profile.txt``.

Work-around: for the two-worker rows the SQLite file is created in WAL mode
before the workers start (see :func:`prepare_sqlite`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import platform
import re
import secrets
import select
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.devdata import DataFolder, init_data_folder
from keys.httpsig import HttpRequest, content_digest, sign
from keys.material import PrivateKey
from protocol.identity import agent_id

PYTHON = sys.executable
BATON = str(Path(PYTHON).parent / "baton")
LOADGEN = ROOT / "bench" / ".build" / "loadgen"
RESULTS = ROOT / "bench" / "results"
TRUST_DOMAIN = "baton.local"
REQUEST_PATH = "/u/billing/mcp"
REDIS_URL = "redis://127.0.0.1:6379/0"
COMPONENTS = ("@method", "@target-uri", "@authority", "content-digest")
BEGIN, END = "<!-- data-plane:begin -->", "<!-- data-plane:end -->"
#: A configuration runs open-loop at half the bare proxy's saturation only if
#: that is at most this fraction of its own saturation.
SUSTAIN = 2 / 3
#: A measurement during which other work took more CPU than this (cores) is repeated once.
NOISY = 0.3
PROFILE_FLAGS = ("--nonblocking", "--function", "--threads", "--rate", "200")
CODE = ("gateway", "keys", "protocol", "adapters")
#: Environment of the server processes: PYTHONPATH points at a snapshot with --source.
SERVER_ENV: dict[str, str] | None = None


# --------------------------------------------------------------- configurations
@dataclass(frozen=True)
class Config:
    key: str
    label: str
    kind: str  # "upstream" | "bare" | "stage" | "cli"
    stages: str = "all"
    store: str = "sqlite"
    workers: int = 1
    replay: bool = False  # nonces are claimed: every request of the pool is unique


CONFIGS = (
    Config("direct", "direct: loadgen -> upstream", "upstream"),
    Config("bare", "bare proxy (baseline)", "bare"),
    Config("a", "a. mTLS only (stages=[])", "stage", stages=""),
    Config("b", "b. + signature verify", "stage", stages="signature"),
    Config("c", "c. + replay, SQLite", "stage", stages="signature,replay", replay=True),
    Config(
        "d", "d. + replay, Redis", "stage", stages="signature,replay", store="redis", replay=True
    ),
    Config("e", "e. + transcript, SQLite", "stage", stages="signature,replay,record", replay=True),
    Config("f", "f. full pipeline, SQLite", "stage", replay=True),
    Config("f1", "f1. full, `baton serve` 1 worker", "cli", replay=True),
    Config("g", "g. full, `baton serve --workers 2`", "cli", workers=2, replay=True),
    Config("g2", "g2. full, 2 stage servers (reuse_port)", "stage", workers=2, replay=True),
)
BY_KEY = {config.key: config for config in CONFIGS}
#: The rung each configuration adds to: its CPU per request is shown as a difference to it.
PREVIOUS = {"a": "bare", "b": "a", "c": "b", "d": "b", "e": "c", "f": "e", "f1": "f", "g": "f1",
            "g2": "f"}  # fmt: skip


# ------------------------------------------------------------------- utilities
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


_TICK = os.sysconf("SC_CLK_TCK")


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes in process group ``pgid``."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def busy_cpu() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK


def wait_quiet(limit_s: float, threshold: float = 0.15) -> float:
    """Wait (at most ``limit_s``) until the machine is idle: less than ``threshold`` cores
    busy over two seconds. Returns the last busy reading (cores)."""
    deadline = time.monotonic() + limit_s
    while True:
        before = busy_cpu()
        time.sleep(2)
        cores = (busy_cpu() - before) / 2
        if cores < threshold or time.monotonic() > deadline:
            return cores
        log(f"  waiting for a quiet machine: {cores:.2f} cores busy")


def listeners(port: int) -> int:
    out = subprocess.run(  # noqa: S603
        ["/usr/bin/ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout
    return len([line for line in out.splitlines() if line.strip()])


# --------------------------------------------------------------------- servers
@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    log_path: Path
    admin_port: int | None = None  # readiness by /readyz instead of a READY line
    metrics_port: int | None = None  # /metrics with the stage histograms (one process only)
    expect_listeners: int = 1
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, copies: int = 1, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as err:
            for _ in range(copies):
                self.procs.append(
                    subprocess.Popen(  # noqa: S603
                        self.argv,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        stdin=subprocess.DEVNULL,
                        cwd=ROOT,
                        env=SERVER_ENV,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + timeout
        if self.admin_port is None:
            for proc in self.procs:
                self._await_line(proc, deadline)
        else:
            self._await_readyz(deadline)
        while listeners(self.port) < self.expect_listeners:
            self._check_deadline(deadline)
            time.sleep(0.1)

    def _check_deadline(self, deadline: float) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{self.name} not ready in time: see {self.log_path}")

    def _await_line(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        assert proc.stdout is not None
        while True:
            self._check_deadline(deadline)
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline()
                if line.startswith(b"READY"):
                    return

    def _await_readyz(self, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.admin_port}/readyz"
        while True:
            self._check_deadline(deadline)
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url, timeout=1) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.2)

    def cpu(self) -> float:
        return sum(group_cpu(proc.pid) for proc in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            # A supervisor's workers share its process group: make sure none is left.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()


def scrape_stages(port: int | None) -> dict[str, dict[str, float]] | None:
    """The gateway's per-stage latency histograms (cumulative) from its /metrics."""
    if port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line.startswith(("baton_stage_seconds_", "baton_request_seconds_")):
            continue
        series, _, value = line.rpartition(" ")
        name, _, label_text = series.partition("{")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        stage = labels.get("stage", "whole request")
        kind = name.rsplit("_", 1)[1]
        if kind == "bucket":
            out.setdefault(stage, {})["le " + labels["le"]] = float(value)
        elif kind in ("count", "sum"):
            out.setdefault(stage, {})[kind] = float(value)
    return out


def stage_summary(
    before: dict[str, dict[str, float]] | None, after: dict[str, dict[str, float]] | None
) -> dict[str, dict[str, float]] | None:
    """Per stage, over one run: mean ms and the share of requests above 2.5, 10 and 25 ms."""
    if not before or not after:
        return None
    out = {}
    for stage, values in after.items():
        old = before.get(stage, {})
        count = values.get("count", 0.0) - old.get("count", 0.0)
        if count <= 0:
            continue
        total = values.get("sum", 0.0) - old.get("sum", 0.0)

        below = {
            le: values.get("le " + le, 0.0) - old.get("le " + le, 0.0)
            for le in ("0.0025", "0.01", "0.025")
        }
        out[stage] = {
            "mean_ms": round(total / count * 1000, 3),
            "over_2.5ms": round(1 - below["0.0025"] / count, 5),
            "over_10ms": round(1 - below["0.01"] / count, 5),
            "over_25ms": round(1 - below["0.025"] / count, 5),
        }
    return out


# ------------------------------------------------------------------------ pools
def request_body(index: int) -> bytes:
    """A JSON-RPC ``tools/call`` of about 210 bytes."""
    message = {
        "jsonrpc": "2.0",
        "id": index,
        "method": "tools/call",
        "params": {
            "name": "refund.lookup",
            "arguments": {
                "order": f"A-{index % 1000000:06d}",
                "customer": "cus_8f3a2c91",
                "reason": "duplicate charge on card ending 4242",
                "locale": "de-DE",
            },
        },
    }
    return json.dumps(message, separators=(",", ":")).encode()


Headers = list[tuple[str, str]]


def _compact(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def jsonrpc_request(index: int) -> tuple[bytes, Headers]:
    """The generic workload: :func:`request_body`, no protocol headers."""
    return request_body(index), []


def mcp_request(index: int) -> tuple[bytes, Headers]:
    """An MCP 2026-07-28 ``tools/call`` of ``echo`` and the headers that era requires.

    ``MCP-Protocol-Version`` equals ``params._meta``'s version, ``Mcp-Method``
    the method and ``Mcp-Name`` the tool (2026-07-28 transports, "Custom
    Headers"), so the gateway's adapter accepts it; ``Accept`` as the SDK
    client sends it.
    """
    message = {
        "jsonrpc": "2.0",
        "id": index,
        "method": "tools/call",
        "params": {
            "name": "echo",
            "arguments": {"text": f"refund A-{index % 1000000:06d}: duplicate charge, card 4242"},
            "_meta": {MCP_META_VERSION: MCP_VERSION},
        },
    }
    headers = [
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", MCP_VERSION),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
    ]
    return _compact(message), headers


def a2a_request(index: int) -> tuple[bytes, Headers]:
    """An A2A v1.0 JSON-RPC ``SendMessage`` (spec s9) with a fresh ``messageId``."""
    message = {
        "jsonrpc": "2.0",
        "id": f"req-{index}",
        "method": "SendMessage",
        "params": {
            "message": {
                "messageId": str(uuid.uuid4()),
                "role": "ROLE_USER",
                "parts": [{"text": f"refund A-{index % 1000000:06d}: duplicate charge, card 4242"}],
            },
            "configuration": {},
        },
    }
    return _compact(message), [("a2a-version", "1.0")]


@dataclass(frozen=True)
class Workload:
    """What the load generator sends, and how the generated baton.toml serves it."""

    key: str
    title: str
    path: str  # request path at the gateway (``/u/billing/...``)
    protocol: str  # the upstream's ``protocol`` in baton.toml
    policy: str  # the ``[[policy.allow]]`` lines after ``upstream = "billing"``
    build: Callable[[int], tuple[bytes, Headers]]  # index -> body, protocol headers
    #: Headers the signature covers after ``COMPONENTS`` (the ones ``build`` sends).
    covered: tuple[str, ...]
    configs: tuple[str, ...]  # the configurations measured unless --configs says otherwise
    upstream_answer: str

    def describe(self) -> str:
        body, headers = self.build(0)
        sent = ", ".join(f"`{name}`" for name, _ in headers) or "none"
        policy = "; ".join(self.policy.strip().splitlines())
        return (
            f"Requests: `POST {self.path}`, {self.title} (~{len(body)}-byte body; extra "
            f"headers: {sent}), signed over `{' '.join((*COMPONENTS, *self.covered))}`. "
            f'Upstream `protocol = "{self.protocol}"`, policy `{policy}`. '
            f"The upstream answers {self.upstream_answer}."
        )


MCP_VERSION = "2026-07-28"
MCP_META_VERSION = "io.modelcontextprotocol/protocolVersion"
WORKLOADS = {
    w.key: w
    for w in (
        Workload(
            "jsonrpc", "a generic JSON-RPC `tools/call`", REQUEST_PATH, "http",
            'methods = ["tools/call"]\n', jsonrpc_request, (), tuple(c.key for c in CONFIGS),
            "a fixed JSON-RPC result",
        ),
        Workload(
            "mcp", f"MCP {MCP_VERSION} `tools/call` of the `echo` tool (stateless, no session)",
            "/u/billing/mcp", "mcp", 'methods = ["tools/call"]\ntools = ["echo"]\n',
            mcp_request, ("mcp-protocol-version", "mcp-method", "mcp-name"), ("bare", "f", "g"),
            "a `CallToolResult` shaped like the MCP SDK's (`resultType: complete`)",
        ),
        Workload(
            "a2a", "A2A v1.0 JSON-RPC `SendMessage`", "/u/billing/a2a", "a2a",
            'methods = ["SendMessage"]\n', a2a_request, ("a2a-version",), ("bare", "f", "g"),
            "a completed Task with a new task id and context id each time: the gateway binds "
            "every answer's task to the caller (one BindingStore write per response)",
        ),
    )
}  # fmt: skip


_POOL_KEY: PrivateKey | None = None  # set before forking the signing workers


def _pool_chunk(job: tuple[int, int, str, int, str]) -> str:
    start, count, authority, created, workload_key = job
    key = _POOL_KEY
    assert key is not None
    workload = WORKLOADS[workload_key]
    url = f"https://{authority}{workload.path}"
    components = (*COMPONENTS, *workload.covered)
    lines = []
    for index in range(start, start + count):
        body, extra = workload.build(index)
        headers = [
            ("content-type", "application/json"),
            *extra,
            ("content-digest", content_digest(body)),
        ]
        signature_input, signature = sign(
            HttpRequest("POST", url, headers),
            key,
            components=components,
            created=created,
            nonce=secrets.token_urlsafe(16),
        )
        entry = {
            "method": "POST",
            "path": workload.path,
            "headers": [
                ["host", authority],
                *[list(pair) for pair in headers],
                ["signature-input", signature_input],
                ["signature", signature],
            ],
            "body_b64": base64.b64encode(body).decode(),
        }
        lines.append(json.dumps(entry, separators=(",", ":")))
    return "\n".join(lines) + "\n"


def _worker_signals() -> None:
    """Signing workers: default SIGTERM (the pool ends them with it), no SIGINT."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def write_pool(
    path: Path, key: PrivateKey, authority: str, count: int, workload: str = "jsonrpc"
) -> float:
    """Sign ``count`` fresh ``workload`` requests for ``authority`` into ``path``; return
    seconds taken."""
    global _POOL_KEY  # noqa: PLW0603
    started = time.monotonic()
    _POOL_KEY = key
    created = int(time.time())
    chunk = 5000
    jobs = [
        (i, min(chunk, count - i), authority, created, workload) for i in range(0, count, chunk)
    ]
    with path.open("w") as out:
        if count <= 2 * chunk:
            for job in jobs:
                out.write(_pool_chunk(job))
        else:
            with multiprocessing.get_context("fork").Pool(2, initializer=_worker_signals) as pool:
                for text in pool.imap(_pool_chunk, jobs):
                    out.write(text)
                pool.close()
                pool.join()
    return time.monotonic() - started


# --------------------------------------------------------------------- loadgen
@dataclass(frozen=True)
class Client:
    ca: Path
    cert: Path
    key: Path
    connections: int


def loadgen(
    client: Client,
    port: int,
    pool: Path,
    *,
    duration: float,
    warmup: int,
    rate: float | None = None,
    loop: bool = False,
) -> dict[str, Any]:
    argv = [
        str(LOADGEN),
        "-url", f"https://127.0.0.1:{port}",
        "-cacert", str(client.ca),
        "-cert", str(client.cert),
        "-key", str(client.key),
        "-requests", str(pool),
        "-c", str(client.connections),
        "-warmup", str(warmup),
        "-duration", f"{duration}s",
    ]  # fmt: skip
    if rate is not None:
        argv += ["-rate", f"{rate:.0f}"]
    if loop:
        argv.append("-loop")
    done = subprocess.run(  # noqa: S603
        argv, capture_output=True, text=True, timeout=duration + 120, check=False
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"loadgen failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# ------------------------------------------------------------------- the bench
@dataclass
class Setup:
    tmp: Path
    folder: DataFolder
    key: PrivateKey
    client: Client
    upstream_port: int
    redis_prefix: str
    gateway_cert: Path = field(init=False)
    gateway_key: Path = field(init=False)

    def __post_init__(self) -> None:
        self.gateway_cert = self.folder.gateway / "tls.pem"
        self.gateway_key = self.folder.gateway / "tls.key"


def write_baton_toml(
    setup: Setup,
    home: Path,
    *,
    port: int,
    admin_port: int,
    store: str,
    workload: Workload = WORKLOADS["jsonrpc"],
) -> None:
    """``home/baton.toml`` (``home/.baton`` links to the one data folder): the ``billing``
    upstream speaks ``workload``'s protocol, and ``support`` may make its call."""
    home.mkdir(parents=True, exist_ok=True)
    link = home / ".baton"
    if not link.exists():
        link.symlink_to(setup.folder.data, target_is_directory=True)
    if store == "redis":
        store_toml = f'kind = "redis"\nurl = "{REDIS_URL}"\nprefix = "{setup.redis_prefix}"'
    else:
        store_toml = f'kind = "sqlite"\npath = "{home / "baton.db"}"'
    protocol = "" if workload.protocol == "http" else f'protocol = "{workload.protocol}"\n'
    (home / "baton.toml").write_text(
        f"""trust_domain = "{TRUST_DOMAIN}"

[gateway]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
drain_timeout_s = 5

[store]
{store_toml}

[rate_limit]
requests = 10000000
window_s = 1

[[agents]]
name = "support"
signatures = "required"

[[agents]]
name = "billing"
signatures = "required"

[[upstreams]]
name = "billing"
url = "https://127.0.0.1:{setup.upstream_port}"
{protocol}
[[policy.allow]]
caller = "support"
upstream = "billing"
{workload.policy}""",
        encoding="utf-8",
    )


def prepare_sqlite(path: Path) -> None:
    """Create the store file in WAL mode before several workers open it.

    Work-around, reported to the gateway's owner: two processes opening a new
    SQLite file at once can fail with "database is locked" (``PRAGMA
    journal_mode=WAL`` in ``gateway.stores.sqlite.connect`` does not wait for
    the busy timeout), and ``baton serve --workers 2`` then exits. WAL mode is
    a property of the file, so it is set once here.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def make_server(
    setup: Setup, config: Config, round_dir: Path, workload: Workload = WORKLOADS["jsonrpc"]
) -> Server:
    port = free_port()
    logs = round_dir / f"{config.key}.log"
    if config.kind == "bare":
        argv = [
            PYTHON, str(ROOT / "bench" / "bare_proxy.py"), "--port", str(port),
            "--upstream", f"https://127.0.0.1:{setup.upstream_port}",
            "--identity", str(agent_id(TRUST_DOMAIN, "billing")),
            "--ca", str(setup.folder.ca_cert),
            "--cert", str(setup.gateway_cert), "--key", str(setup.gateway_key),
        ]  # fmt: skip
        return Server(config.key, argv, port, logs)
    home = round_dir / config.key
    admin_port = free_port()
    write_baton_toml(
        setup, home, port=port, admin_port=admin_port, store=config.store, workload=workload
    )
    if config.workers > 1 and config.store == "sqlite":
        prepare_sqlite(home / "baton.db")
    if config.kind == "cli":
        argv = [
            BATON, "serve", "--dir", str(home), "--workers", str(config.workers),
            "--log-level", "warning",
        ]  # fmt: skip
        return Server(
            config.key,
            argv,
            port,
            logs,
            admin_port=admin_port,
            metrics_port=admin_port,  # the supervisor aggregates its workers' metrics
            expect_listeners=config.workers,
        )
    argv = [
        PYTHON, str(ROOT / "bench" / "stage_server.py"), "--config", str(home / "baton.toml"),
        "--root", str(home), "--stages", config.stages,
    ]  # fmt: skip
    if config.workers > 1:  # each worker has its own /metrics: none is scraped
        argv.append("--reuse-port")
        return Server(config.key, argv, port, logs, admin_port=admin_port, expect_listeners=2)
    return Server(config.key, argv, port, logs, admin_port=admin_port, metrics_port=admin_port)


@dataclass
class Measurement:
    """One loadgen run against one configuration."""

    config: str
    mode: str
    rate: float | None
    result: dict[str, Any]
    server_cpu_s: float
    upstream_cpu_s: float
    pool_s: float
    busy_s: float  # the whole machine's busy CPU time during the run
    wall_s: float  # the load generator's run, setup and warmup included
    stages: dict[str, dict[str, float]] | None  # the gateway's stage histograms, this run
    workload: str = "jsonrpc"

    @property
    def unattributed_cores(self) -> float:
        """Busy CPU not used by the server, the upstream or the load generator, per second
        of the run: other processes on the machine (noise) and kernel work such as
        loopback softirqs that no process is charged for."""
        r = self.result
        ours = (r["cpu_user_s"] + r["cpu_sys_s"] + r.get("cpu_setup_s", 0.0)) + self.server_cpu_s
        if self.config != "direct":
            ours += self.upstream_cpu_s
        return max(0.0, self.busy_s - ours) / max(self.wall_s, 0.1)

    @property
    def sent(self) -> int:
        return int(self.result["used"])

    def summary(self) -> dict[str, Any]:
        r = self.result
        sent = max(self.sent, 1)
        return {
            "config": self.config,
            "workload": self.workload,
            "mode": self.mode,
            "target_rate": self.rate,
            "rps": r["rps"],
            "requests": r["requests"],
            "ok": r["ok"],
            "non2xx": r["non2xx"],
            "errors": r["errors"],
            "status": r.get("status"),
            "p50_ms": r["p50_us"] / 1000,
            "p90_ms": r["p90_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000,
            "p999_ms": r["p999_us"] / 1000,
            "service_p50_ms": r["service_p50_us"] / 1000,
            "service_p99_ms": r["service_p99_us"] / 1000,
            "start_lag_p99_ms": r.get("start_lag_p99_us", 0) / 1000,
            "elapsed_s": r["elapsed_s"],
            "stopped_by": r.get("stopped_by"),
            "server_cpu_us_per_req": self.server_cpu_s / sent * 1e6,
            "upstream_cpu_us_per_req": self.upstream_cpu_s / sent * 1e6,
            "loadgen_cpu_us_per_req": (r["cpu_user_s"] + r["cpu_sys_s"]) / sent * 1e6,
            "pool_build_s": round(self.pool_s, 2),
            "unattributed_cores": round(self.unattributed_cores, 3),
            "stages": self.stages,
        }


class Bench:
    def __init__(self, setup: Setup, upstream: Server, args: argparse.Namespace) -> None:
        self.setup = setup
        self.upstream = upstream
        self.duration: float = args.duration
        #: Workload -> the configuration keys measured for it (bare first), in run order.
        self.plan: dict[str, list[str]] = args.plan
        self.retry_noisy: bool = args.retry_noisy
        self.quiet_wait: float = args.quiet_wait

    def measure(
        self,
        config: Config,
        server: Server,
        round_dir: Path,
        *,
        rate: float | None,
        ceiling: float,
        workload: Workload,
    ) -> Measurement:
        """:meth:`measure_once`, repeated once (after a wait for quiet) if other processes
        took more than ``NOISY`` cores during it."""
        m = self.measure_once(
            config, server, round_dir, rate=rate, ceiling=ceiling, workload=workload
        )
        if m.unattributed_cores > NOISY and self.retry_noisy:
            wait_quiet(60)
            log(
                f"  {_tag(workload, config)}: repeated, {m.unattributed_cores:.2f} cores busy "
                "elsewhere"
            )
            m = self.measure_once(
                config, server, round_dir, rate=rate, ceiling=ceiling, workload=workload
            )
        return m

    def measure_once(
        self,
        config: Config,
        server: Server,
        round_dir: Path,
        *,
        rate: float | None,
        ceiling: float,
        workload: Workload,
    ) -> Measurement:
        """One closed-loop (``rate`` None; pool sized from ``ceiling`` req/s) or open-loop run."""
        loop = not config.replay
        if rate is None:
            warmup = 1000
            count = 20000 if loop else int(ceiling * 1.3 * self.duration) + warmup
        else:
            warmup = max(200, int(rate))  # about one second
            count = int(rate * (self.duration + 1) * 1.05) + warmup
            count = min(count, 20000) if loop else count
        pool = round_dir / "pool.jsonl"
        pool_s = write_pool(pool, self.setup.key, f"127.0.0.1:{server.port}", count, workload.key)
        stages0 = scrape_stages(server.metrics_port)
        cpu0, up0, busy0, wall0 = server.cpu(), self.upstream.cpu(), busy_cpu(), time.monotonic()
        if config.kind == "upstream":
            cpu0 = up0
        result = loadgen(
            self.setup.client,
            server.port,
            pool,
            duration=self.duration,
            warmup=warmup,
            rate=rate,
            loop=loop,
        )
        server_cpu = server.cpu() - cpu0
        upstream_cpu = self.upstream.cpu() - up0
        busy = busy_cpu() - busy0
        wall = time.monotonic() - wall0
        stages = stage_summary(stages0, scrape_stages(server.metrics_port))
        pool.unlink()
        m = Measurement(
            config.key,
            "closed" if rate is None else "open",
            rate,
            result,
            server_cpu,
            upstream_cpu,
            pool_s,
            busy,
            wall,
            stages,
            workload.key,
        )
        s = m.summary()
        bad = s["non2xx"] + s["errors"]
        log(
            f"  {_tag(workload, config):6} {m.mode:6} {s['rps']:8.0f} req/s  "
            f"p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:7.2f} ms  "
            f"cpu {s['server_cpu_us_per_req']:5.0f} us/req  "
            f"other {s['unattributed_cores']:.2f} cores"
            + (f"  NOT OK: {bad} ({s['status']}, {result.get('error_kinds')})" if bad else "")
        )
        return m

    def round(self, index: int) -> list[Measurement]:
        """Every workload of the plan, one after the other, each with its own servers."""
        out: list[Measurement] = []
        for position, (workload, keys) in enumerate(self.plan.items()):
            if position:
                wait_quiet(min(self.quiet_wait, 60))
            out += self.workload_round(index, WORKLOADS[workload], keys)
        return out

    def workload_round(self, index: int, workload: Workload, keys: list[str]) -> list[Measurement]:
        """One round of one workload: closed loops, then open loops (module docstring)."""
        suffix = "" if workload.key == "jsonrpc" else f"-{workload.key}"
        round_dir = self.setup.tmp / f"round{index}{suffix}"
        round_dir.mkdir()
        if len(self.plan) > 1:
            log(f" workload {workload.key}")
        order = [BY_KEY[key] for key in keys if key != "bare"]
        if index % 2:
            order.reverse()
        order.insert(0, BY_KEY["bare"])
        servers: dict[str, Server] = {}
        out: list[Measurement] = []
        try:
            for config in order:
                if config.kind == "upstream":
                    servers[config.key] = self.upstream
                    continue
                server = make_server(self.setup, config, round_dir, workload)
                servers[config.key] = server  # stopped below even if it fails to start
                server.start(copies=config.workers if config.kind == "stage" else 1)
            # Closed loop: saturation.
            saturation: dict[str, float] = {}
            for config in order:
                ceiling = saturation.get("bare", 20000.0)
                if config.workers > 1:
                    ceiling *= 1.5
                m = self.measure(
                    config,
                    servers[config.key],
                    round_dir,
                    rate=None,
                    ceiling=ceiling,
                    workload=workload,
                )
                saturation[config.key] = m.result["rps"]
                out.append(m)
            # Open loop: half the bare proxy's saturation where sustainable, else a lower tier.
            hi = saturation["bare"] / 2
            slow = [key for key in saturation if key != "bare" and hi > SUSTAIN * saturation[key]]
            lo = min(saturation[key] for key in slow) / 2 if slow else None
            for config in order:
                rate = lo if config.key in slow else hi
                assert rate is not None
                m = self.measure(
                    config,
                    servers[config.key],
                    round_dir,
                    rate=rate,
                    ceiling=rate,
                    workload=workload,
                )
                out.append(m)
            if lo is not None:
                out.append(
                    self.measure(
                        BY_KEY["bare"],
                        servers["bare"],
                        round_dir,
                        rate=lo,
                        ceiling=lo,
                        workload=workload,
                    )
                )
        finally:
            for key, server in servers.items():
                if key != "direct":
                    server.stop()
            cleanup_redis(self.setup.redis_prefix)
            shutil.rmtree(round_dir, ignore_errors=True)
        return out


def _tag(workload: Workload, config: Config) -> str:
    """A configuration's name in the log: ``f``, or ``mcp:f`` for a protocol workload."""
    return config.key if workload.key == "jsonrpc" else f"{workload.key}:{config.key}"


def cleanup_redis(prefix: str) -> int:
    from redis import Redis

    client = Redis.from_url(REDIS_URL)
    removed = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += int(client.delete(*batch))
                batch.clear()
        if batch:
            removed += int(client.delete(*batch))
    finally:
        client.close()
    return removed


# -------------------------------------------------------------------- analysis
def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _rung(key: str, measured: dict[str, Any]) -> str | None:
    """The nearest configuration below ``key`` on the ladder that was measured (``PREVIOUS``
    followed past the ones left out), for the CPU-per-request difference."""
    below = PREVIOUS.get(key)
    while below is not None and below not in measured:
        below = PREVIOUS.get(below)
    return below


def analyse(rounds: list[list[Measurement]], keys: list[str]) -> dict[str, Any]:
    """Per-configuration medians over rounds of per-round values (one workload's rounds)."""
    rows: dict[str, dict[str, Any]] = {}
    per_round: list[dict[str, Any]] = []
    for measurements in rounds:
        closed = {m.config: m.summary() for m in measurements if m.mode == "closed"}
        opened: dict[tuple[str, float], dict[str, Any]] = {}
        for m in measurements:
            if m.mode == "open":
                assert m.rate is not None
                opened[m.config, m.rate] = m.summary()
        bare_rps = closed["bare"]["rps"]
        bare_open = {rate: s for (key, rate), s in opened.items() if key == "bare"}
        hi = max(bare_open)
        result: dict[str, Any] = {}
        for key in keys:
            if key not in closed:
                continue
            entry: dict[str, Any] = {"closed": closed[key], "ratio": closed[key]["rps"] / bare_rps}
            rung = _rung(key, closed)
            if rung is not None:
                cpu = "server_cpu_us_per_req"
                entry["cpu_rung"] = rung
                entry["cpu_delta_us"] = closed[key][cpu] - closed[rung][cpu]
            runs = [(rate, s) for (other, rate), s in opened.items() if other == key]
            if key == "bare":
                runs = [(hi, bare_open[hi])]
                if len(bare_open) > 1:
                    entry["open_lo"] = bare_open[min(bare_open)]
            for rate, s in runs:
                base = bare_open[rate]
                entry["open"] = s
                entry["tier"] = "hi" if rate == hi else "lo"
                entry["rate_of_bare"] = rate / bare_rps
                entry["added_p50_ms"] = s["p50_ms"] - base["p50_ms"]
                entry["added_p99_ms"] = s["p99_ms"] - base["p99_ms"]
                entry["bare_p50_ms"] = base["p50_ms"]
                entry["bare_p99_ms"] = base["p99_ms"]
            result[key] = entry
        per_round.append(result)
    for key in keys:
        entries = [r[key] for r in per_round if key in r]
        if not entries:
            continue

        def med(path: tuple[str, ...], entries: list[dict[str, Any]] = entries) -> float | None:
            values = []
            for entry in entries:
                value: Any = entry
                for part in path:
                    value = value.get(part) if isinstance(value, dict) else None
                if isinstance(value, (int, float)):
                    values.append(float(value))
            return _median(values)

        tiers = Counter(str(entry.get("tier")) for entry in entries)
        rungs = Counter(entry["cpu_rung"] for entry in entries if "cpu_rung" in entry)
        rows[key] = {
            "label": BY_KEY[key].label,
            "rps": med(("closed", "rps")),
            "ratio": med(("ratio",)),
            "server_cpu_us_per_req": med(("closed", "server_cpu_us_per_req")),
            "cpu_delta_us": med(("cpu_delta_us",)),
            "cpu_rung": rungs.most_common(1)[0][0] if rungs else None,
            "upstream_cpu_us_per_req": med(("closed", "upstream_cpu_us_per_req")),
            "loadgen_cpu_us_per_req": med(("closed", "loadgen_cpu_us_per_req")),
            "closed_p50_ms": med(("closed", "p50_ms")),
            "closed_p99_ms": med(("closed", "p99_ms")),
            "open_rate": med(("open", "target_rate")),
            "open_rps": med(("open", "rps")),
            "rate_of_bare": med(("rate_of_bare",)),
            "tier": tiers.most_common(1)[0][0],
            "p50_ms": med(("open", "p50_ms")),
            "p99_ms": med(("open", "p99_ms")),
            "added_p50_ms": med(("added_p50_ms",)),
            "added_p99_ms": med(("added_p99_ms",)),
            "bare_p50_ms": med(("bare_p50_ms",)),
            "bare_p99_ms": med(("bare_p99_ms",)),
            "bad": sum(
                entry[mode]["non2xx"] + entry[mode]["errors"]
                for entry in entries
                for mode in ("closed", "open")
                if mode in entry
            ),
            "rounds": len(entries),
        }
        stage_names: list[str] = []
        for entry in entries:
            for name in entry.get("open", {}).get("stages") or {}:
                if name not in stage_names:
                    stage_names.append(name)
        rows[key]["open_stages"] = {
            name: {
                field: med(("open", "stages", name, field))
                for field in ("mean_ms", "over_2.5ms", "over_10ms", "over_25ms")
            }
            for name in stage_names
        }
        if key == "bare":
            rows[key]["lo_p50_ms"] = med(("open_lo", "p50_ms"))
            rows[key]["lo_p99_ms"] = med(("open_lo", "p99_ms"))
    noise = [m.unattributed_cores for measurements in rounds for m in measurements]
    return {
        "rows": rows,
        "per_round": per_round,
        "goals": goals(rows, per_round),
        "unattributed_cores": {
            "median": round(statistics.median(noise), 3) if noise else None,
            "max": round(max(noise), 3) if noise else None,
        },
    }


def goals(rows: dict[str, Any], per_round: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    full = rows.get("f")
    if full is not None:
        out.append(
            {
                "goal": "full pipeline (SQLite, 1 worker) >= 50% of the bare proxy's req/s",
                "value": f"{full['ratio']:.0%}",
                "pass": full["ratio"] >= 0.5,
            }
        )
        if full.get("added_p50_ms") is not None:
            rate = (
                f"at {full['open_rate']:.0f} req/s: {full['rate_of_bare']:.0%} of the bare "
                f"proxy's saturation, {full['open_rate'] / full['rps']:.0%} of its own"
            )
            out.append(
                {
                    "goal": f"full pipeline added p50 <= 1.5 ms ({rate})",
                    "value": f"{full['added_p50_ms']:.2f} ms",
                    "pass": full["added_p50_ms"] <= 1.5,
                }
            )
            out.append(
                {
                    "goal": f"full pipeline added p99 <= 5 ms ({rate})",
                    "value": f"{full['added_p99_ms']:.2f} ms",
                    "pass": full["added_p99_ms"] <= 5.0,
                }
            )
    for two, one in (("g", "f1"), ("g", "f"), ("g2", "f")):
        ratios = [
            r[two]["closed"]["rps"] / r[one]["closed"]["rps"]
            for r in per_round
            if two in r and one in r
        ]
        if ratios:
            value = statistics.median(ratios)
            out.append(
                {
                    "goal": f"{BY_KEY[two].label} >= 1.6x {BY_KEY[one].label}",
                    "value": f"{value:.2f}x",
                    "pass": value >= 1.6,
                }
            )
    return out


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def code_under_test(meta: dict[str, Any]) -> str:
    if meta["source"] != "working tree":
        return f"commit {meta['commit'][:10]} (exported)"
    text = f"working tree at {meta['commit'][:10]}"
    if meta["uncommitted"]:
        text += " with uncommitted changes in " + ", ".join(
            line[3:] for line in meta["uncommitted"]
        )
    if meta["code_changed"]:
        text += " (CHANGED DURING THE RUN: rounds not comparable)"
    return text


def render(analyses: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    """The Markdown tables: one section per workload (none for a ``jsonrpc``-only run, whose
    output is as it was before workloads existed)."""
    lines = [
        f"Code under test: {code_under_test(meta)}. Machine: {meta['machine']}. "
        f"{meta['rounds']} round(s), median per configuration; "
        f"{meta['duration_s']:g} s per measurement, {meta['connections']} keep-alive "
        f"connections, TLS 1.3 with client certificates throughout.",
    ]
    sections = list(analyses) != ["jsonrpc"]
    for name, analysis in analyses.items():
        workload = WORKLOADS[name]
        if sections:
            lines += ["", f"### Workload `{name}`", "", workload.describe()]
        lines += ["", *render_workload(analysis)]
    return "\n".join(lines) + "\n"


def render_workload(analysis: dict[str, Any]) -> list[str]:
    """One workload's table, stage histograms, noise and goals."""
    rows = analysis["rows"]
    lines = [
        "| configuration | req/s | vs bare | server CPU us/req (+ vs rung) | open-loop rate "
        "| p50 ms | p99 ms | added p50 ms | added p99 ms |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for key, row in rows.items():
        rate = "-"
        if row["open_rate"] is not None:
            rate = f"{row['open_rate']:.0f}/s ({row['rate_of_bare']:.0%} of bare, {row['tier']})"
        cpu = f"{row['server_cpu_us_per_req']:.0f}"
        if row["cpu_delta_us"] is not None:
            cpu += f" ({row['cpu_delta_us']:+.0f} vs {row['cpu_rung']})"
        added50 = _ms(row["added_p50_ms"], signed=True) if key != "bare" else "(base)"
        added99 = _ms(row["added_p99_ms"], signed=True) if key != "bare" else "(base)"
        lines.append(
            f"| {row['label']} | {row['rps']:.0f} | {row['ratio']:.2f} "
            f"| {cpu} | {rate} | {_ms(row['p50_ms'])} "
            f"| {_ms(row['p99_ms'])} | {added50} | {added99} |"
        )
    bare = rows.get("bare", {})
    if bare.get("lo_p50_ms") is not None:
        lines += [
            "",
            f'Bare proxy at the "lo" rate (the baseline for the lo-tier rows): '
            f"p50 {bare['lo_p50_ms']:.2f} ms, p99 {bare['lo_p99_ms']:.2f} ms.",
        ]
    for key in ("f", "f1"):
        stages = rows.get(key, {}).get("open_stages")
        if not stages:
            continue
        lines += [
            "",
            f"Where the time goes in {rows[key]['label']} at the open-loop rate: the gateway's "
            "own per-stage histograms (wall time, median over rounds; buckets are coarse):",
            "",
            "| stage | mean ms | > 2.5 ms | > 10 ms | > 25 ms |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, v in stages.items():
            if v["mean_ms"] is None:
                continue
            lines.append(
                f"| {name} | {v['mean_ms']:.3f} | {v['over_2.5ms']:.2%} "
                f"| {v['over_10ms']:.2%} | {v['over_25ms']:.2%} |"
            )
        break
    noise = analysis["unattributed_cores"]
    if noise["median"] is not None:
        lines += [
            "",
            f"Busy CPU not charged to the server, upstream or load generator during a run "
            f"(other processes on the VM, loopback softirqs): median {noise['median']:.2f} "
            f"cores, max {noise['max']:.2f} of {os.cpu_count()}.",
        ]
    if analysis["goals"]:
        lines += ["", "Goals:", ""]
    for goal in analysis["goals"]:
        verdict = "PASS" if goal["pass"] else "FAIL"
        lines.append(f"- {verdict}: {goal['goal']}: {goal['value']}")
    bad = {key: row["bad"] for key, row in rows.items() if row["bad"]}
    if bad:
        lines += ["", f"Non-2xx responses or transport errors (see the JSON): {bad}"]
    return lines


# ---------------------------------------------------------------------- profile
def profile(
    setup: Setup, duration: float, tmp: Path, workload: Workload = WORKLOADS["jsonrpc"]
) -> str | None:
    """Sample the full pipeline with py-spy under closed-loop load; top functions as text."""
    spy = Path(PYTHON).parent / "py-spy"
    if not spy.exists():
        log("py-spy not installed in the venv; skipping the profile")
        return None
    round_dir = tmp / "profile"
    round_dir.mkdir()
    server = make_server(setup, BY_KEY["f"], round_dir, workload)
    raw = round_dir / "stacks.txt"
    try:
        server.start()
        warmup = 1000
        count = 60000
        pool = round_dir / "pool.jsonl"
        write_pool(pool, setup.key, f"127.0.0.1:{server.port}", count, workload.key)
        pid = server.procs[0].pid
        recorder = subprocess.Popen(  # noqa: S603
            [str(spy), "record", "--pid", str(pid), *PROFILE_FLAGS, "--format", "raw",
             "--output", str(raw), "--duration", str(int(duration) + 2)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(0.5)
        result = loadgen(setup.client, server.port, pool, duration=duration, warmup=warmup)
        _, err = recorder.communicate(timeout=duration + 60)
        if recorder.returncode != 0 or not raw.exists():
            log(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
            return None
    finally:
        server.stop()
    text = summarise_stacks(raw.read_text(), result["rps"])
    if workload.key != "jsonrpc":
        text = f"Workload {workload.key}: {workload.title}.\n" + text
    return text


def summarise_stacks(text: str, rps: float, top: int = 15) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = [frame for frame in stack.split(";") if frame]
        if not frames:
            continue
        samples += count
        threads[thread.split(": ", 1)[-1]] += count
        own[_short(frames[-1])] += count
        for name in {_short(frame) for frame in frames}:
            total[name] += count
    ours = Counter(
        {
            name: n
            for name, n in total.items()
            if name.split(" (", 1)[1].startswith(("gateway/", "keys/", "protocol/", "adapters/"))
            and not name.startswith(("Gateway.handle ", "Gateway._pipeline ", "gateway_app."))
        }
    )
    lines = [
        f"py-spy {' '.join(PROFILE_FLAGS)}: full pipeline (SQLite, 1 worker, stage_server.py)",
        f"under a closed loop at {rps:.0f} req/s; {samples} samples of the server's threads",
        "while not idle. Percentages are shares of those samples (its CPU time). By thread: "
        + ", ".join(f"{name} {n / samples:.0%}" for name, n in threads.most_common()),
        "",
        f"Top {top} by self time:",
    ]
    lines += [f"  {n / samples:6.1%}  {name}" for name, n in own.most_common(top)]
    lines += ["", f"Top {top} by total time (the function and what it calls):"]
    lines += [f"  {n / samples:6.1%}  {name}" for name, n in total.most_common(top)]
    lines += ["", f"Top {top} of Baton's own functions by total time (below Gateway._pipeline):"]
    lines += [f"  {n / samples:6.1%}  {name}" for name, n in ours.most_common(top)]
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    """``name (path/to/module.py:12)`` -> ``name (module.py)``, library paths shortened."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    path = path.replace(str(ROOT) + "/", "")
    return f"{name} ({path})"


# ------------------------------------------------------------------------- main
def _git(*argv: str) -> str:
    done = subprocess.run(  # noqa: S603
        ["/usr/bin/git", *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def export_source(rev: str, target: Path) -> str:
    """``git archive`` the code under test at ``rev`` into ``target``; return the commit."""
    commit = _git("rev-parse", "--verify", rev + "^{commit}")
    if not commit:
        raise SystemExit(f"--source {rev!r}: not a commit")
    target.mkdir()
    archive = subprocess.Popen(  # noqa: S603
        ["/usr/bin/git", "archive", commit, *CODE], cwd=ROOT, stdout=subprocess.PIPE
    )
    subprocess.run(["/usr/bin/tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)  # noqa: S603
    if archive.wait() != 0:
        raise SystemExit(f"git archive {commit} failed")
    return commit


def working_tree_fingerprint() -> str:
    """SHA-256 over the code under test as it is on disk (to notice edits during a run)."""
    digest = hashlib.sha256()
    for top in CODE:
        for path in sorted((ROOT / top).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def write_results_md(table: str, command: str, workloads: list[str]) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    about_workloads = []
    if workloads != ["jsonrpc"]:
        about_workloads = [
            "Workloads (`--workload`): `jsonrpc` is a generic JSON-RPC upstream (policy on the",
            "method); `mcp` (MCP 2026-07-28 `tools/call`) and `a2a` (A2A v1.0 `SendMessage`,",
            "a new task bound to the caller per answer) go through the protocol adapters. Each",
            "workload has its own table and its own bare-proxy baseline (the same requests).",
        ]
    section = "\n".join(
        [
            BEGIN,
            "",
            "## Data plane: Baton's stages against a bare proxy",
            "",
            "`bench/bench_gateway.py` runs every server in its own process and drives it with",
            "`bench/loadgen` (Go, mutual TLS, pre-signed requests each used once): first a closed",
            'loop (saturation), then an open loop at a fixed rate for latency. "vs bare" is the',
            "ratio to the bare proxy (`bench/bare_proxy.py`: Baton's TLS listener and pooled mTLS",
            'upstream, no stages) in the same round; "added" latency is the difference to the',
            "bare proxy at the same rate in the same round. The load generator and an upstream",
            "server share the 2 CPUs with the server under test, so absolute figures are",
            "pessimistic for a real deployment; ratios and CPU per request carry over better.",
            'Open-loop tiers: "hi" = half the bare proxy\'s saturation, used where that is at',
            'most 2/3 of the configuration\'s own saturation; otherwise "lo" = half the',
            "saturation of the slowest configuration, with the bare proxy measured again there.",
            "Profile and raw data: `bench/results/`.",
            *about_workloads,
            "",
            "Reproduce:",
            "",
            "```sh",
            "bench/loadgen/build.sh",
            command,
            "```",
            "",
            table.rstrip(),
            "",
            END,
        ]
    )
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--workload",
        default="jsonrpc",
        help=f"comma-separated, measured one after the other in each round: {', '.join(WORKLOADS)}",
    )
    parser.add_argument(
        "--configs",
        help="comma-separated configuration keys, for every workload (bare is always "
        "measured); default: all for jsonrpc, "
        + ", ".join(
            f"{','.join(w.configs)} for {w.key}" for w in WORKLOADS.values() if w.key != "jsonrpc"
        ),
    )
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--write", action="store_true", help="also update bench/RESULTS.md")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="folder for the JSON, Markdown and profile"
    )
    parser.add_argument(
        "--no-retry-noisy",
        dest="retry_noisy",
        action="store_false",
        help="keep measurements during which other processes were busy",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=300.0,
        help="before each round, wait up to this many seconds for the machine to be idle",
    )
    parser.add_argument(
        "--source",
        metavar="REV",
        help="serve the code of this commit (git archive of gateway/ keys/ protocol/ "
        "adapters/ into the temporary folder) instead of the working tree",
    )
    args = parser.parse_args()
    workloads = list(dict.fromkeys(w.strip() for w in args.workload.split(",") if w.strip()))
    unknown = set(workloads) - set(WORKLOADS)
    if unknown or not workloads:
        parser.error(f"unknown workloads {sorted(unknown)}; known: {', '.join(WORKLOADS)}")
    chosen: list[str] | None = None
    if args.configs is not None:
        chosen = [key.strip() for key in args.configs.split(",") if key.strip()]
        unknown = set(chosen) - set(BY_KEY)
        if unknown:
            parser.error(f"unknown configurations {sorted(unknown)}")
    args.plan = {}
    for name in workloads:
        keys = {"bare", *(chosen if chosen is not None else WORKLOADS[name].configs)}
        args.plan[name] = [key for key in BY_KEY if key in keys]
    if not LOADGEN.exists():
        subprocess.run([str(ROOT / "bench" / "loadgen" / "build.sh")], check=True)  # noqa: S603

    global SERVER_ENV  # noqa: PLW0603
    # Clean up (servers, Redis keys, temporary folder) on SIGTERM, and on SIGINT even when
    # started in the background by a shell that ignores it.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="baton-bench-"))
    upstream: Server | None = None
    redis_prefix = f"baton-bench-{secrets.token_hex(4)}:"
    source: dict[str, Any] = {}
    try:
        if args.source:
            commit = export_source(args.source, tmp / "src")
            SERVER_ENV = {**os.environ, "PYTHONPATH": str(tmp / "src")}
            source = {"source": f"commit {commit}", "commit": commit, "code_changed": False}
        else:
            source = {
                "source": "working tree",
                "commit": _git("rev-parse", "HEAD"),
                "uncommitted": _git("status", "--porcelain", "--", *CODE).splitlines(),
                "fingerprints": [working_tree_fingerprint()],
            }
        folder = init_data_folder(
            tmp / "home",
            trust_domain=TRUST_DOMAIN,
            force=True,
            now=dt.datetime.now(dt.UTC),
            agents=("support", "billing"),
        )
        support = folder.load_agent(TRUST_DOMAIN, "support")
        billing = folder.agent("billing")
        client = Client(
            folder.ca_cert,
            folder.agent("support") / "tls.pem",
            folder.agent("support") / "tls.key",
            args.connections,
        )
        upstream_port = free_port()
        upstream = Server(
            "upstream",
            [
                PYTHON, str(ROOT / "bench" / "upstream.py"), "--port", str(upstream_port),
                "--ca", str(folder.ca_cert), "--cert", str(billing / "tls.pem"),
                "--key", str(billing / "tls.key"),
            ],
            upstream_port,
            tmp / "upstream.log",
        )  # fmt: skip
        upstream.start()
        setup = Setup(tmp, folder, support.signing.active, client, upstream_port, redis_prefix)
        bench = Bench(setup, upstream, args)
        rounds = []
        for index in range(args.rounds):
            busy = wait_quiet(args.quiet_wait)
            log(f"round {index + 1}/{args.rounds} (machine busy before it: {busy:.2f} cores)")
            rounds.append(bench.round(index))
            if not args.source:
                source["fingerprints"].append(working_tree_fingerprint())
        profiled = WORKLOADS["jsonrpc" if "jsonrpc" in args.plan else workloads[0]]
        profile_text = profile(setup, args.duration, tmp, profiled) if args.profile else None
    finally:
        if upstream is not None:
            upstream.stop()
        with contextlib.suppress(Exception):
            cleanup_redis(redis_prefix)
        shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.monotonic() - started
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}",
        "rounds": args.rounds,
        "duration_s": args.duration,
        "connections": args.connections,
        "workloads": args.plan,
        "harness_s": round(elapsed),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **source,
    }
    if not args.source:
        meta["code_changed"] = len(set(source["fingerprints"])) > 1
        if meta["code_changed"]:
            log("WARNING: the code under test changed during the run; rounds are not comparable")
    analyses = {
        name: analyse([[m for m in ms if m.workload == name] for ms in rounds], keys)
        for name, keys in args.plan.items()
    }
    table = render(analyses, meta)
    command = ".venv/bin/python bench/bench_gateway.py" + (" --write" if args.write else "")
    if args.rounds != 3 or args.duration != 10.0:
        command += f" --rounds {args.rounds} --duration {args.duration:g}"
    if args.source:
        command += f" --source {args.source}"
    if workloads != ["jsonrpc"]:
        command += f" --workload {','.join(workloads)}"
    if args.configs is not None:
        command += f" --configs {args.configs}"
    print(table)
    if profile_text:
        print(profile_text)
    results: Path = args.results
    results.mkdir(parents=True, exist_ok=True)
    raw = [[m.summary() for m in measurements] for measurements in rounds]
    others = {name: analysis for name, analysis in analyses.items() if name != "jsonrpc"}
    document = {"meta": meta, **analyses.get("jsonrpc", {})}
    if others:
        document["workloads"] = others
    document |= {"measurements": raw, "command": command}
    (results / "data_plane.json").write_text(json.dumps(document, indent=1) + "\n")
    (results / "data_plane.md").write_text(
        "# Data plane benchmark\n\n"
        f"`{command}` ({meta['date']}, {elapsed / 60:.1f} min)\n\n" + table
    )
    if profile_text:
        (results / "full_pipeline_profile.txt").write_text(profile_text)
    if args.write:
        write_results_md(table, command, workloads)
    log(f"done in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
