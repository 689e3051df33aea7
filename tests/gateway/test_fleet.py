"""Real ``baton serve`` processes: a fleet sharing one Redis, workers, drain, outages.

* Two gateway processes on one Redis accept a nonce exactly once (R05), also
  for 50 identical requests fired in parallel at both (R03).
* Redis stopped mid-run: 503, and nothing is forwarded unrecorded.
* ``--workers 2`` shares the port (SO_REUSEPORT) and aggregates metrics.
* SIGTERM drains: the listener closes, the in-flight request completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis

from gateway.devdata import DataFolder, init_data_folder
from tests.gateway._harness import (
    TRUST_DOMAIN,
    RecordingUpstream,
    agent_context,
    free_port,
    rpc,
    signed_headers,
    write_config,
)
from tests.gateway.conftest import start_gateway

REDIS_URL = os.environ.get("BATON_REDIS_URL", "redis://127.0.0.1:6379/0")
FLEET_NAME = "baton.test"  # the name a load balancer would give the fleet


async def wait_until(predicate: object, *, timeout: float = 20.0, what: str = "") -> None:
    """Poll an async predicate until true, at most ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not await predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)


@dataclass
class Served:
    folder: DataFolder
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int

    async def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"baton serve exited with {self.process.returncode}")
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{self.admin_port}/readyz") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=5)


def serve(folder: DataFolder, *, workers: int = 1) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--dir",
            str(folder.root),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        cwd=Path(__file__).resolve().parents[2],
    )


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


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[tuple[DataFolder, RecordingUpstream, Path]]:
    folder = init_data_folder(
        tmp_path / "home",
        trust_domain=TRUST_DOMAIN,
        force=False,
        now=dt.datetime.now(dt.UTC),
        agents=("support", "billing", "legacy", "chatty"),
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    upstream = RecordingUpstream(folder, folder.load_agent(TRUST_DOMAIN, "billing"), scratch)
    await upstream.start()
    try:
        yield folder, upstream, scratch
    finally:
        await upstream.stop()


@dataclass
class Fleet:
    gateways: list[Served]
    upstream: RecordingUpstream
    folder: DataFolder
    scratch: Path


@pytest.fixture
async def fleet(
    tmp_path: Path, redis_prefix: str, home: tuple[DataFolder, RecordingUpstream, Path]
) -> AsyncIterator[Fleet]:
    home_folder, upstream, scratch = home
    second = DataFolder(tmp_path / "gw2")
    shutil.copytree(home_folder.data, second.data)  # same CA, keys and store key: one fleet
    gateways = []
    try:
        for folder in (home_folder, second):
            port, admin_port = free_port(), free_port()
            write_config(
                folder,
                port=port,
                admin_port=admin_port,
                upstream_port=upstream.port,
                store=f'kind = "redis"\nurl = "{REDIS_URL}"\nprefix = "{redis_prefix}"',
            )
            text = folder.config.read_text().replace(
                "drain_timeout_s = 10", f'drain_timeout_s = 10\nauthorities = ["{FLEET_NAME}"]'
            )
            folder.config.write_text(text)
            gateways.append(Served(folder, serve(folder), port, admin_port))
        for gateway in gateways:
            await wait_until(gateway.healthy, what="gateway ready")
        yield Fleet(gateways, upstream, home_folder, scratch)
    finally:
        for gateway in gateways:
            gateway.stop()


async def _send(
    fleet: Fleet, gateway: Served, headers: list[tuple[str, str]], body: bytes
) -> tuple[int, str]:
    context = agent_context(
        fleet.folder, fleet.folder.load_agent(TRUST_DOMAIN, "support"), fleet.scratch
    )
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.post(
            f"https://127.0.0.1:{gateway.port}/u/billing/x", data=body, headers=headers
        ) as response,
    ):
        payload = await response.read()
        code = "ok" if response.status == 200 else json.loads(payload)["error"]["data"]["code"]
        return response.status, code


def _fleet_request(fleet: Fleet) -> tuple[list[tuple[str, str]], bytes]:
    body = rpc("tools/list")
    support = fleet.folder.load_agent(TRUST_DOMAIN, "support")
    url = f"https://{FLEET_NAME}/u/billing/x"
    return signed_headers(support, "POST", url, body, extra=[("host", FLEET_NAME)]), body


async def test_replay_to_the_other_gateway_is_refused(fleet: Fleet) -> None:
    headers, body = _fleet_request(fleet)
    first, second = fleet.gateways
    assert await _send(fleet, first, headers, body) == (200, "ok")
    assert await _send(fleet, second, headers, body) == (401, "replay_detected")
    assert len(fleet.upstream.received) == 1


async def test_fifty_identical_requests_at_both_gateways_pass_once(fleet: Fleet) -> None:
    headers, body = _fleet_request(fleet)
    results = await asyncio.gather(
        *(_send(fleet, fleet.gateways[i % 2], headers, body) for i in range(50))
    )
    assert sorted(results).count((200, "ok")) == 1, results
    assert sorted(results).count((401, "replay_detected")) == 49, results
    assert len(fleet.upstream.received) == 1


# ------------------------------------------------------------------ Redis outage
@contextlib.contextmanager
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        process.kill()
        process.wait(timeout=10)


async def test_redis_stopped_mid_run_fails_closed(tmp_path: Path) -> None:
    with private_redis() as (url, redis_process):
        client = redis.Redis.from_url(url)
        try:

            def pong() -> bool:
                try:
                    return bool(client.ping())
                except redis.ConnectionError:
                    return False

            async def up() -> bool:
                return await asyncio.to_thread(pong)

            await wait_until(up, what="private redis")
        finally:
            client.close()
        running, runners = await start_gateway(tmp_path, store=f'kind = "redis"\nurl = "{url}"')
        try:
            status, _, _ = await running.send("support", "/u/billing/x", rpc("tools/list"))
            assert status == 200
            redis_process.terminate()
            redis_process.wait(timeout=10)
            status, _, body = await running.send("support", "/u/billing/x", rpc("tools/list"))
            assert status == 503
            assert json.loads(body)["error"]["data"]["code"] == "audit_unavailable"
            assert json.loads(body)["error"]["data"]["retryable"] is True
            assert len(running.upstream.received) == 1, "forwarded with the store down"
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{running.admin_port}/readyz") as response,
            ):
                assert response.status == 503
        finally:
            for runner in runners:
                await runner.cleanup()
            await running.upstream.stop()


# ------------------------------------------------------------- workers and drain
async def _signed_post(folder: DataFolder, scratch: Path, port: int) -> tuple[int, bytes]:
    support = folder.load_agent(TRUST_DOMAIN, "support")
    url = f"https://127.0.0.1:{port}/u/billing/x"
    body = rpc("tools/list")
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=agent_context(folder, support, scratch))
        ) as session,
        session.post(url, data=body, headers=signed_headers(support, "POST", url, body)) as resp,
    ):
        return resp.status, await resp.read()


async def test_two_workers_share_the_port_and_metrics(
    home: tuple[DataFolder, RecordingUpstream, Path],
) -> None:
    folder, upstream, scratch = home
    port, admin_port = free_port(), free_port()
    write_config(folder, port=port, admin_port=admin_port, upstream_port=upstream.port)
    served = Served(folder, serve(folder, workers=2), port, admin_port)
    try:
        await wait_until(served.healthy)
        children = subprocess.run(
            ["pgrep", "-P", str(served.process.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert len(children) == 2
        results = await asyncio.gather(*(_signed_post(folder, scratch, port) for _ in range(20)))
        assert [status for status, _ in results] == [200] * 20
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{admin_port}/metrics") as response,
        ):
            text = await response.text()
        assert 'baton_requests_total{code="ok",outcome="accepted"} 20.0' in text
    finally:
        assert served.stop() == 0


async def test_a_stop_while_workers_are_still_starting_is_a_clean_exit(
    home: tuple[DataFolder, RecordingUpstream, Path],
) -> None:
    """SIGTERM as soon as the supervisor has forked its workers, while they are
    still importing and loading keys (no signal handler yet): they die of the
    forwarded signal, and that is a stop, exit 0, not a worker failure (CI saw
    ``--workers 2`` exit 1 when one worker was still starting)."""
    folder, upstream, _ = home
    port, admin_port = free_port(), free_port()
    write_config(folder, port=port, admin_port=admin_port, upstream_port=upstream.port)
    served = Served(folder, serve(folder, workers=2), port, admin_port)

    def children() -> list[str]:
        return subprocess.run(
            ["pgrep", "-P", str(served.process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()

    async def forked() -> bool:
        if served.process.poll() is not None:
            raise AssertionError(f"baton serve exited with {served.process.returncode}")
        return len(children()) == 2

    try:
        await wait_until(forked, what="two workers forked")
    finally:
        assert served.stop() == 0


async def test_sigterm_drains_the_in_flight_request(
    home: tuple[DataFolder, RecordingUpstream, Path],
) -> None:
    folder, upstream, scratch = home
    port, admin_port = free_port(), free_port()
    write_config(folder, port=port, admin_port=admin_port, upstream_port=upstream.port)
    served = Served(folder, serve(folder), port, admin_port)
    try:
        await wait_until(served.healthy)
        upstream.hold = asyncio.Event()
        in_flight = asyncio.create_task(_signed_post(folder, scratch, port))

        async def arrived() -> bool:
            return len(upstream.received) == 1

        await wait_until(arrived)
        served.process.send_signal(signal.SIGTERM)

        async def listener_closed() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return True
            writer.close()
            return False

        await wait_until(listener_closed)
        upstream.hold.set()
        status, _ = await asyncio.wait_for(in_flight, timeout=20)
        assert status == 200, "the in-flight request was cut instead of drained"
        assert await asyncio.to_thread(served.process.wait, 20) == 0
    finally:
        if upstream.hold is not None:
            upstream.hold.set()
        served.stop()
