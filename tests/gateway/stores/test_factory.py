"""open_stores: arguments checked, SQLite file private, Redis URL secrets kept out of errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.stores import open_stores
from keys.atrest import StoreCipher
from protocol.errors import ConfigurationError, StoreUnavailable
from tests.gateway.stores.conftest import closed_port
from tests.gateway.stores.support import entry

CIPHER = StoreCipher.generate()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_sqlite_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "baton.db"
    stores = await open_stores("sqlite", path=path, url=None, cipher=CIPHER)
    try:
        await stores.transcripts.append(entry(await stores.transcripts.head("c"), "c"), b"x")
        assert _mode(path) == 0o600
        wal = tmp_path / "baton.db-wal"
        assert wal.exists()
        assert _mode(wal) == 0o600, "SQLite copies the database file's mode"
    finally:
        await stores.close()


async def test_existing_sqlite_file_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "baton.db"
    first = await open_stores("sqlite", path=path, url=None, cipher=CIPHER)
    assert await first.nonces.claim("k", "n" * 16, ttl_s=60, now=1.0)
    await first.close()
    second = await open_stores("sqlite", path=path, url=None, cipher=CIPHER)
    try:
        assert not await second.nonces.claim("k", "n" * 16, ttl_s=60, now=2.0)
    finally:
        await second.close()


async def test_sqlite_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        await open_stores("sqlite", path=tmp_path / "no" / "x.db", url=None, cipher=CIPHER)


async def test_sqlite_on_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not an SQLite database, just some bytes" * 100)
    with pytest.raises(StoreUnavailable):
        await open_stores("sqlite", path=path, url=None, cipher=CIPHER)


@pytest.mark.parametrize(
    ("kind", "path", "url"),
    [("sqlite", None, "redis://127.0.0.1/0"), ("redis", Path("x.db"), None), ("redis", None, "")],
)
async def test_missing_argument_is_a_configuration_error(
    kind: str, path: Path | None, url: str | None
) -> None:
    with pytest.raises(ConfigurationError):
        await open_stores(kind, path=path, url=url, cipher=CIPHER)  # type: ignore[arg-type]


async def test_unknown_kind_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        await open_stores("memory", path=None, url=None, cipher=CIPHER)  # type: ignore[arg-type]


async def test_bad_redis_url_is_a_configuration_error_without_the_secret() -> None:
    with pytest.raises(ConfigurationError) as raised:
        await open_stores("redis", path=None, url="ftp://u:s3cret@host/0", cipher=CIPHER)
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("prefix", ["{tag}:", "has space:", "x" * 65])
async def test_bad_redis_prefix_is_a_configuration_error(prefix: str) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    with pytest.raises(ConfigurationError):
        await open_stores("redis", path=None, url=url, cipher=CIPHER, prefix=prefix)


async def test_unreachable_redis_error_does_not_carry_the_password() -> None:
    url = f"redis://user:s3cret@127.0.0.1:{closed_port()}/0"
    stores = await open_stores("redis", path=None, url=url, cipher=CIPHER)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await stores.ping()
        assert "s3cret" not in raised.value.diagnostics()
    finally:
        await stores.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_close_is_idempotent(kind: str, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    stores = await open_stores(kind, path=tmp_path / "s.db", url=url, cipher=CIPHER)  # type: ignore[arg-type]
    await stores.close()
    await stores.close()
