"""Fixtures for the store contract suite: every test runs on SQLite and on Redis.

Redis is the server at ``$BATON_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``),
never a fake. Each test gets a fresh random key prefix and its keys are
deleted afterwards. If Redis does not answer the Redis half of the suite
*fails*, unless ``BATON_ALLOW_NO_REDIS=1``, which turns it into a skip.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from gateway.stores import Stores, open_stores, redis_client
from keys.atrest import StoreCipher
from tests.gateway.stores.support import (
    Kind,
    Raw,
    RawRedis,
    RawSqlite,
    StoreSpec,
    delete_prefix,
    fresh_prefix,
    redis_reachable,
    redis_url,
)

KINDS: tuple[Kind, ...] = ("sqlite", "redis")


@dataclass
class Backend:
    """A fresh store under test: its stores, how to reopen it, and raw access."""

    kind: Kind
    stores: Stores
    spec: StoreSpec
    raw: Raw


def _shown(url: str) -> str:
    """The URL without its userinfo (a password must not reach test output)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


async def _require_redis(url: str) -> None:
    reason = await redis_reachable(url)
    if reason is None:
        return
    message = (
        f"Redis at {_shown(url)} is unreachable ({reason}); start one or set BATON_REDIS_URL "
        "(set BATON_ALLOW_NO_REDIS=1 to skip the Redis half of the store suite instead)"
    )
    if os.environ.get("BATON_ALLOW_NO_REDIS") == "1":
        pytest.skip(message)
    pytest.fail(message)


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    kind: Kind = request.param
    key = os.urandom(32)
    if kind == "sqlite":
        spec = StoreSpec("sqlite", str(tmp_path / "stores.db"), None, "baton:", key)
        stores = await spec.open()
        try:
            yield Backend(kind, stores, spec, RawSqlite(str(tmp_path / "stores.db")))
        finally:
            await stores.close()
        return
    url = redis_url()
    await _require_redis(url)
    spec = StoreSpec("redis", None, url, fresh_prefix(), key)
    raw_client = redis_client(url)
    stores = await spec.open()
    try:
        yield Backend(kind, stores, spec, RawRedis(raw_client, spec.prefix))
    finally:
        await stores.close()
        await delete_prefix(raw_client, spec.prefix)
        await raw_client.aclose()


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(params=KINDS)
async def dead_stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    """Stores whose backend is gone: a closed SQLite connection, or Redis on a closed port."""
    cipher = StoreCipher.generate()
    if request.param == "sqlite":
        stores = await open_stores("sqlite", path=tmp_path / "gone.db", url=None, cipher=cipher)
        await stores.close()
        yield stores
        return
    url = f"redis://127.0.0.1:{closed_port()}/0"
    stores = await open_stores("redis", path=None, url=url, cipher=cipher, prefix=fresh_prefix())
    try:
        yield stores
    finally:
        await stores.close()
