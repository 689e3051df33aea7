"""The official JavaScript SDKs as agents through the gateway: real mTLS, RFC 9421 made in JS.

``tests/interop/js`` holds a Node package (``@modelcontextprotocol/sdk``,
``@a2a-js/sdk``, ``undici``) and ``signer.mjs``, a fetch that presents the
agent's TLS 1.3 client certificate and signs every request (RFC 9421 label
``baton``, RFC 9530 ``Content-Digest``) with ``node:crypto`` Ed25519. These
tests run its scripts with ``node`` as subprocesses of the event loop that
serves the gateway (``asyncio.create_subprocess_exec``: a blocking call would
deadlock the in-process gateway) and check:

* the JS signature is the Python profile: :func:`keys.httpsig.verify` accepts
  every body kind the signer supports, and the signer refuses bodies it cannot
  digest before sending;
* the MCP TypeScript SDK and the A2A JS SDK complete real sessions through the
  gateway, and everything that reached the SDK servers carried the gateway's
  ``baton-caller`` for the JS agent.

Needs ``node`` (>= 20.18.1) and ``npm ci --prefix tests/interop/js``; skipped
otherwise.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.devdata import DataFolder, init_data_folder
from gateway.tls import server_context
from keys.errors import KeysError
from keys.httpsig import HttpRequest, SignaturePolicy, verify
from keys.keyset import KeySet
from keys.material import PrivateKey
from protocol.identity import agent_id
from tests.gateway._harness import TRUST_DOMAIN, free_port
from tests.interop.conftest import Fleet

JS = Path(__file__).parent / "js"
NODE = shutil.which("node")
SUPPORT = str(agent_id(TRUST_DOMAIN, "support"))
ROUTING_HEADERS = ("mcp-method", "mcp-name", "a2a-version")
NODE_TIMEOUT_S = 60


def _missing_js() -> str | None:
    if NODE is None:
        return "node is not installed: the JavaScript SDK interop tests need Node >= 20.18.1"
    if not (JS / "node_modules").is_dir():
        return "tests/interop/js/node_modules is missing: run `npm ci --prefix tests/interop/js`"
    return None


if _missing_js() is not None and os.environ.get("BATON_REQUIRE_NODE") == "1":
    # CI installs Node and the packages: there a missing piece is a failure, not a skip.
    raise RuntimeError(f"BATON_REQUIRE_NODE=1 but {_missing_js()}")
pytestmark = pytest.mark.skipif(_missing_js() is not None, reason=_missing_js() or "")


# --------------------------------------------------------------------------- running node


def agent_env(
    folder: DataFolder, name: str, scratch: Path, *, signing_key_of: str | None = None
) -> dict[str, str]:
    """Environment for the JS scripts: agent ``name``'s PEMs, the CA and its private JWK.

    ``signing_key_of`` puts another agent's signing key next to ``name``'s certificate.
    """
    agent = folder.load_agent(TRUST_DOMAIN, name)
    signer = folder.load_agent(TRUST_DOMAIN, signing_key_of or name)
    target = scratch / f"js-{name}-{signer.name}"
    target.mkdir(mode=0o700, exist_ok=True)
    files = {
        "BATON_CERT": ("tls.pem", agent.cert_pem),
        "BATON_KEY": ("tls.key", agent.key_pem),
        "BATON_CA": ("ca.pem", folder.ca_cert.read_bytes()),
        "BATON_SIGNING_JWK": (
            "signing.jwk",
            json.dumps(signer.signing.active.to_private_jwk()).encode("ascii"),
        ),
    }
    env = dict(os.environ)
    for variable, (file_name, content) in files.items():
        path = target / file_name
        path.write_bytes(content)
        path.chmod(0o600)
        env[variable] = str(path)
    return env


@dataclass(frozen=True, slots=True)
class NodeRun:
    returncode: int
    lines: list[dict[str, Any]]
    stderr: str


async def node(script: str, *args: str, env: dict[str, str]) -> NodeRun:
    """Run ``node js/<script> args`` without blocking the loop that serves the gateway."""
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(JS / script),
        *args,
        cwd=str(JS),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(NODE_TIMEOUT_S):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"node {script} did not finish in {NODE_TIMEOUT_S}s") from None
    assert process.returncode is not None
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return NodeRun(process.returncode, lines, err.decode(errors="replace"))


async def run_node(script: str, *args: str, env: dict[str, str]) -> list[dict[str, Any]]:
    """:func:`node` that must succeed; its stdout JSON lines."""
    run = await node(script, *args, env=env)
    assert run.returncode == 0, f"node {script} failed:\n{run.stderr}"
    return run.lines


# --------------------------------------------------------------------------- verifier oracle


@dataclass
class Oracle:
    """An mTLS server that answers every request with what keys.httpsig.verify said.

    It trusts :attr:`signing` (support's key by default) and nothing else;
    the JS scripts get that key's private JWK in ``BATON_SIGNING_JWK``.
    """

    url: str
    env: dict[str, str]
    scratch: Path
    signing: PrivateKey
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    def use_key(self, key: PrivateKey) -> None:
        path = self.scratch / f"{key.alg}.jwk"
        path.write_text(json.dumps(key.to_private_jwk()), encoding="ascii")
        path.chmod(0o600)
        self.env = {**self.env, "BATON_SIGNING_JWK": str(path)}
        self.signing = key

    def verdict(self, request: web.Request, body: bytes) -> dict[str, Any]:
        present = frozenset(name for name in ROUTING_HEADERS if name in request.headers)
        policy = SignaturePolicy(
            required_components=frozenset({"@method", "@target-uri", "@authority"}) | present
        )
        message = HttpRequest(
            request.method,
            f"https://{request.host.lower()}{request.raw_path}",
            list(request.headers.items()),
        )
        try:
            verified = verify(message, KeySet([self.signing.public]), policy, body=body)
        except KeysError as exc:
            return {"ok": False, "error": type(exc).__name__, "detail": str(exc)}
        return {
            "ok": True,
            "method": request.method,
            "raw_path": request.raw_path,
            "covered": list(verified.covered),
            "keyid": verified.keyid,
            "alg": verified.alg,
            "created": verified.created,
            "nonce": verified.nonce,
            "body_hex": body.hex(),
            "content_type": request.headers.get("content-type"),
            "content_digest": request.headers.get("content-digest"),
        }


@pytest.fixture
async def oracle(tmp_path: Path) -> AsyncIterator[Oracle]:
    folder = init_data_folder(
        tmp_path / "home",
        trust_domain=TRUST_DOMAIN,
        force=False,
        now=dt.datetime.now(dt.UTC),
        agents=("support",),
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    port = free_port()
    served = Oracle(
        f"https://127.0.0.1:{port}",
        agent_env(folder, "support", scratch),
        scratch,
        folder.load_agent(TRUST_DOMAIN, "support").signing.active,
    )

    async def handle(request: web.Request) -> web.Response:
        verdict = served.verdict(request, await request.read())
        served.verdicts.append(verdict)
        return web.json_response(verdict, status=200 if verdict["ok"] else 401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tls = server_context(
        cert_file=folder.gateway / "tls.pem",
        key_file=folder.gateway / "tls.key",
        ca_file=folder.ca_cert,
        require_client_cert=True,
    )
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
    try:
        yield served
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("alg", "httpsig_alg"), [("Ed25519", "ed25519"), ("ES256", "ecdsa-p256-sha256")]
)
async def test_js_signatures_verify_with_the_python_profile(
    oracle: Oracle, alg: str, httpsig_alg: str
) -> None:
    if alg != oracle.signing.alg:
        oracle.use_key(PrivateKey.generate(alg))
    started = int(time.time())
    results = {r["case"]: r for r in await run_node("signer_probe.mjs", oracle.url, env=oracle.env)}

    signed = {name: r["server"] for name, r in results.items() if "server" in r}
    assert {name: r["status"] for name, r in results.items() if "status" in r} == dict.fromkeys(
        signed, 200
    ), signed
    for verdict in signed.values():
        assert verdict["keyid"] == oracle.signing.kid
        assert verdict["alg"] == httpsig_alg
        assert started - 5 <= verdict["created"] <= int(time.time()) + 5
    nonces = [verdict["nonce"] for verdict in signed.values()]
    assert len(set(nonces)) == len(nonces), "a nonce was reused"

    base = ["@method", "@target-uri", "@authority"]
    query = signed["get-query"]
    assert query["covered"] == base
    assert query["raw_path"] == "/probe/a%2Fb?q=a%20b&x=%C3%A9"
    assert query["content_digest"] is None

    text = signed["string-body"]
    assert text["method"] == "POST"  # fetch normalises "post"; the signature covers "POST"
    assert text["covered"] == [*base, "content-digest", "mcp-method", "mcp-name"]
    assert bytes.fromhex(text["body_hex"]) == '{"text":"héllo from js"}'.encode()
    assert text["content_type"] == "application/json"

    raw = signed["uint8array-body"]
    assert raw["covered"] == [*base, "content-digest", "a2a-version"]
    assert bytes.fromhex(raw["body_hex"]) == bytes([0, 1, 2, 0xFE, 0xFF, 0x7B, 0x0A])
    assert signed["buffer-view-body"]["body_hex"] == b"slice".hex()
    assert signed["arraybuffer-body"]["method"] == "PUT"
    assert signed["arraybuffer-body"]["body_hex"] == raw["body_hex"]

    assert signed["empty-body"]["covered"] == base  # no body, no digest (as the Python signer)
    assert signed["stale-signature-replaced"]["covered"] == base

    assert "streaming request body" in results["stream-body"]["refused"]
    assert "https" in results["plain-http"]["refused"]
    assert len(oracle.verdicts) == len(signed), "a refused request reached the server"


# --------------------------------------------------------------------------- the SDKs


async def test_mcp_typescript_sdk_through_the_gateway(fleet: Fleet) -> None:
    env = agent_env(fleet.folder, "support", fleet.scratch)
    [result] = await run_node("mcp_client.mjs", fleet.mcp_url, env=env)

    assert set(result["tools"]) >= {"echo", "add"}
    assert result["echo"] == "echo: from js"
    assert result["add"] == 5
    assert result["protocol_version"] == "2025-11-25"
    assert result["server"] == "payments"
    assert result["session_id_present"] is True
    assert result["session_terminated"] is True
    assert result["keyid"] == fleet.folder.load_agent(TRUST_DOMAIN, "support").signing.active.kid

    seen = fleet.mcp_seen.requests
    methods = [method for method, _, _ in seen]
    assert methods.count("POST") >= 5  # initialize, initialized, tools/list, 2 x tools/call
    assert "DELETE" in methods
    assert {path for _, path, _ in seen} == {"/mcp"}
    assert all(headers.get("baton-caller") == SUPPORT for _, _, headers in seen), seen
    events = await fleet.audit_events()
    assert [e.reason for e in events if e.outcome == "rejected"] == []


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_a2a_js_sdk_through_the_gateway(fleet: Fleet, binding: str) -> None:
    env = agent_env(fleet.folder, "support", fleet.scratch)
    sent, streamed = await run_node("a2a_client.mjs", fleet.a2a_url, binding, env=env)

    assert sent["kind"] == "send"
    assert sent["binding"] == binding
    assert sent["card_name"] == "assistant"
    # The gateway rewrote the card: every interface points at the gateway.
    assert sent["card_urls"]
    assert all(url.split(" ", 1)[1].startswith(fleet.a2a_url) for url in sent["card_urls"])
    assert sent["task_id"]
    assert sent["state"] == "TASK_STATE_COMPLETED"
    assert sent["artifact_text"] == "echo: from js"

    assert streamed["kind"] == "stream"
    assert streamed["events"][0] == "task"
    assert "artifactUpdate" in streamed["events"]
    assert streamed["final_state"] == "TASK_STATE_COMPLETED"
    assert streamed["artifact_text"] == "echo: streamed from js"
    assert streamed["task_id"] and streamed["task_id"] != sent["task_id"]

    seen = fleet.a2a_seen.requests
    assert len(seen) >= 2
    assert all(headers.get("baton-caller") == SUPPORT for _, _, headers in seen), seen
    posts = [headers for method, _, headers in seen if method == "POST"]
    assert len(posts) == 2
    assert all(headers.get("a2a-version") == "1.0" for headers in posts)
    events = await fleet.audit_events()
    assert [e.reason for e in events if e.outcome == "rejected"] == []


async def test_gateway_refuses_a_js_signature_by_another_agents_key(fleet: Fleet) -> None:
    """support's certificate, other's signing key: valid RFC 9421, wrong identity."""
    env = agent_env(fleet.folder, "support", fleet.scratch, signing_key_of="other")
    run = await node("mcp_client.mjs", fleet.mcp_url, env=env)

    assert run.returncode == 1
    assert run.lines == []
    assert "identity_mismatch" in run.stderr
    assert fleet.mcp_seen.requests == []
    events = await fleet.audit_events()
    assert [e.reason for e in events if e.outcome == "rejected"] == ["identity_mismatch"]
