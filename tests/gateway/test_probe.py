"""``baton probe`` against the real gateway (every case refused) and a plain proxy (most forwarded).

Both run over real TLS with certificates from the ``baton init`` dev CA and
the same recording upstream; the probe runs in its own thread and event loop
through the CLI, as a user would run it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from gateway.cli import main
from gateway.probe import CASES, COVERED_IDS
from tests.gateway._harness import TRUST_DOMAIN, free_port
from tests.gateway.conftest import Running

SUPPORT = f"spiffe://{TRUST_DOMAIN}/agent/support"
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "host",
     "content-length"}
)  # fmt: skip


def _argv(gw: Running, url: str, *extra: str, upstream: str = "billing") -> list[str]:
    agent = gw.folder.agent("support")
    return [
        "probe", url,
        "--client-cert", str(agent / "tls.pem"), "--key", str(agent / "tls.key"),
        "--ca", str(gw.folder.ca_cert), "--agent-key", str(agent / "signing.jwks"),
        "--agent-id", SUPPORT, "--upstream", upstream, *extra,
    ]  # fmt: skip


async def _probe(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = await asyncio.wait_for(asyncio.to_thread(main, argv), timeout=50)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _cases(report: dict[str, object]) -> list[dict[str, object]]:
    cases = report["cases"]
    assert isinstance(cases, list)
    assert [(case["id"], case["case"]) for case in cases] == [(c.id, c.name) for c in CASES]
    for case in cases:
        assert {"id", "passed", "status"} <= set(case)
        assert isinstance(case["passed"], bool)
        assert case["status"] is None or isinstance(case["status"], int)
    return cases


@pytest.mark.threat(
    "M01", "M02", "R10", "R09", "R11", "R07", "R01", "R04", "R13", "J01", "J05", "X01", "X02",
    "X04", "P13", "P06", "P14", "X05",
)  # fmt: skip
async def test_every_case_is_refused_by_baton(
    gw: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert set(COVERED_IDS) == {
        "M01", "M02", "R10", "R09", "R11", "R07", "R01", "R04", "R13", "J01", "J05", "X01",
        "X02", "X04", "P13", "P06", "P14", "X05",
    }  # fmt: skip
    status, out, err = await _probe(_argv(gw, gw.base, "--json"), capsys)
    report = json.loads(out)
    cases = _cases(report)
    failed = [case for case in cases if not case["passed"]]
    assert failed == [], failed
    assert (status, err) == (0, "")
    assert report["baseline"]["ok"] is True and report["baseline"]["status"] == 200
    assert report["failed"] == 0 and report["passed"] == len(CASES)
    # Only the baseline, R01's first copy and R09's valid request reached the upstream.
    assert len(gw.upstream.received) == 3
    # Every refusal that reached HTTP wrote exactly one audit event; TLS refusals
    # none, nor the listener's own connection-cap refusal (X05: not audited, so a
    # connection flood cannot write the log; counted in baton_requests instead).
    x05 = next(case for case in cases if case["id"] == "X05")
    assert (x05["status"], x05["code"]) == (429, "too_many_connections")
    events = await gw.audit_events()
    http_refusals = [case for case in cases if case["outcome"] == "http" and case["id"] != "X05"]
    assert [e.event for e in events].count("request.rejected") == len(http_refusals)
    assert [e.event for e in events].count("request.accepted") == 3
    tls = {case["id"]: case["outcome"] for case in cases if case["id"] in ("M01", "M02")}
    assert tls == {"M01": "tls_refused", "M02": "tls_refused"}
    # Nothing secret printed: no private key value, no signature or nonce value.
    private = json.loads((gw.folder.agent("support") / "signing.jwks").read_text())
    assert all(jwk["d"] not in out for jwk in private["keys"])
    assert "=:" not in out


async def test_table_output(gw: Running, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = await _probe(_argv(gw, gw.base), capsys)
    lines = out.splitlines()
    assert status == 0
    assert lines[0] == f"baton probe {gw.base} (upstream billing)"
    assert lines[1] == "baseline: 200 ok"
    assert lines[2].split() == ["ID", "CASE", "RESULT", "OBSERVED", "EXPECTED"]
    rows = lines[3 : 3 + len(CASES)]
    assert [row.split()[:3] for row in rows] == [[c.id, c.name, "pass"] for c in CASES]
    assert "R01  nonce-replay" in "\n".join(rows) and "401 replay_detected" in rows[8]
    assert lines[-1] == f"{len(CASES)} passed, 0 failed"


async def test_baseline_failure_stops_the_probe(
    gw: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = await _probe(_argv(gw, gw.base, "--json", upstream="nope"), capsys)
    report = json.loads(out)
    assert status == 2 and report["cases"] == [] and report["baseline"]["ok"] is False
    assert report["baseline"]["status"] == 403 and report["baseline"]["code"] == "policy_denied"
    assert "baseline failed (403 policy_denied): nothing probed" in err
    assert gw.upstream.received == []


# --------------------------------------------------------------- a plain proxy
@pytest.fixture
async def plain_proxy(gw: Running) -> AsyncIterator[str]:
    """A reverse proxy with TLS and no checks at all, in front of the same upstream."""
    now = dt.datetime.now(dt.UTC)
    server = gw.folder.load_ca().issue(
        f"spiffe://{TRUST_DOMAIN}/agent/proxy", usage="server", now=now, ip_addresses=["127.0.0.1"]
    )
    cert, key = gw.scratch / "proxy.pem", gw.scratch / "proxy.key"
    cert.write_bytes(server.chain_pem)
    key.write_bytes(server.key_pem)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(str(cert), str(key))
    agent = gw.folder.agent("support")
    upstream_tls = ssl.create_default_context(cafile=str(gw.folder.ca_cert))
    upstream_tls.load_cert_chain(str(agent / "tls.pem"), str(agent / "tls.key"))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=upstream_tls))

    async def forward(request: web.Request) -> web.Response:
        tail = request.raw_path.removeprefix("/u/").partition("/")[2]
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        async with session.request(
            request.method,
            URL(f"https://127.0.0.1:{gw.upstream.port}/{tail}", encoded=True),
            headers=headers,
            data=await request.read(),
        ) as answer:
            return web.Response(status=answer.status, body=await answer.read())

    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()


async def test_a_plain_proxy_is_reported_honestly(
    gw: Running, plain_proxy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = await _probe(_argv(gw, plain_proxy, "--json"), capsys)
    report = json.loads(out)
    cases = _cases(report)
    assert status == 1 and report["baseline"]["ok"] is True
    verdicts = {(case["id"], case["case"]): case["passed"] for case in cases}
    forwarded = [
        ("M01", "no-client-certificate"), ("M02", "untrusted-ca-certificate"),
        ("R10", "unsigned"), ("R09", "forged-signature-keeps-nonce"),
        ("R11", "digest-mismatch"), ("R07", "created-stale"), ("R01", "nonce-replay"),
        ("R13", "alg-mismatch"), ("J01", "alg-none"), ("P13", "underscore-header"),
        ("P06", "foreign-origin"), ("P14", "unknown-upstream"), ("X02", "deep-json"),
        ("X05", "connections-per-address"),
    ]  # fmt: skip
    assert [verdicts[key] for key in forwarded] == [False] * len(forwarded)
    assert report["failed"] > report["passed"]
    replay = next(case for case in cases if case["id"] == "R01")
    assert replay["status"] == 200 and replay["code"] is None
    assert len(gw.upstream.received) > 3  # the attacks reached the upstream
    assert await gw.audit_events() == []  # and Baton never saw them


async def test_connections_zero_skips_the_connection_case(
    gw: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = await _probe(_argv(gw, gw.base, "--json", "--connections", "0"), capsys)
    report = json.loads(out)
    assert status == 0
    assert [case["id"] for case in report["cases"]] == [c.id for c in CASES if c.id != "X05"]


def test_probe_needs_an_https_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path)]) == 0
    capsys.readouterr()
    agent = tmp_path / ".baton" / "agents" / "support"
    argv = ["probe", "http://127.0.0.1:1", "--agent-key", str(agent / "signing.jwks")]
    assert main([*argv, "--upstream", "billing"]) == 1
    assert "must be https://" in capsys.readouterr().err
